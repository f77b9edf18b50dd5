"""Loading a target: 'file.py:Name', 'pkg.mod:Name', 'pkg.mod.Name', and every way that can go wrong."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from gradcheck_cli.errors import LayerError, UsageError
from gradcheck_cli.load import load_target

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = ROOT / "tests" / "layers" / "simple.py"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def usage_error(text: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        load_target(text)
    err = info.value
    assert err.exit_code == 2
    assert "Traceback" not in str(err)
    return err


def layer_error(text: str) -> LayerError:
    """The layer file's own code raised while it was imported: the layer's error (exit 1)."""
    with pytest.raises(LayerError) as info:
        load_target(text)
    err = info.value
    assert err.exit_code == 1
    assert "Traceback" not in str(err)
    return err


@pytest.fixture
def unique():
    """A fresh module/package name, removed from sys.modules afterwards."""
    names = []

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    for name in names:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


@pytest.fixture
def package(tmp_path, monkeypatch, unique):
    """A tiny importable package <name>/{__init__,mod,broken}.py with Outer.Inner nesting; returns its name."""
    name = unique("gcpkg")
    write(tmp_path / name / "__init__.py", "")
    write(
        tmp_path / name / "mod.py",
        """\
        import torch
        from torch import nn

        class Double(nn.Module):
            def forward(self, x):
                return 2 * x

        class Outer:
            class Inner(nn.Module):
                def forward(self, x):
                    return 3 * x

        def triple(x):
            return 3 * x
        """,
    )
    write(tmp_path / name / "sub" / "__init__.py", "")
    write(tmp_path / name / "sub" / "deep.py", "def four(x):\n    return 4 * x\n")
    write(tmp_path / name / "broken.py", "import torch\nimport gc_module_that_does_not_exist_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# --------------------------------------------------------------------------- file targets


def test_file_target_loads_each_kind_of_layer(simple):
    square = load_target(f"{SIMPLE}:Square")
    assert isinstance(square, type) and issubclass(square, torch.autograd.Function) and square.__name__ == "Square"
    scale = load_target(f"{SIMPLE}:Scale")
    assert issubclass(scale, torch.nn.Module)
    instance = load_target(f"{SIMPLE}:scaled")
    assert isinstance(instance, torch.nn.Module)
    poly = load_target(f"{SIMPLE}:poly")
    x = torch.tensor([1.0, 2.0])
    assert torch.allclose(poly(x, x), x * x + torch.sin(x))


def test_relative_file_target(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert load_target("tests/layers/simple.py:Square").__name__ == "Square"
    assert load_target("./tests/layers/simple.py:Tanh").__name__ == "Tanh"


def test_same_file_name_in_two_folders_gives_two_modules(tmp_path):
    a = write(tmp_path / "a" / "layer.py", "WHICH = 'a'\ndef f(x):\n    return x\n")
    b = write(tmp_path / "b" / "layer.py", "WHICH = 'b'\ndef f(x):\n    return x\n")
    fa, fb = load_target(f"{a}:f"), load_target(f"{b}:f")
    assert fa.__globals__["WHICH"] == "a" and fb.__globals__["WHICH"] == "b"


def test_sibling_import_inside_layer_file(tmp_path, unique):
    helper = unique("gchelper")
    write(tmp_path / "proj" / f"{helper}.py", "def double(x):\n    return 2 * x\n")
    layer = write(
        tmp_path / "proj" / "mylayer.py",
        f"""\
        from torch import nn
        from {helper} import double

        class Doubler(nn.Module):
            def forward(self, x):
                return double(x)
        """,
    )
    cls = load_target(f"{layer}:Doubler")
    assert torch.equal(cls()(torch.tensor([1.5])), torch.tensor([3.0]))


def test_nested_attribute_in_file(tmp_path):
    path = write(
        tmp_path / "nest.py",
        """\
        from torch import nn
        class Outer:
            class Inner(nn.Module):
                def forward(self, x):
                    return x
        """,
    )
    assert load_target(f"{path}:Outer.Inner").__qualname__ == "Outer.Inner"


# --------------------------------------------------------------------------- module targets


def test_module_colon_name(package):
    cls = load_target(f"{package}.mod:Double")
    assert cls.__name__ == "Double" and cls.__module__ == f"{package}.mod"


def test_module_dotted_name(package):
    assert load_target(f"{package}.mod.Double") is load_target(f"{package}.mod:Double")
    assert load_target(f"{package}.mod.triple")(torch.tensor(2.0)).item() == 6.0


def test_subpackage_forms(package):
    assert load_target(f"{package}.sub.deep:four")(torch.tensor(1.0)).item() == 4.0
    assert load_target(f"{package}.sub.deep.four")(torch.tensor(1.0)).item() == 4.0


def test_nested_attribute_in_module(package):
    inner = load_target(f"{package}.mod:Outer.Inner")
    assert inner.__qualname__ == "Outer.Inner"
    assert load_target(f"{package}.mod.Outer.Inner") is inner


def test_installed_module_target():
    assert load_target("torch.nn:Linear") is torch.nn.Linear
    assert load_target("torch.nn.Tanh") is torch.nn.Tanh


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.py"
    err = usage_error(f"{missing}:Layer")
    assert str(missing) in err.message and "does not exist" in err.message


def test_missing_name_lists_layers_defined_there():
    err = usage_error(f"{SIMPLE}:Sqare")
    assert "Sqare" in err.message and "simple.py" in err.message
    # the hint names the layers the file does define, so the user can pick one
    for name in ("Square", "SquareBug", "ScaleWeightBug", "TwoOutputs", "scaled"):
        assert name in err.hint
    assert "Sqare" in str(err) and "Square" in str(err)


def test_file_without_name_lists_layers():
    err = usage_error(str(SIMPLE))
    assert "Square" in (err.hint or "")


def test_missing_name_in_module(package):
    err = usage_error(f"{package}.mod:Nope")
    assert "Nope" in err.message and "mod" in err.message


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad_syntax.py", "import torch\n\ndef f(x):\n    return x +\n")
    err = usage_error(f"{path}:f")
    assert "bad_syntax.py" in err.message
    assert "line 4" in err.message
    assert "yntax" in err.message


def test_import_of_missing_module_in_file_names_it(tmp_path):
    path = write(tmp_path / "needs_missing.py", "import torch\nimport gc_module_that_does_not_exist_xyz\n")
    err = usage_error(f"{path}:f")
    assert "gc_module_that_does_not_exist_xyz" in err.message


def test_import_of_missing_module_in_package_names_it(package):
    err = usage_error(f"{package}.broken:Layer")
    assert "gc_module_that_does_not_exist_xyz" in err.message


def test_dotted_form_import_of_missing_module_names_it(package):
    err = usage_error(f"{package}.broken.Layer")
    assert "gc_module_that_does_not_exist_xyz" in err.message


def test_missing_module(unique):
    name = unique("gc_no_such_pkg")
    err = usage_error(f"{name}.mod:Layer")
    assert name in err.message
    err = usage_error(f"{name}.mod.Layer")
    assert name in err.message


def test_sys_exit_at_import(tmp_path):
    path = write(tmp_path / "script_like.py", "import sys\nprint('running as a script')\nsys.exit(3)\n")
    err = layer_error(f"{path}:Layer")  # a SystemExit must not escape and end the caller's process
    assert "sys.exit" in err.message and "__main__" in (err.hint or "")


def test_exception_at_import_names_error_file_and_line(tmp_path):
    path = write(tmp_path / "raises_at_import.py", "import torch\n\nraise ValueError('bad config value')\n")
    err = layer_error(f"{path}:Layer")
    assert "ValueError" in err.message and "bad config value" in err.message
    assert "raises_at_import.py" in err.message and "line 3" in err.message


def test_failed_import_can_be_retried_after_a_fix(tmp_path):
    path = write(tmp_path / "fixme.py", "raise RuntimeError('not yet')\n")
    layer_error(f"{path}:f")
    write(path, "def f(x):\n    return x\n")
    assert callable(load_target(f"{path}:f"))


def test_printing_at_import_goes_to_stderr(tmp_path, capsys):
    path = write(tmp_path / "chatty.py", "print('hello from the layer file')\ndef f(x):\n    return x\n")
    load_target(f"{path}:f")
    captured = capsys.readouterr()
    assert "hello from the layer file" not in captured.out
    assert "hello from the layer file" in captured.err


@pytest.mark.parametrize("text", ["", "   ", "JustAName", "file.py:"])
def test_malformed_targets(text):
    err = usage_error(text)
    assert "file.py:Name" in str(err) or "package.module" in str(err)

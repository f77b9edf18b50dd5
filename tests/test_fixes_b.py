"""What a newcomer and a review found in whole-file runs, the summary table, sweep and a few messages.

Each test fails without its fix: hints that name the file as it was given, a user package whose
name starts with "torch", a module ``__getattr__`` that raises, constants of a whole-file layer
(``gradcheck_constant``) and ``--only``/``--constant`` across a file's layers, a summary table
whose target column is never cut, ``sweep --init`` and a sweep in which every step fails, a
misspelt ``--init`` keyword, and a non-UTF-8 spec named once.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gradcheck_cli.discover import discover


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


TWICE = """\
    import torch
    from torch import nn


    class _Twice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            return 2 * g
    """


# -- 2. a hint names the file as the user gave it -------------------------------------------------


def test_the_init_hint_names_the_file_as_given(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "mylib" / "layers.py", TWICE + """
    class ScaledLinear(nn.Module):
        gradcheck_inputs = ["3"]

        def __init__(self, n, scale=1.0):
            super().__init__()
            self.w = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return _Twice.apply(x) * self.w
    """)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", "mylib/layers.py", "-q")
    assert code == 2, (out, err)  # nothing checkable: each skip reason is listed
    assert "use a spec, or mylib/layers.py:ScaledLinear --init n=..." in err, err
    # the hint is a target that works from here
    code, out, err = run_cli("run", "mylib/layers.py:ScaledLinear", "--init", "n=3", "--input", "3", "-q")
    assert code == 0, (out, err)
    # through the API: as the caller names it
    (found,) = [f for f in discover(str(tmp_path / "mylib" / "layers.py"), shown="lib/x.py").classes if f.name == "ScaledLinear"]
    assert "lib/x.py:ScaledLinear --init n=..." in found.skipped


# -- 3. a package named torchkit is the user's; a module __getattr__ that raises ---------------


def test_a_package_whose_name_starts_with_torch_is_the_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "torchkit" / "__init__.py", "")
    path = write(tmp_path / "torchkit" / "layers.py", TWICE + """
    class Twice(nn.Module):
        gradcheck_inputs = ["3"]

        def forward(self, x):
            return _Twice.apply(x)
    """)
    monkeypatch.chdir(tmp_path)
    found = {f.name: f for f in discover(str(path)).classes}
    assert found["Twice"].checked, found["Twice"]
    assert found["_Twice"].skipped == "no gradcheck_inputs; checked through Twice"


def test_a_module_getattr_that_raises_is_no_traceback(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "lazy.py", TWICE + """
    import types


    def _lazy(name):
        if name == "Twice":
            return _Twice
        raise RuntimeError(f"no {name} here")


    ops = types.ModuleType("ops")
    ops.__getattr__ = _lazy


    class Twice(nn.Module):
        gradcheck_inputs = ["3"]

        def forward(self, x):
            return ops.Twice.apply(x)
    """)
    found = {f.name: f for f in discover(str(path)).classes}
    assert found["Twice"].checked, found["Twice"]
    code, out, err = run_cli("run", path, "-q")
    assert code == 0 and "PASS: all 1 checks match" in out, (out, err)


# -- a misspelt --init keyword -------------------------------------------------------------------


SCALED = TWICE + """
    class Scaled(nn.Module):
        def __init__(self, n, scale=1.0):
            super().__init__()
            self.w = nn.Parameter(torch.ones(n) * scale)

        def forward(self, x):
            return _Twice.apply(x) * self.w
    """


def test_a_misspelt_init_keyword_names_the_one_meant(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "scaled.py", SCALED)
    code, out, err = run_cli("run", f"{path}:Scaled", "--init", "3", "--init", "scael=0.5", "--input", "3")
    assert code == 2, (out, err)
    assert "unexpected keyword argument 'scael'" in err and "did you mean 'scale'?" in err, err
    assert "it needs" not in err, err  # n was given: nothing is missing
    # a name that is near nothing lists what the constructor takes; a missing one is named
    code, out, err = run_cli("run", f"{path}:Scaled", "--init", "zzzzzz=0.5", "--input", "3")
    assert code == 2 and "(it needs: n)" in err and "it takes: n, scale." in err, err
    # the same in a spec, at its key
    spec = write(tmp_path / "scaled.yaml", f"layer: {path}:Scaled\nargs: [3]\nkwargs: {{scael: 0.5}}\ninputs: [{{shape: [3]}}]\n")
    code, out, err = run_cli("run", spec)
    assert code == 2 and "args/kwargs: Cannot construct" in err and "did you mean 'scale'?" in err, err
    code, out, err = run_cli("run", f"{path}:Scaled", "--init", "3", "--init", "scale=0.5", "--input", "3", "-q")
    assert code == 0, (out, err)

"""Everything in a file (issue 16, part 5): ``gradcheck run layers.py`` checks each layer the file defines that
has a hand-written backward and ``gradcheck_inputs``, lists the others as skipped with the reason, and never
exits 0 without a check behind it.

The layers file holds what a real one does: Functions used by Modules, a Module built from another, a helper
function between a Module and its Function, a plain-autograd Module, one that needs constructor arguments, a
Function without a backward, classes imported from elsewhere (not its own), inputs in the module's dict and
from a classmethod -- and a buggy twin (a cube whose backward forgets the factor 3).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gradcheck_cli.discover import discover

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

LAYERS_SRC = '''\
import os
import torch
from torch import nn
from torch.nn import Linear  # imported: not a layer of this file

with open(os.path.join(os.path.dirname(__file__), "imports.log"), "a") as log:
    log.write("imported\\n")


class SquareFn(torch.autograd.Function):
    gradcheck_inputs = ["5"]

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class CubeBug(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return x * x * g  # forgets the 3


class _ScaleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * w, (g * x).reshape(-1, w.shape[-1]).sum(0)


def scale(x, w):
    return _ScaleFn.apply(x, w)


class Scale(nn.Module):
    gradcheck_inputs = ["4x3"]

    def __init__(self, n=3):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, n))

    def forward(self, x):
        return scale(x, self.weight)  # through a helper: the rule follows it


class Wrapped(nn.Module):
    @classmethod
    def gradcheck_inputs(cls):
        return [f"2x{cls.width}"]

    width = 3

    def __init__(self):
        super().__init__()
        self.inner = Scale()

    def forward(self, x):
        return torch.tanh(self.inner(x))


class Plain(nn.Module):
    gradcheck_inputs = ["3"]

    def forward(self, x):
        return torch.tanh(x)


class Needs(nn.Module):
    gradcheck_inputs = ["3"]

    def __init__(self, n):
        super().__init__()

    def forward(self, x):
        return SquareFn.apply(x)


class NoBackward(torch.autograd.Function):
    gradcheck_inputs = ["3"]

    @staticmethod
    def forward(ctx, x):
        return x * 2


Alias = Scale  # the same class twice: checked once

gradcheck_inputs = {"CubeBug": ["6"]}
'''


@pytest.fixture
def layers(tmp_path: Path) -> Path:
    path = tmp_path / "layers.py"
    path.write_text(LAYERS_SRC)
    return path


def test_what_is_found_checked_and_skipped_and_why(layers: Path) -> None:
    found = {f.name: f for f in discover(str(layers)).classes}
    assert list(found) == ["SquareFn", "CubeBug", "_ScaleFn", "Scale", "Wrapped", "Plain", "Needs", "NoBackward"]
    assert [n for n, f in found.items() if f.checked] == ["SquareFn", "CubeBug", "Scale", "Wrapped"]
    assert [i.shape for i in found["Wrapped"].inputs] == [(2, 3)] and [i.shape for i in found["CubeBug"].inputs] == [(6,)]
    assert found["_ScaleFn"].skipped == "no gradcheck_inputs; checked through Scale"
    assert found["Plain"].skipped.startswith("no hand-written backward")
    assert found["Needs"].skipped.startswith("its constructor needs arguments (n)")
    assert found["NoBackward"].skipped.startswith("no hand-written backward (its backward is torch's)")
    assert found["SquareFn"].line == LAYERS_SRC.splitlines().index("class SquareFn(torch.autograd.Function):") + 1


def test_the_run_checks_each_layer_and_lists_what_it_skipped(run_cli, layers: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("run", layers, "--json", tmp_path / "r.json", "--junit-xml", tmp_path / "r.xml")
    assert code == 1, err  # CubeBug
    summary = out[out.index("summary"):]
    assert "skipped because" in summary and "no gradcheck_inputs; checked through Scale" in summary
    assert "FAIL: 1 of 4 checks did not pass; 4 skipped (not checked: see the summary)." in out
    assert (tmp_path / "imports.log").read_text() == "imported\n"  # the file is loaded once, for every check
    # the rerun line names the layer and the inputs gradcheck_inputs gave, and fails again
    rerun = next(line.strip() for line in out.splitlines() if line.strip().startswith("gradcheck run") and "CubeBug" in line)
    assert f"{layers}:CubeBug --only x --input 6" in rerun
    again = run_cli(*shlex.split(rerun)[1:], "-q")
    assert again[0] == 1 and again[1].startswith("FAIL: 1 of 1 tensor(s) do not match: x."), again
    data = json.loads((tmp_path / "r.json").read_text())
    status = {e["spec"].rsplit(":", 1)[-1]: (e["status"], e.get("skip_reason")) for e in data["specs"]}
    assert status["CubeBug"] == ("FAIL", None) and status["Scale"] == ("PASS", None)
    assert status["Needs"][0] == "SKIPPED" and "constructor" in status["Needs"][1] and data["passed"] is False
    root = ET.parse(tmp_path / "r.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("10", "1", "4")
    (skipped,) = [s for s in root.findall("testsuite") if s.get("name").endswith(":Plain")]
    assert skipped.find("testcase/skipped").get("message").startswith("not checked: no hand-written backward")


def test_skipped_layers_never_make_a_pass_and_nothing_checkable_is_exit_2(run_cli, tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text(LAYERS_SRC.replace("return x * x * g  # forgets the 3", "return 3 * x * x * g"))
    code, out, _ = run_cli("run", ok, "-q")
    assert code == 0 and "PASS: all 4 checks match; 4 skipped" in out
    nothing = tmp_path / "nothing.py"
    nothing.write_text("import torch\n\nclass Plain(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n\n"
                       "class Fn(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n        return x\n")
    code, out, err = run_cli("run", nothing, "--json", tmp_path / "n.json")
    assert code == 2 and "no layer" in err and "Plain: no gradcheck_inputs" in err and "Fn: no hand-written backward" in err
    assert json.loads((tmp_path / "n.json").read_text())["passed"] is False
    empty = tmp_path / "empty.py"
    empty.write_text("from torch.nn import Linear\n")
    code, _, err = run_cli("run", empty)
    assert code == 2 and "defines no torch.autograd.Function or nn.Module subclass" in err


@pytest.mark.parametrize(
    ("source", "code", "words"),
    [
        ("raise RuntimeError('no GPU here')\n", 1, "raised RuntimeError: no GPU here"),
        ("import sys\nsys.exit(0)\n", 1, "called sys.exit(0)"),
        ("def broken(:\n", 2, "Syntax error"),
        (LAYERS_SRC.replace('gradcheck_inputs = ["5"]', 'gradcheck_inputs = ["5y"]'), 2, "SquareFn.gradcheck_inputs[0]: --input '5y'"),
        (LAYERS_SRC.replace('gradcheck_inputs = ["5"]', "gradcheck_inputs = [torch.ones(5)]"), 2, "in the --input grammar"),
        (LAYERS_SRC.replace('{"CubeBug": ["6"]}', '{"CubBug": ["6"]}'), 2, "did you mean 'CubeBug'?"),
        (LAYERS_SRC.replace("        self.inner = Scale()", "        raise ValueError('bad init')"), 1, "Constructing Wrapped raised ValueError"),
    ],
    ids=["import-raises", "sys-exit", "syntax", "bad-grammar", "tensor-inputs", "unknown-dict-key", "constructor-raises"],
)
def test_a_file_that_cannot_be_used_says_why(run_cli, tmp_path: Path, source: str, code: int, words: str) -> None:
    path = tmp_path / "layers.py"
    path.write_text(source)
    got, out, err = run_cli("run", path)
    assert got == code and words in out + err, (got, out, err)
    assert "Traceback" not in err


def test_a_file_is_not_one_layer_for_input_and_init_nor_a_place_for_reports(run_cli, layers: Path) -> None:
    code, _, err = run_cli("run", layers, "--input", "3")
    assert code == 2 and "whole files" in err and "gradcheck_inputs" in err
    before = layers.read_text()
    code, _, err = run_cli("run", layers, "--json", layers)
    assert code == 2 and "would overwrite it" in err and layers.read_text() == before
    code, _, err = run_cli("sweep", layers)
    assert code == 2 and "names a whole file" in err


def test_os_exit_at_import_is_the_layers_error_in_a_real_process(tmp_path: Path) -> None:
    """The supervised child: a file whose import ends the process with status 0 is exit 1, never a pass."""
    path = tmp_path / "layers.py"
    path.write_text("import os\nos._exit(0)\n")
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "run", str(path), "--json", str(tmp_path / "r.json")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and json.loads((tmp_path / "r.json").read_text())["passed"] is False


def test_pytest_collects_the_layers_of_a_configured_file(pytester: pytest.Pytester) -> None:
    (pytester.path / "layers.py").write_text(LAYERS_SRC)
    pytester.makeini("[pytest]\ngradcheck_specs = layers.py\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=3, failed=1, skipped=4)
    result.stdout.fnmatch_lines(["PASSED layers.py::Scale", "SKIPPED * gradcheck: Needs: its constructor needs arguments*", "FAILED layers.py::CubeBug*"])
    assert "gradcheck run layers.py:CubeBug --only x --input 6" in result.stdout.str()
    assert (pytester.path / "imports.log").read_text() == "imported\n"  # pytest's own collector does not import it again
    pytester.runpytest("-p", "no:cacheprovider", "layers.py::Wrapped").assert_outcomes(passed=1)

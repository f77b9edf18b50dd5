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

pytest_plugins = ["pytester"]


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


# -- --only / --constant across a file's layers; gradcheck_constant ------------------------------------


MASKED = TWICE + """
    class MaskedScale(torch.autograd.Function):
        gradcheck_inputs = ["4x3", "mask=4x3"]

        @staticmethod
        def forward(ctx, x, mask):
            ctx.save_for_backward(mask)
            return x * mask

        @staticmethod
        def backward(ctx, g):
            (mask,) = ctx.saved_tensors
            return g * mask, None           # the mask is a constant: no gradient for it


    class Lin(nn.Module):
        gradcheck_inputs = ["2x3"]

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.linspace(0.5, 1.5, 3))

        def forward(self, x):
            return _Twice.apply(x) * self.weight
    """


def test_only_and_constant_apply_to_the_layers_of_a_file_that_have_the_name(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "masked.py", MASKED)
    code, out, err = run_cli("run", path, "-q")
    assert code == 1 and "masked.py:MaskedScale: FAIL" in out and "mask" in out, (out, err)  # its mask is checked
    # --constant mask: MaskedScale's mask is passed as given; Lin, which has no mask, is checked as it is
    code, out, err = run_cli("run", path, "--constant", "mask", "-q")
    assert code == 0, (out, err)
    assert "masked.py:MaskedScale: PASS: all 1 tensor(s) match (12 elements" in out, out
    assert "masked.py:Lin: PASS: all 2 tensor(s) match" in out and "_Twice: SKIPPED" in out, out
    # --only weight: Lin's weight alone; the layers without a weight are skipped, saying why
    code, out, err = run_cli("run", path, "--only", "weight", "-q")
    assert code == 0, (out, err)
    assert "masked.py:Lin: PASS: all 1 tensor(s) match (3 elements" in out, out
    assert "masked.py:MaskedScale: SKIPPED: --only weight: it has no tensor of that name (its tensors: x, mask)" in out, out
    code, out, err = run_cli("run", path, "--only", "x", "--constant", "mask", "-q")
    assert code == 0 and "MaskedScale: PASS: all 1 tensor(s)" in out and "Lin: PASS: all 1 tensor(s)" in out, (out, err)


@pytest.mark.parametrize(("option", "typo", "meant"), [("--only", "wieght", "weight"), ("--constant", "maks", "mask")])
def test_a_name_no_layer_of_the_file_has_is_a_usage_error(run_cli, tmp_path: Path, option: str, typo: str, meant: str) -> None:
    path = write(tmp_path / "masked.py", MASKED)
    code, out, err = run_cli("run", path, option, typo, "--json", tmp_path / "r.json")
    assert code == 2, (out, err)
    assert f"'{typo}': no layer {path} checks has a tensor of that name" in err and f"did you mean '{meant}'?" in err, err
    assert "PASS" not in out and "FAIL" not in out, out  # nothing was checked
    import json

    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 2


DECLARED = MASKED.replace('gradcheck_inputs = ["4x3", "mask=4x3"]', 'gradcheck_inputs = ["4x3", "mask=4x3"]\n        gradcheck_constant = ["mask"]') + """

    class Gate(nn.Module):
        def forward(self, x, m):
            return MaskedScale.apply(x, m)


    gradcheck_inputs = {"Gate": ["3", "3"]}
    gradcheck_constant = {"Gate": "m"}
    """


def test_a_layer_declares_its_constant_inputs_for_a_whole_file_run(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "declared.py", DECLARED)
    code, out, err = run_cli("run", path, "-q")
    assert code == 0, (out, err)
    assert "declared.py:MaskedScale: PASS: all 1 tensor(s) match (12 elements" in out, out  # on the class
    assert "declared.py:Gate: PASS: all 1 tensor(s) match (3 elements" in out, out  # in the module's dict
    # the rerun line of a failing one keeps it constant
    bad = write(tmp_path / "bad.py", DECLARED.replace("return g * mask, None", "return 2 * g * mask, None"))
    code, out, err = run_cli("run", bad)
    assert code == 1, (out, err)
    rerun = [line.strip() for line in out.splitlines() if line.strip().startswith("gradcheck run") and "MaskedScale" in line]
    assert rerun and rerun[0].endswith("--constant mask"), out
    # a declared name the layer does not have is a usage error naming the declaration
    typo = write(tmp_path / "typo.py", DECLARED.replace('{"Gate": "m"}', '{"Gate": "mm"}'))
    code, out, err = run_cli("run", typo, "-q")
    assert code == 2, (out, err)
    assert "gradcheck_constant['Gate']: 'mm': no such tensor of" in err and "did you mean 'm'?" in err, err


def test_pytest_checks_a_files_layers_with_their_declared_constants(pytester: pytest.Pytester) -> None:
    (pytester.path / "declared.py").write_text(textwrap.dedent(DECLARED))
    pytester.makeini("[pytest]\ngradcheck_specs = declared.py\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=3, skipped=1)  # Lin, MaskedScale, Gate; _Twice is checked through Lin


# -- the summary table: its target column is never cut ----------------------------------------------


LONG = TWICE + """
    class AVeryLongLayerNameForTheSummaryTable(nn.Module):
        gradcheck_inputs = ["3"]

        def forward(self, x):
            return _Twice.apply(x)


    class NeedsArgs(nn.Module):
        def __init__(self, width):
            super().__init__()

        def forward(self, x):
            return _Twice.apply(x)
    """


def _summary_of(out: str) -> list[str]:
    return out[out.index("\nsummary\n") + 1:].splitlines()[:-1]  # the table, without the verdict line


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_the_summary_never_cuts_a_target_at_any_width(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    path = write(tmp_path / "longnames.py", LONG).name
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", path, "-q", env={"COLUMNS": str(columns)})
    assert code == 0, (out, err)
    summary = _summary_of(out)
    targets = [f"{path}:{name}" for name in ("_Twice", "AVeryLongLayerNameForTheSummaryTable", "NeedsArgs")]
    assert len(targets[1]) < columns - 8  # it fits the terminal with the result beside it
    for target in targets:
        assert any(target in line for line in summary), (target, summary)
    assert "…" not in "\n".join(summary) and all(len(line) <= columns for line in summary), summary
    assert any(line.lstrip("┃ ").startswith("target ") for line in summary[1:5]), summary  # the header names what a row is


def test_the_summary_of_a_folder_keeps_spec_names_whole_and_wraps_the_rest(tmp_path: Path) -> None:
    from rich.console import Console

    from gradcheck_cli.render import summary_table
    from gradcheck_cli.report import RunResult, SuiteResult

    names = [str(tmp_path / "specs" / f"gauss_filter_with_a_long_descriptive_name_{i}.yaml") for i in range(2)]
    run = RunResult(
        (SuiteResult(names[0], time=0.5, skip_reason="no gradcheck_inputs; checked through a layer with a long name"), SuiteResult(names[1], time=0.1)),
        folder=True,
    )
    for width in (60, 80, 120):
        console = Console(width=width, record=True, color_system=None)
        console.print(summary_table(run, console))
        text = console.export_text()
        lines = text.splitlines()
        assert "…" not in text and all(len(line) <= width for line in lines), text
        for i in range(2):
            assert any(f"gauss_filter_with_a_long_descriptive_name_{i}.yaml" in line for line in lines), text
        assert any(line.strip("┃│ ").startswith("target") for line in lines[1:4]), text
    # where there is room, nothing is left out
    console = Console(width=200, record=True, color_system=None)
    console.print(summary_table(run, console))
    text = console.export_text()
    assert "left out" not in text and "skipped because" in text and "│ gauss_filter" in text, text


def test_the_verdict_of_a_run_of_layers_counts_checks_not_specs(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "masked.py", MASKED)
    code, out, err = run_cli("run", path, "--constant", "mask", "--only", "x", "-q")
    assert code == 0 and out.splitlines()[-1] == "PASS: all 2 checks match; 1 skipped (not checked: see the summary).", out
    code, out, err = run_cli("run", f"{path}:Lin", f"{path}:MaskedScale", "--input", "4x3", "--input", "mask=4x3", "-q")
    assert out.splitlines()[-1].endswith("; 1 more could not be checked (see the errors above)."), (out, err)  # Lin takes one input: an error
    spec = write(tmp_path / "lin.yaml", f"layer: {path}:Lin\ninputs: [{{shape: [2, 3]}}]\n")
    code, out, err = run_cli("run", spec, tmp_path, "-q")
    assert code == 0 and out.splitlines()[-1] == "PASS: all 1 specs match.", out  # a run of specs alone counts specs


# -- gradcheck sweep: --init, and a layer that raises -------------------------------------------------


RAISING = SCALED + """

    class Domain(nn.Module):
        def forward(self, x):
            if (x <= 0).any():
                raise ValueError("x must be positive")   # a large step leaves the domain
            return _Twice.apply(x)


    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")
    """


def test_sweep_takes_init_as_run_does(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "raising.py", RAISING)
    code, out, err = run_cli("sweep", f"{path}:Scaled", "--init", "3", "--init", "scale=0.5", "--input", "3", "--points", "3")
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    assert code == 0 and "best eps ≈ " in out and "┃        w ┃" in header, (out, err)  # its weight, built with n=3
    code, out, err = run_cli("sweep", f"{path}:Scaled", "--init", "3", "--init", "scael=0.5", "--input", "3", "--points", "3")
    assert code == 2 and "did you mean 'scale'?" in err, (out, err)
    # a spec's args are replaced, its kwargs added to
    spec = write(tmp_path / "scaled.yaml", f"layer: {path}:Scaled\nargs: [2]\ninputs: [{{shape: [3]}}]\n")
    code, out, err = run_cli("sweep", spec, "--points", "3")
    assert code == 1 and "Cannot construct" not in err and "raised at every step" in err, (out, err)  # 2 weights, 3 inputs
    code, out, err = run_cli("sweep", spec, "--init", "3", "--points", "3", "-q")
    assert code == 0 and out.startswith("best eps ≈ "), (out, err)


def test_a_step_at_which_the_layer_raises_is_a_row_not_the_end_of_the_sweep(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "raising.py", RAISING)
    code, out, err = run_cli("sweep", f"{path}:Domain", "--input", "=[0.05, 0.5]", "--points", "5")
    assert code == 0, (out, err)
    rows = [line for line in out.splitlines() if line.startswith("│") and line.split("│")[1].strip()]  # one per eps
    assert len(rows) == 5 and rows[-1].startswith("│    1e-1 │") and "raised: The forward of" in rows[-1] and "x must be positive" in out, out
    assert "◀ best" not in rows[-1] and "best eps ≈ " in out, out


def test_a_layer_that_raises_at_every_step_is_one_clear_error(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "raising.py", RAISING)
    code, out, err = run_cli("sweep", f"{path}:Boom", "--input", "3", "--points", "4")
    assert code == 1, (out, err)
    assert "The layer raised at every step size from 1e-10 to 0.1, so no step can be chosen." in err and "boom" in err, err
    assert "best eps" not in out and "│" not in out, out


def test_a_sweep_whose_every_step_fails_says_the_gradient_is_wrong(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "raising.py", RAISING.replace("return 2 * g\n", "return 3 * g\n", 1))
    code, out, err = run_cli("sweep", f"{path}:Scaled", "--init", "3", "--input", "3", "--points", "3", "-q")
    # exit 0 would tell CI the sweep vouches for a step: it found none at which the check passes
    assert code == 1 and "the check fails at every step: the gradient is wrong at any eps" in out, (out, err)


def test_a_sweep_stops_at_the_first_timeout(run_cli, tmp_path: Path) -> None:
    import time

    path = write(tmp_path / "slow.py", TWICE + """
    import time


    class Slow(nn.Module):
        def forward(self, x):
            time.sleep(30)
            return _Twice.apply(x)
    """)
    started = time.monotonic()
    code, out, err = run_cli("sweep", f"{path}:Slow", "--input", "3", "--points", "6", "--timeout", "0.5")
    assert code == 1 and "did not finish within --timeout 0.5s" in err, (out, err)
    assert time.monotonic() - started < 2.5  # once, not once per step


def test_a_report_or_sweep_title_names_a_long_target_whole(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = "a_really_long_folder_name_for_testing_titles/and_another_level_of_nesting_here"
    write(tmp_path / folder / "scaled.py", SCALED)
    monkeypatch.chdir(tmp_path)
    target = f"{folder}/scaled.py:Scaled"
    for command in (["run", target], ["sweep", target, "--points", "2"]):
        code, out, err = run_cli(*command, "--init", "3", "--input", "3", env={"COLUMNS": "60"})
        assert code == 0, (out, err)
        assert out.splitlines()[0] == f"gradcheck {'sweep ' if command[0] == 'sweep' else ''}{target}", out  # not folded at 60


# -- a spec whose file name is not UTF-8 ------------------------------------------------------------


def test_a_spec_name_that_is_not_utf8_is_shown_once_escaped(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    write(tmp_path / "specs" / "scaled.py", SCALED)
    folder = os.fsencode(tmp_path / "specs")
    good = b"layer: scaled.py:Scaled\nargs: [3]\ninputs: [{shape: [3]}]\n"
    for name, text in ((b"\xff.yaml", good), (b"typo\xfd.yaml", good.replace(b"inputs", b"inptus"))):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(text)
    monkeypatch.chdir(tmp_path)
    try:
        os.listdir(folder)
    except UnicodeError:  # pragma: no cover -- a file system that refuses such names
        pytest.skip("the file system refuses names that are not UTF-8")
    code, out, err = run_cli("run", "specs/", "--junit-xml", tmp_path / "j.xml")
    both = out + err
    assert code == 2, both
    assert "\\udc" not in both and not any(0xD800 <= ord(c) <= 0xDFFF for c in both), both  # never raw, never \udcff
    # a spec error is said once after the label, not 'typo\xfd.yaml: specs/typo\xfd.yaml: inptus: ...'
    assert "typo\\xfd.yaml: inptus: unknown key 'inptus'." in err and err.count("typo\\xfd.yaml") == 1, err
    summary = out[out.index("\nsummary\n"):]
    assert "│ \\xff.yaml " in summary and "│ typo\\xfd.yaml " in summary, summary
    # the table is aligned: every row as wide as the header
    rows = [line for line in summary.splitlines() if line.startswith(("│", "┃"))]
    assert len({len(line) for line in rows}) == 1, summary
    assert "\\udc" not in (tmp_path / "j.xml").read_text() and "typo\\xfd.yaml" in (tmp_path / "j.xml").read_text()


def test_the_rerun_line_of_such_a_spec_names_its_bytes(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import subprocess

    write(tmp_path / "scaled.py", SCALED.replace("return 2 * g\n", "return 3 * g\n", 1))
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.yaml"), "wb") as f:
        f.write(b"layer: scaled.py:Scaled\nargs: [3]\ninputs: [{shape: [3]}]\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", os.fsdecode(b"bad\xff.yaml"))
    assert code == 1, (out, err)
    rerun = next(line.strip() for line in out.splitlines() if line.strip().startswith("gradcheck run"))
    assert rerun.startswith("gradcheck run $'bad\\xff.yaml' --only x "), rerun
    # bash reads it back as the file's own name (ANSI-C quoting), and the rest as given
    words = subprocess.run(["bash", "-c", f"printf '%s\\0' {rerun.removeprefix('gradcheck run ')}"], capture_output=True, check=True).stdout.split(b"\0")
    assert words[:3] == [b"bad\xff.yaml", b"--only", b"x"], words


def test_a_misspelt_keyword_input_names_the_argument_meant(run_cli, tmp_path: Path) -> None:
    path = write(tmp_path / "pair.py", """\
        import torch


        class Pair(torch.autograd.Function):
            @staticmethod
            def forward(ctx, image, grid, mode="x"):
                return image * grid

            @staticmethod
            def backward(ctx, g):
                return g, g, None
        """)
    code, out, err = run_cli("run", f"{path}:Pair", "--input", "3", "--input", "gird=3")
    assert code == 2 and "has no argument named 'gird' (it takes: image, grid, mode); did you mean 'grid'?" in err, err
    spec = write(tmp_path / "pair.yaml", f"layer: {path}:Pair\ninputs: [{{shape: [3]}}, {{name: mdoe, arg: y}}, {{shape: [3]}}]\n")
    code, out, err = run_cli("run", spec)
    assert code == 2 and "did you mean 'mode'?" in err, err


@pytest.mark.parametrize("columns", [60, 80])
def test_gradcheck_list_never_cuts_a_spec_or_its_layer(run_cli, columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    code, out, err = run_cli("list", "layer_specs", env={"COLUMNS": str(columns)})
    assert code == 0, (out, err)
    lines = out.splitlines()
    assert "…" not in out and all(len(line) <= columns for line in lines), out
    for spec, layer in (("gauss_filter.yaml", "gauss_filter.py:GaussFilter"), ("linear_sigmoid.yaml", "linear_sigmoid.py:LinearSigmoid")):
        assert any(spec in line and layer in line for line in lines), out


@pytest.mark.parametrize("columns", [60, 80])
def test_a_sweep_table_never_cuts_a_number(run_cli, columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    code, out, err = run_cli("sweep", "layer_specs/gauss_filter.yaml", "--points", "3", env={"COLUMNS": str(columns)})
    assert code == 0, (out, err)
    assert "…" not in out and all(len(line) <= columns for line in out.splitlines()), out
    best = next(line for line in out.splitlines() if "◀ best" in line)
    import re

    assert re.search(r"3\.16e-6 [│ ]+\d\.\d\de-\d\d ", best), out  # the eps and its worst error, whole

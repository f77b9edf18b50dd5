"""The gradcheck command end to end (click's CliRunner; a subprocess where a real process or terminal matters)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gradcheck_cli

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"
GAUSS = "layer_specs/gauss_filter.py"

TENSOR_KEYS = {"name", "shape", "passed", "max_rel_error", "max_abs_error", "n_elements", "n_failed", "worst_index", "analytic", "numeric"}
CONFIG_KEYS = {"dtype", "device", "eps", "rtol", "atol", "seed"}
ANSI = re.compile(r"\x1b\[")
COLOUR_SGR = re.compile(rb"\x1b\[([0-9;]*)m")


def t(name: str) -> str:
    return f"{SIMPLE}:{name}"


def rows(stdout: str) -> dict[str, list[str]]:
    """The table's body rows by tensor name: {'input0': ['input0', '3x4', '12', ..., 'PASS']}."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith(("│", "|")):
            sep = line[0]
            cells = [c.strip() for c in line.strip(sep).split(sep)]
            found[cells[0]] = cells
    return found


def assert_short_error(stdout: str, stderr: str, *fragments: str) -> None:
    """A usage problem: nothing on stdout, one short paragraph on stderr, no traceback."""
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert stdout.strip() == "", stdout
    assert "Error" in stderr
    message = stderr[stderr.index("Error") :].strip()
    assert "\n\n" not in message, f"more than one paragraph:\n{stderr}"
    assert len(message.splitlines()) <= 3, f"too long:\n{stderr}"
    for fragment in fragments:
        assert fragment in stderr, f"{fragment!r} not in:\n{stderr}"


# --------------------------------------------------------------------------- pass and fail


def test_correct_layer_exits_0_with_pass_table(run_cli):
    code, out, err = run_cli("run", t("Scale"), "--input", "3x4")
    assert code == 0, err
    table = rows(out)
    assert set(table) == {"x", "weight"}
    assert table["x"][1] == "3x4" and table["x"][2] == "12" and table["x"][-1] == "PASS"
    assert table["weight"][1] == "4" and table["weight"][-1] == "PASS"
    assert "PASS" in out.strip().splitlines()[-1]
    # the caption gives the settings
    assert "float64" in out and "cpu" in out and "eps 1e-06" in out and "seed 0" in out
    assert "Traceback" not in err


def test_bug_exits_1_with_fail_row_on_the_right_tensor(run_cli):
    code, out, _ = run_cli("run", t("ScaleWeightBug"), "--input", "3x4")
    assert code == 1
    table = rows(out)
    assert table["x"][-1] == "PASS"
    assert table["weight"][-1] == "FAIL"
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("FAIL") and "weight" in verdict and "x" not in verdict


def test_inputs_are_positional_and_repeatable(run_cli):
    code, out, _ = run_cli("run", t("MulSecondBug"), "--input", "3x4", "-i", "3x4")
    assert code == 1
    table = rows(out)
    assert table["a"][-1] == "PASS" and table["b"][-1] == "FAIL"  # named by the layer's own arguments


def test_literal_and_int_inputs(run_cli):
    code, out, err = run_cli("run", t("LabelPick"), "--input", "3x4", "--input", "=[0,2,3]")
    assert code == 0, err
    assert set(rows(out)) == {"x"}  # the int64 labels are not a checked tensor


def test_module_instance_target(run_cli):
    code, out, _ = run_cli("run", t("scaled"), "--input", "2x4")
    assert code == 0 and set(rows(out)) == {"x", "weight"}


@pytest.mark.parametrize("reference", [[], ["--numeric-dtype", "float32"]])
def test_float32_layer_passes_at_float32_defaults(run_cli, tmp_path, reference):
    report = tmp_path / "r.json"
    code, _, err = run_cli("run", t("Tanh"), "--input", "3x4", "--dtype", "float32", *reference, "--json", report)
    assert code == 0, err
    config = json.loads(report.read_text())["config"]
    numeric = reference[1] if reference else "float64"  # by default the numeric side runs in float64
    assert config["dtype"] == "float32" and config["numeric_dtype"] == numeric
    assert config["eps"] == gradcheck_cli.TOLERANCES[numeric][0]


def test_options_reach_the_check(run_cli, tmp_path):
    report = tmp_path / "r.json"
    code, _, _ = run_cli("run", t("Square"), "-i", "3", "--eps", "1e-5", "--rtol", "1e-4", "--atol", "1e-9", "--seed", "7", "--json", report)
    assert code == 0
    config = json.loads(report.read_text())["config"]
    assert (config["eps"], config["rtol"], config["atol"], config["seed"]) == (1e-5, 1e-4, 1e-9, 7)


# --------------------------------------------------------------------------- JSON


def test_json_report(run_cli, tmp_path):
    path = tmp_path / "report.json"
    code, out, _ = run_cli("run", t("ScaleWeightBug"), "--input", "3x4", "--seed", "3", "--json", path)
    assert code == 1
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["passed"] is False
    assert CONFIG_KEYS <= set(data["config"])
    assert data["config"]["seed"] == 3 and data["config"]["dtype"] == "float64" and data["config"]["device"] == "cpu"
    tensors = {x["name"]: x for x in data["tensors"]}
    assert list(tensors) == ["x", "weight"]
    for x in tensors.values():
        assert TENSOR_KEYS <= set(x)
    assert tensors["x"]["passed"] is True and tensors["x"]["n_failed"] == 0 and tensors["x"]["shape"] == [3, 4]
    assert tensors["weight"]["passed"] is False and tensors["weight"]["n_failed"] == 4 and tensors["weight"]["n_elements"] == 4
    assert rows(out)["weight"][-1] == "FAIL"  # the table is still printed


def test_json_written_for_a_pass_too(run_cli, tmp_path):
    path = tmp_path / "ok.json"
    code, _, _ = run_cli("run", t("Square"), "--input", "2x2", "--json", path)
    assert code == 0 and json.loads(path.read_text())["passed"] is True


def test_json_into_missing_folder_is_a_usage_error(run_cli, tmp_path):
    path = tmp_path / "no" / "such" / "folder" / "r.json"
    code, out, err = run_cli("run", t("Square"), "--input", "3", "--json", path)
    assert code == 2
    assert_short_error(out, err, "does not exist")
    assert not path.parent.exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_json_to_stdout_is_parseable(run_cli, quiet):
    code, out, _ = run_cli("run", t("Square"), "--input", "3", "--json", "-", *(["--quiet"] if quiet else []))
    assert code == 0
    assert json.loads(out)["passed"] is True


# --------------------------------------------------------------------------- usage errors: exit 2, short message


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--input", "3x"], ["--input", "1x100"]),
        (["--input", "=[1,"], ["--input", "4.5"]),
        (["--input", "0x3"], ["at least 1"]),
        (["--input", "100000x100000"], ["GiB"]),
        (["--input", "3", "--eps", "0"], ["--eps"]),
        (["--input", "3", "--eps", "-1e-6"], ["--eps"]),
        (["--input", "3", "--rtol", "-1"], ["--rtol"]),
        (["--input", "3", "--atol", "-1"], ["--atol"]),
        (["--input", "3", "--dtype", "float31"], ["--dtype", "float31"]),
        (["--input", "3", "--device", "nonsense"], ["nonsense"]),
        (["--input", "3", "--seed", "-1"], ["--seed"]),
        (["--input", "3", "--only", "input7"], ["input7", "x"]),
        ([], ["--input"]),  # the layer needs an input and none was given: say how to give it
        (["--input", "3", "--input", "3"], ["takes 1 input", "2 were given"]),  # one too many
    ],
)
def test_usage_errors(run_cli, args, fragments):
    code, out, err = run_cli("run", t("Square"), *args)
    assert code == 2, (out, err)
    assert_short_error(out, err, *fragments)


def test_cuda_unavailable(run_cli):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, out, err = run_cli("run", t("Square"), "--input", "3", "--device", "cuda")
    assert code == 2
    assert_short_error(out, err, "CUDA", "--device cpu")


def test_missing_file(run_cli, tmp_path):
    code, out, err = run_cli("run", f"{tmp_path / 'nope.py'}:Layer", "--input", "3")
    assert code == 2
    assert_short_error(out, err, "nope.py", "does not exist")


def test_bad_name_lists_layers(run_cli):
    code, out, err = run_cli("run", t("Sqaure"), "--input", "3")
    assert code == 2
    assert_short_error(out, err, "Sqaure", "Square", "ScaleWeightBug")


def test_syntax_error_names_file_and_line(run_cli, tmp_path):
    path = tmp_path / "typo.py"
    path.write_text("import torch\ndef f(x)\n    return x\n")
    code, out, err = run_cli("run", f"{path}:f", "--input", "3")
    assert code == 2
    assert_short_error(out, err, "typo.py", "line 2")


def test_exception_at_import(run_cli, tmp_path):
    path = tmp_path / "boom.py"
    path.write_text("raise KeyError('missing setting')\n")
    code, out, err = run_cli("run", f"{path}:f", "--input", "3")
    assert code == 1  # the layer's own code raised
    assert_short_error(out, err, "KeyError", "missing setting", "boom.py")


def test_sys_exit_at_import(run_cli, tmp_path):
    path = tmp_path / "script.py"
    path.write_text("import sys\nsys.exit(0)\n")  # exit 0 at import must not look like a passing check
    code, out, err = run_cli("run", f"{path}:f", "--input", "3")
    assert code == 1
    assert_short_error(out, err, "sys.exit")


def test_nothing_differentiable(run_cli):
    code, out, err = run_cli("run", t("only_labels"), "--input", "=[1,2,3]")
    assert code == 2
    assert_short_error(out, err, "nothing differentiable")


def test_module_needing_constructor_args(run_cli):
    code, out, err = run_cli("run", t("NeedsArg"), "--input", "2x3")
    assert code == 2
    assert_short_error(out, err, "NeedsArg", "n")


def test_empty_literal_is_a_usage_error(run_cli):
    code, out, err = run_cli("run", t("Square"), "--input", "=[]")
    assert code == 2
    assert_short_error(out, err, "--input")


def test_unknown_option_and_missing_target(run_cli):
    code, _, err = run_cli("run", t("Square"), "--inptu", "3")
    assert code == 2 and "--inptu" in err and "Traceback" not in err
    code, _, err = run_cli("run")
    assert code == 2 and "TARGET" in err


# --------------------------------------------------------------------------- the layer's own errors: exit 1


def test_forward_raises_exit_1_names_layer_and_error(run_cli):
    code, out, err = run_cli("run", t("Raises"), "--input", "3")
    assert code == 1
    assert "Traceback" not in err and out.strip() == ""
    assert "Raises" in err and "ValueError" in err and "planted failure in forward" in err
    assert "--debug" in err


def test_backward_raises_exit_1(run_cli):
    code, _, err = run_cli("run", t("BackwardRaisesFn"), "--input", "3")
    assert code == 1
    assert "BackwardRaisesFn" in err and "backward" in err and "planted failure in backward" in err
    assert "Traceback" not in err


def test_debug_shows_traceback(run_cli):
    code, _, err = run_cli("run", t("Raises"), "--input", "3", "--debug")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert 'raise ValueError("planted failure in forward")' in err  # the user's own line
    assert "simple.py" in err


def test_debug_shows_traceback_for_import_errors(run_cli, tmp_path):
    path = tmp_path / "boom2.py"
    path.write_text("def helper():\n    raise KeyError('deep')\nhelper()\n")
    code, _, err = run_cli("run", f"{path}:f", "--input", "3", "--debug")
    assert code == 1
    assert "Traceback (most recent call last)" in err and "helper" in err


# --------------------------------------------------------------------------- output modes


def test_quiet_prints_only_the_verdict(run_cli):
    code, out, _ = run_cli("run", t("Square"), "--input", "3x4", "--quiet")
    assert code == 0
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("PASS")
    code, out, _ = run_cli("run", t("MulSecondBug"), "--input", "3x4", "--input", "3x4", "-q")
    assert code == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("FAIL") and "b" in lines[0]


def test_quiet_verdict_is_one_line_even_when_long(run_cli):
    code, out, _ = run_cli("run", t("ManyScalesWeightBug"), "--input", "2x3", "--quiet")
    assert code == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out


def test_prints_in_the_layer_go_to_stderr(run_cli, tmp_path):
    path = tmp_path / "chatty_layer.py"
    path.write_text(
        "import torch\nprint('IMPORT-NOISE')\n"
        "def f(x):\n    print('FORWARD-NOISE')\n    return x * x\n"
    )
    code, out, err = run_cli("run", f"{path}:f", "--input", "3", "--quiet")
    assert code == 0
    assert "NOISE" not in out and out.strip().startswith("PASS")
    assert "IMPORT-NOISE" in err and "FORWARD-NOISE" in err


def test_non_terminal_output_has_no_escapes_unless_forced(run_cli):
    env = {"NO_COLOR": None, "FORCE_COLOR": None, "TERM": "xterm-256color"}
    code, out, err = run_cli("run", t("SquareBug"), "--input", "3", env=env)
    assert code == 1
    assert not ANSI.search(out) and not ANSI.search(err)
    code, out, _ = run_cli("run", t("SquareBug"), "--input", "3", "--color", env=env)
    assert code == 1 and ANSI.search(out)  # --color forces it


def _run_in_pty(args: list[str], env_extra: dict[str, str]) -> tuple[int, bytes]:
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="200", **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks)


@pytest.fixture(scope="module")
def terminal_runs():
    if sys.platform == "win32":
        pytest.skip("needs a pseudo-terminal")
    args = ["run", t("SquareBug"), "--input", "3"]
    return {"plain": _run_in_pty(args, {}), "no_color": _run_in_pty(args, {"NO_COLOR": "1"})}


def _colour_codes(output: bytes) -> set[str]:
    """SGR parameters that set a colour (30-37, 38;..., 40-47, 48;..., 90-97, 100-107)."""
    colours = set()
    for params in COLOUR_SGR.findall(output):
        for p in params.decode().split(";"):
            if p.isdigit() and (30 <= int(p) <= 49 or 90 <= int(p) <= 107):
                colours.add(p)
    return colours


def test_terminal_output_is_coloured(terminal_runs):
    code, output = terminal_runs["plain"]
    assert code == 1
    assert _colour_codes(output), "expected colour on a terminal"


def test_no_color_on_a_terminal_has_no_colour(terminal_runs):
    code, output = terminal_runs["no_color"]
    assert code == 1 and b"FAIL" in output
    assert not _colour_codes(output), output[:500]


def test_no_color_on_a_terminal_has_no_escapes_at_all(terminal_runs):
    _, output = terminal_runs["no_color"]
    assert b"\x1b[" not in output


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and gradcheck_cli.__version__ in out and "gradcheck" in out


def test_run_help_lists_the_options(run_cli):
    code, out, _ = run_cli("run", "--help")
    assert code == 0
    for option in ("--input", "--dtype", "--device", "--seed", "--eps", "--rtol", "--atol", "--json", "--quiet", "--debug"):
        assert option in out


# --------------------------------------------------------------------------- the bundled Gaussian filter


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_bundled_gauss_filter_passes(run_cli, in_repo):
    code, out, err = run_cli("run", f"{GAUSS}:GaussFilter", "--input", "2x64")
    assert code == 0, out + err
    table = rows(out)
    assert set(table) == {"x", "sigma", "mu"} and all(r[-1] == "PASS" for r in table.values())


def test_bundled_gauss_filter_conv_bug_fails_on_input_only(run_cli, in_repo, tmp_path):
    path = tmp_path / "gauss.json"
    code, out, _ = run_cli("run", f"{GAUSS}:GaussFilterConvBug", "--input", "2x64", "--json", path)
    assert code == 1
    tensors = {x["name"]: x for x in json.loads(path.read_text())["tensors"]}
    assert set(tensors) == {"x", "sigma", "mu"}
    assert tensors["x"]["passed"] is False and tensors["x"]["n_failed"] > 0
    assert tensors["sigma"]["passed"] is True and tensors["sigma"]["n_failed"] == 0
    assert tensors["mu"]["passed"] is True and tensors["mu"]["n_failed"] == 0
    assert rows(out)["x"][-1] == "FAIL"


def test_bundled_gauss_function_with_literal_inputs(run_cli, in_repo):
    # the second example: an autograd.Function with sigma and mu given as literals
    code, out, err = run_cli("run", f"{GAUSS}:GaussianConvFunction", "--input", "1x100", "--input", "=4.5", "--input", "=-19.5")
    assert code == 0, out + err
    assert set(rows(out)) == {"x", "sigma", "mu"}  # GaussianConvFunction.forward(ctx, x, sigma, mu)

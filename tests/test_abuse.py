"""Issue 12: nothing lost, no false pass, no hang -- gradcheck under abuse.

A CI step trusts two things: exit 0 means a check really ran and passed, and
gradcheck never damages the files around it. Each test here is one way that
promise was broken (by an attacker or a careless user) and asserts the exit
status, the message and the files.

Layers: tests/layers/robust/abuse.py; files that must misbehave at import are
written into tmp_path. The few tests that need a real process (file
descriptors, signals, threads, streams) start the console script; the rest run
in-process through click's runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

import gradcheck_cli
from gradcheck_cli.errors import SpecError, UsageError

ROOT = Path(__file__).resolve().parent.parent
ABUSE = Path(__file__).resolve().parent / "layers" / "robust" / "abuse.py"


def a(name: str) -> str:
    return f"{ABUSE}:{name}"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def no_traceback(out: str, err: str) -> None:
    assert "Traceback" not in out + err, out + err


def expect(result, code: int, *fragments: str) -> str:
    got, out, err = result
    no_traceback(out, err)
    assert got == code, f"exit {got}, expected {code}\nstdout:\n{out}\nstderr:\n{err}"
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in stderr:\n{err}"
    return err


SQUARE_SRC = (ABUSE.read_text().split("class _Raising")[0])  # imports and the correct Square Function


def gradcheck_process(*args: str, cwd: Path = ROOT, env: dict | None = None, **popen) -> subprocess.Popen:
    """The console script in a real process (python -m gradcheck_cli ...)."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], cwd=cwd, env=full_env, **popen)


# =========================================================================== files: never lose or corrupt one


@pytest.mark.parametrize("option", ["--json", "--junit-xml"])
def test_a_report_over_the_spec_is_refused_and_the_spec_survives(run_cli, tmp_path, option):
    write(tmp_path / "square.py", SQUARE_SRC)
    spec = write(tmp_path / "spec.yaml", "layer: square.py:Square\ninputs: [{shape: [3]}]\n")
    before = spec.read_bytes()
    err = expect(run_cli("run", spec, option, spec), 2, option, "spec.yaml", "overwrite")
    assert spec.read_bytes() == before
    assert "Hint:" in err


def test_a_report_over_the_layer_file_is_refused(run_cli, tmp_path):
    layer = write(tmp_path / "square.py", SQUARE_SRC)
    before = layer.read_bytes()
    expect(run_cli("run", f"{layer}:Square", "--input", "3", "--junit-xml", layer), 2, "--junit-xml", "square.py", "layer file")
    assert layer.read_bytes() == before


def test_a_report_over_a_layer_file_that_a_spec_names_is_refused(run_cli, tmp_path):
    layer = write(tmp_path / "square.py", SQUARE_SRC)
    write(tmp_path / "spec.yaml", "layer: square.py:Square\ninputs: [{shape: [3]}]\n")
    expect(run_cli("run", tmp_path / "spec.yaml", "--json", layer), 2, "--json", "square.py")
    assert layer.read_text() == SQUARE_SRC


def test_a_report_over_a_spec_of_the_folder_is_refused(run_cli, tmp_path):
    write(tmp_path / "square.py", SQUARE_SRC)
    write(tmp_path / "a.yaml", "layer: square.py:Square\ninputs: [{shape: [3]}]\n")
    b = write(tmp_path / "b.yaml", "layer: square.py:Square\ninputs: [{shape: [4]}]\n")
    expect(run_cli("run", tmp_path, "--json", b), 2, "b.yaml")
    assert "inputs: [{shape: [4]}]" in b.read_text()


def test_a_report_over_a_hard_link_of_the_spec_is_refused(run_cli, tmp_path):
    write(tmp_path / "square.py", SQUARE_SRC)
    spec = write(tmp_path / "spec.yaml", "layer: square.py:Square\ninputs: [{shape: [3]}]\n")
    os.link(spec, tmp_path / "other-name.json")
    expect(run_cli("run", spec, "--json", tmp_path / "other-name.json"), 2, "spec.yaml")
    assert "layer:" in spec.read_text()


def test_two_reports_on_one_file_are_refused(run_cli, tmp_path):
    report = tmp_path / "r.out"
    expect(run_cli("run", a("Square"), "--input", "3", "--json", report, "--junit-xml", tmp_path / "." / "r.out"), 2, "--json", "--junit-xml")
    assert not report.exists()


def test_reports_are_written_atomically_and_keep_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    from gradcheck_cli import outputs

    path = tmp_path / "r.json"
    path.write_text('{"passed": true, "old": 1}\n')
    os.chmod(path, 0o640)

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", no_space)
    with pytest.raises(UsageError, match="No space left"):
        outputs.atomic_write(path, "new report")
    assert path.read_text() == '{"passed": true, "old": 1}\n'  # the old report is whole
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind
    monkeypatch.undo()
    outputs.atomic_write(path, "new report")
    assert path.read_text() == "new report" and (path.stat().st_mode & 0o777) == 0o640


def test_a_new_report_gets_ordinary_permissions(tmp_path):
    from gradcheck_cli import outputs

    mask = os.umask(0o022)
    try:
        outputs.atomic_write(tmp_path / "new.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


STALE = '{"passed": true, "target": "last week"}\n'


def stale(path: Path) -> Path:
    path.write_text(STALE)
    return path


def report_of_this_run(path: Path) -> dict:
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data != json.loads(STALE) and data["passed"] is False
    return data


def test_a_layer_error_writes_a_failed_json_report(run_cli, tmp_path):
    report = stale(tmp_path / "r.json")
    junit = tmp_path / "r.xml"
    expect(run_cli("run", a("GeneratorExitInForward"), "--input", "3", "--json", report, "--junit-xml", junit), 1)
    data = report_of_this_run(report)
    assert data["status"] == "ERROR" and data["exit_code"] == 1 and "GeneratorExit" in data["error"]
    assert ET.parse(junit).getroot().get("errors") == "1"


def test_a_usage_error_after_the_target_is_known_writes_its_report(run_cli, tmp_path):
    report = stale(tmp_path / "r.json")
    expect(run_cli("run", a("Square"), "--input", "3", "--only", "nope", "--json", report), 2, "nope")
    data = report_of_this_run(report)
    assert data["exit_code"] == 2 and "nope" in data["error"]


def test_a_timeout_writes_its_report(run_cli, tmp_path):
    report = stale(tmp_path / "r.json")
    expect(run_cli("run", a("Sleeps"), "--input", "3", "--timeout", "0.3", "--json", report), 1, "--timeout 0.3")
    assert "--timeout" in report_of_this_run(report)["error"]


def test_a_refused_command_line_replaces_a_stale_report(run_cli, tmp_path):
    report = stale(tmp_path / "r.json")
    junit = tmp_path / "r.xml"
    junit.write_text('<?xml version="1.0"?>\n<testsuites name="gradcheck" tests="1" failures="0" errors="0"/>\n')
    code, out, err = run_cli("run", a("Square"), "--json", str(report), "--junit-xml", str(junit), "--eps", "tiny")
    assert code == 2 and "--eps" in err
    assert "refused" in report_of_this_run(report)["error"]
    assert ET.parse(junit).getroot().get("errors") == "1"


def test_a_refused_command_line_leaves_a_file_that_is_no_report_alone(run_cli, tmp_path):
    precious = write(tmp_path / "notes.json", '{"mine": true}\n')
    code, _, _ = run_cli("run", a("Square"), "--json", str(precious), "--no-such-option")
    assert code == 2 and precious.read_text() == '{"mine": true}\n'


def test_reports_say_incomplete_while_the_run_is_under_way(run_cli, tmp_path):
    """A run killed outright (SIGKILL) can write nothing at the end: the report it leaves must not be last run's pass."""
    report = stale(tmp_path / "r.json")
    seen = tmp_path / "seen.json"
    layer = write(
        tmp_path / "peek.py",
        SQUARE_SRC + f"\n\ndef peek(x):\n    import shutil\n    shutil.copy({str(report)!r}, {str(seen)!r})\n    return Square.apply(x)\n",
    )
    expect(run_cli("run", f"{layer}:peek", "--input", "3", "--json", report), 0)
    during = json.loads(seen.read_text())
    assert during["passed"] is False and during["status"] == "INCOMPLETE"
    assert json.loads(report.read_text())["passed"] is True  # and at the end, this run's own report


def test_a_layer_that_changes_folder_at_import_cannot_redirect_reports_or_hide_specs(run_cli, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    specs = tmp_path / "specs"
    specs.mkdir()
    write(specs / "square.py", SQUARE_SRC)
    write(specs / "moves.py", SQUARE_SRC + f"\nimport os\nos.chdir({str(elsewhere)!r})\n")
    write(specs / "a_moves.yaml", "layer: moves.py:Square\ninputs: [{shape: [3]}]\n")
    write(specs / "b_square.yaml", "layer: square.py:Square\ninputs: [{shape: [3]}]\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", "specs", "--json", "report.json")
    no_traceback(out, err)
    assert code == 0, (out, err)
    data = json.loads((tmp_path / "report.json").read_text())
    assert [Path(e["spec"]).name for e in data["specs"]] == ["a_moves.yaml", "b_square.yaml"]
    assert all(e["passed"] for e in data["specs"])
    assert not (elsewhere / "report.json").exists() and os.getcwd() == str(tmp_path)


def test_json_is_strict_even_where_the_backward_returns_nan(run_cli, tmp_path):
    report = tmp_path / "r.json"
    expect(run_cli("run", a("nan_backward"), "--input", "3", "--json", report), 1)
    data = report_of_this_run(report)  # parse_constant fails the test on NaN/Infinity
    t = data["tensors"][0]
    assert t["status"] == "FAIL" and t["analytic"] is None and t["worst_index"] == [1]


def test_junit_stays_well_formed_when_a_message_holds_escape_characters(run_cli, tmp_path):
    junit = tmp_path / "r.xml"
    expect(run_cli("run", a("EscapesInError"), "--input", "3", "--junit-xml", junit), 1)
    text = junit.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\\x1b" in text
    error = ET.fromstring(text).find(".//error")
    assert "not markup" in error.text


# =========================================================================== no false pass


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("ExitsInInit", "sys.exit(0)"),
        ("GeneratorExitInForward", "GeneratorExit"),
        ("BaseExceptionInForward", "_Raising"),
        ("KeyboardInterruptInForward", "KeyboardInterrupt"),
        ("base_exception_in_backward", "backward"),
    ],
)
def test_any_base_exception_from_the_layer_is_its_error(run_cli, name, fragment):
    err = expect(run_cli("run", a(name), "--input", "3"), 1, fragment, name)
    assert "Interrupted" not in err


@pytest.mark.parametrize("code", ["raise GeneratorExit", "raise KeyboardInterrupt", "class B(BaseException): pass\nraise B('at import')"])
def test_a_base_exception_at_import_is_the_layers_error(run_cli, tmp_path, code):
    layer = write(tmp_path / "bad_import.py", code + "\n")
    expect(run_cli("run", f"{layer}:X", "--input", "3"), 1, "bad_import.py")


def test_a_backward_returning_nan_or_inf_fails_and_says_where(run_cli):
    code, out, err = run_cli("run", a("nan_backward"), "--input", "3")
    assert code == 1, (out, err)
    assert "NaN or infinite at [1]" in out and "FAIL" in out.strip().splitlines()[-1]
    code, out, err = run_cli("run", a("inf_backward"), "--input", "3")
    assert code == 1 and "at [0]" in out


def test_the_api_checks_the_file_again_after_it_changed(tmp_path):
    layer = tmp_path / "evolving.py"
    write(layer, SQUARE_SRC.replace("return 2 * x * grad_out", "return 3 * x * grad_out"))
    assert not gradcheck_cli.check(f"{layer}:Square", ["3"]).passed
    write(layer, SQUARE_SRC)  # the user fixes the backward
    assert gradcheck_cli.check(f"{layer}:Square", ["3"]).passed


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_the_api_works_inside_no_grad_and_inference_mode(context):
    with context():
        x = torch.randn(3, dtype=torch.float64)  # an inference tensor under inference_mode
        good = gradcheck_cli.check(a("Scale"), [x])
        bad = gradcheck_cli.check(a("WrongSquare"), [x])
    assert good.passed, str(good)
    assert not bad.passed and [t.status for t in bad.tensors] == ["FAIL"]


# =========================================================================== no hang


def test_a_layer_that_catches_the_timeout_is_still_stopped(run_cli):
    started = time.monotonic()
    err = expect(run_cli("run", a("CatchesEverySignal"), "--input", "3", "--timeout", "0.2"), 1, "--timeout 0.2")
    assert "did not finish" in err and time.monotonic() - started < 15


def test_a_layer_that_catches_the_timeout_and_returns_is_not_a_pass(run_cli):
    expect(run_cli("run", a("CatchesTheTimeoutAndReturns"), "--input", "3", "--timeout", "0.2"), 1, "did not finish")


def test_a_hang_at_import_is_the_layers_timeout(run_cli, tmp_path):
    layer = write(tmp_path / "hangs.py", "import time\ntime.sleep(30)\n")
    err = expect(run_cli("run", f"{layer}:X", "--input", "3", "--timeout", "0.3"), 1, "did not finish within --timeout 0.3s")
    assert "_Timeout" not in err and "Timeout()" not in err


def test_a_tiny_timeout_is_a_timeout_not_a_traceback(run_cli):
    expect(run_cli("run", a("Square"), "--input", "3", "--timeout", "1e-7"), 1, "did not finish")


def test_the_api_timeout_gives_the_callers_alarm_back():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *args: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert gradcheck_cli.check(a("Square"), ["3"], timeout=5).passed
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < remaining <= 30.0, remaining  # the caller's alarm, still counting down
        assert signal.getsignal(signal.SIGALRM) is not None and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _CallersTimeout(Exception):
    pass


def test_the_callers_alarm_still_fires_during_a_check_with_its_own_handler():
    """pytest-timeout's signal mode: its alarm comes first, and its exception is not blamed on the layer."""

    def callers_handler(signum, frame):
        raise _CallersTimeout()

    previous = signal.signal(signal.SIGALRM, callers_handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(_CallersTimeout):
            gradcheck_cli.check(a("Sleeps"), ["3"], timeout=10)
        assert signal.getsignal(signal.SIGALRM) is callers_handler
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_ctrl_c_before_the_check_is_130_not_aborted(run_cli, monkeypatch):
    import gradcheck_cli.targets

    def interrupted(*targets, **kwargs):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(gradcheck_cli.targets, "plan_run", interrupted)
    code, out, err = run_cli("run", a("Square"), "--input", "3")
    no_traceback(out, err)
    assert code == 130 and "Interrupted" in err and "Aborted" not in err


# =========================================================================== terminal and messages


def test_text_from_the_layer_is_shown_literally(run_cli):
    code, out, err = run_cli("run", a("EscapesInError"), "--input", "3")
    no_traceback(out, err)
    assert code == 1
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert "\\x1b]0;pwned" in err and "[/] [bold red]not markup" in err


def test_a_parameter_named_with_markup_and_escapes_is_shown_literally(run_cli):
    code, out, err = run_cli("run", a("MarkupParameterName"), "--input", "3")
    no_traceback(out, err)
    assert code == 0, (out, err)
    assert "\x1b" not in out and "[/]\\x1b[2J" in out


def test_a_spec_description_with_markup_and_escapes_is_listed_literally(run_cli, tmp_path):
    write(tmp_path / "square.py", SQUARE_SRC)
    write(tmp_path / "s.yaml", 'description: "[/] \\e[2J clears"\nlayer: square.py:Square\ninputs: [{shape: [3]}]\n')
    code, out, err = run_cli("list", tmp_path)
    no_traceback(out, err)
    assert code == 0 and "\x1b" not in out and "[/] \\x1b[2J clears" in out


@pytest.mark.parametrize(
    "name, code, fragment, hint",
    [
        ("NoSuperInit", 1, "super().__init__()", "super().__init__()"),
        ("Lazy", 2, "lazy", "nn.Linear"),
        ("OnMeta", 2, "meta device", "to_empty"),
    ],
)
def test_broken_modules_get_a_message_with_the_fix(run_cli, name, code, fragment, hint):
    err = expect(run_cli("run", a(name), "--input", "2x4"), code, fragment)
    assert hint in err[err.index("Hint:") :]


def test_a_module_level_getattr_that_raises_import_error_is_named(run_cli, tmp_path):
    layer = write(tmp_path / "lazy_pkg.py", "def __getattr__(name):\n    raise ImportError(f'{name} needs an optional dependency')\n")
    expect(run_cli("run", f"{layer}:Layer", "--input", "3"), 1, "ImportError", "needs an optional dependency", "'Layer'")


def test_a_default_device_that_does_not_exist_is_named(run_cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA exists here")
    layer = write(tmp_path / "on_cuda.py", "import torch\ntorch.set_default_device('cuda')\n" + SQUARE_SRC)
    expect(run_cli("run", f"{layer}:Square", "--input", "3"), 2, "set_default_device", "'cuda'")
    assert torch.tensor([1.0]).device.type == "cpu"  # and the default is back


@pytest.mark.parametrize(
    "spec, key, fragment",
    [
        ("seed: 99999999999999999999\n", "seed", "seed"),
        ("device: 'cuda:7'\n", "device", "cuda:7"),
    ],
)
def test_spec_option_errors_name_the_spec_file(run_cli, tmp_path, spec, key, fragment):
    if key == "device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    write(tmp_path / "square.py", SQUARE_SRC)
    path = write(tmp_path / "s.yaml", "layer: square.py:Square\ninputs: [{shape: [3]}]\n" + spec)
    with pytest.raises(SpecError) as info:
        from gradcheck_cli.checker import check_spec
        from gradcheck_cli.spec import load_spec

        check_spec(load_spec(path))
    assert str(path) in info.value.message and f": {key}:" in info.value.message and fragment in info.value.message


def test_too_many_spec_inputs_name_the_spec_and_its_inputs(run_cli, tmp_path):
    write(tmp_path / "square.py", SQUARE_SRC)
    write(tmp_path / "s.yaml", "layer: square.py:Square\ninputs: [{shape: [3]}, {shape: [3]}]\n")
    err = expect(run_cli("run", tmp_path / "s.yaml"), 2, "s.yaml: inputs:", "takes 1 input")
    assert "inputs:" in err[err.index("Hint:") :]


def test_a_json_spec_says_specs_are_yaml(run_cli, tmp_path):
    path = write(tmp_path / "spec.json", '{"layer": "x.py:X"}\n')
    expect(run_cli("run", path), 2, ".yaml/.yml")


def test_an_unreadable_layer_file_says_so(run_cli, tmp_path, monkeypatch):
    layer = write(tmp_path / "locked.py", SQUARE_SRC)
    real = Path.read_bytes

    def locked(self):  # chmod 000 does not stop root, which runs this suite in CI
        if self.name == "locked.py":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", locked)
    err = expect(run_cli("run", f"{layer}:Square", "--input", "3"), 2, "cannot be read", "Permission denied")
    assert "inside torch" not in err


def test_sweep_never_recommends_a_step_lost_in_noise(run_cli):
    code, out, err = run_cli("sweep", a("Square"), "--input", "3", "--eps-range", "1e-30", "1e-22", "--points", "3")
    no_traceback(out, err)
    assert code == 1 and "best eps" not in out and "no step size recommended" in out


# =========================================================================== in a real process


def test_the_console_script_keeps_its_promises_with_broken_streams(tmp_path):
    """A passing check ends 0 whatever stdout is: a pipe closed by `head -1`, /dev/full, closed, ASCII-only.

    Also: a child process that writes to stdout at import cannot corrupt ``--json -``, and a
    thread the layer never stops does not keep the process alive. All in parallel: each
    process pays for importing torch.
    """
    chatty = write(tmp_path / "chatty.py", "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'print(\"garbage from a child\")'])\n" + SQUARE_SRC)
    target = a("Square")
    runs = {
        "head": gradcheck_process("run", target, "--input", "3", stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        "full": gradcheck_process("run", target, "--input", "3", stdout=open("/dev/full", "w"), stderr=subprocess.PIPE),
        "closed": gradcheck_process("run", target, "--input", "3", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={}, preexec_fn=lambda: os.close(1)),
        "ascii": gradcheck_process("run", target, "--input", "3", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PYTHONIOENCODING": "ascii"}),
        "child": gradcheck_process("run", f"{chatty}:Square", "--input", "3", "--json", "-", stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        "thread": gradcheck_process("run", a("StartsAThread"), "--input", "3", stdout=subprocess.PIPE, stderr=subprocess.PIPE),
    }
    first_line = runs["head"].stdout.readline()  # what `| head -1` reads, then it closes the pipe
    runs["head"].stdout.close()
    results = {}
    try:
        for name, proc in runs.items():
            out = proc.stdout.read().decode() if name not in ("head", "full", "closed") else ""
            err = proc.stderr.read().decode()
            results[name] = (proc.wait(timeout=120), out, err)
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
    for name, (code, out, err) in results.items():
        no_traceback(out, err)
        assert code == 0, (name, out, err)
    assert first_line.startswith(b"gradcheck")
    assert results["head"][2] == ""  # a reader that went away: quiet
    assert "No space left on device" in results["full"][2]
    assert "PASS" in results["ascii"][1] and "\u00b7" not in results["ascii"][1]
    data = json.loads(results["child"][1])  # stdout is exactly the JSON report
    assert data["passed"] is True and "garbage from a child" in results["child"][2]
    assert "PASS" in results["thread"][1]


def test_sigterm_ends_like_ctrl_c_with_a_partial_report_and_exit_143(tmp_path):
    report = stale(tmp_path / "r.json")
    started = tmp_path / "started"
    layer = write(
        tmp_path / "slow.py",
        SQUARE_SRC + f"\n\nimport time, pathlib\n\ndef slow(x):\n    pathlib.Path({str(started)!r}).touch()\n    time.sleep(0.2)\n    return Square.apply(x)\n",
    )
    proc = gradcheck_process("run", f"{layer}:slow", "--input", "40", "--no-grouping", "--json", str(report), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = out.decode(), err.decode()
    no_traceback(out, err)
    assert proc.returncode == 143, (out, err)
    assert "SIGTERM" in err
    data = report_of_this_run(report)
    assert data["interrupted"] is True and data["exit_code"] == 143


def test_isolation_turns_what_kills_the_process_into_the_layers_error(tmp_path):
    """os._exit(0) in forward, a segfault, a layer that never stops: exit 1 with words, and a report that says so."""
    cases = {
        "os_exit_in_forward": ([], "called os._exit(0)"),  # caught in the child itself, with the call named
        "c_exit_in_forward": ([], "exited with status 0 during the forward"),
        "segfault_in_forward": ([], "died with SIGSEGV during the forward"),
        "never_gives_up": (["--timeout", "0.3"], "did not finish within --timeout 0.3s and did not stop when asked"),
    }
    procs = {
        name: gradcheck_process("run", a(name), "--input", "3", *extra, "--json", str(tmp_path / f"{name}.json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, (extra, _) in cases.items()
    }
    try:
        outcomes = {name: (proc.communicate(timeout=120), proc.returncode) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, ((out, err), code) in outcomes.items():
        out, err = out.decode(), err.decode()
        no_traceback(out, err)
        assert code == 1, (name, out, err)
        assert cases[name][1] in err, (name, err)
        data = report_of_this_run(tmp_path / f"{name}.json")
        assert data["status"] == "ERROR" and cases[name][1] in data["error"]


def test_ctrl_c_while_starting_up_is_130_without_a_traceback():
    proc = gradcheck_process("run", a("Square"), "--input", "3", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)  # the supervisor is up; its child is importing torch
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    no_traceback(out.decode(), err.decode())
    assert proc.returncode == 130, (out, err)
    assert "Interrupted" in err.decode() and "Aborted" not in err.decode()


# =========================================================================== found by an adversarial audit


@pytest.mark.parametrize(
    "extra, spec_text",
    [
        (["-q", "-v"], "layer: square.py:Square\ninputs: [{shape: [3]}]\n"),  # a usage error raised early
        ([], "layer: square.py:Square\ninputs: [{shape: [3]}]\nrtol: one\n"),  # the spec itself is invalid
        (["--junit-xml", "no/such/folder/r.xml"], "layer: square.py:Square\ninputs: [{shape: [3]}]\n"),  # another output is bad
    ],
)
def test_no_early_error_writes_its_report_over_the_spec(run_cli, tmp_path, extra, spec_text):
    write(tmp_path / "square.py", SQUARE_SRC)
    spec = write(tmp_path / "s.yaml", spec_text)
    code, out, err = run_cli("run", spec, "--json", spec, *extra)
    assert code == 2, (out, err)
    assert spec.read_text() == spec_text


def test_no_file_of_the_users_is_overwritten_even_one_the_run_does_not_name(run_cli, tmp_path, monkeypatch):
    """A module the layer imports, a file that only mentions "passed": not gradcheck's reports, never replaced."""
    write(tmp_path / "helper.py", "def double(x):\n    return 2 * x  # the test asserts report['passed']\n")
    write(tmp_path / "lay.py", SQUARE_SRC + "\nfrom helper import double\n")
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "helper.py").read_text()
    expect(run_cli("run", "lay.py:Square", "--input", "3", "--json", "helper.py"), 2, "never overwrites a file it did not write")
    code, _, _ = run_cli("run", "lay.py:Square", "--json", "helper.py", "--no-such-flag")  # a command line click refuses
    assert code == 2 and (tmp_path / "helper.py").read_text() == before


def test_json_to_dev_stdout_is_stdout_and_devices_are_written_not_replaced(run_cli, tmp_path):
    code, out, _ = run_cli("run", a("Square"), "--input", "3", "--json", "/dev/stdout", "-q")
    assert code == 0 and json.loads(out[out.index("{"):])["passed"] is True
    code, _, err = run_cli("run", a("Square"), "--input", "3", "--json", os.devnull, "-q")
    assert code == 0 and not Path(os.devnull).is_file()  # still the device: written into, not renamed over
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    code, _, err = run_cli("run", a("Square"), "--input", "3", "--json", fifo, "-q")
    assert code == 2 and "nobody is reading" in err and fifo.is_fifo()


def test_a_report_that_cannot_be_written_leaves_no_stale_one_beside_the_others(run_cli, tmp_path, monkeypatch):
    from gradcheck_cli import outputs

    old_json = stale(tmp_path / "r.json")
    junit = tmp_path / "r.xml"
    real = outputs.atomic_write

    def json_fails(path, data, what="report"):
        if path.name == "r.json" and b"INCOMPLETE" not in (data.encode() if isinstance(data, str) else data):
            raise UsageError(f"Cannot write the {what} to {str(path)!r}: No space left on device.")
        return real(path, data, what)

    monkeypatch.setattr(outputs, "atomic_write", json_fails)
    code, _, err = run_cli("run", a("WrongSquare"), "--input", "3", "--json", old_json, "--junit-xml", junit)
    assert code == 2 and err.count("No space left") == 1
    assert not old_json.exists()  # removed: neither last week's pass nor a half-written one
    assert ET.parse(junit).getroot().get("failures") == "1"  # the other report is this run's


def test_a_layer_file_that_switches_autograd_off_at_import_is_still_checked(tmp_path):
    layer = write(tmp_path / "nograd.py", "import torch\ntorch.set_grad_enabled(False)\n" + SQUARE_SRC)
    assert gradcheck_cli.check(f"{layer}:Square", ["3"]).passed
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("class E(Exception):\n    def __str__(self):\n        raise RuntimeError('str raises')\nraise E()\n", "raised E: E"),
        ("raise RuntimeError('boom\\nPASS: all 3 tensor(s) match.')\n", "boom"),
        ("raise RuntimeError('A' * 10_000_000)\n", "more characters"),
    ],
)
def test_an_import_error_is_one_short_line(run_cli, tmp_path, source, fragment):
    layer = write(tmp_path / "bad.py", source)
    err = expect(run_cli("run", f"{layer}:X", "--input", "3"), 1, fragment)
    assert "PASS" not in err and len(err) < 2000


def test_a_huge_layer_file_is_refused_before_it_is_read(run_cli, tmp_path):
    big = tmp_path / "big.py"
    with open(big, "wb") as f:
        f.truncate(100 * 1024**2)  # sparse: no disk used
    expect(run_cli("run", f"{big}:X", "--input", "3"), 2, "MiB")


def test_what_only_a_real_process_shows_after_the_audit(tmp_path):
    """In parallel: closed stdin and stdout; a working folder with inspect.py; a stray supervisor variable;
    a layer that replaces os._exit (without isolation); a thread printing after the check into --json -;
    SIGTERM while starting up; a layer that resets SIGTERM at import, signalled mid-check."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    write(shadow / "inspect.py", "x = 1\n")
    patched = write(tmp_path / "patched.py", "import os\nos._exit = lambda code: None\n" + ABUSE.read_text())
    chatter = write(tmp_path / "chatter.py", SQUARE_SRC + (
        "\nimport threading, time\n\ndef beat():\n    time.sleep(1.0)\n    while True:\n        print('heartbeat')\n        time.sleep(0.001)\n\n"
        "threading.Thread(target=beat, daemon=True).start()\n"
    ))
    started = tmp_path / "started"
    resets = write(tmp_path / "resets.py", SQUARE_SRC + (
        f"\nimport signal, time, pathlib\nsignal.signal(signal.SIGTERM, signal.SIG_DFL)\n\n"
        f"def slow(x):\n    pathlib.Path({str(started)!r}).touch()\n    time.sleep(0.2)\n    return Square.apply(x)\n"
    ))
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = {
        "closed": gradcheck_process("run", a("Square"), "--input", "3", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    preexec_fn=lambda: (os.close(0), os.close(1))),
        "shadow": gradcheck_process("run", a("Square"), "--input", "3", cwd=shadow, **pipe),
        "stray": gradcheck_process("run", a("Square"), "--input", "3", env={"GRADCHECK_SUPERVISOR_FD": "1"}, **pipe),
        "patched": gradcheck_process("run", f"{patched}:WrongSquare", "--input", "3", "--no-isolate", **pipe),
        "chatter": gradcheck_process("run", f"{chatter}:Square", "--input", "3", "--json", "-", **pipe),
        "term_early": gradcheck_process("run", a("Square"), "--input", "3", "--json", str(tmp_path / "early.json"), **pipe),
        "term_reset": gradcheck_process("run", f"{resets}:slow", "--input", "40", "--no-grouping", "--json", str(tmp_path / "reset.json"), **pipe),
    }
    # "While starting up": once gradcheck catches SIGTERM at all (a signal that comes before the
    # interpreter runs any code kills any program), which on a loaded machine can take over 0.3 s.
    _wait_until_catching(runs["term_early"].pid, signal.SIGTERM)
    runs["term_early"].send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    runs["term_reset"].send_signal(signal.SIGTERM)
    results = {}
    try:
        for name, proc in runs.items():
            out, err = proc.communicate(timeout=120)
            results[name] = (proc.returncode, (out or b"").decode(), (err or b"").decode())
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
    expected = {"closed": 0, "shadow": 0, "stray": 0, "patched": 1, "chatter": 0, "term_early": 143, "term_reset": 143}
    for name, (code, out, err) in results.items():
        no_traceback(out, err)
        assert code == expected[name], (name, code, out, err)
    assert '"stage"' not in results["stray"][1] + results["stray"][2]  # the protocol is never shown
    assert json.loads(results["chatter"][1])["passed"] is True and "heartbeat" not in results["chatter"][1]
    reset = json.loads((tmp_path / "reset.json").read_text())
    assert reset["interrupted"] is True and reset["exit_code"] == 143


def _wait_until_catching(pid: int, signum: int, timeout: float = 30.0) -> None:
    """Wait until process ``pid`` has a handler for ``signum`` (Linux: SigCgt in /proc); elsewhere, a short sleep."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        time.sleep(0.3)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        caught = next((line.split()[1] for line in status.read_text().splitlines() if line.startswith("SigCgt:")), "0")
        if int(caught, 16) >> (signum - 1) & 1:
            return
        time.sleep(0.01)


def test_a_killed_supervisor_takes_its_child_with_it(tmp_path):
    """A SIGKILLed gradcheck (timeout -s KILL, the OOM killer) must leave no check running on to write a report later."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the kernel ties the child to its parent on Linux; elsewhere a watchdog thread does")
    report = tmp_path / "r.json"
    started = tmp_path / "started"
    layer = write(tmp_path / "slow.py", SQUARE_SRC + (
        f"\nimport time, pathlib\n\ndef slow(x):\n    pathlib.Path({str(started)!r}).touch()\n    time.sleep(0.05)\n    return Square.apply(x)\n"
    ))
    proc = gradcheck_process("run", f"{layer}:slow", "--input", "100", "--no-grouping", "--json", str(report), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    proc.kill()
    proc.wait()
    time.sleep(1.0)
    assert children and not any(Path(f"/proc/{c}").exists() and "zombie" not in Path(f"/proc/{c}/status").read_text().lower() for c in children)
    assert json.loads(report.read_text())["status"] == "INCOMPLETE"  # never last run's, never a late pass


@pytest.mark.parametrize("how", ["--no-isolate", "api", "pytest"])
def test_os_exit_in_a_layer_is_its_error_in_process_too(run_cli, tmp_path, how):
    """Without a supervising process (the API, the pytest plugin, --no-isolate), os._exit(0) in forward
    ended the run with status 0 -- a false pass; it is the layer's error (exit 1) there too."""
    if how == "--no-isolate":
        proc = gradcheck_process("run", a("os_exit_in_forward"), "--input", "3", "--no-isolate", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "called os._exit(0)" in err.decode(), err
    elif how == "api":
        import os

        import gradcheck_cli

        with pytest.raises(gradcheck_cli.LayerError, match=r"called os\._exit\(0\)"):
            gradcheck_cli.check(a("os_exit_in_forward"), ["3"])
        assert os._exit.__name__ == "_exit" and os._exit.__module__ in ("posix", "nt")  # put back
    else:
        spec = tmp_path / "bye.yaml"
        spec.write_text(f"layer: {a('os_exit_in_forward')}\ninputs: [{{shape: [3]}}]\n")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--gradcheck-specs", str(spec), str(tmp_path)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout + proc.stderr

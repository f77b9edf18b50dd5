"""Issue 7: robust under faults and abuse.

Every failure ends in a short, accurate message (what went wrong and what to do),
the right exit status (1: the layer's own code misbehaved, 2: a usage or
configuration problem, 130: Ctrl-C) and no traceback; the user's objects, RNG
states and files come out exactly as they went in.

Layers live in tests/layers/robust/faulty.py (and tests/layers/simple.py); files
that cannot even be imported are written into tmp_path by the tests.  Where the
tool misbehaves today, the test states the correct behaviour and is marked
``xfail(strict=True, reason="BUG: ...")``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

import gradcheck_cli
from gradcheck_cli.checker import Interrupted
from gradcheck_cli.errors import LayerError, UsageError

ROOT = Path(__file__).resolve().parent.parent
LAYERS = Path(__file__).resolve().parent / "layers"
SIMPLE = LAYERS / "simple.py"
FAULTY = LAYERS / "robust" / "faulty.py"


def f(name: str) -> str:
    return f"{FAULTY}:{name}"


def s(name: str) -> str:
    return f"{SIMPLE}:{name}"


def no_traceback(out: str, err: str) -> None:
    assert "Traceback" not in out, out
    assert "Traceback" not in err, err


def expect(result, code: int, *fragments: str, hint: bool = True) -> str:
    """Exit status, no traceback, every fragment in stderr, and (by default) a hint on what to do."""
    got, out, err = result
    no_traceback(out, err)
    assert got == code, f"exit {got}, expected {code}\nstdout:\n{out}\nstderr:\n{err}"
    for fragment in fragments:
        assert fragment.lower() in err.lower(), f"{fragment!r} not in stderr:\n{err}"
    if hint:
        assert "Hint:" in err or "Try 'gradcheck" in err, f"no hint on what to do:\n{err}"
    return err


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


SQUARE_SRC = """\
import torch


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_out
"""


# =========================================================================== 1. the error catalogue


def test_missing_file(run_cli, tmp_path):
    missing = tmp_path / "no_such_layer.py"
    err = expect(run_cli("run", f"{missing}:X", "--input", "3"), 2, "no_such_layer.py", "does not exist")
    assert "file.py:Name" in err  # says what a target looks like


def test_name_not_in_file(run_cli):
    err = expect(run_cli("run", f("Nope"), "--input", "3"), 2, "'Nope'", "faulty.py")
    assert "ReturnsDict" in err  # lists the layers that are there


def test_syntax_error_names_file_and_line(run_cli, tmp_path):
    bad = write(tmp_path / "broken_syntax.py", "import torch\n\ndef f(x:\n    return x\n")
    expect(run_cli("run", f"{bad}:f", "--input", "3"), 2, "syntax error", "broken_syntax.py", "line 3")


def test_import_error_names_the_missing_module(run_cli, tmp_path):
    bad = write(tmp_path / "needs_dep.py", "import torch\nimport nosuchmodule_gradcheck_xyz\n")
    expect(run_cli("run", f"{bad}:X", "--input", "3"), 2, "needs_dep.py", "nosuchmodule_gradcheck_xyz")


def test_error_raised_at_import_names_file_and_line(run_cli, tmp_path):
    bad = write(tmp_path / "raises_at_import.py", "x = 1\nraise ValueError('bad config')\n")
    expect(run_cli("run", f"{bad}:X", "--input", "3"), 1, "raises_at_import.py", "line 2", "ValueError", "bad config")


def test_target_not_callable(run_cli):
    expect(run_cli("run", f("NOT_CALLABLE"), "--input", "3"), 2, "NOT_CALLABLE", "int", "not something that can be called")


def test_constructor_needing_arguments_names_them_and_suggests_a_spec(run_cli):
    err = expect(run_cli("run", s("NeedsArg"), "--input", "2x3"), 2, "NeedsArg", "'n'")
    assert "args" in err and "kwargs" in err and "spec" in err.lower()


@pytest.mark.parametrize("call", ["sys.exit(0)", "sys.exit()", "sys.exit(3)", "sys.exit('bye')", "raise SystemExit"])
def test_sys_exit_at_import_is_the_layers_error_never_a_pass(run_cli, tmp_path, call):
    bad = write(tmp_path / "exits.py", f"import sys\nimport torch\n{call}\n")
    code, out, err = run_cli("run", f"{bad}:X", "--input", "3")
    expect((code, out, err), 1, "exits.py", "sys.exit")
    assert "PASS" not in out


def test_sys_exit_at_import_in_a_spec_folder_is_not_a_pass(run_cli, tmp_path):
    write(tmp_path / "exits.py", "import sys\nsys.exit(0)\n")
    write(tmp_path / "ok.py", SQUARE_SRC)
    write(tmp_path / "a_ok.yaml", "layer: ok.py:Square\ninputs: [{shape: [3]}]\n")
    write(tmp_path / "b_exits.yaml", "layer: exits.py:Square\ninputs: [{shape: [3]}]\n")
    code, out, err = run_cli("run", str(tmp_path))
    no_traceback(out, err)
    assert code == 1, (out, err)
    assert "b_exits.yaml" in err and "sys.exit" in err
    assert "ERROR" in out and "ERROR: 1 of 2 specs could not be checked" in out.strip().splitlines()[-1]


def test_sys_exit_in_forward_is_a_layer_error(run_cli, tmp_path):
    bad = write(tmp_path / "exit_fwd.py", "import sys, torch\nclass L(torch.nn.Module):\n    def forward(self, x):\n        sys.exit(0)\n")
    expect(run_cli("run", f"{bad}:L", "--input", "3"), 1, "forward", "L", "sys.exit")


def test_sys_exit_in_backward_is_a_layer_error(run_cli, tmp_path):
    src = SQUARE_SRC.replace("(x,) = ctx.saved_tensors", "import sys; sys.exit(0)")
    bad = write(tmp_path / "exit_bwd.py", src)
    expect(run_cli("run", f"{bad}:Square", "--input", "3"), 1, "backward", "Square", "sys.exit")


@pytest.fixture
def printing_layer(tmp_path):
    """A layer file that prints at import and in forward (a fresh file: imported afresh)."""
    src = "print('hello from import')\n" + SQUARE_SRC.replace("ctx.save_for_backward(x)", "print('hello from forward'); ctx.save_for_backward(x)")
    return write(tmp_path / "chatty.py", src)


def test_layer_printing_at_import_still_works_and_keeps_json_file_valid(run_cli, printing_layer, tmp_path):
    report = tmp_path / "report.json"
    code, out, err = run_cli("run", f"{printing_layer}:Square", "--input", "3", "--json", report)
    no_traceback(out, err)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["passed"] is True and [t["name"] for t in data["tensors"]] == ["x"]
    assert "x" in out and "PASS" in out  # the table is on stdout
    assert "hello from import" in err and "hello from import" not in out
    assert "hello from forward" in err and "hello from forward" not in out


def test_json_to_stdout_is_pure_json(run_cli, printing_layer):
    code, out, err = run_cli("run", f"{printing_layer}:Square", "--input", "3", "--json", "-")
    no_traceback(out, err)
    assert code == 0, err
    assert "hello from import" in err
    data = json.loads(out)  # stdout must be exactly the JSON report
    assert data["passed"] is True


def test_forward_raising_is_exit_1_naming_layer_and_error(run_cli):
    expect(run_cli("run", f("ForwardRaises"), "--input", "2x3"), 1, "ForwardRaises", "forward", "ValueError", "planted failure in forward", "faulty.py")


def test_backward_raising_is_exit_1_naming_layer_and_error(run_cli):
    expect(run_cli("run", s("BackwardRaisesFn"), "--input", "3"), 1, "BackwardRaisesFn", "backward", "RuntimeError", "planted failure in backward")


@pytest.mark.parametrize(
    "name, what",
    [("ReturnsString", "str"), ("ReturnsNone", "nothing"), ("ReturnsInt", "int64")],
)
def test_forward_returning_no_floating_tensor_is_exit_1(run_cli, name, what):
    expect(run_cli("run", f(name), "--input", "2x3"), 1, name, f"returned {'' if what == 'nothing' else 'a '}{what}", "floating")


@pytest.mark.parametrize("name", ["ReturnsNan", "ReturnsInf"])
def test_forward_returning_nan_or_inf_is_exit_1(run_cli, name):
    expect(run_cli("run", f(name), "--input", "2x3"), 1, name, "non-finite", "NaN or Inf")


def test_backward_returning_too_few_gradients_is_exit_1(run_cli):
    expect(run_cli("run", f("TooFewGrads"), "--input", "3", "--input", "3"), 1, "TooFewGrads", "backward", "number of gradients", "expected 2, got 1")


def test_backward_returning_wrong_shape_is_exit_1(run_cli):
    expect(run_cli("run", f("WrongShapeGrad"), "--input", "2x3"), 1, "WrongShapeGrad", "backward", "shape", "[7]", "[2, 3]")


def test_backward_returning_wrong_device_is_exit_1(run_cli):
    expect(run_cli("run", f("WrongDeviceGrad"), "--input", "3"), 1, "WrongDeviceGrad", "backward", "device", "meta")


def test_backward_returning_low_precision_gradient_fails_not_passes(run_cli):
    # autograd casts the float16 gradient back to float64 silently; its rounding must still show as a mismatch.
    code, out, err = run_cli("run", f("LowPrecisionGrad"), "--input", "3")
    no_traceback(out, err)
    assert code == 1 and "FAIL" in out


def test_nothing_differentiable_is_exit_2(run_cli):
    expect(run_cli("run", s("only_labels"), "--input", "=[1,2,3]"), 2, "only_labels", "nothing differentiable")


@pytest.mark.parametrize("option, suffix", [("--json", "r.json"), ("--junit-xml", "r.xml")])
def test_report_into_missing_folder_is_exit_2(run_cli, tmp_path, option, suffix):
    path = tmp_path / "no" / "such" / suffix
    expect(run_cli("run", s("Scale"), "--input", "2x4", option, path), 2, "does not exist", str(tmp_path / "no" / "such"), "create the folder")
    assert not path.exists() and not (tmp_path / "no").exists()


def test_help_says_report_folders_must_exist(run_cli):
    code, out, _ = run_cli("run", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert text.count("Its folder must exist") >= 2  # --json and --junit-xml (and --plot)


def test_spec_folder_without_specs_is_exit_2(run_cli, tmp_path):
    write(tmp_path / "layer.py", SQUARE_SRC)
    write(tmp_path / "notes.txt", "not a spec")
    expect(run_cli("run", str(tmp_path)), 2, "holds no", ".yaml")


def test_list_of_spec_folder_without_specs_is_exit_2(run_cli, tmp_path):
    code, out, err = run_cli("list", str(tmp_path))
    no_traceback(out, err)
    assert code == 2 and "holds no" in err


BAD_OPTIONS = [
    (["--eps", "0"], "--eps"),
    (["--eps", "-1e-6"], "--eps"),
    (["--eps", "nan"], "--eps"),
    (["--eps", "inf"], "--eps"),
    (["--eps", "tiny"], "--eps"),
    (["--rtol", "-1"], "--rtol"),
    (["--rtol", "nan"], "--rtol"),
    (["--atol", "inf"], "--atol"),
    (["--atol", "abc"], "--atol"),
    (["--input", "1x0x3"], "--input"),
    (["--input", "3x"], "--input"),
    (["--input", "-3"], "--input"),
    (["--input", "abc"], "--input"),
    (["--input", "=nan"], "--input"),
    (["--input", "=[1,[2]]"], "--input"),
    (["--input", "=[]"], "--input"),
    (["--input", '="text"'], "--input"),
    (["--input", "=null"], "--input"),
    (["--device", "gpu"], "--device"),
    (["--device", "cuda:99"], "cuda"),
    (["--dtype", "int64"], "--dtype"),
    (["--dtype", "float33"], "--dtype"),
    (["--numeric-dtype", "double"], "--numeric-dtype"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--budget", "-2"], "--budget"),
    (["--max-elements", "0"], "--max-elements"),
    (["--seed", "-1"], "--seed"),
    (["--only", "nope"], "nope"),
]


@pytest.mark.parametrize("extra, fragment", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_invalid_option_values_are_exit_2(run_cli, extra, fragment):
    args = ["run", s("Scale")] + (["--input", "2x4"] if extra[0] != "--input" else []) + extra
    code, out, err = run_cli(*args)
    no_traceback(out, err)
    assert code == 2, (out, err)
    assert fragment in err, err
    assert out.strip() == "", out


def test_device_meta_is_exit_2(run_cli):
    expect(run_cli("run", s("Scale"), "--input", "2x4", "--device", "meta"), 2, "meta")


def test_an_indexed_cpu_device_is_exit_2(run_cli):
    """'cpu:5' (a typo for cuda:5?) used to be accepted and reported as if a sixth CPU had run the check."""
    expect(run_cli("run", s("Scale"), "--input", "2x4", "--device", "cpu:5"), 2, "one CPU device")
    code, _, _ = run_cli("run", s("Scale"), "--input", "2x4", "--device", "cpu:0")
    assert code == 0


@pytest.mark.parametrize("value", ["inf", "1e300"])
def test_timeout_out_of_range_is_exit_2(run_cli, value):
    expect(run_cli("run", s("Scale"), "--input", "2x4", "--timeout", value), 2, "--timeout")


def test_seed_too_large_is_exit_2(run_cli):
    expect(run_cli("run", s("Scale"), "--input", "2x4", "--seed", str(10**30)), 2, "--seed")


@pytest.mark.parametrize("literal", ["=NaN", "=Infinity", "=[1.0, 2.0, 3.0, -Infinity]", "=1e999"])
def test_non_finite_literal_input_is_exit_2(run_cli, literal):
    expect(run_cli("run", s("Scale"), "--input", literal), 2, "--input", "finite")


@pytest.mark.parametrize("extra", [["--eps", "nan"], ["--rtol", "inf"]])
def test_non_finite_tolerance_says_what_to_do(run_cli, extra):
    err = expect(run_cli("run", s("Scale"), "--input", "2x4", *extra), 2, extra[0])
    assert "Hint:" in err


# =========================================================================== 2. resource guards


@pytest.fixture
def no_big_allocations(monkeypatch):
    """Make any attempt to create a tensor of more than 10**8 elements fail the test."""

    def guard(fn):
        def wrapped(*args, **kwargs):
            sizes = args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args
            if all(isinstance(d, int) for d in sizes) and sizes and np.prod([float(d) for d in sizes]) > 1e8:
                raise AssertionError(f"{fn.__name__}{tuple(sizes)} was allocated")
            return fn(*args, **kwargs)

        return wrapped

    for name in ("randn", "rand", "empty", "zeros", "ones", "full"):
        monkeypatch.setattr(torch, name, guard(getattr(torch, name)))


def test_absurd_input_is_refused_before_allocating_with_size_in_gib(run_cli, no_big_allocations):
    started = time.perf_counter()
    err = expect(run_cli("run", s("Scale"), "--input", "100000x100000"), 2, "100000x100000", "GiB")
    assert re.search(r"74\.5 GiB", err), err  # 1e10 elements x 8 bytes
    assert time.perf_counter() - started < 10


def test_absurd_input_in_a_spec_is_refused(run_cli, tmp_path, no_big_allocations):
    spec = write(tmp_path / "huge.yaml", f"layer: {SIMPLE}:Square\ninputs: [{{shape: [100000, 100000]}}]\n")
    expect(run_cli("run", spec), 2, "GiB")


def test_absurd_input_in_the_api_is_refused(no_big_allocations):
    with pytest.raises(UsageError, match="GiB"):
        gradcheck_cli.check(s("Square"), ["100000x100000"])


@pytest.mark.parametrize("name, stage", [("ForwardOOM", "forward"), ("BackwardOOMFn", "backward")])
def test_out_of_memory_is_exit_1_with_the_tensor_sizes(run_cli, name, stage):
    expect(run_cli("run", f(name), "--input", "2x3"), 1, name, "out of memory", stage, "[2, 3]")


def test_cpu_out_of_memory_is_reported_as_such(run_cli):
    expect(run_cli("run", f("CpuOOM"), "--input", "2x3"), 1, "CpuOOM", "out of memory", "[2, 3]")


@pytest.mark.parametrize("name", ["Sleeps", "SleepsCatchingException"])
def test_timeout_stops_a_hanging_layer(run_cli, name):
    started = time.perf_counter()
    err = expect(run_cli("run", f(name), "--input", "3", "--timeout", "1"), 1, name, "--timeout 1")
    assert time.perf_counter() - started < 8, "the timeout did not stop the sleep"
    assert "did not finish" in err


def test_timeout_restores_the_alarm_handler():
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(LayerError, match="timeout"):
        gradcheck_cli.check(f("Sleeps"), ["3"], timeout=0.5)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# =========================================================================== 3. interrupts


def test_ctrl_c_in_a_subprocess_exits_130_with_partial_report():
    """A real SIGINT while checking ``b``: the report shows ``a``, says interrupted, exit 130."""
    cmd = [sys.executable, "-m", "gradcheck_cli", "run", f("SlowTwoParams"), "--no-color"]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "160"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    planned = threading.Event()

    def read_stderr():
        for line in proc.stderr:
            err_lines.append(line)
            if "estimated" in line:  # the plan is printed just before the first tensor is checked
                planned.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert planned.wait(60), "the check never started:\n" + "".join(err_lines)
        time.sleep(1.5)  # `a` (2 elements) is done in ~0.3 s; `b` (80 elements) needs ~8 s
        assert proc.poll() is None, "the check finished before the signal:\n" + "".join(err_lines) + proc.stdout.read()
        proc.send_signal(signal.SIGINT)
        out = proc.stdout.read()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    err = "".join(err_lines)
    no_traceback(out, err)
    assert code == 130, (out, err)
    assert "interrupted" in (out + err).lower()
    assert re.search(r"^\W*a\W.*PASS", out, re.M), out  # `a` was checked and is shown
    assert not re.search(r"^\W*b\W", out, re.M), out  # `b` was not finished
    assert "1 of 2" in out  # says how much was checked


def test_interrupt_inside_the_check_in_process_shows_partial_report(run_cli):
    code, out, err = run_cli("run", f("InterruptWhileCheckingB"))
    no_traceback(out, err)
    assert code == 130
    assert "Interrupted" in err and "1 of 2" in out
    assert re.search(r"^\W*a\W", out, re.M)


def test_interrupted_run_is_never_reported_as_a_pass(run_cli):
    code, out, err = run_cli("run", f("InterruptWhileCheckingB"))
    assert code == 130
    assert "PASS: all" not in out, out
    assert "interrupt" in out.strip().splitlines()[-1].lower()


def test_interrupted_run_writes_the_json_report_it_was_asked_for(run_cli, tmp_path):
    report = tmp_path / "r.json"
    code, out, err = run_cli("run", f("InterruptWhileCheckingB"), "--json", report)
    assert code == 130
    data = json.loads(report.read_text())
    assert data["passed"] is False and [t["name"] for t in data["tensors"]] == ["a"]


# =========================================================================== 4. nothing lost


def snapshot(module: torch.nn.Module) -> dict:
    return {
        "params": {
            k: (p, p.detach().clone(), p.dtype, p.device, p.requires_grad, p.grad, None if p.grad is None else p.grad.clone())
            for k, p in module.named_parameters()
        },
        "buffers": {k: (b, b.detach().clone(), b.dtype, b.device) for k, b in module.named_buffers()},
        "modes": {k: m.training for k, m in module.named_modules()},
    }


def assert_same(module: torch.nn.Module, before: dict) -> None:
    now = dict(module.named_parameters())
    assert list(now) == list(before["params"])
    for k, (obj, value, dtype, device, rg, grad, grad_value) in before["params"].items():
        p = now[k]
        assert p is obj, f"parameter {k} was replaced"
        assert p.dtype == dtype and p.device == device and p.requires_grad == rg, k
        assert torch.equal(p.detach(), value), f"parameter {k} changed"
        assert p.grad is grad, f"{k}.grad was replaced"
        if grad is not None:
            assert torch.equal(p.grad, grad_value), f"{k}.grad changed"
    bufs = dict(module.named_buffers())
    assert list(bufs) == list(before["buffers"])
    for k, (obj, value, dtype, device) in before["buffers"].items():
        assert bufs[k] is obj and bufs[k].dtype == dtype and bufs[k].device == device, k
        assert torch.equal(bufs[k], value), f"buffer {k} changed"
    assert {k: m.training for k, m in module.named_modules()} == before["modes"]


def stateful(training: bool):
    from gradcheck_cli.load import import_file

    m = import_file(FAULTY).Stateful()
    m.train(training)
    m.weight.grad = torch.full_like(m.weight, 7.0)
    m.inner.scale.grad = torch.arange(3, dtype=torch.float32)
    return m


SCENARIOS = {
    "pass": ({}, None),
    "fail": ({"mode": "bad_grad"}, None),
    "forward_raises": ({"mode": "forward_raises"}, LayerError),
    "backward_raises": ({"mode": "backward_raises"}, LayerError),
    "timeout": ({"mode": "sleep"}, LayerError),
    "interrupt_first_forward": ({"interrupt_at": 1}, (Interrupted, KeyboardInterrupt)),
    "interrupt_setup": ({"interrupt_at": 5}, (Interrupted, KeyboardInterrupt)),
    "interrupt_first_tensor": ({"interrupt_at": 10}, (Interrupted, KeyboardInterrupt)),
    "interrupt_late": ({"interrupt_at": 17}, (Interrupted, KeyboardInterrupt)),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_user_state_is_exactly_as_before(scenario, training, rng_snapshot):
    attrs, raises = SCENARIOS[scenario]
    m = stateful(training)
    for k, v in attrs.items():
        setattr(m, k, v)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    x.grad = torch.ones_like(x)
    x_before, x_grad = x.detach().clone(), x.grad
    before = snapshot(m)
    apply_before = torch.autograd.Function.apply
    alarm_before = signal.getsignal(signal.SIGALRM)
    rng = rng_snapshot()
    grad_mode = torch.is_grad_enabled()

    options = {"timeout": 0.5} if scenario == "timeout" else {}
    if raises is None:
        report = gradcheck_cli.check(m, [x], **options)
        assert report.passed is (scenario == "pass")
    else:
        with pytest.raises(raises):
            gradcheck_cli.check(m, [x], **options)

    rng.assert_unchanged()
    assert_same(m, before)
    assert torch.equal(x.detach(), x_before) and x.grad is x_grad and x.requires_grad
    assert torch.equal(x_grad, torch.ones_like(x))
    assert torch.autograd.Function.apply == apply_before, "autograd.Function.apply left patched"
    assert signal.getsignal(signal.SIGALRM) is alarm_before
    assert torch.is_grad_enabled() == grad_mode


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("scenario", ["pass", "forward_raises", "interrupt_first_tensor"])
def test_user_state_on_cuda_is_exactly_as_before(scenario, rng_snapshot):
    attrs, raises = SCENARIOS[scenario]
    m = stateful(True).cuda()
    m.weight.grad = torch.full_like(m.weight, 7.0)
    for k, v in attrs.items():
        setattr(m, k, v)
    before = snapshot(m)
    rng = rng_snapshot()
    cuda_rng = torch.cuda.get_rng_state()
    x = torch.linspace(-1, 1, 12, dtype=torch.float64, device="cuda").reshape(4, 3)
    if raises is None:
        gradcheck_cli.check(m, [x], device="cuda")
    else:
        with pytest.raises(raises):
            gradcheck_cli.check(m, [x], device="cuda")
    rng.assert_unchanged()
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng), "the CUDA RNG state changed"
    assert_same(m, before)


def test_interrupt_inside_the_tensor_loop_gives_a_partial_report(rng_snapshot):
    """A late interrupt is turned into Interrupted with the tensors finished so far."""
    m = stateful(True)
    before = snapshot(m)
    rng = rng_snapshot()
    m.interrupt_at = 10**9
    gradcheck_cli.check(m, ["4x3"])
    total = m.calls[0]
    m.calls[0], m.interrupt_at = 0, total - 1
    with pytest.raises(Interrupted) as info:
        gradcheck_cli.check(m, ["4x3"])
    names = [t.name for t in info.value.report.tensors]
    assert names and names == ["x", "weight", "inner.scale"][: len(names)] and len(names) < 3  # bias is frozen: not checked
    assert any("interrupted" in n for n in info.value.report.notes)
    rng.assert_unchanged()
    assert_same(m, before)


def test_state_survives_a_target_string_layer_with_global_rng(rng_snapshot):
    rng = rng_snapshot()
    report = gradcheck_cli.check(s("UsesGlobalRng"), ["2x3"])
    assert report.passed
    rng.assert_unchanged()


# ----------------------------------------------------------------------- no stray files


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.parametrize("target, code", [("Square", 0), ("Broken", 1), ("Nope", 2)])
def test_only_the_requested_reports_are_written(run_cli, tmp_path, monkeypatch, target, code):
    src = SQUARE_SRC + "\n\nclass Broken(Square):\n    @staticmethod\n    def backward(ctx, g):\n        (x,) = ctx.saved_tensors\n        return x * g\n"
    write(tmp_path / "layer.py", src)
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    got, out, err = run_cli("run", f"layer.py:{target}", "--input", "3", "--json", "report.json", "--junit-xml", "report.xml")
    no_traceback(out, err)
    assert got == code, err
    written = listing(tmp_path) - before
    assert written == {"report.json", "report.xml"}, written  # both reports of this run, whatever its outcome
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["passed"] is (code == 0) and data["exit_code"] == code
    root = ET.parse(tmp_path / "report.xml").getroot()
    assert (int(root.get("failures")), int(root.get("errors"))) == {0: (0, 0), 1: (1, 0), 2: (0, 1)}[code]
    if code == 1:  # the failing tensor is a <failure> with the worst element and the rerun line
        failure = root.find(".//testcase[@name='x']/failure")
        assert "analytic" in failure.get("message") and "gradcheck run" in failure.text


def test_importing_a_layer_file_writes_no_bytecode(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as for a user without PYTHONDONTWRITEBYTECODE
    write(tmp_path / "fresh_layer.py", SQUARE_SRC)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", "fresh_layer.py:Square", "--input", "3")
    assert code == 0, err
    assert not (tmp_path / "__pycache__").exists(), list((tmp_path / "__pycache__").iterdir())


# =========================================================================== 5. safety


@pytest.mark.parametrize(
    "yaml_text",
    [
        'layer: !!python/object/apply:os.system ["touch pwned"]\ninputs: [{shape: [3]}]\n',
        'layer: layer.py:Square\ninputs: !!python/object/apply:os.system ["touch pwned"]\n',
        '!!python/object/apply:os.system ["touch pwned"]\n',
    ],
    ids=["layer", "inputs", "document"],
)
def test_yaml_cannot_run_code(run_cli, tmp_path, monkeypatch, yaml_text):
    write(tmp_path / "layer.py", SQUARE_SRC)
    write(tmp_path / "evil.yaml", yaml_text)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", "evil.yaml")
    no_traceback(out, err)
    assert code == 2, (out, err)
    assert not (tmp_path / "pwned").exists()
    assert "evil.yaml" in err and "python/object" in err


def test_yaml_python_tag_message_says_tags_are_refused(run_cli, tmp_path):
    spec = write(tmp_path / "evil.yaml", 'layer: !!python/object/apply:os.system ["touch pwned"]\n')
    code, out, err = run_cli("run", spec)
    assert code == 2
    assert "indentation" not in err.lower() and "syntax error" not in err.lower(), err
    assert "tag" in err.lower() and ("not allowed" in err.lower() or "refuse" in err.lower() or "safe" in err.lower()), err


# =========================================================================== 6. invented bad inputs


@pytest.mark.parametrize("target", [":", "a.py:", ".py:X", "l.py:", " ", "::", "x.py::Y"])
def test_malformed_targets_are_exit_2(run_cli, target):
    code, out, err = run_cli("run", target, "--input", "3")
    no_traceback(out, err)
    assert code == 2, (out, err)
    assert "Error" in err and out.strip() == ""


def test_directory_as_layer_file_is_exit_2(run_cli, tmp_path):
    folder = tmp_path / "pkg.py"
    folder.mkdir()
    expect(run_cli("run", f"{folder}:X", "--input", "3"), 2, "pkg.py", "not a file")


def test_folder_without_specs_given_as_target_is_exit_2(run_cli, tmp_path):
    write(tmp_path / "layer.py", SQUARE_SRC)
    expect(run_cli("run", str(tmp_path), "--input", "3"), 2, "holds no")


def test_binary_layer_file_is_exit_2(run_cli, tmp_path):
    bad = tmp_path / "binary.py"
    bad.write_bytes(bytes(range(256)) * 4)
    expect(run_cli("run", f"{bad}:X", "--input", "3"), 2, "binary.py")


def test_binary_layer_file_message_has_no_line_none(run_cli, tmp_path):
    bad = tmp_path / "binary.py"
    bad.write_bytes(b"\x00\x01\x02import torch\n")
    err = expect(run_cli("run", f"{bad}:X", "--input", "3"), 2, "binary.py")
    assert "line None" not in err, err


def test_non_utf8_layer_file_is_exit_2(run_cli, tmp_path):
    bad = tmp_path / "latin.py"
    bad.write_bytes(b"# caf\xe9\nx = '\xe9'\n")
    expect(run_cli("run", f"{bad}:X", "--input", "3"), 2, "latin.py")


def test_spec_with_unknown_params_key_is_exit_2(run_cli, tmp_path):
    spec = write(tmp_path / "p.yaml", f"layer: {SIMPLE}:Scale\ninputs: [{{shape: [2, 4]}}]\nparams: {{wieght: 1.0}}\n")
    expect(run_cli("run", spec), 2, "wieght", "did you mean 'weight'")


def test_spec_with_params_of_wrong_shape_is_exit_2(run_cli, tmp_path):
    spec = write(tmp_path / "p.yaml", f"layer: {SIMPLE}:Scale\ninputs: [{{shape: [2, 4]}}]\nparams: {{weight: [1.0, 2.0]}}\n")
    expect(run_cli("run", spec), 2, "params.weight", "[2]", "[4]")


def test_unicode_paths_work(run_cli, tmp_path):
    folder = tmp_path / "ünï cödé 层"
    folder.mkdir()
    write(folder / "lay é.py", SQUARE_SRC)
    write(folder / "spéc.yaml", 'layer: "lay é.py:Square"\ninputs: [{shape: [3]}]\n')
    code, out, err = run_cli("run", f"{folder / 'lay é.py'}:Square", "--input", "3", "-q")
    no_traceback(out, err)
    assert code == 0, err
    report = folder / "ré.json"
    code, out, err = run_cli("run", folder, "-q", "--json", report, "--junit-xml", folder / "ré.xml")
    assert code == 0, err
    assert json.loads(report.read_text(encoding="utf-8"))["passed"] is True
    missing = folder / "nö.py"
    expect(run_cli("run", f"{missing}:X", "--input", "3"), 2, "nö.py", "does not exist")


def test_layer_returning_a_dict_of_tensors_is_checked(run_cli):
    code, out, err = run_cli("run", f("ReturnsDict"), "--input", "2x3")
    no_traceback(out, err)
    assert code == 0, err
    assert "x" in out and "PASS" in out


def test_layer_returning_an_empty_tensor_is_not_a_pass(run_cli):
    code, out, err = run_cli("run", f("ReturnsEmpty"), "--input", "2x3")
    no_traceback(out, err)
    assert code in (1, 2), out
    assert "ReturnsEmpty" in err and ("no elements" in err or "empty" in err)


def test_unusable_device_message_is_short(run_cli):
    err = expect(run_cli("run", s("Scale"), "--input", "2x4", "--device", "xla"), 2, "xla")
    assert len(err) < 600, f"{len(err)} characters:\n{err[:300]}..."

"""report.py: what a run's outcome means -- passed, status, exit code, strict JSON."""

from __future__ import annotations

import json

import pytest

from gradcheck_cli.errors import LayerError, UsageError
from gradcheck_cli.report import Report, RunResult, SuiteResult, TensorReport, to_json

CONFIG = {"dtype": "float64", "device": "cpu", "eps": 1e-6, "rtol": 1e-5, "atol": 1e-10, "seed": 0}


def tensor(name="input0", fail=0, noise=0, kink=0, kinks_fail=False, rel=0.0):
    counts = {"PASS": 10 - fail - noise - kink, "FAIL": fail, "KINK": kink, "NOISE": noise}
    return TensorReport(name, "input", (10,), 10, 10, counts, rel, rel, rel, (3,), 1.0, 2.0, "l2", kinks_fail=kinks_fail)


def report(*tensors, interrupted=False):
    return Report("layer.py:L", tensors, CONFIG, interrupted=interrupted)


def test_a_tensor_passes_only_without_failures_and_not_lost_in_noise():
    assert tensor().passed and tensor().status == "PASS"
    assert tensor(fail=1).status == "FAIL"
    assert tensor(noise=6).status == "NOISE" and not tensor(noise=6).passed  # most elements lost in noise
    assert tensor(noise=4).passed
    assert tensor(kink=2).passed and not tensor(kink=2, kinks_fail=True).passed


def test_an_interrupted_report_never_passes():
    assert report(tensor()).passed and not report(tensor(), interrupted=True).passed


@pytest.mark.parametrize(
    "result, status, code",
    [
        (SuiteResult("a", report=report(tensor())), "PASS", 0),
        (SuiteResult("a", report=report(tensor(fail=1))), "FAIL", 1),
        (SuiteResult("a", report=report(tensor(noise=9))), "NOISE", 1),
        (SuiteResult("a", error=LayerError("the forward raised")), "ERROR", 1),
        (SuiteResult("a", error=UsageError("no such file")), "ERROR", 2),
        (SuiteResult("a", report=report(tensor(), interrupted=True), signum=15), "INTERRUPTED", 143),
        (SuiteResult("a", signum=2), "INTERRUPTED", 130),
    ],
)
def test_status_and_exit_code_of_one_target(result, status, code):
    assert (result.status, result.exit_code) == (status, code)
    assert result.passed is (code == 0)


def test_a_run_exits_with_its_worst_outcome_and_an_interrupt_wins():
    ok, bad, broken = (SuiteResult("a", report=report(tensor())), SuiteResult("b", report=report(tensor(fail=1))),
                       SuiteResult("c", error=UsageError("x")))
    assert RunResult((ok, bad, broken), folder=True).exit_code == 2
    assert RunResult((ok, bad), folder=True).exit_code == 1
    assert RunResult((ok,), folder=True, signum=15).exit_code == 143
    assert not RunResult((), folder=True).passed  # nothing checked is not a pass


def test_json_is_strict_and_says_what_happened():
    data = json.loads(RunResult((SuiteResult("a", report=report(tensor(rel=float("inf")))),)).to_json(),
                      parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert data["tensors"][0]["max_rel_error"] is None and data["status"] == "PASS" and data["exit_code"] == 0
    folder = json.loads(RunResult((SuiteResult("s.yaml", error=UsageError("bad", "fix")),), folder=True).to_json())
    assert folder["specs"][0]["spec"] == "s.yaml" and folder["specs"][0]["error"] == "bad\nHint: fix"
    assert to_json({"x": float("nan"), "y": [1.0, float("-inf")]}) == '{\n  "x": null,\n  "y": [\n    1.0,\n    null\n  ]\n}'

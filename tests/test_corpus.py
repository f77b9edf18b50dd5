"""Run the layer corpus (tests/corpus) through check() and compare with each case's expectation.

For every case: ``report.passed`` must equal ``expect_pass``; the tensors that do
not pass must be exactly ``wrong`` (reported FAIL) plus ``inconclusive``
(reported NOISE).  Kink cases must show KINK counts, pass by default and fail
with ``kinks="fail"``.
"""

from __future__ import annotations

import pytest
import torch

from gradcheck_cli import check

from corpus import REGISTRY, Case


def _params(cases):
    return [
        pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
        for c in cases
    ]


def run_case(case: Case, **overrides):
    options = dict(dtype=case.dtype, reference_dtype=case.reference_dtype, kinks="pass", weighted_loss=True)
    options.update(overrides)
    inputs = [x.clone() for x in case.inputs]
    return check(case.make_layer(), inputs, name=case.name, **options)


@pytest.mark.parametrize("case", _params(REGISTRY))
def test_corpus_verdict(case: Case):
    assert_expected(case, run_case(case))


@pytest.mark.parametrize("case", _params(REGISTRY))
def test_corpus_verdict_by_sets(case: Case, monkeypatch):
    """Every tensor checked by sets (sets.py), split down to sets of 4: the same verdicts, kinks included.

    A correct layer never fails because it was checked by sets, and a wrong one never passes."""
    from gradcheck_cli import bisection

    monkeypatch.setattr(bisection, "LEAF", 4)
    report = run_case(case, sets="on")
    assert_expected(case, report)
    if case.kinks_expected:
        assert any(t.counts.get("KINK", 0) for t in report.tensors), f"\n{report}"
    assert {t.name for t in report.tensors if t.sets} >= {t.name for t in report.tensors if t.n_elements >= 2 and not report.timing["grouped"].get(t.name)}


def assert_expected(case: Case, report) -> None:
    explain = f"\n{report}"
    not_passed = {t.name for t in report.tensors if not t.passed}
    assert not_passed == case.wrong | case.inconclusive, f"not passed {sorted(not_passed)}, expected wrong {sorted(case.wrong)}" + explain
    assert report.passed == case.expect_pass, explain
    status = {t.name: t.status for t in report.tensors}
    for name in case.wrong:
        assert status[name] == "FAIL", f"{name}: {status[name]}" + explain
    for name in case.inconclusive:
        assert status[name] == "NOISE", f"{name}: {status[name]}" + explain
    if case.caught_by is not None:
        for t in report.tensors:
            if t.name in case.wrong:
                assert tuple(t.failed_losses) == tuple(case.caught_by), f"{t.name}: {t.failed_losses}" + explain


KINK_CASES = [c for c in REGISTRY if c.kinks_expected]


@pytest.mark.parametrize("case", _params(KINK_CASES))
def test_kinks_are_reported_and_can_be_failed(case: Case):
    report = run_case(case)
    kinked = {t.name for t in report.tensors if t.counts.get("KINK", 0)}
    assert kinked, f"\n{report}"
    assert any("kink" in note for note in report.notes), report.notes
    strict = run_case(case, kinks="fail")
    assert not strict.passed, f"\n{strict}"
    assert {t.name for t in strict.tensors if not t.passed} == kinked
    assert all(t.n_failed == t.counts["KINK"] + t.counts["FAIL"] for t in strict.tensors)


def test_corpus_shape():
    """At least 36 layers, about half correct, every kind represented, expectations consistent."""
    assert len(REGISTRY) >= 36
    assert {c.kind for c in REGISTRY} == {"correct", "buggy", "float32", "kink"}
    correct = sum(not c.wrong for c in REGISTRY)
    buggy = sum(bool(c.wrong) for c in REGISTRY)
    assert abs(correct - buggy) <= len(REGISTRY) // 4, (correct, buggy)
    for c in REGISTRY:
        assert c.expect_pass == (not c.wrong and not c.inconclusive), c.name
        assert not (c.wrong & c.inconclusive), c.name
        assert all(isinstance(x, torch.Tensor) for x in c.inputs), c.name
        assert not (c.kinks_expected and not c.expect_pass), c.name


def _fingerprint(cases) -> list:
    return [(c.name, [(tuple(x.shape), str(x.dtype), x.double().sum().item(), x.double().square().sum().item()) for x in c.inputs]) for c in cases]


def test_inputs_are_deterministic():
    """A fresh interpreter (with another global seed) builds bit-identical inputs: fixed generators only."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import json, sys, torch; torch.manual_seed(12345); sys.path.insert(0, sys.argv[1]); "
        "import corpus, test_corpus; print(json.dumps(test_corpus._fingerprint(corpus.REGISTRY)))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == json.loads(json.dumps(_fingerprint(REGISTRY)))


def test_near_zero_bug_hides_from_the_l2_loss_alone():
    """The dead-zone bug is exactly the blind spot of 1/2 sum y^2: without the weighted loss it passes."""
    case = next(c for c in REGISTRY if c.name == "tanh_dead_zone_near_zero")
    assert run_case(case, weighted_loss=False).passed


def test_step_outside_the_domain_is_noise_not_fail():
    """sqrt at v < eps: x - h leaves the domain (NaN), so no estimate exists: NOISE, never FAIL."""
    from gradcheck_cli import check

    class Sqrt(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            y = v.sqrt()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g / (2 * y)

    v = torch.tensor([4e-7, 1.0, 2.0], dtype=torch.float64)
    report = check(Sqrt, [v])
    counts = report.tensors[0].counts
    assert counts["FAIL"] == 0 and counts["NOISE"] == 1 and counts["PASS"] == 2, counts

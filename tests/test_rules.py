"""rules.py: the verdict of one element from its analytic value and its finite differences."""

from __future__ import annotations

import torch

from gradcheck_cli.fd import Differences
from gradcheck_cli.rules import REL_FLOOR, Judge, combine, relative_error, tolerance
from gradcheck_cli.verdicts import FAIL, KINK, NOISE, PASS

D = dict(dtype=torch.float64)


def t(*values):
    return torch.tensor(values, **D)


def diffs(central, noise=0.0, right=None, left=None):
    c = t(*central)
    return Differences(c, c if right is None else t(*right), c if left is None else t(*left), torch.full_like(c, noise))


JUDGE = Judge(rtol=1e-5, atol=1e-10, scale=1.0)


def test_the_tolerance_is_symmetric_and_floored_for_tiny_gradients():
    assert torch.equal(tolerance(t(1.0), t(2.0), 1.0, 0.1, 0.0), tolerance(t(2.0), t(1.0), 1.0, 0.1, 0.0))
    assert tolerance(t(0.0), t(0.0), 10.0, 0.1, 0.0).item() == 0.1 * REL_FLOOR * 10.0
    assert relative_error(t(1e-12), t(2e-12), 1.0).item() < 1e-8  # not 0.5: measured against REL_FLOOR * S


def test_a_match_passes_and_a_mismatch_is_flagged():
    assert JUDGE.first_pass(t(2.0, 2.0), diffs([2.0, 2.2]), 0.0).tolist() == [PASS, FAIL]


def test_noise_as_large_as_the_gradient_is_inconclusive_never_pass():
    assert JUDGE.first_pass(t(1e-3), diffs([1e-3], noise=1e-3), 0.0).tolist() == [NOISE]


def test_a_nan_backward_fails_whatever_the_differences_say():
    assert JUDGE.first_pass(t(float("nan")), diffs([1.0]), 0.0).tolist() == [FAIL]
    assert JUDGE.confirm(t(float("inf")), diffs([1.0]), diffs([1.0]), diffs([1.0]), 0.0).verdict.tolist() == [FAIL]


def test_confirmation_removes_truncation_error_and_keeps_a_real_bug():
    """f = x^3 at 1: central differences are 3 + h^2; Richardson at (h, h/2) and (2h, h) recovers 3."""
    h = 0.1
    d1, d2, dh = (diffs([3 + s * s]) for s in (h, 2 * h, h / 2))
    assert JUDGE.first_pass(t(3.0), d1, 0.0).tolist() == [FAIL]  # truncation alone looks wrong at h ...
    good = JUDGE.confirm(t(3.0), d1, d2, dh, 0.0)
    assert good.verdict.tolist() == [PASS] and abs(good.numeric.item() - 3.0) < 1e-9  # ... and is removed
    assert JUDGE.confirm(t(3.3), d1, d2, dh, 0.0).verdict.tolist() == [FAIL]  # a 10% bug stays


def test_a_kink_is_kink_only_with_the_analytic_value_between_the_one_sided_slopes():
    """|x| at 0: right slope 1, left slope -1 at every step (the jump does not shrink)."""
    kink = dict(right=[1.0], left=[-1.0])
    d = diffs([0.0], **kink)
    inside, outside = JUDGE.confirm(t(0.5), d, d, d, 0.0), JUDGE.confirm(t(2.0), d, d, d, 0.0)
    assert inside.verdict.tolist() == [KINK] and outside.verdict.tolist() == [FAIL]
    assert outside.slopes.tolist() == [[-1.0, 1.0]]  # what the diagnosis names


def test_across_losses_fail_beats_kink_beats_pass_beats_noise():
    l2 = torch.tensor([PASS, NOISE, KINK, FAIL, NOISE])
    weighted = torch.tensor([NOISE, NOISE, PASS, PASS, PASS])
    assert combine([l2, weighted]).tolist() == [PASS, NOISE, KINK, FAIL, PASS]

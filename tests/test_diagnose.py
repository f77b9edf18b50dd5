"""Tests for gradcheck_cli.diagnose: naming the pattern of a failing gradient."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.diagnose import diagnose

NOISE = 1e-9


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def numeric_of(shape, seed: int = 0) -> np.ndarray:
    return rng(seed).standard_normal(shape)


def noisy(x: np.ndarray, seed: int = 1) -> np.ndarray:
    return x + NOISE * rng(seed).standard_normal(np.shape(x))


def failing(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """What a checker would flag: clearly above a mixed tolerance (NaN numeric never fails)."""
    with np.errstate(invalid="ignore"):
        return np.abs(a - n) > 1e-6 * (1 + np.abs(n))


def run(a: np.ndarray, n: np.ndarray, others=None) -> str | None:
    return diagnose(a, n, failing(a, n), others)


# --- no pattern ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (1,), (7,), (4, 5), (2, 3, 4, 5)])
def test_correct_gradient_with_noise_is_none(shape):
    n = numeric_of(shape)
    assert run(noisy(n), n) is None


def test_nothing_failed_means_no_diagnosis_even_if_scaled():
    n = numeric_of((4, 5))
    assert diagnose(2 * n, n, np.zeros(n.shape, dtype=bool)) is None


def test_unrelated_wrong_gradient_is_none():
    n = numeric_of((6, 7))
    a = numeric_of((6, 7), seed=5)
    assert run(a, n) is None


# --- zero ---------------------------------------------------------------------


ZERO = "analytic gradient is zero: the backward never returns a gradient for this tensor (returns None or zeros?)"


@pytest.mark.parametrize("shape", [(), (3,), (4, 5)])
def test_all_zero(shape):
    n = numeric_of(shape)
    assert run(np.zeros(shape), n) == ZERO


def test_zero_on_scattered_failing_elements():
    n = numeric_of((6, 7))
    a = noisy(n)
    for idx in [(1, 3), (4, 2), (3, 5), (2, 4), (5, 3)]:
        a[idx] = 0.0
    assert run(a, n) == "analytic gradient is zero on all 5 failing elements (a term never written?)"


def test_nonfinite_analytic():
    n = numeric_of((3, 4))
    a = noisy(n)
    a[1, 2] = np.nan
    a[2, 0] = np.inf
    assert run(a, n) == "analytic gradient has NaN/inf at 2 checked element(s) (first at [1, 2])"


# --- constant ratio -----------------------------------------------------------


def test_scaled_by_two():
    n = numeric_of((3, 5))
    assert run(noisy(2 * n), n) == "analytic ≈ 2.00 × numeric (scaled by a constant factor)"


def test_odd_factor_three_sig_figs():
    n = numeric_of((3, 5))
    assert run(noisy(0.7 * n), n) == "analytic ≈ 0.700 × numeric (scaled by a constant factor)"


def test_sign_error():
    n = numeric_of((3, 5))
    assert run(noisy(-n), n) == "sign error: analytic ≈ -1 × numeric"


def test_divided_by_own_batch_size():
    n = numeric_of((4, 5))
    assert run(noisy(n / 4), n) == "analytic ≈ 0.250 × numeric: divided by the batch size (4)?"


def test_multiplied_by_batch_size_of_another_tensor():
    n = numeric_of((3, 5))  # a weight; the batch size is the input's leading dim
    others = {"input0": numeric_of((8, 5), seed=3)}
    assert run(noisy(8 * n), n, others) == "analytic ≈ 8.00 × numeric: multiplied by the batch size (8)?"


def test_negative_batch_factor():
    n = numeric_of((4, 5))
    assert run(noisy(-n / 4), n) == "analytic ≈ -0.250 × numeric: sign error, and divided by the batch size (4)?"


def test_ratio_is_not_claimed_for_a_small_relative_error_on_one_element():
    n = numeric_of((3, 4))
    a = noisy(n)
    a[1, 2] *= 1 + 1e-4
    assert run(a, n) == "a single element is wrong: [1, 2]"


def test_ratio_is_not_claimed_when_one_dominant_element_is_wrong():
    n = np.array([100.0, 1.0, -1.0, 1.0])
    a = n.copy()
    a[0] = 200.0
    assert run(a, n) == "a single element is wrong: [0]"


def test_ratio_needs_every_large_element_to_agree():
    n = numeric_of((4, 6))
    a = noisy(2 * n)
    top = np.unravel_index(np.argmax(np.abs(n)), n.shape)
    a[top] = 2.2 * n[top]  # 10% off the ratio on the largest element
    assert "constant factor" not in (run(a, n) or "")


def test_one_element_tensor_reports_only_telling_ratios():
    assert run(np.array(2.0), np.array(1.0)) == "analytic ≈ 2.00 × numeric (scaled by a constant factor)"
    assert run(np.array([-0.5]), np.array([0.5])) == "sign error: analytic ≈ -1 × numeric"
    assert run(np.array([0.37]), np.array([1.0])) is None


# --- transpose, swap, flip ----------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 5), (2, 4, 4)])
def test_transpose(shape):
    n = numeric_of(shape)
    a = noisy(np.swapaxes(n, -1, -2))
    assert run(a, n) == "analytic matches the transpose of the numeric gradient"


def test_swapped_with_another_input():
    n = numeric_of((3, 4))
    other = numeric_of((3, 4), seed=7)
    others = {"input0": numeric_of((2, 2), seed=8), "input1": other}
    assert run(noisy(other), n, others) == "analytic matches the numeric gradient of input1 (gradients swapped?)"


def test_kernel_flip_one_axis():
    n = numeric_of((3, 2, 5))
    a = noisy(np.flip(n, axis=2))
    assert run(a, n) == "analytic matches the numeric gradient reversed along axis 2 (convolution instead of correlation?)"


def test_kernel_flip_two_axes():
    n = numeric_of((4, 3, 3, 3))
    a = noisy(np.flip(n, axis=(2, 3)))
    assert run(a, n) == "analytic matches the numeric gradient reversed along axes 2 and 3 (convolution instead of correlation?)"


def test_flip_not_claimed_for_a_symmetric_gradient():
    half = numeric_of((3, 2))
    n = np.concatenate([half, half[:, ::-1]], axis=1)  # symmetric along axis 1
    a = noisy(n)
    a[:, 1] += 0.5
    assert "reversed" not in (run(a, n) or "")


# --- where the errors are -----------------------------------------------------


def test_borders():
    n = numeric_of((2, 3, 10))
    a = noisy(n)
    a[:, :, 0] += 1.0
    a[:, :, 9] -= 1.0
    assert run(a, n) == "errors only at the borders of axis 2 (index 0, 9 of 10): padding / off-by-one?"


def test_borders_two_deep():
    n = numeric_of((12,))
    a = noisy(n)
    a[[0, 1, 11]] += 1.0
    assert run(a, n) == "errors only at the borders of axis 0 (index 0, 1, 11 of 12): padding / off-by-one?"


def test_borders_need_a_clean_interior_that_was_checked():
    n = numeric_of((2, 8))
    a = noisy(n)
    a[:, [0, 7]] += 1.0
    n[:, 1:7] = np.nan  # interior not checked: nothing known about it
    assert "borders" not in (run(a, n) or "")


def test_confined_to_one_slice():
    n = numeric_of((4, 6))
    a = noisy(n)
    a[2] = numeric_of(6, seed=9)
    assert run(a, n) == "errors confined to axis 0 index 2"


def test_confined_to_one_block():
    n = numeric_of((3, 4, 5))
    a = noisy(n)
    a[1, 2, :] *= -3
    assert run(a, n) == "errors confined to axis 0 index 1 and axis 1 index 2"


def test_only_one_slice_is_right():
    n = numeric_of((4, 6))
    a = noisy(n)
    a[1:] = 0.0
    assert run(a, n) == "only axis 0 index 0 is right (batch reduction / loop bug?)"


def test_only_one_slice_right_on_another_axis():
    n = numeric_of((3, 5))
    a = noisy(n)
    a[:, [0, 1, 3, 4]] = numeric_of((3, 4), seed=4)
    assert run(a, n) == "only axis 1 index 2 is right"


def test_where_patterns_need_more_than_chance():
    # 2 of 3 elements failing: any "slice" story is as likely as chance.
    n = numeric_of((3, 1))
    a = noisy(n)
    a[1:] += 1.0
    assert run(a, n) is None


def test_single_element():
    n = numeric_of((3, 4, 5))
    a = noisy(n)
    a[1, 2, 3] += 0.3
    assert run(a, n) == "a single element is wrong: [1, 2, 3]"


# --- NaN = unchecked, odd shapes ----------------------------------------------


def test_unchecked_elements_are_ignored():
    n = numeric_of((4, 5))
    a = noisy(2 * n)
    n[0, 1] = n[3, 3] = np.nan
    a[0, 1] = a[3, 3] = 1e6  # garbage where nothing was checked
    failed = failing(a, n)
    failed[0, 1] = True  # a failing flag on an unchecked element is ignored too
    assert diagnose(a, n, failed) == "analytic ≈ 2.00 × numeric (scaled by a constant factor)"


def test_unchecked_elements_in_other_tensors_are_ignored():
    n = numeric_of((3, 4))
    other = numeric_of((3, 4), seed=7)
    a = noisy(other)
    other_seen = other.copy()
    other_seen[0, :2] = np.nan
    assert run(a, n, {"bias": other_seen}) == "analytic matches the numeric gradient of bias (gradients swapped?)"


def test_all_unchecked_is_none():
    n = np.full((3, 3), np.nan)
    assert diagnose(np.ones((3, 3)), n, np.ones((3, 3), dtype=bool)) is None


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (0,), (0, 3)])
def test_tiny_shapes_do_not_crash(shape):
    n = np.ones(shape)
    for a in (np.zeros(shape), 2 * n, 0.37 * n, np.full(shape, np.nan)):
        result = diagnose(a, n, failing(a, n) | ~np.isfinite(a), {"x": np.ones(shape)})
        assert result is None or isinstance(result, str)


def test_zero_d_single_wrong_value_is_not_a_single_element_message():
    assert run(np.array(1.37), np.array(1.0)) is None


def test_single_element_tensor_matching_another_tensors_gradient_is_named():
    # The seed Gaussian filter's classic bug: the sigma-derivative kernel used for mu.
    # mu and sigma are one element each; mu's analytic value equals sigma's numeric gradient.
    line = diagnose(np.array([-4.7373]), np.array([-0.02597]), np.array([True]), {"sigma": np.array([-4.7373])})
    assert line == "analytic matches the numeric gradient of sigma (gradients swapped?)"


def test_counts_seen_in_a_sample_say_they_are_the_samples():
    """Sets stop once a sample has located the failures (or --max-elements samples): a count of
    failing elements is then of the elements measured, and the line says so."""
    n = numeric_of((1, 8, 8))
    a = n.copy()
    for i, j in ((0, 0), (0, 7), (7, 0)):
        a[0, i, j] = 3 * n[0, i, j] + 1
    n[0, 2:6, :] = np.nan  # cleared by sets, not measured alone
    line = diagnose(a, n, failing(a, n))
    assert line.startswith("errors only at the corners (3 element(s) in 3 corner(s))")
    assert line.endswith("[counted among the 32 of 64 elements measured alone]")
    n2 = numeric_of((1, 8, 8))
    a2 = n2.copy()
    for i, j in ((0, 0), (0, 7), (7, 0)):
        a2[0, i, j] = 3 * n2[0, i, j] + 1
    assert "counted among" not in diagnose(a2, n2, failing(a2, n2))

"""sampling.py: which elements a sample checks, and what a clean sample rules out."""

from __future__ import annotations

import numpy as np

from gradcheck_cli.sampling import ALWAYS_WHOLE, clean_sample_bound, coverage_note, select


def test_everything_is_checked_without_a_limit_and_small_tensors_always():
    assert select((5, 7), None, 0) == list(range(35))
    assert select((ALWAYS_WHOLE,), 3, 0) == list(range(ALWAYS_WHOLE))


def test_a_sample_covers_every_border_and_every_slice_of_short_axes():
    shape = (4, 100, 100)
    chosen = np.array(np.unravel_index(select(shape, 200, seed=1), shape)).T
    assert len(chosen) >= 200
    assert set(chosen[:, 0]) == {0, 1, 2, 3}  # every batch index
    for axis in (1, 2):
        assert {0, 99} <= set(chosen[:, axis])  # both borders of the long axes


def test_the_sample_is_reproducible_by_seed():
    assert select((1000,), 50, 7) == select((1000,), 50, 7) != select((1000,), 50, 8)


def test_a_clean_sample_states_its_bound():
    assert abs(clean_sample_bound(300) - (1 - 0.05 ** (1 / 300))) < 1e-15
    note = coverage_note(300, 10_000, 0)
    assert "0 failures in 300 of 10000" in note and "at 95% confidence" in note
    assert coverage_note(10, 10, 0) is None and "2 failures" in coverage_note(300, 10_000, 2)

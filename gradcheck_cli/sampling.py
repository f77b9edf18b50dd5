"""Which elements of a large tensor to check, when not all of them.

A sample always covers the places where hand-written backwards go wrong:
the first and last index of every axis (borders, padding) and every slice of
small axes (batch, channels).  The rest is drawn uniformly at random from a
private generator, so a clean sample bounds the fraction of wrong elements.
"""

from __future__ import annotations

import math

import numpy as np

# Tensors this small are always checked whole (biases, sigma, mu, ...).
ALWAYS_WHOLE = 64
# Axes this short get every slice covered.
SMALL_AXIS = 16


def select(shape: tuple[int, ...], limit: int | None, seed: int) -> list[int]:
    """Flat indices of the elements to check (sorted); all of them when within ``limit``."""
    n = math.prod(shape)
    if limit is None or n <= max(limit, ALWAYS_WHOLE):
        return list(range(n))
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for axis, size in enumerate(shape):
        values = range(size) if size <= SMALL_AXIS else (0, size - 1)
        for v in values:
            coord = [int(rng.integers(s)) for s in shape]
            coord[axis] = v
            chosen.add(int(np.ravel_multi_index(coord, shape)))
    want = max(limit, len(chosen))
    if len(chosen) < want:
        extra = rng.choice(n, size=min(n, want + len(chosen)), replace=False)
        for i in extra:
            if len(chosen) >= want:
                break
            chosen.add(int(i))
    return sorted(chosen)


def clean_sample_bound(n_checked: int, confidence: float = 0.95) -> float:
    """Largest fraction of wrong elements that a clean random sample of n leaves plausible."""
    if n_checked <= 0:
        return 1.0
    return 1.0 - (1.0 - confidence) ** (1.0 / n_checked)


def coverage_note(n_checked: int, n_elements: int, n_failed: int) -> str | None:
    if n_checked >= n_elements:
        return None
    if n_failed:
        return f"{n_failed} failures in {n_checked} of {n_elements} elements sampled"
    bound = clean_sample_bound(n_checked)
    return (
        f"0 failures in {n_checked} of {n_elements} elements sampled: under {bound:.2%} of elements "
        "wrong at 95% confidence"
    )

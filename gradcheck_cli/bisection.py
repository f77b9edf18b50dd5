"""Bisection: failing sets split down to the elements that are wrong, which are then measured alone.

A failing set (see :mod:`.sets`) is split in halves. The left half is tested; if it
clears, the failure must lie in the right half, which is split without a test of its own;
if it fails, the right half is tested too. A failing set of at most ``leaf`` elements is
handed to the caller, which measures each element alone: confirmation at 2h and h/2, KINK,
NOISE -- the per-element verdicts. b wrong elements cost about b log2(N / leaf) tests; a
correct tensor one test. A set that is inconclusive (its noise as large as its smallest
gradient) and whose noise does not shrink when split is measured alone at once (every
element moves every output: splitting cannot help).

Where many elements are wrong (a x2 bug), splitting stops once the tensor is known to fail:
when SAMPLE_AFTER suspect sets are open, a uniform sample (borders and short axes included,
see sampling.py) is measured alone for the table and the diagnosis, and if it finds
failures the rest is left unchecked (and reported so); splitting also stops once LOCATE
failing elements are found. Splitting only ever stops early on a tensor that fails: a
passing verdict always covers every element.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from .sampling import select
from .sets import DIRECTIONS, SetTest, SetTester

# Suspect sets open at once before a uniform sample is measured element by element.
SAMPLE_AFTER = 4
SAMPLE = 64
# Failing elements located: enough for the table and the diagnosis; splitting stops.
LOCATE = 64


def leaf_size(directions: int = DIRECTIONS) -> int:
    """The set size below which measuring each element alone (2 forwards each) beats splitting on.

    Splitting a failing set of s elements down to one costs about log2(s) clearing tests
    of 2 * directions differences each; measuring them costs s: the smallest power of two
    with s / log2(s) >= 2 * directions (256 for 16 directions).
    """
    s = 2
    while s / math.log2(s) < 2 * directions:
        s *= 2
    return s


LEAF = leaf_size()


@dataclass(frozen=True)
class Measured:
    """What measuring some elements alone found (the caller's per-element verdicts)."""

    failed: int
    noise: int


@dataclass(frozen=True)
class Exploration:
    """A tensor checked by sets: which runs were cleared, which were left, and what it cost."""

    cleared: tuple[tuple[int, int], ...]  # [lo, hi) runs cleared by a test
    unresolved: tuple[tuple[int, int], ...]  # runs left when splitting stopped (their unmeasured elements: not checked)
    tests: int
    directions: int  # directions evaluated, over all tests
    forwards: int
    bound: Mapping[str, float]  # per loss: the largest bound of any cleared set
    rel: Mapping[str, float]  # per loss: the largest relative directional error of a cleared set
    abs: Mapping[str, float]
    stopped: str = ""  # why splitting stopped before every element was resolved
    noise_by: Mapping[str, float] = field(default_factory=dict)  # measured noise over the model's (calibrate.py), if measured


def _shrank(noise: Mapping[str, float], parent: Mapping[str, float]) -> bool:
    """Did splitting at least halve the noise of an inconclusive set, for some loss?"""
    return any(noise.get(loss, 0.0) <= 0.5 * value for loss, value in parent.items() if value > 0)


def explore(
    tester: SetTester,
    shape: tuple[int, ...],
    measure: Callable[[list[int]], Measured],
    advance: Callable[[int], None],
    leaf: int = LEAF,
    seed: int = 0,
) -> Exploration:
    """Clear the tensor by sets, splitting failing ones (see the module docstring); ``measure`` checks elements alone."""
    n = tester.n
    resolved = torch.zeros(n, dtype=torch.bool)
    losses = list(tester.sides)
    bound, rel, absolute = ({loss: 0.0 for loss in losses} for _ in range(3))
    cleared: list[tuple[int, int]] = []
    failed = 0

    def alone(flat: list[int]) -> tuple[Measured, int]:
        new = [i for i in flat if not resolved[i]]
        if not new:
            return Measured(0, 0), 0
        found = measure(new)
        resolved[new] = True
        advance(len(new))
        return found, len(new)

    def clear(lo: int, hi: int, t: SetTest) -> None:
        cleared.append((lo, hi))
        for loss in losses:
            bound[loss], rel[loss], absolute[loss] = max(bound[loss], t.bound[loss]), max(rel[loss], t.rel[loss]), max(absolute[loss], t.abs[loss])
        fresh = int((~resolved[lo:hi]).sum())
        resolved[lo:hi] = True
        advance(fresh)

    # (lo, hi, known to fail, the noise of the enclosing set where that set was inconclusive)
    frontier: deque[tuple[int, int, bool, Mapping[str, float] | None]] = deque([(0, n, False, None)])
    sampled, stopped = False, ""
    while frontier:
        if failed >= LOCATE:
            stopped = f"splitting stopped after locating {failed} failing elements"
            break
        if not sampled and sum(item[2] for item in frontier) >= SAMPLE_AFTER:
            sampled = True
            found, count = alone(select(shape, SAMPLE, seed))
            failed += found.failed
            if found.failed:  # the tensor fails: the sample locates enough for the table and the diagnosis
                stopped = f"splitting stopped when a uniform sample of {count} elements found {found.failed} failing"
                break
        lo, hi, known, parent = frontier.popleft()
        noisy = parent
        if not known:
            t = tester.test(lo, hi)
            if t.passed:
                clear(lo, hi, t)
                continue
            if t.reason == "inconclusive":
                if parent is not None and not _shrank(t.noise, parent):
                    # Splitting does not reduce this set's noise (every element moves every output):
                    # its elements are measured alone, where the per-element rule decides PASS or NOISE.
                    found, _ = alone(list(range(lo, hi)))
                    failed += found.failed
                    continue
                noisy = t.noise
        if hi - lo <= leaf:
            found, _ = alone(list(range(lo, hi)))
            failed += found.failed
            continue
        mid = (lo + hi) // 2
        t = tester.test(lo, mid)
        if t.passed:
            clear(lo, mid, t)
            frontier.append((mid, hi, True, noisy))  # the failure is on the right
        elif t.reason == "inconclusive" and noisy is not None and not _shrank(t.noise, noisy):
            found, _ = alone(list(range(lo, mid)))
            failed += found.failed
            frontier.append((mid, hi, False, noisy))
        else:
            frontier.append((lo, mid, True, t.noise if t.reason == "inconclusive" else None))
            frontier.append((mid, hi, False, noisy))
    left = tuple((lo, hi) for lo, hi, _, _ in frontier if not bool(resolved[lo:hi].all()))
    if left:
        advance(int((~resolved).sum()))  # the bar completes: these are reported as not checked
    return Exploration(
        tuple(cleared), left, tester.tests, tester.directions_run, tester.forwards, bound, rel, absolute, stopped if left else "", dict(tester.noise_by or {})
    )

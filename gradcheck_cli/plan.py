"""How each tensor is checked -- grouped moves, sets, or one element at a time -- and what the check will cost.

Every element is checked unless ``max_elements`` or ``budget`` says otherwise (see
:mod:`.sampling` for how a sample covers borders and small axes). Tensors whose
outputs fit a stride (see :mod:`.grouping`) get their first pass here. Of the others,
a tensor whose element-by-element check is estimated above SETS_AFTER_S is checked by
sets (see :mod:`.sets`: every element covered, the wrong ones found by bisection) where
that is estimated at most half as costly; ``sets="on"``/``"off"`` forces either. Where
sets may take over, grouping may spend no more forwards than GROUPING_BEFORE_SETS_S buys. With
``budget``, a tensor that does not fit is checked by sets if they fit, else sampled.

The time estimate (``Report.timing["estimate_s"]``) is of the whole check: the time
already spent when the plan is made (base point, analytic side, grouping) plus the
predicted rest, from timed work -- one warm forward, the cost of differencing a row of
outputs, a timed batched chunk where vmap runs, one timed set direction. While grouping
runs longer than PROGRESS_AFTER_S, progress is reported as it goes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import torch

from . import fd, grouping, sets
from .analytic import Analytic
from .fd import LOSSES, Differences
from .inputs import torch_dtype
from .numeric import NumericSide
from .options import CheckOptions
from .sampling import select
from .subject import Leaf, Subject

# A tensor whose element-by-element check is estimated above this many seconds is checked by
# sets where they cost at most half as much (sets="auto").
SETS_AFTER_S = 0.5
# Where sets stand by, grouping may spend the forwards of this many seconds (and always
# GROUPING_MIN_FORWARDS): it gives per-element values, worth more time than sets take.
GROUPING_BEFORE_SETS_S = 2.0
GROUPING_MIN_FORWARDS = 64
# Grouping that runs longer than this (since the check started) reports progress.
PROGRESS_AFTER_S = 1.0
# Elements of the timed batched chunk (16 rows' fixed vmap cost estimated a 1000-element FFT filter at 3.5x).
PROBE_ELEMENTS = 64

Progress = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class TensorPlan:
    indices: tuple[int, ...]  # flat indices of the elements to check, sorted
    first_pass: Mapping[str, Differences] | None = None  # grouped slopes at h, per loss
    grouping: grouping.Grouping | None = None  # the grouped attempt (None: not tried)
    by_sets: bool = False  # checked by sets (see sets.py); ``indices`` is then every element
    leaf: int = 0  # sets: failing sets this small are measured element by element (0: bisection.LEAF)
    estimate_s: float = 0.0  # predicted seconds of what is left of this tensor's check

    @property
    def stride(self) -> int:
        return self.grouping.stride if self.grouping is not None else 0


@dataclass(frozen=True)
class Plan:
    tensors: Mapping[str, TensorPlan]
    estimate_s: float  # the whole check: the time spent before the plan was made plus the predicted rest
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(len(t.indices) for t in self.tensors.values())


def grouped_first(
    numeric: NumericSide, leaf: Leaf, idx: list[int], step: float, cap: int | None, seed: int, tick: Callable[[int], None] | None = None
) -> TensorPlan | None:
    """The grouped slopes of ``idx`` at ``step``, within the grouping budget (and ``cap`` forwards); None if not tried."""
    if len(idx) < grouping.MIN_ELEMENTS:
        return None
    budget = int(grouping.BUDGET_FRACTION * 2 * len(idx))  # a share of the element-by-element cost
    if cap is not None:  # --budget, or sets standing by: grouping may use no more than this
        budget = min(budget, cap)
    diffs, how = numeric.grouped(leaf, idx, step, budget, seed, tick)
    return TensorPlan(tuple(idx), diffs, how)


def make_plan(
    subject: Subject,
    numeric: NumericSide,
    opts: CheckOptions,
    forward_s: float,
    analytic: Analytic | None = None,
    started: float | None = None,
    progress: Progress | None = None,
) -> Plan:
    """``analytic`` lets the plan weigh sets (without it, every tensor is checked element by element or grouped)."""
    started = time.perf_counter() if started is None else started
    shapes = {leaf.name: tuple(subject.tensor(leaf).shape) for leaf in subject.leaves}
    limit = opts.max_elements
    indices = {name: select(shape, limit, opts.seed) for name, shape in shapes.items()}
    if opts.budget is not None:
        forward_s = _median_forward(numeric)
    cap = int(opts.budget / max(forward_s, 1e-9) / len(subject.leaves)) if opts.budget is not None else None
    may_use_sets = {leaf.name: analytic is not None and _sets_possible(opts, len(indices[leaf.name]), shapes[leaf.name]) for leaf in subject.leaves}
    ticker = _Ticker(started, progress, sum(len(i) for i in indices.values()))
    tensors: dict[str, TensorPlan] = {}
    for leaf in subject.leaves:
        group_cap = cap
        if may_use_sets[leaf.name]:  # sets stand by: grouping that would take long gives way to them
            affordable = max(GROUPING_MIN_FORWARDS, int(GROUPING_BEFORE_SETS_S / max(forward_s, 1e-9)))
            group_cap = affordable if group_cap is None else min(group_cap, affordable)
        tick = ticker.tensor(leaf.name, len(indices[leaf.name]), group_cap)
        tried = grouped_first(numeric, leaf, indices[leaf.name], numeric.steps.eps, group_cap, opts.seed + 2, tick) if opts.grouping else None
        ticker.done(len(indices[leaf.name]))
        tensors[leaf.name] = tried if tried is not None else TensorPlan(tuple(indices[leaf.name]))
    single = [leaf for leaf in subject.leaves if tensors[leaf.name].first_pass is None]
    per_element = _seconds_per_element(numeric, single, indices, forward_s, opts.budget) if single else 0.0
    share = opts.budget / len(subject.leaves) if opts.budget is not None else None
    for leaf in single:
        planned, n = tensors[leaf.name], len(indices[leaf.name])
        alone = per_element * n
        if may_use_sets[leaf.name] and (opts.sets == "on" or alone > SETS_AFTER_S or (share is not None and alone > share)):
            by_sets = sets_seconds(numeric, analytic, leaf, n, opts)
            if opts.sets == "on" or by_sets < alone / 2 or (share is not None and alone > share and by_sets < alone):
                tensors[leaf.name] = replace(planned, by_sets=True, estimate_s=by_sets)
                continue
        tensors[leaf.name] = replace(planned, estimate_s=alone)
    rest = [leaf for leaf in single if not tensors[leaf.name].by_sets]
    notes = ()
    if opts.budget is not None and sum(t.estimate_s for t in tensors.values()) > opts.budget and rest:
        # Shrink the per-tensor limit until the estimate fits (small tensors stay whole).
        spare = max(0.0, opts.budget - sum(tensors[leaf.name].estimate_s for leaf in subject.leaves if leaf not in rest))
        affordable = max(1, int(spare / max(per_element, 1e-9)))
        per_tensor = max(1, affordable // len(rest))
        limit = per_tensor if limit is None else min(limit, per_tensor)
        for leaf in rest:
            indices[leaf.name] = select(shapes[leaf.name], limit, opts.seed)
            tensors[leaf.name] = TensorPlan(tuple(indices[leaf.name]), None, tensors[leaf.name].grouping, estimate_s=per_element * len(indices[leaf.name]))
        notes = (f"--budget {opts.budget:g}s: sampled at most {limit} elements per tensor (tensors of up to 64 elements are always checked whole)",)
    spent = time.perf_counter() - started
    return Plan(tensors, spent + sum(t.estimate_s for t in tensors.values()), notes)


def _sets_possible(opts: CheckOptions, n: int, shape: tuple[int, ...]) -> bool:
    """Sets cover whole tensors (not a sample) of at least two elements, unless turned off."""
    return opts.sets != "off" and n >= 2 and n == math.prod(shape)


def sets_seconds(numeric: NumericSide, analytic: Analytic, leaf: Leaf, n: int, opts: CheckOptions) -> float:
    """Predicted time of checking a correct tensor by sets: a test per set of the widest size the
    analytic side's rounding allows (one in float64), 2 steps of every direction (one timed).
    Infinite where the timed direction shows the set would be lost in noise (its elements are
    then measured alone anyway)."""
    unit = torch.finfo(torch_dtype(opts.dtype)).eps
    widest = sets.widest(numeric.steps.rtol, unit)
    pieces = n if widest < 1 else math.ceil(n / widest)
    grads = {loss: analytic.grads[leaf.name][loss] for loss in (LOSSES if opts.weighted_loss else ("l2",))}
    sides = sets.sides_of(grads, {loss: analytic.allowance(leaf.name, loss) for loss in grads}, numeric.steps.rtol, numeric.steps.atol, analytic.layer_scale, unit)
    one, noisy = sets.SetTester(numeric, leaf, sides, opts.seed).probe()
    return math.inf if noisy and opts.sets == "auto" else pieces * 2 * sets.DIRECTIONS * one


def _seconds_per_element(numeric: NumericSide, leaves: list[Leaf], indices: dict[str, list[int]], forward_s: float, budget: float | None) -> float:
    """Cost of checking one element: two forwards and a row of differences, or a timed batched chunk when vmap works."""
    n = sum(len(indices[leaf.name]) for leaf in leaves)
    if 2 * forward_s * n > 0.25:  # it matters: one warm forward's time (the base point's) can be a cold one's
        forward_s = min(forward_s, _median_forward(numeric))
    loop = 2 * forward_s + _difference_seconds(numeric)
    if numeric.evaluator.batched is False or (loop * n < 0.25 and budget is None):
        return loop  # cheap anyway: an upper bound will do, no need to time a batch
    largest = max(leaves, key=lambda leaf: len(indices[leaf.name]))
    # As many rows as a real chunk's vmap calls hold (up to 64): a call's fixed cost is then shared as in the check.
    timed = numeric.time_per_element(largest, indices[largest.name][:PROBE_ELEMENTS])
    return loop if timed is None else timed + _difference_seconds(numeric)


def _difference_seconds(numeric: NumericSide) -> float:
    """Seconds to difference one perturbed point's outputs (both losses, the noise), per element."""
    y = numeric.base.y
    rows = max(1, min(8, (1 << 20) // max(1, y.numel())))
    block = y.expand(rows, y.numel()).clone()
    h = torch.full((rows,), numeric.steps.eps, dtype=torch.float64, device=y.device)
    started = time.perf_counter()
    fd.loss_differences(block, block, numeric.base, h, h)
    return numeric.placement.seconds_since(started) / rows


def _median_forward(numeric: NumericSide) -> float:
    """Median time of three plain forward calls (the loop path's unit of cost): --budget sizes the sample on it."""
    times = []
    with torch.no_grad():
        for _ in range(3):
            started = time.perf_counter()
            numeric.guard("forward", numeric.evaluator.forward)
            times.append(numeric.placement.seconds_since(started))
    return sorted(times)[1]


class _Ticker:
    """Progress while grouping: silent unless the check has run PROGRESS_AFTER_S; then the estimate so far, and the moves."""

    def __init__(self, started: float, progress: Progress | None, total: int) -> None:
        self.started, self.progress, self.total = started, progress, total
        self.finished = 0  # elements of the tensors whose grouping is over
        self.announced = False

    def tensor(self, name: str, n: int, cap: int | None) -> Callable[[int], None] | None:
        if self.progress is None:
            return None
        budget = int(grouping.BUDGET_FRACTION * 2 * n) if cap is None else min(cap, int(grouping.BUDGET_FRACTION * 2 * n))
        spent = [0]
        began = time.perf_counter()

        def tick(moves: int) -> None:
            spent[0] += 2 * moves
            now = time.perf_counter()
            if now - self.started < PROGRESS_AFTER_S:
                return
            share = min(1.0, spent[0] / max(1, budget))  # at most the budget: an upper bound of the work done
            if not self.announced:
                self.announced = True
                rest = (now - began) / max(share, 1e-3) * (1 - share)
                self.progress("", self.finished, self.total, now - self.started + rest)
            self.progress(name, self.finished + int(share * n), self.total, 0.0)

        return tick

    def done(self, n: int) -> None:
        self.finished += n

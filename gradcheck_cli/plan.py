"""Which elements of each tensor to check, and the grouped first pass of those that can be grouped.

Every element is checked unless ``max_elements`` or ``budget`` says otherwise (see
:mod:`.sampling` for how a sample covers borders and small axes). Tensors whose outputs
fit a stride (see :mod:`.grouping`) get their first pass here, usually a few dozen
forwards (with ``budget``, at most an even share of it); only the others are sampled
to fit ``budget``, and their cost is what the time estimate counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

import torch

from . import grouping
from .fd import Differences
from .options import CheckOptions
from .reference import NumericSide
from .sampling import select
from .subject import Leaf, Subject

@dataclass(frozen=True)
class TensorPlan:
    indices: tuple[int, ...]  # flat indices of the elements to check, sorted
    first_pass: Mapping[str, Differences] | None = None  # grouped slopes at h, per loss
    grouping: grouping.Grouping | None = None  # the grouped attempt (None: not tried)

    @property
    def stride(self) -> int:
        return self.grouping.stride if self.grouping is not None else 0


@dataclass(frozen=True)
class Plan:
    tensors: Mapping[str, TensorPlan]
    estimate_s: float  # the element-by-element part of the check (grouped tensors are done)
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(len(t.indices) for t in self.tensors.values())


def grouped_first(numeric: NumericSide, leaf: Leaf, idx: list[int], step: float, cap: int | None, seed: int) -> TensorPlan | None:
    """The grouped slopes of ``idx`` at ``step``, within the grouping budget (and ``cap`` forwards); None if not tried."""
    if len(idx) < grouping.MIN_ELEMENTS:
        return None
    budget = int(grouping.BUDGET_FRACTION * 2 * len(idx))  # a share of the element-by-element cost
    if cap is not None:  # --budget: grouping may use no more than this tensor's share of it
        budget = min(budget, cap)
    diffs, how = numeric.grouped(leaf, idx, step, budget, seed)
    return TensorPlan(tuple(idx), diffs, how)


def make_plan(subject: Subject, numeric: NumericSide, opts: CheckOptions, forward_s: float) -> Plan:
    shapes = {leaf.name: tuple(subject.tensor(leaf).shape) for leaf in subject.leaves}
    limit = opts.max_elements
    indices = {name: select(shape, limit, opts.seed) for name, shape in shapes.items()}
    if opts.budget is not None:
        forward_s = _median_forward(numeric)
    cap = int(opts.budget / max(forward_s, 1e-9) / len(subject.leaves)) if opts.budget is not None else None
    tensors: dict[str, TensorPlan] = {}
    for leaf in subject.leaves:
        tried = grouped_first(numeric, leaf, indices[leaf.name], numeric.steps.eps, cap, opts.seed + 2) if opts.grouping else None
        tensors[leaf.name] = tried if tried is not None else TensorPlan(tuple(indices[leaf.name]))
    single = [leaf for leaf in subject.leaves if tensors[leaf.name].first_pass is None]
    per_element = _seconds_per_element(numeric, single, indices, forward_s, opts.budget) if single else 0.0
    estimate = per_element * sum(len(indices[leaf.name]) for leaf in single)
    notes = ()
    if opts.budget is not None and estimate > opts.budget:
        # Shrink the per-tensor limit until the estimate fits (small tensors stay whole).
        affordable = max(1, int(opts.budget / max(per_element, 1e-9)))
        per_tensor = max(1, affordable // len(single))
        limit = per_tensor if limit is None else min(limit, per_tensor)
        for leaf in single:
            indices[leaf.name] = select(shapes[leaf.name], limit, opts.seed)
            tensors[leaf.name] = TensorPlan(tuple(indices[leaf.name]), None, tensors[leaf.name].grouping)
        estimate = per_element * sum(len(indices[leaf.name]) for leaf in single)
        notes = (f"--budget {opts.budget:g}s: sampled at most {limit} elements per tensor (tensors of up to 64 elements are always checked whole)",)
    return Plan(tensors, estimate, notes)


def _seconds_per_element(numeric: NumericSide, leaves: list[Leaf], indices: dict[str, list[int]], forward_s: float, budget: float | None) -> float:
    """Cost of checking one element: two forwards, or a timed batched chunk when vmap works."""
    loop = 2 * forward_s
    n = sum(len(indices[leaf.name]) for leaf in leaves)
    if numeric.evaluator.batched is False or (loop * n < 2.0 and budget is None):
        return loop  # cheap anyway: an upper bound will do, no need to time a batch
    timed = numeric.time_per_element(leaves[0], indices[leaves[0].name][:16])
    return loop if timed is None else min(loop, timed)


def _median_forward(numeric: NumericSide) -> float:
    """Median time of three plain forward calls (the loop path's unit of cost): --budget sizes the sample on it."""
    times = []
    with torch.no_grad():
        for _ in range(3):
            started = time.perf_counter()
            numeric.guard("forward", numeric.evaluator.forward)
            times.append(numeric.placement.seconds_since(started))
    return sorted(times)[1]

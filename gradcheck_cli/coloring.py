"""Step 4a: move many elements per forward where each output depends on few of them.

Checking element by element costs two forwards per element.  But if every output
depends on at most one element of a *class* of elements -- an elementwise layer:
on one element at all; a filter of width 25: on one of any elements 32 apart --
then a whole class can be moved in one forward and each output's change credited
to the one element it depends on.  That is Jacobian colouring (Curtis, Powell &
Reid, 1974).  It usually needs the sparsity pattern up front, and a wrong
pattern silently credits changes to the wrong element.  Here the pattern is
*measured* from the forwards themselves and every credit is checked:

* Class r of stride s holds the positions p = r, r+s, r+2s, ... of the checked
  elements.  For each bit of q = p // s, the class is split into the members
  whose bit is 0 and those whose bit is 1, and each half is moved by +h and by
  -h.  An output that depends on exactly one member changes (any change at all
  counts, bit for bit) in exactly one half at every bit, and those halves spell
  that member's q in binary.  An output that depends on two members changes in
  both halves at a bit where they differ: the stride is rejected.
* An output's values must agree, to rounding, at every bit: the other members
  moved with its owner must not have touched it.
* Last, the class is moved at random twice (each member by +h, -h or not at
  all), and every output must show the value its owner's move alone predicts.
  Two members on one output are already caught by the halves; this catches
  three or more whose changes cancel exactly inside the halves.

Strides 1, 2, 4, ... are tried, each abandoned at its first contradiction; a
tensor that no stride fits within the forward budget is checked one element per
forward pair, as before.  Where a stride fits, each output's change is the one
that moving its owner alone gives, so the per-element slopes are the numbers
the one-at-a-time path computes, from 2 s (2 log2(n/s) + 2) forwards instead
of 2n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch

# Evaluate one group: (positions of the moved elements, +1/-1 per position) ->
# float64 outputs with those elements at x + sign*h, and at x - sign*h.
GroupFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

T = TypeVar("T")

# Tensors smaller than this are checked element by element (colouring cannot win).
MIN_ELEMENTS = 32
# Forwards that colouring may spend, failed attempts included, as a fraction of the
# element-by-element path's 2n: a layer no stride fits costs at most this much extra.
BUDGET_FRACTION = 0.5
# Random moves of a whole class that every credit must predict (see _probe).
PROBES = 2
# Up to this many elements flagged by a grouped first pass are re-evaluated one at a
# time (the caller's choice; see check.py), so a verdict never rests on grouping alone.
REEVALUATE_MAX = 64


class Unstructured(Exception):
    """The outputs' dependence on the tensor does not fit the stride being tried."""


@dataclass(frozen=True)
class Colouring:
    """How a tensor was evaluated: the stride that fit (0: none) and the forwards all attempts took."""

    stride: int
    forwards: int


def cost(n: int, s: int) -> int:
    """Forwards for stride ``s`` on ``n`` elements: per class, two halves per bit and the probes, 2 each."""
    per_class = -(-n // s)  # ceil
    bits = (per_class - 1).bit_length()
    return min(s, n) * 2 * (2 * bits + PROBES)


def _moved(yp: torch.Tensor, ym: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """Outputs that differ at all from the base point (NaN counts as a change)."""
    return (yp != y0) | (ym != y0)


def _close(a: torch.Tensor, b: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    return (a == b) | ((a - b).abs() <= tol) | (a.isnan() & b.isnan())


def _up(count: int, device: torch.device) -> torch.Tensor:
    """Signs that move ``count`` elements by +h (and then -h)."""
    return torch.ones(count, dtype=torch.float64, device=device)


def _bit_order(bits: int) -> list[int]:
    """Lowest bit first, then highest, and inwards: local and long-range couplings both show early."""
    order, lo, hi = [], 0, bits - 1
    while lo <= hi:
        order.append(lo)
        if hi != lo:
            order.append(hi)
        lo, hi = lo + 1, hi - 1
    return order


def classes(evaluate: GroupFn, n: int, s: int, y0: torch.Tensor, tol: torch.Tensor, gen: torch.Generator) -> Iterator[tuple]:
    """Per class of stride ``s``: (members, owner, yp, ym) as :func:`fd.attributed_differences` takes them.

    Raises :class:`Unstructured` at the first output that depends on two members of a class.
    """
    device = y0.device
    for r in range(min(s, n)):
        members = torch.arange(r, n, s, device=device)
        k = members.numel()
        q = torch.arange(k, device=device)
        owner = torch.zeros(y0.shape, dtype=torch.long, device=device)
        moved = yp = ym = None
        for bit in _bit_order((k - 1).bit_length()):
            upper = ((q >> bit) & 1) == 1
            yp0, ym0 = evaluate(members[~upper], _up(k - int(upper.sum()), device))
            yp1, ym1 = evaluate(members[upper], _up(int(upper.sum()), device))
            in0, in1 = _moved(yp0, ym0, y0), _moved(yp1, ym1, y0)
            if bool((in0 & in1).any()):
                raise Unstructured(f"an output depends on two elements {s} apart")
            either = in0 | in1
            bp, bm = torch.where(in1, yp1, yp0), torch.where(in1, ym1, ym0)
            if moved is None:
                moved, yp, ym = either, bp, bm
            elif not torch.equal(either, moved) or not bool((_close(bp, yp, tol) & _close(bm, ym, tol))[moved].all()):
                raise Unstructured("outputs changed inconsistently between halves")
            owner |= in1.long() << bit
        if moved is None:  # a class of one element
            yp, ym = evaluate(members, _up(1, device))
            moved = _moved(yp, ym, y0)
        owner = torch.where(moved, owner, -1)
        if bool((owner >= k).any()):
            raise Unstructured("outputs changed in halves that name no element")
        if k > 1:
            _probe(evaluate, members, owner, moved, yp, ym, y0, tol, gen)
        yield members, owner, yp, ym


def _probe(evaluate: GroupFn, members, owner, moved, yp, ym, y0, tol, gen) -> None:
    """Move the class at random (each member by +h, -h or not at all), twice: every output must follow its owner alone."""
    for _ in range(PROBES):
        step = torch.randint(-1, 2, (members.numel(),), generator=gen).to(device=y0.device, dtype=torch.float64)
        go = step != 0
        sp, sm = evaluate(members[go], step[go])
        mine = step[owner.clamp(min=0)]
        want_p = torch.where(moved & (mine > 0), yp, torch.where(moved & (mine < 0), ym, y0))
        want_m = torch.where(moved & (mine > 0), ym, torch.where(moved & (mine < 0), yp, y0))
        if not bool((_close(sp, want_p, tol) & _close(sm, want_m, tol)).all()):
            raise Unstructured("a random move of the class disagreed with the credited changes")


def colour(evaluate: GroupFn, n: int, y0: torch.Tensor, tol: torch.Tensor, budget: int, seed: int, assemble: Callable[[Iterator], T]) -> tuple[T | None, Colouring]:
    """Try strides 1, 2, 4, ... within ``budget`` forwards; ``assemble`` consumes the classes of the first that fits.

    Returns (what ``assemble`` returned, or None if no stride fit, and the cost).
    """
    spent = 0

    def counted(members: torch.Tensor, signs: torch.Tensor):
        nonlocal spent
        spent += 2
        return evaluate(members, signs)

    s = 1
    while s < n and cost(n, s) <= budget - spent:
        gen = torch.Generator().manual_seed(seed)
        try:
            return assemble(classes(counted, n, s, y0, tol, gen)), Colouring(s, spent)
        except Unstructured:
            s *= 2
    return None, Colouring(0, spent)

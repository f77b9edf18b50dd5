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

Strides 1, 2, 4, ... are tried, each screened first with one pair of halves of
class 0 (a local coupling shows there) and abandoned at its first contradiction; a
tensor that no stride fits within the forward budget is checked one element per
forward pair, as before.  Classes of equal size are checked together, a cohort at
a time, so the bookkeeping is a few tensor operations per block, not per class.  Where a stride fits, each output's change is the one
that moving its owner alone gives, so the per-element slopes are the numbers
the one-at-a-time path computes, from about 2 s (2 log2(n/s) + 2) forwards
instead of 2n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch

# Evaluate moves: a list of (positions (G, k), int8 signs (G, k) in {-1, 0, +1}) -> float64
# outputs, one row per move g, with elements positions[g] at x + sign*h, and at x - sign*h.
GroupFn = Callable[[list], tuple[torch.Tensor, torch.Tensor]]

T = TypeVar("T")

# Tensors smaller than this are checked element by element (colouring cannot win).
MIN_ELEMENTS = 32
# Forwards that colouring may spend, failed attempts included, as a fraction of the
# element-by-element path's 2n: a layer no stride fits costs at most this much extra.
BUDGET_FRACTION = 0.5
# Moved inputs and outputs held at once (float64, at +h and -h): moves are evaluated in
# blocks of at most this many bytes (and 256 moves).
BLOCK_BYTES = 8 << 20
# Random moves of a whole class that every credit must predict (see _Owners.probe).
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
    """Forwards for stride ``s`` on ``n`` elements: per class, two halves per bit and the probes,
    2 each, plus the screening pair of halves (see :func:`classes`)."""
    per_class = -(-n // s)  # ceil
    bits = (per_class - 1).bit_length()
    return min(s, n) * 2 * (2 * bits + PROBES) + (4 if bits else 0)


def _moved(yp: torch.Tensor, ym: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """Outputs that differ at all from the base point (NaN counts as a change)."""
    return (yp != y0) | (ym != y0)


def _close(a: torch.Tensor, b: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    return (a == b) | ((a - b).abs() <= tol) | (a.isnan() & b.isnan())


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
    """The classes of stride ``s``, a cohort at a time: (members (C, k), owner (C, M), yp (C, M), ym (C, M)).

    A cohort is a run of classes of the same size, evaluated and checked together. The
    first pair of halves of class 0 is evaluated alone first, so that a local coupling
    (the usual reason a stride does not fit) costs two moves, not a cohort's worth.
    Raises :class:`Unstructured` at the first contradiction.
    """
    screen = _Cohort(0, 1, n, s, y0, tol, gen)
    if screen.bits:
        yp, ym = evaluate(screen.block(0, 2))
        screen.owners.add(screen.bits[:1], yp[None], ym[None])
    per_cohort = max(1, BLOCK_BYTES // (48 * y0.numel()))  # classes whose (C, M) state fits the block size
    for first, last in _cohorts(n, s):
        for start in range(first, last, per_cohort):
            stop = min(last, start + per_cohort)
            cohort = _Cohort(start, stop, n, s, y0, tol, gen)
            step = max(2, BLOCK_BYTES // (16 * (stop - start) * (n + y0.numel())) // 2 * 2)  # rows a class per evaluation
            for a in range(0, cohort.rows, step):
                b = min(cohort.rows, a + step)
                cohort.feed(a, b, *evaluate(cohort.block(a, b)))
            yield cohort.result()


def _cohorts(n: int, s: int) -> list[tuple[int, int]]:
    """Runs of classes with equal member counts: the first n % s classes have one member more."""
    split = n % s if n > s else n
    return [(a, b) for a, b in ((0, split), (split, min(s, n))) if b > a]


class _Cohort:
    """Classes first..last-1 of stride s, all with k members: their moves and what the moves showed.

    Every class makes the same moves over its own members: both halves of each bit,
    then PROBES random moves (its own). ``signs`` is (C, rows, k): +1 where a member
    moves by +h (and then -h), -1 where it moves the other way, 0 where it stays.
    """

    def __init__(self, first: int, last: int, n: int, s: int, y0: torch.Tensor, tol: torch.Tensor, gen: torch.Generator) -> None:
        device = y0.device
        self.members = torch.arange(first, last, device=device)[:, None] + s * torch.arange(-(-(n - first) // s), device=device)[None, :]
        c, k = self.members.shape
        self.bits = _bit_order((k - 1).bit_length())
        upper = (torch.arange(k, device=device)[None, :] >> torch.tensor(self.bits, dtype=torch.long, device=device).reshape(-1, 1)) & 1
        halves = torch.stack([upper == 0, upper == 1], dim=1).reshape(-1, k).to(torch.int8)  # bit 0 half, bit 1 half, ...
        self.halves = len(halves)
        if k == 1:  # classes of one element: it alone is moved
            self.steps = torch.ones(c, 1, 1, dtype=torch.int8, device=device)
        else:
            self.steps = torch.randint(-1, 2, (c, PROBES, k), generator=gen, dtype=torch.int8).to(device)
        self.signs = torch.cat([halves.expand(c, -1, -1), self.steps], dim=1)
        self.rows = self.signs.shape[1]
        self.owners = _Owners(y0, tol, s, c)
        self.probes: list[tuple[torch.Tensor, torch.Tensor]] = []

    def block(self, a: int, b: int) -> list:
        """Rows a..b-1 of every class, as the evaluator takes them: [(positions, signs)], one move a row."""
        c, k = self.members.shape
        return [(self.members[:, None, :].expand(c, b - a, k).reshape(-1, k), self.signs[:, a:b].reshape(-1, k))]

    def feed(self, a: int, b: int, yp: torch.Tensor, ym: torch.Tensor) -> None:
        """The outputs of rows a..b-1 (a and b even, so no pair of halves is split)."""
        c = self.members.shape[0]
        yp, ym = yp.reshape(c, b - a, -1), ym.reshape(c, b - a, -1)
        halves = max(0, min(b, self.halves) - a)
        if halves:
            self.owners.add(self.bits[a // 2 : (a + halves) // 2], yp[:, :halves], ym[:, :halves])
        if halves < b - a:
            self.probes.append((yp[:, halves:], ym[:, halves:]))

    def result(self) -> tuple:
        sp = torch.cat([p for p, _ in self.probes], dim=1) if self.probes else None
        sm = torch.cat([m for _, m in self.probes], dim=1) if self.probes else None
        if not self.bits:
            self.owners.solo(sp[:, 0], sm[:, 0])
        self.owners.finish(self.members.shape[1])
        if self.bits and self.probes:
            self.owners.probe(self.steps, sp, sm)
        return self.members, self.owners.owner, self.owners.yp, self.owners.ym


class _Owners:
    """What the halves of C classes say: which member each output depends on, and its values (all (C, M))."""

    def __init__(self, y0: torch.Tensor, tol: torch.Tensor, stride: int, classes: int) -> None:
        self.y0, self.tol, self.stride = y0, tol, stride
        self.owner = torch.zeros((classes, y0.numel()), dtype=torch.long, device=y0.device)
        self.moved = self.yp = self.ym = None

    def add(self, bits: list[int], yp: torch.Tensor, ym: torch.Tensor) -> None:
        """``yp``/``ym`` are (C, 2 * len(bits), M): the half whose bit is 0, then the half whose bit is 1."""
        moved = _moved(yp, ym, self.y0)
        in0, in1 = moved[:, 0::2], moved[:, 1::2]
        if bool((in0 & in1).any()):
            raise Unstructured(f"an output depends on two elements {self.stride} apart")
        either = in0 | in1
        bp, bm = torch.where(in1, yp[:, 1::2], yp[:, 0::2]), torch.where(in1, ym[:, 1::2], ym[:, 0::2])
        if self.moved is None:
            self.moved, self.yp, self.ym = either[:, 0], bp[:, 0], bm[:, 0]
        if not bool((either == self.moved[:, None]).all()):
            raise Unstructured("outputs changed in some pairs of halves but not in others")
        same = _close(bp, self.yp[:, None], self.tol) & _close(bm, self.ym[:, None], self.tol)
        if not bool((same | ~self.moved[:, None]).all()):
            raise Unstructured("an output's change depended on which other elements moved with its own")
        place = torch.tensor([1 << b for b in bits], dtype=torch.long, device=self.owner.device)
        self.owner += (in1.long() * place[:, None]).sum(1)

    def solo(self, yp: torch.Tensor, ym: torch.Tensor) -> None:
        """Classes of one element: every output that moved depends on it."""
        self.moved, self.yp, self.ym = _moved(yp, ym, self.y0), yp, ym

    def finish(self, k: int) -> None:
        self.owner = torch.where(self.moved, self.owner, -1)
        if bool((self.owner >= k).any()):
            raise Unstructured("outputs changed in halves that name no element")

    def probe(self, steps: torch.Tensor, sp: torch.Tensor, sm: torch.Tensor) -> None:
        """Each class moved at random (each member by +h, -h or not at all): every output must follow its owner alone.

        ``steps`` is (C, probes, members); ``sp``/``sm`` the outputs, (C, probes, M).
        """
        mine = steps.gather(2, self.owner.clamp(min=0)[:, None, :].expand(-1, steps.shape[1], -1))
        moved = self.moved[:, None]
        up, down = moved & (mine > 0), moved & (mine < 0)
        yp, ym = self.yp[:, None], self.ym[:, None]
        want_p = torch.where(up, yp, torch.where(down, ym, self.y0))
        want_m = torch.where(up, ym, torch.where(down, yp, self.y0))
        if not bool((_close(sp, want_p, self.tol) & _close(sm, want_m, self.tol)).all()):
            raise Unstructured("a random move of the class disagreed with the credited changes")


def colour(evaluate: GroupFn, n: int, y0: torch.Tensor, tol: torch.Tensor, budget: int, seed: int, assemble: Callable[[Iterator], T]) -> tuple[T | None, Colouring]:
    """Try strides 1, 2, 4, ... within ``budget`` forwards; ``assemble`` consumes the classes of the first that fits.

    Returns (what ``assemble`` returned, or None if no stride fit, and the cost).
    """
    spent = 0

    def counted(segments: list):
        nonlocal spent
        spent += 2 * sum(len(signs) for _, signs in segments)
        return evaluate(segments)

    s = 1
    while s < n and cost(n, s) <= budget - spent:
        gen = torch.Generator().manual_seed(seed)
        try:
            return assemble(classes(counted, n, s, y0, tol, gen)), Colouring(s, spent)
        except Unstructured:
            s *= 2
    return None, Colouring(0, spent)

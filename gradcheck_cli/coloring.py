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
  elements; member q of a class gets a code, a w-subset of t moves (w odd, C(t, w)
  at least the class size: 7 moves of 3 for 32 members, 19 of 9 for 65536).  Each
  move shifts its members by +h and by -h.  An output that depends on exactly one
  member changes (any change at all counts, bit for bit) in exactly that member's
  w moves, which name it.  One that depends on two members changes in the moves of
  both codes, more than w -- or, where their changes cancel exactly in the moves
  they share, in an even number of moves, never the odd w: the stride is rejected.
* An output's values must agree, to rounding, in all its moves: the other members
  moved with its owner must not have touched it.
* Last, each class is moved at random twice (each member by +h, -h or not at
  all), and every output must show the value its owner's move alone predicts.
  This catches three or more members whose changes cancel exactly inside the
  coded moves.

Strides 1, 2, 4, ... are tried, each screened first by moving class 0's even and
odd members apart (a local coupling shows there) and abandoned at its first
contradiction; a tensor that no stride fits within the forward budget is checked
one element per forward pair, as before.  Classes of equal size are checked
together, a cohort at a time, so the bookkeeping is a few tensor operations per
block, not per class.  Where a stride fits, each output's change is the one that
moving its owner alone gives, so the per-element slopes are the numbers the
one-at-a-time path computes, from about 2 s (t + 2) forwards instead of 2n.
"""

from __future__ import annotations

import math
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
# Moved inputs and outputs held at once (float64, at +h and -h): a cohort's moves are
# evaluated in blocks of at most this many bytes, and its per-class state fits in it too.
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
    """Forwards for stride ``s`` on ``n`` elements: per class, its coded moves and the probes,
    2 each, plus the screen's two moves (see :func:`classes`)."""
    per_class = -(-n // s)  # ceil
    if per_class < 2:
        return 2 * min(s, n)
    return min(s, n) * 2 * (code_size(per_class)[0] + PROBES) + 4


def _moved(yp: torch.Tensor, ym: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """Outputs that differ at all from the base point (NaN counts as a change)."""
    return (yp != y0) | (ym != y0)


def _close(a: torch.Tensor, b: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    return (a == b) | ((a - b).abs() <= tol) | (a.isnan() & b.isnan())


def classes(evaluate: GroupFn, n: int, s: int, y0: torch.Tensor, tol: torch.Tensor, gen: torch.Generator) -> Iterator[tuple]:
    """The classes of stride ``s``, a cohort at a time: (members (C, k), owner (C, M), yp (C, M), ym (C, M)).

    A cohort is a run of classes of the same size, evaluated and checked together.
    Raises :class:`Unstructured` at the first contradiction.
    """
    _screen(evaluate, n, s, y0)
    per_cohort = max(1, BLOCK_BYTES // (48 * y0.numel()))  # classes whose (C, M) state fits the block size
    for first, last in _cohorts(n, s):
        for start in range(first, last, per_cohort):
            stop = min(last, start + per_cohort)
            cohort = _Cohort(start, stop, n, s, y0, tol, gen)
            step = max(1, BLOCK_BYTES // (16 * (stop - start) * (n + y0.numel())))  # rows a class per evaluation
            for a in range(0, cohort.rows, step):
                b = min(cohort.rows, a + step)
                cohort.feed(a, b, *evaluate(cohort.block(a, b)))
            yield cohort.result()


def _screen(evaluate: GroupFn, n: int, s: int, y0: torch.Tensor) -> None:
    """Class 0's even and odd members, moved apart: an output that changes both times refuses the stride.

    A local coupling (the usual reason a stride does not fit: neighbours s apart on one
    output) shows here after two moves, before any cohort is evaluated.
    """
    members = torch.arange(0, n, s, device=y0.device)
    if members.numel() < 2:
        return
    odd = (torch.arange(members.numel(), device=y0.device) % 2).to(torch.int8)
    yp, ym = evaluate([(members.expand(2, -1), torch.stack([1 - odd, odd]))])
    moved = _moved(yp, ym, y0)
    if bool((moved[0] & moved[1]).any()):
        raise Unstructured(f"an output depends on two elements {s} apart")


def code_size(k: int) -> tuple[int, int]:
    """(t, w): the fewest moves t with C(t, w) >= k codes of an odd weight w (see :class:`_Cohort`)."""
    t = 1
    while True:
        w = max(range(1, t + 1, 2), key=lambda v: math.comb(t, v))
        if math.comb(t, w) >= k:
            return t, w
        t += 1


def _codes(k: int, t: int, w: int, device: torch.device) -> torch.Tensor:
    """(t, k) bool: member q takes part in move j when j is in the q-th w-subset of range(t) (colex order)."""
    binom = _binomials(t, w, device)
    q = torch.arange(k, device=device)
    left = torch.full((k,), w, dtype=torch.long, device=device)
    code = torch.zeros((t, k), dtype=torch.bool, device=device)
    for j in range(t - 1, -1, -1):  # the combinatorial number system, greedily from the top
        c = binom[j, left]
        take = (left > 0) & (q >= c)
        code[j] = take
        q = q - torch.where(take, c, 0)
        left = left - take.long()
    return code


def _binomials(t: int, w: int, device: torch.device) -> torch.Tensor:
    """(t, w + 2) long: C(j, i) for j < t, i <= w + 1."""
    return torch.tensor([[math.comb(j, i) for i in range(w + 2)] for j in range(t)], dtype=torch.long, device=device)


def _cohorts(n: int, s: int) -> list[tuple[int, int]]:
    """Runs of classes with equal member counts: the first n % s classes have one member more."""
    split = n % s if n > s else n
    return [(a, b) for a, b in ((0, split), (split, min(s, n))) if b > a]


class _Cohort:
    """Classes first..last-1 of stride s, all with k members: their moves and what the moves showed.

    Every class makes the same t coded moves over its own members -- member q takes part
    in the moves of its code, a w-subset of range(t) -- then PROBES random moves of its
    own. ``signs`` is (C, rows, k): +1 where a member moves by +h (and then -h), -1
    where it moves the other way, 0 where it stays.
    """

    def __init__(self, first: int, last: int, n: int, s: int, y0: torch.Tensor, tol: torch.Tensor, gen: torch.Generator) -> None:
        device = y0.device
        self.members = torch.arange(first, last, device=device)[:, None] + s * torch.arange(-(-(n - first) // s), device=device)[None, :]
        c, k = self.members.shape
        if k == 1:  # classes of one element: it alone is moved
            self.tests, self.steps, codes = 0, torch.ones(c, 1, 1, dtype=torch.int8, device=device), torch.zeros(0, 1, dtype=torch.int8, device=device)
            self.owners = _Owners(y0, tol, s, c, 0, 0)
        else:
            self.tests, weight = code_size(k)
            codes = _codes(k, self.tests, weight, device).to(torch.int8)
            self.steps = torch.randint(-1, 2, (c, PROBES, k), generator=gen, dtype=torch.int8).to(device)
            self.owners = _Owners(y0, tol, s, c, self.tests, weight)
        self.signs = torch.cat([codes.expand(c, -1, -1), self.steps], dim=1)
        self.rows = self.signs.shape[1]
        self.probes: list[tuple[torch.Tensor, torch.Tensor]] = []

    def block(self, a: int, b: int) -> list:
        """Rows a..b-1 of every class, as the evaluator takes them: [(positions, signs)], one move a row."""
        c, k = self.members.shape
        return [(self.members[:, None, :].expand(c, b - a, k).reshape(-1, k), self.signs[:, a:b].reshape(-1, k))]

    def feed(self, a: int, b: int, yp: torch.Tensor, ym: torch.Tensor) -> None:
        """The outputs of rows a..b-1."""
        c = self.members.shape[0]
        yp, ym = yp.reshape(c, b - a, -1), ym.reshape(c, b - a, -1)
        tests = max(0, min(b, self.tests) - a)
        if tests:
            self.owners.add(a, yp[:, :tests], ym[:, :tests])
        if tests < b - a:
            self.probes.append((yp[:, tests:], ym[:, tests:]))

    def result(self) -> tuple:
        sp = torch.cat([p for p, _ in self.probes], dim=1) if self.probes else None
        sm = torch.cat([m for _, m in self.probes], dim=1) if self.probes else None
        if not self.tests:
            self.owners.solo(sp[:, 0], sm[:, 0])
        self.owners.finish(self.members.shape[1])
        if self.tests and self.probes:
            self.owners.probe(self.steps, sp, sm)
        return self.members, self.owners.owner, self.owners.yp, self.owners.ym


class _Owners:
    """What the coded moves of C classes say: which member each output depends on, and its values (all (C, M)).

    An output that depends on one member changes in exactly the w moves of that member's
    code, and those moves name the member (its rank in colex order). One that depends on
    two changes in the moves of both codes: more than w, as two distinct codes of w
    moves cover more than w; and if their changes cancelled exactly in the moves they
    share, in an even number, never the odd w.
    """

    def __init__(self, y0: torch.Tensor, tol: torch.Tensor, stride: int, classes: int, tests: int, weight: int) -> None:
        self.y0, self.tol, self.stride, self.weight = y0, tol, stride, weight
        shape = (classes, y0.numel())
        self.count = torch.zeros(shape, dtype=torch.long, device=y0.device)  # moves each output changed in
        self.rank = torch.zeros(shape, dtype=torch.long, device=y0.device)
        self.yp = torch.zeros(shape, dtype=y0.dtype, device=y0.device)
        self.ym = torch.zeros(shape, dtype=y0.dtype, device=y0.device)
        self.binom = _binomials(tests, weight, y0.device) if tests else None
        self.moved = self.owner = None

    def add(self, first: int, yp: torch.Tensor, ym: torch.Tensor) -> None:
        """``yp``/``ym`` are (C, r, M): the outputs of coded moves first..first+r-1."""
        moved = _moved(yp, ym, self.y0)
        seen = self.count[:, None] + moved.long().cumsum(1)  # changes so far, this move included
        if bool((seen[:, -1] > self.weight).any()):
            raise Unstructured(f"an output depends on two elements {self.stride} apart")
        move = torch.arange(first, first + moved.shape[1], device=moved.device)[None, :, None].expand_as(seen)
        self.rank += (moved * self.binom[move, seen]).sum(1)  # colex rank: sum of C(move, i) over the i-th change
        new = moved.any(1) & (self.count == 0)
        at = moved.long().argmax(1, keepdim=True)  # the first move in this block that changed the output
        self.yp = torch.where(new, yp.gather(1, at).squeeze(1), self.yp)
        self.ym = torch.where(new, ym.gather(1, at).squeeze(1), self.ym)
        same = _close(yp, self.yp[:, None], self.tol) & _close(ym, self.ym[:, None], self.tol)
        if not bool((same | ~moved).all()):
            raise Unstructured("an output's change depended on which other elements moved with its own")
        self.count = seen[:, -1]

    def solo(self, yp: torch.Tensor, ym: torch.Tensor) -> None:
        """Classes of one element: every output that moved depends on it."""
        self.moved, self.yp, self.ym = _moved(yp, ym, self.y0), yp, ym
        self.rank = torch.zeros_like(self.rank)

    def finish(self, k: int) -> None:
        if self.moved is None:
            if bool(((self.count != 0) & (self.count != self.weight)).any()):
                raise Unstructured("an output changed in a number of moves that no element's code has")
            self.moved = self.count == self.weight
        self.owner = torch.where(self.moved, self.rank, -1)
        if bool((self.owner >= k).any()):
            raise Unstructured("outputs changed in moves that name no element")

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

"""Grouped moves: many elements moved per forward where each output depends on few of them.

Checking element by element costs two forwards per element.  But if every output
depends on at most one element of a *class* of elements -- an elementwise layer:
on one element at all; a filter of width 25: on one of any elements 32 apart --
then a whole class can be moved in one forward and each output's change credited
to the one element it depends on (the literature calls it Jacobian colouring:
Curtis, Powell & Reid, 1974).  It usually needs the sparsity pattern up front, and a wrong
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

Decoding every class costs t + 2 moves a class.  Most layers repeat themselves:
in a convolution class r is class 0 shifted by r, and so are the outputs it moves.
So only the first two classes are decoded; if class 1's owners are class 0's shifted
by some number of outputs, each further class is *guessed* to be class 0 shifted
accordingly, and the guess is checked before anything is credited:

* In about log3(2k) moves (4 for 32 members) every member moves by its own pattern
  of signs, +h, -h or not at all, no two patterns equal or opposite.  Every output
  must change in exactly its guessed owner's moves, bit for bit, and show the
  owner's two values in all of them.  An output credited to the wrong member, or
  depending on a second one too, fails that (the two patterns differ in some move),
  and no exact cancellation of two or three members' (linear) changes can hold in
  every move.
* A class whose trial fails is decoded from its coded moves like the first two.

Strides 1, 2, 4, ... are tried, each screened first by moving class 0's even and
odd members apart (a local coupling shows there; the screens of several strides
share one evaluation) and abandoned at its first contradiction; a tensor that no
stride fits within the forward budget is checked one element per forward pair, as
before.  Classes of equal size are checked together, a cohort at a time, so the
bookkeeping is a few tensor operations per block, not per class.  Where a stride
fits, each output's change is the one that moving its owner alone gives, so the
per-element slopes are the numbers the one-at-a-time path computes -- for the seed
Gaussian filter (N = 1000, stride 32) from about 300 forwards instead of 2000.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch

# Evaluate moves: a list of (positions (G, k), int8 signs (G, k) in {-1, 0, +1}) -> float64
# outputs, one row per move g, with elements positions[g] at x + sign*h, and at x - sign*h.
GroupFn = Callable[[list], tuple[torch.Tensor, torch.Tensor]]

T = TypeVar("T")

# Tensors smaller than this are checked element by element (grouping cannot win).
MIN_ELEMENTS = 32
# Forwards that grouping may spend, failed attempts included, as a fraction of the
# element-by-element path's 2n: a layer no stride fits costs at most this much extra.
BUDGET_FRACTION = 0.5
# Moved inputs and outputs held at once (float64, at +h and -h): a cohort's moves are
# evaluated in blocks of at most this many bytes, and its per-class state fits in it too.
BLOCK_BYTES = 8 << 20
# Random moves of a whole class that every credit must predict (see _Owners.probe).
PROBES = 2
# Strides whose screens (see _screens) are evaluated in one call: 2 moves each.
SCREENS_PER_CALL = 6
# Classes decoded from their own coded moves before the others are tried on a guess
# (see _Guess): the pattern of class 0, shifted as class 1 shows; 0 turns guessing off.
SEED_CLASSES = 2
# Up to this many elements flagged by a grouped first pass are re-evaluated one at a
# time (the caller's choice; see check.py), so a verdict never rests on grouping alone.
REEVALUATE_MAX = 64


class Unstructured(Exception):
    """The outputs' dependence on the tensor does not fit the stride being tried."""


@dataclass(frozen=True)
class Grouping:
    """How a tensor was evaluated: the stride that fit (0: none) and the forwards all attempts took."""

    stride: int
    forwards: int


def cost(n: int, s: int) -> int:
    """Most forwards stride ``s`` on ``n`` elements can take: per class, its coded moves and the
    probes, 2 each, and for the classes after the seeds a failed trial of a guess before
    them; plus the screen's two moves (see :func:`classes`)."""
    per_class = -(-n // s)  # ceil
    if per_class < 2:
        return 2 * min(s, n)
    count = min(s, n)
    trials = count - SEED_CLASSES if _guessing(count) else 0
    return count * 2 * (code_size(per_class)[0] + PROBES) + trials * 2 * trial_size(per_class) + 4


def _guessing(count: int) -> bool:
    """Guess the classes after the seeds only where there are a few to guess."""
    return SEED_CLASSES > 0 and count >= SEED_CLASSES + 2


def _moved(yp: torch.Tensor, ym: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """Outputs that differ at all from the base point (NaN counts as a change)."""
    return (yp != y0) | (ym != y0)


def _close(a: torch.Tensor, b: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    return (a == b) | ((a - b).abs() <= tol) | (a.isnan() & b.isnan())


def classes(evaluate: GroupFn, n: int, s: int, y0: torch.Tensor, tol: torch.Tensor, gen: torch.Generator) -> Iterator[tuple]:
    """The classes of stride ``s``, a cohort at a time: (members (C, k), owner (C, M), yp (C, M), ym (C, M)).

    A cohort is a run of classes of the same size, evaluated and checked together.
    The first SEED_CLASSES classes are decoded from their coded moves; where their
    patterns are one pattern shifted (see :class:`_Guess`), every other class is tried
    on that pattern (see :class:`_Trial`), and decoded only if the trial fails.
    Raises :class:`Unstructured` at the first contradiction. (The stride's screen, see
    :func:`_screens`, has passed before.)
    """
    count = min(s, n)
    seeds = SEED_CLASSES if _guessing(count) else count
    decode_cap = max(1, BLOCK_BYTES // (48 * y0.numel()))  # classes whose (C, M) state fits the block size
    trial_cap = max(1, BLOCK_BYTES // (16 * trial_size(-(-n // s)) * y0.numel()))  # a trial's (C, moves, M) outputs
    seen = []
    for ids in _runs(0, seeds, n, s, decode_cap):
        seen.append(_evaluated(evaluate, _Cohort(ids, n, s, y0, tol, gen), n, y0))
        yield seen[-1]
    guess = _Guess.fit(torch.cat([owner for _, owner, _, _ in seen]), n, s) if seeds < count else None
    for ids in _runs(seeds, count, n, s, trial_cap if guess is not None else decode_cap):
        if guess is not None:
            passed, found = _evaluated(evaluate, _Trial(ids, n, s, y0, tol, gen, guess), n, y0)
            if bool(passed.any()):
                yield tuple(t[passed] for t in found)
            ids = ids[~passed.cpu()]
        for part in ids.split(decode_cap) if ids.numel() else ():
            yield _evaluated(evaluate, _Cohort(part, n, s, y0, tol, gen), n, y0)


def _evaluated(evaluate: GroupFn, cohort, n: int, y0: torch.Tensor):
    """Every move of a cohort, in blocks of at most BLOCK_BYTES; then what they showed."""
    step = max(1, BLOCK_BYTES // (16 * len(cohort.members) * (n + y0.numel())))  # rows a class per evaluation
    for a in range(0, cohort.rows, step):
        b = min(cohort.rows, a + step)
        cohort.feed(a, b, *evaluate(cohort.block(a, b)))
    return cohort.result()


def _screens(evaluate: GroupFn, n: int, strides: list[int], y0: torch.Tensor) -> dict[int, bool]:
    """For each stride, whether it passes its screen: class 0's even and odd members, moved apart.

    An output that changes both times refuses the stride: a local coupling (the usual
    reason a stride does not fit: neighbours s apart on one output) shows here after two
    moves, before any cohort is evaluated. The screens of several strides are evaluated
    in one call (one vmap call where the layer is batched).
    """
    result, segments = {}, []
    for s in strides:
        members = torch.arange(0, n, s, device=y0.device)
        result[s] = True  # a class of one member has no two members to couple
        if members.numel() >= 2:
            odd = (torch.arange(members.numel(), device=y0.device) % 2).to(torch.int8)
            segments.append((s, (members.expand(2, -1), torch.stack([1 - odd, odd]))))
    if segments:
        yp, ym = evaluate([segment for _, segment in segments])
        moved = _moved(yp, ym, y0).reshape(len(segments), 2, -1)
        coupled = (moved[:, 0] & moved[:, 1]).any(1).tolist()
        result.update({s: not c for (s, _), c in zip(segments, coupled)})
    return result


@functools.lru_cache(maxsize=None)
def code_size(k: int) -> tuple[int, int]:
    """(t, w): the fewest moves t with C(t, w) >= k codes of an odd weight w (see :class:`_Cohort`)."""
    t = 1
    while True:
        w = max(range(1, t + 1, 2), key=lambda v: math.comb(t, v))
        if math.comb(t, w) >= k:
            return t, w
        t += 1


@functools.lru_cache(maxsize=64)
def _codes(k: int, t: int, w: int, device: torch.device) -> torch.Tensor:
    """(t, k) bool: member q takes part in move j when j is in the q-th w-subset of range(t) (colex order).

    Cached, like :func:`_binomials` and :func:`_ternary_codes`: read, never changed.
    """
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


@functools.lru_cache(maxsize=64)
def _binomials(t: int, w: int, device: torch.device) -> torch.Tensor:
    """(t, w + 2) long: C(j, i) for j < t, i <= w + 1."""
    return torch.tensor([[math.comb(j, i) for i in range(w + 2)] for j in range(t)], dtype=torch.long, device=device)


def _runs(first: int, last: int, n: int, s: int, cap: int) -> Iterator[torch.Tensor]:
    """Classes first..last-1 in runs of equal member counts (the first n % s classes have one
    member more), at most ``cap`` classes a run."""
    split = n % s if n > s else n
    for a, b in ((first, min(last, split)), (max(first, split), last)):
        yield from torch.arange(a, b).split(cap) if b > a else ()


def _members(ids: torch.Tensor, n: int, s: int, device: torch.device) -> torch.Tensor:
    """(C, k): the positions of classes ``ids`` of stride s, which all have k members."""
    ids = ids.to(device)
    return ids[:, None] + s * torch.arange(-(-(n - int(ids[0])) // s), device=device)[None, :]


class _Cohort:
    """Classes ``ids`` of stride s, all with k members: their moves and what the moves showed.

    Every class makes the same t coded moves over its own members -- member q takes part
    in the moves of its code, a w-subset of range(t) -- then PROBES random moves of its
    own. ``signs`` is (C, rows, k): +1 where a member moves by +h (and then -h), -1
    where it moves the other way, 0 where it stays.
    """

    def __init__(self, ids: torch.Tensor, n: int, s: int, y0: torch.Tensor, tol: torch.Tensor, gen: torch.Generator) -> None:
        device = y0.device
        self.members = _members(ids, n, s, device)
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
        # The first move in this block that changed the output (argmax over a contiguous last
        # axis: over the middle one it cost 10x more).
        at = moved.transpose(1, 2).long().contiguous().argmax(-1).unsqueeze(1)
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


class _Guess:
    """Which member of class r each output depends on, guessed from the seed classes.

    In a convolution class r is class 0 shifted by r positions, and so are the outputs
    it moves; in a linear layer's weight every class moves the outputs of the same rows.
    Both are "class 0's owners, shifted by r * shift outputs". The shift is read off
    classes 0 and 1 (where each member's first output moved to) and must reproduce class
    1's decoded owners exactly, or nothing is guessed. Outputs between class 0's owned
    ones (and beyond its ends) take the nearest owned output's member, so edges that cut
    a class's outputs short are guessed too. A guess is only a guess: :class:`_Trial`
    checks it before anything is credited.
    """

    def __init__(self, fill: torch.Tensor, shift: int) -> None:
        self.fill, self.shift = fill, shift

    @classmethod
    def fit(cls, owners: torch.Tensor, n: int, s: int) -> "_Guess | None":
        """``owners``: (SEED_CLASSES, M) decoded owners of classes 0, 1, ... (-1 for none)."""
        device = owners.device
        o0, o1 = owners[0].cpu(), owners[1].cpu()  # small, and on the CPU every operation below exists
        m = o0.numel()
        owned = torch.nonzero(o0 >= 0).reshape(-1)
        if not owned.numel() or not bool((o1 >= 0).any()):
            return None
        out = torch.arange(m, device=o0.device)
        right = torch.searchsorted(owned, out).clamp(max=owned.numel() - 1)
        left = (right - 1).clamp(min=0)
        nearest = torch.where((owned[left] - out).abs() <= (owned[right] - out).abs(), owned[left], owned[right])
        fill = o0[nearest]
        k = -(-n // s)
        first0 = torch.full((k,), m, device=o0.device).scatter_reduce(0, o0[owned], owned, "amin")
        owned1 = torch.nonzero(o1 >= 0).reshape(-1)
        first1 = torch.full((k,), m, device=o0.device).scatter_reduce(0, o1[owned1], owned1, "amin")
        both = (first0 < m) & (first1 < m)
        if not bool(both.any()):
            return None
        guess = cls(fill, int((first1 - first0)[both].mode().values))
        if not bool(((guess.owners(torch.tensor([1]))[0] == o1) | (o1 < 0)).all()):
            return None
        guess.fill = fill.to(device)
        return guess

    def owners(self, ids: torch.Tensor) -> torch.Tensor:
        """(C, M): the guessed owner of every output, for classes ``ids``."""
        m = self.fill.numel()
        at = torch.arange(m, device=self.fill.device)[None, :] - ids.to(self.fill.device)[:, None] * self.shift
        return self.fill[at.clamp(0, m - 1)]


class _Trial:
    """Classes ``ids`` tried on a guess: a few moves in which every member has its own pattern of signs.

    Member q of a class moves by sign * h in move j (and then the other way), its signs a
    nonzero ternary code (+1, -1 or 0 in each of the moves); no two members' codes are equal
    or opposite, and which member gets which code is drawn at random per class. An output
    that depends on its guessed owner alone must then change in exactly that member's
    moves, bit for bit, and show the owner's two values (swapped where the sign is -1) in
    every one of them. An output that depends on another member instead, or on another
    one too, fails that: the two codes differ somewhere, and no exact cancellation of two
    or three members' (linear) changes can hold in every move (it would need equal or opposite
    codes). A class whose outputs do not all follow is not credited; it is decoded from
    coded moves instead. About log3(2k) moves a class, against the t + PROBES of a decode.
    """

    def __init__(self, ids: torch.Tensor, n: int, s: int, y0: torch.Tensor, tol: torch.Tensor, gen: torch.Generator, guess: _Guess) -> None:
        self.members = _members(ids, n, s, y0.device)
        c, k = self.members.shape
        self.ids, self.y0, self.tol, self.guess = ids, y0, tol, guess
        codes = _ternary_codes(trial_size(k))  # (moves, codes)
        pick = torch.rand(c, codes.shape[1], generator=gen).argsort(1)[:, :k]  # (C, k): k codes at random, per class
        self.signs = codes[:, pick].permute(1, 0, 2).contiguous().to(y0.device)  # (C, moves, k)
        self.first = (self.signs != 0).transpose(1, 2).long().contiguous().argmax(-1)  # (C, k): each member's first move, a +1
        self.rows = self.signs.shape[1]
        self.out: list[tuple[torch.Tensor, torch.Tensor]] = []

    block = _Cohort.block

    def feed(self, a: int, b: int, yp: torch.Tensor, ym: torch.Tensor) -> None:
        c = self.members.shape[0]
        self.out.append((yp.reshape(c, b - a, -1), ym.reshape(c, b - a, -1)))

    def result(self) -> tuple[torch.Tensor, tuple]:
        """(passed (C,) bool, (members, owner, yp, ym)) -- only the passed classes may be credited."""
        sp, sm = (torch.cat([o[i] for o in self.out], dim=1) for i in (0, 1))  # (C, moves, M)
        k = self.members.shape[1]
        moved = (sp != self.y0) | (sm != self.y0)  # NaN counts as a change
        changed = moved.any(1)
        guessed = self.guess.owners(self.ids)
        named = (~changed | (guessed < k)).all(1)
        mine_at = torch.where(changed, guessed, 0).clamp(max=k - 1)
        mine = self.signs.gather(2, mine_at[:, None, :].expand(-1, self.rows, -1))  # the guessed owner's signs
        still = mine == 0
        # Exactly the owner's moves changed the output, bit for bit ...
        exact = (moved == (~still & changed[:, None])).flatten(1).all(1)
        # ... and in each of them it shows the owner's two values (from its first move, a +1),
        # swapped where the sign is -1, to rounding. A NaN fails here: such a class is decoded.
        first = self.first.gather(1, mine_at)[:, None, :]
        yp, ym = sp.gather(1, first).squeeze(1), sm.gather(1, first).squeeze(1)
        up = mine > 0
        off = torch.maximum((torch.where(up, sp, sm) - yp[:, None]).abs(), (torch.where(up, sm, sp) - ym[:, None]).abs())
        agree = (off.masked_fill(still, 0.0).amax(1) <= self.tol).all(1)
        passed = named & exact & agree
        owner = torch.where(changed & passed[:, None], guessed, -1)
        return passed, (self.members, owner, yp, ym)


@functools.lru_cache(maxsize=None)
def trial_size(k: int) -> int:
    """Moves of a trial: the fewest with (3^moves - 1) / 2 >= k codes (nonzero, none the opposite of another)."""
    moves = 1
    while (3**moves - 1) // 2 < k:
        moves += 1
    return moves


@functools.lru_cache(maxsize=None)
def _ternary_codes(moves: int) -> torch.Tensor:
    """(moves, (3^moves - 1) / 2) int8: every nonzero vector of signs whose first nonzero sign is +1.

    Cached: callers index it (a copy), never change it.
    """
    digits = torch.arange(3**moves)[None, :] // (3 ** torch.arange(moves - 1, -1, -1))[:, None] % 3
    signs = torch.where(digits == 2, -1, digits)  # 0, +1, -1
    first = (signs != 0).long().argmax(0)
    keep = (signs != 0).any(0) & (signs.gather(0, first[None])[0] > 0)
    return signs[:, keep].to(torch.int8)


def group(evaluate: GroupFn, n: int, y0: torch.Tensor, tol: torch.Tensor, budget: int, seed: int, assemble: Callable[[Iterator], T]) -> tuple[T | None, Grouping]:
    """Try strides 1, 2, 4, ... within ``budget`` forwards; ``assemble`` consumes the classes of the first that fits.

    Returns (what ``assemble`` returned, or None if no stride fit, and the cost).
    """
    spent = 0

    def counted(segments: list):
        nonlocal spent
        spent += 2 * sum(len(signs) for _, signs in segments)
        return evaluate(segments)

    strides = [1 << i for i in range(max(0, n - 1).bit_length())]  # 1, 2, 4, ... below n
    screened: dict[int, bool] = {}
    for i, s in enumerate(strides):
        if cost(n, s) > budget - spent:
            break
        if s not in screened:
            # With the next few strides that the budget could still afford after their screens.
            more = [t for t in strides[i + 1 : i + SCREENS_PER_CALL] if cost(n, t) + 4 * SCREENS_PER_CALL <= budget - spent]
            screened.update(_screens(counted, n, [s, *more], y0))
        if not screened[s]:
            continue
        gen = torch.Generator().manual_seed(seed)
        try:
            return assemble(classes(counted, n, s, y0, tol, gen)), Grouping(s, spent)
        except Unstructured:
            continue
    return None, Grouping(0, spent)

"""Say what is wrong with a failing gradient, not just that it is.

Pure numpy, no printing.  ``diagnose`` looks at one checked tensor's analytic
and numeric gradients (NaN numeric = element not checked, ignored everywhere)
and its mask of failing elements, and returns one short line naming the
pattern of the error, or None when there is no recognisable pattern.

Each pattern is a small function returning ``str | None``; ``diagnose`` tries
them most specific first.  Every comparison uses relative tolerances, so
finite-difference noise neither hides a pattern nor invents one, and nothing
fires unless some checked element failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

FIT_RTOL = 2e-2  # relative residual allowed when one array "matches" another
ELEMENT_RTOL = 5e-2  # per-element relative tolerance on a fitted ratio
NICE_RTOL = 1e-2  # how close a ratio must be to a telling value: -1, 2, 1/2, a batch size
ZERO_RTOL = 1e-3  # |analytic| this small next to |numeric| counts as zero
CHANCE = 0.05  # a "where" pattern must be this unlikely to arise from randomly placed failures
BETTER = 10.0  # a candidate explains analytic only if it fits this much better than numeric


@dataclass
class _Case:
    a: np.ndarray  # analytic
    n: np.ndarray  # numeric, NaN where unchecked
    chk: np.ndarray  # checked elements
    fail: np.ndarray  # failing checked elements
    others: dict[str, np.ndarray] = field(default_factory=dict)
    slopes: np.ndarray | None = None  # (*shape, 2): one-sided slopes where an element sits at a kink, else NaN

    @property
    def n_fail(self) -> int:
        return int(self.fail.sum())

    @property
    def counted(self) -> str:
        """What a count of failing elements is out of, where not every element was measured alone (sets
        stopped on a sample, --max-elements): appended by the patterns that count."""
        measured, total = int(self.chk.sum()), int(self.chk.size)
        return f" [counted among the {measured} of {total} elements measured alone]" if measured < total else ""


def diagnose(
    analytic: np.ndarray,
    numeric: np.ndarray,
    failed: np.ndarray,
    others: dict[str, np.ndarray] | None = None,
    slopes: np.ndarray | None = None,
) -> str | None:
    """One line naming the pattern of a tensor's gradient error, or None.

    ``slopes`` (the tensor's shape plus a last axis of 2) holds the one-sided slopes of the
    elements found at a kink, NaN elsewhere.
    """
    n = np.asarray(numeric, dtype=np.float64)
    a = np.broadcast_to(np.asarray(analytic, dtype=np.float64), n.shape)
    chk = ~np.isnan(n)
    fail = np.broadcast_to(np.asarray(failed, dtype=bool), n.shape) & chk
    if not fail.any():
        return None
    others = {k: np.asarray(v, dtype=np.float64) for k, v in (others or {}).items()}
    case = _Case(a, n, chk, fail, others, None if slopes is None else np.asarray(slopes, dtype=np.float64))
    with np.errstate(all="ignore"):
        for pattern in PATTERNS:
            line = pattern(case)
            if line is not None:
                return line
    return None


# --- helpers ---------------------------------------------------------------


def _num(x: float) -> str:
    """2-3 significant digits: 2.00, 0.250, -1.50, 1.00e-06."""
    return f"{x:#.3g}".rstrip(".")


def _index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _is_zero(a: np.ndarray, n: np.ndarray) -> bool:
    """a is zero while n is not (relative to n's magnitude)."""
    top = float(np.max(np.abs(n), initial=0.0))
    return top > 0 and float(np.max(np.abs(a), initial=0.0)) <= ZERO_RTOL * top


def _explains(case: _Case, cand: np.ndarray, min_count: int = 2) -> bool:
    """Does ``cand`` (an array shaped like numeric) match analytic clearly better than numeric does?"""
    m = case.chk & ~np.isnan(cand)
    if m.sum() < min_count or not (m & case.fail).any():
        return False
    a, n, c = case.a[m], case.n[m], cand[m]
    scale = max(np.linalg.norm(a), np.linalg.norm(c))
    d_cand, d_num = np.linalg.norm(a - c), np.linalg.norm(a - n)
    return bool(scale > 0 and d_cand <= FIT_RTOL * scale and d_num > max(BETTER * d_cand, FIT_RTOL * scale))


def _near(x: float, target: float) -> bool:
    return abs(x - target) <= NICE_RTOL * abs(target)


def _batch_sizes(case: _Case) -> list[int]:
    """Candidate batch sizes: the leading dim of this tensor, then of the others."""
    sizes = []
    for shape in [case.n.shape] + [v.shape for v in case.others.values()]:
        if len(shape) and shape[0] >= 2 and shape[0] not in sizes:
            sizes.append(shape[0])
    return sizes


def _by_chance(f: int, inside: int, total: int) -> float:
    """Probability that f failures placed at random among ``total`` checked elements all land in ``inside`` of them."""
    p = 1.0
    for j in range(f):
        p *= max(inside - j, 0) / (total - j)
    return p


def _slices(case: _Case, axis: int):
    """(index, checked, failing) counts for each index along ``axis``."""
    other = tuple(i for i in range(case.n.ndim) if i != axis)
    return zip(range(case.n.shape[axis]), case.chk.sum(axis=other), case.fail.sum(axis=other))


# --- patterns, most specific first -----------------------------------------


def _nonfinite(case: _Case) -> str | None:
    bad = case.chk & ~np.isfinite(case.a)
    if not bad.any():
        return None
    first = np.argwhere(bad)[0]
    where = f" (first at {_index(first)})" if case.a.ndim else ""
    return f"analytic gradient has NaN/inf at {int(bad.sum())} checked element(s){where}{case.counted}"


def _outside_kinks(case: _Case) -> str | None:
    """Every failing element sits at a kink, and its analytic value is neither one-sided slope nor between them."""
    if case.slopes is None:
        return None
    at_kink = ~np.isnan(case.slopes[..., 0])
    if not (case.fail <= at_kink).all():
        return None
    lo_all, hi_all = np.minimum(case.slopes[..., 0], case.slopes[..., 1]), np.maximum(case.slopes[..., 0], case.slopes[..., 1])
    margin = 1e-6 * np.maximum(1.0, np.maximum(np.abs(lo_all), np.abs(hi_all)))
    outside = case.fail & ((case.a < lo_all - margin) | (case.a > hi_all + margin))
    if not (outside == case.fail).all():
        return None  # some are within their slopes: they failed a joint (tie) rule, which says so itself
    first = tuple(np.argwhere(case.fail)[0])
    lo, hi = case.slopes[first]
    return (
        f"{case.n_fail} failing element(s) sit at a kink (a non-differentiable point), and the analytic value lies outside "
        f"the one-sided slopes there (e.g. {_index(first)}: analytic {_num(case.a[first])}, slopes {_num(lo)} and {_num(hi)}): "
        f"the backward's value at the kink is no one-sided derivative{case.counted}"
    )


def _corners(case: _Case) -> str | None:
    """All failures lie at corners: within k of an end along at least two axes (not the leading one of 3+), the rest clean."""
    axes = [ax for ax in (range(1, case.n.ndim) if case.n.ndim >= 3 else range(case.n.ndim)) if case.n.shape[ax] >= 6]
    if len(axes) < 2 or case.n_fail < 2:
        return None
    where = np.argwhere(case.fail)
    for k in (1, 2):
        near = [(where[:, ax] < k) | (where[:, ax] >= case.n.shape[ax] - k) for ax in axes]
        if not (np.sum(near, axis=0) >= 2).all():
            continue
        grids = np.meshgrid(*[np.arange(s) for s in case.n.shape], indexing="ij")
        corner_mask = np.sum([(grids[ax] < k) | (grids[ax] >= case.n.shape[ax] - k) for ax in axes], axis=0) >= 2
        inside, total = int((case.chk & corner_mask).sum()), int(case.chk.sum())
        if _by_chance(case.n_fail, inside, total) <= CHANCE:
            corners = len({tuple(int(row[ax] >= case.n.shape[ax] - k) for ax in axes) for row in where})
            return f"errors only at the corners ({case.n_fail} element(s) in {corners} corner(s)): a boundary case of two axes at once?{case.counted}"
    return None


def _all_zero(case: _Case) -> str | None:
    if _is_zero(case.a[case.chk], case.n[case.chk]):
        return "analytic gradient is zero: the backward never returns a gradient for this tensor (returns None or zeros?)"
    return None


def _constant_ratio(case: _Case) -> str | None:
    a, n = case.a[case.chk], case.n[case.chk]
    nn = float(n @ n)
    if nn == 0:
        return None
    c = float(a @ n) / nn
    if c == 0 or not _explains(case, c * case.n, min_count=1):
        return None
    big = np.abs(n) > 0.1 * np.max(np.abs(n))
    if np.any(np.abs(a[big] - c * n[big]) > ELEMENT_RTOL * np.abs(c * n[big])):
        return None
    sign = "sign error, and " if c < 0 else ""
    for b in _batch_sizes(case):
        if _near(abs(c), 1 / b):
            return f"analytic ≈ {_num(c)} × numeric: {sign}divided by the batch size ({b})?"
        if _near(abs(c), b):
            return f"analytic ≈ {_num(c)} × numeric: {sign}multiplied by the batch size ({b})?"
    if _near(c, -1):
        return "sign error: analytic ≈ -1 × numeric"
    # Few elements agree on some ratio by chance: ask for more of them unless the ratio is a telling one.
    telling = _near(abs(c), 2) or _near(abs(c), 0.5)
    if a.size > 1 and (case.n_fail < 2 or big.sum() < (2 if telling else 3)) or a.size == 1 and not telling:
        return None
    if c < 0:
        return f"analytic ≈ {_num(c)} × numeric (sign error and a constant factor)"
    return f"analytic ≈ {_num(c)} × numeric (scaled by a constant factor)"


def _transposed(case: _Case) -> str | None:
    shape = case.n.shape
    if len(shape) < 2 or shape[-1] != shape[-2] or shape[-1] < 2:
        return None
    if _explains(case, np.swapaxes(case.n, -1, -2)):
        return "analytic matches the transpose of the numeric gradient"
    return None


def _swapped(case: _Case) -> str | None:
    for name, other in case.others.items():
        # One element is enough here: matching another tensor's gradient to FIT_RTOL is no coincidence.
        if other.shape == case.n.shape and _explains(case, other, min_count=1):
            return f"analytic matches the numeric gradient of {name} (gradients swapped?)"
    return None


def _flipped(case: _Case) -> str | None:
    axes = [i for i, s in enumerate(case.n.shape) if s >= 2]
    for k in (1, 2):
        for group in combinations(axes, k):
            if _explains(case, np.flip(case.n, axis=group)):
                where = f"axis {group[0]}" if k == 1 else f"axes {group[0]} and {group[1]}"
                return f"analytic matches the numeric gradient reversed along {where} (convolution instead of correlation?)"
    return None


def _confined(case: _Case) -> str | None:
    """All failures share one index along some axes, and fill most of that block."""
    if case.n_fail < 2:
        return None
    where = np.argwhere(case.fail)
    fixed = [
        (ax, int(where[0, ax]))
        for ax in range(case.n.ndim)
        if case.n.shape[ax] >= 2 and (where[:, ax] == where[0, ax]).all()
    ]
    if not fixed:
        return None
    block = np.zeros(case.n.shape, dtype=bool)
    index = [slice(None)] * case.n.ndim
    for ax, i in fixed:
        index[ax] = i
    block[tuple(index)] = True
    inside, total = int((case.chk & block).sum()), int(case.chk.sum())
    if inside == total or 2 * case.n_fail < inside or _by_chance(case.n_fail, inside, total) > CHANCE:
        return None
    return "errors confined to " + " and ".join(f"axis {ax} index {i}" for ax, i in fixed)


def _borders(case: _Case) -> str | None:
    """All failures lie within k of either end of an axis (not the leading, batch-like, axis), and the interior is clean."""
    if case.n_fail < 2:
        return None
    where = np.argwhere(case.fail)
    axes = [0] if case.n.ndim == 1 else range(1, case.n.ndim)
    for k in (1, 2):
        for ax in axes:
            size = case.n.shape[ax]
            if size - 2 * k <= k:  # the interior must be wider than the border band
                continue
            idx = where[:, ax]
            if not np.all((idx < k) | (idx >= size - k)):
                continue
            interior = int(case.chk.take(range(k, size - k), axis=ax).sum())
            total = int(case.chk.sum())
            if interior and _by_chance(case.n_fail, total - interior, total) <= CHANCE:
                hit = ", ".join(str(int(i)) for i in np.unique(idx))
                return f"errors only at the borders of axis {ax} (index {hit} of {size}): padding / off-by-one?"
    return None


def _one_right(case: _Case) -> str | None:
    """Every index but one along an axis mostly fails; that one is clean (and unlikely to be so by chance)."""
    for ax, size in enumerate(case.n.shape):
        if size < 3:
            continue
        counts = [(i, int(c), int(f)) for i, c, f in _slices(case, ax) if c > 0]
        clean = [(i, c) for i, c, f in counts if f == 0]
        if len(clean) != 1 or len(counts) != size or any(2 * f < c for _, c, f in counts if f):
            continue
        (i, m), = clean
        total = int(case.chk.sum())
        if size * _by_chance(case.n_fail, total - m, total) <= CHANCE:  # any slice could have been the clean one
            hint = " (batch reduction / loop bug?)" if ax == 0 else ""
            return f"only axis {ax} index {i} is right{hint}"
    return None


def _zero_where_failing(case: _Case) -> str | None:
    if case.n_fail >= 2 and _is_zero(case.a[case.fail], case.n[case.fail]):
        return f"analytic gradient is zero on all {case.n_fail} failing elements (a term never written?){case.counted}"
    return None


def _single(case: _Case) -> str | None:
    if case.n_fail == 1 and case.chk.sum() > 1:
        return f"a single element is wrong: {_index(np.argwhere(case.fail)[0])}"
    return None


PATTERNS = (
    _nonfinite,
    _outside_kinks,
    _all_zero,
    _constant_ratio,
    _transposed,
    _swapped,
    _flipped,
    _confined,
    _corners,
    _borders,
    _one_right,
    _zero_where_failing,
    _single,
)

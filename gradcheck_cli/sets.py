"""Set testing: every element of a large tensor covered in a few forwards, the wrong ones found by bisection.

Element by element costs two forwards an element, and where outputs depend densely on
a tensor (a normalisation, attention, a long kernel) grouping cannot help. For a set S
of a tensor's elements (a contiguous run of flat indices) and a random direction v on S
(v_i = +-1, fair and independent), the central difference of a loss along v -- the layer
at x + h v and at x - h v, the outputs differenced output by output in float64 like every
other difference (:func:`fd.loss_differences`) -- measures sum_i v_i n_i, the directional
derivative, in two forwards; one dot product gives the backward's sum_i v_i a_i.

**The test**, per loss and direction, at steps h and 2h: e(h) = D(h) - A(h), the numeric
minus the analytic directional derivative (A weighted by the steps actually taken).

* E = (4 e(h) - e(2h)) / 3 removes the h^2 truncation error (Richardson); that error,
  tau = |e(h) - e(2h)| / 3, is kept as an allowance.
* sigma, the noise of E, comes from the noise model of single elements: the rounding of
  every output that moved (fd.py), plus, for the analytic dot product, ANALYTIC_ULPS ulps
  of every a_i in the layer's dtype and the spread of two backwards (both summed over S).
* T = atol + rtol * max(min_S |a_i|, REL_FLOOR * S): the per-element tolerance of the
  set's strictest element (every element's own tolerance is at least T).

The set passes when |E| <= B = T + NOISE_SIGMAS * sigma + tau for both losses and all
DIRECTIONS directions. It fails -- which only means it is split, never a verdict -- when
|E| > B, when tau alone exceeds T + 4 sigma (a kink between h and 2h: its allowance could
hide a bug), when the noise (4 sigma + tau) is as large as the smallest gradient of the set
(floored at REL_FLOOR times the largest, as the per-element NOISE rule is: such elements
would be NOISE alone, so the set cannot vouch for them), or when anything is not finite.
Before any forward, a set whose analytic rounding alone, summed over it, exceeds the
tolerance of a typical element (rms |a|) is split ("too wide": about 276,000 elements in
float32, never in float64; float16 and bfloat16 leave no room). At the first failure that
rounding noise could explain, the noise is measured along a few directions of that set
(calibrate.py) and every later test of the tensor uses it.

**What a cleared set guarantees.** Let e_i = a_i - n_i be the elements' errors and j the
worst. For each direction, whatever the other signs, one of v_j = +1 and v_j = -1 gives
|sum_i v_i e_i| >= |e_j|: with probability at least 1/2 the sum is at least the worst
error. A cleared direction has |sum v_i e_i| <= |E| + (numeric error of E) <= 2 B. So a set
in which some element is wrong by more than 2 B passes one direction with probability at
most 1/2 and all DIRECTIONS with at most 2^-DIRECTIONS (1.5e-5 for 16); a set with one
wrong element cannot pass at all (the sum is exactly +-e_j). Cleared: every element's
|a - n| <= 2 B -- at most twice what the per-element rule allows the set's strictest
element, with the set's finite-difference noise (which covers every output the set moved,
so at least each element's own) in place of the element's. Both the bound and the
probability are reported.

Failing sets are split and the wrong elements found by :mod:`.bisection`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping

import torch

from . import calibrate, fd
from .numeric import NumericSide
from .rules import NOISE_SIGMAS, REL_FLOOR, largest
from .subject import Leaf

# Independent random directions a set must clear: a set hiding a wrong element passes with
# probability at most 2**-DIRECTIONS.
DIRECTIONS = 16
# Rounding of each analytic element, in ulps of the layer's dtype (fd.rounding_error's factor
# for outputs): summed over a large set it is what a correct float32 backward differs by.
ANALYTIC_ULPS = 8.0
# A difference at step h this many times its allowance fails the set at once (no 2h step).
QUICK_FAIL = 3.0
# Moved inputs and outputs held at once while testing directions (float64, both sides).
BLOCK_BYTES = 32 << 20




@dataclass(frozen=True)
class LossSide:
    """What the set rule needs of one loss: the analytic gradient and the per-element rule's numbers."""

    analytic: torch.Tensor  # flat float64, the whole tensor
    spread: torch.Tensor  # flat float64: what a_i may be off by without a bug (nondeterminism, the backward's rounding)
    rtol: float
    atol: float
    scale: float  # the tensor's largest gradient (REL_FLOOR * scale floors the tolerance)
    layer_scale: float  # the largest gradient of any checked tensor (for the NOISE rule)
    unit: float  # unit roundoff of the layer's dtype (the analytic side's)


def sides_of(
    grads: Mapping[str, torch.Tensor], allowance: Mapping[str, torch.Tensor], rtol: float, atol: float, layer_scale: Mapping[str, float], unit: float
) -> dict[str, LossSide]:
    """The set rule's view of one tensor: per loss, its flattened gradient and the per-element rule's numbers
    (``allowance``: per loss, what each analytic value may be off by without a bug, Analytic.allowance)."""
    sides = {}
    for loss, grad in grads.items():
        a = grad.reshape(-1)
        scale = largest(a)
        sides[loss] = LossSide(a, allowance[loss].reshape(-1), rtol, atol, scale, layer_scale[loss], unit)
    return sides


@dataclass(frozen=True)
class SetTest:
    """One set's test: passed, how many directions ran, why it failed, and (if passed) what it proved."""

    passed: bool
    directions: int
    reason: str = ""  # differs | truncation | inconclusive | too wide | not finite
    bound: Mapping[str, float] = field(default_factory=dict)  # per loss: every element's |a - n| <= this
    rel: Mapping[str, float] = field(default_factory=dict)  # per loss: largest |E| / max(|A|, floor)
    abs: Mapping[str, float] = field(default_factory=dict)  # per loss: largest |E|
    noise: Mapping[str, float] = field(default_factory=dict)  # inconclusive: per loss, the noise allowance seen


def _analytic_noise(w: torch.Tensor, a: torch.Tensor, spread: torch.Tensor, unit: float) -> torch.Tensor:
    """Per direction (a row of ``w``): the noise of sum_i w_i a_i -- ANALYTIC_ULPS ulps of every a_i
    and the spread of two backwards, independent from element to element (in quadrature)."""
    per_element = (ANALYTIC_ULPS * unit * a).square() + spread.square()
    return (w.square() @ per_element).sqrt()


def widest(rtol: float, unit: float) -> float:
    """Most elements a set may hold before its analytic rounding outgrows a typical element's tolerance.

    4 * ANALYTIC_ULPS * unit * sqrt(k) * rms|a| <= rtol * rms|a|: inf in float64 for any
    realistic k, about 276,000 in float32, below one in float16 and bfloat16 (their own
    rounding leaves no room: sets cannot help there).
    """
    per = NOISE_SIGMAS * ANALYTIC_ULPS * unit
    return math.inf if per == 0 else (rtol / per) ** 2


class SetTester:
    """Tests sets (contiguous runs [lo, hi) of a leaf's flat indices) along random directions."""

    def __init__(self, numeric: NumericSide, leaf: Leaf, sides: Mapping[str, LossSide], seed: int, directions: int = DIRECTIONS) -> None:
        self.numeric, self.leaf, self.sides, self.seed, self.directions = numeric, leaf, dict(sides), seed, directions
        self.n = numeric.evaluator.tensor(leaf).numel()
        self.m = numeric.base.y.numel()
        self.tests = 0
        self.directions_run = 0
        self.forwards = 0
        self.noise_by: dict[str, float] | None = None  # measured noise over the model's, once a failure asked

    def _block(self, k: int) -> int:
        """Directions evaluated together on a set of k elements (moved values, steps and outputs fit BLOCK_BYTES)."""
        return max(1, BLOCK_BYTES // (64 * k + 16 * self.m + 16 * self.n))

    def _signs(self, g: int, k: int, number: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + number) % (2**63 - 1))
        return (torch.randint(0, 2, (g, k), generator=gen, dtype=torch.int8) * 2 - 1).to(self.numeric.placement.device)

    def along(self, lo: int, hi: int, signs: torch.Tensor, step: float) -> dict[str, tuple[torch.Tensor, ...]]:
        """Per loss, for each direction (a row of ``signs``): (numeric D, its noise, analytic A, A's noise)."""
        numeric, ev = self.numeric, self.numeric.evaluator
        f64, device = numeric.placement.f64, numeric.placement.device
        g, k = signs.shape
        index = torch.arange(lo, hi, device=device)
        _, plus, minus, hp, hm = ev.steps(self.leaf, index, step)
        positions = torch.arange(k, device=device).expand(g, k)
        yp, ym = (f64(t) for t in numeric.guard("forward", ev.groups, self.leaf, index, plus, minus, [(positions, signs)]))
        self.forwards += 2 * g
        h = torch.full((g,), step, dtype=torch.float64, device=yp.device)
        diffs = fd.loss_differences(yp, ym, numeric.base, h, h)
        # The backward's directional derivative along the steps actually taken (x + h rounds).
        w = f64(signs) * ((f64(hp) + f64(hm)) / (2 * step))[None]
        out = {}
        for loss, side in self.sides.items():
            a = side.analytic[lo:hi]
            out[loss] = (diffs[loss].central, diffs[loss].noise, w @ a, _analytic_noise(w, a, side.spread[lo:hi], side.unit))
        return out

    def _scaled(self, got: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, tuple[torch.Tensor, ...]]:
        """The finite-difference noise multiplied by the measured factor (if one was measured)."""
        if not self.noise_by:
            return got
        return {loss: (d, noise * self.noise_by[loss], a, a_noise) for loss, (d, noise, a, a_noise) in got.items()}

    def probe(self) -> tuple[float, bool]:
        """One direction over the whole tensor at step h: its wall time, and whether the set would be
        inconclusive (its noise as large as its smallest gradient, see :meth:`test`)."""
        started = time.perf_counter()
        got = self.along(0, self.n, self._signs(1, self.n, -1), self.numeric.steps.eps)
        seconds = self.numeric.placement.seconds_since(started)
        noisy = False
        for loss, (_, noise, _, a_noise) in got.items():
            side = self.sides[loss]
            smallest = max(float(side.analytic.abs().min()), REL_FLOOR * max(side.scale, side.layer_scale))
            allowance = NOISE_SIGMAS * float((noise + a_noise).max())
            noisy |= allowance >= smallest and allowance > side.atol
        return seconds, noisy

    def test(self, lo: int, hi: int) -> SetTest:
        """Does every element of [lo, hi) pass, as far as DIRECTIONS random directions can tell?

        At the first failure that rounding noise could explain, the noise is measured along
        CALIBRATION_POINTS directions of that set (see calibrate.py); from then on the model's
        noise is multiplied by what was measured, and that test is run again.
        """
        t = self._test(lo, hi)
        if not t.passed and t.reason in ("differs", "truncation") and self.noise_by is None:
            self.noise_by = self._calibrated(lo, hi)
            if any(f > 1.0 for f in self.noise_by.values()):
                t = self._test(lo, hi)
        return t

    def _calibrated(self, lo: int, hi: int) -> dict[str, float]:
        """Per loss: the measured rounding noise of directional differences on [lo, hi) over the model's.

        Along CALIBRATION_POINTS fresh directions, e at h/2, h/4 and h/8 against the Richardson
        value from h and 2h, scaled to step h (see calibrate.own_factor); the root mean square
        over the directions, at least 1."""
        k, h = hi - lo, self.numeric.steps.eps
        ratios: dict[str, list[torch.Tensor]] = {loss: [] for loss in self.sides}
        done = 0
        while done < calibrate.CALIBRATION_POINTS:
            g = min(calibrate.CALIBRATION_POINTS - done, self._block(k))
            signs = self._signs(g, k, -2 - done)
            at = {f: self.along(lo, hi, signs, h * f) for f in (1.0, 2.0, 0.5, *calibrate.SMALL_STEPS)}
            for loss in self.sides:
                e = {f: got[loss][0] - got[loss][2] for f, got in at.items()}
                coarse = e[1.0] + (e[1.0] - e[2.0]) / 3
                samples = [(e[f], f) for f in (0.5, *calibrate.SMALL_STEPS)]
                ratios[loss].append(calibrate.own_factor(samples, coarse, at[1.0][loss][1]))
            done += g
        return {loss: calibrate.factor(torch.cat(r)) for loss, r in ratios.items()}

    def _test(self, lo: int, hi: int) -> SetTest:
        self.tests += 1
        number = self.tests * 64
        k = hi - lo
        h = self.numeric.steps.eps
        strictest, smallest = {}, {}
        for loss, side in self.sides.items():
            a = side.analytic[lo:hi].abs()
            if not bool(torch.isfinite(a).all()):
                return SetTest(False, 0, "not finite")  # a NaN/Inf backward: its elements FAIL alone
            # The analytic side's own rounding, summed over the set, may use at most the tolerance of
            # a typical element (rms |a|): a wider set is split before anything is evaluated.
            ones = torch.ones(1, k, dtype=torch.float64, device=a.device)
            rounding = float(_analytic_noise(ones, a, side.spread[lo:hi], side.unit)[0])
            if NOISE_SIGMAS * rounding > side.atol + side.rtol * float(a.square().mean().sqrt()):
                return SetTest(False, 0, "too wide")
            strictest[loss] = side.atol + side.rtol * max(float(a.min()), REL_FLOOR * side.scale)
            # The per-element NOISE rule's magnitude for the set's smallest gradient.
            smallest[loss] = max(float(a.min()), REL_FLOOR * max(side.scale, side.layer_scale))
        bound = {loss: 0.0 for loss in self.sides}
        noise_seen = {loss: 0.0 for loss in self.sides}
        rel = {loss: 0.0 for loss in self.sides}
        absolute = {loss: 0.0 for loss in self.sides}
        done = 0
        while done < self.directions:
            g = 1 if done == 0 else min(self.directions - done, self._block(k))  # the first alone: most bugs show there
            signs = self._signs(g, k, number + done)
            first = self._scaled(self.along(lo, hi, signs, h))
            self.directions_run += g
            for loss, (d, noise, a, a_noise) in first.items():
                e = d - a
                if not bool(torch.isfinite(e).all()):
                    return SetTest(False, done + g, "not finite")
                if bool((e.abs() > QUICK_FAIL * (strictest[loss] + NOISE_SIGMAS * (noise + a_noise))).any()):
                    return SetTest(False, done + g, "differs")
            second = self._scaled(self.along(lo, hi, signs, 2 * h))
            for loss, (d2, noise2, a2, a_noise2) in second.items():
                d, noise, a, a_noise = first[loss]
                e1, e2 = d - a, d2 - a2
                err = (4 * e1 - e2) / 3
                tau = (e1 - e2).abs() / 3
                sigma = (16 * noise.square() + noise2.square()).sqrt() / 3 + torch.maximum(a_noise, a_noise2)
                allowance = NOISE_SIGMAS * sigma + tau
                if not bool(torch.isfinite(err).all() & torch.isfinite(allowance).all()):
                    return SetTest(False, done + g, "not finite")
                side = self.sides[loss]
                noise_seen[loss] = max(noise_seen[loss], float(allowance.max()))
                if bool(((allowance >= smallest[loss]) & (allowance > side.atol)).any()):
                    return SetTest(False, done + g, "inconclusive", noise=noise_seen)
                if bool((tau > strictest[loss] + NOISE_SIGMAS * sigma).any()):
                    return SetTest(False, done + g, "truncation")
                limit = strictest[loss] + allowance
                if bool((err.abs() > limit).any()):
                    return SetTest(False, done + g, "differs")
                bound[loss] = max(bound[loss], 2 * float(limit.max()))
                floor = REL_FLOOR * side.scale * math.sqrt(k)
                rel[loss] = max(rel[loss], float((err.abs() / torch.clamp(torch.maximum(a.abs(), d.abs()), min=max(floor, 1e-300))).max()))
                absolute[loss] = max(absolute[loss], float(err.abs().max()))
            done += g
        return SetTest(True, done, "", bound, rel, absolute)

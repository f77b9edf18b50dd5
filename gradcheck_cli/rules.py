"""The verdict rules: from an element's analytic value and its finite differences to a verdict.

Pure functions of tensors (see :mod:`.fd` for the differences, :mod:`.verdicts` for
the codes). An element PASSes when |a - n| <= atol + rtol * max(|a|, |n|, REL_FLOOR * S)
+ NOISE_SIGMAS * noise; what looks wrong at step h is confirmed at 2h and h/2 before it
FAILs; a non-differentiable point is a KINK when the analytic value lies between the
one-sided slopes; a difference lost in rounding noise is NOISE, never PASS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .fd import Differences
from .verdicts import FAIL, KINK, NOISE, PASS

# How many estimated standard deviations of finite-difference noise we allow.
NOISE_SIGMAS = 4.0
# Below this fraction of the tensor's largest gradient, relative error is measured
# against that fraction instead (pure relative error explodes for tiny gradients).
REL_FLOOR = 1e-3


def largest(*tensors: torch.Tensor) -> float:
    """The largest finite magnitude among the tensors (0 for none): a NaN from a broken backward sets no scale."""
    return max((float(t.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs().max()) for t in tensors if t.numel()), default=0.0)


def tolerance(analytic: torch.Tensor, numeric: torch.Tensor, scale: torch.Tensor | float, rtol: float, atol: float) -> torch.Tensor:
    """atol + rtol * max(|a|, |n|, REL_FLOOR * scale) -- symmetric in a and n."""
    mag = torch.maximum(analytic.abs(), numeric.abs())
    mag = torch.clamp(mag, min=float(REL_FLOOR * scale))
    return atol + rtol * mag


def relative_error(analytic: torch.Tensor, numeric: torch.Tensor, scale: float) -> torch.Tensor:
    """|a - n| / max(|a|, |n|, floor); the floor keeps it finite for tiny gradients."""
    denom = torch.maximum(analytic.abs(), numeric.abs())
    floor = max(REL_FLOOR * scale, torch.finfo(torch.float64).tiny)
    return (analytic - numeric).abs() / torch.clamp(denom, min=floor)


@dataclass(frozen=True)
class Confirmed:
    """What the confirmation says of each flagged element."""

    verdict: torch.Tensor
    numeric: torch.Tensor  # the best numeric estimate
    noise: torch.Tensor
    slopes: torch.Tensor  # (B, 2): the one-sided slopes (low, high) where the element sits at a kink, else NaN


@dataclass(frozen=True)
class Judge:
    """The rules for one tensor and one loss.

    ``scale`` is the largest gradient of this tensor, ``layer_scale`` the largest of any
    checked tensor: noise far below the layer's gradients is no reason to call an element
    inconclusive (an unused input has gradient 0 and noise 1e-10).
    """

    rtol: float
    atol: float
    scale: float
    layer_scale: float = 0.0

    def within(self, analytic: torch.Tensor, numeric: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """PASS where |a - n| <= tolerance + NOISE_SIGMAS * noise, else FAIL."""
        allowed = tolerance(analytic, numeric, self.scale, self.rtol, self.atol) + NOISE_SIGMAS * noise
        return torch.where((analytic - numeric).abs() <= allowed, PASS, FAIL)

    def first_pass(self, analytic: torch.Tensor, d: Differences, spread: torch.Tensor | float) -> torch.Tensor:
        """Cheap verdict codes from one step.  FAIL here means 'confirm' (see :meth:`confirm`)."""
        noise = d.noise + spread
        verdict = self.within(analytic, d.central, noise)
        return _broken_fails(analytic, self._noise_or_pass(verdict, analytic, d.central, noise))

    def confirm(self, analytic: torch.Tensor, d1: Differences, d2: Differences, dh: Differences, spread: torch.Tensor | float):
        """Second look at elements the first pass flagged, with steps 2h (``d2``) and h/2 (``dh``).

        * Richardson extrapolation removes the h^2 truncation error twice, from
          (h, h/2) and from (2h, h); the better one is the numeric value and the
          gap between the two is its error estimate.  A truncation-dominated point
          (strong curvature within the step) then no longer hides a real bug,
          while a rounding-dominated one shows its noise in the gap.
        * A kink (non-differentiable point inside the step) shows as one-sided slopes
          that disagree by an amount that does NOT shrink with the step: for a smooth
          function right - left ~ h*f'' doubles from h to 2h, across a kink it stays.
          An element is KINK only if the analytic value lies between the one-sided
          slopes (a valid one-sided derivative or subgradient); otherwise it FAILs.

        Returns a :class:`Confirmed`.
        """
        numeric, noise, wild = _extrapolated(d1, d2, dh, spread)
        verdict = self.within(analytic, numeric, noise)
        jump1 = (d1.right - d1.left).abs()
        jump2 = (d2.right - d2.left).abs()
        lo, hi = torch.minimum(d1.right, d1.left), torch.maximum(d1.right, d1.left)
        # One-sided differences are off by O(h) (h f''/2): that much, seen as the change from h to 2h, is allowed too.
        truncation = torch.maximum((d2.right - d1.right).abs(), (d2.left - d1.left).abs()).nan_to_num(nan=0.0)
        slope_allowed = tolerance(analytic, hi.abs(), self.scale, self.rtol, self.atol) + NOISE_SIGMAS * 2 * (d1.noise + spread) + truncation
        at_kink = (jump1 > slope_allowed) & (jump2 < 1.5 * jump1)  # the slopes' jump does not shrink with the step
        is_kink = (verdict == FAIL) & at_kink & (analytic >= lo - slope_allowed) & (analytic <= hi + slope_allowed)
        verdict = torch.where(is_kink, torch.full_like(verdict, KINK), verdict)
        verdict = self._noise_or_pass(verdict, analytic, numeric, noise)
        # No finite estimate at all (every step left the domain): inconclusive, never FAIL.
        verdict = torch.where(torch.isfinite(noise), verdict, torch.full_like(verdict, NOISE))
        nan = torch.full_like(lo, float("nan"))
        slopes = torch.stack([torch.where(at_kink, lo, nan), torch.where(at_kink, hi, nan)], dim=-1)
        return Confirmed(_broken_fails(analytic, verdict), numeric, noise, slopes)

    def against(self, analytic: torch.Tensor, exact: torch.Tensor, allowance: torch.Tensor) -> torch.Tensor:
        """Verdicts against an oracle with no step (a reference implementation): PASS within the tolerance
        and the analytic side's own rounding ``allowance``, else FAIL (NOISE where that rounding is as large as the value)."""
        verdict = self.within(analytic, exact, allowance)
        return _broken_fails(analytic, self._noise_or_pass(verdict, analytic, exact, allowance))

    def _noise_or_pass(self, verdict, analytic, numeric, noise):
        """A passing element whose noise is as large as the gradient itself is NOISE, not PASS."""
        numeric = torch.nan_to_num(numeric)
        floor = REL_FLOOR * max(self.scale, self.layer_scale)
        mag = torch.maximum(torch.maximum(analytic.abs(), numeric.abs()), torch.full_like(numeric, floor))
        inconclusive = (NOISE_SIGMAS * noise >= mag) & (NOISE_SIGMAS * noise > self.atol)
        return torch.where((verdict == PASS) & inconclusive, torch.full_like(verdict, NOISE), verdict)


def _extrapolated(d1: Differences, d2: Differences, dh: Differences, spread):
    """The Richardson-extrapolated numeric value, its noise, and where the steps disagree wildly."""
    fine = dh.central + (dh.central - d1.central) / 3.0
    coarse = d1.central + (d1.central - d2.central) / 3.0
    inf = torch.full_like(fine, float("inf"))
    # A step that leaves the layer's domain gives NaN/Inf: use the steps that stayed finite.
    fine_ok = torch.isfinite(fine)
    both_ok = fine_ok & torch.isfinite(coarse)
    gap = torch.where(both_ok, (fine - coarse).abs(), torch.where(fine_ok, (dh.central - d1.central).abs(), inf))
    rounding = dh.noise + spread  # the h/2 difference has the largest rounding noise of the three
    # Where the steps disagree wildly (a kink inside the wider step), extrapolation is
    # meaningless: fall back to the plain central difference at h.
    wild = both_ok & (gap > 0.5 * d1.central.abs() + NOISE_SIGMAS * rounding)
    numeric = torch.where(wild | ~fine_ok, d1.central, fine)
    numeric = torch.where(torch.isfinite(numeric), numeric, dh.central)
    noise = rounding + torch.where(wild, (d1.central - d2.central).abs(), gap) / NOISE_SIGMAS
    noise = torch.where(torch.isfinite(numeric), noise, inf)
    return numeric, noise, wild


def _broken_fails(analytic: torch.Tensor, verdict: torch.Tensor) -> torch.Tensor:
    """A NaN or infinite analytic gradient is wrong whatever the finite differences say: FAIL."""
    return torch.where(torch.isfinite(analytic), verdict, torch.full_like(verdict, FAIL))


def combine(verdicts: list[torch.Tensor]) -> torch.Tensor:
    """One verdict per element across the losses: FAIL if any failed, else KINK, else PASS, else NOISE."""
    stacked = torch.stack(verdicts)
    out = torch.full_like(verdicts[0], NOISE)
    out = torch.where((stacked == PASS).any(0), PASS, out)
    out = torch.where((stacked == KINK).any(0), KINK, out)
    return torch.where((stacked == FAIL).any(0), FAIL, out)

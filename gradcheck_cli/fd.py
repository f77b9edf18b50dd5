"""The finite-difference kernel: pure functions of already-evaluated outputs.

For one checked element x_i and step h, the caller evaluates the layer at
x_i + h (outputs ``yp``), x_i - h (``ym``) and once at the base point (``y0``).
Two scalar losses are differentiated from those same outputs:

* ``l2``:       L = 1/2 sum y^2.  Its change is formed as sum (y+ - y-)(y+ + y-)/2
  on float64 copies of the outputs -- never as the difference of two whole
  losses, which loses every digit the outputs share.
* ``weighted``: L = sum w*y with fixed random weights |w| in [0.5, 1.5].  Unlike
  1/2 sum y^2 it does not weight an output by |y|, so a backward that is wrong
  only where y ~ 0 cannot hide.

Everything works on a batch of elements at once: ``yp``/``ym`` are (B, M)
float64 tensors (M = all floating outputs, flattened and concatenated) and
every result is a length-B tensor, on whatever device the outputs live.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSSES = ("l2", "weighted")

from .verdicts import FAIL, KINK, NOISE, PASS, UNCHECKED, VERDICT_NAMES  # noqa: F401  (verdict codes stored per element)

# How many estimated standard deviations of finite-difference noise we allow.
NOISE_SIGMAS = 4.0
# Below this fraction of the tensor's largest gradient, relative error is measured
# against that fraction instead (pure relative error explodes for tiny gradients).
REL_FLOOR = 1e-3


@dataclass
class Differences:
    """Per-element slopes of one loss, from one step size (all length-B float64)."""

    central: torch.Tensor
    right: torch.Tensor
    left: torch.Tensor
    noise: torch.Tensor  # one standard deviation of the rounding error of ``central``


def loss_differences(
    yp: torch.Tensor,
    ym: torch.Tensor,
    y0: torch.Tensor,
    hp: torch.Tensor,
    hm: torch.Tensor,
    weights: torch.Tensor,
    out_err: torch.Tensor,
    ulp: torch.Tensor,
) -> dict[str, Differences]:
    """Central and one-sided slopes of both losses, with a rounding-noise estimate.

    ``hp``/``hm`` are the steps actually taken (x+h)-x and x-(x-h), which differ
    from h in low precision.  ``out_err`` is the estimated absolute rounding
    error of each output (M,) and ``ulp`` its unit in the last place in the
    dtype it was computed in.  Outputs that did not change between the two
    evaluations contribute only the sub-ulp change they may have hidden.
    """
    y0 = y0.double()
    dp = yp.double() - y0  # exact in float64 for float32 outputs
    dm = y0 - ym.double()
    hp = hp.double()
    hm = hm.double()
    w = weights.double()
    # Every sum over the outputs is a matrix product with a few columns (no B x M
    # temporaries beyond dp, dm and the mask): (y+ + y0)(y+ - y0)/2 = dp*dp/2 + y0*dp,
    # and likewise for y-.
    by = torch.stack([y0, w], dim=1)  # (M, 2)
    plus, minus = dp @ by, dm @ by
    l2_plus = 0.5 * torch.einsum("bm,bm->b", dp, dp) + plus[:, 0]
    l2_minus = minus[:, 0] - 0.5 * torch.einsum("bm,bm->b", dm, dm)

    # Noise variances. An output that changed carries its rounding error (independent at
    # y+ and y-); one that did not move may still hide a sub-ulp change (uniform in
    # +-ulp/2, variance ulp^2/12). Outputs move little, so y+ ~ y- ~ y0 in the weights.
    changed = (yp != ym).double()
    err2 = out_err.double().square()
    hidden2 = ulp.double().square() / 12.0
    var = changed @ (2.0 * torch.stack([y0.square(), w.square()], dim=1) * (err2 - hidden2)[:, None])  # no host sync
    return _slopes(l2_plus, l2_minus, plus[:, 1], minus[:, 1], var[:, 0], var[:, 1], y0, w, hidden2, hp, hm)


def _slopes(l2_plus, l2_minus, w_plus, w_minus, l2_var, w_var, y0, w, hidden2, hp, hm) -> dict[str, Differences]:
    """Both losses' slopes from the summed loss changes over the steps actually taken.

    The ``*_var`` sums cover the outputs that changed; every output may also hide
    a sub-ulp change, which is added here.
    """
    span = hp + hm
    l2_noise = (l2_var + (2.0 * y0.square() * hidden2).sum()).clamp(min=0.0).sqrt() / span
    w_noise = (w_var + (2.0 * w.square() * hidden2).sum()).clamp(min=0.0).sqrt() / span
    return {
        "l2": Differences((l2_plus + l2_minus) / span, l2_plus / hp, l2_minus / hm, l2_noise),
        "weighted": Differences((w_plus + w_minus) / span, w_plus / hp, w_minus / hm, w_noise),
    }


def attributed_differences(
    parts,
    n: int,
    y0: torch.Tensor,
    hp: torch.Tensor,
    hm: torch.Tensor,
    weights: torch.Tensor,
    out_err: torch.Tensor,
    ulp: torch.Tensor,
) -> dict[str, Differences]:
    """:func:`loss_differences` for n elements whose outputs were moved in groups.

    ``parts`` yields ``(members, owner, yp, ym)`` for C groups of elements moved
    together: ``members`` (C, k) their positions 0..n-1, ``owner`` (C, M) the one member
    each output depends on (an index into the group's members; -1 for none) and the
    outputs at +h and -h (C, M).  Each output's terms are credited to its owner alone,
    so every element gets the sums that moving it alone would have given.
    ``hp``/``hm`` are the per-element steps (length n).
    """
    y0 = y0.double()
    w = weights.double()
    err2 = out_err.double().square()
    hidden2 = ulp.double().square() / 12.0
    l2_var_each = 2.0 * y0.square() * (err2 - hidden2)
    w_var_each = 2.0 * w.square() * (err2 - hidden2)
    # Rows: l2 at +h, l2 at -h, weighted at +h, weighted at -h, and the two noise variances.
    # Column n collects the terms of outputs that depend on no member (discarded): no
    # nonzero(), so nothing waits for the device.
    sums = torch.zeros(6, n + 1, dtype=torch.float64, device=y0.device)
    for members, owner, yp, ym in parts:
        who = torch.where(owner >= 0, members.gather(1, owner.clamp(min=0)), n)
        yp, ym = yp.double(), ym.double()
        dp, dm = yp - y0, y0 - ym
        changed = (yp != ym).double()
        terms = torch.stack([
            0.5 * dp * dp + dp * y0,
            dm * y0 - 0.5 * dm * dm,
            dp * w,
            dm * w,
            changed * l2_var_each,
            changed * w_var_each,
        ])
        sums.index_add_(1, who.reshape(-1), terms.reshape(6, -1))
    return _slopes(*sums[:, :n], y0, w, hidden2, hp.double(), hm.double())


def ulp_of(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Unit in the last place of each value of ``y`` as a ``dtype`` number (float64 result)."""
    finfo = torch.finfo(dtype)
    mag = y.double().abs().clamp(min=finfo.tiny)
    return torch.exp2(torch.floor(torch.log2(mag))) * finfo.eps


def tolerance(
    analytic: torch.Tensor,
    numeric: torch.Tensor,
    scale: torch.Tensor | float,
    rtol: float,
    atol: float,
) -> torch.Tensor:
    """atol + rtol * max(|a|, |n|, REL_FLOOR * scale) -- symmetric in a and n."""
    mag = torch.maximum(analytic.abs(), numeric.abs())
    mag = torch.clamp(mag, min=float(REL_FLOOR * scale))
    return atol + rtol * mag


def relative_error(analytic: torch.Tensor, numeric: torch.Tensor, scale: float) -> torch.Tensor:
    """|a - n| / max(|a|, |n|, floor); the floor keeps it finite for tiny gradients."""
    denom = torch.maximum(analytic.abs(), numeric.abs())
    floor = max(REL_FLOOR * scale, torch.finfo(torch.float64).tiny)
    return (analytic - numeric).abs() / torch.clamp(denom, min=floor)


def first_pass(
    analytic: torch.Tensor,
    d: Differences,
    scale: float,
    rtol: float,
    atol: float,
    spread: torch.Tensor | float,
    layer_scale: float = 0.0,
) -> torch.Tensor:
    """Cheap verdict codes from one step.  FAIL here means 'confirm' (see :func:`confirm`).

    ``scale`` is the largest gradient of this tensor, ``layer_scale`` the largest
    of any checked tensor: noise far below the layer's gradients is no reason to
    call an element inconclusive (an unused input has gradient 0 and noise 1e-10).
    """
    noise = d.noise + spread
    verdict = _within(analytic, d.central, noise, scale, rtol, atol)
    return _broken_fails(analytic, _noise_or_pass(verdict, analytic, d.central, noise, max(scale, layer_scale), atol))


def _broken_fails(analytic: torch.Tensor, verdict: torch.Tensor) -> torch.Tensor:
    """A NaN or infinite analytic gradient is wrong whatever the finite differences say: FAIL."""
    return torch.where(torch.isfinite(analytic), verdict, torch.full_like(verdict, FAIL))


def _within(analytic, numeric, noise, scale, rtol, atol) -> torch.Tensor:
    """PASS where |a - n| <= tolerance + NOISE_SIGMAS * noise, else FAIL."""
    allowed = tolerance(analytic, numeric, scale, rtol, atol) + NOISE_SIGMAS * noise
    return torch.where((analytic - numeric).abs() <= allowed, PASS, FAIL)


def _noise_or_pass(verdict, analytic, numeric, noise, scale, atol):
    """A passing element whose noise is as large as the gradient itself is NOISE, not PASS."""
    numeric = torch.nan_to_num(numeric)
    mag = torch.maximum(torch.maximum(analytic.abs(), numeric.abs()), torch.full_like(numeric, REL_FLOOR * scale))
    inconclusive = (NOISE_SIGMAS * noise >= mag) & (NOISE_SIGMAS * noise > atol)
    return torch.where((verdict == PASS) & inconclusive, torch.full_like(verdict, NOISE), verdict)


def confirm(
    analytic: torch.Tensor,
    d1: Differences,
    d2: Differences,
    dh: Differences,
    scale: float,
    rtol: float,
    atol: float,
    spread: torch.Tensor | float,
    layer_scale: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    Returns (verdict codes, best numeric estimate, noise estimate).
    """
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
    verdict = _within(analytic, numeric, noise, scale, rtol, atol)

    jump1 = (d1.right - d1.left).abs()
    jump2 = (d2.right - d2.left).abs()
    lo = torch.minimum(d1.right, d1.left)
    hi = torch.maximum(d1.right, d1.left)
    slope_allowed = tolerance(analytic, hi.abs(), scale, rtol, atol) + NOISE_SIGMAS * 2 * (d1.noise + spread)
    is_kink = (
        (verdict == FAIL)
        & (jump1 > slope_allowed)
        & (jump2 < 1.5 * jump1)
        & (analytic >= lo - slope_allowed)
        & (analytic <= hi + slope_allowed)
    )
    verdict = torch.where(is_kink, torch.full_like(verdict, KINK), verdict)
    verdict = _noise_or_pass(verdict, analytic, numeric, noise, max(scale, layer_scale), atol)
    # No finite estimate at all (every step left the domain): inconclusive, never FAIL.
    verdict = torch.where(torch.isfinite(noise), verdict, torch.full_like(verdict, NOISE))
    return _broken_fails(analytic, verdict), numeric, noise

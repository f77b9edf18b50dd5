"""The finite-difference kernel: pure functions of already-evaluated outputs.

For one checked element x_i and step h, the caller evaluates the layer at
x_i + h (outputs ``yp``), x_i - h (``ym``) and once at the base point
(:class:`BaseOutputs`). Two scalar losses are differentiated from those same outputs:

* ``l2``:       L = 1/2 sum y^2.  Its change is formed as sum (y+ - y-)(y+ + y-)/2
  on float64 copies of the outputs -- never as the difference of two whole
  losses, which loses every digit the outputs share.
* ``weighted``: L = sum w*y with fixed random weights |w| in [0.5, 1.5].  Unlike
  1/2 sum y^2 it does not weight an output by |y|, so a backward that is wrong
  only where y ~ 0 cannot hide.

Everything works on a batch of elements at once: ``yp``/``ym`` are (B, M)
float64 tensors (M = all floating outputs, flattened and concatenated) and
every result is a length-B tensor, on whatever device the outputs live. The
verdicts made from these numbers are in :mod:`.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

LOSSES = ("l2", "weighted")


@dataclass(frozen=True)
class BaseOutputs:
    """The outputs at the base point and what differences of them need (all (M,) float64).

    ``out_err`` is the estimated absolute rounding error of each output and ``ulp`` its
    unit in the last place in the dtype it was computed in.
    """

    y: torch.Tensor
    weights: torch.Tensor
    out_err: torch.Tensor
    ulp: torch.Tensor

    @property
    def hidden2(self) -> torch.Tensor:
        """Variance of the sub-ulp change an output that did not move may hide (uniform in +-ulp/2)."""
        return self.ulp.double().square() / 12.0


@dataclass(frozen=True)
class Differences:
    """Per-element slopes of one loss, from one step size (all length-B float64)."""

    central: torch.Tensor
    right: torch.Tensor
    left: torch.Tensor
    noise: torch.Tensor  # one standard deviation of the rounding error of ``central``

    def select(self, pos: torch.Tensor) -> "Differences":
        return Differences(self.central[pos], self.right[pos], self.left[pos], self.noise[pos])

    @staticmethod
    def cat(parts: Iterable["Differences"]) -> "Differences":
        parts = list(parts)
        return Differences(*(torch.cat([getattr(p, f) for p in parts]) for f in ("central", "right", "left", "noise")))


def loss_differences(yp: torch.Tensor, ym: torch.Tensor, base: BaseOutputs, hp: torch.Tensor, hm: torch.Tensor) -> dict[str, Differences]:
    """Central and one-sided slopes of both losses, with a rounding-noise estimate.

    ``hp``/``hm`` are the steps actually taken (x+h)-x and x-(x-h), which differ
    from h in low precision. Outputs that did not change between the two
    evaluations contribute only the sub-ulp change they may have hidden.
    """
    y0 = base.y.double()
    dp = yp.double() - y0  # exact in float64 for float32 outputs
    dm = y0 - ym.double()
    w = base.weights.double()
    # Every sum over the outputs is a matrix product with a few columns (no B x M
    # temporaries beyond dp, dm and the mask): (y+ + y0)(y+ - y0)/2 = dp*dp/2 + y0*dp,
    # and likewise for y-.
    by = torch.stack([y0, w], dim=1)  # (M, 2)
    plus, minus = dp @ by, dm @ by
    l2_plus = 0.5 * torch.einsum("bm,bm->b", dp, dp) + plus[:, 0]
    l2_minus = minus[:, 0] - 0.5 * torch.einsum("bm,bm->b", dm, dm)
    # Noise variances. An output that changed carries its rounding error (independent at
    # y+ and y-); one that did not move may still hide a sub-ulp change. Outputs move
    # little, so y+ ~ y- ~ y0 in the weights.
    changed = (yp != ym).double()
    excess = base.out_err.double().square() - base.hidden2
    var = changed @ (2.0 * torch.stack([y0.square(), w.square()], dim=1) * excess[:, None])  # no host sync
    sums = torch.stack([l2_plus, l2_minus, plus[:, 1], minus[:, 1], var[:, 0], var[:, 1]])
    return _slopes(sums, base, hp.double(), hm.double())


def attributed_differences(parts: Iterable, n: int, base: BaseOutputs, hp: torch.Tensor, hm: torch.Tensor) -> dict[str, Differences]:
    """:func:`loss_differences` for n elements whose outputs were moved in groups.

    ``parts`` yields ``(members, owner, yp, ym)`` for C groups of elements moved
    together: ``members`` (C, k) their positions 0..n-1, ``owner`` (C, M) the one member
    each output depends on (an index into the group's members; -1 for none) and the
    outputs at +h and -h (C, M).  Each output's terms are credited to its owner alone,
    so every element gets the sums that moving it alone would have given.
    ``hp``/``hm`` are the per-element steps (length n).
    """
    y0 = base.y.double()
    w = base.weights.double()
    excess = base.out_err.double().square() - base.hidden2
    l2_var_each = 2.0 * y0.square() * excess
    w_var_each = 2.0 * w.square() * excess
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
    return _slopes(sums[:, :n], base, hp.double(), hm.double())


def _slopes(sums: torch.Tensor, base: BaseOutputs, hp: torch.Tensor, hm: torch.Tensor) -> dict[str, Differences]:
    """Both losses' slopes from the summed loss changes (6, B) over the steps actually taken.

    Rows: l2 at +h, l2 at -h, weighted at +h, weighted at -h, and the two noise variances of
    the outputs that changed; every output may also hide a sub-ulp change, added here.
    """
    l2_plus, l2_minus, w_plus, w_minus, l2_var, w_var = sums
    y0, w, hidden2 = base.y.double(), base.weights.double(), base.hidden2
    span = hp + hm
    l2_noise = (l2_var + (2.0 * y0.square() * hidden2).sum()).clamp(min=0.0).sqrt() / span
    w_noise = (w_var + (2.0 * w.square() * hidden2).sum()).clamp(min=0.0).sqrt() / span
    return {
        "l2": Differences((l2_plus + l2_minus) / span, l2_plus / hp, l2_minus / hm, l2_noise),
        "weighted": Differences((w_plus + w_minus) / span, w_plus / hp, w_minus / hm, w_noise),
    }


def ulp_of(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Unit in the last place of each value of ``y`` as a ``dtype`` number (float64 result)."""
    finfo = torch.finfo(dtype)
    mag = y.double().abs().clamp(min=finfo.tiny)
    return torch.exp2(torch.floor(torch.log2(mag))) * finfo.eps


def rounding_error(y: torch.Tensor, dtype: torch.dtype, factor: float = 8.0) -> torch.Tensor:
    """A per-output estimate of forward rounding error: a few ulps of |y|."""
    return factor * torch.finfo(dtype).eps * y.double().abs()

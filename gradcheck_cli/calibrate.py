"""The finite-difference noise, measured where the model of it could be too small.

fd.py's noise model takes every output's rounding error as independent of the others and
adds them in quadrature. Outputs that share a rounded intermediate -- a LayerNorm row's
1 / sqrt(var), a softmax's normaliser -- err together, and their errors add up linearly:
for a row of 1024 features the loss difference's real rounding noise is about 30 times the
model's, and a correct float64 LayerNorm failed 2 of 32,768 elements (and called 26 KINK).

So before an element FAILs, or a set's failure is believed, the noise is measured: the
central difference at two steps far below h (h/4 and h/8) differs almost only by rounding
(their truncation errors are 16 and 64 times smaller than at h), and that difference,
over the model's noise for the same two steps, is how far the model is off. The factor --
the root mean square of that ratio over at least CALIBRATION_POINTS samples, never below
1 -- multiplies the model's noise of those elements or sets. A correct model gives about 1,
and changes nothing; a real bug is unaffected (its error does not depend on the step).
"""

from __future__ import annotations

import torch

from .fd import Differences

# Samples (elements, or directions of a set) the noise factor is measured on, at least.
CALIBRATION_POINTS = 8
# The two small steps, as fractions of h.
SMALL_STEPS = (0.25, 0.125)


def noise_ratio(fine: torch.Tensor, finer: torch.Tensor, fine_noise: torch.Tensor, finer_noise: torch.Tensor) -> torch.Tensor:
    """Per sample: |D(h/4) - D(h/8)| over the model's noise of that difference (NaN where undefined)."""
    model = (fine_noise.square() + finer_noise.square()).sqrt()
    ratio = (fine - finer).abs() / model
    return torch.where(torch.isfinite(ratio) & (model > 0), ratio, torch.full_like(ratio, float("nan")))


def factor(ratios: torch.Tensor) -> float:
    """The noise factor from measured ratios: their root mean square, at least 1 (NaN samples ignored)."""
    ratios = ratios[torch.isfinite(ratios)]
    if ratios.numel() == 0:
        return 1.0
    return max(1.0, float(ratios.square().mean().sqrt()))


def scaled(d: Differences, by: float) -> Differences:
    """The same slopes with their noise multiplied by ``by``."""
    return d if by == 1.0 else Differences(d.central, d.right, d.left, d.noise * by)

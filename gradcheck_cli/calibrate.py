"""The finite-difference noise, measured where the model of it could be too small.

fd.py's noise model takes every output's rounding error as independent of the others and
adds them in quadrature. Outputs that share a rounded intermediate -- a LayerNorm row's
1 / sqrt(var), a softmax's normaliser -- err together, and their errors add up linearly:
for a row of 1024 features the loss difference's real rounding noise is about 30 times the
model's, and a correct float64 LayerNorm failed 2 of 32,768 elements (and called 26 KINK).

So before an element FAILs (or is called a KINK), or a set's failure is believed, the noise
is measured. The central difference at two steps far below h (h/4 and h/8) differs almost
only by rounding (their truncation errors are 16 and 64 times smaller than at h):

* the tensor's factor is that difference over the model's noise for the same two steps,
  as a root mean square over at least CALIBRATION_POINTS samples (the flagged elements
  and others), never below 1;
* each flagged element also gets its own: its slopes at h/2, h/4 and h/8 against its
  Richardson value from h and 2h, scaled to step h, over the model's noise at h. Coherent
  rounding can be systematic -- a LayerNorm's variance, reduced over 2048 features, was
  off by the same ~10 ulps for every element of the row, so every element's slopes were
  off alike at h/8..h/2, and only a comparison with the larger steps shows it.

The larger multiplies the model's noise of that element and the verdict is made again. A
set's factor is measured the same way along CALIBRATION_POINTS directions of the set that
failed first, and multiplies the noise of every later test of that tensor. A correct model gives about 1 and
changes nothing; a real bug is unaffected (its error does not depend on the step).
"""

from __future__ import annotations

import torch

from .fd import Differences

# Samples (elements, or directions of a set) the noise factor is measured on, at least.
CALIBRATION_POINTS = 8
# The two small steps, as fractions of h.
SMALL_STEPS = (0.25, 0.125)
# Flagged elements measured one by one, at most (the others get the tensor's factor).
MEASURED_MAX = 256


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


def own_factor(samples: list[tuple[torch.Tensor, float]], reference: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per element: its rounding noise at step h, measured, over the model's ``noise`` at h (at least 1).

    ``samples`` are (central difference D(s), s / h) at steps below h; ``reference`` is the
    Richardson value from h and 2h (no h^2 truncation, and the least rounding). D(s) - reference
    is about the rounding error of a loss difference over 2s, so (D(s) - reference) * s / h is
    one sample of the noise at h; the root mean square of the samples is the measurement.
    """
    measured = torch.stack([((d - reference) * at).square() for d, at in samples]).mean(0).sqrt()
    ratio = measured / noise
    return torch.where(torch.isfinite(ratio), ratio.clamp(min=1.0), torch.ones_like(ratio))


def scaled(d: Differences, by: float | torch.Tensor) -> Differences:
    """The same slopes with their noise multiplied by ``by`` (a number, or one per element)."""
    if isinstance(by, float) and by == 1.0:
        return d
    return Differences(d.central, d.right, d.left, d.noise * by)

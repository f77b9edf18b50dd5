"""Layers called the way their users call them: a functional with keyword flags, a Function
with a constant filter tensor, a transform of nested tensors; all correct.

* ``resample(image, grid, *, mode, padding_mode, align_corners)``: PyTorch's own ``grid_sample``
  (its backward is torch's), checked with no wrapper file;
* ``Blur.apply(x, taps)``: a 1-D correlation with fixed taps, hand-written backward; ``taps`` is
  a constant input (its gradient is never asked for: the backward returns None for it);
* ``merge((low, [high0, high1]))``: low + high0 - 2 * high1, hand-written backward, on a tuple
  holding a list.
"""

import torch
import torch.nn.functional as F


def resample(image, grid, *, mode="bilinear", padding_mode="border", align_corners=False):
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


class Blur(torch.autograd.Function):
    """y = x correlated with ``taps`` (odd length, zero padding); x: (B, C, N)."""

    @staticmethod
    def forward(ctx, x, taps):
        ctx.save_for_backward(taps)
        channels = x.shape[1]
        kernel = taps.reshape(1, 1, -1).expand(channels, 1, -1)
        return F.conv1d(x, kernel, padding=taps.numel() // 2, groups=channels)

    @staticmethod
    def backward(ctx, grad_y):
        (taps,) = ctx.saved_tensors
        channels = grad_y.shape[1]
        # The adjoint of a correlation is the correlation with the reversed taps.
        kernel = taps.flip(0).reshape(1, 1, -1).expand(channels, 1, -1)
        return F.conv1d(grad_y, kernel, padding=taps.numel() // 2, groups=channels), None


class _MergeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, low, high0, high1):
        return low + high0 - 2 * high1

    @staticmethod
    def backward(ctx, grad):
        return grad, grad, -2 * grad


def merge(coeffs):
    """coeffs = (low, [high0, high1]), as a wavelet transform's coefficients are nested."""
    low, (high0, high1) = coeffs
    return _MergeFunction.apply(low, high0, high1)

"""Layers for the CI / pytest / repro / error-map / sweep tests.

``Smooth`` is y = sin(x) + x^2/2 with a correct hand-written backward (smooth
everywhere, so its error-versus-eps curve is U-shaped).  ``BorderBug`` is the
same layer whose gradient is wrong on the border of the tensor -- the first
and last index of the last dim, and of the second-to-last dim for 2-D and
larger inputs -- the classic padding / off-by-one slip.  ``ScaledBorderBug``
adds a correct learnable scale, so a check has two tensors and only one fails.
"""

import torch
from torch import nn


def _grad(x: torch.Tensor) -> torch.Tensor:
    return torch.cos(x) + x


def border_mask(shape: tuple) -> torch.Tensor:
    """True on the first/last index of the last two dims (the last dim only for 1-D)."""
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[..., 0] = mask[..., -1] = True
    if len(shape) >= 2:
        mask[..., 0, :] = mask[..., -1, :] = True
    return mask


class Smooth(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x) + x * x / 2

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * _grad(x)


class BorderBug(Smooth):
    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad = grad_out * _grad(x)
        return torch.where(border_mask(tuple(x.shape)).to(x.device), 1.5 * grad, grad)


class ScaledBorderBug(nn.Module):
    """y = w * f(x) with f = BorderBug: the weight gradient is right, the input gradient wrong at the borders."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.25]))

    def forward(self, x):
        return self.weight * BorderBug.apply(x)

"""Layers that need nothing but torch."""

import torch
from torch.autograd import Function


class SoftShrink(Function):
    """y = sign(x) max(|x| - lambd, 0), lambd a Python float."""

    @staticmethod
    def forward(ctx, x, lambd=0.5):
        ctx.save_for_backward(x)
        ctx.lambd = lambd
        return torch.sign(x) * (x.abs() - lambd).clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() > ctx.lambd).to(g.dtype), None

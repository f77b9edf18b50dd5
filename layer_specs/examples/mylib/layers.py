"""Swish, y = x * sigmoid(beta * x), with a hand-written backward; correct.

``Swish`` has a fixed beta = 1; ``ScaledSwish(features, beta=...)`` has a constructor and a
learnable output ``scale`` (a parameter a spec can set by name).
"""

import torch
from torch import nn

from ._ops import swish_grad


class SwishFunction(torch.autograd.Function):
    """y = x * sigmoid(beta * x); beta is a constant."""

    @staticmethod
    def forward(ctx, x, beta: float = 1.0):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return x * torch.sigmoid(beta * x)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        return grad_y * swish_grad(x, ctx.beta), None


class Swish(nn.Module):
    """Swish with beta = 1: no constructor arguments, no parameters."""

    def forward(self, x):
        return SwishFunction.apply(x)


class _ScaledSwishFunction(torch.autograd.Function):
    """y = scale * x * sigmoid(beta * x); gradients for x and scale (shape (1,))."""

    @staticmethod
    def forward(ctx, x, scale, beta: float):
        ctx.save_for_backward(x, scale)
        ctx.beta = beta
        return scale * x * torch.sigmoid(beta * x)

    @staticmethod
    def backward(ctx, grad_y):
        x, scale = ctx.saved_tensors
        grad_x = grad_y * scale * swish_grad(x, ctx.beta)
        grad_scale = (grad_y * x * torch.sigmoid(ctx.beta * x)).sum().reshape(scale.shape)
        return grad_x, grad_scale, None


class ScaledSwish(nn.Module):
    """``features`` is the size of the last axis (checked in forward); ``scale`` multiplies the output."""

    def __init__(self, features: int, beta: float = 1.0):
        super().__init__()
        self.features, self.beta = features, beta
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        if x.shape[-1] != self.features:
            raise ValueError(f"expected {self.features} features, got {x.shape[-1]}")
        return _ScaledSwishFunction.apply(x, self.scale, self.beta)

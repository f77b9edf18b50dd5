"""The README's checks beyond the first backward (``--order 2``, ``--forward-ad``, ``--reference``).

* ``Softplus``: twice differentiable, correct; ``SoftplusSavedOnCtx``: the classic bug -- sigmoid(x)
  kept on ``ctx`` in the forward, so the double backward cannot see how it depends on x (fails
  ``--order 2`` on purpose, passes the first-order check);
* ``CubeJvp``: y = x^3 with a right backward and jvp; ``CubeWrongJvp``: the jvp forgot the 3 (fails
  ``--forward-ad`` on purpose);
* ``FastLinear``: a "kernel" with a hand-written backward; ``--init weight_grad_scale=1.01`` plants
  a 1% weight-gradient bug; ``PlainLinear`` is the same function in plain autograd, its reference.
"""

import torch
from torch import nn


class Softplus(torch.autograd.Function):
    """y = log(1 + e^x); backward g * sigmoid(x) from the saved input."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class SoftplusSavedOnCtx(torch.autograd.Function):
    """BUG for double backward: sigmoid(x) computed in forward and kept as ctx.s (pytorch/pytorch#58509)."""

    @staticmethod
    def forward(ctx, x):
        ctx.s = torch.sigmoid(x)
        return nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.s


class CubeJvp(torch.autograd.Function):
    """y = x^3 with backward and jvp (forward mode), both right."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return 3 * x * x * t


class CubeWrongJvp(CubeJvp):
    """BUG for forward mode: the backward is right, the jvp forgot the factor 3."""

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return x * x * t


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, scale):
        ctx.save_for_backward(x, w)
        ctx.scale = scale
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, (g.T @ x) * ctx.scale, g.sum(0), None


class FastLinear(nn.Module):
    """y = x W^T + b with a hand-written backward; ``weight_grad_scale`` plants a bug (1.01: 1% off)."""

    def __init__(self, n: int = 64, m: int = 32, weight_grad_scale: float = 1.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.weight = nn.Parameter(torch.randn(m, n, generator=g) / n**0.5)
        self.bias = nn.Parameter(torch.randn(m, generator=g))
        self.weight_grad_scale = weight_grad_scale

    def forward(self, x):
        return _LinearFn.apply(x, self.weight, self.bias, self.weight_grad_scale)


class PlainLinear(nn.Module):
    """The reference: the same function in plain autograd (same constructor, same parameter names)."""

    def __init__(self, n: int = 64, m: int = 32, weight_grad_scale: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(m, n))
        self.bias = nn.Parameter(torch.zeros(m))

    def forward(self, x):
        return x @ self.weight.T + self.bias

"""Layers for the checks beyond the first backward: double backward, forward-mode AD, a reference.

Each correct layer has buggy twins written the way such bugs are written in real code:
a value kept on ``ctx`` in the forward (double backward cannot see how it depends on the
input), a ``detach()`` inside backward, ``@once_differentiable``, a wrong ``jvp`` beside a
right backward, a float32 backward 1% off, a forward that is not the reference's function.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# --------------------------------------------------------------------------- double backward


class Softplus(torch.autograd.Function):
    """y = log(1 + e^x); backward g * sigmoid(x) from the saved input: twice differentiable."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class SoftplusSavedOnCtx(torch.autograd.Function):
    """The classic: sigmoid(x) computed in forward and kept as ctx.s -- right first order, its
    dependence on x invisible to double backward (pytorch/pytorch#58509)."""

    @staticmethod
    def forward(ctx, x):
        ctx.s = torch.sigmoid(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.s


class SoftplusDetached(torch.autograd.Function):
    """backward computes on x.detach() 'to save memory': the second derivative in x is lost."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x.detach())


class SoftplusOnce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class SoftplusRaisesWhenGraphed(torch.autograd.Function):
    """A backward that refuses to run under create_graph=True (as some C++ extensions do)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():
            raise RuntimeError("double backward is not implemented for this kernel")
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class _ScaleTanhFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        y = torch.tanh(x * w)
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, w, y = ctx.saved_tensors
        d = g * (1 - y * y)
        return d * w, (d * x).sum(0)


class ScaleTanh(torch.nn.Module):
    """y = tanh(x * w), w a learnable per-feature scale (a parameter in the double backward too)."""

    def __init__(self, n: int = 5) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x):
        return _ScaleTanhFn.apply(x, self.weight)


class _ScaleTanhDetachedWFn(_ScaleTanhFn):
    @staticmethod
    def backward(ctx, g):
        x, w, y = ctx.saved_tensors
        d = g * (1 - y * y)
        return d * w.detach(), (d * x).sum(0)


class ScaleTanhDetachedWeight(ScaleTanh):
    """The input gradient uses w.detach(): d(grad x)/dw is lost, only the weight's double backward is wrong."""

    def forward(self, x):
        return _ScaleTanhDetachedWFn.apply(x, self.weight)


# --------------------------------------------------------------------------- forward-mode AD


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
    """The backward is right; the jvp forgot the factor 3 (checked only by forward mode)."""

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return x * x * t


class CubeNoJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


class _AffineJvpFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.save_for_forward(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.T @ x, g.sum(0)

    @staticmethod
    def jvp(ctx, tx, tw, tb):
        x, w = ctx.saved_tensors
        out = 0
        if tx is not None:
            out = out + tx @ w.T
        if tw is not None:
            out = out + x @ tw.T
        if tb is not None:
            out = out + tb
        return out


class AffineJvp(torch.nn.Module):
    """x W^T + b with a jvp for every argument (parameters included)."""

    def __init__(self, n: int = 6, m: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.weight = torch.nn.Parameter(torch.randn(m, n, generator=g))
        self.bias = torch.nn.Parameter(torch.randn(m, generator=g))

    def forward(self, x):
        return _AffineJvpFn.apply(x, self.weight, self.bias)


# --------------------------------------------------------------------------- a reference implementation


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


class FastLinear(torch.nn.Module):
    """A 'kernel' with a hand-written backward; ``weight_grad_scale`` plants a bug (1.01: 1% off)."""

    def __init__(self, n: int = 64, m: int = 32, weight_grad_scale: float = 1.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.weight = torch.nn.Parameter(torch.randn(m, n, generator=g) / n**0.5)
        self.bias = torch.nn.Parameter(torch.randn(m, generator=g))
        self.weight_grad_scale = weight_grad_scale

    def forward(self, x):
        return _LinearFn.apply(x, self.weight, self.bias, self.weight_grad_scale)


class PlainLinear(torch.nn.Module):
    """The reference: the same function through plain autograd (same constructor, same parameter names)."""

    def __init__(self, n: int = 64, m: int = 32, weight_grad_scale: float = 1.0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(m, n))
        self.bias = torch.nn.Parameter(torch.zeros(m))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class PlainLinearNoBias(torch.nn.Module):
    """Not the same function: no bias (the forward differs; its parameters differ too)."""

    def __init__(self, n: int = 64, m: int = 32, weight_grad_scale: float = 1.0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(m, n))

    def forward(self, x):
        return x @ self.weight.T


class PlainLinearMinusBias(PlainLinear):
    """Same parameters, another function: the bias subtracted."""

    def forward(self, x):
        return x @ self.weight.T - self.bias


def plain_softplus(x):
    """A plain-function reference for the Softplus Functions."""
    return torch.nn.functional.softplus(x)


# --------------------------------------------------------------------------- references that are not the layer's function


def plain_softplus_exits(x):
    """A reference that ends the process (sys.exit) -- the reference's error, never a silent exit."""
    import sys

    sys.exit(3)


class _PairFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2, x.sum(0, keepdim=True)

    @staticmethod
    def backward(ctx, ga, gb):
        return ga * 2 + gb.expand_as(ga)


def pair(x):
    """Two outputs: 2x and the column sums."""
    return _PairFn.apply(x)


def pair_swapped(x):
    """The same values in the other order: not the same outputs."""
    return x.sum(0, keepdim=True), x * 2


class _SqrtAbsFn(torch.autograd.Function):
    """sqrt(|x|) whose backward says 0 at x = 0 (a choice: the derivative does not exist there)."""

    @staticmethod
    def forward(ctx, x):
        y = x.abs().sqrt()
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return torch.where(y > 0, g * torch.sign(x) / (2 * y.clamp(min=1e-300)), torch.zeros_like(g))


def sqrt_abs(x):
    return _SqrtAbsFn.apply(x)


def plain_sqrt_abs(x):
    return x.abs().sqrt()


class _TwiceFn(torch.autograd.Function):
    """y = 2x + b: linear, so its double backward is exactly zero in x (and that is right)."""

    @staticmethod
    def forward(ctx, x, b):
        return 2 * x + b

    @staticmethod
    def backward(ctx, g):
        return 2 * g, g.sum(0)


class Twice(torch.nn.Module):
    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.linspace(-1, 1, n))

    def forward(self, x):
        return _TwiceFn.apply(x, self.bias)


def plain_pair(x):
    """pair in plain autograd (its reference)."""
    return x * 2, x.sum(0, keepdim=True)


def plain_cube(x):
    """x**3 in plain autograd: the reference of the Cube Functions."""
    return x * x * x


class _OomUnderCreateGraphFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():  # under create_graph: as if the double backward needed too much memory
            raise MemoryError
        (x,) = ctx.saved_tensors
        return 2 * x * g


def oom_under_create_graph(x):
    """Right backward; running it under create_graph runs out of memory (a size, not a verdict)."""
    return _OomUnderCreateGraphFn.apply(x)

"""Layers that reduce along an axis: softmax, log-sum-exp, layer norm, row normalisation."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function

from . import Case, param, randn


class SoftmaxFn(Function):
    @staticmethod
    def forward(ctx, x):
        s = torch.softmax(x, dim=-1)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return s * (g - (g * s).sum(-1, keepdim=True))


class SoftmaxDiagonalFn(SoftmaxFn):
    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return g * s * (1 - s)  # BUG: only the diagonal of the softmax Jacobian


class LogSumExpFn(Function):
    @staticmethod
    def forward(ctx, x):
        m = x.amax(-1, keepdim=True)
        y = m.squeeze(-1) + torch.log(torch.exp(x - m).sum(-1))
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g[..., None] * torch.exp(x - y[..., None])


class LogSumExpOneElementFn(LogSumExpFn):
    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        gx = g[..., None] * torch.exp(x - y[..., None])
        # BUG: one element (say a vectorised kernel's tail element) is off by 1e-4 relative.
        gx.view(-1)[7] *= 1 + 1e-4
        return gx


class LayerNormFn(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        rstd = torch.rsqrt(var + 1e-5)
        xhat = (x - mu) * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return xhat * weight + bias

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        gh = g * weight
        gx = rstd * (gh - gh.mean(-1, keepdim=True) - xhat * (gh * xhat).mean(-1, keepdim=True))
        lead = tuple(range(g.dim() - 1))
        return gx, (g * xhat).sum(lead), g.sum(lead)


class LayerNormMissingTermFn(LayerNormFn):
    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        gh = g * weight
        gx = rstd * (gh - gh.mean(-1, keepdim=True))  # BUG: forgot the variance term -xhat*mean(gh*xhat)
        lead = tuple(range(g.dim() - 1))
        return gx, (g * xhat).sum(lead), g.sum(lead)


class LayerNormWeightUsesInputFn(LayerNormFn):
    @staticmethod
    def forward(ctx, x, weight, bias):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        rstd = torch.rsqrt(var + 1e-5)
        xhat = (x - mu) * rstd
        ctx.save_for_backward(x, xhat, rstd, weight)
        return xhat * weight + bias

    @staticmethod
    def backward(ctx, g):
        x, xhat, rstd, weight = ctx.saved_tensors
        gh = g * weight
        gx = rstd * (gh - gh.mean(-1, keepdim=True) - xhat * (gh * xhat).mean(-1, keepdim=True))
        lead = tuple(range(g.dim() - 1))
        return gx, (g * x).sum(lead), g.sum(lead)  # BUG: weight gradient uses the raw input, not xhat


class LayerNorm(nn.Module):
    def __init__(self, fn=LayerNormFn, n: int = 6, seed: int = 300):
        super().__init__()
        self.fn = fn
        self.weight = param(n, seed=seed, scale=0.2, mean=1.0)
        self.bias = param(n, seed=seed + 1, scale=0.2)

    def forward(self, x):
        return self.fn.apply(x, self.weight, self.bias)


class RowNormalizeFn(Function):
    """y[b] = x[b] / ||x[b]||."""

    @staticmethod
    def forward(ctx, x):
        r = x.norm(dim=-1, keepdim=True)
        y = x / r
        ctx.save_for_backward(y, r)
        return y

    @staticmethod
    def backward(ctx, g):
        y, r = ctx.saved_tensors
        return (g - y * (g * y).sum(-1, keepdim=True)) / r


class RowNormalizeSample0Fn(RowNormalizeFn):
    @staticmethod
    def backward(ctx, g):
        y, r = ctx.saved_tensors
        # BUG: uses the norm of sample 0 for every sample (r[0] instead of r): right only for sample 0.
        return (g - y * (g * y).sum(-1, keepdim=True)) / r[0]


class HalfSquaredNormFn(Function):
    """y[b] = 1/2 ||x[b]||^2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * (x * x).sum(-1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g[:, None] * x


class HalfSquaredNormDoubledFn(HalfSquaredNormFn):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g[:, None] * 2 * x  # BUG: d/dx x^2 = 2x, forgetting the 1/2 in front


class VarianceFn(Function):
    """Unbiased variance along the last axis."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.var(-1, unbiased=True)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        n = x.shape[-1]
        return g[..., None] * 2 * (x - x.mean(-1, keepdim=True)) / (n - 1)


class VarianceBiasedBackwardFn(VarianceFn):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        n = x.shape[-1]
        return g[..., None] * 2 * (x - x.mean(-1, keepdim=True)) / n  # BUG: biased 1/n, forward is unbiased 1/(n-1)


CASES = [
    Case("softmax_ok", lambda: SoftmaxFn, [randn(3, 5, seed=301, scale=2.0)], True),
    Case("softmax_diagonal_only", lambda: SoftmaxDiagonalFn, [randn(3, 5, seed=302, scale=2.0)], False, {"input0"}),
    Case(
        "logsumexp_ok",
        lambda: LogSumExpFn,
        [randn(3, 6, seed=303, scale=30.0, mean=100.0)],
        True,
        notes="values ~100 +- 30: a naive log(sum(exp)) would overflow; many gradients ~1e-20",
        torch_options={"rtol": 1e-5, "atol": 1e-8},
    ),
    Case(
        "logsumexp_one_element_1e-4",
        lambda: LogSumExpOneElementFn,
        [randn(3, 6, seed=304, scale=0.5)],
        False,
        {"input0"},
        notes="a single element 1e-4 relative off, in float64",
        torch_options={"rtol": 1e-5, "atol": 1e-8},
    ),
    Case("layernorm_ok", lambda: LayerNorm(), [randn(3, 6, seed=305, scale=2.0, mean=1.0)], True),
    Case(
        "layernorm_missing_variance_term",
        lambda: LayerNorm(LayerNormMissingTermFn),
        [randn(3, 6, seed=306, scale=2.0, mean=1.0)],
        False,
        {"input0"},
    ),
    Case(
        "layernorm_weight_grad_uses_input",
        lambda: LayerNorm(LayerNormWeightUsesInputFn),
        [randn(3, 6, seed=313, scale=2.0, mean=1.0)],
        False,
        {"weight"},
    ),
    Case("row_normalize_ok", lambda: RowNormalizeFn, [randn(4, 5, seed=307)], True),
    Case(
        "row_normalize_sample0_only",
        lambda: RowNormalizeSample0Fn,
        [randn(4, 5, seed=308)],
        False,
        {"input0"},
        notes="input gradient right for batch sample 0 only",
    ),
    Case("half_squared_norm_ok", lambda: HalfSquaredNormFn, [randn(3, 4, seed=309)], True),
    Case("half_squared_norm_doubled", lambda: HalfSquaredNormDoubledFn, [randn(3, 4, seed=310)], False, {"input0"}),
    Case("variance_ok", lambda: VarianceFn, [randn(3, 5, seed=311)], True),
    Case(
        "variance_biased_backward",
        lambda: VarianceBiasedBackwardFn,
        [randn(3, 5, seed=312)],
        False,
        {"input0"},
        notes="forward unbiased (n-1), backward biased (n): constant ratio (n-1)/n",
    ),
]

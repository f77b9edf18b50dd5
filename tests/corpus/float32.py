"""float32 layers at the checker's default float32 tolerances.

Each important layer appears twice: with the default numeric side (the checker may
difference in float64 when the layer runs faithfully there) and with
``numeric_dtype="float32"`` (finite differences in float32 itself, what a
float32-only kernel gets).  Plus a layer that really is float32-only inside.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function

from . import Case, param, randn
from .conv import Conv1d, Conv1dKernelFlipFn
from .reductions import LayerNorm, LogSumExpFn, SoftmaxFn


class LinearTanhFn(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        y = torch.tanh(x @ weight.t() + bias)
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, y = ctx.saved_tensors
        d = g * (1 - y * y)
        return d @ weight, d.t() @ x, d.sum(0)


class LinearTanhFivePercentFn(LinearTanhFn):
    @staticmethod
    def backward(ctx, g):
        x, weight, y = ctx.saved_tensors
        d = g * (1 - y * y)
        gw = d.t() @ x
        gw.view(-1)[::97] *= 1.05  # BUG: some weight-gradient elements 5% too large
        return d @ weight, gw, d.sum(0)


class LinearTanh(nn.Module):
    """256-wide input, 8 outputs."""

    def __init__(self, fn=LinearTanhFn, n_in: int = 256, n_out: int = 8):
        super().__init__()
        self.fn = fn
        self.weight = param(n_out, n_in, seed=600, scale=n_in**-0.5)
        self.bias = param(n_out, seed=601, scale=0.1)

    def forward(self, x):
        return self.fn.apply(x, self.weight, self.bias)


class SoftmaxFivePercentFn(SoftmaxFn):
    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        gx = s * (g - (g * s).sum(-1, keepdim=True))
        gx[:, 2] *= 0.95  # BUG: one column 5% too small
        return gx


class Float32KernelFn(Function):
    """y = tanh(x W^T), computed in float32 whatever the dtype it is given (a float32-only kernel)."""

    @staticmethod
    def forward(ctx, x, weight):
        x32, w32 = x.float(), weight.float()
        y = torch.tanh(x32 @ w32.t())
        ctx.save_for_backward(x32, w32, y)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        x32, w32, y = ctx.saved_tensors
        d = g.float() * (1 - y * y)
        return (d @ w32).to(g.dtype), (d.t() @ x32).to(g.dtype)


class Float32KernelFivePercentFn(Float32KernelFn):
    @staticmethod
    def backward(ctx, g):
        x32, w32, y = ctx.saved_tensors
        d = g.float() * (1 - y * y)
        gx = d @ w32
        gx[:, ::5] *= 1.05  # BUG: every fifth input column 5% too large
        return gx.to(g.dtype), (d.t() @ x32).to(g.dtype)


class Float32Kernel(nn.Module):
    def __init__(self, fn=Float32KernelFn):
        super().__init__()
        self.fn = fn
        self.weight = param(6, 32, seed=620, scale=32**-0.5)

    def forward(self, x):
        return self.fn.apply(x, self.weight)


F32 = "float32"
DIFF32 = dict(dtype=F32, numeric_dtype="float32")  # finite differences in float32 too

CASES = [
    Case("linear_tanh_256_f32_ok", lambda: LinearTanh(), [randn(4, 256, seed=701)], True, dtype=F32),
    Case(
        "linear_tanh_256_f32_5pct",
        lambda: LinearTanh(LinearTanhFivePercentFn),
        [randn(4, 256, seed=702)],
        False,
        {"weight"},
        dtype=F32,
        notes="every 97th weight-gradient element 5% off",
    ),
    Case("linear_tanh_256_diff32_ok", lambda: LinearTanh(), [randn(4, 256, seed=703)], True, **DIFF32),
    Case(
        "linear_tanh_256_diff32_5pct",
        lambda: LinearTanh(LinearTanhFivePercentFn),
        [randn(4, 256, seed=704)],
        False,
        {"weight"},
        **DIFF32,
    ),
    Case("softmax_f32_ok", lambda: SoftmaxFn, [randn(4, 10, seed=705, scale=2.0)], True, dtype=F32),
    Case("softmax_f32_5pct", lambda: SoftmaxFivePercentFn, [randn(4, 10, seed=706, scale=2.0)], False, {"input0"}, dtype=F32),
    Case("softmax_diff32_ok", lambda: SoftmaxFn, [randn(4, 10, seed=707, scale=2.0)], True, **DIFF32),
    Case("softmax_diff32_5pct", lambda: SoftmaxFivePercentFn, [randn(4, 10, seed=708, scale=2.0)], False, {"input0"}, **DIFF32),
    Case(
        "softmax_diff32_wide_ok",
        lambda: SoftmaxFn,
        [randn(4, 200, seed=711, scale=2.0)],
        True,
        **DIFF32,
        notes="200-wide: most outputs move by less than an ulp when one small logit moves (sub-ulp changes)",
    ),
    Case(
        "layernorm_f32_ok",
        lambda: LayerNorm(n=16, seed=720),
        [randn(4, 16, seed=721, scale=3.0, mean=2.0)],
        True,
        dtype=F32,
    ),
    Case(
        "layernorm_diff32_offset_ok",
        lambda: LayerNorm(n=16, seed=722),
        [randn(4, 16, seed=723, scale=1.0, mean=100.0)],
        True,
        **DIFF32,
        notes="mean 100, std 1: cancellation in x - mean",
    ),
    Case("conv1d_f32_ok", lambda: Conv1d(c_in=4, c_out=6, k=3), [randn(2, 4, 16, seed=730)], True, dtype=F32),
    Case(
        "conv1d_f32_kernel_flip",
        lambda: Conv1d(Conv1dKernelFlipFn, c_in=4, c_out=6, k=3),
        [randn(2, 4, 16, seed=731)],
        False,
        {"input0"},
        dtype=F32,
    ),
    Case("conv1d_diff32_ok", lambda: Conv1d(c_in=4, c_out=6, k=3), [randn(2, 4, 16, seed=732)], True, **DIFF32),
    Case(
        "logsumexp_f32_ref64_ok",
        lambda: LogSumExpFn,
        [randn(4, 12, seed=740, scale=5.0)],
        True,
        dtype=F32,
        numeric_dtype="float64",
        notes="analytic side float32, numeric side float64 (explicit)",
    ),
    Case(
        "logsumexp_f32_vocab_ok",
        lambda: LogSumExpFn,
        [randn(4, 500, seed=741, scale=2.0)],
        True,
        dtype=F32,
        notes="500-wide log-sum-exp; verifiable when the numeric side may run in float64",
    ),
    Case(
        "logsumexp_diff32_vocab",
        lambda: LogSumExpFn,
        [randn(4, 500, seed=741, scale=2.0)],
        False,
        inconclusive={"input0"},
        **DIFF32,
        notes=(
            "the same layer differenced in float32: d y / d x_i * h ~ 2e-7 < ulp(y ~ 9) for most i, so "
            "y+ == y- exactly and the numeric side cannot see these gradients: NOISE (inconclusive), never FAIL"
        ),
    ),
    Case("float32_only_kernel_ok", lambda: Float32Kernel(), [randn(3, 32, seed=750)], True, dtype=F32,
         notes="computes in float32 even when cast to float64: the numeric side must stay float32"),
    Case(
        "float32_only_kernel_5pct",
        lambda: Float32Kernel(Float32KernelFivePercentFn),
        [randn(3, 32, seed=751)],
        False,
        {"input0"},
        dtype=F32,
    ),
]

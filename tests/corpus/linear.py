"""Fully connected layers: y = x W^T + b, and friends."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function

from . import Case, param, randn


class LinearFn(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.t() + bias

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g @ weight, g.t() @ x, g.sum(0)


class LinearTransposedFn(LinearFn):
    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g @ weight, x.t() @ g, g.sum(0)  # BUG: (in, out) product, fits only because W is square


class LinearBiasAxisFn(LinearFn):
    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g @ weight, g.t() @ x, g.sum(1)  # BUG: sums over features, not the batch (B == out)


class LinearBatchMeanFn(LinearFn):
    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        batch = x.shape[0]
        # BUG: "average over the batch" -- but forward sums, it does not average.
        return g @ weight, g.t() @ x / batch, g.sum(0) / batch


class Linear(nn.Module):
    def __init__(self, fn=LinearFn, n_in: int = 5, n_out: int = 4, seed: int = 10):
        super().__init__()
        self.fn = fn
        self.weight = param(n_out, n_in, seed=seed, scale=n_in**-0.5)
        self.bias = param(n_out, seed=seed + 1)

    def forward(self, x):
        return self.fn.apply(x, self.weight, self.bias)


class LinearSigmoidFn(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        y = torch.sigmoid(x @ weight.t() + bias)
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, y = ctx.saved_tensors
        d = g * y * (1 - y)
        return d @ weight, d.t() @ x, d.sum(0)


class LinearSigmoid(Linear):
    def __init__(self):
        super().__init__(LinearSigmoidFn, 6, 3, seed=20)


class GainSigmoidFn(Function):
    """y = sigmoid(gain * x), a learnable per-feature gain."""

    @staticmethod
    def forward(ctx, x, gain):
        s = torch.sigmoid(gain * x)
        ctx.save_for_backward(x, gain, s)
        return s

    @staticmethod
    def backward(ctx, g):
        x, gain, s = ctx.saved_tensors
        return g * s * (1 - s) * gain, (g * s * (1 - s) * x).sum(0)


class GainSigmoidWrongFormulaFn(GainSigmoidFn):
    @staticmethod
    def backward(ctx, g):
        x, gain, s = ctx.saved_tensors
        # BUG: sigmoid' written as s*(1+s) in the parameter gradient (input gradient is right).
        return g * s * (1 - s) * gain, (g * s * (1 + s) * x).sum(0)


class GainSigmoid(nn.Module):
    def __init__(self, fn=GainSigmoidFn):
        super().__init__()
        self.fn = fn
        self.gain = param(5, seed=30, scale=0.5, mean=1.0)

    def forward(self, x):
        return self.fn.apply(x, self.gain)


CASES = [
    Case("linear_ok", lambda: Linear(), [randn(3, 5, seed=1)], True),
    Case(
        "linear_transposed_weight",
        lambda: Linear(LinearTransposedFn, 4, 4),
        [randn(3, 4, seed=2)],
        False,
        {"weight"},
        notes="x^T g instead of g^T x; square weight so the shape still fits",
    ),
    Case(
        "linear_bias_wrong_axis",
        lambda: Linear(LinearBiasAxisFn, 3, 4),
        [randn(4, 3, seed=3)],
        False,
        {"bias"},
        notes="bias gradient summed over the feature axis; batch 4 == out 4 so the shape fits",
    ),
    Case(
        "linear_divides_by_batch",
        lambda: Linear(LinearBatchMeanFn),
        [randn(6, 5, seed=4)],
        False,
        {"weight", "bias"},
        notes="parameter gradients divided by the batch size, forward is a plain sum",
    ),
    Case("linear_sigmoid_ok", lambda: LinearSigmoid(), [randn(4, 6, seed=5)], True),
    Case("gain_sigmoid_ok", lambda: GainSigmoid(), [randn(3, 5, seed=6)], True),
    Case(
        "gain_sigmoid_wrong_formula",
        lambda: GainSigmoid(GainSigmoidWrongFormulaFn),
        [randn(3, 5, seed=6)],
        False,
        {"gain"},
        notes="parameter gradient uses s*(1+s) for sigmoid'",
    ),
]

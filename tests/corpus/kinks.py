"""Layers evaluated exactly at non-differentiable points (and one near one)."""

from __future__ import annotations

import torch
from torch.autograd import Function

from . import Case, randn


def _with_exact(x: torch.Tensor, value: float, every: int = 3) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[::every] = value
    return x


class ReluFn(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0).to(g.dtype)  # at 0: the left slope, 0


class ReluBadKinkFn(ReluFn):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        d = torch.where(x == 0, torch.full_like(x, 5.0), (x > 0).to(g.dtype))  # BUG: 5.0 at the kink
        return g * d


class AbsFn(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.where(x >= 0, 1.0, -1.0).to(g.dtype)  # at 0: the right slope, +1


class MaxFn(Function):
    """y = max over the last axis; the gradient goes to the first maximum."""

    @staticmethod
    def forward(ctx, x):
        y, idx = x.max(-1)
        ctx.save_for_backward(idx)
        ctx.shape = x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        gx = torch.zeros(ctx.shape, dtype=g.dtype, device=g.device)
        return gx.scatter(-1, idx[..., None], g[..., None])


class ClampFn(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ((x > -1) & (x < 1)).to(g.dtype)  # at +-1: the outside slope, 0


# Why torch.autograd.gradcheck cannot judge a case evaluated exactly at a kink (test_corpus.py).
AT_KINK = "an exact kink: central differences average the one-sided slopes, which no backward returns"


def _max_ties(seed: int) -> torch.Tensor:
    x = randn(4, 5, seed=seed)
    # Rows 0 and 2: the maximum appears twice (an exact tie), at different positions.
    x[0, 3] = x[0].max()
    x[0, 1] = x[0, 3]
    x[2, 0] = x[2].max() + 0.5
    x[2, 4] = x[2, 0]
    return x


CASES = [
    Case(
        "relu_at_zero",
        lambda: ReluFn,
        [_with_exact(randn(4, 6, seed=801), 0.0)],
        True,
        kinks_expected=True,
        notes="every third input exactly 0.0; backward picks the left slope 0",
        torch_unreliable=AT_KINK,
    ),
    Case(
        "abs_at_zero",
        lambda: AbsFn,
        [_with_exact(randn(3, 6, seed=802), 0.0, every=4)],
        True,
        kinks_expected=True,
        notes="backward picks the right slope +1 at 0",
        torch_unreliable=AT_KINK,
    ),
    Case(
        "max_with_tie",
        lambda: MaxFn,
        [_max_ties(803)],
        True,
        kinks_expected=True,
        notes="exact ties in rows 0 and 2",
        torch_unreliable=AT_KINK,
    ),
    Case(
        "clamp_at_bounds",
        lambda: ClampFn,
        [torch.tensor([[-1.0, -0.5, 0.3, 1.0, 2.0], [1.0, 0.7, -1.0, -1.5, 0.0]], dtype=torch.float64)],
        True,
        kinks_expected=True,
        notes="inputs exactly at +-1",
        torch_unreliable=AT_KINK,
    ),
    Case(
        "relu_at_zero_f32",
        lambda: ReluFn,
        [_with_exact(randn(4, 6, seed=804), 0.0)],
        True,
        dtype="float32",
        kinks_expected=True,
    ),
    Case(
        "relu_bad_value_at_kink",
        lambda: ReluBadKinkFn,
        [_with_exact(randn(4, 6, seed=805), 0.0)],
        False,
        {"input0"},
        notes="returns 5.0 at the kink: outside the one-sided slopes [0, 1], must FAIL",
    ),
]


class MaxAllTiedFn(Function):
    """y = amax over the last axis, backward written with an equality mask."""

    @staticmethod
    def forward(ctx, x):
        y = x.amax(-1)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        # BUG: every tied maximum gets the full gradient (components sum to 2 at a 2-way tie): not a
        # subgradient -- moving both tied entries up by h raises y by h, not 2h.  A correct backward
        # gives it to one of them, or splits it evenly (what torch.amax does).
        return g[..., None] * (x == y[..., None]).to(g.dtype)


CASES += [
    Case(
        "relu_near_kink",
        lambda: ReluFn,
        [torch.tensor([[1e-8, -1e-8, 3e-7, -3e-7, 0.5, -0.5], [2e-9, -4e-7, 0.1, -0.1, 1.0, -1.0]], dtype=torch.float64)],
        True,
        kinks_expected=True,
        notes="|x| < eps: the kink lies inside the finite-difference step, the derivative is exact one side",
        torch_options={"eps": 1e-10},
    ),
    Case(
        "max_tie_full_gradient_to_every_tied",
        lambda: MaxAllTiedFn,
        [_max_ties(806)],
        False,
        {"input0"},
        notes="equality-mask max backward: each tied element alone looks like a valid one-sided slope; "
        "caught by perturbing the tied group together (regression guard)",
    ),
]

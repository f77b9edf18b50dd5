"""Elementwise layers: numerically sensitive, tiny, large, near-zero, plus sign/scale/mask bugs."""

from __future__ import annotations

import math

import torch
from torch.autograd import Function

from . import Case, randn, uniform


class SoftplusFn(Function):
    """Stable softplus: max(x, 0) + log1p(exp(-|x|)); derivative sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class ExpNegFn(Function):
    """y = exp(-x)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.exp(-x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return -g * y


class ExpNegSignFn(ExpNegFn):
    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y  # BUG: lost the minus sign of d/dx exp(-x)


class TinySinFn(Function):
    """y = 1e-6 sin(x): gradients around 1e-6 (and 1e-12 under the L2 loss)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 1e-6 * torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 1e-6 * torch.cos(x)


class TinySinDoubledFn(TinySinFn):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 2e-6 * torch.cos(x)  # BUG: gradient twice too large (tiny magnitude must not hide it)


class PowOneHalfFn(Function):
    """y = x^1.5 evaluated at x ~ 1e3 (outputs ~3e4)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x.sqrt()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 1.5 * x.sqrt()


class SinFn(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)


class TanhFn(Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class TanhDeadZoneFn(TanhFn):
    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        # BUG: a "numerical safety" mask copied from elsewhere zeroes the gradient where the output is ~0.
        # 1/2 sum y^2 weights each output by |y|, so under the L2 loss the error is ~|y| ~ 1e-9: invisible.
        return g * (1 - y * y) * (y.abs() > 1e-6)


_C = math.sqrt(2.0 / math.pi)


class GeluTanhFn(Function):
    """The tanh approximation of GELU: 0.5 x (1 + tanh(c (x + 0.044715 x^3)))."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * x * (1 + torch.tanh(_C * (x + 0.044715 * x**3)))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        t = torch.tanh(_C * (x + 0.044715 * x**3))
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _C * (1 + 3 * 0.044715 * x * x))


class GeluTanhExactBackwardFn(GeluTanhFn):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # BUG: forward is the tanh approximation, backward the derivative of the exact (erf) GELU.
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return g * (cdf + x * pdf)


def log_eps_layer(eps: float, forgot_eps: bool = False) -> type:
    """y = log(p + eps), the usual 'safe log' of probabilities."""

    class LogEpsFn(Function):
        @staticmethod
        def forward(ctx, p):
            ctx.save_for_backward(p)
            return torch.log(p + eps)

        @staticmethod
        def backward(ctx, g):
            (p,) = ctx.saved_tensors
            if forgot_eps:
                return g / p  # BUG: the stabilising eps is dropped in backward: (p+eps)/p = 4.5%..6.7% too large here
            return g / (p + eps)

    LogEpsFn.__name__ = LogEpsFn.__qualname__ = "LogEpsForgotFn" if forgot_eps else "LogEpsFn"
    return LogEpsFn


class SqrtFn(Function):
    """std = sqrt(variance): its domain ends at 0."""

    @staticmethod
    def forward(ctx, v):
        s = torch.sqrt(v)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return g * 0.5 / s


def _near_zero_mix(seed: int) -> torch.Tensor:
    """Mostly N(0,1) values, with every third element ~1e-9 (outputs near zero there)."""
    x = randn(4, 6, seed=seed)
    tiny = randn(4, 6, seed=seed + 1, scale=1e-9)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask.view(-1)[::3] = True
    return torch.where(mask, tiny, x)


def _near_multiples_of_pi(seed: int) -> torch.Tensor:
    k = torch.randint(-3, 4, (3, 5), generator=torch.Generator().manual_seed(seed)).double()
    return k * math.pi + randn(3, 5, seed=seed + 1, scale=1e-8)


CASES = [
    Case(
        "softplus_ok",
        lambda: SoftplusFn,
        [uniform(4, 6, seed=201, low=-35.0, high=35.0)],
        True,
        notes="stable softplus over [-35, 35]: gradients from ~1e-15 to 1",
    ),
    Case("exp_neg_ok", lambda: ExpNegFn, [randn(3, 4, seed=202)], True),
    Case("exp_neg_sign_error", lambda: ExpNegSignFn, [randn(3, 4, seed=203)], False, {"input0"}),
    Case("tiny_gradients_ok", lambda: TinySinFn, [randn(3, 5, seed=204)], True, notes="outputs scaled by 1e-6", torch_options={"atol": 1e-13}),
    Case(
        "tiny_gradients_doubled",
        lambda: TinySinDoubledFn,
        [randn(3, 5, seed=205)],
        False,
        {"input0"},
        notes="a 2x error at magnitude 1e-6 (1e-12 under the L2 loss, below atol there)",
        torch_options={"atol": 1e-13},
    ),
    Case(
        "large_values_ok",
        lambda: PowOneHalfFn,
        [randn(3, 4, seed=206, scale=50.0, mean=1000.0)],
        True,
        notes="x ~ 1e3, y ~ 3e4",
    ),
    Case(
        "near_zero_outputs_ok",
        lambda: SinFn,
        [_near_multiples_of_pi(207)],
        True,
        notes="sin at k*pi + 1e-8: outputs ~1e-8, gradients +-1",
    ),
    Case("gelu_tanh_ok", lambda: GeluTanhFn, [randn(3, 6, seed=211, scale=1.5)], True),
    Case(
        "gelu_tanh_with_exact_backward",
        lambda: GeluTanhExactBackwardFn,
        [randn(3, 6, seed=212, scale=1.5)],
        False,
        {"input0"},
        notes="approximate forward, exact backward: relative errors ~1e-4..1e-3, many elements",
    ),
    Case("tanh_ok", lambda: TanhFn, [_near_zero_mix(208)], True),
    Case(
        "tanh_dead_zone_near_zero",
        lambda: TanhDeadZoneFn,
        [_near_zero_mix(208)],
        False,
        {"input0"},
        caught_by=("weighted",),
        notes="gradient zeroed where |y| < 1e-6: hidden by 1/2 sum y^2, caught by the weighted loss only",
    ),
    Case(
        "log_eps_small_probs_f32_ok",
        lambda: log_eps_layer(2e-4),
        [uniform(3, 8, seed=209, low=3e-3, high=4.5e-3)],
        True,
        dtype="float32",
        numeric_dtype="float32",
        notes="log(p + 2e-4) at p ~ 3e-3: the float32 step 1e-3 is ~30% of p (heavy truncation)",
    ),
    Case(
        "log_eps_small_probs_f32_forgot_eps",
        lambda: log_eps_layer(2e-4, forgot_eps=True),
        [uniform(3, 8, seed=209, low=3e-3, high=4.5e-3)],
        False,
        {"input0"},
        dtype="float32",
        numeric_dtype="float32",
        notes="backward 1/p instead of 1/(p+eps): every element 4.5-6.7% too large",
    ),
    Case(
        "log_eps_rare_probs_ok",
        lambda: log_eps_layer(2e-7),
        [uniform(3, 8, seed=210, low=3e-6, high=4.5e-6)],
        True,
        notes="log(p + 2e-7) at p ~ 3e-6 in float64: the step 1e-6 is ~30% of p",
        torch_options={"eps": 1e-9},
    ),
    Case(
        "log_eps_rare_probs_forgot_eps",
        lambda: log_eps_layer(2e-7, forgot_eps=True),
        [uniform(3, 8, seed=210, low=3e-6, high=4.5e-6)],
        False,
        {"input0"},
        notes="float64 twin of the float32 case: 4.5-6.7% error on every element",
        torch_options={"eps": 1e-9},
    ),
    Case(
        "sqrt_near_domain_edge_ok",
        lambda: SqrtFn,
        [uniform(2, 6, seed=213, low=1.2e-6, high=1.9e-6)],
        True,
        notes="v within 2 eps of 0: v - h is in the domain, v - 2h is not (sqrt of a negative: NaN); "
        "regression guard: the NaN step used to make every such element FAIL",
        torch_options={"eps": 1e-8},
    ),
    Case(
        "sqrt_near_domain_edge_diff32_ok",
        lambda: SqrtFn,
        [uniform(2, 6, seed=214, low=1.2e-3, high=1.9e-3)],
        True,
        dtype="float32",
        numeric_dtype="float32",
        notes="the float32 twin: variances ~1.5e-3 with the float32 step 1e-3",
    ),
]

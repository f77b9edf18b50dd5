"""Convolution-like layers: conv1d, a 3-tap smoother with zero padding, a channel affine."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

from . import Case, param, randn


class Conv1dFn(Function):
    """y = conv1d(x, w, b, padding=1) -- PyTorch's conv is a cross-correlation."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return F.conv1d(x, w, b, padding=1)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        # Input gradient: a *true* convolution of g with w, i.e. correlation with the flipped kernel.
        gx = F.conv1d(g, w.transpose(0, 1).flip(-1), padding=1)
        # Weight gradient: gw[o, i, k] = sum_{n, l} g[n, o, l] x[n, i, l + k - 1].
        gw = F.conv1d(x.transpose(0, 1), g.transpose(0, 1), padding=1).transpose(0, 1)
        return gx, gw, g.sum((0, 2))


class Conv1dKernelFlipFn(Conv1dFn):
    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = F.conv1d(g, w.transpose(0, 1), padding=1)  # BUG: kernel not flipped (correlation, not convolution)
        gw = F.conv1d(x.transpose(0, 1), g.transpose(0, 1), padding=1).transpose(0, 1)
        return gx, gw, g.sum((0, 2))


class Conv1dBiasMeanFn(Conv1dFn):
    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = F.conv1d(g, w.transpose(0, 1).flip(-1), padding=1)
        gw = F.conv1d(x.transpose(0, 1), g.transpose(0, 1), padding=1).transpose(0, 1)
        return gx, gw, g.sum(0).mean(-1)  # BUG: averages over the length axis instead of summing


class Conv1d(nn.Module):
    def __init__(self, fn=Conv1dFn, c_in: int = 3, c_out: int = 4, k: int = 3, seed: int = 40):
        super().__init__()
        self.fn = fn
        self.weight = param(c_out, c_in, k, seed=seed, scale=(c_in * k) ** -0.5)
        self.bias = param(c_out, seed=seed + 1, scale=0.1)

    def forward(self, x):
        return self.fn.apply(x, self.weight, self.bias)


class Smooth3Fn(Function):
    """y[i] = k0 x[i-1] + k1 x[i] + k2 x[i+1] with zero padding at both ends, along the last axis."""

    @staticmethod
    def forward(ctx, x, k):
        xp = F.pad(x, (1, 1))
        ctx.save_for_backward(xp, k)
        return k[0] * xp[..., :-2] + k[1] * xp[..., 1:-1] + k[2] * xp[..., 2:]

    @staticmethod
    def backward(ctx, g):
        xp, k = ctx.saved_tensors
        gx = k[1] * g
        gx[..., :-1] += k[0] * g[..., 1:]
        gx[..., 1:] += k[2] * g[..., :-1]
        gk = torch.stack([(g * xp[..., :-2]).sum(), (g * xp[..., 1:-1]).sum(), (g * xp[..., 2:]).sum()])
        return gx, gk


class Smooth3BorderFn(Smooth3Fn):
    @staticmethod
    def backward(ctx, g):
        xp, k = ctx.saved_tensors
        gx = k[1] * g
        # BUG: the shifted terms are applied to interior positions only (off by one at the padded
        # borders): element 0 misses k0*g[1], the last element misses k2*g[-2].
        gx[..., 1:-1] += k[0] * g[..., 2:] + k[2] * g[..., :-2]
        gk = torch.stack([(g * xp[..., :-2]).sum(), (g * xp[..., 1:-1]).sum(), (g * xp[..., 2:]).sum()])
        return gx, gk


class Smooth3(nn.Module):
    def __init__(self, fn=Smooth3Fn):
        super().__init__()
        self.fn = fn
        self.kernel = nn.Parameter(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))

    def forward(self, x):
        return self.fn.apply(x, self.kernel)


class ChannelAffineFn(Function):
    """y[n, c, l] = x[n, c, l] * scale[c] + bias[c]."""

    @staticmethod
    def forward(ctx, x, scale, bias):
        ctx.save_for_backward(x, scale)
        return x * scale[:, None] + bias[:, None]

    @staticmethod
    def backward(ctx, g):
        x, scale = ctx.saved_tensors
        return g * scale[:, None], (g * x).sum((0, 2)), g.sum((0, 2))


class ChannelAffineNoReduceFn(ChannelAffineFn):
    @staticmethod
    def backward(ctx, g):
        x, scale = ctx.saved_tensors
        # BUG: the bias gradient is returned unreduced.  Autograd silently sum_to()s it to the
        # bias shape -- over dims (0, 1), the wrong ones, because C == L -- and raises nothing.
        return g * scale[:, None], (g * x).sum((0, 2)), g


class ChannelAffine(nn.Module):
    def __init__(self, fn=ChannelAffineFn, channels: int = 5):
        super().__init__()
        self.fn = fn
        self.scale = param(channels, seed=50, scale=0.3, mean=1.0)
        self.bias = param(channels, seed=51)

    def forward(self, x):
        return self.fn.apply(x, self.scale, self.bias)


CASES = [
    Case("conv1d_ok", lambda: Conv1d(), [randn(2, 3, 8, seed=101)], True),
    Case(
        "conv1d_kernel_flip",
        lambda: Conv1d(Conv1dKernelFlipFn),
        [randn(2, 3, 8, seed=102)],
        False,
        {"input0"},
        notes="input gradient correlates with the kernel instead of convolving (kernel not flipped)",
    ),
    Case("smooth3_ok", lambda: Smooth3(), [randn(2, 7, seed=103)], True),
    Case(
        "smooth3_border_off_by_one",
        lambda: Smooth3(Smooth3BorderFn),
        [randn(2, 7, seed=104)],
        False,
        {"input0"},
        notes="input gradient wrong only at the first and last element of each row",
    ),
    Case("channel_affine_ok", lambda: ChannelAffine(), [randn(2, 5, 5, seed=105)], True),
    Case(
        "channel_affine_bias_unreduced",
        lambda: ChannelAffine(ChannelAffineNoReduceFn),
        [randn(2, 5, 5, seed=106)],
        False,
        {"bias"},
        notes="bias gradient returned unreduced; autograd sum_to() reduces the wrong dims silently (C == L)",
    ),
    Case(
        "conv1d_bias_mean_over_length",
        lambda: Conv1d(Conv1dBiasMeanFn),
        [randn(2, 3, 8, seed=107)],
        False,
        {"bias"},
        notes="bias gradient summed over the batch but averaged over the length axis (ratio 1/L)",
    ),
]

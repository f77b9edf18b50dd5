"""Stride-2 sum pooling, y[i] = x[2i] + x[2i+1] (an odd tail x[-1] is kept as its own output).

``Pool2Bug``'s backward forgets the odd tail: right on even lengths, wrong at the last element of
odd ones -- the kind of bug one input shape does not show (``pool.yaml``'s matrix does; it fails on
purpose).
"""

import torch
from torch import nn


class _Pool2Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        n = x.shape[-1]
        ctx.n = n
        pairs = x[..., : n - n % 2].reshape(*x.shape[:-1], -1, 2).sum(-1)
        return torch.cat([pairs, x[..., n - n % 2 :]], -1)

    @staticmethod
    def backward(ctx, g):
        n = ctx.n
        grad = g[..., : n // 2].repeat_interleave(2, -1)
        if n % 2:
            grad = torch.cat([grad, g[..., n // 2 :]], -1)
        return grad


class _Pool2BugFn(_Pool2Fn):
    @staticmethod
    def backward(ctx, g):
        n = ctx.n
        grad = g[..., : n // 2].repeat_interleave(2, -1)
        if n % 2:  # BUG: the tail's gradient is left at zero
            grad = torch.cat([grad, torch.zeros_like(g[..., n // 2 :])], -1)
        return grad


class Pool2(nn.Module):
    def forward(self, x):
        return _Pool2Fn.apply(x)


class Pool2Bug(nn.Module):
    def forward(self, x):
        return _Pool2BugFn.apply(x)

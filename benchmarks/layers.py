"""Layers with hand-written backwards used by ``benchmarks/bench.py``.

* :class:`SiLU` -- elementwise ``y = x * sigmoid(x)`` as a classic
  ``autograd.Function`` (forward(ctx, ...) / backward(ctx, ...)).
* :class:`Linear` -- ``y = x W^T + b`` with a hand-written backward.
* :class:`GaussFilterNoVmap` -- the seed Gaussian filter
  (``layer_specs/gauss_filter.py``) with a data-dependent ``if`` in its
  forward, which ``torch.func.vmap`` cannot run: a layer that genuinely cannot
  be batched, so gradcheck has to fall back to its one-forward-per-perturbation
  loop.

All of them are correct; the benchmark measures cost, not bug finding.  The file
is importable on its own, so the CLI can load it as well:
``gradcheck run benchmarks/layers.py:SiLU --input 1x16``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def _load_gauss():
    """Import ``layer_specs/gauss_filter.py`` (not a package) once, by path."""
    name = "_bench_gauss_filter"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "layer_specs" / "gauss_filter.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


gauss = _load_gauss()
GaussFilter = gauss.GaussFilter


class SiLUFunction(torch.autograd.Function):
    """y = x * sigmoid(x);  dy/dx = s (1 + x (1 - s)) with s = sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad_out * (s * (1 + x * (1 - s)))


class SiLU(nn.Module):
    """Elementwise x * sigmoid(x) with the hand-written backward above (no parameters)."""

    def forward(self, x):
        return SiLUFunction.apply(x)


class LinearFunction(torch.autograd.Function):
    """y = x W^T + b for x (B, in), W (out, in), b (out,)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.t() + bias

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        return grad_out @ weight, grad_out.t() @ x, grad_out.sum(0)


class Linear(nn.Module):
    """A linear layer (weight (out, in), bias (out,)) using :class:`LinearFunction`."""

    def __init__(self, in_features: int = 64, out_features: int = 64):
        super().__init__()
        gen = torch.Generator().manual_seed(1234)
        bound = in_features**-0.5
        self.weight = nn.Parameter((torch.rand(out_features, in_features, generator=gen) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(out_features, generator=gen) * 2 - 1) * bound)

    def forward(self, x):
        return LinearFunction.apply(x, self.weight, self.bias)


class GaussianConvNoVmap(gauss.GaussianConvFunction):
    """The seed Gaussian convolution, with an input check vmap cannot trace."""

    @staticmethod
    def forward(ctx, x, sigma, mu):
        if bool(torch.isnan(x).any()):  # data-dependent Python control flow: not vmappable
            raise ValueError("the signal contains NaN")
        return gauss.GaussianConvFunction.forward(ctx, x, sigma, mu)


class GaussFilterNoVmap(GaussFilter):
    """GaussFilter whose forward cannot run under torch.func.vmap (forces the loop path)."""

    function = GaussianConvNoVmap

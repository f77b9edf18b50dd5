"""A layer file checked whole (``gradcheck run layer_specs/examples/mylayers.py``): what is checked,
what is skipped and why.

* ``_ScaleFn``: a Function without ``gradcheck_inputs`` -- skipped, it is checked through ``Scale``;
* ``Scale``, ``Wide``: Modules using it, with inputs from ``gradcheck_inputs`` (a list; computed by a
  classmethod) -- correct, they pass;
* ``CubeFn``: y = x^3 whose backward forgets the 3 -- fails on purpose; its inputs come from the
  file's ``gradcheck_inputs`` dict;
* ``Head``: plain autograd, no hand-written backward -- skipped;
* ``Gate``: its constructor needs an argument -- skipped (a spec or ``--init`` gives it).
"""

import torch
from torch import nn


class _ScaleFn(torch.autograd.Function):
    """y = x * w over the last axis; gradients for x and w."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * w, (g * x).reshape(-1, w.numel()).sum(0)


class Scale(nn.Module):
    width = 3
    gradcheck_inputs = ["4x3"]  # its inputs, as --input takes them

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, self.width))

    def forward(self, x):
        return _ScaleFn.apply(x, self.weight)  # a Function of the file with a hand-written backward


class Wide(Scale):
    width = 5

    @classmethod
    def gradcheck_inputs(cls):  # or computed
        return [f"2x{cls.width}"]


class CubeFn(torch.autograd.Function):
    """y = x^3; BUG: the backward forgets the factor 3."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x * x


class Head(nn.Module):
    """Plain autograd: nothing hand-written to check (torch's own gradients are right)."""

    gradcheck_inputs = ["2x3"]

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 2)

    def forward(self, x):
        return self.proj(x).tanh()


class Gate(nn.Module):
    """Needs its width: checked with a spec, or gradcheck run mylayers.py:Gate --init 3 --input 2x3."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return _ScaleFn.apply(x, self.weight.sigmoid())


gradcheck_inputs = {"CubeFn": ["6"]}  # or keyed by class name, for classes you would rather not touch

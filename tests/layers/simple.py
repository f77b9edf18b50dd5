"""Small layers for the gradcheck test suite: correct ones and ones with planted bugs.

Every backward here is written by hand (custom autograd.Functions), so a check can
tell a right gradient from a wrong one.  Keep shapes small in the tests.
"""

import random

import numpy as np
import torch
from torch import nn

# Where the planted single-element bug sits (see SquareOneElementBug).
BUG_INDEX = (1, 2)
BUG_OFFSET = 1.0


# --------------------------------------------------------------------------- elementwise functions


class Square(torch.autograd.Function):
    """y = x^2, dy/dx = 2x.  Correct."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_out


class SquareBug(torch.autograd.Function):
    """y = x^2 with the classic slip dy/dx = x (the factor 2 forgotten)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return x * grad_out


class SquareOneElementBug(torch.autograd.Function):
    """y = x^2 whose gradient is off by BUG_OFFSET at BUG_INDEX only (2-D inputs)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad = 2 * x * grad_out
        grad = grad.clone()
        grad[BUG_INDEX] += BUG_OFFSET
        return grad


class Tanh(torch.autograd.Function):
    """y = tanh(x), dy/dx = 1 - y^2.  Correct."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        (y,) = ctx.saved_tensors
        return (1 - y * y) * grad_out


class Mul(torch.autograd.Function):
    """y = a * b (same shape).  Correct for both inputs."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        return grad_out * b, grad_out * a


class MulSecondBug(torch.autograd.Function):
    """y = a * b whose gradient for b is wrong (uses b instead of a); a's is right."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        return grad_out * b, grad_out * b


# --------------------------------------------------------------------------- modules with a parameter


class ScaleFn(torch.autograd.Function):
    """y = x * w (w broadcast over the last axis).  ``wrong_weight`` plants a bug in dL/dw."""

    @staticmethod
    def forward(ctx, x, w, wrong_weight):
        ctx.save_for_backward(x, w)
        ctx.wrong_weight = wrong_weight
        return x * w

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        grad_x = grad_out * w
        grad_w = (grad_out * x).reshape(-1, w.shape[-1]).sum(0)
        if ctx.wrong_weight:
            grad_w = 2 * grad_w  # BUG: factor 2 too many
        return grad_x, grad_w, None


class Scale(nn.Module):
    """y = x * weight, weight of shape (n,); hand-written backward, correct."""

    wrong_weight = False

    def __init__(self, n: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, n))
        self.register_buffer("offset", torch.zeros(n))

    def forward(self, x):
        return ScaleFn.apply(x, self.weight, self.wrong_weight) + self.offset


class ScaleWeightBug(Scale):
    """Scale whose weight gradient is twice too large; the input gradient is right."""

    wrong_weight = True


class NeedsArg(nn.Module):
    """A module whose constructor needs an argument (cannot be built from the command line)."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return ScaleFn.apply(x, self.weight, False)


scaled = Scale(4)  # a module instance at module level


# --------------------------------------------------------------------------- tuple outputs


class SquareAndTanh(torch.autograd.Function):
    """Two outputs (x^2, tanh x), both gradients used in backward.  ``drop_second`` plants a bug."""

    @staticmethod
    def forward(ctx, x, drop_second):
        y2 = torch.tanh(x)
        ctx.save_for_backward(x, y2)
        ctx.drop_second = drop_second
        return x * x, y2

    @staticmethod
    def backward(ctx, g1, g2):
        x, y2 = ctx.saved_tensors
        grad = 2 * x * g1
        if not ctx.drop_second:
            grad = grad + (1 - y2 * y2) * g2
        return grad, None


class TwoOutputs(nn.Module):
    """Returns a tuple of two outputs; correct backward."""

    drop_second = False

    def forward(self, x):
        return SquareAndTanh.apply(x, self.drop_second)


class TwoOutputsBug(TwoOutputs):
    """Returns a tuple of two outputs; backward ignores the second output's gradient."""

    drop_second = True


# --------------------------------------------------------------------------- integer labels


SEEN_LABELS = []  # what LabelPick's forward was given, for tests


class LabelPick(nn.Module):
    """y[i] = tanh(x[i, labels[i]]) via a hand-written backward; labels are int64 and not checked."""

    def forward(self, x, labels):
        SEEN_LABELS.append((labels.dtype, labels.detach().clone()))
        return PickFn.apply(x, labels)


class PickFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, labels):
        picked = x.gather(1, labels.view(-1, 1)).squeeze(1)
        y = torch.tanh(picked)
        ctx.save_for_backward(x, labels, y)
        ctx.mark_non_differentiable(labels)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, labels, y = ctx.saved_tensors
        grad = torch.zeros_like(x)
        grad.scatter_(1, labels.view(-1, 1), ((1 - y * y) * grad_out).unsqueeze(1))
        return grad, None


def only_labels(labels):
    """A function of an integer tensor only: nothing differentiable to check."""
    return labels.to(torch.float64) * 2.0


# --------------------------------------------------------------------------- plain functions and misbehaving layers


def poly(x, y):
    """A plain Python function of tensors (autograd's own backward; correct)."""
    return x * y + torch.sin(x)


def square_fn(x):
    """A plain function that uses a hand-written Function."""
    return Square.apply(x)


class Raises(nn.Module):
    """A layer whose forward raises."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x):
        raise ValueError("planted failure in forward")


class BackwardRaisesFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 3

    @staticmethod
    def backward(ctx, grad_out):
        raise RuntimeError("planted failure in backward")


class UsesGlobalRng(nn.Module):
    """Draws from torch, numpy and random global generators in forward (outputs do not depend on them)."""

    def __init__(self, n: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(-1.0, 1.0, n))

    def forward(self, x):
        torch.rand(3)
        np.random.rand(3)
        random.random()
        return ScaleFn.apply(x, self.weight, False)


class ManyScalesWeightBug(nn.Module):
    """Eight chained ScaleWeightBug-style scales with long parameter names: every weight gradient is wrong."""

    def __init__(self, n: int = 3, depth: int = 8):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(depth):
            block = nn.Module()
            block.scale_weight = nn.Parameter(torch.linspace(0.9, 1.1, n) + 0.01 * i)
            self.blocks.append(block)

    def forward(self, x):
        for block in self.blocks:
            x = ScaleFn.apply(x, block.scale_weight, True)
        return x

"""Linear layer (no bias) with sigmoid activation, hand-written backward.

    y = sigmoid(x W^T),  x: (B, in),  W: (out, in)                    (eq. 29, a = sigma(z))

With delta = dC/dy * sigma'(z) and sigma'(z) = y (1 - y) (eq. 19):

    dC/dW = delta^T x      (eq. 38, shape (out, in))
    dC/dx = delta W        (eq. 43, shape (B, in))

``LinearSigmoidTransposedBug`` writes the weight gradient as x^T delta, which
is dC/dW transposed.  That product only has W's shape when in == out, which is
why the buggy layer defaults to a square 4x4 weight: the mistake then slips past
PyTorch's shape check and only a gradient check catches it.  The input gradient
stays correct.
"""

import math

import torch
from torch import nn


def weight_grad(delta, x):
    """dC/dW = delta^T x, eq. 38."""
    return delta.t() @ x


def weight_grad_transposed(delta, x):
    """BUG: x^T delta, the transpose of eq. 38 (shape (in, out))."""
    return x.t() @ delta


def linear_sigmoid_backward(ctx, grad_y, weight_grad=weight_grad):
    """Gradients of C w.r.t. (x, W) given dC/dy; ``weight_grad`` is what the buggy variant swaps."""
    x, weight, y = ctx.saved_tensors
    delta = grad_y * y * (1 - y)  # dC/dz = dC/da . sigma'(z), eq. 19
    grad_x = delta @ weight if ctx.needs_input_grad[0] else None  # eq. 43
    grad_w = weight_grad(delta, x) if ctx.needs_input_grad[1] else None  # eq. 38
    return grad_x, grad_w


class LinearSigmoidFunction(torch.autograd.Function):
    """y = sigmoid(x W^T)."""

    @staticmethod
    def forward(ctx, x, weight):
        y = torch.sigmoid(x @ weight.t())
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        return linear_sigmoid_backward(ctx, grad_y)


class LinearSigmoidFunctionTransposedBug(LinearSigmoidFunction):
    """BUG: dC/dW computed as x^T delta (the transpose of eq. 38)."""

    @staticmethod
    def backward(ctx, grad_y):
        return linear_sigmoid_backward(ctx, grad_y, weight_grad=weight_grad_transposed)


def _init_weight(out_features: int, in_features: int) -> torch.Tensor:
    """Deterministic weight from a private generator (the global RNG is not touched)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(out_features, in_features, generator=gen) / math.sqrt(in_features)


class LinearSigmoid(nn.Module):
    """sigmoid(x W^T) with a learnable ``weight`` of shape (out_features, in_features)."""

    function = LinearSigmoidFunction

    def __init__(self, in_features: int = 5, out_features: int = 3):
        super().__init__()
        self.weight = nn.Parameter(_init_weight(out_features, in_features))

    def forward(self, x):
        return self.function.apply(x, self.weight)


class LinearSigmoidTransposedBug(LinearSigmoid):
    """LinearSigmoid whose weight gradient is transposed; square by default so shapes still match."""

    function = LinearSigmoidFunctionTransposedBug

    def __init__(self, in_features: int = 4, out_features: int = 4):
        super().__init__(in_features, out_features)

"""A batch of scalars scaling a constant N x N matrix, hand-written backward.

    Z_b = x_b * M,   x: (B,),  M: (N, N) constant,  Z: (B, N, N)

dL/dZ_b is N x N but dL/dx_b is a single number, so the chain rule sums over
the matrix:

    dL/dx_b = sum_ij dL/dZ_b,ij * dZ_b,ij/dx_b = sum_ij dL/dZ_b,ij * M_ij

which is the seed's accepted fix ``sum(sum(dLdZ(:,:,:,i) .* M))``.

``ScaledMatrixNoSumBug`` reproduces the step before it: the user forms
dLdZ .* dZdX (a (B, N, N) tensor, "the dimensions don't match") and squeezes it
down to the required (B,) with a *mean* over the matrix instead of a sum, so the
input gradient comes out 1/N^2 times too small.
"""

import torch
from torch import nn


class ScaledMatrixFunction(torch.autograd.Function):
    """Z = x[:, None, None] * M; M gets no gradient."""

    @staticmethod
    def forward(ctx, x, matrix):
        ctx.save_for_backward(matrix)
        return x[:, None, None] * matrix

    @staticmethod
    def backward(ctx, grad_z):
        (matrix,) = ctx.saved_tensors
        return (grad_z * matrix).sum(dim=(1, 2)), None  # dL/dx_b = sum_ij dL/dZ_b,ij M_ij


class ScaledMatrixFunctionNoSumBug(ScaledMatrixFunction):
    """BUG: averages dL/dZ .* M over the matrix instead of summing it."""

    @staticmethod
    def backward(ctx, grad_z):
        (matrix,) = ctx.saved_tensors
        return (grad_z * matrix).mean(dim=(1, 2)), None


class ScaledMatrix(nn.Module):
    """x (B,) -> x_b * M with a fixed (n, n) buffer ``M`` (entries 1/n .. n, not all equal)."""

    function = ScaledMatrixFunction

    def __init__(self, n: int = 4):
        super().__init__()
        self.register_buffer("M", torch.arange(1, n * n + 1, dtype=torch.get_default_dtype()).reshape(n, n) / n)

    def forward(self, x):
        return self.function.apply(x, self.M)


class ScaledMatrixNoSumBug(ScaledMatrix):
    """ScaledMatrix whose input gradient is a mean over the matrix instead of a sum."""

    function = ScaledMatrixFunctionNoSumBug

"""The analysis filter bank as an autograd.Function, and the module that holds its filters."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

from .filters import FILTERS


class AFB1D(Function):
    """Lowpass and highpass correlation with stride 2; the filters are constant inputs."""

    @staticmethod
    def forward(ctx, x, h0, h1):
        L = h0.numel()
        w = torch.stack([h0, h1]).reshape(2, 1, L)
        ctx.save_for_backward(w)
        ctx.n = x.shape[-1]
        return F.conv1d(x, w, stride=2, padding=L - 1)

    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        L = w.shape[-1]
        full = (dy.shape[-1] - 1) * 2 - 2 * (L - 1) + L
        return F.conv_transpose1d(dy, w, stride=2, padding=L - 1, output_padding=ctx.n - full), None, None


class AFB1DFlipped(AFB1D):
    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        L = w.shape[-1]
        full = (dy.shape[-1] - 1) * 2 - 2 * (L - 1) + L
        # BUG: flipped filters: a convolution where the adjoint of a correlation is needed.
        return F.conv_transpose1d(dy, w.flip(-1), stride=2, padding=L - 1, output_padding=ctx.n - full), None, None


class DWT1D(nn.Module):
    """One level of the forward transform of x (N, 1, L); the filters are buffers."""

    fn = AFB1D

    def __init__(self, wave: str = "db2"):
        super().__init__()
        h0, h1 = FILTERS[wave]
        self.register_buffer("h0", torch.tensor(h0))
        self.register_buffer("h1", torch.tensor(h1))

    def forward(self, x):
        return self.fn.apply(x, self.h0, self.h1)


class DWT1DFlipped(DWT1D):
    fn = AFB1DFlipped

"""Large-margin fully connected layer, hand-written backward.

A bias-free fully connected layer whose target logit is shrunk when positive:

    f_ij    = w_j . x_i                   (j != y_i)
    f_i,y_i = w_y_i . x_i                 if w_y_i . x_i < 0
              k * w_y_i . x_i             if w_y_i . x_i > 0,    0 < k < 1

x: (B, D), W: (C, D), labels y: int64 (B,), k: a Python float.  With
s_ij = k where (j == y_i and f_i,y_i > 0) and 1 elsewhere, the seed's
derivatives df/dx_i = s w_j and df/dw_j = s x_i give

    dJ/dx_i = sum_j dJ/df_ij s_ij w_j          dJ/dw_j = sum_i dJ/df_ij s_ij x_i

i.e. the fully connected backward applied to dJ/df * s.  (The seed's own
loop-based backward adds the correction to all of w_grad and loops over
X.shape[1]; this vectorised version follows its formulas instead.)

The layer has a kink at f_i,y_i = 0, where the derivative jumps from 1 to k.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class LargeMarginFunction(torch.autograd.Function):
    """f = x W^T with f[i, y_i] *= k where f[i, y_i] > 0."""

    @staticmethod
    def forward(ctx, x, weight, labels, k):
        f = x @ weight.t()
        shrunk = F.one_hot(labels, weight.shape[0]).bool() & (f > 0)
        ctx.save_for_backward(x, weight, shrunk)
        ctx.k = k
        return torch.where(shrunk, f * k, f)

    @staticmethod
    def backward(ctx, grad_f):
        x, weight, shrunk = ctx.saved_tensors
        grad_f = torch.where(shrunk, grad_f * ctx.k, grad_f)  # dJ/df * s
        grad_x = grad_f @ weight if ctx.needs_input_grad[0] else None
        grad_w = grad_f.t() @ x if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None, None


class LargeMarginFC(nn.Module):
    """Large-margin FC layer with learnable ``weight`` (num_classes, in_features); forward(x, labels)."""

    def __init__(self, in_features: int = 6, num_classes: int = 4, k: float = 0.5):
        super().__init__()
        gen = torch.Generator().manual_seed(0)  # private generator: the global RNG is not touched
        self.weight = nn.Parameter(torch.randn(num_classes, in_features, generator=gen) / math.sqrt(in_features))
        self.k = float(k)

    def forward(self, x, labels):
        return LargeMarginFunction.apply(x, self.weight, labels, self.k)

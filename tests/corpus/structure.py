"""Layers whose structure matters: several inputs, several outputs, buffers, outer products."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function

from . import Case, param, randn


class OuterFn(Function):
    """y = a b^T: every input element feeds a whole row or column of outputs."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a[:, None] * b[None, :]

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b, g.t() @ a


class GatedFn(Function):
    """y = x * sigmoid(z), x and z of the same shape."""

    @staticmethod
    def forward(ctx, x, z):
        s = torch.sigmoid(z)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return g * s, g * x * s * (1 - s)


class GatedSwappedFn(GatedFn):
    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        grad_x, grad_z = g * s, g * x * s * (1 - s)
        return grad_z, grad_x  # BUG: returned in the wrong order (same shapes, so nothing complains)


class MatmulFn(Function):
    """y = A @ B for two square inputs."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b.t(), a.t() @ g


class MatmulMissingTransposeFn(MatmulFn):
    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b, a.t() @ g  # BUG: g @ B instead of g @ B^T (square, so the shape fits)


class ScaleFn(Function):
    """y = x * scale (elementwise, both inputs)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x, scale)
        return x * scale

    @staticmethod
    def backward(ctx, g):
        x, scale = ctx.saved_tensors
        return g * scale, g * x


class ScaleNoneFn(ScaleFn):
    @staticmethod
    def backward(ctx, g):
        x, scale = ctx.saved_tensors
        return g * scale, None  # BUG: the scale "is just a constant" -- but it is an input that matters


class TwoOutputFn(Function):
    """(x W^T, tanh(x)): a projection and an auxiliary output."""

    @staticmethod
    def forward(ctx, x, weight):
        t = torch.tanh(x)
        ctx.save_for_backward(x, weight, t)
        return x @ weight.t(), t

    @staticmethod
    def backward(ctx, g_proj, g_aux):
        x, weight, t = ctx.saved_tensors
        return g_proj @ weight + g_aux * (1 - t * t), g_proj.t() @ x


class TwoOutputDroppedFn(TwoOutputFn):
    @staticmethod
    def backward(ctx, g_proj, g_aux):
        x, weight, t = ctx.saved_tensors
        return g_proj @ weight, g_proj.t() @ x  # BUG: ignores the gradient of the second output


class TwoOutput(nn.Module):
    def __init__(self, fn=TwoOutputFn):
        super().__init__()
        self.fn = fn
        self.weight = param(3, 4, seed=400, scale=0.5)

    def forward(self, x):
        return self.fn.apply(x, self.weight)


class CenterScaleFn(Function):
    """y = (x - mean) * weight, with ``mean`` a buffer (not checked, passed through)."""

    @staticmethod
    def forward(ctx, x, mean, weight):
        c = x - mean
        ctx.save_for_backward(c, weight)
        return c * weight

    @staticmethod
    def backward(ctx, g):
        c, weight = ctx.saved_tensors
        return g * weight, None, (g * c).sum(0)


class CenterScaleForgotBufferFn(Function):
    @staticmethod
    def forward(ctx, x, mean, weight):
        ctx.save_for_backward(x, weight)
        return (x - mean) * weight

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g * weight, None, (g * x).sum(0)  # BUG: forgot to subtract the buffer in the weight gradient


class CenterScale(nn.Module):
    def __init__(self, fn=CenterScaleFn):
        super().__init__()
        self.fn = fn
        self.register_buffer("running_mean", randn(4, seed=410, scale=0.5, mean=1.0))
        self.weight = param(4, seed=411, scale=0.5, mean=1.0)

    def forward(self, x):
        return self.fn.apply(x, self.running_mean, self.weight)


CASES = [
    Case("outer_product_ok", lambda: OuterFn, [randn(6, seed=501), randn(7, seed=502)], True),
    Case("gated_ok", lambda: GatedFn, [randn(3, 4, seed=503), randn(3, 4, seed=504)], True),
    Case(
        "gated_swapped_gradients",
        lambda: GatedSwappedFn,
        [randn(3, 4, seed=505), randn(3, 4, seed=506)],
        False,
        {"input0", "input1"},
        notes="gradients of two same-shape inputs returned in swapped order",
    ),
    Case("matmul_ok", lambda: MatmulFn, [randn(3, 3, seed=519), randn(3, 3, seed=520)], True),
    Case(
        "matmul_missing_transpose",
        lambda: MatmulMissingTransposeFn,
        [randn(3, 3, seed=521), randn(3, 3, seed=522)],
        False,
        {"input0"},
    ),
    Case("scale_ok", lambda: ScaleFn, [randn(3, 4, seed=507), randn(3, 4, seed=508)], True),
    Case(
        "scale_none_gradient",
        lambda: ScaleNoneFn,
        [randn(3, 4, seed=509), randn(3, 4, seed=510)],
        False,
        {"input1"},
        notes="backward returns None for an input that matters",
    ),
    Case("two_outputs_ok", lambda: TwoOutput(), [randn(2, 4, seed=511)], True),
    Case(
        "two_outputs_second_dropped",
        lambda: TwoOutput(TwoOutputDroppedFn),
        [randn(2, 4, seed=512)],
        False,
        {"input0"},
        notes="backward ignores the gradient of the second output (the weight does not see it)",
    ),
    Case("buffer_ok", lambda: CenterScale(), [randn(3, 4, seed=513)], True),
    Case(
        "buffer_forgotten_in_weight_grad",
        lambda: CenterScale(CenterScaleForgotBufferFn),
        [randn(3, 4, seed=514)],
        False,
        {"weight"},
    ),
]


class EmbeddingFn(Function):
    """y = weight[idx] with integer indices (passed through, not checked); indices repeat."""

    @staticmethod
    def forward(ctx, idx, weight):
        ctx.save_for_backward(idx)
        ctx.rows = weight.shape[0]
        return weight[idx]

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        gw = torch.zeros(ctx.rows, g.shape[-1], dtype=g.dtype, device=g.device)
        gw.index_add_(0, idx.reshape(-1), g.reshape(-1, g.shape[-1]))
        return None, gw


class EmbeddingOverwriteFn(EmbeddingFn):
    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        gw = torch.zeros(ctx.rows, g.shape[-1], dtype=g.dtype, device=g.device)
        gw[idx.reshape(-1)] = g.reshape(-1, g.shape[-1])  # BUG: repeated indices overwrite instead of accumulate
        return None, gw


class Embedding(nn.Module):
    def __init__(self, fn=EmbeddingFn):
        super().__init__()
        self.fn = fn
        self.weight = param(6, 3, seed=420)

    def forward(self, idx):
        return self.fn.apply(idx, self.weight)


class SliceFn(Function):
    """y = 2 x[:, :3]; the second input is accepted but unused (None is its right gradient)."""

    @staticmethod
    def forward(ctx, x, unused):
        ctx.shape = x.shape
        return 2 * x[:, :3]

    @staticmethod
    def backward(ctx, g):
        gx = torch.zeros(ctx.shape, dtype=g.dtype, device=g.device)
        gx[:, :3] = 2 * g
        return gx, None


class DropoutFn(Function):
    """Inverted dropout drawing its mask from the global RNG (the checker re-seeds every forward)."""

    @staticmethod
    def forward(ctx, x):
        mask = (torch.rand(x.shape, dtype=x.dtype, device=x.device) > 0.3).to(x.dtype) / 0.7
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class DropoutRedrawFn(DropoutFn):
    @staticmethod
    def backward(ctx, g):
        # BUG: draws a fresh mask in backward instead of reusing the forward's.
        mask = (torch.rand(g.shape, dtype=g.dtype, device=g.device) > 0.3).to(g.dtype) / 0.7
        return g * mask


_IDX = torch.tensor([[0, 2, 2], [5, 2, 0]])

CASES += [
    Case("embedding_ok", lambda: Embedding(), [_IDX], True, notes="integer input with repeated indices"),
    Case(
        "embedding_overwrite_duplicates",
        lambda: Embedding(EmbeddingOverwriteFn),
        [_IDX],
        False,
        {"weight"},
        notes="gw[idx] = g: rows hit twice keep only one contribution",
    ),
    Case(
        "slice_with_unused_input_ok",
        lambda: SliceFn,
        [randn(3, 5, seed=515), randn(2, seed=516)],
        True,
        notes="None is the right gradient for an input that does not matter; zero gradient for unused columns",
    ),
    Case(
        "dropout_ok",
        lambda: DropoutFn,
        [randn(3, 5, seed=517)],
        True,
        notes="random mask, same draws at every point",
        torch_unreliable="draws its mask from the global RNG in every forward; torch's gradcheck does not re-seed it between evaluations",
    ),
    Case(
        "dropout_redraws_mask",
        lambda: DropoutRedrawFn,
        [randn(3, 5, seed=518)],
        False,
        {"input0"},
        notes="backward draws a new mask (also nondeterministic backward)",
    ),
]

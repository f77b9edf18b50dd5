"""Layers as third-party code writes them, called as their users call them (issue 14).

Each is written the way it appears in real projects -- a wavelet filter bank whose
filters are inputs but not variables, a resampler with keyword flags, an inverse
transform taking ``(yl, [yh0, yh1])``, a tied autoencoder, a half-precision linear
layer, PyTorch's own ``grid_sample`` at pixel centres -- with a realistic buggy twin
where one makes sense. Tensors are named by the layer's own argument names
(``by_name``): ``x``, ``h0``, ``coeffs[1][0]``, ``encoder.weight``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

from gradcheck_cli import InputSpec

from . import Case, param, randn, uniform
from .kinks import AT_KINK

# --------------------------------------------------------------------------- wavelets: constant filters

# Daubechies-2 analysis filters (pywt.Wavelet("db2").dec_lo / dec_hi): not symmetric, so a
# flipped filter is a different filter.
_S3 = math.sqrt(3.0)
DB2_DEC_LO = [(1 - _S3) / (4 * math.sqrt(2)), (3 - _S3) / (4 * math.sqrt(2)), (3 + _S3) / (4 * math.sqrt(2)), (1 + _S3) / (4 * math.sqrt(2))]
DB2_DEC_HI = [-DB2_DEC_LO[3], DB2_DEC_LO[2], -DB2_DEC_LO[1], DB2_DEC_LO[0]]


def db2_filters() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(DB2_DEC_LO, dtype=torch.float64), torch.tensor(DB2_DEC_HI, dtype=torch.float64)


class AFB1D(Function):
    """One level of a 1-D analysis filter bank (pytorch_wavelets style): lowpass and highpass
    correlation with stride 2, zero padding. ``h0``/``h1`` are the fixed filters: inputs, not
    variables, so backward returns None for them."""

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
        dx = F.conv_transpose1d(dy, w, stride=2, padding=L - 1, output_padding=ctx.n - full)
        return dx, None, None


class AFB1DGarbageFilterGrad(AFB1D):
    """Same, but returns a made-up gradient for the filters (someone had to return *something*)."""

    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        dx, _, _ = AFB1D.backward(ctx, dy)
        return dx, torch.ones_like(w[0, 0]), torch.full_like(w[1, 0], 7.0)


class AFB1DFlipped(AFB1D):
    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        L = w.shape[-1]
        full = (dy.shape[-1] - 1) * 2 - 2 * (L - 1) + L
        # BUG: flips the filters "because the adjoint of a convolution is the flipped convolution" --
        # but conv_transpose1d already is the adjoint of conv1d: the flip makes it a convolution.
        dx = F.conv_transpose1d(dy, w.flip(-1), stride=2, padding=L - 1, output_padding=ctx.n - full)
        return dx, None, None


def _signal(n: int, seed: int) -> torch.Tensor:
    return randn(2, 1, n, seed=seed)


CASES = [
    Case("afb1d_constant_filters_ok", lambda: AFB1D, [_signal(16, 1401), *db2_filters()], True, constant=("h0", "h1"), by_name=True),
    Case(
        "afb1d_constant_filters_odd_length_ok",
        lambda: AFB1D,
        [_signal(15, 1402), *db2_filters()],
        True,
        constant=("h0", "h1"),
        by_name=True,
        notes="odd length: the transposed convolution needs output_padding 1",
    ),
    Case(
        "afb1d_garbage_filter_grad_constant_ok",
        lambda: AFB1DGarbageFilterGrad,
        [_signal(16, 1403), *db2_filters()],
        True,
        constant=("h0", "h1"),
        by_name=True,
        notes="whatever backward returns for a constant input is never compared",
    ),
    Case(
        "afb1d_filters_not_marked_constant",
        lambda: AFB1D,
        [_signal(16, 1404), *db2_filters()],
        False,
        {"h0", "h1"},
        by_name=True,
        notes="without constant the filters are variables, and None is not their gradient",
    ),
    Case(
        "afb1d_flipped_filters_in_backward",
        lambda: AFB1DFlipped,
        [_signal(16, 1405), *db2_filters()],
        False,
        {"x"},
        constant=("h0", "h1"),
        by_name=True,
    ),
]

# --------------------------------------------------------------------------- keyword flags and Python values


class _Lerp1d(Function):
    """Linear resampling of x (B, N) at normalised positions grid (B, M) in [-1, 1], border padding."""

    @staticmethod
    def forward(ctx, x, grid, align_corners):
        n = x.shape[-1]
        scale = (n - 1) / 2 if align_corners else n / 2
        pos = (grid + 1) * scale - (0.0 if align_corners else 0.5)
        inside = (pos > 0) & (pos < n - 1)
        pos = pos.clamp(0, n - 1)
        i0 = pos.floor().clamp(max=n - 2).long()
        t = pos - i0
        a, b = x.gather(-1, i0), x.gather(-1, i0 + 1)
        ctx.save_for_backward(i0, t, a, b, inside)
        ctx.n, ctx.scale = n, scale
        return a + t * (b - a)

    @staticmethod
    def backward(ctx, g):
        i0, t, a, b, inside = ctx.saved_tensors
        dx = g.new_zeros(g.shape[0], ctx.n)
        dx.scatter_add_(-1, i0, g * (1 - t))
        dx.scatter_add_(-1, i0 + 1, g * t)
        dgrid = g * (b - a) * ctx.scale * inside.to(g.dtype)
        return dx, dgrid, None


class _Lerp1dFixedScale(_Lerp1d):
    @staticmethod
    def backward(ctx, g):
        i0, t, a, b, inside = ctx.saved_tensors
        dx = g.new_zeros(g.shape[0], ctx.n)
        dx.scatter_add_(-1, i0, g * (1 - t))
        dx.scatter_add_(-1, i0 + 1, g * t)
        # BUG: the chain-rule factor of the coordinate mapping written for align_corners=True only.
        dgrid = g * (b - a) * ((ctx.n - 1) / 2) * inside.to(g.dtype)
        return dx, dgrid, None


class _Nearest1d(Function):
    @staticmethod
    def forward(ctx, x, grid, align_corners):
        n = x.shape[-1]
        pos = (grid + 1) * ((n - 1) / 2) if align_corners else ((grid + 1) * n - 1) / 2
        idx = pos.round().clamp(0, n - 1).long()
        ctx.save_for_backward(idx)
        ctx.n = n
        return x.gather(-1, idx)

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return g.new_zeros(g.shape[0], ctx.n).scatter_add_(-1, idx, g), torch.zeros_like(g), None


def resample(x, grid, *, mode="linear", align_corners=False):
    """1-D grid_sample: x (B, N) sampled at grid (B, M) in [-1, 1]."""
    if mode == "linear":
        return _Lerp1d.apply(x, grid, align_corners)
    if mode == "nearest":
        return _Nearest1d.apply(x, grid, align_corners)
    raise ValueError(f"unknown mode {mode!r}")


def resample_fixed_scale(x, grid, *, mode="linear", align_corners=False):
    if mode != "linear":
        raise ValueError(f"unknown mode {mode!r}")
    return _Lerp1dFixedScale.apply(x, grid, align_corners)


class ScaleFlip(Function):
    """y = scale * x, reversed along the last axis when ``flip``; ``scale`` a Python float."""

    @staticmethod
    def forward(ctx, x, scale, flip: bool):
        ctx.scale, ctx.flip = scale, flip
        y = x * scale
        return y.flip(-1) if flip else y

    @staticmethod
    def backward(ctx, g):
        gx = g.flip(-1) if ctx.flip else g
        return gx * ctx.scale, None, None


class ScaleFlipForgetsFlip(ScaleFlip):
    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None, None  # BUG: the flip is not undone on the way back


def _grid(b: int, m: int, seed: int) -> torch.Tensor:
    return uniform(b, m, seed=seed, low=-0.9, high=0.9)


CASES += [
    Case("resample_linear_keywords_ok", lambda: resample, [randn(2, 8, seed=1411), _grid(2, 5, 1412)], True, keywords={"mode": "linear", "align_corners": False}, by_name=True),
    Case("resample_linear_align_corners_ok", lambda: resample, [randn(2, 8, seed=1413), _grid(2, 5, 1414)], True, keywords={"align_corners": True}, by_name=True),
    Case(
        "resample_nearest_keyword_ok",
        lambda: resample,
        [randn(2, 8, seed=1415), _grid(2, 5, 1416)],
        True,
        keywords={"mode": "nearest"},
        by_name=True,
        notes="the keyword picks another Function: piecewise constant in grid (zero gradient)",
    ),
    Case(
        "resample_fixed_scale_bug",
        lambda: resample_fixed_scale,
        [randn(2, 8, seed=1417), _grid(2, 5, 1418)],
        False,
        {"grid"},
        keywords={"align_corners": False},
        by_name=True,
        notes="grid gradient scaled by (N-1)/2 instead of N/2: 12.5% off at N=8",
    ),
    Case(
        "resample_fixed_scale_bug_hidden_by_align_corners",
        lambda: resample_fixed_scale,
        [randn(2, 8, seed=1419), _grid(2, 5, 1420)],
        True,
        keywords={"align_corners": True},
        by_name=True,
        notes="the same code is right for align_corners=True: the keyword really reaches the layer",
    ),
    Case("scale_flip_ok", lambda: ScaleFlip, [randn(3, 5, seed=1421), InputSpec(arg=1.5), True], True, by_name=True),
    Case("scale_flip_forgets_flip", lambda: ScaleFlipForgetsFlip, [randn(3, 5, seed=1422), InputSpec(arg=1.5), True], False, {"x"}, by_name=True),
    Case(
        "scale_flip_forgets_flip_unflipped_ok",
        lambda: ScaleFlipForgetsFlip,
        [randn(3, 5, seed=1423), InputSpec(arg=1.5), False],
        True,
        by_name=True,
        notes="flip=False: the bug's branch never runs",
    ),
]

# --------------------------------------------------------------------------- structured inputs: DWTInverse((yl, [yh0, yh1]))

_R2 = math.sqrt(2.0)


class SFB1DHaar(Function):
    """One level of the inverse Haar transform: x[2k] = (a + d)/sqrt2, x[2k+1] = (a - d)/sqrt2."""

    @staticmethod
    def forward(ctx, lo, hi):
        return torch.stack([(lo + hi) / _R2, (lo - hi) / _R2], dim=-1).flatten(-2)

    @staticmethod
    def backward(ctx, g):
        even, odd = g[..., 0::2], g[..., 1::2]
        return (even + odd) / _R2, (even - odd) / _R2


class SFB1DHaarCopyPaste(SFB1DHaar):
    @staticmethod
    def backward(ctx, g):
        even, odd = g[..., 0::2], g[..., 1::2]
        return (even + odd) / _R2, (even + odd) / _R2  # BUG: the lowpass line copied for the highpass


class DWTInverse1D(nn.Module):
    """Multi-level inverse: ``coeffs = (yl, [yh0, yh1, ...])`` with yh[0] the finest level."""

    def __init__(self, fn=SFB1DHaar):
        super().__init__()
        self.fn = fn

    def forward(self, coeffs):
        yl, yh = coeffs
        ll = yl
        for h in reversed(yh):
            ll = self.fn.apply(ll, h)
        return ll


class DWTInverse1DCopyPaste(DWTInverse1D):
    def __init__(self):
        super().__init__(SFB1DHaarCopyPaste)


def _coeffs(seed: int) -> tuple:
    return (randn(2, 4, seed=seed), [randn(2, 8, seed=seed + 1), randn(2, 4, seed=seed + 2)])


CASES += [
    Case("dwt_inverse_nested_coeffs_ok", lambda: DWTInverse1D(), [_coeffs(1431)], True, by_name=True, notes="one tuple argument holding a tensor and a list"),
    Case(
        "dwt_inverse_highpass_copy_paste",
        lambda: DWTInverse1DCopyPaste(),
        [_coeffs(1434)],
        False,
        {"coeffs[1][0]", "coeffs[1][1]"},
        by_name=True,
        notes="every highpass band is wrong, the lowpass band right",
    ),
]

# --------------------------------------------------------------------------- tied parameters: a tied autoencoder


class LinearFn(Function):
    """y = x W^T + b."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.t() + bias

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g @ weight, g.t() @ x, g.sum(0)


class LinearTransposedFn(Function):
    """y = h W + b: the decoder of a tied autoencoder uses the encoder's weight transposed."""

    @staticmethod
    def forward(ctx, h, weight, bias):
        ctx.save_for_backward(h, weight)
        return h @ weight + bias

    @staticmethod
    def backward(ctx, g):
        h, weight = ctx.saved_tensors
        return g @ weight.t(), h.t() @ g, g.sum(0)


class LinearTransposedNoWeightGradFn(LinearTransposedFn):
    @staticmethod
    def backward(ctx, g):
        h, weight = ctx.saved_tensors
        # BUG: "the weight is the encoder's, its gradient is computed there" -- but this use of it
        # contributes a gradient of its own.
        return g @ weight.t(), None, g.sum(0)


class _Encoder(nn.Module):
    def __init__(self, n_in: int, n_hidden: int, seed: int):
        super().__init__()
        self.weight = param(n_hidden, n_in, seed=seed, scale=n_in**-0.5)
        self.bias = param(n_hidden, seed=seed + 1, scale=0.1)

    def forward(self, x):
        return torch.tanh(LinearFn.apply(x, self.weight, self.bias))


class _Decoder(nn.Module):
    def __init__(self, n_in: int, n_hidden: int, seed: int, fn):
        super().__init__()
        self.fn = fn
        self.weight = param(n_hidden, n_in, seed=seed, scale=n_in**-0.5)  # replaced by the encoder's: tied
        self.bias = param(n_in, seed=seed + 1, scale=0.1)

    def forward(self, h):
        return self.fn.apply(h, self.weight, self.bias)


class TiedAutoencoder(nn.Module):
    def __init__(self, n_in: int = 8, n_hidden: int = 4, decoder_fn=LinearTransposedFn):
        super().__init__()
        self.encoder = _Encoder(n_in, n_hidden, seed=1441)
        self.decoder = _Decoder(n_in, n_hidden, seed=1443, fn=decoder_fn)
        self.decoder.weight = self.encoder.weight  # tie: one Parameter, two names

    def forward(self, x):
        return self.decoder(self.encoder(x))


class TiedAutoencoderForgetful(TiedAutoencoder):
    def __init__(self, n_in: int = 8, n_hidden: int = 4):
        super().__init__(n_in, n_hidden, decoder_fn=LinearTransposedNoWeightGradFn)


CASES += [
    Case("tied_autoencoder_ok", lambda: TiedAutoencoder(), [randn(3, 8, seed=1445)], True, by_name=True, notes="encoder.weight is decoder.weight"),
    Case(
        "tied_autoencoder_forgets_decoder_use",
        lambda: TiedAutoencoderForgetful(),
        [randn(3, 8, seed=1446)],
        False,
        {"encoder.weight"},
        by_name=True,
        notes="the tied weight's gradient misses its second use",
    ),
]

class LayerScaleFn(Function):
    """y = x * gamma, gamma over the last axis (CaiT's LayerScale)."""

    @staticmethod
    def forward(ctx, x, gamma):
        ctx.save_for_backward(x, gamma)
        return x * gamma

    @staticmethod
    def backward(ctx, g):
        x, gamma = ctx.saved_tensors
        return g * gamma, (g * x).reshape(-1, x.shape[-1]).sum(0)


class LayerScaleNoGammaGradFn(LayerScaleFn):
    @staticmethod
    def backward(ctx, g):
        x, gamma = ctx.saved_tensors
        return g * gamma, None  # BUG: "gamma is shared, the first block computes its gradient"


class _LayerScale(nn.Module):
    def __init__(self, dim: int, fn=LayerScaleFn):
        super().__init__()
        self.fn = fn
        self.gamma = param(dim, seed=1447, scale=0.3, mean=1.0)

    def forward(self, x):
        return self.fn.apply(x, self.gamma)


class SharedLayerScale(nn.Module):
    """Two blocks sharing their LayerScale (ALBERT-style parameter sharing): one gamma, two names."""

    def __init__(self, dim: int = 40, second_fn=LayerScaleFn):
        super().__init__()
        self.block1 = _LayerScale(dim)
        self.block2 = _LayerScale(dim, second_fn)
        self.block2.gamma = self.block1.gamma

    def forward(self, x):
        return self.block2(torch.tanh(self.block1(x)))


class SharedLayerScaleDropsSecond(SharedLayerScale):
    def __init__(self, dim: int = 40):
        super().__init__(dim, LayerScaleNoGammaGradFn)


CASES += [
    Case("shared_layerscale_ok", lambda: SharedLayerScale(), [randn(3, 40, seed=1448)], True, by_name=True, notes="elementwise in gamma: moved in groups"),
    Case(
        "shared_layerscale_second_use_dropped",
        lambda: SharedLayerScaleDropsSecond(),
        [randn(3, 40, seed=1449)],
        False,
        {"block1.gamma"},
        by_name=True,
    ),
]

class LinearNoBiasFn(Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return x @ weight.t()

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g @ weight, g.t() @ x


def linear(x, weight, bias=None):
    """F.linear with hand-written backwards; ``bias=None`` for none."""
    if bias is None:
        return LinearNoBiasFn.apply(x, weight)
    return LinearFn.apply(x, weight, bias)


CASES += [
    Case("linear_bias_none_ok", lambda: linear, [randn(3, 8, seed=1450), randn(4, 8, seed=1451), None], True, by_name=True),
]

# --------------------------------------------------------------------------- half precision: a linear layer at a realistic size


class HalfLinear(nn.Module):
    """nn.Linear(64, 32) with a hand-written backward."""

    def __init__(self, fn=LinearFn, n_in: int = 64, n_out: int = 32, seed: int = 1451):
        super().__init__()
        self.fn = fn
        self.weight = param(n_out, n_in, seed=seed, scale=n_in**-0.5)
        self.bias = param(n_out, seed=seed + 1, scale=0.1)

    def forward(self, x):
        return self.fn.apply(x, self.weight, self.bias)


class LinearWeight5PercentFn(LinearFn):
    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g @ weight, 1.05 * (g.t() @ x), g.sum(0)  # BUG: a stray 1.05 (a leftover loss-scale)


class LinearBiasSignFn(LinearFn):
    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return g @ weight, g.t() @ x, -g.sum(0)  # BUG: sign error on the bias only


for _dt, _seed in (("float16", 1460), ("bfloat16", 1470)):
    CASES += [
        Case(f"half_linear_64x32_{_dt}_ok", lambda: HalfLinear(), [randn(8, 64, seed=_seed)], True, dtype=_dt, by_name=True),
        Case(
            f"half_linear_64x32_{_dt}_weight_5_percent",
            lambda: HalfLinear(LinearWeight5PercentFn),
            [randn(8, 64, seed=_seed + 1)],
            False,
            {"weight"},
            dtype=_dt,
            by_name=True,
        ),
        Case(
            f"half_linear_64x32_{_dt}_bias_sign",
            lambda: HalfLinear(LinearBiasSignFn),
            [randn(8, 64, seed=_seed + 2)],
            False,
            {"bias"},
            dtype=_dt,
            by_name=True,
        ),
    ]

# --------------------------------------------------------------------------- a backward that is not reentrant

# A gradient buffer kept between calls to save an allocation, and never zeroed: each backward
# call adds to what the last one left (the bug of an accumulation buffer reused across steps).
_GRAD_BUFFER: dict = {}


class ScaledSoftplusCachedBufferFn(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 2.0 * F.softplus(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        key = (x.shape, x.dtype, x.device)
        if key not in _GRAD_BUFFER:
            _GRAD_BUFFER[key] = torch.zeros_like(x)
        buf = _GRAD_BUFFER[key]
        buf += 2.0 * g * torch.sigmoid(x)  # BUG: += into a buffer never reset
        return buf.clone()


CASES += [
    Case(
        "cached_grad_buffer_not_reentrant",
        lambda: ScaledSoftplusCachedBufferFn,
        [randn(3, 4, seed=1481)],
        False,
        {"x"},
        by_name=True,
        says=("not reentrant",),
        notes="every backward call returns more than the last: not nondeterminism but state",
    ),
]

# --------------------------------------------------------------------------- grid_sample at pixel centres and on the clamped border


def _pixel_centre_grid(h: int, w: int, points: tuple[int, int], seed: int) -> torch.Tensor:
    """Sample points (align_corners=False) exactly on pixel centres, on the clamped border (the
    first and last centres are where padding_mode='border' clamps), and a few beyond it."""
    g = torch.Generator().manual_seed(seed)
    ix = torch.randint(0, w, points, generator=g).double()
    iy = torch.randint(0, h, points, generator=g).double()
    x = (2 * ix + 1) / w - 1
    y = (2 * iy + 1) / h - 1
    x[0, 0], y[0, 0] = 1 - 1 / w, 1 - 1 / h  # the bottom-right clamp corner, exactly
    x[0, 1], y[0, 1] = -1 - 0.5, (2 * 1 + 1) / h - 1  # beyond the left border: clamped
    x[-1, -1], y[-1, -1] = -1 + 1 / w, 0.3  # on the left clamp, between rows
    return torch.stack([x, y], dim=-1)[None]


def _image(seed: int) -> torch.Tensor:
    return randn(1, 2, 5, 6, seed=seed)


_GRID_SAMPLE_KW = {"mode": "bilinear", "padding_mode": "border", "align_corners": False}

CASES += [
    Case(
        f"grid_sample_border_pixel_centres_seed{seed}",
        lambda: F.grid_sample,
        [_image(1490 + seed), _pixel_centre_grid(5, 6, (4, 3), seed)],
        True,
        keywords=dict(_GRID_SAMPLE_KW),
        kinks_expected=True,
        by_name=True,
        torch_unreliable=AT_KINK,
        notes="PyTorch's own backward; x and y of a point are each a genuine kink, not a tie",
    )
    for seed in (0, 1, 2, 3)
]

# --------------------------------------------------------------------------- borders: a corner case of two axes at once


class BoxBlurReplicate(Function):
    """3x3 mean filter with replicate padding on (N, C, H, W); backward folds the padding back."""

    @staticmethod
    def forward(ctx, x):
        k = x.new_full((x.shape[1], 1, 3, 3), 1 / 9)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])

    @staticmethod
    def backward(ctx, g):
        gp = BoxBlurReplicate._padded_grad(g)
        gx = BoxBlurReplicate._fold_edges(gp)
        gx[..., 0, 0] += gp[..., 0, 0]
        gx[..., 0, -1] += gp[..., 0, -1]
        gx[..., -1, 0] += gp[..., -1, 0]
        gx[..., -1, -1] += gp[..., -1, -1]
        return gx

    @staticmethod
    def _padded_grad(g):
        c = g.shape[1]
        return F.conv_transpose2d(g, g.new_full((c, 1, 3, 3), 1 / 9), groups=c)

    @staticmethod
    def _fold_edges(gp):
        gx = gp[..., 1:-1, 1:-1].clone()
        gx[..., 0, :] += gp[..., 0, 1:-1]
        gx[..., -1, :] += gp[..., -1, 1:-1]
        gx[..., :, 0] += gp[..., 1:-1, 0]
        gx[..., :, -1] += gp[..., 1:-1, -1]
        return gx


class BoxBlurReplicateNoCorners(BoxBlurReplicate):
    @staticmethod
    def backward(ctx, g):
        # BUG: the edges of the padding are folded back, its four corner cells never are.
        return BoxBlurReplicate._fold_edges(BoxBlurReplicate._padded_grad(g))


CASES += [
    Case("box_blur_replicate_ok", lambda: BoxBlurReplicate, [randn(1, 2, 8, 8, seed=1511)], True, by_name=True),
    Case(
        "box_blur_replicate_corners_forgotten",
        lambda: BoxBlurReplicateNoCorners,
        [randn(1, 2, 8, 8, seed=1512)],
        False,
        {"x"},
        by_name=True,
        says=("errors only at the corners", "in 4 corner(s)"),
        notes="wrong at the 4 corners of each channel, right everywhere else",
    ),
]

# --------------------------------------------------------------------------- max pooling with tied maxima


class MaxPool2x2Fn(Function):
    """2x2 max pooling, stride 2; backward routes the gradient to the argmax of each window."""

    @staticmethod
    def forward(ctx, x):
        y, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        ctx.save_for_backward(idx)
        ctx.shape = x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return F.max_unpool2d(g, idx, 2, 2, output_size=ctx.shape[-2:])


class MaxPool2x2MaskFn(Function):
    @staticmethod
    def forward(ctx, x):
        y = F.max_pool2d(x, 2, 2)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        up = y.repeat_interleave(2, -1).repeat_interleave(2, -2)
        # BUG: the mask (x == max) gives the full gradient to every tied maximum of a window.
        return (x == up).to(g.dtype) * g.repeat_interleave(2, -1).repeat_interleave(2, -2)


def _quantised(seed: int) -> torch.Tensor:
    """Activations on a coarse grid (quantised, ReLU-clipped): many windows hold a tied maximum."""
    return (randn(1, 2, 4, 6, seed=seed) * 2).round().clamp(min=0) / 2 + 0.25


CASES += [
    Case("maxpool2x2_ties_ok", lambda: MaxPool2x2Fn, [_quantised(1501)], True, kinks_expected=True, by_name=True, torch_unreliable=AT_KINK),
    Case(
        "maxpool2x2_full_gradient_to_every_tie",
        lambda: MaxPool2x2MaskFn,
        [_quantised(1503)],
        False,
        {"x"},
        by_name=True,
        notes="the joint kink rule exists for this bug: it must still FAIL",
    ),
]

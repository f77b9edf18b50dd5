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
import time
from pathlib import Path

import torch
import torch.nn.functional as F
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


# ----------------------------------------------------------------------------- real sizes (issue 17)
#
# Layers with dense dependence, where grouping cannot help, and the other shapes the
# benchmark's real-size rows check. Each has a hand-written backward and is correct;
# ``*Bug`` variants carry one wrong element (or a wrong factor) for the bug-finding rows.


def fft_convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """out(n) = sum_m x(n - m) kernel(m), m = -K..K (kernel has 2K+1 taps), zero padded, same length as x (last axis)."""
    n, taps = x.shape[-1], kernel.shape[-1]
    half = (taps - 1) // 2
    size = 1 << (n + taps - 1).bit_length()
    full = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(kernel, size), size)
    return full[..., half : half + n]


def fft_correlate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """out(i) = sum_m x(i + m) kernel(m): the convolution with the reversed kernel."""
    return fft_convolve(x, kernel.flip(-1))


def conv_convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """fft_convolve by F.conv1d (the seed's way, eq. 65): x (B, N), kernel (2K+1,)."""
    half = (kernel.shape[-1] - 1) // 2
    return F.conv1d(x.unsqueeze(1), kernel.flip(0).view(1, 1, -1), padding=half).squeeze(1)


def conv_correlate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return conv_convolve(x, kernel.flip(-1))


class LongGaussFunction(torch.autograd.Function):
    """The seed's Gaussian filter (eq. 44, 65) with a kernel as long as the signal (m = -K..K, K = N // 2 + 1).

    ``convolve``/``correlate``: by FFT here (O(N log N)); :class:`LongGaussConvFunction` uses
    the seed's conv1d (O(N K)), which cannot run at N = 100,000 (its im2col needs 80 GB).
    """

    convolve = staticmethod(fft_convolve)
    correlate = staticmethod(fft_correlate)

    @classmethod
    def forward(cls, ctx, x, sigma, mu):
        m = torch.arange(-(x.shape[-1] // 2 + 1), x.shape[-1] // 2 + 2, dtype=x.dtype, device=x.device)
        ctx.save_for_backward(x, sigma, mu, m)
        return cls.convolve(x, gauss.gaussian(m, sigma, mu))

    @classmethod
    def backward(cls, ctx, grad_out):
        x, sigma, mu, m = ctx.saved_tensors
        grad_x = cls.correlate(grad_out, gauss.gaussian(m, sigma, mu))
        grad_sigma = (grad_out * cls.convolve(x, gauss.dg_dsigma(m, sigma, mu))).sum().reshape(sigma.shape)
        grad_mu = (grad_out * cls.convolve(x, gauss.dg_dmu(m, sigma, mu))).sum().reshape(mu.shape)
        return grad_x, grad_sigma, grad_mu


class LongGaussConvFunction(LongGaussFunction):
    convolve = staticmethod(conv_convolve)
    correlate = staticmethod(conv_correlate)


class LongGaussFilter(nn.Module):
    """Gaussian filter (learnable sigma, mu) whose kernel spans the whole signal: every output depends on every input."""

    function = LongGaussFunction

    def __init__(self, sigma: float = 2.0, mu: float = 1.5):
        super().__init__()
        self.sigma = nn.Parameter(torch.tensor([float(sigma)]))
        self.mu = nn.Parameter(torch.tensor([float(mu)]))

    def forward(self, x):
        return self.function.apply(x, self.sigma, self.mu)


class LongGaussConvFilter(LongGaussFilter):
    """The same filter computed by conv1d, as the seed computes it."""

    function = LongGaussConvFunction


def long_gauss(n: int, conv: bool = False) -> LongGaussFilter:
    """The filter for signals of length n: sigma = n / 8, so the kernel is far from zero across the signal."""
    return (LongGaussConvFilter if conv else LongGaussFilter)(sigma=n / 8)


class DenseFunction(torch.autograd.Function):
    """y = x * tanh(mean x) + 0.1 x^2 (issue 17's dense layer): every output depends on every input through the mean."""

    wrong_at: int | None = None  # a flat index whose input gradient is scaled by 1.001 (the bug rows)
    factor = 1.0  # the whole input gradient scaled (a x2 bug)

    @staticmethod
    def forward(ctx, x):
        t = torch.tanh(x.mean())
        ctx.save_for_backward(x, t)
        return x * t + 0.1 * x * x

    @classmethod
    def grad(cls, x, t, g):
        out = g * (t + 0.2 * x) + (g * x).sum() * (1 - t * t) / x.numel()
        if cls.wrong_at is not None:
            out = out.clone()
            out.view(-1)[cls.wrong_at] *= 1.001
        return out * cls.factor

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return DenseFunction.grad(x, t, g)


class DenseOneWrongFunction(DenseFunction):
    wrong_at = 123457

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return DenseOneWrongFunction.grad(x, t, g)


class DenseDoubledFunction(DenseFunction):
    factor = 2.0

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return DenseDoubledFunction.grad(x, t, g)


class Dense(nn.Module):
    function = DenseFunction

    def forward(self, x):
        return self.function.apply(x)


class DenseOneWrong(Dense):
    """Dense, with the input gradient of element 123457 (row 120, column 577 of 1024x1024) 0.1% off."""

    function = DenseOneWrongFunction


class DenseDoubled(Dense):
    """Dense, with the whole input gradient doubled."""

    function = DenseDoubledFunction


class SleepyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x) * x.sum()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        t = torch.tanh(x)
        return g * (1 - t * t) * x.sum() + (g * t).sum()


class Sleepy(nn.Module):
    """y = tanh(x) * sum(x), whose forward sleeps 10 ms and cannot be vmapped (a host sync): one forward a point."""

    def forward(self, x):
        time.sleep(0.01)
        if not bool(torch.isfinite(x).all()):  # data-dependent Python control flow: not vmappable
            raise ValueError("non-finite input")
        return SleepyFunction.apply(x)


class SleepyBatched(nn.Module):
    """The same layer, vmappable: a batched call sleeps once for all its rows."""

    def forward(self, x):
        time.sleep(0.01)
        return SleepyFunction.apply(x)


class Conv2dFunction(torch.autograd.Function):
    """conv2d (stride 1, padding 1) with the backward written from torch.nn.grad."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=1)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        gx = torch.nn.grad.conv2d_input(x.shape, weight, g, padding=1)
        gw = torch.nn.grad.conv2d_weight(x, weight.shape, g, padding=1)
        return gx, gw, g.sum((0, 2, 3))


class Conv2d(nn.Module):
    """16 -> 16 channels, 3x3 kernel."""

    def __init__(self, channels: int = 16):
        super().__init__()
        gen = torch.Generator().manual_seed(1235)
        self.weight = nn.Parameter(torch.randn(channels, channels, 3, 3, generator=gen) / (3 * channels**0.5))
        self.bias = nn.Parameter(torch.randn(channels, generator=gen) * 0.1)

    def forward(self, x):
        return Conv2dFunction.apply(x, self.weight, self.bias)


class AttentionFunction(torch.autograd.Function):
    """softmax(q k^T / sqrt(d)) v over (batch, heads, tokens, dims)."""

    @staticmethod
    def forward(ctx, q, k, v):
        scale = q.shape[-1] ** -0.5
        p = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
        ctx.save_for_backward(q, k, v, p)
        return p @ v

    @staticmethod
    def backward(ctx, g):
        q, k, v, p = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        gv = p.transpose(-1, -2) @ g
        gp = g @ v.transpose(-1, -2)
        gs = p * (gp - (gp * p).sum(-1, keepdim=True)) * scale
        return gs @ k, gs.transpose(-1, -2) @ q, gv


class Attention(nn.Module):
    def forward(self, q, k, v):
        return AttentionFunction.apply(q, k, v)


class LayerNormFunction(torch.autograd.Function):
    """LayerNorm over the last axis, with weight and bias."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        mu = x.mean(-1, keepdim=True)
        inv = (x.var(-1, unbiased=False, keepdim=True) + eps).rsqrt()
        xhat = (x - mu) * inv
        ctx.save_for_backward(xhat, inv, weight)
        return xhat * weight + bias

    @staticmethod
    def backward(ctx, g):
        xhat, inv, weight = ctx.saved_tensors
        gx_hat = g * weight
        n = xhat.shape[-1]
        gx = inv / n * (n * gx_hat - gx_hat.sum(-1, keepdim=True) - xhat * (gx_hat * xhat).sum(-1, keepdim=True))
        lead = tuple(range(g.dim() - 1))
        return gx, (g * xhat).sum(lead), g.sum(lead), None


class LayerNorm(nn.Module):
    def __init__(self, features: int = 1024):
        super().__init__()
        gen = torch.Generator().manual_seed(1236)
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(features, generator=gen))
        self.bias = nn.Parameter(0.1 * torch.randn(features, generator=gen))

    def forward(self, x):
        return LayerNormFunction.apply(x, self.weight, self.bias)


class LSTMCellFunction(torch.autograd.Function):
    """One LSTM step: gates = x W_ih^T + b_ih + h W_hh^T + b_hh (i, f, g, o); returns (h', c')."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b_ih, b_hh):
        gates = x @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c2 = f * c + i * g
        t = torch.tanh(c2)
        ctx.save_for_backward(x, h, c, w_ih, w_hh, i, f, g, o, t)
        return o * t, c2

    @staticmethod
    def backward(ctx, gh, gc):
        x, h, c, w_ih, w_hh, i, f, g, o, t = ctx.saved_tensors
        gc = gc + gh * o * (1 - t * t)
        d = torch.cat([gc * g * i * (1 - i), gc * c * f * (1 - f), gc * i * (1 - g * g), gh * t * o * (1 - o)], dim=1)
        return d @ w_ih, d @ w_hh, gc * f, d.t() @ x, d.t() @ h, d.sum(0), d.sum(0)


class LSTMCell(nn.Module):
    def __init__(self, inputs: int = 128, hidden: int = 128):
        super().__init__()
        gen = torch.Generator().manual_seed(1237)
        bound = hidden**-0.5
        self.w_ih = nn.Parameter((torch.rand(4 * hidden, inputs, generator=gen) * 2 - 1) * bound)
        self.w_hh = nn.Parameter((torch.rand(4 * hidden, hidden, generator=gen) * 2 - 1) * bound)
        self.b_ih = nn.Parameter((torch.rand(4 * hidden, generator=gen) * 2 - 1) * bound)
        self.b_hh = nn.Parameter((torch.rand(4 * hidden, generator=gen) * 2 - 1) * bound)

    def forward(self, x, h, c):
        return LSTMCellFunction.apply(x, h, c, self.w_ih, self.w_hh, self.b_ih, self.b_hh)


class EmbeddingFunction(torch.autograd.Function):
    """weight[indices], the backward an index_add (repeated indices accumulate)."""

    @staticmethod
    def forward(ctx, weight, indices):
        ctx.save_for_backward(indices)
        ctx.rows = weight.shape[0]
        return weight[indices]

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        grad = torch.zeros(ctx.rows, g.shape[-1], dtype=g.dtype, device=g.device)
        return grad.index_add_(0, indices.reshape(-1), g.reshape(-1, g.shape[-1])), None


class Embedding(nn.Module):
    def __init__(self, rows: int = 1000, dims: int = 64):
        super().__init__()
        gen = torch.Generator().manual_seed(1238)
        self.weight = nn.Parameter(torch.randn(rows, dims, generator=gen))

    def forward(self, indices):
        return EmbeddingFunction.apply(self.weight, indices)


def _entmax15_threshold(z: torch.Tensor) -> torch.Tensor:
    """tau with sum_i max(z_i / 2 - tau, 0)^2 = 1 along the last axis (exact, by sorting; Peters et al. 2019)."""
    z = z / 2
    zs, _ = torch.sort(z, dim=-1, descending=True)
    rho = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    mean = zs.cumsum(-1) / rho
    mean_sq = (zs * zs).cumsum(-1) / rho
    ss = rho * (mean_sq - mean * mean)
    delta = (1 - ss) / rho
    tau = mean - torch.sqrt(torch.clamp(delta, min=0))
    support = (tau <= zs).sum(-1, keepdim=True)
    return tau.gather(-1, support - 1)


class Entmax15Function(torch.autograd.Function):
    """1.5-entmax over the last axis: p = max(z / 2 - tau, 0)^2, with its hand-written backward."""

    @staticmethod
    def forward(ctx, z):
        p = torch.clamp(z / 2 - _entmax15_threshold(z), min=0) ** 2
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        s = p.sqrt()
        gs = g * s
        return gs - (gs.sum(-1, keepdim=True) / s.sum(-1, keepdim=True)) * s


class Entmax15(nn.Module):
    def forward(self, z):
        return Entmax15Function.apply(z)


def _scan(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """h_t = a_t h_{t-1} + x_t (h_{-1} = 0) along the last axis, in log2(L) doubling steps (Hillis-Steele)."""
    a, h = a.clone(), x.clone()
    step = 1
    while step < h.shape[-1]:
        h = torch.cat([h[..., :step], h[..., step:] + a[..., step:] * h[..., :-step]], dim=-1)
        a = torch.cat([a[..., :step], a[..., step:] * a[..., :-step]], dim=-1)
        step *= 2
    return h


class SelectiveScanFunction(torch.autograd.Function):
    """The selective scan of mamba.py's pscan: h_t = A_t h_{t-1} + X_t with A = exp(-softplus(a)), backward by the reverse scan."""

    @staticmethod
    def forward(ctx, a, x):
        decay = torch.exp(-F.softplus(a))
        h = _scan(decay, x)
        ctx.save_for_backward(a, decay, h)
        return h

    @staticmethod
    def backward(ctx, g):
        a, decay, h = ctx.saved_tensors
        # G_t = g_t + A_{t+1} G_{t+1}: the same scan, reversed in time.
        shifted = torch.cat([decay[..., 1:], torch.zeros_like(decay[..., :1])], dim=-1)
        grad_x = _scan(shifted.flip(-1), g.flip(-1)).flip(-1)
        previous = torch.cat([torch.zeros_like(h[..., :1]), h[..., :-1]], dim=-1)
        grad_decay = grad_x * previous
        return grad_decay * (-torch.sigmoid(a)) * decay, grad_x


class SelectiveScan(nn.Module):
    def forward(self, a, x):
        return SelectiveScanFunction.apply(a, x)

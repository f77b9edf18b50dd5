"""Learnable Gaussian filter with a hand-written backward.

The layer convolves a signal X of length N with a sampled Gaussian kernel

    g(m) = exp(-(m - mu)^2 / (2 sigma^2)) / (sigma sqrt(2 pi)),   m = -K..K   (eq. 44)

    O(n) = sum_m X(n - m) g(m)                                                (eq. 65)

with zero padding, so O has the length of X ("same" convolution).  Because
mu != 0 the kernel is asymmetric, which is what makes the convolution /
correlation distinction in the input gradient matter.

Two buggy variants reproduce mistakes that are easy to make in this derivation:

* ``GaussFilterConvBug``: dC/dX computed by *convolving* dC/dO with g instead of
  correlating (eq. 80 says correlation).  Only the input gradient is wrong.
* ``GaussFilterMuBug``: the mu gradient uses the dg/dsigma kernel (eq. 48)
  instead of dg/dmu (eq. 51), an easy slip since eqs. 71-72 in the seed still
  say d/dmu while deriving d/dsigma.  Only the mu gradient is wrong.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

K = 12  # the kernel is sampled at m = -K..K; wide enough for sigma up to about 4


def _grid(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(-K, K + 1, dtype=x.dtype, device=x.device)


def gaussian(m, sigma, mu):
    """g(m), eq. 44."""
    return torch.exp(-0.5 * ((m - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def dg_dsigma(m, sigma, mu):
    """dg/dsigma, eq. 48: exp(...) / sqrt(2 pi) * ((m - mu)^2 / sigma^4 - 1 / sigma^2)."""
    e = torch.exp(-0.5 * ((m - mu) / sigma) ** 2) / math.sqrt(2 * math.pi)
    return e * ((m - mu) ** 2 / sigma**4 - 1 / sigma**2)


def dg_dmu(m, sigma, mu):
    """dg/dmu, eq. 51: (m - mu) / (sigma^3 sqrt(2 pi)) * exp(...)."""
    return (m - mu) / (sigma**3 * math.sqrt(2 * math.pi)) * torch.exp(-0.5 * ((m - mu) / sigma) ** 2)


def convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """out(n) = sum_m x(n - m) kernel(m) for x of shape (B, N); zero padded, same length.

    conv1d computes a correlation, so the kernel is flipped.
    """
    return F.conv1d(x.unsqueeze(1), kernel.flip(0).view(1, 1, -1), padding=K).squeeze(1)


def correlate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """out(i) = sum_m x(i + m) kernel(m) for x of shape (B, N); zero padded, same length."""
    return F.conv1d(x.unsqueeze(1), kernel.view(1, 1, -1), padding=K).squeeze(1)


def gauss_backward(ctx, grad_out, input_grad=correlate, mu_kernel=dg_dmu):
    """Gradients of C w.r.t. (x, sigma, mu) given dC/dO.

    * dC/dX(i) = sum_k dC/dO(k) g(k - i): the correlation of dC/dO with g (eqs. 74-80).
    * dC/dsigma = sum_n dC/dO(n) (X conv dg/dsigma)(n) (eqs. 66, 71-73).
    * dC/dmu    = sum_n dC/dO(n) (X conv dg/dmu)(n)    (eqs. 66-70).

    ``input_grad`` and ``mu_kernel`` are the two pieces the buggy variants swap.
    """
    x, sigma, mu = ctx.saved_tensors
    x2 = x.reshape(-1, x.shape[-1])
    go = grad_out.reshape(x2.shape)
    m = _grid(x)
    grad_x = grad_sigma = grad_mu = None
    if ctx.needs_input_grad[0]:
        grad_x = input_grad(go, gaussian(m, sigma, mu)).reshape(x.shape)
    if ctx.needs_input_grad[1]:
        grad_sigma = (go * convolve(x2, dg_dsigma(m, sigma, mu))).sum().reshape(sigma.shape)
    if ctx.needs_input_grad[2]:
        grad_mu = (go * convolve(x2, mu_kernel(m, sigma, mu))).sum().reshape(mu.shape)
    return grad_x, grad_sigma, grad_mu


class GaussianConvFunction(torch.autograd.Function):
    """O = X conv g(sigma, mu).  x: (N,) or (B, N); sigma, mu: shape (1,) or 0-d."""

    @staticmethod
    def forward(ctx, x, sigma, mu):
        ctx.save_for_backward(x, sigma, mu)
        g = gaussian(_grid(x), sigma, mu).reshape(-1)
        return convolve(x.reshape(-1, x.shape[-1]), g).reshape(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        return gauss_backward(ctx, grad_out)


class GaussianConvFunctionConvBug(GaussianConvFunction):
    """BUG: dC/dX = dC/dO *convolved* with g (should be correlated, eq. 80)."""

    @staticmethod
    def backward(ctx, grad_out):
        return gauss_backward(ctx, grad_out, input_grad=convolve)


class GaussianConvFunctionMuBug(GaussianConvFunction):
    """BUG: dC/dmu computed with the dg/dsigma kernel (eq. 48) instead of dg/dmu (eq. 51)."""

    @staticmethod
    def backward(ctx, grad_out):
        return gauss_backward(ctx, grad_out, mu_kernel=dg_dsigma)


class GaussFilter(nn.Module):
    """Gaussian filter with learnable ``sigma`` and ``mu`` (both shape (1,))."""

    function = GaussianConvFunction

    def __init__(self, sigma: float = 2.0, mu: float = 1.5):
        super().__init__()
        self.sigma = nn.Parameter(torch.tensor([float(sigma)]))
        self.mu = nn.Parameter(torch.tensor([float(mu)]))

    def forward(self, x):
        return self.function.apply(x, self.sigma, self.mu)


class GaussFilterConvBug(GaussFilter):
    """GaussFilter whose input gradient is a convolution instead of a correlation."""

    function = GaussianConvFunctionConvBug


class GaussFilterMuBug(GaussFilter):
    """GaussFilter whose mu gradient uses the dg/dsigma kernel."""

    function = GaussianConvFunctionMuBug

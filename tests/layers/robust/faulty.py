"""Layers that misbehave, for tests/test_robust.py (issue 7: every failure a clear message).

Files that cannot even be imported (syntax errors, sys.exit at import, a missing
module, binary bytes) are written into tmp_path by the tests themselves, so that
nothing here breaks a linter or an import of this folder.
"""

import random
import signal
import time

import numpy as np
import torch
from torch import nn

NOT_CALLABLE = 42  # a module-level int: not a layer


def ctrl_c():
    """What pressing Ctrl-C does: a real SIGINT to this process (a layer raising KeyboardInterrupt is not one)."""
    signal.raise_signal(signal.SIGINT)


class Double(torch.autograd.Function):
    """y = 2x with a correct hand-written backward."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad_out):
        return 2 * grad_out


# --------------------------------------------------------------------------- forward returns something unusable


class ReturnsString(nn.Module):
    def forward(self, x):
        return "not a tensor"


class ReturnsNone(nn.Module):
    def forward(self, x):
        x * 2  # forgot the return


class ReturnsInt(nn.Module):
    def forward(self, x):
        return (x * 10).long()


class ReturnsNan(nn.Module):
    def forward(self, x):
        return Double.apply(x) * float("nan")


class ReturnsInf(nn.Module):
    def forward(self, x):
        return Double.apply(x) / 0.0


class ReturnsEmpty(nn.Module):
    """Returns a tensor with no elements: there is nothing to compare, so nothing is verified."""

    def forward(self, x):
        return Double.apply(x)[:0]


class ReturnsDict(nn.Module):
    """A dict of tensors is a legitimate output (flattened by value)."""

    def forward(self, x):
        return {"a": Double.apply(x), "b": Double.apply(x) * 3}


class ForwardRaises(nn.Module):
    def forward(self, x):
        raise ValueError("planted failure in forward")


# --------------------------------------------------------------------------- backward returns something unusable


class TooFewGrads(torch.autograd.Function):
    """Two inputs, backward returns one gradient."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        return grad_out * b


class WrongShapeGrad(torch.autograd.Function):
    """Backward returns a gradient of the wrong shape (7 elements for any input)."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad_out):
        return torch.ones(7, dtype=grad_out.dtype)


class WrongDeviceGrad(torch.autograd.Function):
    """Backward returns its gradient on the 'meta' device."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad_out):
        return (2 * grad_out).to("meta")


class LowPrecisionGrad(torch.autograd.Function):
    """Backward returns a float16 gradient for a float64 input (autograd casts it back silently)."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad_out):
        return (2 * grad_out).half()


# --------------------------------------------------------------------------- resources


class ForwardOOM(nn.Module):
    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total capacity)")


class BackwardOOMFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad_out):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")


class CpuOOM(nn.Module):
    """A real CPU out-of-memory: torch raises a plain RuntimeError from its CPU allocator."""

    def forward(self, x):
        torch.empty(10**13, dtype=torch.float64)  # 80 TB: refused by the allocator at once
        return Double.apply(x)


class Sleeps(nn.Module):
    """A forward that hangs."""

    def forward(self, x):
        time.sleep(30)
        return Double.apply(x)


class SleepsCatchingException(nn.Module):
    """A forward that hangs inside `try: ... except Exception: pass` (must still time out)."""

    def forward(self, x):
        try:
            time.sleep(30)
        except Exception:
            pass
        return Double.apply(x)


class SlowTwoParams(nn.Module):
    """No inputs; a small parameter ``a`` (checked first) and a larger ``b``.

    Every forward sleeps 0.05 s, ``float(...)`` makes vmap impossible, and the
    cumulative sum makes every output of ``b`` depend on many of its elements (no
    grouping), so the check uses one forward per perturbation: ``a`` takes well
    under a second, ``b`` many seconds.  Used by the Ctrl-C test.
    """

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.linspace(0.5, 1.0, 2, dtype=torch.float64))
        self.b = nn.Parameter(torch.linspace(-1.0, 1.0, 80, dtype=torch.float64))

    def forward(self):
        float(self.a.detach().sum() + self.b.detach().sum())  # data-dependent Python: not vmappable in a or b
        time.sleep(0.05)
        return torch.cat([Double.apply(self.a), Double.apply(self.b).cumsum(0)])


# --------------------------------------------------------------------------- state preservation


class ScaleShiftFn(torch.autograd.Function):
    """y = x * w + b; ``bad`` doubles the gradient of w, ``explode`` raises in backward."""

    @staticmethod
    def forward(ctx, x, w, b, bad, explode):
        ctx.save_for_backward(x, w)
        ctx.bad, ctx.explode = bad, explode
        return x * w + b

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.explode:
            raise RuntimeError("planted failure in backward")
        x, w = ctx.saved_tensors
        grad_w = (grad_out * x).reshape(-1, w.shape[-1]).sum(0)
        grad_b = grad_out.reshape(-1, w.shape[-1]).sum(0)
        if ctx.bad:
            grad_w = 2 * grad_w
        return grad_out * w, grad_w, grad_b, None, None


class Stateful(nn.Module):
    """A module with everything a check must leave alone.

    * ``weight`` (float32, requires grad), ``bias`` (float32, requires_grad False),
      a nested ``inner.scale`` parameter;
    * buffers ``count`` (int64, incremented by forward in training mode, like
      BatchNorm's num_batches_tracked) and ``stat`` (float32, updated in place);
    * a ``Dropout`` child, so train/eval mode matters;
    * it draws from the global torch, numpy and random generators in forward.

    ``mode`` picks a behaviour: ok, bad_grad, forward_raises, backward_raises, sleep.
    ``interrupt_at`` sends a real Ctrl-C (SIGINT) on that forward call (1-based), counted over
    every forward of the check, whichever copy of the module gradcheck calls (a shared list).
    """

    def __init__(self, n: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, n, dtype=torch.float32))
        self.bias = nn.Parameter(torch.full((n,), 0.25, dtype=torch.float32), requires_grad=False)
        self.inner = nn.Module()
        self.inner.scale = nn.Parameter(torch.tensor([1.25, -0.5, 2.0], dtype=torch.float32)[:n].clone())
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("stat", torch.zeros(n, dtype=torch.float32))
        self.drop = nn.Dropout(p=0.0)
        self.mode = "ok"
        self.interrupt_at = None
        self.calls = [0]  # a list: deep copies share the count

    def __deepcopy__(self, memo):
        import copy

        twin = copy.copy(self)  # shallow: parameters, buffers and the call counter stay shared
        twin._parameters = dict(self._parameters)
        twin._buffers = dict(self._buffers)
        twin._modules = {k: copy.deepcopy(v, memo) for k, v in self._modules.items()}
        return twin

    def forward(self, x):
        self.calls[0] += 1
        if self.interrupt_at is not None and self.calls[0] >= self.interrupt_at:
            ctrl_c()
        if self.mode == "forward_raises":
            raise ValueError("planted failure in forward")
        if self.mode == "sleep":
            time.sleep(30)
        torch.rand(2)
        torch.rand(2, device=x.device)  # the CUDA generator too, when x is on a GPU
        np.random.rand(2)
        random.random()
        if self.training:
            self.count += 1
            self.stat.add_(1.0)
        y = ScaleShiftFn.apply(x, self.weight * self.inner.scale, self.bias, self.mode == "bad_grad", self.mode == "backward_raises")
        return self.drop(y)


class InterruptWhileCheckingB(nn.Module):
    """Sends itself a real Ctrl-C (SIGINT) as soon as its parameter ``b`` is perturbed.

    ``a`` is checked first and completes; the check of ``b`` is interrupted.  ``float(...)``
    keeps vmap out, so every forward sees concrete values.
    """

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.linspace(0.5, 1.0, 2, dtype=torch.float64))
        self.b = nn.Parameter(torch.linspace(-1.0, 1.0, 5, dtype=torch.float64))
        self.b0 = self.b.detach().clone()

    def forward(self):
        float(self.a.detach().sum() + self.b.detach().sum())  # data-dependent Python: not vmappable in a or b
        if not torch.equal(self.b.detach(), self.b0):
            ctrl_c()
        return torch.cat([Double.apply(self.a), Double.apply(self.b).cumsum(0)])

"""Layers that attack the promises a CI step relies on (tests/test_abuse.py).

Each one is correct where a gradient check could see it, and misbehaves in a way
that once made gradcheck exit 0, hang, lose a file or print a traceback.
"""

import threading
import time

import torch
from torch import nn


class Square(torch.autograd.Function):
    """y = x^2 with a correct backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_out


class WrongSquare(Square):
    """y = x^2 with the backward of 3x^2/2: wrong by 50%."""

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return 3 * x * grad_out


class _Raising(BaseException):
    """A BaseException of the layer's own, outside the Exception hierarchy."""


class ExitsInInit(nn.Module):
    def __init__(self):
        super().__init__()
        raise SystemExit(0)


class GeneratorExitInForward(nn.Module):
    def forward(self, x):
        raise GeneratorExit()


class BaseExceptionInForward(nn.Module):
    def forward(self, x):
        raise _Raising("the layer's own BaseException")


class KeyboardInterruptInForward(nn.Module):
    """Raises KeyboardInterrupt itself: no Ctrl-C was pressed, so this is the layer's error."""

    def forward(self, x):
        raise KeyboardInterrupt


class _BaseExceptionInBackwardFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad_out):
        raise _Raising("raised in backward")


def base_exception_in_backward(x):
    return _BaseExceptionInBackwardFn.apply(x)


class _NanBackwardFn(torch.autograd.Function):
    """A backward that returns NaN at element 1 (the forward is fine)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad = 2 * x * grad_out
        grad[1] = float("nan")
        return grad


def nan_backward(x):
    return _NanBackwardFn.apply(x)


class _InfBackwardFn(_NanBackwardFn):
    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad = 2 * x * grad_out
        grad[0] = float("inf")
        return grad


def inf_backward(x):
    return _InfBackwardFn.apply(x)


class EscapesInError(nn.Module):
    """An error message that would set the terminal title, clear the screen and break rich markup."""

    def forward(self, x):
        raise ValueError("\x1b]0;pwned\x07\x1b[2J [/] [bold red]not markup\x1b[0m \u202etxt.exe")


class MarkupParameterName(nn.Module):
    """A parameter whose name is rich markup and an escape sequence (register_parameter allows any name without '.')."""

    def __init__(self):
        super().__init__()
        self.register_parameter("[/]\x1b[2J", nn.Parameter(torch.linspace(0.5, 1.5, 3, dtype=torch.float64)))

    def forward(self, x):
        return Square.apply(x) * getattr(self, "[/]\x1b[2J")


class CatchesEverySignal(nn.Module):
    """A forward that swallows every exception for a while (a bare except in a retry loop), then gives up."""

    def forward(self, x):
        for _ in range(40):
            try:
                time.sleep(0.05)
            except:  # noqa: E722 -- the point of this layer
                pass
        return Square.apply(x)


class CatchesTheTimeoutAndReturns(nn.Module):
    """Catches the stop and returns a result as if nothing happened: still a timeout, never a pass."""

    def forward(self, x):
        try:
            time.sleep(30)
        except BaseException:
            pass
        return Square.apply(x)


class Sleeps(nn.Module):
    def forward(self, x):
        time.sleep(2)
        return Square.apply(x)


class StartsAThread(nn.Module):
    """Starts a non-daemon thread that never ends (a forgotten worker): the CLI must still exit."""

    started = False

    def forward(self, x):
        if not StartsAThread.started:
            StartsAThread.started = True
            threading.Thread(target=lambda: time.sleep(3600), name="forgotten-worker").start()
        return Square.apply(x)


class NoSuperInit(nn.Module):
    def __init__(self):
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.weight


class Lazy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.LazyLinear(3)

    def forward(self, x):
        return self.linear(x)


class OnMeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3, device="meta"))

    def forward(self, x):
        return x * self.weight


class Scale(nn.Module):
    """y = x * w: a correct Module with one parameter."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, 3, dtype=torch.float64))

    def forward(self, x):
        return Square.apply(x) * self.weight


# --------------------------------------------------------------------------- what only a separate process survives


def os_exit_in_forward(x):
    """Ends the process with status 0 in the middle of the check: without isolation, a false pass."""
    import os

    os._exit(0)


def c_exit_in_forward(x):
    """Ends the process from C (libc's _exit), which no Python-level guard sees: only isolation catches it."""
    import ctypes

    ctypes.CDLL(None)._exit(0)


def segfault_in_forward(x):
    """A crash in C code (reading address 0)."""
    import ctypes

    ctypes.string_at(0)


def never_gives_up(x):
    """Swallows every stop, forever: only killing the process ends it."""
    while True:
        try:
            time.sleep(0.01)
        except BaseException:  # noqa: BLE001 -- the point of this layer
            pass

"""Where a check runs, and what it must leave as it was.

The device must exist; the global RNG states (torch, CUDA, numpy, random) are
restored whatever happens; a hung layer is stopped by a deadline.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from .errors import LayerError, UsageError


def resolve_device(text: str) -> torch.device:
    """Parse a device string and make sure the device really exists here."""
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"Unknown device {text!r} ({exc}).", "Use cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"Device {text!r} was asked for, but CUDA is not available here "
                f"(torch {torch.__version__}, {'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}).",
                "Run with --device cpu, or on a machine with an NVIDIA GPU and a CUDA build of torch.",
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"Device {text!r} does not exist: this machine has {count} CUDA device(s).", f"Use cuda:0 .. cuda:{count - 1}.")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError(f"Device {text!r} (Apple MPS) is not available here.", "Run with --device cpu.")
    elif dev.type == "cpu" and dev.index not in (None, 0):
        raise UsageError(f"Device {text!r}: there is one CPU device, with no index to choose.", "Use --device cpu (or cuda:N for a GPU).")
    elif dev.type == "meta":
        raise UsageError("Device 'meta' holds no data, so gradients cannot be compared on it.", "Use cpu, cuda or mps.")
    elif dev.type != "cpu":
        try:
            torch.empty(1, device=dev)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"Device {text!r} cannot be used here: {reason}.", "Run with --device cpu, cuda or mps.") from None
    return dev


def seed_rng(seed: int, device: torch.device) -> None:
    """Seed the generators a layer on ``device`` draws from: the CPU's and, off the CPU, the device's.

    Not ``torch.manual_seed``: that also seeds every CUDA device -- whose states a CPU check
    does not save and restore (see :func:`preserved_rng`) -- and, where CUDA is not
    initialised, queues lazy seeding with a captured stack trace: ~80 us a call instead of
    1 us, paid at every forward of a layer that draws random numbers.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


@contextlib.contextmanager
def preserved_rng(device: torch.device):
    """Leave the global RNG states (torch, CUDA, numpy, random) exactly as they were."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class _Timeout(BaseException):
    """Raised by the alarm inside the user's code; BaseException so `except Exception` there cannot swallow it."""


@contextlib.contextmanager
def deadline(seconds: float | None, target: str):
    """Stop the check after ``seconds`` (SIGALRM; main thread of a Unix process only)."""
    import signal
    import threading

    if seconds is None:
        yield
        return
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        raise UsageError("--timeout needs the main thread of a Unix process.", "Run without --timeout here.")

    def on_alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Timeout:
        raise LayerError(
            f"The check of {target} did not finish within --timeout {seconds:g}s (the layer hangs or is too slow).",
            "Look for an endless loop or a blocking call in the layer; or raise --timeout, or use --max-elements/--budget.",
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

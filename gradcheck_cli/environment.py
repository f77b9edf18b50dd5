"""Where a check runs, and what it must leave as it was.

The device must exist; the global state a layer can touch (RNG states, the
working folder, ``sys.path``, torch's default dtype and device) is restored
whatever happens; a hung layer is stopped by a deadline; a real Ctrl-C (or
SIGTERM) is told apart from a layer that raises KeyboardInterrupt itself.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .errors import LayerError, TimedOut, UsageError


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


@dataclass(frozen=True)
class Placement:
    """Where a check runs: the device, and where its differences are accumulated in float64.

    MPS has no float64, so its differences are accumulated on the CPU; everywhere else on
    the device itself (no copy back to the host per evaluation).
    """

    device: torch.device

    @classmethod
    def of(cls, text: str) -> "Placement":
        return cls(resolve_device(text))

    @property
    def acc(self) -> torch.device:
        return torch.device("cpu") if self.device.type == "mps" else self.device

    @property
    def has_float64(self) -> bool:
        return self.acc.type == self.device.type

    def f64(self, t: torch.Tensor) -> torch.Tensor:
        """A float64 copy on the accumulation device."""
        return t.detach().to(device=self.acc, dtype=torch.float64)

    def seconds_since(self, started: float) -> float:
        return seconds_since(started, self.device)

    def seed(self, seed: int) -> None:
        seed_rng(seed, self.device)


def seconds_since(started: float, device: torch.device) -> float:
    """Wall time since ``started`` (time.perf_counter), after the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def seed_rng(seed: int, device: torch.device) -> None:
    """Seed the generators a layer on ``device`` draws from: the CPU's and, off the CPU, the device's.

    Not ``torch.manual_seed``: that also seeds every CUDA device -- whose states a CPU check
    does not save and restore (see :func:`preserved_state`) -- and, where CUDA is not
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
def preserved_state(device: torch.device) -> Iterator[None]:
    """Leave what a layer (or its import) can change globally exactly as it was.

    The RNG states (torch, the device's, numpy, random), the working folder (a layer
    that calls ``os.chdir``), ``sys.path`` (the layer's folder is put on it while it is
    loaded and checked), torch's default dtype and default device, and ``sys.stdout``.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    cwd = _cwd()
    path = list(sys.path)
    default_dtype = torch.get_default_dtype()
    default_device = default_device_set()
    stdout = sys.stdout
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            if cwd is not None and _cwd() != cwd:
                with contextlib.suppress(OSError):
                    os.chdir(cwd)
            sys.path[:] = path
            torch.set_default_dtype(default_dtype)
            if default_device_set() != default_device:
                torch.set_default_device(default_device)
            sys.stdout = stdout


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the folder was removed under us
        return None


def default_device_set() -> torch.device | None:
    """The device torch.set_default_device chose, or None (read without creating a tensor,
    which torch.get_default_device does -- and which fails for a device that does not exist)."""
    context = getattr(getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None), "device_context", None)
    return getattr(context, "device", None)


# --------------------------------------------------------------------------- signals


class Interrupt(KeyboardInterrupt):
    """A real signal arrived: Ctrl-C's SIGINT, or SIGTERM (a CI job cancelled).

    A layer that raises KeyboardInterrupt itself is not an interrupt: it is the layer's
    error, and only this class stops a check as interrupted.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# A signal that arrives again this soon after the last one is the same stop (Ctrl-C reaches
# gradcheck's supervisor and its child, and the supervisor passes it on): raised once.
DEBOUNCE_S = 1.0
_last_interrupt = [float("-inf")]


def _raise_interrupt(signum, frame):
    now = time.monotonic()
    if now - _last_interrupt[0] < DEBOUNCE_S:
        return
    _last_interrupt[0] = now
    from .supervise import tell

    tell(interrupted=signum)
    raise Interrupt(signum)


@contextlib.contextmanager
def interrupts(signums: tuple[int, ...] = (signal.SIGINT,)) -> Iterator[None]:
    """While active, each of ``signums`` raises :class:`Interrupt` in the main thread.

    Only signals left at their default are taken over: an ignored SIGINT (a background
    job) stays ignored, and a handler the caller installed keeps working. Elsewhere than
    the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for signum in signums:
        current = signal.getsignal(signum)
        if current in (signal.SIG_DFL, signal.default_int_handler):
            saved[signum] = current
            signal.signal(signum, _raise_interrupt)
    if saved:
        _last_interrupt[0] = float("-inf")  # a new run: its first signal counts
    _OURS.update(saved)
    try:
        yield
    finally:
        _OURS.difference_update(saved)
        for signum, handler in saved.items():
            signal.signal(signum, handler)


_OURS: set[int] = set()  # the signals interrupts() took over, while it is active


def reassert_interrupts() -> None:
    """After the layer's code ran: if it replaced a handler gradcheck installed (an import that
    resets SIGTERM or ignores SIGINT), gradcheck's goes back in, so a stop still stops the run."""
    for signum in _OURS:
        if signal.getsignal(signum) is not _raise_interrupt:
            signal.signal(signum, _raise_interrupt)


def watching_interrupts() -> bool:
    """Does a real Ctrl-C raise :class:`Interrupt` here (so a plain KeyboardInterrupt is the layer's)?"""
    try:
        return signal.getsignal(signal.SIGINT) is _raise_interrupt
    except ValueError:
        return False


# --------------------------------------------------------------------------- the deadline


class Timeout(BaseException):
    """Raised by the alarm inside the layer's code; a BaseException, so `except Exception` there cannot swallow it."""


# After the deadline the alarm fires again at this interval for as long as the layer's code
# runs: a layer that catches one stop (a bare `except:`) meets the next.
REARM_S = 0.05


# Exceptions that the caller's own alarm handler raised: they pass through as they are.
CALLERS: list[BaseException] = []


def raised_by_callers_alarm(exc: BaseException) -> bool:
    return any(exc is raised for raised in CALLERS)


class Deadline:
    """``--timeout``: stop the layer's code after ``seconds``, and give the caller's own alarm back.

    The alarm (SIGALRM) raises :class:`Timeout` only while the layer's code runs (see
    :meth:`user_code`); in gradcheck's own code it just marks the deadline passed, and the
    next :meth:`user_code` boundary turns that into a :class:`LayerError`, so gradcheck's
    clean-up never sees it. An alarm the caller had set (pytest-timeout's signal mode) is
    honoured: it still fires at its time, with the caller's handler, and is re-armed with
    its remaining time afterwards.
    """

    _active: "Deadline | None" = None

    def __init__(self, seconds: float, target: str) -> None:
        self.seconds, self.target = seconds, target
        self.expired = False
        self.handed_back = False  # the caller's alarm came due: its handler decides now
        self._depth = 0
        self._started = time.monotonic()
        self._caller_handler = None
        self._caller_at: float | None = None
        self._caller_interval = 0.0

    @classmethod
    def current(cls) -> "Deadline | None":
        return cls._active

    @contextlib.contextmanager
    def user_code(self) -> Iterator[None]:
        """Around a call into the layer's code: the alarm may stop it; a passed deadline is reported."""
        self.raise_if_expired()
        self._depth += 1
        try:
            yield
        except Timeout:
            if self.handed_back:
                raise
            raise self._error() from None
        finally:
            self._depth -= 1
        self.raise_if_expired()

    def raise_if_expired(self) -> None:
        if self.expired and not self.handed_back:
            raise self._error()

    def _error(self) -> LayerError:
        return TimedOut(
            f"The check of {self.target} did not finish within --timeout {self.seconds:g}s (the layer hangs or is too slow).",
            "Look for an endless loop or a blocking call in the layer; or raise --timeout, or use --max-elements/--budget.",
        )

    def _on_alarm(self, signum, frame) -> None:
        now = time.monotonic()
        if self._caller_at is not None and now >= self._caller_at - 1e-4:
            # The caller's alarm: hand everything back and let its handler act.
            self.handed_back = True
            self._restore(now)
            handler = self._caller_handler
            try:
                if callable(handler):
                    handler(signum, frame)
                elif handler == signal.SIG_DFL:
                    signal.raise_signal(signal.SIGALRM)
            except BaseException as exc:  # the caller's own timeout: not the layer's error
                CALLERS.append(exc)
                raise
            return
        self.expired = True
        signal.setitimer(signal.ITIMER_REAL, REARM_S)  # and again, while the layer's code runs
        if self._depth > 0:
            raise Timeout()

    def _arm(self) -> None:
        remaining, interval = signal.getitimer(signal.ITIMER_REAL)
        self._caller_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        if remaining > 0:
            self._caller_at, self._caller_interval = self._started + remaining, interval
        ours = self._started + self.seconds
        fire = min(ours, self._caller_at) if self._caller_at is not None else ours
        signal.setitimer(signal.ITIMER_REAL, max(fire - time.monotonic(), 1e-6))

    def _restore(self, now: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._caller_handler if self._caller_handler is not None else signal.SIG_DFL)
        if self._caller_at is not None and not self.handed_back:
            signal.setitimer(signal.ITIMER_REAL, max(self._caller_at - now, 1e-6), self._caller_interval)
        elif self._caller_at is not None and self._caller_interval > 0:
            signal.setitimer(signal.ITIMER_REAL, self._caller_interval, self._caller_interval)
        if Deadline._active is self:
            Deadline._active = None


@contextlib.contextmanager
def deadline(seconds: float | None, target: str) -> Iterator[Deadline | None]:
    """Stop the check after ``seconds`` (SIGALRM; the main thread of a Unix process only)."""
    if seconds is None:
        yield None
        return
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        raise UsageError("--timeout needs the main thread of a Unix process.", "Run without --timeout here.")
    if Deadline._active is not None:  # a check inside a check: the outer deadline holds
        yield Deadline._active
        return
    from .supervise import tell

    watch = Deadline(seconds, target)
    Deadline._active = watch
    CALLERS.clear()
    try:
        tell(timeout=seconds)
        watch._arm()
        yield watch
        watch.raise_if_expired()
    except Timeout:
        if watch.handed_back:
            raise
        raise watch._error() from None
    finally:
        if not watch.handed_back:
            watch._restore(time.monotonic())
        Deadline._active = None
        tell(timeout=None)


class ExitCalled(BaseException):
    """The layer's code called ``os._exit`` in gradcheck's own process: its error, never the process's end.

    In a supervised child this only gives a clearer message; in the Python API, the pytest
    plugin and ``--no-isolate`` it is what keeps ``os._exit(0)`` in a forward from ending the
    whole run with status 0 -- a false pass.
    """

    def __init__(self, code: object) -> None:
        super().__init__(f"os._exit({code!r})")
        self.code = code


_OWNER = os.getpid()
_REAL_EXIT = os._exit
_depth = [0]  # nesting of user_code() in this process


def _exit_in_layer_code(code: int) -> None:
    if os.getpid() != _OWNER:  # a child the layer forked (a DataLoader worker) ends as it asks
        _REAL_EXIT(code)
    raise ExitCalled(code)


@contextlib.contextmanager
def _no_exit() -> Iterator[None]:
    """While the layer's code runs, its os._exit raises ExitCalled instead of ending this process."""
    saved = os._exit
    _depth[0] += 1
    if _depth[0] == 1:
        os._exit = _exit_in_layer_code
    try:
        yield
    finally:
        _depth[0] -= 1
        if _depth[0] == 0:
            os._exit = saved if saved is not _exit_in_layer_code else _REAL_EXIT


@contextlib.contextmanager
def user_code() -> Iterator[None]:
    """Around every call into the layer's code (import, construction, forward, backward)."""
    watch = Deadline.current()
    if watch is None:
        try:
            with _no_exit():
                yield
        finally:
            reassert_interrupts()
        return
    with watch.user_code(), _no_exit():
        yield
    reassert_interrupts()

"""Calls into the layer's own code, and what its exceptions mean for the check.

Everything the user wrote -- the layer file's import, the constructor, forward and
backward -- runs through :func:`guarded`: the ``--timeout`` deadline may stop it
there (see :mod:`.environment`), and whatever it raises becomes a
:class:`~gradcheck_cli.errors.LayerError` naming the layer and the stage, never a
pass and never a traceback.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from .environment import ExitCalled, Interrupt, raised_by_callers_alarm, user_code, watching_interrupts
from .errors import GradcheckError, LayerError, OutOfMemory, user_frame
from .supervise import stage

T = TypeVar("T")


def guarded(what: str, fn: Callable[..., T], *args: Any, sizes_hint: Callable[[], str] | None = None, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, the layer's code; ``what`` names it in errors ('The forward of X')."""
    stage(what)
    try:
        with user_code():
            return fn(*args, **kwargs)
    except BaseException as exc:
        raise layer_error(exc, what, sizes_hint) from exc


def layer_error(exc: BaseException, what: str, sizes_hint: Callable[[], str] | None = None) -> BaseException:
    """What the layer's code raising ``exc`` means for the check.

    gradcheck's own errors, a real interrupt and the timeout pass through as they are.
    Anything else the layer raised -- any BaseException: SystemExit, GeneratorExit, a
    KeyboardInterrupt that no Ctrl-C sent -- is the layer's error (exit 1), never a pass.
    """
    if isinstance(exc, (GradcheckError, Interrupt)) or raised_by_callers_alarm(exc):
        return exc
    if isinstance(exc, KeyboardInterrupt) and not watching_interrupts():
        return exc  # no way to tell it from a real Ctrl-C here
    if isinstance(exc, SystemExit):
        return LayerError(f"{what} called sys.exit({exc.code!r}); no verdict could be reached.", "Remove sys.exit from the layer's code.")
    if isinstance(exc, ExitCalled):
        return LayerError(f"{what} called os._exit({exc.code!r}); no verdict could be reached.", "Remove os._exit from the layer's code.")
    text = first_line(exc)
    if isinstance(exc, AttributeError) and "before Module.__init__() call" in text:
        return LayerError(f"{what} raised AttributeError: {text}.", "Call super().__init__() first in the layer's __init__.")
    # torch.OutOfMemoryError (CUDA), the CPU allocator's RuntimeError, Python's MemoryError.
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or "DefaultCPUAllocator" in text:
        return OutOfMemory(f"Out of memory during {what[0].lower()}{what[1:]}: {text}", sizes_hint() if sizes_hint else None)
    return LayerError(
        f"{what} raised {type(exc).__name__}: {text} ({user_frame(exc, skip=('/torch/',))}).",
        "Run with --debug for the full traceback.",
    )


# The most of an exception's message a report or the terminal shows (a layer can raise 10 MB).
MESSAGE_MAX = 500


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, cut to MESSAGE_MAX characters; its type where it has none."""
    try:
        text = str(exc).strip()
    except Exception:  # an exception whose __str__ raises
        text = ""
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= MESSAGE_MAX else f"{line[:MESSAGE_MAX]}... ({len(line) - MESSAGE_MAX:,} more characters)"


class Guard:
    """Calls into one layer's code: ``guard("forward", fn, *args)`` names the stage and the layer in errors."""

    def __init__(self, target: str, sizes_hint: Callable[[], str] | None = None) -> None:
        self.target, self.sizes_hint = target, sizes_hint

    def __call__(self, stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return guarded(f"The {stage} of {self.target}", fn, *args, sizes_hint=self.sizes_hint, **kwargs)

"""Exceptions raised by the gradcheck core.

The core never prints and never exits; it raises one of these.  The CLI maps
:class:`UsageError` to exit status 2 and :class:`LayerError` to exit status 1.
Every error carries a one-paragraph ``message`` and an optional ``hint`` that
tells the user what to do next.
"""

from __future__ import annotations


class GradcheckError(Exception):
    """Base class for every error the core raises on purpose.

    ``key`` names what the caller gave that the error is about (``inputs``,
    ``params.sigma``, ``args/kwargs``), so that a spec can point at its own key;
    ``detail`` is the message without it.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.detail = message
        self.key = key
        self.message = f"{key}: {message}" if key else message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nHint: {self.hint}"
        return self.message


class UsageError(GradcheckError):
    """Bad option, target, spec or environment: the check could not start (exit 2)."""

    exit_code = 2


class SpecError(UsageError):
    """A YAML spec is malformed.  ``path`` is the spec file, ``key`` the key path."""

    def __init__(self, path, key: str | None, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, key)
        self.within = self.message  # the message without the spec's path, where the spec is named already
        self.message = f"{path}: {self.message}"
        self.path = path


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with '...' where it was cut."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0] if " " in text[: limit - 3] else text[: limit - 3]
    return cut.rstrip(",;:") + "..."


def suggest(word: str, choices, listing: str = "allowed") -> str:
    """'did you mean 'x'?' for a near miss among ``choices``, else '<listing>: a, b, c.' (the one suggestion helper)."""
    import difflib

    choices = list(choices)
    close = difflib.get_close_matches(str(word)[:100], choices, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"{listing}: {', '.join(choices) or 'none'}."


def user_frame(exc: BaseException, skip: tuple[str, ...] = ()) -> str:
    """'file, line N' of the innermost traceback frame in the user's code.

    Frames of gradcheck itself and of any path containing one of ``skip``
    (e.g. torch, importlib) are passed over.
    """
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "gradcheck_cli" not in f.filename and not any(s in f.filename for s in skip)]
    if not own:
        return "inside torch" if frames else "location unknown"
    return f"{own[-1].filename}, line {own[-1].lineno}"


class LayerError(GradcheckError):
    """The user's layer itself misbehaved: it raised, or returned something unusable (exit 1)."""

    exit_code = 1


class TimedOut(LayerError):
    """The layer's code ran past ``--timeout`` (exit 1): it would at any step size too."""


class OutOfMemory(LayerError):
    """The check ran out of memory in the layer's code (exit 1): a matter of sizes, not of the layer's gradients."""

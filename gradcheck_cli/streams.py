"""Standard streams that a check's exit code never depends on.

``gradcheck run ... | head -1``, a stdout on ``/dev/full``, a closed stdout or an
ASCII-only terminal must not turn a passing check into exit 1 with a traceback:

* :class:`SafeStream` wraps stdout/stderr: a reader that went away (broken pipe)
  silences it quietly, as pytest and ruff do; another write error (a full disk) is
  remembered and said once on stderr; characters the encoding cannot show are
  written in ASCII (``·`` as ``-``, others as ``\\u00b7`` escapes) instead of raising.
* :func:`protect_stdout` moves gradcheck's own stdout to a private file descriptor
  and points descriptor 1 at stderr, so that nothing else -- a layer's C code, a
  child process it starts at import -- can write into a report on stdout.
* :func:`printable` makes text from a layer or a spec safe to show on a terminal:
  control characters (escape sequences that set the title or clear the screen) and
  bidirectional overrides are written out as escapes.
"""

from __future__ import annotations

import errno
import io
import os
import re
import sys
from typing import TextIO

# Characters a terminal would act on rather than show: C0 controls (but tab and newline),
# DEL, C1 controls, and the bidirectional overrides and isolates that reorder what is shown;
# and lone surrogates, which no stream can encode: a file name's bytes that are not UTF-8
# (b'\xff.yaml' is '\udcff.yaml' in Python) would reach the terminal raw, or as '\udcff'.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNPRINTABLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

# What gradcheck's own non-ASCII characters become where the terminal cannot show them.
ASCII = str.maketrans({"·": "-", "≈": "~", "×": "x", "◀": "<", "½": "1/2", "Σ": "sum", "²": "^2", "−": "-", "…": "...", "σ": "sigma", "μ": "mu", "±": "+-", "≤": "<=", "≥": ">=", "→": "->"})


def printable(text: str, one_line: bool = False) -> str:
    """``text`` with every control character written out as an escape (ESC as ``\\x1b``).

    ``one_line`` also escapes newlines and tabs (for table cells and one-line messages).
    """
    pattern = _UNPRINTABLE_LINE if one_line else _UNPRINTABLE
    return pattern.sub(_escape, str(text))


def _escape(match: re.Match) -> str:
    return escaped(match.group())


def escaped(char: str) -> str:
    """One character written out: ESC as ``\\x1b``, U+202E as ``\\u202e``, and a byte that was not
    UTF-8 (decoded with surrogateescape, U+DC80..U+DCFF) as the byte it was, ``\\xff``."""
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class SafeStream(io.TextIOBase):
    """A text stream whose write errors never reach the caller (see the module doc)."""

    def __init__(self, stream: TextIO | None, name: str = "stdout") -> None:
        self.stream = stream
        self.name = name
        self.broken = stream is None  # a reader that went away: quiet from now on
        self.failure: str | None = None  # another write error, said once on stderr
        encoding = getattr(stream, "encoding", None) or "utf-8"
        self.ascii = not encoding.lower().replace("-", "").startswith(("utf", "ucs"))
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # what rich asks for to choose its box characters
        return self._encoding

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        try:
            return not self.broken and bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def fileno(self) -> int:
        if self.stream is None:
            raise io.UnsupportedOperation("no file descriptor")
        return self.stream.fileno()

    def write(self, text: str) -> int:
        if self.broken or self.failure:
            return len(text)
        out = text.translate(ASCII).encode(self._encoding, "backslashreplace").decode(self._encoding) if self.ascii else text
        try:
            self.stream.write(out)
        except UnicodeEncodeError:
            self._guard(lambda: self.stream.write(out.encode("ascii", "backslashreplace").decode("ascii")))
        except (OSError, ValueError) as exc:
            self._fail(exc)
        return len(text)

    def flush(self) -> None:
        if not (self.broken or self.failure):
            self._guard(self.stream.flush)

    def _guard(self, fn) -> None:
        try:
            fn()
        except (OSError, ValueError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, BrokenPipeError) or getattr(exc, "errno", None) == errno.EPIPE:
            self.broken = True
            _silence(self.stream)
        elif isinstance(exc, ValueError):  # written to after it was closed
            self.broken = True
        else:
            self.failure = f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)


def _silence(stream) -> None:
    """A broken pipe: point its descriptor at /dev/null, so the interpreter's last flush is quiet."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def ensure_std_fds() -> None:
    """Open /dev/null on a closed descriptor 0, 1 or 2, so that no file gradcheck opens later takes its number."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


_REPORT: SafeStream | None = None  # gradcheck's own stdout, once protect_stdout has moved it


def report_stream() -> TextIO:
    """Where gradcheck writes its report (the table, ``--json -``): its private stdout, or sys.stdout."""
    return _REPORT if _REPORT is not None else sys.stdout


def protect_stdout() -> None:
    """gradcheck's stdout on a private descriptor; descriptor 1 and ``sys.stdout`` go to stderr.

    Whatever the layer writes -- ``print`` (also from a thread, after the check), C code,
    a child process -- lands on stderr; only gradcheck writes the report, through
    :func:`report_stream`. Only for the real process (the console script), never inside a
    test runner.
    """
    global _REPORT
    ensure_std_fds()
    if sys.stdout is not None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        private = os.dup(1)
        os.set_inheritable(private, False)
        os.dup2(2, 1)
    except OSError:
        return
    ours = open(private, "w", encoding=encoding, errors="backslashreplace", closefd=True, buffering=1)
    _REPORT = SafeStream(ours, "stdout")
    sys.stderr = SafeStream(sys.stderr, "stderr") if sys.stderr is not None else SafeStream(None, "stderr")
    sys.stdout = _REPORT  # for click (help, version, usage errors) until hide_stdout()


def hide_stdout() -> None:
    """From here on ``sys.stdout`` is stderr: before the layer's code first runs (see protect_stdout)."""
    if _REPORT is not None:
        sys.stdout = sys.stderr


def finish() -> None:
    """Flush both streams; say once on stderr if the report could not be written to stdout."""
    for stream in (report_stream(), sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    out = report_stream()
    if isinstance(out, SafeStream) and out.failure:
        try:
            sys.stderr.write(f"gradcheck: could not write to stdout ({out.failure}); the report there is incomplete.\n")
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass


class TrimmedStream(io.TextIOBase):
    """A text stream that drops the spaces at the end of every line written to it.

    rich pads wrapped and justified text with spaces up to the width it wraps at; in a log or
    a file those are noise (and a diff tool's complaint). Spaces at the very end of a write
    are held back until it is known whether a newline follows.
    """

    def __init__(self, stream: io.TextIOBase | TextIO) -> None:
        self.stream = stream
        self._pending = ""

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def write(self, text: str) -> int:
        data = self._pending + text
        body = data.rstrip(" ")
        self._pending = data[len(body) :]
        if body:
            self.stream.write(_TRAILING.sub("\n", body))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.stream.write(self._pending)
            self._pending = ""
        self.stream.flush()


_TRAILING = re.compile(r" +\n")

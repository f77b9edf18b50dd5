"""The report files a run was asked for: where they go, and writing them safely.

* Every path is resolved (absolute, symbolic links followed) before any of the
  user's code runs, so a layer that calls ``os.chdir`` cannot redirect a report.
* An output may not be an input of the run (a spec, a layer file) nor another
  output: that would overwrite the user's file. Refused before anything runs.
* Every file is written atomically: a temporary file in the same folder, then
  renamed over the target. A full disk or a kill mid-write leaves the old file or
  the new one, never a truncated one.
* As soon as the run starts, each report is replaced by an "incomplete" one, so a
  run that is killed outright leaves no stale report of an earlier run behind; at
  the end every requested report describes this run, whatever its outcome.

No click and no torch here: the CLI and its supervisor (supervise.py) write through this.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import GradcheckError, UsageError

if TYPE_CHECKING:
    from .report import RunResult

KINDS = {"json": "JSON report", "junit": "JUnit XML report", "plot": "plot"}
# Names of this process's standard output: --json /dev/stdout is --json -.
STDOUT_NAMES = ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
# The reports that may go to stdout ('-'), at most one of them in a run.
TO_STDOUT = ("json", "junit")
# A report file that gradcheck may replace is at most this large (the reports of 1000 specs are ~2 MB).
REPORT_MAX_BYTES = 256 * 1024**2
INCOMPLETE = "gradcheck started this report but did not finish the run: no verdict."
OPTIONS = {"json": "--json", "junit": "--junit-xml", "plot": "--plot"}


def resolve(path: str | os.PathLike) -> Path:
    """Absolute, with '~' expanded and every symbolic link followed (also for a file that does not exist yet)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def same_file(a: Path, b: Path) -> bool:
    """The same path, or two names of one file (a hard link)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_stdout(text: str | None) -> bool:
    """'-', or a name of this process's standard output (the same as '-')."""
    return text == "-" or text in STDOUT_NAMES


@dataclass(frozen=True)
class Outputs:
    """Resolved output paths; ``json`` or ``junit`` (not both) may be '-' (stdout)."""

    json: Path | str | None = None
    junit: Path | str | None = None
    plot: Path | None = None

    @property
    def on_stdout(self) -> str | None:
        """The kind of report that goes to stdout ('json' or 'junit'), if one does: the table then goes to stderr."""
        return next((kind for kind in TO_STDOUT if getattr(self, kind) == "-"), None)

    @classmethod
    def resolve(cls, json: str | None = None, junit: str | None = None, plot: str | None = None, inputs: Iterable[tuple[str, Path]] = ()) -> "Outputs":
        """Resolve the paths; refuse a missing folder, an input of the run (``inputs``: (what, path)),
        a file that is not a report of gradcheck's, or two outputs on one file."""
        given = {"json": json, "junit": junit, "plot": plot}
        if plot == "-":  # not a file named '-': a PNG is no report for stdout (and stdout may hold the JSON or XML)
            raise UsageError(
                "--plot -: a plot is a PNG image, written to a file; '-' (stdout) is only for --json or --junit-xml.",
                "Give the plot a file name, e.g. --plot errors.png.",
            )
        if all(is_stdout(given[kind]) for kind in TO_STDOUT):
            raise UsageError(
                f"--json {given['json']} and --junit-xml {given['junit']} both write to stdout: the two reports would be "
                "mixed into one stream that neither a JSON nor an XML reader can read.",
                "Send one of them to a file, e.g. --json - --junit-xml reports/gradcheck.xml.",
            )
        cls(**{k: resolve(v) if v and not is_stdout(v) else None for k, v in given.items()}).refuse_inputs(inputs)
        resolved: dict[str, Path | str | None] = {}
        for kind, text in given.items():
            if not text:
                resolved[kind] = None
            elif kind in TO_STDOUT and is_stdout(text):
                resolved[kind] = "-"  # /dev/stdout names this process's stdout: the same as '-'
            else:
                resolved[kind] = _output_path(kind, text)
        files = [(kind, p) for kind, p in resolved.items() if isinstance(p, Path)]
        for i, (kind, path) in enumerate(files):
            for other, other_path in files[i + 1 :]:
                if same_file(path, other_path):
                    raise UsageError(
                        f"{OPTIONS[kind]} and {OPTIONS[other]} both name {given[kind]!r}: one report would overwrite the other.",
                        "Give each report its own file.",
                    )
        return cls(**resolved)

    def start(self) -> tuple["Outputs", UsageError | None]:
        """Replace every requested report by one that says this run has not finished (yet).

        Returns the outputs that could be written, and the problem with any other: its old
        content is removed, so that no earlier run's report survives beside this run's.
        """
        from .junit import junit_xml
        from .report import RunResult, SuiteResult, to_json

        unfinished = GradcheckError(INCOMPLETE, "Look at the job's log; the run may have been killed (SIGKILL, out of memory).")
        result = RunResult((SuiteResult("gradcheck run", error=unfinished),))
        texts = {"json": to_json({**result.to_dict(), "status": "INCOMPLETE", "exit_code": None}) + "\n", "junit": junit_xml(result.results)}
        kept, problem = {"json": self.json, "junit": self.junit, "plot": self.plot}, None
        for kind, path in self.files():
            try:
                if kind == "plot":
                    _remove(path)  # written at the end only: until then, no plot of an earlier run
                else:
                    atomic_write(path, texts[kind], KINDS[kind])
            except UsageError as exc:
                kept[kind] = None
                problem = problem or exc
                _remove(path)
        return Outputs(**kept), problem

    def write(self, result: RunResult, verbose: bool = False) -> UsageError | None:
        """The JSON and JUnit reports of ``result``, each on its own; the first problem, if one could not be written.

        A report that cannot be written is removed, never left as an earlier run's. ``verbose``
        (-v) puts the notes that say nothing is wrong into JUnit's system-out too.
        """
        from .junit import junit_xml
        from .streams import SafeStream, report_stream

        problem = None
        texts = {"json": lambda: result.to_json() + "\n", "junit": lambda: junit_xml(result.results, verbose)}
        kind = self.on_stdout
        if kind is not None:
            out = report_stream()
            text = texts[kind]()
            out.write(text if text.endswith("\n") else text + "\n")
            out.flush()
            if isinstance(out, SafeStream) and out.failure:
                problem = UsageError(
                    f"Cannot write the {KINDS[kind]} to stdout: {out.failure}.", f"Write it to a file with {OPTIONS[kind]} PATH."
                )
        for kind, path in self.files():
            if kind == "plot":
                continue
            try:
                atomic_write(path, texts[kind](), KINDS[kind])
            except UsageError as exc:
                problem = problem or exc
                _remove(path)
        return problem

    def told(self) -> dict[str, str | None]:
        """The paths, as the supervisor is told them (see supervise.py)."""
        return {"json": str(self.json) if self.json else None, "junit": str(self.junit) if self.junit else None}

    @classmethod
    def from_told(cls, told: dict[str, str | None]) -> "Outputs":
        def path(kind: str) -> Path | str | None:
            text = told.get(kind)
            return "-" if text == "-" else Path(text) if text else None

        return cls(json=path("json"), junit=path("junit"))

    def files(self) -> list[tuple[str, Path]]:
        return [(kind, p) for kind, p in (("json", self.json), ("junit", self.junit), ("plot", self.plot)) if isinstance(p, Path)]

    def refuse_inputs(self, inputs: Iterable[tuple[str, Path]]) -> None:
        _, problem = self.without_inputs(inputs)
        if problem is not None:
            raise problem

    def without_inputs(self, inputs: Iterable[tuple[str, Path]]) -> tuple["Outputs", UsageError | None]:
        """These outputs less any that is one of the run's input files (what, path), and the error that names it.

        Such an output is refused (the file would be overwritten), and must not receive
        the error report either: the caller writes that to the outputs returned.
        """
        inputs = list(inputs)
        kept, problem = dict(json=self.json, junit=self.junit, plot=self.plot), None
        for kind, path in self.files():
            for what, source in inputs:
                if same_file(path, source):
                    kept[kind] = None
                    problem = problem or UsageError(
                        f"{OPTIONS[kind]} {str(path)!r} is {what} of this run; writing the {KINDS[kind]} there would overwrite it.",
                        "Choose another path for the report.",
                    )
        return Outputs(**kept), problem


def _output_path(kind: str, text: str) -> Path:
    """The resolved path of one output, refused unless gradcheck may write there.

    It may write a path where nothing is yet, a regular file that holds a report of its own
    (of this kind), or a device or pipe (written into, never replaced). Anything else --
    the spec, the layer file, a module it imports, any file of the user's -- is refused:
    gradcheck never overwrites a file it did not write.
    """
    path = resolve(text)
    if not path.parent.is_dir():
        raise UsageError(f"Cannot write {text!r}: folder {str(path.parent)!r} does not exist.", "Create the folder first, or choose another path.")
    if path.is_dir():
        raise UsageError(f"Cannot write the {KINDS[kind]} to {text!r}: it is a folder.", "Give a file name.")
    if path.exists() and path.is_file() and not is_report(path, kind):
        raise UsageError(
            f"{OPTIONS[kind]} {text!r}: that file exists and is not a {KINDS[kind]} of gradcheck's; "
            "gradcheck never overwrites a file it did not write.",
            "Choose another path for the report, or remove the file first if it is an old report of another tool.",
        )
    return path


def is_report(path: Path, kind: str) -> bool:
    """Does ``path`` hold a report of ``kind`` that gradcheck wrote (one it may replace)?"""
    try:
        if os.stat(path).st_size > REPORT_MAX_BYTES:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    if kind == "plot":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if kind == "junit":
        return b'<testsuites name="gradcheck"' in data[:4096]
    import json as jsonlib

    try:
        doc = jsonlib.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and "passed" in doc and ("target" in doc or "specs" in doc)


def _remove(path: Path) -> None:
    """Remove an old report of gradcheck's (never anything else)."""
    with contextlib.suppress(OSError):
        if path.is_file() and any(is_report(path, kind) for kind in KINDS):
            os.unlink(path)


def atomic_write(path: Path, data: str | bytes, what: str = "report") -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it into place.

    The file keeps the permissions an ordinary write would give it (the old file's, or
    0666 less the umask), not the temporary file's 0600. A device or a pipe (/dev/null, a
    FIFO) is written into, never replaced by a regular file.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        info = os.stat(path)
    except OSError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        _write_into(path, raw, what)
        return
    mode = info.st_mode & 0o7777 if info is not None else 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"Cannot write the {what} to {str(path)!r}: {exc.strerror or exc}.", "Choose a writable path.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UsageError(f"Cannot write the {what} to {str(path)!r}: {exc.strerror or exc}.", "Choose a writable path.") from None
        raise


def _write_into(path: Path, raw: bytes, what: str) -> None:
    """A device or a pipe: opened without blocking (a FIFO nobody reads is an error, not a hang) and written."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            os.set_blocking(fd, True)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:
        reason = "nobody is reading that pipe" if exc.errno == errno.ENXIO else exc.strerror or exc
        raise UsageError(f"Cannot write the {what} to {str(path)!r}: {reason}.", "Choose a regular file.") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refused_command_line(args: list[str], reason: str) -> None:
    """A command line that could not be parsed: leave no stale report in the files it named.

    What counts as the run's inputs is not known then, so only a report of an earlier run
    (or a path where nothing is yet) is replaced by one that says why nothing was checked.
    """
    from .junit import junit_xml
    from .report import RunResult, SuiteResult

    error = UsageError(f"the command line was refused: {reason}", "Run 'gradcheck run --help' for the options.")
    result = RunResult((SuiteResult("gradcheck run", error=error),))
    given = {kind: _option_value(args, OPTIONS[kind]) for kind in TO_STDOUT}
    both = all(is_stdout(text) for text in given.values())  # refused as well: stdout gets neither
    for kind, text in given.items():
        if is_stdout(text):  # stdout is that report's: it says why nothing was checked
            if not both:
                with contextlib.suppress(OSError, ValueError):
                    report = result.to_json() + "\n" if kind == "json" else junit_xml(result.results)
                    sys.stdout.write(report if report.endswith("\n") else report + "\n")
                    sys.stdout.flush()
            continue
        if not text:
            continue
        with contextlib.suppress(GradcheckError, OSError):
            path = Outputs.resolve(**{kind: text}).files()[0][1]
            if path.exists() and path.is_file() and not is_report(path, kind):
                continue
            atomic_write(path, result.to_json() + "\n" if kind == "json" else junit_xml(result.results), KINDS[kind])


def _option_value(args: list[str], name: str) -> str | None:
    """The last value given to option ``name`` (``--json X`` or ``--json=X``), before any ``--``."""
    value = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value

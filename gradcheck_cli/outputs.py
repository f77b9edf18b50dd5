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
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import GradcheckError, UsageError

if TYPE_CHECKING:
    from .report import RunResult

KINDS = {"json": "JSON report", "junit": "JUnit XML report", "plot": "plot"}
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


@dataclass(frozen=True)
class Outputs:
    """Resolved output paths; ``json`` may be '-' (stdout)."""

    json: Path | str | None = None
    junit: Path | None = None
    plot: Path | None = None

    @classmethod
    def resolve(cls, json: str | None = None, junit: str | None = None, plot: str | None = None) -> "Outputs":
        """Resolve the paths, and refuse a missing folder, a folder as the file, or two outputs on one file."""
        given = {"json": json, "junit": junit, "plot": plot}
        resolved: dict[str, Path | str | None] = {}
        for kind, text in given.items():
            if not text:
                resolved[kind] = None
            elif kind == "json" and text == "-":
                resolved[kind] = "-"
            else:
                path = resolve(text)
                if not path.parent.is_dir():
                    raise UsageError(
                        f"Cannot write {text!r}: folder {str(path.parent)!r} does not exist.", "Create the folder first, or choose another path."
                    )
                if path.is_dir():
                    raise UsageError(f"Cannot write the {KINDS[kind]} to {text!r}: it is a folder.", "Give a file name.")
                resolved[kind] = path
        files = [(kind, p) for kind, p in resolved.items() if isinstance(p, Path)]
        for i, (kind, path) in enumerate(files):
            for other, other_path in files[i + 1 :]:
                if same_file(path, other_path):
                    raise UsageError(
                        f"{OPTIONS[kind]} and {OPTIONS[other]} both name {given[kind]!r}: one report would overwrite the other.",
                        "Give each report its own file.",
                    )
        return cls(**resolved)

    def start(self) -> None:
        """Replace every requested report file by one that says this run has not finished (yet)."""
        from .junit import junit_xml
        from .report import RunResult, SuiteResult, to_json

        unfinished = GradcheckError(INCOMPLETE, "Look at the job's log; the run may have been killed (SIGKILL, out of memory).")
        result = RunResult((SuiteResult("gradcheck run", error=unfinished),))
        if isinstance(self.json, Path):
            atomic_write(self.json, to_json({**result.to_dict(), "status": "INCOMPLETE", "exit_code": None}) + "\n", KINDS["json"])
        if self.junit is not None:
            atomic_write(self.junit, junit_xml(result.results), KINDS["junit"])

    def write(self, result: RunResult, verbose: bool = False) -> None:
        """The JSON and JUnit reports of ``result``; raises UsageError if one cannot be written.

        ``verbose`` (-v) puts the notes that say nothing is wrong into JUnit's system-out too.
        """
        from .junit import junit_xml
        from .streams import SafeStream

        if self.json == "-":
            sys.stdout.write(result.to_json() + "\n")
            sys.stdout.flush()
            if isinstance(sys.stdout, SafeStream) and sys.stdout.failure:
                raise UsageError(f"Cannot write the JSON report to stdout: {sys.stdout.failure}.", "Write it to a file with --json PATH.")
        elif self.json is not None:
            atomic_write(self.json, result.to_json() + "\n", KINDS["json"])
        if self.junit is not None:
            atomic_write(self.junit, junit_xml(result.results, verbose), KINDS["junit"])

    def told(self) -> dict[str, str | None]:
        """The paths, as the supervisor is told them (see supervise.py)."""
        return {"json": str(self.json) if self.json else None, "junit": str(self.junit) if self.junit else None}

    @classmethod
    def from_told(cls, told: dict[str, str | None]) -> "Outputs":
        json_path = told.get("json")
        return cls(json="-" if json_path == "-" else Path(json_path) if json_path else None, junit=Path(told["junit"]) if told.get("junit") else None)

    def files(self) -> list[tuple[str, Path]]:
        return [(kind, p) for kind, p in (("json", self.json), ("junit", self.junit), ("plot", self.plot)) if isinstance(p, Path)]

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


def atomic_write(path: Path, data: str | bytes, what: str = "report") -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it into place.

    The file keeps the permissions an ordinary write would give it (the old file's, or
    0666 less the umask), not the temporary file's 0600.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
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
    for kind, flag in (("json", "--json"), ("junit", "--junit-xml")):
        text = _option_value(args, flag)
        if kind == "json" and text == "-":  # stdout is the JSON report's: it says why nothing was checked
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.write(result.to_json() + "\n")
                sys.stdout.flush()
            continue
        if not text or text == "-":
            continue
        with contextlib.suppress(GradcheckError, OSError):
            path = Outputs.resolve(**{kind: text}).files()[0][1]
            if path.exists() and not _is_a_report(path):
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


def _is_a_report(path: Path) -> bool:
    """Does the file hold a gradcheck report (JSON or JUnit) -- one that may be replaced?"""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b'"passed"' in head or b'<testsuites name="gradcheck"' in head

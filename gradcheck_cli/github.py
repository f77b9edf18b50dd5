"""GitHub Actions annotations: one ``::error`` workflow command per failing tensor.

    ::error file=layers/swish.py,line=12,title=gradcheck: x of swish.yaml does not match::...

GitHub turns each into an annotation on the line of the pull request's diff where the
layer's gradient is written (its backward; else its forward: :mod:`.source`), as ruff's
``--output-format github`` does for lint errors. A spec or target that could not be checked
is one annotation on the spec file (at the key the error is about, where known). Pure:
builds text, never prints. Derived from the :class:`~gradcheck_cli.report.RunResult` like
every reporter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from .junit import failure_message
from .report import RunResult, SuiteResult
from .source import key_line, shown_path
from .streams import printable

_RAISED_AT = re.compile(r"\(([^()]+), line (\d+)\)\.?$")


def escape_data(text: str) -> str:
    """A command's message: '%', CR and LF escaped as GitHub's runner reads them."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value (file, title): also ':' and ',', which would end it."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **properties: str | int | None) -> str:
    """``::kind prop=value,...::message`` with every part escaped; None properties left out."""
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{kind}{' ' + props if props else ''}::{escape_data(message)}"


def annotations(run: RunResult) -> Iterator[str]:
    """The workflow commands for a run: one per failing or inconclusive tensor, one per target that could not be checked."""
    for result in run.results:
        yield from _suite(result)


def _suite(result: SuiteResult) -> Iterator[str]:
    name = printable(result.name, one_line=True)
    report = result.report
    if report is None:
        if result.error is None:
            return  # interrupted before it began: nothing is wrong in the code
        path = getattr(result.error, "path", None)
        line = key_line(path, getattr(result.error, "key", None)) if path is not None else None
        if path is None:  # the layer's code raised: "... (/path/layer.py, line 12)." names where
            where = _RAISED_AT.search(result.error.message)
            if where and os.path.isfile(where.group(1)):
                path, line = where.group(1), int(where.group(2))
        kind = "could not be checked" if result.error.exit_code == 2 else "the layer's code failed"
        yield command(
            "error", printable(str(result.error)), file=shown_path(path) if path is not None else None, line=line, title=f"gradcheck: {name}: {kind}"
        )
        return
    source = report.source
    where = {"file": shown_path(source.file), "line": source.line} if source is not None else {}
    for t in report.tensors:
        if t.passed:
            continue
        lines = [failure_message(t)]
        if t.diagnosis:
            lines.append(f"diagnosis: {t.diagnosis}")
        if result.repro.get(t.name):
            lines.append(f"rerun: {result.repro[t.name]}")
        what = "is inconclusive" if t.status == "NOISE" else "does not match"
        title = f"gradcheck: the gradient of {t.name} {what} ({name})"
        yield command("error", printable("\n".join(lines)), **where, title=printable(title, one_line=True))

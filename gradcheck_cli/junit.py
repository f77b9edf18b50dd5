"""JUnit XML for CI: one <testsuite> per spec or target, one <testcase> per checked tensor.

Each test case carries the layer's source (``file``, ``line``: its backward), a dotted
``classname`` made from the spec's path or the target, and its own ``time``; tensors that
``--only`` left out are ``<skipped>``.

Failing tensors carry a <failure> whose message names the worst element, its
analytic and numeric values and the verdict counts; a spec or target that
could not be checked at all (usage/config error, or the layer raised) is one
<testcase> with an <error>.  Pure: builds text, never prints or writes.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Sequence

from .errors import LayerError
from .matrix import split_selector
from .options import options
from .report import SuiteResult, TensorReport, verdict_counts, worst_element
from .source import key_line, shown_path

__all__ = ["SuiteResult", "failure_message", "junit_xml", "xml_safe"]

# Characters XML 1.0 cannot hold at all (C0 controls but tab, newline and return; surrogates; U+FFFE/F).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with every character XML cannot hold written out as an escape (ESC -> '\\x1b')."""
    from .streams import escaped

    return _NOT_XML.sub(lambda m: escaped(m.group()), text)


def failure_message(t: TensorReport) -> str:
    """One line: how many elements failed, the worst one with both values, the verdict counts."""
    if t.status == "NOISE":
        head = f"{t.name}: inconclusive, {t.counts.get('NOISE', 0)} of {t.n_checked} checked elements lost in finite-difference noise"
    else:
        head = f"{t.name}: {t.n_failed} of {t.n_checked} checked elements do not match"
    worst = f"; worst {worst_element(t)}, rel error {t.max_rel_error:.3g}" if worst_element(t) else ""
    return f"{head}{worst}; verdicts: {verdict_counts(t)}"


def _failure_text(t: TensorReport, repro: str | None) -> str:
    lines = [failure_message(t)]
    if t.diagnosis:
        lines.append(f"diagnosis: {t.diagnosis}")
    if t.coverage:
        lines.append(t.coverage)
    if repro:
        lines.append(f"rerun: {repro}")
    return "\n".join(lines)


def dotted_name(name: str) -> str:
    """A suite's name as a dotted JUnit classname: 'specs/bad_swish.yaml' -> 'specs.bad_swish',
    'layers/swish.py:Swish' -> 'layers.swish.Swish' (Jenkins splits a classname at its dots); a combination
    of a matrix keeps its name, dots made '_': 'specs/g.yaml[eps=0.001]' -> 'specs.g[eps=0_001]'."""
    path, selector = split_selector(name)
    if selector is not None:
        return f"{dotted_name(path)}[{selector.replace('.', '_')}]"
    head, sep, attr = name.rpartition(":") if ":" in name and not re.match(r"^[A-Za-z]:[\\/]", name) else (name, "", "")
    head = head if sep else name
    if "/" in head or "\\" in head or head.lower().endswith((".py", ".yaml", ".yml")):
        path = PurePath(shown_path(head))
        parts = [p.replace(".", "_") for p in path.with_suffix("").parts if p not in ("/", ".", "..") and not p.endswith(":\\")]
        head = ".".join(parts)
    return ".".join(p for p in (head, attr) if p) or "gradcheck"


def _located(case: ET.Element, source) -> None:
    if source is not None:
        case.set("file", shown_path(source.file))
        case.set("line", str(source.line))


def _suite(result: SuiteResult, timestamp: str, hostname: str, verbose: bool) -> ET.Element:
    suite = ET.Element("testsuite", name=result.name, timestamp=timestamp, hostname=hostname)
    report = result.report
    classname = dotted_name(result.name)
    if report is not None:
        props = ET.SubElement(suite, "properties")
        # What decides a verdict: every option a rerun would repeat (options.py), as this check resolved it.
        for key in (name for name, opt in options() if opt.rerun):
            value = report.config.get(key)
            if value is not None and value != []:
                ET.SubElement(props, "property", name=key, value=",".join(map(str, value)) if isinstance(value, list) else str(value))
    tests = failures = errors = skipped = 0
    if result.skip_reason is not None:  # a layer of a whole file that could not be checked
        case = ET.SubElement(suite, "testcase", classname=classname, name="(skipped)", time="0.000")
        ET.SubElement(case, "skipped", message=f"not checked: {result.skip_reason}")
        tests, skipped = 1, 1
    elif report is None:
        error = result.error
        kind = "interrupted" if result.interrupted else "layer error" if isinstance(error, LayerError) else "spec error"
        case = ET.SubElement(suite, "testcase", classname=classname, name=f"({kind})", time=f"{result.time:.3f}")
        path = getattr(error, "path", None)
        if path is not None:  # a spec that could not be read: point at it (and at its key)
            case.set("file", shown_path(path))
            line = key_line(path, getattr(error, "key", None))
            if line is not None:
                case.set("line", str(line))
        text = str(error) if error is not None else "interrupted before the check began" if result.interrupted else "not checked"
        node = ET.SubElement(case, "error", message=text.splitlines()[0], type=type(error).__name__ if error else "Interrupted" if result.interrupted else "Error")
        node.text = text
        tests, errors = 1, 1
    else:
        for t in report.tensors:
            case = ET.SubElement(suite, "testcase", classname=classname, name=t.name, time=f"{t.time:.3f}")
            _located(case, report.source)
            tests += 1
            if not t.passed:
                failures += 1
                node = ET.SubElement(case, "failure", message=failure_message(t), type=t.status)
                node.text = _failure_text(t, result.repro.get(t.name))
        for name in report.skipped:
            case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0.000")
            _located(case, report.source)
            ET.SubElement(case, "skipped", message="not checked: left out by --only")
            tests += 1
            skipped += 1
        notes = report.notes_shown(verbose)
        if notes:
            ET.SubElement(suite, "system-out").text = "\n".join(f"note: {n}" for n in notes)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{result.time:.3f}")
    return suite


def junit_xml(results: Sequence[SuiteResult], verbose: bool = False) -> str:
    """The JUnit XML document (UTF-8 text, with declaration) for these results.

    Notes that say nothing is wrong (how points were evaluated) go to ``system-out`` only when
    ``verbose``. Text from the layer or a spec (error messages, notes, names) may hold characters
    XML cannot carry (ESC from a coloured message): they are written as escapes, so the
    document stays well-formed.
    """
    timestamp = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    hostname = socket.gethostname()
    root = ET.Element("testsuites", name="gradcheck")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in results:
        suite = _suite(result, timestamp, hostname, verbose)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{sum(r.time for r in results):.3f}")
    for node in root.iter():
        if node.text:
            node.text = xml_safe(node.text)
        for key, value in node.attrib.items():
            node.set(key, xml_safe(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

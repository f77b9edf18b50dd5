"""Gradient checks inside ordinary test functions, failing with the report the CLI prints.

    from gradcheck_cli import assert_gradients

    def test_my_layer():
        assert_gradients(MyLayer, ["4x16"], dtype="float64")      # raises AssertionError if a gradient is wrong

A failure's message is the report as ``gradcheck run`` shows it -- the table, the worst
element, the diagnosis and a rerun line -- in plain text; notes that say nothing is wrong
are left out unless ``verbose``. Nothing is printed.
"""

from __future__ import annotations

import inspect
import io
import os
from typing import Any, Mapping, Sequence

from .options import rerun_keywords
from .report import Report
from .spec import InputSpec

__all__ = ["assert_gradients", "failure_text"]


def failure_text(report: Report, repro: Mapping[str, str] | None = None, *, verbose: bool = False, width: int = 120) -> str:
    """The report as the CLI renders it, in plain text (no colour, no escapes) at ``width`` columns."""
    from rich.console import Console

    from .render import render_report

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, color_system=None, highlight=False, soft_wrap=False, force_terminal=False)
    render_report(console, report, verbose=verbose, repro=repro)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def assert_gradients(layer: Any, inputs: Sequence[Any] = (), *, verbose: bool = False, **options: Any) -> Report:
    """Check ``layer`` as :func:`gradcheck_cli.check` does; raise :class:`AssertionError` with the report if a gradient is wrong.

    Returns the passing :class:`~gradcheck_cli.report.Report`. ``options`` are those of
    :func:`~gradcheck_cli.check` (``dtype``, ``rtol``, ``only``, ``args``, ``kwargs``, ...).
    """
    from .checker import check

    __tracebackhide__ = True  # pytest: the failure is the report, not this frame
    report = check(layer, inputs, **options)
    if not report.passed:
        raise AssertionError(failure_text(report, rerun_lines(report, layer, inputs, options), verbose=verbose))
    return report


def rerun_lines(report: Report, layer: Any, inputs: Sequence[Any], options: Mapping[str, Any]) -> dict[str, str]:
    """For each failing tensor, how to check just it again: a ``gradcheck run`` line where the layer and
    inputs can be named on a command line, else the keywords to add to this call."""
    from .render import input_arg, repro_commands

    target = _target(layer)
    keywords = dict(options.get("keywords") or {})
    specs = [_input_spec(x) for x in inputs] + [_input_spec(v, name=k) for k, v in keywords.items()]
    if target is not None and all(s is not None for s in specs) and not any(options.get(k) for k in ("args", "kwargs", "params")):
        return repro_commands(report, target, [arg for s in specs for arg in ("--input", input_arg(s))])  # type: ignore[arg-type]
    keywords = ", ".join(f"{k}={v!r}" for k, v in rerun_keywords(report.config).items())
    return {t.name: f"assert_gradients(..., {f'only=[{t.only_name!r}], ' if t.only_name else ''}{keywords})" for t in report.tensors if not t.passed}


def _target(layer: Any) -> str | None:
    """'path/to/file.py:Qual.Name' for a class or function defined at a module's top level (or the target string)."""
    if isinstance(layer, str):
        return layer
    if not (inspect.isclass(layer) or inspect.isfunction(layer)):
        return None  # an instance (its state, its constructor's arguments): a fresh one on a command line is another layer
    obj = layer
    qualname = getattr(obj, "__qualname__", "")
    try:
        file = inspect.getsourcefile(obj)
    except TypeError:
        return None
    if not file or "<" in qualname or not os.path.isfile(file):
        return None  # a lambda, a class defined inside the test, a C type
    try:
        return f"{os.path.relpath(file)}:{qualname}"
    except ValueError:  # another drive
        return f"{file}:{qualname}"


def _input_spec(value: Any, name: str | None = None) -> InputSpec | None:
    """An input as an --input can give it again (``name``: as that keyword); None for a tensor
    (its numbers cannot be written on a command line) or a value --input cannot spell."""
    from dataclasses import replace

    from .inputs import parse_input

    spec: InputSpec | None = None
    if isinstance(value, InputSpec):
        spec = value
    elif isinstance(value, str):
        try:
            spec = parse_input(value)
        except Exception:  # noqa: BLE001 -- the check itself said what is wrong with it
            return None
    elif isinstance(value, (int, float, list)) and not isinstance(value, bool):
        spec = InputSpec(value=value)
    if spec is None:
        return None
    from .render import input_arg

    spec = replace(spec, name=name) if name is not None and spec.name is None else spec
    try:  # only what --input can say exactly: a distribution, its range, constant=True or a dtype would be lost
        return spec if parse_input(input_arg(spec)) == spec else None
    except Exception:  # noqa: BLE001
        return None

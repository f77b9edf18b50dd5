"""The ``gradcheck`` command: a thin translator between click and the core.

It parses options into check options, calls the core, renders the report and
maps the outcome to an exit status: 0 all gradients match, 1 a mismatch or the
layer's own code raised, 2 a usage or configuration problem.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console

from . import __version__
from .config import FLOAT_DTYPES
from .check import Interrupted
from .errors import GradcheckError, UsageError

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

RUN_EPILOG = """\b
Examples:
  gradcheck run layer_specs/gauss_filter.py:GaussFilter --input 2x64
  gradcheck run layer_specs/gauss_filter.py:GaussianConvFunction --input 1x100 --input =4.5 --input =-19.5
  gradcheck run layer_specs/gauss_filter.yaml
  gradcheck run layer_specs/ --json report.json
  gradcheck run mypkg.layers:MyLayer --input 4x3 --dtype float32 --reference-dtype float64

\b
Exit status: 0 all gradients match; 1 a mismatch, or the layer's own code
raised; 2 a usage or configuration problem (bad option, target or spec).
"""


class InputParam(click.ParamType):
    """``--input``: a shape such as 4x3x8 (standard normal) or a literal such as =4.5."""

    name = "SHAPE|=JSON"

    def convert(self, value, param, ctx):
        from .inputs import parse_input

        if not isinstance(value, str):
            return value
        try:
            return parse_input(value)
        except GradcheckError as exc:
            self.fail(f"{exc.message} {exc.hint or ''}".strip(), param, ctx)


class DeviceParam(click.ParamType):
    """``--device``: any torch device string; availability is checked by the core."""

    name = "DEVICE"

    def convert(self, value, param, ctx):
        import torch

        try:
            torch.device(value)
        except (RuntimeError, TypeError):
            self.fail(f"{value!r} is not a torch device. Use cpu, cuda, cuda:N or mps.", param, ctx)
        return value


class CliError(click.ClickException):
    """A core error shown as one paragraph (plus hint) with the core's exit status."""

    def __init__(self, error: GradcheckError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


def _console(stream, color: bool | None) -> Console:
    no_color = color is False or (color is None and "NO_COLOR" in os.environ)
    return Console(
        file=stream,
        force_terminal=True if color else None,
        no_color=no_color,
        highlight=False,
        width=None if stream.isatty() else 160,
        soft_wrap=False,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="gradcheck")
def main() -> None:
    """Is my backward right?  Compare a layer's hand-written gradients with
    central finite differences, element by element."""


def common_check_options(fn: Callable) -> Callable:
    options = [
        click.option("--dtype", type=click.Choice(FLOAT_DTYPES), help="dtype the layer runs in [default: float64]."),
        click.option(
            "--reference-dtype",
            type=click.Choice(FLOAT_DTYPES),
            help="Compute the numeric side in this dtype (e.g. float64 for a float32 layer).",
        ),
        click.option("--device", type=DeviceParam(), help="cpu, cuda, cuda:N, mps, ... [default: cpu]."),
        click.option("--seed", type=click.IntRange(min=0), help="Seed of the random inputs [default: 0]."),
        click.option("--eps", type=click.FloatRange(min=0, min_open=True), help="Finite-difference step [default: per dtype]."),
        click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance [default: per dtype]."),
        click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance [default: per dtype]."),
        click.option(
            "--kinks",
            type=click.Choice(["pass", "fail"]),
            help="Whether elements at a non-differentiable point fail the check [default: pass].",
        ),
        click.option(
            "--weighted-loss/--no-weighted-loss",
            default=None,
            help="Also check the loss sum(w*y) with random weights, which 1/2 sum(y^2) misses where y~0 [default: on].",
        ),
        click.option("--max-elements", type=click.IntRange(min=1), help="Check at most this many elements per tensor (sampled with coverage)."),
        click.option("--only", multiple=True, metavar="NAME", help="Check only this tensor (input0, input1, or a parameter name); repeatable."),
        click.option("--budget", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Sample elements so the check takes about this long."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Stop a check that runs longer (exit 1)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command("run", epilog=RUN_EPILOG)
@click.argument("target")
@click.option("--input", "-i", "inputs", multiple=True, type=InputParam(), help="One positional input, in order: a shape (4x3x8, standard normal) or =JSON (=4.5, =[0,2,1]); integer literals are passed through unchecked.")
@common_check_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), help="Write the report as JSON to this file ('-' for stdout). Its folder must exist.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict line (and errors).")
@click.option("--color/--no-color", default=None, help="Force or disable colour [default: auto; NO_COLOR is honoured].")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
def run_command(target: str, inputs: tuple, json_path: str | None, quiet: bool, color: bool | None, debug: bool, **opts: Any) -> None:
    """Check TARGET: a layer ('file.py:Name', 'pkg.mod:Name', 'pkg.mod.Name'),
    a YAML spec ('spec.yaml') or a folder of specs."""
    from .spec import is_spec_path

    out = _console(sys.stdout, color)
    err = _console(sys.stderr, color)
    options = {k: v for k, v in opts.items() if v not in (None, ())}
    if "only" in options:
        options["only"] = tuple(options["only"])
    try:
        _check_output_path(json_path)
        if is_spec_path(target) and Path(target).is_dir():
            code = _run_folder(Path(target), inputs, options, out, err, json_path, quiet, debug)
        else:
            code = _run_one(target, inputs, options, out, err, json_path, quiet)
    except GradcheckError as exc:
        if debug:
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        raise CliError(exc) from None
    except Interrupted as exc:
        _render(out, exc.report, quiet)
        err.print("[bold yellow]Interrupted[/]: the report above covers only what was checked before Ctrl-C.")
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        err.print("[bold yellow]Interrupted[/] before any tensor was checked.")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


def _check_output_path(path: str | None) -> None:
    if path and path != "-":
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise UsageError(f"Cannot write {path!r}: folder {str(folder)!r} does not exist.", "Create the folder first, or choose another path.")


def _check(target: str, inputs: tuple, options: dict, progress) -> Any:
    """Call the core with the user's prints sent to stderr (stdout carries the report)."""
    from .check import check, check_spec
    from .spec import is_spec_path, load_spec

    with contextlib.redirect_stdout(sys.stderr):
        if is_spec_path(target):
            spec = load_spec(target)
            if inputs:
                from dataclasses import replace

                spec = replace(spec, inputs=tuple(inputs))
            return check_spec(spec, progress=progress, **options)
        return check(target, list(inputs), progress=progress, **options)


def _run_one(target, inputs, options, out: Console, err: Console, json_path, quiet) -> int:
    with _progress(err, enabled=not quiet) as progress:
        report = _check(target, inputs, options, progress)
    _render(out, report, quiet)
    _write_json(json_path, report.to_dict(), out)
    return EXIT_PASS if report.passed else EXIT_FAIL


def _render(out: Console, report, quiet: bool) -> None:
    from .render import render_report, verdict_line

    if quiet:
        out.print(verdict_line(report))
    else:
        render_report(out, report)


def _run_folder(folder: Path, inputs, options, out: Console, err: Console, json_path, quiet, debug) -> int:
    from .render import render_report, summary_table, to_json, verdict_line
    from .spec import find_specs

    specs = find_specs(folder)
    if not specs:
        raise UsageError(f"Folder {str(folder)!r} holds no *.yaml or *.yml spec.", "Run 'gradcheck list' to see specs, or give a layer target.")
    rows, entries, worst = [], [], EXIT_PASS
    for path in specs:
        started = time.perf_counter()
        entry: dict[str, Any] = {"spec": str(path)}
        row: dict[str, Any] = {"spec": path.name}
        try:
            with _progress(err, enabled=not quiet) as progress:
                report = _check(str(path), inputs, options, progress)
        except GradcheckError as exc:
            code = exc.exit_code
            if debug:
                traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
            err.print(f"[bold magenta]{path.name}[/]: {exc}", markup=True, highlight=False)
            entry.update(passed=False, status="ERROR", error=str(exc), exit_code=code, tensors=[])
            row.update(status="ERROR")
        else:
            code = EXIT_PASS if report.passed else EXIT_FAIL
            if quiet:
                out.print(f"{path.name}: ", verdict_line(report), end="\n")
            else:
                render_report(out, report)
                out.print()
            entry.update(report.to_dict(), status="PASS" if report.passed else "FAIL", exit_code=code)
            worst_t = report.worst
            row.update(
                status="PASS" if report.passed else "FAIL",
                worst_tensor=worst_t.name if worst_t else None,
                worst_rel_error=worst_t.max_rel_error if worst_t else None,
            )
        row["time"] = time.perf_counter() - started
        worst = max(worst, code)
        rows.append(row)
        entries.append(entry)
    out.print(summary_table(rows))
    passed = worst == EXIT_PASS
    n_bad = sum(1 for r in rows if r["status"] != "PASS")
    out.print(f"[bold green]PASS[/]: all {len(rows)} specs match." if passed else f"[bold red]FAIL[/]: {n_bad} of {len(rows)} specs did not pass.")
    _write_json(json_path, {"passed": passed, "specs": entries}, out)
    return worst


def _write_json(path: str | None, data: dict, out: Console) -> None:
    from .render import to_json

    if not path:
        return
    text = to_json(data)
    if path == "-":
        out.file.write(text + "\n")
        return
    try:
        Path(path).expanduser().write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot write the JSON report to {path!r}: {exc.strerror}.", "Choose a writable path.") from None


@contextlib.contextmanager
def _progress(console: Console, enabled: bool):
    """The cost estimate and a progress bar on stderr, for checks estimated above ~2 s on a terminal."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    )
    state: dict[str, Any] = {}

    def update(name: str, done: int, total: int, estimate_s: float) -> None:
        if not name:  # the plan: announce the estimate once
            if estimate_s > 2.0:
                console.print(f"[dim]checking {total} elements, estimated {estimate_s:.0f}s (about 2 forward calls each)[/]")
                if console.is_terminal:
                    bar.start()
                    state["task"] = bar.add_task("checking", total=total)
            return
        if "task" in state:
            bar.update(state["task"], completed=done, description=f"checking {name}")

    try:
        yield update
    finally:
        if "task" in state:
            bar.stop()


@main.command("list")
@click.argument("folder", default="layer_specs", type=click.Path(file_okay=False))
def list_command(folder: str) -> None:
    """Show the specs in FOLDER (default: layer_specs/) with their layer and inputs."""
    from rich.table import Table

    from .spec import find_specs, load_spec

    out = _console(sys.stdout, None)
    try:
        paths = find_specs(folder)
    except GradcheckError as exc:
        raise CliError(exc) from None
    if not paths:
        raise CliError(UsageError(f"Folder {folder!r} holds no *.yaml or *.yml spec.", "Specs are YAML files; see the README, 'Spec format'."))
    table = Table(title=f"specs in {folder}", title_justify="left")
    for col in ("spec", "layer", "inputs", "description"):
        table.add_column(col)
    for path in paths:
        try:
            spec = load_spec(path)
        except GradcheckError as exc:
            table.add_row(path.name, "[magenta]invalid[/]", "-", exc.message.split(": ", 1)[-1][:80])
            continue
        layer = spec.layer
        if os.path.isabs(layer.split(":")[0]):
            layer = os.path.relpath(layer.rsplit(":", 1)[0], path.parent) + ":" + layer.rsplit(":", 1)[1]
        table.add_row(path.name, layer, ", ".join(i.describe() for i in spec.inputs) or "-", spec.description or "")
    out.print(table)

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import click
from rich.console import Console
from rich.text import Text

from . import __version__
from .config import FLOAT_DTYPES
from .errors import GradcheckError, UsageError

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

RUN_EPILOG = """\b
Examples:
  gradcheck run layer_specs/gauss_filter.py:GaussFilter --input 2x64
  gradcheck run layer_specs/gauss_filter.py:GaussianConvFunction --input 1x100 --input =4.5 --input =-19.5
  gradcheck run layer_specs/gauss_filter.yaml
  gradcheck run layer_specs/ --json report.json --junit-xml reports/gradcheck.xml
  gradcheck run layer_specs/broken/gauss_filter_conv_bug.yaml --show-errors
  gradcheck run layer_specs/broken/gauss_filter_conv_bug.yaml --only input0 --plot errors.png
  gradcheck run mypkg.layers:MyLayer --input 4x3 --dtype float32 --reference-dtype float32

\b
Exit status: 0 all gradients match; 1 a mismatch, or the layer's own code
raised; 2 a usage or configuration problem (bad option, target or spec).
The report goes to stdout; progress, notes from loading and errors to stderr.
"""

SWEEP_EPILOG = """\b
Examples:
  gradcheck sweep layer_specs/gauss_filter.yaml
  gradcheck sweep layer_specs/gauss_filter.py:GaussFilter --input 2x64 --points 13
  gradcheck sweep mylayer.py:MyLayer --input 4x3 --dtype float32 --eps-range 1e-5 1e-1 --plot sweep.png

\b
Runs the check once per step size, at most 256 elements per tensor unless
--max-elements says otherwise, and prints the worst relative error of each.
Default range: 1e-10..1e-1 for float64, 1e-6..1 for float32 (of the numeric
side: --reference-dtype if given).  Exit status: 0 done; 1 the layer raised;
2 a usage or configuration problem.
"""

LIST_EPILOG = """\b
Examples:
  gradcheck list
  gradcheck list layer_specs/broken
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
            self.fail(str(exc), param, ctx)  # message, then "Hint: ..." on its own line


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
    # NO_COLOR (no-color.org): any non-empty value turns colour off; no styling escapes either.
    plain = color is False or (color is None and bool(os.environ.get("NO_COLOR")))
    return Console(
        file=stream,
        force_terminal=True if color else None,
        no_color=plain,
        color_system=None if plain else "auto",
        highlight=False,
        width=None if stream.isatty() else 160,
        soft_wrap=False,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="gradcheck")
def main() -> None:
    """Is my backward right?  Compare a layer's hand-written gradients with
    central finite differences, element by element.

    \b
    Examples:
      gradcheck run layer_specs/gauss_filter.py:GaussFilter --input 2x64
      gradcheck run layer_specs/ --junit-xml gradcheck.xml
      gradcheck sweep layer_specs/gauss_filter.yaml
      gradcheck list layer_specs/

    Run 'gradcheck COMMAND -h' for a command's options.
    """


# The options of the check itself, shared by `run` and `sweep`: (declarations, click attributes).
CHECK_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--dtype",), dict(type=click.Choice(FLOAT_DTYPES), help="dtype the layer runs in [default: float64].")),
    (
        ("--reference-dtype",),
        dict(type=click.Choice(FLOAT_DTYPES), help="dtype of the numeric (finite-difference) side [default: float64 when the layer runs faithfully there, else --dtype]. The analytic side always stays in --dtype."),
    ),
    (("--device",), dict(type=DeviceParam(), help="cpu, cuda, cuda:N, mps, ... [default: cpu].")),
    (("--seed",), dict(type=click.IntRange(min=0), help="Seed of the random inputs [default: 0].")),
    (("--eps",), dict(type=click.FloatRange(min=0, min_open=True), help="Finite-difference step [default: per dtype].")),
    (("--rtol",), dict(type=click.FloatRange(min=0), help="Relative tolerance [default: per dtype].")),
    (("--atol",), dict(type=click.FloatRange(min=0), help="Absolute tolerance [default: per dtype].")),
    (
        ("--kinks",),
        dict(type=click.Choice(["pass", "fail"]), help="Whether elements at a non-differentiable point fail the check [default: pass]."),
    ),
    (
        ("--weighted-loss/--no-weighted-loss",),
        dict(default=None, help="Also check the loss sum(w*y) with random weights, which 1/2 sum(y^2) misses where y~0 [default: on]."),
    ),
    (
        ("--coloring/--no-coloring",),
        dict(
            default=None,
            help="Move many elements per forward where every output depends on at most one of them (elementwise layers, "
            "filters), each credit verified; --no-coloring perturbs one element per forward pair [default: on].",
        ),
    ),
    (("--max-elements",), dict(type=click.IntRange(min=1), help="Check at most this many elements per tensor (sampled with coverage).")),
    (("--only",), dict(multiple=True, metavar="NAME", help="Check only this tensor (input0, input1, or a parameter name); repeatable.")),
    (("--budget",), dict(type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Sample elements so the check takes about this long.")),
    (("--timeout",), dict(type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Stop a check that runs longer (exit 1).")),
]


def check_options(*exclude: str) -> Callable[[Callable], Callable]:
    """Decorator adding CHECK_OPTIONS, less those whose first declaration is in ``exclude`` ('--eps')."""

    def decorate(fn: Callable) -> Callable:
        for decls, attrs in reversed(CHECK_OPTIONS):
            if decls[0] not in exclude:
                fn = click.option(*decls, **attrs)(fn)
        return fn

    return decorate


common_check_options = check_options()

input_option = click.option(
    "--input",
    "-i",
    "inputs",
    multiple=True,
    type=InputParam(),
    help="One positional input, in order: a shape (4x3x8, standard normal) or =JSON (=4.5, =[0,2,1]); integer literals are passed through unchecked.",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Print only the verdict line (and errors).")
verbose_option = click.option("--verbose", "-v", is_flag=True, help="Also show per-tensor verdict counts, sampling and timing.")
color_option = click.option("--color/--no-color", default=None, help="Force or disable colour [default: auto; NO_COLOR is honoured].")
debug_option = click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")


def plot_option(what: str) -> Callable:
    return click.option(
        "--plot",
        "plot_path",
        type=click.Path(dir_okay=False),
        help=f"Write {what} as a PNG to this file (needs matplotlib: pip install 'gradcheck-cli[plot]'). Its folder must exist.",
    )


@dataclass(frozen=True)
class View:
    """Where a run's results go: stdout (the report), stderr (diagnostics) and the files asked for."""

    out: Console
    err: Console
    quiet: bool = False
    verbose: bool = False
    show_errors: bool = False
    debug: bool = False
    json_path: str | None = None
    junit_path: str | None = None
    plot_path: str | None = None

    def note(self, text: str) -> None:
        """A diagnostic line on stderr (not with --quiet)."""
        if not self.quiet:
            self.err.print(text, style="dim", highlight=False, markup=False)


def _view(color: bool | None, quiet: bool, verbose: bool, **kwargs: Any) -> View:
    """Consoles and output files, after checking the flags agree and every output folder exists."""
    if quiet and verbose:
        raise UsageError("--quiet and --verbose exclude each other.", "Give one of them.")
    for key in ("json_path", "junit_path", "plot_path"):
        _check_output_path(kwargs.get(key))
    if kwargs.get("plot_path"):
        from .errormap import require_matplotlib

        require_matplotlib()
    err = _console(sys.stderr, color)
    # With --json -, stdout carries the JSON alone; the rendered report moves to stderr.
    out = err if kwargs.get("json_path") == "-" else _console(sys.stdout, color)
    return View(out, err, quiet, verbose, **kwargs)


@main.command("run", epilog=RUN_EPILOG)
@click.argument("target")
@input_option
@common_check_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), help="Write the report as JSON to this file ('-' for stdout). Its folder must exist.")
@click.option(
    "--junit-xml",
    "junit_path",
    type=click.Path(dir_okay=False),
    help="Write a JUnit XML report for CI: one test suite per spec or target, one test case per checked tensor. Its folder must exist.",
)
@click.option("--show-errors", is_flag=True, help="Map, for each failing tensor, which elements fail, in the tensor's own layout.")
@plot_option("a heat map of each failing tensor's relative errors")
@quiet_option
@verbose_option
@color_option
@debug_option
def run_command(target: str, inputs: tuple, color: bool | None, quiet: bool, verbose: bool, **opts: Any) -> None:
    """Check TARGET: a layer ('file.py:Name', 'pkg.mod:Name', 'pkg.mod.Name'),
    a YAML spec ('spec.yaml') or a folder of specs."""
    from .check import Interrupted  # imports torch: not at module level, so --help and --version stay fast
    from .spec import is_spec_path

    outputs = {k: opts.pop(k) for k in ("json_path", "junit_path", "plot_path", "show_errors", "debug")}
    options = _options(opts)
    with _translated_errors(outputs["debug"], color, " before any tensor was checked"):
        view = _view(color, quiet, verbose, **outputs)
        try:
            if is_spec_path(target) and Path(target).is_dir():
                if view.plot_path:
                    raise UsageError("--plot takes one layer or spec, not a folder.", "Run the failing spec on its own with --plot.")
                code = _run_folder(Path(target), inputs, options, view)
            else:
                code = _run_one(target, inputs, options, view)
        except Interrupted as exc:
            _render(view, exc.report, {})
            _write_json(view.json_path, exc.report.to_dict())
            _write_junit(view.junit_path, [_suite(target, report=exc.report, started=time.perf_counter())])
            view.err.print("[bold yellow]Interrupted[/]: the report above covers only what was checked before Ctrl-C.")
            sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


@contextlib.contextmanager
def _translated_errors(debug: bool, color: bool | None, when: str = ""):
    """Core errors become a short message with the core's exit status; Ctrl-C exits 130."""
    try:
        yield
    except GradcheckError as exc:
        _trace(exc, debug)
        raise CliError(exc) from None
    except KeyboardInterrupt:
        _console(sys.stderr, color).print(f"[bold yellow]Interrupted[/]{when}.")
        sys.exit(EXIT_INTERRUPTED)


def _trace(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)


def _options(opts: dict) -> dict:
    """The check options the user gave (unset ones are left to the spec or the defaults)."""
    options = {k: v for k, v in opts.items() if v not in (None, ())}
    if "only" in options:
        options["only"] = tuple(options["only"])
    return options


def _check_output_path(path: str | None) -> None:
    if path and path != "-":
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise UsageError(f"Cannot write {path!r}: folder {str(folder)!r} does not exist.", "Create the folder first, or choose another path.")


def _core(target: str, inputs: tuple, on_layer: Callable, on_spec: Callable, **kwargs: Any) -> Any:
    """Call the core on a layer target or a spec file (whose inputs --input replaces), the user's prints sent to stderr."""
    from .spec import is_spec_path, load_spec

    with contextlib.redirect_stdout(sys.stderr):
        if is_spec_path(target):
            spec = load_spec(target)
            if inputs:
                spec = replace(spec, inputs=tuple(inputs))
            return on_spec(spec, **kwargs)
        return on_layer(target, list(inputs), **kwargs)


def _check(target: str, inputs: tuple, options: dict, progress) -> Any:
    from .check import check, check_spec

    return _core(target, inputs, check, check_spec, progress=progress, **options)


def _run_one(target: str, inputs: tuple, options: dict, view: View) -> int:
    started = time.perf_counter()
    try:
        with _progress(view.err, enabled=not view.quiet) as progress:
            report = _check(target, inputs, options, progress)
    except GradcheckError as exc:
        _write_junit(view.junit_path, [_suite(target, error=exc, started=started)])
        raise
    repro = _repro(report, target, inputs)
    _render(view, report, repro)
    _write_json(view.json_path, report.to_dict())
    _write_junit(view.junit_path, [_suite(target, report=report, started=started, repro=repro)])
    if view.plot_path:
        from .errormap import plot_error_maps

        plot_error_maps(report, view.plot_path)
        view.note(f"wrote {view.plot_path}")
    return EXIT_PASS if report.passed else EXIT_FAIL


def _repro(report, target: str, inputs: tuple) -> dict[str, str]:
    from .render import repro_commands

    return repro_commands(report, target, inputs)


def _suite(name: str, started: float, **kwargs: Any) -> Any:
    from .junit import SuiteResult

    return SuiteResult(name, time=time.perf_counter() - started, **kwargs)


def _render(view: View, report, repro: Mapping[str, str]) -> None:
    from .render import render_report, verdict_line

    if view.quiet:
        view.out.print(verdict_line(report), soft_wrap=True)  # one line, however long, for CI logs and grep
    else:
        render_report(view.out, report, verbose=view.verbose, show_errors=view.show_errors, repro=repro)


def _run_folder(folder: Path, inputs, options, view: View) -> int:
    from .check import Interrupted
    from .render import summary_table, verdict_line
    from .spec import find_specs

    out, err = view.out, view.err
    specs = find_specs(folder)
    if not specs:
        raise UsageError(
            f"Folder {str(folder)!r} holds no *.yaml or *.yml spec (subfolders are not searched).",
            "Point at the folder that holds the specs, or give a layer target such as mylayer.py:MyLayer --input 4x3.",
        )

    rows, entries, suites, worst = [], [], [], EXIT_PASS
    interrupted = False
    for path in specs:
        started = time.perf_counter()
        entry: dict[str, Any] = {"spec": str(path)}
        row: dict[str, Any] = {"spec": path.name}
        report = None
        try:
            with _progress(err, enabled=not view.quiet) as progress:
                report = _check(str(path), inputs, options, progress)
        except Interrupted as exc:  # Ctrl-C inside a spec: keep its partial report, stop the folder
            report, interrupted = exc.report, True
        except KeyboardInterrupt:  # Ctrl-C before the spec's check began
            interrupted = True
            break
        except GradcheckError as exc:
            code = exc.exit_code
            _trace(exc, view.debug)
            err.print(f"[bold magenta]{path.name}[/]: {exc}", markup=True, highlight=False)
            entry.update(passed=False, status="ERROR", error=str(exc), exit_code=code, tensors=[])
            row.update(status="ERROR")
            suites.append(_suite(str(path), error=exc, started=started))
        if report is not None:
            code = EXIT_INTERRUPTED if report.interrupted else EXIT_PASS if report.passed else EXIT_FAIL
            status = "INTERRUPTED" if report.interrupted else "PASS" if report.passed else "FAIL"
            repro = _repro(report, str(path), inputs)
            if view.quiet:
                out.print(Text(f"{path.name}: ").append_text(verdict_line(report)))
            else:
                _render(view, report, repro)
                out.print()
            entry.update(report.to_dict(), status=status, exit_code=code)
            worst_t = report.worst
            row.update(
                status=status,
                worst_tensor=worst_t.name if worst_t else None,
                worst_rel_error=worst_t.max_rel_error if worst_t else None,
            )
            suites.append(_suite(str(path), report=report, started=started, repro=repro))
        row["time"] = time.perf_counter() - started
        worst = max(worst, code)
        rows.append(row)
        entries.append(entry)
        if interrupted:
            break
    out.print(summary_table(rows))
    passed = worst == EXIT_PASS and not interrupted
    n_bad = sum(1 for r in rows if r["status"] != "PASS")
    if interrupted:
        out.print(f"[bold yellow]INTERRUPTED[/]: Ctrl-C after {len(rows)} of {len(specs)} specs; {n_bad} of them did not pass.")
    else:
        out.print(f"[bold green]PASS[/]: all {len(rows)} specs match." if passed else f"[bold red]FAIL[/]: {n_bad} of {len(rows)} specs did not pass.")
    _write_json(view.json_path, {"passed": passed, "interrupted": interrupted, "specs": entries})
    _write_junit(view.junit_path, suites)
    return EXIT_INTERRUPTED if interrupted else worst


def _write_json(path: str | None, data: dict) -> None:
    from .render import to_json

    if not path:
        return
    text = to_json(data)
    if path == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    _write_text(path, text + "\n", "JSON report")


def _write_junit(path: str | None, suites: list) -> None:
    from .junit import junit_xml

    if path:
        _write_text(path, junit_xml(suites), "JUnit XML report")


def _write_text(path: str, text: str, what: str) -> None:
    try:
        Path(path).expanduser().write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot write the {what} to {path!r}: {exc.strerror}.", "Choose a writable path.") from None


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


@main.command("sweep", epilog=SWEEP_EPILOG)
@click.argument("target")
@input_option
@check_options("--eps")
@click.option("--eps-range", nargs=2, type=click.FloatRange(min=0, min_open=True), metavar="LOW HIGH", help="Smallest and largest step size [default: per dtype].")
@click.option("--points", type=click.IntRange(min=2), default=10, show_default=True, help="How many step sizes, evenly spaced in log.")
@plot_option("the error-versus-eps curve")
@quiet_option
@verbose_option
@color_option
@debug_option
def sweep_command(target: str, inputs: tuple, eps_range: tuple | None, points: int, plot_path: str | None, color: bool | None, quiet: bool, verbose: bool, debug: bool, **opts: Any) -> None:
    """Find a good finite-difference step for TARGET (a layer or a YAML spec):
    the worst relative error of the check at each eps, and the best one."""
    from .render import sweep_suggestion, sweep_table
    from .spec import is_spec_path
    from .sweep import sweep, sweep_spec

    with _translated_errors(debug, color):
        view = _view(color, quiet, verbose, plot_path=plot_path, debug=debug)
        if is_spec_path(target) and Path(target).is_dir():
            raise UsageError("sweep takes one layer or spec, not a folder.", "Give one spec file, e.g. layer_specs/gauss_filter.yaml.")

        def progress(i: int, n: int, eps: float) -> None:
            if verbose:
                view.note(f"checking at eps {eps:g} ({i + 1} of {n})")

        view.note(f"checking at {points} step sizes...")
        result = _core(target, inputs, sweep, sweep_spec, eps_range=eps_range, points=points, progress=progress, **_options(opts))
        if not quiet:
            view.out.print(sweep_table(result))
        view.out.print(sweep_suggestion(result))
        if view.plot_path:
            from .sweep import plot_sweep

            plot_sweep(result, view.plot_path)
            view.note(f"wrote {view.plot_path}")


@main.command("list", epilog=LIST_EPILOG)
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

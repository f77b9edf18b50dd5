"""The ``gradcheck`` command: a thin translator between click and the core.

It parses options into check options, calls the core, renders the report and
maps the outcome to an exit status: 0 all gradients match, 1 a mismatch or the
layer's own code raised, 2 a usage or configuration problem.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.text import Text

from . import __version__
from .errors import GradcheckError, UsageError, shorten
from .options import default_of
from .outputs import Outputs, refused_command_line, same_file
from .report import RunResult, SuiteResult
from .streams import SafeStream, TrimmedStream, printable, report_stream
from .supervise import ready_for_interrupts, tell

EXIT_INTERRUPTED = 130

RUN_EPILOG = """\b
Examples:
  gradcheck run layer_specs/gauss_filter.py:GaussFilter --input 2x64
  gradcheck run layer_specs/gauss_filter.py:GaussianConvFunction --input 1x100 --input =4.5 --input =-19.5
  gradcheck run layer_specs/gauss_filter.yaml
  gradcheck run layer_specs/examples/mylayers.py
  gradcheck run 'layer_specs/examples/pool.yaml[seed=1,inputs=0]'
  gradcheck run layer_specs/ --json report.json --junit-xml gradcheck.xml
  gradcheck run 'layer_specs/*.yaml' layer_specs/examples/mylib/layers.py:Swish --input 4x3 --format github
  gradcheck run layer_specs/ --recursive
  gradcheck run layer_specs/broken/gauss_filter_conv_bug.yaml --show-errors
  gradcheck run layer_specs/broken/gauss_filter_conv_bug.yaml --only x --plot errors.png
  gradcheck run layer_specs/examples/swish.yaml --dtype float32 --numeric-dtype float32

\b
Defaults for every check option may come from [tool.gradcheck] in pyproject.toml;
a spec's own keys and then the command line override them. A spec with a
'matrix:' is one check per combination, named spec.yaml[KEY=VALUE,...] (a target
too); an option given here fixes its axis. A layer file without ':Name' checks
every layer it defines that has a hand-written backward and gradcheck_inputs.

\b
Exit status: 0 all gradients match; 1 a mismatch, or the layer's own code
raised; 2 a usage or configuration problem (bad option, target or spec).
The report goes to stdout; progress, notes from loading and errors to stderr.
"""

SWEEP_EPILOG = """\b
Examples:
  gradcheck sweep layer_specs/gauss_filter.yaml
  gradcheck sweep layer_specs/gauss_filter.py:GaussFilter --input 2x64 --points 13
  gradcheck sweep layer_specs/examples/mylib/layers.py:Swish --input 4x3 --dtype float32 --eps-range 1e-5 1e-1 --plot sweep.png
  gradcheck sweep layer_specs/examples/mylib/layers.py:ScaledSwish --init 3 --init beta=0.5 --input 4x3

\b
Runs the check once per step size, at most 256 elements per tensor unless
--max-elements says otherwise, and prints the worst relative error of each.
Default range: 1e-10..1e-1 for float64, 1e-6..1 for float32 (of the numeric
side: --numeric-dtype if given).  A step at which a tensor is lost in
finite-difference noise, or at which the layer raised, is never recommended.
Exit status: 0 a step was found at which the check passes; 1 the check fails
even at the best step, the layer raised at every step, or no step gave a
conclusive check; 2 a usage or configuration problem.
"""

LIST_EPILOG = """\b
Examples:
  gradcheck list
  gradcheck list layer_specs/broken
"""

VALIDATE_EPILOG = """\b
Examples:
  gradcheck validate layer_specs/
  gradcheck validate 'specs/**/*.yaml'
  gradcheck validate specs/ --recursive --format github

\b
Reads and checks each spec as 'gradcheck run' would before running it (keys, values,
that the layer file exists) without importing any layer. Exit status: 0 every spec is
valid; 2 a spec has a problem (each one is listed) or a path names no spec.
"""

STYLE_ERROR = "bold magenta"


class InputParam(click.ParamType):
    """``--input``: a shape (4x3x8, standard normal), =JSON (a literal tensor), :VALUE (a Python value), [A,B] or
    (A,B) (a list or tuple of inputs), NAME=... (by keyword); the help text lists them."""

    name = "INPUT"

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
        super().__init__(printable(str(error)))
        self.exit_code = error.exit_code


# Off a terminal, with no COLUMNS to follow, lines are not cut: a log or a file is read at any width.
UNBOUNDED_WIDTH = 200


def _console(stream, color: bool | None) -> Console:
    """A rich console on ``stream``: rich follows COLUMNS and the terminal's width itself; no line ends in
    padding spaces. NO_COLOR (no-color.org) or --no-color: no colour and no other styling escapes either."""
    plain = color is False or (color is None and bool(os.environ.get("NO_COLOR")))
    stream = stream if isinstance(stream, SafeStream) else SafeStream(stream)
    return Console(
        file=TrimmedStream(stream),
        force_terminal=True if color else None,
        no_color=plain,
        color_system=None if plain else "auto",
        highlight=False,
        width=None if stream.isatty() or os.environ.get("COLUMNS") else UNBOUNDED_WIDTH,
        soft_wrap=False,
    )


class Gradcheck(click.Group):
    """The command group, with exit statuses a CI step can trust.

    Whatever happens, ``main`` ends with gradcheck's own status: a bad option is 2
    (and leaves no stale report behind, see :func:`_reports_after_usage_error`), Ctrl-C
    is 130 -- not click's "Aborted!" with 1 -- and nothing escapes as a traceback.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args, prog_name or "gradcheck", complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
            if isinstance(exc, click.UsageError) and args[:1] == ["run"]:
                refused_command_line(args, exc.format_message())
        except (click.exceptions.Abort, KeyboardInterrupt):
            with contextlib.suppress(OSError, ValueError):
                print("\nInterrupted.", file=sys.stderr)
            code = EXIT_INTERRUPTED
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(name="gradcheck", cls=Gradcheck, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, is_eager=True, expose_value=False, callback=lambda ctx, param, value: _show_version(ctx, value), help="Show gradcheck's version, and the torch and Python versions results depend on, and exit.")
def main() -> None:
    """Is my backward right?  Compare a layer's hand-written gradients with
    central finite differences, element by element.

    \b
    Examples:
      gradcheck run layer_specs/gauss_filter.py:GaussFilter --input 2x64
      gradcheck run layer_specs/ --junit-xml gradcheck.xml
      gradcheck sweep layer_specs/gauss_filter.yaml
      gradcheck validate layer_specs/ --recursive
      gradcheck list layer_specs/

    Run 'gradcheck COMMAND -h' for a command's options.
    """


def versions() -> str:
    """'gradcheck 0.1.0 (torch 2.13.0+cpu, Python 3.11.7)': what a result depends on, without importing torch."""
    import importlib.metadata
    import platform

    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"gradcheck {__version__} (torch {torch_version}, Python {platform.python_version()})"


def _show_version(ctx: click.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(versions())
        ctx.exit()


class OptionParam(click.ParamType):
    """A check option's value, checked by its kind (options.py) exactly as a spec or the API is."""

    def __init__(self, name: str, kind) -> None:
        self.option, self.kind = name, kind
        self.name = kind.metavar

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        from .options import cli_flag

        try:
            return self.kind.parse(value, cli_flag(self.option))
        except GradcheckError as exc:
            self.fail(exc.detail + (f"\nHint: {exc.hint}" if exc.hint else ""), param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        """A choice option (--dtype, --kinks) completes to its choices."""
        from click.shell_completion import CompletionItem

        return [CompletionItem(c) for c in getattr(self.kind, "choices", ()) if c.startswith(incomplete)]


def _click_option(name: str, opt) -> Callable[[Callable], Callable]:
    """The --flag of one check option, derived from its declaration in options.py."""
    from .options import Flag, Names, cli_flag

    flag = cli_flag(name)
    if isinstance(opt.kind, Flag):
        return click.option(f"{flag}/--no-{flag[2:]}", default=None, help=f"{opt.help} [default: {'on' if default_of(name) else 'off'}].")
    if name == "device":
        return click.option(flag, type=DeviceParam(), help=f"{opt.help} [default: {default_of(name)}].")
    default = default_of(name)
    shown = f" [default: {default}]" if default not in (None, ()) and "[default" not in opt.help else ""
    multiple = isinstance(opt.kind, Names)
    return click.option(flag, type=OptionParam(name, opt.kind), multiple=multiple, metavar=opt.kind.metavar, help=opt.help + shown)


def check_options(*exclude: str) -> Callable[[Callable], Callable]:
    """Decorator adding every command-line check option (options.py), less ``exclude`` ('eps')."""
    from .options import cli_flag, options

    def decorate(fn: Callable) -> Callable:
        for name, opt in reversed(list(options())):
            if opt.cli and name not in exclude:
                fn = _click_option(name, opt)(fn)
                for old in opt.old_names:  # still accepted, not shown (deprecated)
                    fn = click.option(cli_flag(old), old, type=OptionParam(name, opt.kind), hidden=True)(fn)
        return fn

    return decorate


common_check_options = check_options()

input_option = click.option(
    "--input",
    "-i",
    "inputs",
    multiple=True,
    type=InputParam(),
    help="One input of the layer, in order: a shape (4x3x8, standard normal), =JSON (a literal tensor: =4.5, =[0,2,1]; "
    "integer ones are passed through unchecked), :VALUE (a Python value: :bilinear, :true, :0.5), [A,B] or (A,B) "
    "(a list or tuple of inputs); NAME=... passes it by name (grid=1x8x8x2, mode=:bilinear).",
)
init_option = click.option(
    "--init",
    "init",
    multiple=True,
    metavar="[NAME=]VALUE",
    help="A constructor argument of a Module class, in order or by name: --init 9 --init sigma=2.0 (JSON, or plain text "
    "for a string). In a spec: 'args:' and 'kwargs:'.",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Print only the verdict line (and errors).")
isolate_option = click.option(
    "--isolate/--no-isolate",
    default=True,
    help="Run the layer's code in a child process, so that a crash, os._exit or a hang that ignores --timeout "
    "is reported as the layer's error (exit 1) [default: isolate; GRADCHECK_ISOLATE=0 turns it off].",
)
verbose_option = click.option("--verbose", "-v", is_flag=True, help="Also show per-tensor verdict counts, sampling and timing.")
color_option = click.option("--color/--no-color", default=None, help="Force or disable colour [default: auto; NO_COLOR is honoured].")
debug_option = click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")


def plot_option(what: str) -> Callable:
    return click.option(
        "--plot",
        "plot_path",
        type=click.Path(dir_okay=False),
        help=f"Write {what} as a PNG to this file (needs matplotlib: pip install matplotlib). Its folder must exist.",
    )


@dataclass(frozen=True)
class View:
    """Where a run's results are shown: stdout (the report) and stderr (diagnostics), and how much."""

    out: Console
    err: Console
    quiet: bool = False
    verbose: bool = False
    show_errors: bool = False
    debug: bool = False
    github: bool = False  # --format github: GitHub Actions annotations after the report

    def note(self, text: str) -> None:
        """A diagnostic line on stderr (not with --quiet)."""
        if not self.quiet:
            self.err.print(printable(text), style="dim", highlight=False, markup=False)


def _view(color: bool | None, quiet: bool, verbose: bool, report_on_stdout: bool = False, **kwargs: Any) -> View:
    """The consoles, after checking the flags agree."""
    if quiet and verbose:
        raise UsageError("--quiet and --verbose exclude each other.", "Give one of them.")
    err = _console(sys.stderr, color)
    # With --json - (or --junit-xml -), stdout carries that report alone; the rendered report moves to stderr.
    out = err if report_on_stdout else _console(report_stream(), color)
    return View(out, err, quiet, verbose, **kwargs)


class TargetParam(click.ParamType):
    """TARGET: a layer, a spec, a folder or a glob; the shell completes it as a file path."""

    name = "TARGET"

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(incomplete, type="file")]


FORMATS = ("table", "github")


def report_format(given: str | None) -> str:
    """--format, else 'github' inside GitHub Actions (GITHUB_ACTIONS=true), else 'table'."""
    if given:
        return given
    return "github" if os.environ.get("GITHUB_ACTIONS") == "true" else "table"


@main.command("run", epilog=RUN_EPILOG)
@click.argument("targets", nargs=-1, type=TargetParam())
@input_option
@init_option
@common_check_options
@click.option("--recursive", "-r", is_flag=True, help="Also check the specs in the subfolders of a folder target (hidden folders skipped).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), help="Write the report as JSON to this file ('-' for stdout). Its folder must exist.")
@click.option(
    "--junit-xml",
    "junit_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write a JUnit XML report for CI: one test suite per spec or target, one test case per checked tensor ('-' for stdout; "
    "not with --json -). Its folder must exist.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default=None,
    help="table: the report for people; github: the report plus a GitHub Actions ::error annotation on the layer's backward "
    "for each failing tensor [default: github when GITHUB_ACTIONS=true, else table].",
)
@click.option("--show-errors", is_flag=True, help="Map, for each failing tensor, which elements fail, in the tensor's own layout.")
@plot_option("a heat map of each failing tensor's relative errors")
@quiet_option
@verbose_option
@color_option
@isolate_option
@debug_option
@click.pass_context
def run_command(ctx: click.Context, targets: tuple[str, ...], inputs: tuple, color: bool | None, quiet: bool, verbose: bool, **opts: Any) -> None:
    """Check each TARGET: a layer ('file.py:Name', 'pkg.mod:Name', 'pkg.mod.Name'),
    every layer of a file ('file.py'), a YAML spec ('spec.yaml', or some combinations
    of its matrix: 'spec.yaml[seed=1]'), a folder of specs or a glob ('specs/*.yaml').
    With no TARGET, the specs of [tool.gradcheck] in pyproject.toml."""
    opts.pop("isolate")  # decided before this process started (see supervise.py)
    init = opts.pop("init")
    paths = {k: opts.pop(k) for k in ("json_path", "junit_path", "plot_path")}
    show_errors, debug, recursive = opts.pop("show_errors"), opts.pop("debug"), opts.pop("recursive")
    github = report_format(opts.pop("output_format")) == "github"
    given = _options(opts)
    err = _console(sys.stderr, color)
    # The report files are known (and resolved) before anything else can go wrong, so that
    # every later problem still leaves a report of this run in them, never a stale one.
    sinks = _Sinks(*_outputs(paths, list(targets), recursive, given.get("reference")))
    views = lambda report_on_stdout: _view(color, quiet, verbose, report_on_stdout=report_on_stdout, show_errors=show_errors, debug=debug, github=github)  # noqa: E731
    name = " ".join(targets) or "gradcheck run"
    code = _guarded_run(name, err, sinks, debug, lambda: _run(list(targets), recursive, Arguments(inputs, init), given, sinks, views), github=github)
    ctx.exit(code)


def _project(targets: list[str]) -> tuple[Any, list[str]]:
    """The project's [tool.gradcheck] and the targets to check: those given, else its spec paths."""
    from .config import load

    config = load()
    if not targets and config.specs:
        here = Path.cwd()
        targets = [os.path.relpath(p, here) if p.is_relative_to(here) else str(p) for p in config.specs]
    return config, targets


@dataclass
class _Sinks:
    """The report files a run may write to: fewer once one turns out to be an input of the run."""

    outputs: Outputs
    problem: GradcheckError | None = None

    def refuse_inputs(self, inputs) -> None:
        self.outputs, problem = self.outputs.without_inputs(inputs)
        if problem is not None:
            raise problem


def _outputs(paths: dict, targets: list[str], recursive: bool = False, reference: str | None = None) -> tuple[Outputs, GradcheckError | None]:
    """The output paths that can be used, and the first problem with any of them (an input of the run among them)."""
    from .targets import files_read, layer_files

    read = files_read(targets, recursive) + tuple(layer_files([(reference, "the reference file")]))
    try:
        return Outputs.resolve(paths["json_path"], paths["junit_path"], paths["plot_path"], inputs=read), None
    except GradcheckError as exc:
        # The report files that are fine on their own still get this run's (error) report;
        # two outputs on one file get none (they would overwrite each other).
        usable = {}
        for key, kind in (("json_path", "json"), ("junit_path", "junit")):
            with contextlib.suppress(GradcheckError):
                usable[kind] = Outputs.resolve(**{kind: paths[key]}, inputs=read).json if kind == "json" else Outputs.resolve(junit=paths[key], inputs=read).junit
        files = [p for p in usable.values() if isinstance(p, Path)]
        if len(files) == 2 and same_file(*files):
            usable = {k: v for k, v in usable.items() if not isinstance(v, Path)}
        if list(usable.values()).count("-") == 2:  # both on stdout: neither (they would be mixed)
            usable = {k: v for k, v in usable.items() if v != "-"}
        return Outputs(**usable), exc


def _guarded_run(target: str, err: Console, sinks: _Sinks, debug: bool, run: Callable[[], int], github: bool = False) -> int:
    """Run, and turn what escapes into an exit status, a message and a report of this run.

    A real SIGINT or SIGTERM stops the run as interrupted (exit 130 or 143); anything
    else gradcheck raises on purpose is a one-paragraph error with the core's exit status.
    """
    from .environment import Interrupt, interrupts
    from .streams import hide_stdout

    hide_stdout()  # the layer's print(), also from a thread it leaves running, goes to stderr
    ready_for_interrupts()
    try:
        with interrupts((signal.SIGINT, signal.SIGTERM)):
            if sinks.problem is not None:
                raise sinks.problem
            return run()
    except GradcheckError as exc:
        _trace(exc, debug)
        _error(err, exc)
        result = RunResult((SuiteResult(target, error=exc),))
        if github:
            _annotate(err, result)
    except KeyboardInterrupt as exc:  # Interrupt, or a Ctrl-C that came where none was watched for
        signum = exc.signum if isinstance(exc, Interrupt) else signal.SIGINT
        err.print(Text.assemble(("Interrupted", "bold yellow"), f" ({signal.Signals(signum).name}) before any tensor was checked."))
        result = RunResult((), signum=signum)
    return _write_reports(err, sinks.outputs, result, result.exit_code)


@dataclass(frozen=True)
class Arguments:
    """What the command line gives the layer: its inputs (--input) and its constructor's arguments (--init)."""

    inputs: tuple = ()
    init: tuple[str, ...] = ()

    def construct(self) -> tuple[tuple, dict]:
        """(args, kwargs) of the constructor, from the --init values."""
        from .inputs import parse_value

        args, kwargs = [], {}
        for text in self.init:
            name, sep, value = text.partition("=")
            if sep and name.strip().isidentifier():
                kwargs[name.strip()] = parse_value(value, f"--init {text!r}")
            elif kwargs:
                raise UsageError(f"--init {text!r}: a constructor argument by position after one by name.", "Give the positional ones first.")
            else:
                args.append(parse_value(text, f"--init {text!r}"))
        return tuple(args), kwargs

    def fixes(self) -> set[str]:
        """The spec keys these set whatever a spec says, whose matrix axes therefore collapse: inputs, args."""
        positional = [t for t in self.init if not (t.partition("=")[1] and t.partition("=")[0].strip().isidentifier())]
        return ({"inputs"} if self.inputs else set()) | ({"args"} if positional else set())

    def rerun(self) -> list[str]:
        from .render import input_arg

        return [arg for i in self.inputs for arg in ("--input", input_arg(i))] + [arg for v in self.init for arg in ("--init", v)]


def _run(targets: list[str], recursive: bool, arguments: Arguments, given: dict, sinks: _Sinks, views: Callable[[bool], View]) -> int:
    """Plan the run, check every target, render and write the reports; the exit status."""
    from .targets import plan_run

    # What the run reads is settled first (no user code runs for it), and the outputs checked
    # against it, before any other problem can be raised and reported into those outputs.
    config, targets = _project(targets)
    plan = plan_run(targets, recursive=recursive, fixed=set(given) | arguments.fixes())
    sinks.refuse_inputs(plan.inputs)
    outputs, problem = sinks.outputs.start()
    sinks.outputs = outputs
    tell(outputs=outputs.told())
    if problem is not None:
        raise problem
    view = views(outputs.on_stdout is not None)
    if outputs.plot:
        from .errormap import require_matplotlib

        require_matplotlib()
        if plan.folder:
            raise UsageError("--plot takes one layer or spec, not several.", "Run the failing spec on its own with --plot.")
    if (arguments.inputs or arguments.init) and any(e.whole_file for e in plan.entries) and not any(_is_layer(e) for e in plan.entries):
        raise UsageError(
            "--input and --init are one layer's inputs and constructor arguments, but the targets name whole files, "
            "whose layers are each checked with their own gradcheck_inputs.",
            "Name one layer as FILE.py:Name to give it --input, or give the class gradcheck_inputs = [\"4x16\"] "
            "(see the README, 'Everything in a file').",
        )
    result = _check_all(plan, arguments, config, given, view)
    _render_run(view, result)
    if view.github:
        _annotate(view.out, result)
    code = _write_reports(view.err, outputs, result, result.exit_code, view.verbose)
    if outputs.plot and result.results and result.results[0].report is not None:
        from .errormap import plot_error_maps

        plot_error_maps(result.results[0].report, outputs.plot)
        view.note(f"wrote {outputs.plot}")
    return code


def _is_layer(entry) -> bool:
    """A layer target (file.py:Name, pkg.mod:Name): what --input and --init are for."""
    return entry.spec is None and entry.error is None and not entry.whole_file


def _check_all(plan, arguments: Arguments, config, given: dict, view: View) -> RunResult:
    """Check every target of the plan in order; a signal stops the run after the partial result."""
    from .render import short_names

    labels = short_names(entry.name for entry in plan.entries)
    # --input gives a layer target's inputs; it replaces a spec's only in a run of specs alone.
    spec_arguments = arguments if all(e.spec is not None or e.error is not None for e in plan.entries) else replace(arguments, inputs=())
    results: list[SuiteResult] = []
    planned = len(plan.entries)
    discoveries = _discover_files(plan, config, given, view)
    for entry in plan.entries:
        if entry.whole_file:
            outcomes = _check_file(entry, discoveries.get(entry.name) or _discover_file(entry, config, given, view), config, given, view)
        else:
            outcomes = iter([_check_one(entry, arguments if entry.spec is None else spec_arguments, config, given, view)])
        for result in outcomes:
            results.append(result)
            _render_result(view, result, plan.folder, labels.get(result.name, result.name))
            if result.interrupted:
                return RunResult(tuple(results), folder=plan.folder, planned=max(planned, len(results)))
        planned = max(planned, len(results))
    return RunResult(tuple(results), folder=plan.folder, planned=planned)


def _check_one(entry, arguments: Arguments, config, given: dict, view: View) -> SuiteResult:
    """Check one layer target or spec (one combination of a matrix): its report, or what stopped it."""
    from .checker import Interrupted
    from .environment import Interrupt
    from .matrix import matrix_values
    from .render import progress_bar

    started = time.perf_counter()
    tell(target=entry.name)
    matrix = matrix_values(entry.spec) if entry.spec is not None else {}
    try:
        if entry.error is not None:
            raise entry.error
        with progress_bar(view.err, enabled=not view.quiet) as progress:
            report = _check(entry, arguments, config, given, progress)
        return SuiteResult(entry.name, report=report, time=time.perf_counter() - started, repro=_repro(report, entry.name, arguments), matrix=matrix)
    except Interrupted as exc:
        return SuiteResult(entry.name, report=exc.report, time=time.perf_counter() - started, signum=exc.signum, matrix=matrix)
    except Interrupt as exc:
        return SuiteResult(entry.name, time=time.perf_counter() - started, signum=exc.signum, matrix=matrix)
    except KeyboardInterrupt:  # where no real signal could be told apart (not the main thread)
        return SuiteResult(entry.name, time=time.perf_counter() - started, signum=signal.SIGINT, matrix=matrix)
    except GradcheckError as exc:
        _trace(exc, view.debug)
        return SuiteResult(entry.name, error=exc, time=time.perf_counter() - started, matrix=matrix)


def _named_tensors(config, given: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tensors the run's --only and --constant (or [tool.gradcheck]'s) name."""
    options = config.overrides({}, given)
    return tuple(options.get("only") or ()), tuple(options.get("constant") or ())


def _discover_files(plan, config, given: dict, view: View) -> dict[str, Any]:
    """Where --only or --constant name tensors, every file's layers first, so that a name none of them
    has is a usage error before anything is checked (in a run of whole files alone: a layer target
    or spec among them may be the one that has it). Else nothing: each file is discovered in turn."""
    from .discover import Discovery, unknown_names

    only, constant = _named_tensors(config, given)
    files = [entry for entry in plan.entries if entry.whole_file]
    if not files or not (only or constant):
        return {}
    found = {entry.name: _discover_file(entry, config, given, view) for entry in files}
    discoveries = [d for d in found.values() if isinstance(d, Discovery)]
    if len(files) == len(plan.entries) and len(discoveries) == len(files):
        problem = unknown_names(discoveries, only, constant)
        if problem is not None:
            raise problem
    return found


def _discover_file(entry, config, given: dict, view: View) -> Any:
    """The layers a file defines (discover.py), or the result that says why they cannot be told."""
    from .discover import discover
    from .environment import Interrupt

    started = time.perf_counter()
    tell(target=entry.name)
    only, constant = _named_tensors(config, given)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return discover(entry.target, timeout=config.overrides({}, given).get("timeout"), shown=entry.name, names=bool(only or constant))
    except Interrupt as exc:
        return SuiteResult(entry.name, time=time.perf_counter() - started, signum=exc.signum)
    except KeyboardInterrupt:
        return SuiteResult(entry.name, time=time.perf_counter() - started, signum=signal.SIGINT)
    except GradcheckError as exc:
        _trace(exc, view.debug)
        return SuiteResult(entry.name, error=exc, time=time.perf_counter() - started)


def _check_file(entry, discovery, config, given: dict, view: View):
    """Every layer a file defines, in order: each one's result, or why it was skipped. --only and
    --constant apply to each layer that has a tensor of that name (discover.Found.narrowed)."""
    from .targets import Entry

    if isinstance(discovery, SuiteResult):
        yield discovery
        return
    problem = discovery.nothing_to_check(entry.name)
    if problem is not None:
        yield SuiteResult(entry.name, error=problem)
        return
    only, constant = _named_tensors(config, given)
    for found in discovery.classes:
        found = found.narrowed(only, constant)
        name = f"{entry.name}:{found.name}"
        if found.skipped is not None:
            yield SuiteResult(name, skip_reason=found.skipped)
        elif found.error is not None:
            yield SuiteResult(name, error=found.error)
        else:
            options = dict(given)
            if only or constant or found.constant:  # this layer's own: those of its tensors, and its gradcheck_constant
                options.update(only=found.only, constant=found.constant)
            yield _check_one(Entry(name, f"{entry.target}:{found.name}"), Arguments(inputs=found.inputs), config, options, view)


def _check(entry, arguments: Arguments, config, given: dict, progress) -> Any:
    """Call the core on a layer target or a spec (whose inputs --input replaces, and whose constructor
    arguments --init replaces or adds to), the user's prints sent to stderr.

    Options: the command line's over a spec's over [tool.gradcheck]'s (config.py).
    """
    from .checker import check, check_spec

    args, kwargs = arguments.construct()
    with contextlib.redirect_stdout(sys.stderr):
        if entry.spec is not None:
            spec = replace(entry.spec, inputs=tuple(arguments.inputs)) if arguments.inputs else entry.spec
            spec = replace(spec, args=args or spec.args, kwargs={**spec.kwargs, **kwargs})
            return check_spec(spec, progress=progress, **config.overrides(spec.options, given))
        return check(entry.target, list(arguments.inputs), name=entry.name, args=args, kwargs=kwargs, progress=progress, **config.overrides({}, given))


def _annotate(console: Console, result: RunResult) -> None:
    """GitHub Actions workflow commands (github.py), written as they are: never wrapped, styled or escaped by rich."""
    from .github import annotations

    stream = console.file
    for line in annotations(result):
        stream.write(line + "\n")
    stream.flush()


def _render_result(view: View, result: SuiteResult, folder: bool, label: str) -> None:
    """One target's outcome, as it finishes: its report, or its error; ``label`` names it in a run of several."""
    from .render import STYLE, render_report, verdict_line

    if result.skip_reason is not None:
        line = Text.assemble((printable(label, one_line=True), "bold"), ": ", ("SKIPPED", STYLE["SKIPPED"]), ": ", printable(result.skip_reason, one_line=True))
        view.out.print(line, soft_wrap=True)
        if folder and not view.quiet:
            view.out.print()
    elif result.report is not None:
        if view.quiet:
            line = verdict_line(result.report)
            view.out.print(Text(f"{printable(label, one_line=True)}: ").append_text(line) if folder else line, soft_wrap=True)
        else:
            render_report(view.out, result.report, verbose=view.verbose, show_errors=view.show_errors, repro=result.repro)
            if folder:
                view.out.print()
        if result.interrupted:
            name = signal.Signals(result.signum or signal.SIGINT).name
            view.err.print(Text.assemble(("Interrupted", "bold yellow"), f" ({name}): the report above covers only what was checked before it."))
    elif result.error is not None:
        if folder:
            view.err.print(Text.assemble((printable(label, one_line=True), "bold magenta"), ": ", printable(_labelled(result.error, result.name))), soft_wrap=True)
        else:
            _error(view.err, result.error)
    elif result.interrupted:
        name = signal.Signals(result.signum or signal.SIGINT).name
        view.err.print(Text.assemble(("Interrupted", "bold yellow"), f" ({name}) before the check of ", printable(result.name, one_line=True), " began."))


def _labelled(error: GradcheckError, name: str) -> str:
    """An error shown after its spec's label: a spec error about that very file without its path
    again ('typo.yaml: inptus: unknown key', not 'typo.yaml: specs/typo.yaml: inptus: ...')."""
    from .errors import SpecError
    from .matrix import split_selector

    if isinstance(error, SpecError) and same_path(error.path, split_selector(name)[0]):
        return f"{error.within}\nHint: {error.hint}" if error.hint else error.within
    return str(error)


def same_path(a: Any, b: Any) -> bool:
    try:
        return os.path.abspath(os.fsdecode(a)) == os.path.abspath(os.fsdecode(b))
    except (TypeError, ValueError):
        return False


def _render_run(view: View, result: RunResult) -> None:
    """A folder run's summary table and verdict line."""
    from .render import run_verdict_line, summary_table

    if result.folder:
        view.out.print(summary_table(result, view.out))
        view.out.print(run_verdict_line(result), soft_wrap=True)


def _write_reports(err: Console, outputs: Outputs, result: RunResult, code: int, verbose: bool = False) -> int:
    """Every requested report of this run, whatever its outcome; a report that cannot be written is exit 2."""
    problem = outputs.write(result, verbose)
    if problem is not None:
        _error(err, problem)
        return code if code >= 128 else problem.exit_code
    return code


def _error(err: Console, exc: GradcheckError) -> None:
    """The one-paragraph 'Error: ... / Hint: ...' of a core error, shown literally.

    The key a spec would name ('inputs: ...', 'args/kwargs: ...') means nothing for a layer
    given on the command line (its inputs are --input): there the message is shown without it.
    """
    from .errors import SpecError

    spec_only = exc.key is not None and exc.key.split(".")[0] in ("inputs", "args/kwargs", "params")
    message = exc.detail if spec_only and not isinstance(exc, SpecError) else exc.message
    err.print(Text.assemble(("Error", "bold red"), ": ", printable(message)), soft_wrap=True)
    if exc.hint:
        err.print(Text.assemble(("Hint", "bold"), ": ", printable(exc.hint)), soft_wrap=True)


def _trace(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)


def _options(opts: dict) -> dict:
    """The check options the user gave (unset ones are left to the spec or the defaults)."""
    from .options import RENAMED, cli_flag, current_names

    options = {k: v for k, v in opts.items() if v not in (None, ())}
    try:
        options, renamed = current_names(options)
    except UsageError as exc:
        old = exc.key or ""
        raise click.UsageError(f"{cli_flag(old)} and {cli_flag(RENAMED[old])} are one option ({cli_flag(old)} is its old name), given twice.") from None
    for old in renamed:
        click.echo(f"Warning: {cli_flag(old)} is now called {cli_flag(RENAMED[old])}; the old name still works but will be removed.", err=True)
    if "only" in options:
        options["only"] = tuple(options["only"])
    return options


def _repro(report, target: str, arguments: Arguments) -> dict[str, str]:
    from .render import repro_commands

    return repro_commands(report, target, arguments.rerun())


@main.command("sweep", epilog=SWEEP_EPILOG)
@click.argument("target", type=TargetParam())
@input_option
@init_option
@check_options("eps")
@click.option("--eps-range", nargs=2, type=click.FloatRange(min=0, min_open=True), metavar="LOW HIGH", help="Smallest and largest step size [default: per dtype].")
@click.option("--points", type=click.IntRange(min=2), default=10, show_default=True, help="How many step sizes, evenly spaced in log.")
@plot_option("the error-versus-eps curve")
@quiet_option
@verbose_option
@color_option
@isolate_option
@debug_option
@click.pass_context
def sweep_command(ctx: click.Context, target: str, inputs: tuple, init: tuple, eps_range: tuple | None, points: int, plot_path: str | None, color: bool | None, quiet: bool, verbose: bool, debug: bool, **opts: Any) -> None:
    """Find a good finite-difference step for TARGET (a layer or a YAML spec):
    the worst relative error of the check at each eps, and the best one."""
    opts.pop("isolate")
    err = _console(sys.stderr, color)
    sinks = _Sinks(*_outputs({"json_path": None, "junit_path": None, "plot_path": plot_path}, [target]))

    def run() -> int:
        from .render import sweep_suggestion, sweep_table, title
        from .sweep import sweep, sweep_spec
        from .targets import plan_run

        outputs = sinks.outputs
        view = _view(color, quiet, verbose, debug=debug)
        if outputs.plot:
            from .errormap import require_matplotlib

            require_matplotlib()
        if Path(target).is_dir():
            raise UsageError("sweep takes one layer or spec, not a folder.", "Give one spec file, e.g. layer_specs/gauss_filter.yaml.")
        arguments = Arguments(inputs, init)
        plan = plan_run(target, fixed=set(_options(opts)) | arguments.fixes())
        sinks.refuse_inputs(plan.inputs)
        if len(plan.entries) > 1:
            raise UsageError(
                f"sweep takes one check, and {target} has a matrix of {len(plan.entries)} combinations.",
                f"Pick one, e.g. gradcheck sweep '{plan.entries[0].name}'.",
            )
        (entry,) = plan.entries
        if entry.whole_file:
            raise UsageError(f"sweep takes one layer, and {target} names a whole file.", f"Name one of its layers: gradcheck sweep {target}:Name.")

        def progress(i: int, n: int, eps: float) -> None:
            if verbose:
                view.note(f"checking at eps {eps:g} ({i + 1} of {n})")

        view.note(f"checking at {points} step sizes...")
        config, _ = _project([target])
        spec_options = entry.spec.options if entry.spec is not None else {}
        # sweep chooses eps itself and differences against finite differences: the project's eps and
        # reference are for 'gradcheck run', not given here (only the command line's --eps is refused).
        project = dict(config.options)
        for key, why in (("eps", "sweep chooses eps itself"), ("reference", "sweep takes finite differences, not a reference")):
            if key in project and key not in spec_options:
                view.note(f"{why}: {key} = {project[key]!r} of {config.describe()} is not used.")
            project.pop(key, None)
        options = replace(config, options=project).overrides(spec_options, _options(opts))
        kwargs = dict(eps_range=eps_range, points=points, progress=progress, **options)
        args, init_kwargs = arguments.construct()  # --init, as for run: replaces a spec's args, adds to its kwargs
        with contextlib.redirect_stdout(sys.stderr):
            if entry.spec is not None:
                spec = replace(entry.spec, inputs=tuple(inputs)) if inputs else entry.spec
                spec = replace(spec, args=args or spec.args, kwargs={**spec.kwargs, **init_kwargs})
                result = sweep_spec(spec, **kwargs)
            else:
                result = sweep(entry.target, list(inputs), name=entry.name, args=args, kwargs=init_kwargs, **kwargs)
        if not quiet:
            view.out.print(title(f"gradcheck sweep {result.target}"), soft_wrap=True)
            view.out.print(sweep_table(result, view.out))
        view.out.print(sweep_suggestion(result))
        if outputs.plot:
            from .sweep import plot_sweep

            plot_sweep(result, outputs.plot)
            view.note(f"wrote {outputs.plot}")
        # 0 only where a step was found at which the check passes: a sweep in CI vouches for it.
        return 0 if result.best is not None and not result.best.n_failed else 1

    ctx.exit(_guarded_run(target, err, sinks, debug, run))


@main.command("validate", epilog=VALIDATE_EPILOG)
@click.argument("specs", nargs=-1, type=TargetParam())
@click.option("--recursive", "-r", is_flag=True, help="Also validate the specs in the subfolders of a folder.")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default=None, help="github: also a GitHub Actions ::error annotation per invalid spec [default: github when GITHUB_ACTIONS=true].")
@quiet_option
@color_option
def validate_command(specs: tuple[str, ...], recursive: bool, output_format: str | None, quiet: bool, color: bool | None) -> None:
    """Check each SPEC (a spec file, a folder of specs, a glob) without running anything: every
    problem is listed, and the exit status is 2 if there is one. With no SPEC, the specs of
    [tool.gradcheck] in pyproject.toml."""
    from .matrix import combinations, parse_selector, split_selector
    from .spec import load_spec
    from .targets import spec_files

    out, err = _console(sys.stdout, color), _console(sys.stderr, color)
    try:
        _, targets = _project(list(specs))
        if not targets:
            raise UsageError("No SPEC given: name spec files or folders of specs.", "Example: gradcheck validate specs/")
        files = spec_files(targets, recursive)
    except GradcheckError as exc:
        raise CliError(exc) from None
    problems: list[SuiteResult] = []
    specs_read = layers = 0  # spec files read (valid or not); layer files seen and left to 'gradcheck run'

    def problem(path: str, exc: GradcheckError) -> None:
        problems.append(SuiteResult(path, error=exc))
        _error(err, exc)

    for path in files:
        file, selector = split_selector(path)
        layer = _layer_target(file)
        if layer is not None:  # a layer (file) among the specs: not a spec, but it must at least be there
            if layer and not Path(layer).is_file():
                problem(path, UsageError(f"Layer file {layer!r} does not exist.", "Check the path (a typo in [tool.gradcheck] specs?)."))
            elif file != layer:  # 'file.py:Name': a layer target, given where specs are expected
                problem(path, UsageError(
                    f"{path!r} is a layer, not a spec: validate reads YAML specs only.",
                    f"Check the layer with 'gradcheck run {path} --input SHAPE'; validate takes spec files, folders of specs and globs.",
                ))
            else:
                layers += 1
                if not quiet:
                    out.print(Text.assemble(("skipped", "yellow"), " ", printable(path, one_line=True), " (a layer file, not validated: 'gradcheck run' finds its layers)"), soft_wrap=True)
            continue
        specs_read += 1
        try:
            spec = load_spec(file)
            checks = len(combinations(spec, parse_selector(path, selector) if selector is not None else None, target=path))
        except GradcheckError as exc:
            problem(path, exc)
            continue
        if not quiet:
            matrix = f" ({checks} checks: a matrix)" if checks > 1 else ""
            out.print(Text.assemble(("ok", "green"), " ", printable(path, one_line=True), matrix), soft_wrap=True)
    if report_format(output_format) == "github":
        _annotate(err, RunResult(tuple(problems), folder=True))
    not_validated = f"; {layers} layer file(s) not validated" if layers else ""
    if problems:
        n = len(files) - layers
        out.print(Text.assemble(("INVALID", STYLE_ERROR), f": {len(problems)} of {n} spec(s) have problems (listed above){not_validated}."))
        raise SystemExit(2)
    if not specs_read:  # only layer files: nothing was validated, and "OK" would vouch for nothing
        raise CliError(UsageError(
            f"Nothing validated: {layers} layer file(s) and no spec; validate reads YAML specs only.",
            "Name spec files or folders of specs; a layer file is checked with 'gradcheck run FILE.py'.",
        ))
    out.print(Text.assemble(("OK", "bold green"), f": all {specs_read} spec(s) are valid{not_validated}."))


def _layer_target(text: str) -> str | None:
    """For a layer target (``file.py``, ``file.py:Name``, ``pkg.mod:Name``) among specs, its file ('' for a dotted
    one, whose file is found only by importing it); None for anything else (a spec, a folder)."""
    from .load import is_file_target, split_target
    from .spec import is_spec_path

    if is_spec_path(text):
        return None
    try:
        module_part, attr = split_target(text)
    except GradcheckError:
        return None
    if is_file_target(module_part) and module_part.endswith(".py"):
        return module_part
    return "" if attr is not None and not is_file_target(module_part) else None


@main.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of a YAML spec (also installed as gradcheck_cli/spec.schema.json), for editors:
    '# yaml-language-server: $schema=spec.schema.json' at the top of a spec."""
    from .schema import schema_text

    click.echo(schema_text(), nl=False)


@main.command("list", epilog=LIST_EPILOG)
@click.argument("specs", nargs=-1, type=TargetParam())
def list_command(specs: tuple[str, ...]) -> None:
    """Show the specs of each SPEC (a folder of specs, a spec file or a glob, as 'gradcheck run'
    takes them; default: the specs of [tool.gradcheck], else layer_specs/) with their layer and
    inputs; exit status 2 if one of them is invalid."""
    from .matrix import describe, split_selector
    from .render import fitted_table, title
    from .spec import load_spec
    from .targets import GLOB, spec_files

    out, err = _console(report_stream(), None), _console(sys.stderr, None)
    try:
        _, targets = _project(list(specs))
    except GradcheckError as exc:
        raise CliError(exc) from None
    invalid: list[GradcheckError] = []
    listed = 0
    for folder in targets or ["layer_specs"]:
        if not GLOB.search(folder) and not Path(split_selector(folder)[0]).exists():
            raise CliError(UsageError(f"{folder!r} does not exist.", "Check the path; list takes folders of specs, spec files and globs, as 'gradcheck run' does."))
        try:
            found = spec_files([folder])  # as 'gradcheck run' and 'validate' find them: folders, files, globs
        except GradcheckError as exc:
            raise CliError(exc) from None
        paths: list[Path] = []
        for path in found:
            if _layer_target(split_selector(path)[0]) is not None:  # a layer file among the project's specs
                err.print(Text.assemble(("skipped", "yellow"), " ", printable(path, one_line=True), " (a layer file, not a spec: 'gradcheck run' finds its layers)"), soft_wrap=True)
            else:
                paths.append(Path(split_selector(path)[0]))
        if not paths:
            continue
        base = Path(folder) if Path(folder).is_dir() else None
        loaded: list[tuple[Path, Any]] = []
        for path in paths:
            try:
                loaded.append((path, load_spec(path)))
            except GradcheckError as exc:
                invalid.append(exc)
                loaded.append((path, exc))
        matrices = any(not isinstance(spec, GradcheckError) and spec.matrix for _, spec in loaded)
        columns = [(col, "left") for col in ("spec", "layer", "inputs", "description") + (("matrix",) if matrices else ())]
        rows = []
        for path, spec in loaded:
            name = Text(printable(path.name if base is not None else str(path), one_line=True))
            if isinstance(spec, GradcheckError):
                why = Text(printable(shorten(spec.message.split(": ", 1)[-1], 80), one_line=True))
                rows.append({"spec": name, "layer": Text("invalid", style="magenta"), "inputs": Text("-"), "description": why, "matrix": Text("")})
                continue
            layer = spec.layer
            if os.path.isabs(layer.split(":")[0]):
                layer = os.path.relpath(layer.rsplit(":", 1)[0], path.parent) + ":" + layer.rsplit(":", 1)[1]
            inputs = ", ".join(i.describe() for i in spec.inputs) or ("(matrix)" if any(a.key == "inputs" for a in spec.matrix) else "-")
            rows.append({
                "spec": name,
                "layer": Text(printable(layer, one_line=True)),
                "inputs": Text(printable(inputs, one_line=True)),
                "description": Text(printable(spec.description or "")),
                "matrix": Text(printable(describe(spec.matrix)) if matrices else ""),
            })
        # The spec and its layer are never cut (they are what to type next); the rest wraps.
        listed += len(loaded)
        out.print(title(f"specs in {folder}" if base is not None else f"specs {folder}"), soft_wrap=True)
        out.print(fitted_table(out, None, columns, rows, wrap=("inputs", "description", "matrix"), drop=(("matrix",), ("description",), ("inputs",))))
    for exc in invalid:  # each with its hint ("did you mean 'inputs'?")
        _error(err, exc)
    if invalid:
        raise SystemExit(2)
    if not listed:  # only layer files: there is no spec to list
        raise CliError(UsageError("No spec to list: only layer files were named.", "Name folders of specs, spec files or globs; 'gradcheck run FILE.py' checks a layer file."))

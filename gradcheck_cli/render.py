"""Step 6: turn reports into something to read (rich tables) or to parse (JSON)."""

from __future__ import annotations

import contextlib
import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence

from rich.cells import cell_len
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .options import rerun_arguments
from .report import CHECK_LABELS, Report, RunResult, TensorReport, verdict_counts, worst_element
from .spec import InputSpec
from .streams import printable
from .verdicts import CHECKED

if TYPE_CHECKING:
    from .sweep import SweepResult

STYLE = {"PASS": "bold green", "FAIL": "bold red", "NOISE": "bold yellow", "KINK": "yellow", "ERROR": "bold magenta", "SKIPPED": "yellow"}
# Error-map cell characters (see errormap.py) and their colours.
CELL_STYLE = {v.char: v.style for v in CHECKED}


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _counts(t: TensorReport) -> Text:
    parts = []
    for key in ("PASS", "FAIL", "KINK", "NOISE"):
        n = t.counts.get(key, 0)
        if n and (key != "PASS" or len([v for v in t.counts.values() if v]) > 1):
            parts.append((f"{n} {key.lower()}", STYLE[key] if key != "PASS" else "green"))
    if not parts:
        return Text("all pass", style="green")
    text = Text()
    for i, (s, style) in enumerate(parts):
        if i:
            text.append(", ")
        text.append(s, style=style)
    return text


# The report table's columns: (header, justify). At a width where they do not all fit, a compact
# layout leaves out columns in DROP_ORDER (the JSON report always has every number).
COLUMNS = (
    ("tensor", "left"),
    ("shape", "left"),
    ("checked", "right"),
    ("max rel err", "right"),
    ("mean rel err", "right"),
    ("max abs err", "right"),
    ("verdicts", "left"),
    ("worst at", "left"),
    ("analytic", "right"),
    ("numeric", "right"),
    ("result", "left"),
)
# The worst index goes before the two values: without them it says little (the verdict line repeats all three).
DROP_ORDER = (("mean rel err",), ("max abs err",), ("shape",), ("checked",), ("worst at",), ("analytic", "numeric"))


def _cells(t: TensorReport, digits: int) -> dict[str, Any]:
    checked = f"{t.n_checked}" if t.n_checked == t.n_elements else f"{t.n_checked}/{t.n_elements}"
    return {
        "tensor": literal(t.name),
        "shape": "x".join(map(str, t.shape)) or "scalar",
        "checked": checked,
        "max rel err": _num(t.max_rel_error),
        "mean rel err": _num(t.mean_rel_error),
        "max abs err": _num(t.max_abs_error),
        "verdicts": _counts(t),
        "worst at": str(list(t.worst_index)) if t.worst_index is not None else "-",
        "analytic": f"{t.analytic:.{digits}g}" if t.analytic is not None else "-",
        "numeric": f"{t.numeric:.{digits}g}" if t.numeric is not None else "-",
        "result": Text(t.status, style=STYLE[t.status]),
    }


def report_table(report: Report, console: Console | None = None) -> Table:
    """The report's table, at the console's width: every column where they fit, else a compact layout
    that leaves out the least needed columns (never a cell cut to 'ten…')."""
    full = _table(report, [c for c, _ in COLUMNS], compact=False)
    if console is None or _fits(console, full):
        return full
    shown = [c for c, _ in COLUMNS]
    for columns in DROP_ORDER:
        table = _table(report, shown, compact=True)
        if _fits(console, table):
            return table
        shown = [c for c in shown if c not in columns]
    return _table(report, shown, compact=True)


def _fits(console: Console, table: Table) -> bool:
    from rich.measure import Measurement

    wide = console.options.update_width(10_000)  # measured unclamped: every cell at its natural width
    return Measurement.get(console, wide, table).maximum <= console.width


def _table(report: Report, shown: list[str], compact: bool) -> Table:
    from rich import box

    left_out = [c for c, _ in COLUMNS if c not in shown]
    text = caption(report) + (f" · left out at this width: {', '.join(left_out)}" if left_out else "")
    options: dict[str, Any] = dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True) if compact else {}
    table = Table(caption=Text(text), caption_justify="default", **options)  # its title is printed on its own: title()
    for col, justify in COLUMNS:
        if col in shown:
            header = "reference" if col == "numeric" and report.config.get("reference") else col
            table.add_column(header, justify=justify, no_wrap=True)
    for t in report.tensors:
        cells = _cells(t, 4 if compact else 6)
        table.add_row(*(cells[c] for c in shown))
    return table


def title(text: str) -> Text:
    """A table's title line, naming its target: printed on its own and never wrapped, so that a long
    path is not folded to the table's width (a title of rich's own is)."""
    return Text(printable(text, one_line=True), style="table.title")


def caption(report: Report) -> str:
    c = report.config
    tm = report.timing
    path = evaluation_path(report)
    if c.get("reference"):
        oracle = f"reference {c['reference']} ({c.get('reference_runs_in')})" + (f" · eps {c['eps']:g}" if c.get("eps") is not None else "")
    else:
        oracle = f"eps {c['eps']:g}"
    checks = [CHECK_LABELS[k] or k for k in report.checks if k not in ("backward", "reference")]
    also = f" · also {', '.join(checks)}" if checks else ""
    evaluations = f"{tm['points_evaluated']} evaluations ({path}) in" if "points_evaluated" in tm else "checked in"
    return f"{settings(c, oracle)}{also} · {evaluations} {tm.get('check_s', 0):.2f}s"


def settings(c: Mapping[str, Any], oracle: str | None = None) -> str:
    """What decides a check's verdicts, from its report config: 'dtype float32 (numeric in float64) · device
    cpu · eps 0.001 · rtol ... · seed 0 · losses l2+weighted · kinks pass' (``oracle``: the eps part, if any)."""
    numeric = c.get("numeric_dtype")
    parts = [f"dtype {c.get('dtype')}" + (f" (numeric in {numeric})" if numeric not in (None, c.get("dtype")) else ""), f"device {c.get('device')}"]
    parts += [oracle] if oracle else []
    parts += [f"{key} {c[key]:g}" for key in ("rtol", "atol") if c.get(key) is not None]
    parts += [f"seed {c.get('seed')}"]
    parts += [f"losses {'+'.join(c['losses'])}"] if c.get("losses") else []
    parts += [f"kinks {c['kinks']}"] if c.get("kinks") else []
    return " · ".join(parts)


def evaluation_path(report: Report) -> str:
    """How the perturbed points were evaluated: grouped tensors, then batched (vmap) or loop."""
    tm = report.timing
    path = "batched" if tm.get("batched") else "loop"
    grouped = tm.get("grouped") or {}
    if not grouped:
        return path
    return "grouped" if len(grouped) == len(report.tensors) else f"grouped: {', '.join(grouped)}; {path} for the rest"


def verdict_line(report: Report) -> Text:
    n = len(report.tensors)
    checked = sum(t.n_checked for t in report.tensors)
    if report.interrupted:
        bad = [printable(t.name, one_line=True) for t in report.tensors if not t.passed]
        detail = f"; failing so far: {', '.join(bad)}" if bad else ""
        return Text.assemble(("INTERRUPTED", STYLE["NOISE"]), f": only {n} tensor(s) were checked before the run was interrupted{detail}.")
    if report.passed:
        return Text.assemble(("PASS", STYLE["PASS"]), f": all {n} tensor(s) match ({checked} elements checked).")
    failed = [printable(t.name, one_line=True) for t in report.tensors if t.status == "FAIL"]
    noisy = [printable(t.name, one_line=True) for t in report.tensors if t.status == "NOISE"]
    text = Text()
    if failed:
        text.append("FAIL", STYLE["FAIL"])
        text.append(f": {len(failed)} of {n} tensor(s) do not match: {', '.join(failed)}.")
        worst = report.worst
        if worst is not None and worst_element(worst):
            text.append(f" Worst: {printable(worst_element(worst), one_line=True)}.")
    if noisy:
        if failed:
            text.append(" ")
        text.append("INCONCLUSIVE", STYLE["NOISE"])
        text.append(
            f": {', '.join(noisy)} could not be verified: finite-difference noise is as large as the gradient "
            "(try --numeric-dtype float64 or a larger --eps)."
        )
    return text


def detail_lines(report: Report, verbose: bool = False) -> list[Text]:
    lines = []
    for t in report.tensors:
        if t.passed and not t.coverage:
            continue
        if not t.passed:
            losses = ", ".join(t.failed_losses) or "-"
            msg = f"  {t.name}: {t.n_failed} element(s) failed (caught by the {losses} loss)"
            if t.status == "NOISE":
                msg = f"  {t.name}: inconclusive, {t.counts.get('NOISE', 0)} of {t.n_checked} elements lost in finite-difference noise; try a larger --eps or --numeric-dtype float64"
            lines.append(Text(printable(msg), style=STYLE[t.status]))
            if t.diagnosis:
                lines.append(Text(printable(f"    diagnosis: {t.diagnosis}")))
        if t.coverage:
            lines.append(Text(printable(f"  {t.name}: {t.coverage}"), style="dim"))
    for note in report.notes_shown(verbose):
        lines.append(Text(printable(f"  note: {note}"), style="dim"))
    return lines


def verbose_lines(report: Report) -> list[Text]:
    """--verbose: verdict counts, losses and sampling of every tensor, and where the time went."""
    lines = []
    for t in report.tensors:
        failed = f", failed under {'+'.join(t.failed_losses)}" if t.failed_losses else ""
        text = f"  {t.name}: {t.n_checked} of {t.n_elements} elements checked: {verdict_counts(t)}; headline loss {t.loss}{failed}"
        lines.append(Text(printable(text), style="dim"))
    tm = report.timing
    lines.append(
        Text(
            f"  timing: {tm.get('check_s', 0):.2f}s (estimated {tm.get('estimate_s', 0):.2f}s), {tm.get('forward_calls', 0)} forward calls, "
            f"{tm.get('points_evaluated', 0)} perturbed points ({evaluation_path(report)})",
            style="dim",
        )
    )
    return lines


def error_map_lines(report: Report) -> list[Text]:
    """--show-errors: for each failing tensor, its map of per-element verdicts (errormap.py), coloured."""
    from .errormap import FRAME, error_map

    lines = []
    for t in report.tensors:
        if t.passed or t.verdicts is None:
            continue
        lines.append(Text(printable(f"  {t.name} {list(t.shape)}: where the checked elements fail"), style="bold"))
        for raw in error_map(t.verdicts):
            text = Text("    " + raw, style="" if raw.endswith(FRAME) else "dim")
            if raw.endswith(FRAME):  # a grid row: colour the cells between the frame
                first = text.plain.index(FRAME) + 1
                for i, ch in enumerate(text.plain[first:-1], first):
                    if ch in CELL_STYLE:
                        text.stylize(CELL_STYLE[ch], i, i + 1)
            lines.append(text)
    return lines


def input_arg(spec: InputSpec) -> str:
    """The --input value that gives this input: '4x3', 'scalar', '=JSON', ':VALUE', '[A,B]', with 'NAME=' for a keyword."""
    kind = spec.kind
    if kind == "items":
        inner = ",".join(input_arg(item) for item in spec.items)
        text = f"[{inner}]" if spec.sequence == "list" else f"({inner})"
    elif kind == "arg":
        text = ":" + json.dumps(spec.arg, separators=(",", ":"))
    elif kind == "random":
        text = "x".join(map(str, spec.shape)) or "scalar"
    else:
        text = "=" + json.dumps(spec.value, separators=(",", ":"))
    return f"{spec.name}={text}" if spec.name else text


def repro_commands(report: Report, target: str, given: Iterable[str] = ()) -> dict[str, str]:
    """For each failing tensor, a ``gradcheck run`` command that rechecks just it with the same settings.

    ``given``: the command line's own arguments to repeat (--input, --init).
    """
    common = list(given) + rerun_arguments(report.config)
    return {t.name: shell_join(["gradcheck", "run", target, *(["--only", t.only_name] if t.only_name else []), *common]) for t in report.tensors if not t.passed}


def shell_join(args: Iterable[str]) -> str:
    """A command line a shell reads back as ``args``: ``shlex.join``, but an argument holding what a
    terminal cannot show (a control character, a file name's byte that is not UTF-8) is written
    in ANSI-C quotes, ``$'specs/\\xff.yaml'``, which bash and zsh read as those very bytes."""
    from .streams import escaped

    def quote(arg: str) -> str:
        if printable(arg, one_line=True) == arg:
            return shlex.quote(arg)
        body = "".join("\\\\" if c == "\\" else "\\'" if c == "'" else escaped(c) if printable(c, one_line=True) != c else c for c in arg)
        return f"$'{body}'"

    return " ".join(quote(arg) for arg in args)


def render_report(
    console: Console,
    report: Report,
    *,
    verbose: bool = False,
    show_errors: bool = False,
    repro: Mapping[str, str] | None = None,
) -> None:
    """The title, the table, detail lines, optional error maps and repro commands, then the verdict line."""
    console.print(title(f"gradcheck {report.target}"), soft_wrap=True)
    console.print(Group(report_table(report, console), *detail_lines(report, verbose), *(verbose_lines(report) if verbose else ())))
    extra = error_map_lines(report) if show_errors else []
    if repro:
        extra.append(Text("  rerun only a failing tensor:", style="dim"))
        extra += [Text(printable(f"    {command}")) for command in repro.values()]
    for line in extra:  # one print each, never wrapped, so commands and maps stay intact
        console.print(line, soft_wrap=True)
    console.print(verdict_line(report))


def short_names(names: Iterable[str]) -> dict[str, str]:
    """How a run of several checks labels each: specs by their path below the folder they share
    ('gauss.yaml' for one folder, 'broken/gauss.yaml' with --recursive; 'gauss.yaml[seed=1]' for a
    combination of its matrix), layer targets as given."""
    import os

    from .matrix import split_selector

    names = list(names)
    files = {n: split_selector(n) for n in names}
    specs = [n for n in names if files[n][0].lower().endswith((".yaml", ".yml"))]
    try:
        common = os.path.commonpath([os.path.dirname(os.path.abspath(files[n][0])) for n in specs]) if specs else ""
    except ValueError:  # different drives
        common = ""

    def short(name: str) -> str:
        path, selector = files[name]
        shown = os.path.relpath(os.path.abspath(path), common)
        return shown if selector is None else f"{shown}[{selector}]"

    return {n: (short(n) if common and n in specs else n) for n in names}


# The summary table's columns. A target is never cut nor wrapped: where they do not all fit, the
# columns that may wrap (SUMMARY_WRAP) shrink first, then a compact layout leaves out columns in
# SUMMARY_DROP order (the caption says which; each skipped layer's reason is printed above it).
SUMMARY_COLUMNS = (("target", "left"), ("result", "left"), ("worst tensor", "left"), ("worst rel err", "right"), ("time", "right"), ("skipped because", "left"))
SUMMARY_WRAP = ("worst tensor", "skipped because")
SUMMARY_DROP = (("time",), ("skipped because",), ("worst rel err",), ("worst tensor",))
# A word longer than this in a column that may wrap is folded rather than widening the column.
FOLD_WORDS = 20


def summary_table(run: RunResult, console: Console | None = None) -> Table:
    """One row per check (per combination of a matrix, per layer of a file) of a run of several; why
    a layer was skipped, where one was. At ``console``'s width: the target column whole, always."""
    labels = short_names(r.name for r in run.results)
    skipped = any(r.skip_reason is not None for r in run.results)
    rows = []
    for result in run.results:
        worst = result.report.worst if result.report is not None else None
        rows.append({
            "target": literal(labels[result.name]),
            "result": Text(result.status, style=STYLE.get(result.status, "")),
            "worst tensor": literal(worst.name) if worst else Text("-"),
            "worst rel err": Text(_num(worst.max_rel_error if worst else None)),
            "time": Text(f"{result.time:.2f}s" if result.skip_reason is None else "-"),
            "skipped because": literal(result.skip_reason or ""),
        })
    columns = [(c, justify) for c, justify in SUMMARY_COLUMNS if c != "skipped because" or skipped]
    return fitted_table(console, Text("summary"), columns, rows, SUMMARY_WRAP, SUMMARY_DROP, lambda left: " (each reason is above)" if "skipped because" in left else "")


def fitted_table(
    console: Console | None,
    title: Text | None,
    columns: Sequence[tuple[str, str]],
    rows: list[dict[str, Text]],
    wrap: Collection[str],
    drop: Sequence[tuple[str, ...]] = (),
    said: Callable[[list[str]], str] = lambda left: "",
    headers: Mapping[str, str] | None = None,
    caption: str = "",
) -> Table:
    """A table of ``rows`` (cells by column key) at ``console``'s width in which no cell is cut.

    ``columns`` are (key, justify); a column's header is its key unless ``headers`` says otherwise.
    Every column but those in ``wrap`` is shown whole (a target, a status, a number); where they
    do not all fit at their natural widths, the ``wrap`` columns shrink to their longest word
    (words of over FOLD_WORDS fold), then a compact layout (no vertical rules) is tried, then
    columns are left out in ``drop`` order, the caption naming them (``said`` adds to that).
    Where even that is wider than the terminal, cells fold onto further lines, whole."""
    layout = _Layout(title, tuple(columns), rows, dict(headers or {}), caption, said)
    keys = [c for c, _ in columns]
    full = layout.table(keys, compact=False)
    if console is None or _fits(console, full):
        return full
    shown = list(keys)
    for compact, dropped in [(False, ()), (True, ()), *((True, d) for d in drop)]:
        shown = [c for c in shown if c not in dropped]
        widths = layout.widths(console, shown, wrap, compact)
        if widths is not None:
            return layout.table(shown, compact, widths)
    return layout.table(shown, compact=True)  # rich narrows every column; cells fold


@dataclass(frozen=True)
class _Layout:
    """What a fitted table shows; :meth:`table` lays out some of its columns at given widths."""

    title: Text | None
    columns: tuple[tuple[str, str], ...]
    rows: list[dict[str, Text]]
    headers: dict[str, str]
    caption: str
    said: Callable[[list[str]], str]

    def header(self, key: str) -> str:
        return self.headers.get(key, key)

    def widths(self, console: Console, shown: list[str], wrap: Collection[str], compact: bool) -> dict[str, int] | None:
        """Column widths that fit the console with every column not in ``wrap`` whole, or None where there
        are none: a ``wrap`` column at least as wide as its longest word (up to FOLD_WORDS) and header word."""
        cells = {c: [Text(self.header(c))] + [row[c] for row in self.rows] for c in shown}
        natural = {c: max(cell_len(line) for cell in cells[c] for line in str(cell).splitlines() or [""]) for c in shown}
        least = {}
        for c in shown:
            header = max((cell_len(word) for word in self.header(c).split()), default=1)
            words = max((cell_len(word) for row in self.rows for word in str(row[c]).split()), default=1)
            least[c] = min(natural[c], max(header, min(words, FOLD_WORDS))) if c in wrap else natural[c]
        overhead = _width_of(console, self.table(shown, compact, natural)) - sum(natural.values())
        room = console.width - overhead - sum(least.values())
        if room < 0:
            return None
        # What is left goes to the columns that wrap, in proportion to what each lacks of its natural width.
        lack = {c: natural[c] - least[c] for c in shown if c in wrap}
        total = sum(lack.values())
        widths = dict(least)
        if total:
            for c, short in lack.items():
                widths[c] += min(short, room * short // total)
            spare = room - sum(widths[c] - least[c] for c in lack)
            for c in lack:  # the rounding's remainder, in column order
                more = min(spare, natural[c] - widths[c])
                widths[c] += more
                spare -= more
        return widths

    def table(self, shown: list[str], compact: bool, widths: dict[str, int] | None = None) -> Table:
        from rich import box

        left_out = [self.header(c) for c, _ in self.columns if c not in shown]
        note = f"left out at this width: {', '.join(left_out)}{self.said(left_out)}" if left_out else ""
        caption = " · ".join(part for part in (self.caption, note) if part)
        options: dict[str, Any] = dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True) if compact else {}
        table = Table(title=self.title, title_justify="default", caption=Text(caption) if caption else None, caption_justify="default", **options)
        for key, justify in self.columns:
            if key in shown:
                table.add_column(literal(self.header(key)), justify=justify, width=widths.get(key) if widths else None, overflow="fold")
        for row in self.rows:  # a whole column is as wide as its widest cell; a longer word in a wrapping one folds
            table.add_row(*(row[c] for c in shown))
        return table


def _width_of(console: Console, table: Table) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def run_verdict_line(run: RunResult) -> Text:
    """The last line of a run of several: how many checks passed, failed and could not be checked (an error is
    not a failed check), and how many layers were skipped. A check is a spec, one combination of a spec's
    matrix, a layer or one layer of a file; where every check is a whole spec, they are called specs."""
    from .matrix import split_selector

    n = len(run.checked)
    failed = sum(1 for r in run.checked if r.status in ("FAIL", "NOISE"))
    errors = sum(1 for r in run.checked if r.status == "ERROR")
    bad = sum(1 for r in run.checked if r.status != "PASS")
    skipped = len(run.results) - n
    also = f"; {skipped} skipped (not checked: see the summary)" if skipped else ""
    files = [split_selector(r.name) for r in run.results]
    all_specs = not skipped and all(path.lower().endswith((".yaml", ".yml")) for path, _ in files)
    whole_specs = all_specs and all(selector is None for _, selector in files)
    noun = "specs" if whole_specs else "checks"
    if all_specs and not whole_specs:  # combinations of a matrix: checks, and the specs they come from
        n_specs = len({path for path, _ in files})
        noun = f"checks (from {n_specs} spec{'s' if n_specs != 1 else ''})"
    if run.interrupted:
        return Text.assemble(("INTERRUPTED", STYLE["NOISE"]), f": stopped after {n} of {run.planned} {noun}; {bad} of them did not pass{also}.")
    if run.passed:
        return Text.assemble(("PASS", STYLE["PASS"]), f": all {n} {noun} match{also}.")
    unchecked = f"; {errors} more could not be checked (see the errors above){also}" if errors else also
    if failed:
        return Text.assemble(("FAIL", STYLE["FAIL"]), f": {failed} of {n} {noun} did not pass{unchecked}.")
    return Text.assemble(("ERROR", STYLE["ERROR"]), f": {errors} of {n} {noun} could not be checked (see the errors above){also}.")


def literal(text: str) -> Text:
    """Text from a layer or a spec, shown as it is: no rich markup, no terminal control characters."""
    return Text(printable(text, one_line=True))


def eps_text(eps: float) -> str:
    """1e-06 -> '1e-6', 4.64e-05 -> '4.64e-5'."""
    mantissa, exponent = f"{eps:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def sweep_table(result: SweepResult, console: Console | None = None) -> Table:
    """One row per step size: the worst relative error overall and per tensor; the best row marked.
    At ``console``'s width no number is cut: the per-tensor columns are left out first (from the
    last), then the verdicts."""
    best = result.best
    tensors = [f"tensor {i}" for i in range(len(result.tensors))]  # keys: a tensor may be named 'eps'
    columns = [("eps", "right"), ("worst rel err", "right"), *((key, "right") for key in tensors), ("verdicts", "left"), ("marks", "left")]
    rows = []
    for p in result.points:
        verdicts = [f"{p.n_failed} fail"] * bool(p.n_failed) + [f"{p.n_noise} noise"] * bool(p.n_noise)
        marks = ["◀ best"] * (p is best) + [result.default_source] * (p.eps == result.default_eps)
        if p.error is not None:  # the layer raised at this step: nothing was checked
            verdict = Text(f"raised: {printable(p.error, one_line=True)}", style=STYLE["ERROR"])
        else:
            verdict = Text(", ".join(verdicts) or "all pass", style=STYLE["FAIL"] if p.n_failed else STYLE["NOISE"] if p.n_noise else "green")
        rows.append({
            "eps": Text(eps_text(p.eps)),
            "worst rel err": Text(_num(None if p.error else p.worst), style="bold green" if p is best else ""),
            **{key: Text(_num(None if p.error else e)) for key, e in zip(tensors, p.errors)},
            "verdicts": verdict,
            "marks": Text(" ".join(marks), style="bold"),
        })
    headers = {"marks": "", **dict(zip(tensors, result.tensors))}
    drop = [(key,) for key in reversed(tensors)] + [("verdicts",)]
    return fitted_table(console, None, columns, rows, wrap=("verdicts", "marks"), drop=drop, headers=headers, caption=sweep_caption(result))


def sweep_caption(result: SweepResult) -> str:
    """The facts of the run caption that decide each step's verdicts -- and so sweep's exit status -- less eps."""
    c = result.config
    return f"{settings(c)} · at most {c.get('max_elements') or 'all'} elements per tensor"


def sweep_suggestion(result: SweepResult) -> Text:
    """'best eps ≈ 1e-6 (default 1e-6)'; or that no step gave a conclusive check."""
    best = result.best
    if best is None:
        low, high = result.points[0].eps, result.points[-1].eps
        raised = " or the layer raised (see the table)" if any(p.error for p in result.points) else ""
        return Text.assemble(
            ("no step size recommended", "bold yellow"),
            f": at every eps from {eps_text(low)} to {eps_text(high)} some tensor was lost in finite-difference noise{raised}. "
            "Try a wider --eps-range, or --numeric-dtype float64.",
        )
    # Where even the best step fails, the step is not what is wrong: say so, not just "best".
    wrong = " -- but the check fails at every step: the gradient is wrong at any eps (gradcheck run shows where)" if best.n_failed else ""
    return Text.assemble(
        ("best eps ≈ ", "bold"),
        (eps_text(best.eps), "bold green"),
        f" ({result.default_source} {eps_text(result.default_eps)}); worst relative error there {_num(best.worst)}{wrong}",
    )


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


@contextlib.contextmanager
def progress_bar(console: Console, enabled: bool) -> Iterator[Callable[[str, int, int, float], None] | None]:
    """The cost estimate and a progress bar on stderr, for checks estimated above ~2 s on a terminal."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    )
    state: dict[str, Any] = {}

    def update(name: str, done: int, total: int, estimate_s: float) -> None:
        if not name:  # the plan: announce the estimate once (a later one revises the bar)
            if "shown" in state:
                if "task" in state:
                    bar.update(state["task"], total=total, completed=done)
            elif estimate_s > 2.0:
                state["shown"] = True
                console.print(f"[dim]checking {total} elements, estimated {estimate_s:.0f}s[/]")
                if console.is_terminal:
                    bar.start()
                    state["task"] = bar.add_task("checking", total=total, completed=done)
            return
        if "task" in state:
            bar.update(state["task"], completed=done, description=f"checking {printable(name, one_line=True)}")

    try:
        yield update
    finally:
        if "task" in state:
            bar.stop()

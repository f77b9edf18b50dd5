"""Step 6: turn reports into something to read (rich tables) or to parse (JSON)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .report import Report, TensorReport

STYLE = {"PASS": "bold green", "FAIL": "bold red", "NOISE": "bold yellow", "KINK": "yellow", "ERROR": "bold magenta"}


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


def report_table(report: Report) -> Table:
    table = Table(
        title=f"gradcheck {report.target}",
        title_justify="left",
        caption=caption(report),
        caption_justify="left",
    )
    for col, kw in [
        ("tensor", {}),
        ("shape", {}),
        ("checked", {"justify": "right"}),
        ("max rel err", {"justify": "right"}),
        ("mean rel err", {"justify": "right"}),
        ("max abs err", {"justify": "right"}),
        ("verdicts", {}),
        ("worst at", {}),
        ("analytic", {"justify": "right"}),
        ("numeric", {"justify": "right"}),
        ("result", {}),
    ]:
        table.add_column(col, **kw)
    for t in report.tensors:
        checked = f"{t.n_checked}" if t.n_checked == t.n_elements else f"{t.n_checked}/{t.n_elements}"
        table.add_row(
            t.name,
            "x".join(map(str, t.shape)) or "scalar",
            checked,
            _num(t.max_rel_error),
            _num(t.mean_rel_error),
            _num(t.max_abs_error),
            _counts(t),
            str(list(t.worst_index)) if t.worst_index is not None else "-",
            f"{t.analytic:.6g}" if t.analytic is not None else "-",
            f"{t.numeric:.6g}" if t.numeric is not None else "-",
            Text(t.status, style=STYLE[t.status]),
        )
    return table


def caption(report: Report) -> str:
    c = report.config
    ref = f" (numeric in {c['reference_dtype']})" if c.get("reference_dtype") not in (None, c.get("dtype")) else ""
    tm = report.timing
    path = "batched" if tm.get("batched") else "loop"
    return (
        f"dtype {c['dtype']}{ref} · device {c['device']} · eps {c['eps']:g} · rtol {c['rtol']:g} · atol {c['atol']:g} · "
        f"seed {c['seed']} · losses {'+'.join(c['losses'])} · kinks {c['kinks']} · "
        f"{tm.get('points_evaluated', 0)} evaluations ({path}) in {tm.get('check_s', 0):.2f}s"
    )


def verdict_line(report: Report) -> Text:
    n = len(report.tensors)
    checked = sum(t.n_checked for t in report.tensors)
    if report.interrupted:
        bad = [t.name for t in report.tensors if not t.passed]
        detail = f"; failing so far: {', '.join(bad)}" if bad else ""
        return Text.assemble(("INTERRUPTED", STYLE["NOISE"]), f": only {n} tensor(s) were checked before Ctrl-C{detail}.")
    if report.passed:
        return Text.assemble(("PASS", STYLE["PASS"]), f": all {n} tensor(s) match ({checked} elements checked).")
    failed = [t.name for t in report.tensors if t.status == "FAIL"]
    noisy = [t.name for t in report.tensors if t.status == "NOISE"]
    text = Text()
    if failed:
        text.append("FAIL", STYLE["FAIL"])
        text.append(f": {len(failed)} of {n} tensor(s) do not match: {', '.join(failed)}.")
        worst = report.worst
        if worst is not None and worst.worst_index is not None and worst.analytic is not None:
            text.append(
                f" Worst: {worst.name}{list(worst.worst_index)} analytic {worst.analytic:.6g} vs numeric "
                f"{worst.numeric:.6g} ({worst.loss} loss)."
            )
    if noisy:
        if failed:
            text.append(" ")
        text.append("INCONCLUSIVE", STYLE["NOISE"])
        text.append(
            f": {', '.join(noisy)} could not be verified: finite-difference noise is as large as the gradient "
            "(try --reference-dtype float64 or a larger --eps)."
        )
    return text


def detail_lines(report: Report) -> list[Text]:
    lines = []
    for t in report.tensors:
        if t.passed and not t.coverage:
            continue
        if not t.passed:
            losses = ", ".join(t.failed_losses) or "-"
            msg = f"  {t.name}: {t.n_failed} element(s) failed (caught by the {losses} loss)"
            if t.status == "NOISE":
                msg = f"  {t.name}: inconclusive, {t.counts.get('NOISE', 0)} of {t.n_checked} elements lost in finite-difference noise; try a larger --eps or --reference-dtype float64"
            lines.append(Text(msg, style=STYLE[t.status]))
            if t.diagnosis:
                lines.append(Text(f"    diagnosis: {t.diagnosis}"))
        if t.coverage:
            lines.append(Text(f"  {t.name}: {t.coverage}", style="dim"))
    for note in report.notes:
        lines.append(Text(f"  note: {note}", style="dim"))
    return lines


def render_report(console: Console, report: Report) -> None:
    console.print(Group(report_table(report), *detail_lines(report), verdict_line(report)))


def summary_table(rows: Sequence[dict[str, Any]]) -> Table:
    """One row per spec of a folder run."""
    table = Table(title="summary", title_justify="left")
    for col in ("spec", "result", "worst tensor", "worst rel err", "time"):
        table.add_column(col, justify="right" if col in ("worst rel err", "time") else "left")
    for row in rows:
        status = row["status"]
        table.add_row(
            row["spec"],
            Text(status, style=STYLE.get(status, "")),
            row.get("worst_tensor") or "-",
            _num(row.get("worst_rel_error")),
            f"{row.get('time', 0.0):.2f}s",
        )
    return table


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)

"""Step 5: the frozen result of a check, and of a run of several.  No printing here: see render.py.

:class:`Report` is one layer's check; :class:`SuiteResult` is what happened to one
target or spec (a report, or the error that stopped it); :class:`RunResult` is a
whole ``gradcheck run`` -- the one thing every reporter (table, JSON, JUnit) and the
exit code are derived from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .errors import GradcheckError

if TYPE_CHECKING:
    import numpy as np

    from .source import Source

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

# What a check can compare (Report.checks, TensorReport.check), and how a tensor of each is labelled.
CHECKS = ("backward", "reference", "forward_ad", "double_backward")
CHECK_LABELS = {"backward": "", "reference": "", "forward_ad": "forward AD", "double_backward": "double backward"}


def check_label(name: str, check: str) -> str:
    """A tensor's name in a report: 'x' for the backward, 'x (double backward)' for another check of it."""
    label = CHECK_LABELS[check]
    return f"{name} ({label})" if label else name


@dataclass(frozen=True)
class TensorReport:
    """How one checked tensor (an input, a parameter, or an output compared with a reference) fared.

    ``name`` is unique in its report: the tensor's own name for the backward check, with the
    check in brackets for the others (``x (double backward)``); ``tensor`` is the name
    ``--only`` takes to check it again ("" where none does: the output gradient of a double
    backward check, an output). ``check`` is one of :data:`CHECKS`.

    The headline numbers (errors, worst element, analytic and numeric values)
    are those of the loss that did worst on this tensor, named in ``loss``.
    ``analytic_grad``/``numeric_grad``/``verdicts`` are full arrays in the
    tensor's own shape (NaN / -1 where an element was not checked; NaN numeric and PASS
    for the elements of a set cleared by set testing, which has no per-element value).
    ``sets`` is set for a tensor checked by sets (see sets.py): tests run, directions per
    set and the miss probability, elements cleared and measured alone, the bound a cleared
    set puts on every element's |analytic - numeric| (per loss), and why splitting stopped.
    """

    name: str
    kind: str  # "input", "parameter" or "output"
    shape: tuple[int, ...]
    n_elements: int
    n_checked: int
    counts: dict[str, int]
    max_rel_error: float
    mean_rel_error: float
    max_abs_error: float
    worst_index: tuple[int, ...] | None
    analytic: float | None
    numeric: float | None
    loss: str
    failed_losses: tuple[str, ...] = ()
    diagnosis: str | None = None
    coverage: str | None = None
    analytic_grad: np.ndarray | None = field(default=None, repr=False, compare=False)
    numeric_grad: np.ndarray | None = field(default=None, repr=False, compare=False)
    verdicts: np.ndarray | None = field(default=None, repr=False, compare=False)
    kink_slopes: np.ndarray | None = field(default=None, repr=False, compare=False)  # (*shape, 2): one-sided slopes at kinks
    kinks_fail: bool = False
    aliases: tuple[str, ...] = ()  # other names of the tensor (input0: its position), as --only takes them
    time: float = 0.0  # seconds spent checking this tensor (the shared base point and plan are the report's)
    check: str = "backward"
    tensor: str | None = None  # None: the same as ``name``
    oracle: str = "numeric"  # what the analytic values were compared with: "numeric" (finite differences) or "reference"

    @property
    def only_name(self) -> str:
        """The name --only takes to check this tensor again ("" for none)."""
        return self.name if self.tensor is None else self.tensor
    sets: Mapping[str, Any] | None = None

    @property
    def n_failed(self) -> int:
        return self.counts.get("FAIL", 0) + (self.counts.get("KINK", 0) if self.kinks_fail else 0)

    @property
    def inconclusive(self) -> bool:
        """Most checked elements were lost in finite-difference noise: nothing was verified."""
        return self.n_checked > 0 and self.counts.get("NOISE", 0) * 2 > self.n_checked

    @property
    def passed(self) -> bool:
        return self.n_failed == 0 and not self.inconclusive

    @property
    def status(self) -> str:
        if self.n_failed:
            return "FAIL"
        return "NOISE" if self.inconclusive else "PASS"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tensor": self.only_name,
            "check": self.check,
            "oracle": self.oracle,
            "aliases": list(self.aliases),
            "kind": self.kind,
            "shape": list(self.shape),
            "passed": self.passed,
            "status": self.status,
            "n_elements": self.n_elements,
            "n_checked": self.n_checked,
            "n_failed": self.n_failed,
            "counts": dict(self.counts),
            "max_rel_error": self.max_rel_error,
            "mean_rel_error": self.mean_rel_error,
            "max_abs_error": self.max_abs_error,
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "analytic": self.analytic,
            "numeric": self.numeric,
            "loss": self.loss,
            "failed_losses": list(self.failed_losses),
            "diagnosis": self.diagnosis,
            "coverage": self.coverage,
            "time_s": round(self.time, 6),
            "sets": dict(self.sets) if self.sets is not None else None,
        }


@dataclass(frozen=True)
class Report:
    """The result of checking one layer.  ``passed`` is the verdict a CI job wants."""

    target: str
    tensors: tuple[TensorReport, ...]
    config: dict[str, Any]
    timing: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    interrupted: bool = False  # stopped by Ctrl-C: covers only the tensors listed
    info: tuple[str, ...] = ()  # those of the notes that say nothing is wrong (how points were evaluated)
    source: Source | None = None  # where the layer's gradient is written (its backward, else forward)
    skipped: tuple[str, ...] = ()  # tensors --only left out
    checks: tuple[str, ...] = ("backward",)  # what was compared (CHECKS), in the order the tensors are listed

    @property
    def passed(self) -> bool:
        return not self.interrupted and all(t.passed for t in self.tensors)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The notes worth reading whatever the verdict: all but the informational ones (shown with -v)."""
        return tuple(n for n in self.notes if n not in self.info)

    def notes_shown(self, verbose: bool) -> tuple[str, ...]:
        return self.notes if verbose else self.warnings

    @property
    def worst(self) -> TensorReport | None:
        """The failing tensor with the largest error, else the tensor with the largest error."""
        if not self.tensors:
            return None
        return max(self.tensors, key=lambda t: (not t.passed, t.max_rel_error))

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "passed": self.passed,
            "interrupted": self.interrupted,
            "checks": list(self.checks),
            "tensors": [t.to_dict() for t in self.tensors],
            "config": dict(self.config),
            "timing": dict(self.timing),
            "notes": list(self.notes),
            "info_notes": list(self.info),
            "source": self.source.to_dict() if self.source is not None else None,
            "skipped": list(self.skipped),
        }

    def __repr__(self) -> str:
        """One short line (pytest shows the repr of an assert message object, cut to 240 characters)."""
        if self.passed:
            return f"<gradcheck {self.target}: PASS, {len(self.tensors)} tensor(s)>"
        bad = [t for t in self.tensors if not t.passed]
        worst = self.worst
        where = ""
        if worst is not None and worst.worst_index is not None and worst.analytic is not None:
            where = f"; worst {worst.name}{list(worst.worst_index)} analytic {worst.analytic:.4g} vs {worst.oracle} {worst.numeric:.4g}"
        state = "INTERRUPTED" if self.interrupted else "FAIL"
        return f"<gradcheck {self.target}: {state} {', '.join(t.name for t in bad)}{where}>"

    def __str__(self) -> str:
        """Plain-text summary, so that ``assert report.passed, str(report)`` explains itself."""
        c = self.config
        lines = [
            f"gradcheck {self.target}: {'PASS' if self.passed else 'FAIL'} "
            f"(dtype {c.get('dtype')}, device {c.get('device')}, "
            + (f"reference {c['reference']}, " if c.get("reference") else "")
            + (f"eps {c['eps']:g}, " if c.get("eps") is not None else "")
            + f"rtol {c.get('rtol'):g}, atol {c.get('atol'):g}, seed {c.get('seed')})"
        ]
        for t in self.tensors:
            counts = " ".join(f"{k}={v}" for k, v in t.counts.items() if v)
            line = (
                f"  {t.name:<12} {t.status:<5} shape={list(t.shape)} checked={t.n_checked}/{t.n_elements} "
                f"max_rel={t.max_rel_error:.2e} {counts}"
            )
            if not t.passed and t.worst_index is not None:
                line += f"; worst {list(t.worst_index)}: analytic {t.analytic:.6g} vs {t.oracle} {t.numeric:.6g} ({t.loss} loss)"
            lines.append(line)
            if t.diagnosis and not t.passed:
                lines.append(f"    -> {t.diagnosis}")
        lines.extend(f"  note: {n}" for n in self.warnings)
        return "\n".join(lines)


def worst_element(t: TensorReport) -> str:
    """'x[1, 32] analytic -0.546 vs numeric 0.567 (l2 loss)', or '' when nothing was checked."""
    if t.worst_index is None or t.analytic is None:
        return ""
    if t.kind == "output":  # an output against the reference's: no loss, no gradient
        return f"{t.name}{list(t.worst_index)} layer {t.analytic:.6g} vs reference {t.numeric:.6g}"
    return f"{t.name}{list(t.worst_index)} analytic {t.analytic:.6g} vs {t.oracle} {t.numeric:.6g} ({t.loss} loss)"


def verdict_counts(t: TensorReport) -> str:
    """'120 pass, 8 fail, 0 kink, 0 noise'."""
    return ", ".join(f"{t.counts.get(k, 0)} {k.lower()}" for k in ("PASS", "FAIL", "KINK", "NOISE"))





@dataclass(frozen=True)
class SuiteResult:
    """What happened to one spec or target: a report, the error that stopped it, or why it was skipped."""

    name: str  # the spec path or target as given ('spec.yaml[seed=1]' for a combination of a matrix)
    report: Report | None = None
    error: GradcheckError | None = None
    time: float = 0.0  # seconds
    repro: Mapping[str, str] = field(default_factory=dict)  # tensor name -> command that reruns it
    signum: int | None = None  # the signal that interrupted it (SIGINT, SIGTERM), if one did
    skip_reason: str | None = None  # why a layer of a whole file was not checked (SKIPPED): neither passed nor failed
    matrix: Mapping[str, Any] = field(default_factory=dict)  # a combination of a spec's matrix: what its name says

    @property
    def interrupted(self) -> bool:
        return self.signum is not None or (self.report is not None and self.report.interrupted)

    @property
    def passed(self) -> bool:
        return self.error is None and self.report is not None and self.report.passed

    @property
    def status(self) -> str:
        """PASS, FAIL, NOISE (inconclusive), ERROR (could not be checked), SKIPPED or INTERRUPTED."""
        if self.interrupted:
            return "INTERRUPTED"
        if self.skip_reason is not None:
            return "SKIPPED"
        if self.error is not None or self.report is None:
            return "ERROR"
        if self.report.passed:
            return "PASS"
        return "FAIL" if any(t.status == "FAIL" for t in self.report.tensors) else "NOISE"

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + (self.signum or 2)
        if self.skip_reason is not None:
            return EXIT_PASS  # sets nothing: a run of skipped layers alone is refused before it ends (discover.py)
        if self.error is not None or self.report is None:
            return self.error.exit_code if self.error is not None else EXIT_USAGE
        return EXIT_PASS if self.report.passed else EXIT_FAIL

    def to_dict(self) -> dict[str, Any]:
        if self.report is not None:
            data = self.report.to_dict()
        else:
            data = {"target": self.name, "passed": False, "interrupted": self.interrupted, "tensors": []}
        data.update(status=self.status, exit_code=self.exit_code, error=str(self.error) if self.error is not None else None)
        if self.skip_reason is not None:
            data["skip_reason"] = self.skip_reason
        if self.matrix:
            data["matrix"] = dict(self.matrix)
        if self.signum is not None:
            data["interrupted"] = True
        return data


@dataclass(frozen=True)
class RunResult:
    """A whole run: one result per target or spec, in order.

    ``folder`` runs (a folder of specs, several targets) report as a list of specs;
    a single target reports as its own report. ``signum`` is set when a signal stopped
    the run before every target was checked.
    """

    results: tuple[SuiteResult, ...]
    folder: bool = False
    signum: int | None = None
    planned: int = 0  # targets the run meant to check (more than len(results) if interrupted)

    @property
    def interrupted(self) -> bool:
        return self.signum is not None or any(r.interrupted for r in self.results)

    @property
    def checked(self) -> tuple[SuiteResult, ...]:
        """The results that are not skipped."""
        return tuple(r for r in self.results if r.skip_reason is None)

    @property
    def passed(self) -> bool:
        return bool(self.checked) and not self.interrupted and all(r.passed for r in self.checked)

    @property
    def exit_code(self) -> int:
        if self.signum is not None:
            return 128 + self.signum
        interrupted = [r for r in self.results if r.interrupted]
        if interrupted:
            return interrupted[0].exit_code
        return max((r.exit_code for r in self.checked), default=EXIT_USAGE)

    def to_dict(self) -> dict[str, Any]:
        if not self.folder and len(self.results) == 1:
            data = self.results[0].to_dict()
            if self.signum is not None:
                data.update(interrupted=True, passed=False, exit_code=self.exit_code)
            return data
        specs = [{"spec": r.name, **r.to_dict()} for r in self.results]
        return {"passed": self.passed, "interrupted": self.interrupted, "exit_code": self.exit_code, "specs": specs}

    def to_json(self) -> str:
        return to_json(self.to_dict())


def to_json(data: Any) -> str:
    """Strict JSON (RFC 8259): no bare NaN or Infinity -- a non-finite number is written as null."""
    return json.dumps(_strict(data), indent=2, allow_nan=False, ensure_ascii=False)


def _strict(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):  # numpy and torch scalars and arrays
        return _strict(obj.tolist())
    return str(obj)

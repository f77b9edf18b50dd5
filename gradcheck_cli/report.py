"""Step 5: the frozen result of a check.  No printing here: see render.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fd import FAIL, KINK, NOISE, PASS, VERDICT_NAMES


@dataclass(frozen=True)
class TensorReport:
    """How one checked tensor (an input or a parameter) fared.

    The headline numbers (errors, worst element, analytic and numeric values)
    are those of the loss that did worst on this tensor, named in ``loss``.
    ``analytic_grad``/``numeric_grad``/``verdicts`` are full arrays in the
    tensor's own shape (NaN / -1 where an element was not checked).
    """

    name: str
    kind: str  # "input" or "parameter"
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
    kinks_fail: bool = False

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

    @property
    def passed(self) -> bool:
        return not self.interrupted and all(t.passed for t in self.tensors)

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
            "tensors": [t.to_dict() for t in self.tensors],
            "config": dict(self.config),
            "timing": dict(self.timing),
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        """One short line (pytest shows the repr of an assert message object, cut to 240 characters)."""
        if self.passed:
            return f"<gradcheck {self.target}: PASS, {len(self.tensors)} tensor(s)>"
        bad = [t for t in self.tensors if not t.passed]
        worst = self.worst
        where = ""
        if worst is not None and worst.worst_index is not None and worst.analytic is not None:
            where = f"; worst {worst.name}{list(worst.worst_index)} analytic {worst.analytic:.4g} vs numeric {worst.numeric:.4g}"
        state = "INTERRUPTED" if self.interrupted else "FAIL"
        return f"<gradcheck {self.target}: {state} {', '.join(t.name for t in bad)}{where}>"

    def __str__(self) -> str:
        """Plain-text summary, so that ``assert report.passed, str(report)`` explains itself."""
        c = self.config
        lines = [
            f"gradcheck {self.target}: {'PASS' if self.passed else 'FAIL'} "
            f"(dtype {c.get('dtype')}, device {c.get('device')}, eps {c.get('eps'):g}, "
            f"rtol {c.get('rtol'):g}, atol {c.get('atol'):g}, seed {c.get('seed')})"
        ]
        for t in self.tensors:
            counts = " ".join(f"{k}={v}" for k, v in t.counts.items() if v)
            line = (
                f"  {t.name:<12} {t.status:<5} shape={list(t.shape)} checked={t.n_checked}/{t.n_elements} "
                f"max_rel={t.max_rel_error:.2e} {counts}"
            )
            if not t.passed and t.worst_index is not None:
                line += f"; worst {list(t.worst_index)}: analytic {t.analytic:.6g} vs numeric {t.numeric:.6g} ({t.loss} loss)"
            lines.append(line)
            if t.diagnosis and not t.passed:
                lines.append(f"    -> {t.diagnosis}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def count_verdicts(codes: np.ndarray) -> dict[str, int]:
    return {VERDICT_NAMES[c]: int((codes == c).sum()) for c in (PASS, FAIL, KINK, NOISE)}

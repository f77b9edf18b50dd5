"""One checked tensor: its elements' verdicts, from the first pass to the :class:`TensorReport`.

Every planned element gets a first-pass verdict from its slopes at h (see
:mod:`.rules`); elements that look wrong are re-evaluated at 2h and h/2 and confirmed;
kinks shared by several elements are moved together (see :mod:`.kinks`). The numbers
of the loss that did worst become the tensor's headline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import kinks
from .analytic import Analytic
from .fd import LOSSES, Differences
from .grouping import REEVALUATE_MAX
from .options import CheckOptions
from .plan import TensorPlan, grouped_first
from .reference import NumericSide
from .report import TensorReport
from .rules import Judge, combine, relative_error
from .sampling import coverage_note
from .subject import Leaf
from .verdicts import FAIL, KINK, UNCHECKED, count


@dataclass(frozen=True)
class TensorOutcome:
    report: TensorReport
    notes: tuple[str, ...] = field(default=())


@dataclass
class Elements:
    """One loss's numbers over the checked elements (position p is flat index idx[p]); filled in as the check goes."""

    analytic: torch.Tensor
    numeric: torch.Tensor
    verdict: torch.Tensor
    allowance: torch.Tensor  # what the analytic value may be off by without a bug (Analytic.allowance)
    slopes: torch.Tensor | None = None  # (n, 2): one-sided slopes where an element sits at a kink (else NaN)


def check_tensor(leaf: Leaf, planned: TensorPlan, numeric: NumericSide, analytic: Analytic, opts: CheckOptions, advance: Callable[[int], None]) -> TensorOutcome:
    grads = {loss: analytic.grads[leaf.name][loss] for loss in (LOSSES if opts.weighted_loss else ("l2",))}
    work = _Work(leaf, tuple(grads["l2"].shape), planned, numeric, opts.seed)
    if planned.first_pass is not None:
        first = planned.first_pass
        advance(len(planned.indices))
    else:
        first = numeric.singles(leaf, list(planned.indices), numeric.steps.eps, advance)
    elements, judges = {}, {}
    for loss, grad in grads.items():
        a = grad.reshape(-1)[work.index]
        allowance = analytic.allowance(leaf.name, loss).reshape(-1)[work.index]
        judges[loss] = Judge(numeric.steps.rtol, numeric.steps.atol, _largest(a, first[loss].central), analytic.layer_scale[loss])
        elements[loss] = Elements(a, first[loss].central.clone(), judges[loss].first_pass(a, first[loss], allowance), allowance)
    work.confirm(first, elements, judges)
    notes = _notes(leaf, work.shape, planned.indices, elements["l2"])
    notes += _not_reentrant(leaf, analytic, work.index, elements)
    if planned.stride != 1:  # stride 1: no two elements share an output
        verdicts = {k: e.verdict for k, e in elements.items()}
        joint = kinks.check_joint(leaf, planned.indices, verdicts, {k: e.analytic for k, e in elements.items()}, numeric, judges)
        kinks.apply(verdicts, joint)
        notes += joint.notes
    return TensorOutcome(tensor_report(leaf, work.shape, planned.indices, elements, grads, opts.kinks == "fail"), notes)


@dataclass(frozen=True)
class _Work:
    """One tensor's check: what every step of it needs."""

    leaf: Leaf
    shape: tuple[int, ...]
    planned: TensorPlan
    numeric: NumericSide
    seed: int

    @property
    def index(self) -> torch.Tensor:
        return torch.tensor(self.planned.indices, device=self.numeric.placement.acc, dtype=torch.long)

    def confirm(self, first: dict[str, Differences], elements: dict[str, Elements], judges: dict[str, Judge]) -> None:
        """Re-evaluate the flagged elements at 2h and h/2 and replace their verdicts and numeric values."""
        flagged = torch.zeros(len(self.planned.indices), dtype=torch.bool, device=self.numeric.placement.acc)
        for e in elements.values():
            flagged |= e.verdict == FAIL
        positions = torch.nonzero(flagged).reshape(-1)
        if positions.numel() == 0:
            return
        members = [self.planned.indices[p] for p in positions.tolist()]
        h = self.numeric.steps.eps
        grouped = self.planned.first_pass is not None
        # A few flagged elements are confirmed one at a time, the grouped first pass included, so
        # that no verdict rests on grouping alone; many (a wrong backward) are confirmed in groups.
        regroup = grouped and len(members) > REEVALUATE_MAX

        def slopes(step: float, k: int) -> dict[str, Differences]:
            got = grouped_first(self.numeric, self.leaf, members, step, None, self.seed + 2 + k) if regroup else None
            return got.first_pass if got is not None and got.first_pass is not None else self.numeric.singles(self.leaf, members, step)

        single = slopes(h, 0) if grouped and not regroup else None
        double, half = slopes(2 * h, 1), slopes(h / 2, 2)
        for loss, e in elements.items():
            d1 = single[loss] if single is not None else first[loss].select(positions)
            got = judges[loss].confirm(e.analytic[positions], d1, double[loss], half[loss], e.allowance[positions])
            e.numeric[positions] = got.numeric
            e.verdict[positions] = got.verdict
            e.slopes = torch.full((len(e.verdict), 2), float("nan"), dtype=torch.float64, device=e.verdict.device)
            e.slopes[positions] = got.slopes


def _not_reentrant(leaf: Leaf, analytic: Analytic, index: torch.Tensor, elements: dict[str, Elements]) -> tuple[str, ...]:
    """Elements whose two backwards differ by more than nondeterminism explains: FAIL, said so."""
    differ = analytic.unstable[leaf.name].reshape(-1)[index]
    unstable = differ > 0
    if not bool(unstable.any()):
        return ()
    for e in elements.values():
        e.verdict[unstable] = FAIL
    return (
        f"{leaf.name}: backward is not reentrant: two calls at the same point differ by up to {float(differ.max()):.3g} "
        f"({int(unstable.sum())} element(s)), far more than nondeterminism explains (does it keep state between calls?): FAIL",
    )


def _notes(leaf: Leaf, shape: tuple[int, ...], idx: tuple[int, ...], e: Elements) -> tuple[str, ...]:
    notes = []
    broken = torch.nonzero(~torch.isfinite(e.analytic)).reshape(-1).tolist()
    if broken:
        where = [list(np.unravel_index(idx[p], shape)) if shape else [] for p in broken[:3]]
        more = f" and {len(broken) - 3} more element(s)" if len(broken) > 3 else ""
        notes.append(
            f"{leaf.name}: the analytic gradient (the backward's result) is NaN or infinite at "
            f"{', '.join(str([int(i) for i in w]) for w in where)}{more}: FAIL"
        )
    outside = int((~torch.isfinite(e.numeric)).sum())
    if outside:
        notes.append(
            f"{outside} element(s) of {leaf.name}: the layer returned NaN/Inf at x±h (the step leaves its domain?); "
            "reported NOISE. A smaller --eps may reach them"
        )
    return tuple(notes)


def tensor_report(leaf: Leaf, shape: tuple[int, ...], idx: tuple[int, ...], elements: dict[str, Elements], grads: dict[str, torch.Tensor], kinks_fail: bool) -> TensorReport:
    """The tensor's report: the headline numbers are those of the loss that did worst."""
    n = len(idx)
    stats = {}
    for loss, e in elements.items():
        # Errors at kinks are expected, and an element with no finite estimate has none:
        # they are counted, not folded into the error statistics.
        rel = relative_error(e.analytic, e.numeric, _largest(e.analytic, e.numeric))
        rel = torch.where((e.verdict == KINK) | ~torch.isfinite(rel), 0.0, rel)
        rel = torch.where(torch.isfinite(e.analytic), rel, float("inf"))  # a NaN/Inf backward is as wrong as it gets
        stats[loss] = rel
    losses = list(elements)
    headline = max(losses, key=lambda loss: (int((elements[loss].verdict == FAIL).sum()), float(stats[loss].max()) if n else 0.0))
    e, rel = elements[headline], stats[headline]
    # Like the relative error: a KINK element's difference is expected and not an error.
    abs_err = torch.where(e.verdict == KINK, 0.0, (e.analytic - e.numeric).abs()).nan_to_num(nan=0.0)
    worst_index, analytic_v, numeric_v = None, None, None
    if n:
        pool = torch.nonzero(e.verdict == FAIL).reshape(-1)
        if pool.numel() == 0:
            pool = torch.arange(n, device=rel.device)
        worst = int(pool[rel[pool].argmax()].item())
        worst_index = tuple(int(i) for i in np.unravel_index(idx[worst], shape)) if shape else ()
        analytic_v, numeric_v = float(e.analytic[worst].item()), float(e.numeric[worst].item())
    n_elements = int(np.prod(shape)) if shape else 1
    verdicts = _scattered(combine([x.verdict for x in elements.values()]), idx, n_elements, UNCHECKED).astype(np.int64).reshape(shape)
    counts = count(verdicts)
    return TensorReport(
        name=leaf.name,
        kind="parameter" if leaf.kind == "param" else "input",
        shape=shape,
        n_elements=n_elements,
        n_checked=n,
        counts=counts,
        max_rel_error=float(rel.max().item()) if n else 0.0,
        mean_rel_error=float(rel.mean().item()) if n else 0.0,
        max_abs_error=float(abs_err.max().item()) if n else 0.0,
        worst_index=worst_index,
        analytic=analytic_v,
        numeric=numeric_v,
        loss=headline,
        failed_losses=tuple(loss for loss in losses if bool((elements[loss].verdict == FAIL).any())),
        coverage=coverage_note(n, n_elements, counts["FAIL"]),
        analytic_grad=grads[headline].cpu().numpy(),
        numeric_grad=_scattered(e.numeric, idx, n_elements, float("nan")).reshape(shape),
        kink_slopes=None if e.slopes is None else np.stack([_scattered(e.slopes[:, j], idx, n_elements, float("nan")) for j in (0, 1)], -1).reshape(*shape, 2),
        verdicts=verdicts,
        kinks_fail=kinks_fail,
        aliases=leaf.aliases,
    )


def _scattered(values: torch.Tensor, idx: tuple[int, ...], n: int, fill: float) -> np.ndarray:
    """A full-length array: ``values`` at the flat indices ``idx``, ``fill`` elsewhere."""
    out = np.full(n, fill, dtype=np.float64 if values.is_floating_point() else np.int64)
    out[list(idx)] = values.cpu().numpy()
    return out


def _largest(*tensors: torch.Tensor) -> float:
    """The largest finite magnitude among the tensors (0 for none)."""
    return max((float(t.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs().max()) for t in tensors if t.numel()), default=0.0)

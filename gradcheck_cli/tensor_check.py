"""One checked tensor: its elements' verdicts, from the first pass to the :class:`TensorReport`.

Every planned element gets a first-pass verdict from its slopes at h (see
:mod:`.rules`); elements that look wrong are re-evaluated at 2h and h/2 and confirmed;
kinks shared by several elements are moved together (see :mod:`.kinks`). The numbers
of the loss that did worst become the tensor's headline.

A tensor the plan gives to sets (see :mod:`.sets`) is cleared set by set; the elements
that bisection hands back are measured alone and judged exactly like the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import bisection, calibrate, kinks, sets
from .analytic import Analytic
from .fd import LOSSES, Differences
from .grouping import REEVALUATE_MAX
from .inputs import torch_dtype
from .numeric import NumericSide
from .options import CheckOptions
from .plan import TensorPlan, grouped_first
from .report import TensorReport
from .rules import Judge, combine, largest, relative_error
from .sampling import coverage_note
from .subject import Leaf
from .verdicts import FAIL, KINK, NOISE, PASS, UNCHECKED, count


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
    work = _Work(leaf, tuple(grads["l2"].shape), planned, numeric, opts.seed, opts.kinks == "fail")
    if planned.by_sets:
        return _by_sets(work, grads, analytic, opts, advance)
    if planned.first_pass is not None:
        first = planned.first_pass
        advance(len(planned.indices))
    else:
        first = numeric.singles(leaf, list(planned.indices), numeric.steps.eps, advance)
    elements, judges = {}, {}
    for loss, grad in grads.items():
        a = grad.reshape(-1)[work.index]
        allowance = analytic.allowance(leaf.name, loss).reshape(-1)[work.index]
        judges[loss] = Judge(numeric.steps.rtol, numeric.steps.atol, largest(a, first[loss].central), analytic.layer_scale[loss])
        elements[loss] = Elements(a, first[loss].central.clone(), judges[loss].first_pass(a, first[loss], allowance), allowance)
    by = work.confirm(planned.indices, first, elements, judges, grouped=planned.first_pass is not None)
    notes = _notes(leaf, work.shape, planned.indices, elements["l2"]) + _noise_note(leaf, by)
    notes += _not_reentrant(leaf, analytic, work.index, elements)
    notes += _joint_kinks(work, planned.indices, elements, judges)
    return TensorOutcome(tensor_report(leaf, work.shape, planned.indices, elements, grads, opts.kinks == "fail"), notes)


def _joint_kinks(work: "_Work", idx: tuple[int, ...], elements: dict[str, Elements], judges: dict[str, Judge]) -> tuple[str, ...]:
    """Kinks shared by several elements, moved together (see kinks.py); not at stride 1, where no two elements share an output."""
    if work.planned.stride == 1 or not idx:
        return ()
    verdicts = {k: e.verdict for k, e in elements.items()}
    joint = kinks.check_joint(work.leaf, idx, verdicts, {k: e.analytic for k, e in elements.items()}, work.numeric, judges)
    kinks.apply(verdicts, joint)
    return joint.notes


def _by_sets(work: "_Work", grads: dict[str, torch.Tensor], analytic: Analytic, opts: CheckOptions, advance: Callable[[int], None]) -> TensorOutcome:
    """Clear the tensor set by set (sets.py); the elements bisection hands back are measured and judged alone."""
    leaf, numeric = work.leaf, work.numeric
    allowance = {loss: analytic.allowance(leaf.name, loss).reshape(-1) for loss in grads}
    sides = sets.sides_of(grads, allowance, numeric.steps.rtol, numeric.steps.atol, analytic.layer_scale, torch.finfo(torch_dtype(opts.dtype)).eps)
    flat = {loss: side.analytic for loss, side in sides.items()}
    scale = {loss: side.scale for loss, side in sides.items()}
    measured: list[int] = []
    parts: list[dict[str, Elements]] = []
    noisier: dict[str, float] = {}
    unstable: list[str] = []

    def measure(members: list[int]) -> bisection.Measured:
        index = torch.tensor(members, device=numeric.placement.acc, dtype=torch.long)
        first = numeric.singles(leaf, members, numeric.steps.eps)
        elements, judges = {}, {}
        for loss, a_all in flat.items():
            a = a_all[index]
            judges[loss] = Judge(numeric.steps.rtol, numeric.steps.atol, max(scale[loss], largest(first[loss].central)), analytic.layer_scale[loss])
            allowed = allowance[loss][index]
            elements[loss] = Elements(a, first[loss].central.clone(), judges[loss].first_pass(a, first[loss], allowed), allowed)
        unstable.extend(_not_reentrant(leaf, analytic, index, elements))
        for loss, f in work.confirm(tuple(members), first, elements, judges, grouped=False).items():
            noisier[loss] = max(noisier.get(loss, 1.0), f)
        measured.extend(members)
        parts.append(elements)
        verdict = combine([e.verdict for e in elements.values()])
        return bisection.Measured(int((verdict == FAIL).sum()), int((verdict == NOISE).sum()))

    tester = sets.SetTester(numeric, leaf, sides, opts.seed + 3)
    found = bisection.explore(tester, work.shape, measure, advance, work.planned.leaf or bisection.LEAF, opts.seed + 4)
    idx = tuple(measured)
    elements = {loss: _joined([p[loss] for p in parts], numeric.placement.acc) for loss in flat}
    judges = {loss: Judge(numeric.steps.rtol, numeric.steps.atol, max(scale[loss], largest(elements[loss].numeric)), analytic.layer_scale[loss]) for loss in flat}
    notes = (_notes(leaf, work.shape, idx, elements["l2"]) if idx else ()) + _noise_note(leaf, noisier) + tuple(dict.fromkeys(unstable))
    notes += _joint_kinks(work, idx, elements, judges)
    notes += (_sets_note(leaf, work.shape, found, idx),) + _noise_note(leaf, dict(found.noise_by))
    report = tensor_report(leaf, work.shape, idx, elements, grads, opts.kinks == "fail", found)
    return TensorOutcome(report, notes)


def _joined(parts: list[Elements], device: torch.device) -> Elements:
    """The elements measured in several batches, as one."""
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64, device=device)
        return Elements(empty, empty.clone(), torch.zeros(0, dtype=torch.long, device=device), empty.clone())
    joined = Elements(*(torch.cat([getattr(p, f) for p in parts]) for f in ("analytic", "numeric", "verdict", "allowance")))
    if any(p.slopes is not None for p in parts):
        joined.slopes = torch.cat([p.slopes if p.slopes is not None else torch.full((len(p.verdict), 2), float("nan"), dtype=torch.float64, device=device) for p in parts])
    return joined


def _sets_note(leaf: Leaf, shape: tuple[int, ...], found: bisection.Exploration, idx: tuple[int, ...]) -> str:
    """What the sets checked, how, and what a cleared set guarantees; ``idx``: the elements measured alone."""
    n = int(np.prod(shape)) if shape else 1
    alone = len(idx)
    cleared = sum(hi - lo for lo, hi in found.cleared)
    bounds = ", ".join(f"{b:.2g} ({loss})" for loss, b in found.bound.items())
    text = (
        f"{leaf.name}: checked by sets: {found.tests} test(s) along {found.directions} random directions "
        f"({found.forwards} forwards) for {n} elements; {alone} element(s) measured alone"
    )
    if cleared:
        text += (
            f"; in the cleared sets every element's |analytic - numeric| is at most {bounds} "
            f"(twice the tolerance of the set's strictest element plus the set's noise), except with probability "
            f"2^-{sets.DIRECTIONS} per set"
        )
    if found.stopped:
        # As the coverage line counts them: neither in a cleared set nor measured alone (an unresolved
        # run's measured elements are checked).
        covered = np.zeros(n, dtype=bool)
        for lo, hi in found.cleared:
            covered[lo:hi] = True
        covered[list(idx)] = True
        text += f"; {found.stopped}: {int((~covered).sum())} of {n} element(s) left unchecked"
    return text + "; --sets off checks every element alone"


@dataclass(frozen=True)
class _Work:
    """One tensor's check: what every step of it needs."""

    leaf: Leaf
    shape: tuple[int, ...]
    planned: TensorPlan
    numeric: NumericSide
    seed: int
    kinks_fail: bool = False

    @property
    def index(self) -> torch.Tensor:
        return torch.tensor(self.planned.indices, device=self.numeric.placement.acc, dtype=torch.long)

    def confirm(
        self, idx: tuple[int, ...], first: dict[str, Differences], elements: dict[str, Elements], judges: dict[str, Judge], grouped: bool
    ) -> dict[str, float]:
        """Re-evaluate the flagged elements (position p is flat index idx[p]) at 2h and h/2; replace their verdicts and values.

        Returns, per loss, the factor by which the measured rounding noise exceeded the model's
        (see calibrate.py; 1.0 where nothing was measured or the model held)."""
        flagged = torch.zeros(len(idx), dtype=torch.bool, device=self.numeric.placement.acc)
        for e in elements.values():
            flagged |= e.verdict == FAIL
        positions = torch.nonzero(flagged).reshape(-1)
        by = {loss: 1.0 for loss in elements}
        if positions.numel() == 0:
            return by
        members = [idx[p] for p in positions.tolist()]
        h = self.numeric.steps.eps
        # A few flagged elements are confirmed one at a time, the grouped first pass included, so
        # that no verdict rests on grouping alone; many (a wrong backward) are confirmed in groups.
        regroup = grouped and len(members) > REEVALUATE_MAX

        def slopes(step: float, k: int) -> dict[str, Differences]:
            got = grouped_first(self.numeric, self.leaf, members, step, None, self.seed + 2 + k) if regroup else None
            return got.first_pass if got is not None and got.first_pass is not None else self.numeric.singles(self.leaf, members, step)

        single = slopes(h, 0) if grouped and not regroup else None
        double, half = slopes(2 * h, 1), slopes(h / 2, 2)
        steps = {loss: (single[loss] if single is not None else first[loss].select(positions), double[loss], half[loss]) for loss in elements}
        for attempt in range(2):  # the second, where a verdict might rest on rounding noise the model underestimates
            looks_wrong = torch.zeros_like(positions, dtype=torch.bool)
            failing = torch.zeros_like(positions, dtype=torch.bool)
            for loss, e in elements.items():
                d1, d2, dh = (calibrate.scaled(d, by[loss]) for d in steps[loss])
                got = judges[loss].confirm(e.analytic[positions], d1, d2, dh, e.allowance[positions])
                verdict = got.verdict
                e.numeric[positions] = got.numeric
                e.verdict[positions] = verdict
                e.slopes = torch.full((len(e.verdict), 2), float("nan"), dtype=torch.float64, device=e.verdict.device)
                e.slopes[positions] = got.slopes
                looks_wrong |= (verdict == FAIL) | (verdict == KINK)
                failing |= (verdict == FAIL) | ((verdict == KINK) & self.kinks_fail)
            if attempt or not bool(failing.any()):  # measured only where a verdict would fail the run
                break
            by = self.measured_noise(idx, members, looks_wrong, steps)
        return {loss: float(torch.as_tensor(f).max()) for loss, f in by.items()}

    def measured_noise(self, idx: tuple[int, ...], members: list[int], looks_wrong: torch.Tensor, steps: dict) -> dict[str, torch.Tensor]:
        """Per loss and flagged element: how many times the model's noise to allow (see calibrate.py).

        The elements that still FAIL or look like kinks (up to calibrate.MEASURED_MAX) are evaluated
        at h/4 and h/8, with others of the tensor to make CALIBRATION_POINTS: each gets its own
        measured factor (its slopes below h against its Richardson value from h and 2h), every
        flagged element at least the tensor's and the median measured."""
        chosen = torch.nonzero(looks_wrong).reshape(-1)[: calibrate.MEASURED_MAX]
        sample = [members[p] for p in chosen.tolist()]
        if len(sample) < calibrate.CALIBRATION_POINTS:
            taken = set(sample)
            others = [i for i in idx if i not in taken]
            picks = np.random.default_rng(self.seed + 5).permutation(len(others))[: calibrate.CALIBRATION_POINTS - len(sample)]
            sample += [others[p] for p in sorted(picks)]
        h = self.numeric.steps.eps
        fine, finer = (self.numeric.singles(self.leaf, sample, h * f) for f in calibrate.SMALL_STEPS)
        k = chosen.numel()
        out = {}
        for loss in steps:
            f, g = fine[loss], finer[loss]
            tensor_factor = calibrate.factor(calibrate.noise_ratio(f.central, g.central, f.noise, g.noise))
            per = torch.full_like(steps[loss][0].noise, tensor_factor)
            d1, d2, dh = (d.select(chosen) for d in steps[loss])
            coarse = d1.central + (d1.central - d2.central) / 3  # Richardson from h and 2h
            samples = [(dh.central, 0.5), (f.central[:k], calibrate.SMALL_STEPS[0]), (g.central[:k], calibrate.SMALL_STEPS[1])]
            own = calibrate.own_factor(samples, coarse, d1.noise)
            # Flagged elements beyond MEASURED_MAX: at least the typical (median) measured factor.
            per[looks_wrong] = torch.clamp(per[looks_wrong], min=float(own.median()) if own.numel() else 1.0)
            per[chosen] = torch.maximum(per[chosen], own)
            out[loss] = per
        return out


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


def _noise_note(leaf: Leaf, by: dict[str, float]) -> tuple[str, ...]:
    """Say where the measured rounding noise exceeded the model (see calibrate.py) and the verdicts used it."""
    worse = {loss: f for loss, f in by.items() if f > 1.0}
    if not worse:
        return ()
    what = ", ".join(f"{f:.3g}x ({loss})" for loss, f in worse.items())
    return (
        f"{leaf.name}: the rounding noise measured at steps below h is up to {what} the model's (outputs that share a "
        "rounded intermediate err together); what looked wrong was judged with it",
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


def tensor_report(
    leaf: Leaf,
    shape: tuple[int, ...],
    idx: tuple[int, ...],
    elements: dict[str, Elements],
    grads: dict[str, torch.Tensor],
    kinks_fail: bool,
    by_sets: bisection.Exploration | None = None,
) -> TensorReport:
    """The tensor's report: the headline numbers are those of the loss that did worst.

    ``idx`` are the elements measured alone; ``by_sets`` (a tensor checked by sets) adds the
    elements its cleared sets cover (PASS, no per-element numeric value) and says what is left.
    """
    n = len(idx)
    stats = {}
    for loss, e in elements.items():
        # Errors at kinks are expected, and an element with no finite estimate has none:
        # they are counted, not folded into the error statistics.
        rel = relative_error(e.analytic, e.numeric, largest(e.analytic, e.numeric))
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
    verdicts = np.full(n_elements, UNCHECKED, dtype=np.int64)
    max_rel = float(rel.max().item()) if n else 0.0
    mean_rel = float(rel.mean().item()) if n else 0.0
    max_abs = float(abs_err.max().item()) if n else 0.0
    checked, coverage, summary = n, None, None
    if by_sets is not None:
        for lo, hi in by_sets.cleared:
            verdicts[lo:hi] = PASS
        if not n:  # nothing measured alone: the headline is the cleared sets' directional errors
            max_rel = mean_rel = max(by_sets.rel.values(), default=0.0)
            max_abs = max(by_sets.abs.values(), default=0.0)
        summary = _sets_summary(by_sets, n)
    if n:
        verdicts[list(idx)] = combine([x.verdict for x in elements.values()]).cpu().numpy()
    verdicts = verdicts.reshape(shape)
    counts = count(verdicts)
    if by_sets is not None:
        checked = int((verdicts != UNCHECKED).sum())
        if checked < n_elements:
            coverage = f"{n_elements - checked} of {n_elements} elements not checked: {by_sets.stopped}"
    else:
        coverage = coverage_note(n, n_elements, counts["FAIL"])
    return TensorReport(
        name=leaf.name,
        kind="parameter" if leaf.kind == "param" else "input",
        shape=shape,
        n_elements=n_elements,
        n_checked=checked,
        counts=counts,
        max_rel_error=max_rel,
        mean_rel_error=mean_rel,
        max_abs_error=max_abs,
        worst_index=worst_index,
        analytic=analytic_v,
        numeric=numeric_v,
        loss=headline,
        failed_losses=tuple(loss for loss in losses if bool((elements[loss].verdict == FAIL).any())),
        coverage=coverage,
        analytic_grad=grads[headline].cpu().numpy(),
        numeric_grad=_scattered(e.numeric, idx, n_elements, float("nan")).reshape(shape),
        kink_slopes=None if e.slopes is None else np.stack([_scattered(e.slopes[:, j], idx, n_elements, float("nan")) for j in (0, 1)], -1).reshape(*shape, 2),
        verdicts=verdicts,
        kinks_fail=kinks_fail,
        aliases=leaf.aliases,
        sets=summary,
    )


def _sets_summary(found: bisection.Exploration, alone: int) -> dict:
    """The report's record of a tensor checked by sets (JSON: tensors[].sets)."""
    return {
        "tests": found.tests,
        "directions": found.directions,
        "directions_per_set": sets.DIRECTIONS,
        "miss_probability_per_set": 2.0 ** -sets.DIRECTIONS,
        "forwards": found.forwards,
        "cleared": sum(hi - lo for lo, hi in found.cleared),
        "measured_alone": alone,
        "bound": dict(found.bound),
        "noise_factor": dict(found.noise_by) or None,
        "stopped": found.stopped or None,
    }


def _scattered(values: torch.Tensor, idx: tuple[int, ...], n: int, fill: float) -> np.ndarray:
    """A full-length array: ``values`` at the flat indices ``idx``, ``fill`` elsewhere."""
    out = np.full(n, fill, dtype=np.float64 if values.is_floating_point() else np.int64)
    out[list(idx)] = values.cpu().numpy()
    return out


"""The check: the stages in order, from a layer and its inputs to a frozen :class:`Report`.

    load (load.py) -> subject (subject.py) -> base point and numeric side (reference.py)
      -> analytic side (analytic.py) -> plan (plan.py) -> each tensor (tensor_check.py)
      -> report (report.py), with diagnoses (diagnose.py)

Each stage takes the frozen results of the ones before and returns its own; the notes a
stage has for the report travel with its result. :func:`check` is the library entry
point: it never prints and never exits -- it returns a Report or raises a
:class:`~gradcheck_cli.errors.GradcheckError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch

from .analytic import Analytic, analytic_side
from .diagnose import diagnose
from .environment import Placement, deadline, default_device_set, interrupts, preserved_state, resolve_device
from .errors import SpecError, UsageError
from .evaluate import Evaluator
from .fd import LOSSES
from .guard import Guard
from .load import load_target
from .options import CheckOptions, check_option
from .plan import Plan, make_plan
from .reference import NumericSide, base_point, numeric_side
from .report import Report, TensorReport
from .rules import NOISE_SIGMAS, REL_FLOOR
from .spec import InputSpec, LayerSpec
from .subject import Subject, prepare
from .tensor_check import check_tensor
from .verdicts import FAIL

__all__ = ["Interrupted", "ProgressFn", "check", "check_spec", "spec_arguments"]

# progress(tensor_name, elements_done, elements_total, estimated_seconds_total); the name is ""
# when the plan is made (the estimate is then known), and before that when grouping runs long
# (a first estimate, which the plan's revises).
ProgressFn = Callable[[str, int, int, float], None]


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) during a check; ``report`` holds the tensors checked so far."""

    def __init__(self, report: Report, signum: int = 2) -> None:
        super().__init__("interrupted")
        self.report = report
        self.signum = signum


def check(
    layer: Any,
    inputs: Sequence[torch.Tensor | InputSpec | str | float] = (),
    *,
    args: Sequence = (),
    kwargs: dict | None = None,
    params: dict | None = None,
    name: str | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> Report:
    """Check a layer's hand-written backward element by element.

    ``layer`` is a Module (class or instance), an autograd.Function subclass, a
    callable of tensors, or a target string (``file.py:Name``, ``pkg.mod:Name``).
    ``inputs`` are tensors (copied, never modified), :class:`InputSpec`s, or
    ``--input``-style strings (``"2x64"``, ``"=4.5"``).  ``options`` are the
    fields of :class:`CheckOptions` (dtype, device, eps, rtol, atol, seed, ...).
    """
    opts = CheckOptions(**options)
    target = name or (layer if isinstance(layer, str) else _name_of(layer))
    placement = Placement.of(opts.device)
    if not placement.has_float64 and "float64" in (opts.dtype, opts.reference_dtype):
        raise UsageError("Apple MPS has no float64.", "Use --dtype float32 (and no --reference-dtype float64) with --device mps.")
    # Whatever the caller's context: gradcheck needs autograd (no_grad, inference_mode) and
    # tells a real Ctrl-C from a layer raising KeyboardInterrupt. Importing the layer file runs
    # it: its RNG use, chdir and default dtype are kept away from the caller's state too.
    with preserved_state(placement.device), interrupts(), torch.inference_mode(False), torch.enable_grad(), deadline(opts.timeout, target):
        obj = load_target(layer) if isinstance(layer, str) else layer
        _check_default_device(target)
        subject = prepare(obj, target, list(inputs), opts, placement, args=args, kwargs=kwargs, params=params)
        return _Run(subject, opts, placement, progress).report()


def check_spec(spec: LayerSpec, progress: ProgressFn | None = None, **overrides: Any) -> Report:
    """Check what a YAML spec describes; keyword ``overrides`` win over the spec's options."""
    options = spec.options_with(overrides)
    # The spec's own options are the spec's problem: its file and key are named.
    for key, value in spec.options.items():
        if options[key] is not value:
            continue
        try:
            check_option(key, value)
            if key == "device":
                resolve_device(value)
        except UsageError as exc:
            raise SpecError(spec.path, key, exc.detail, exc.hint) from None
    try:
        return check(spec.layer, list(spec.inputs), progress=progress, **spec_arguments(spec), **options)
    except SpecError:
        raise
    except UsageError as exc:
        # Problems with what the spec asked for (inputs, params, constructor args) name the spec file and key.
        if exc.key:
            raise SpecError(spec.path, exc.key, exc.detail, exc.hint) from exc
        raise


def spec_arguments(spec: LayerSpec) -> dict[str, Any]:
    """How a spec builds its layer: constructor args/kwargs, parameter values and a display name."""
    return {"args": tuple(spec.args), "kwargs": dict(spec.kwargs), "params": dict(spec.params), "name": spec.layer.rsplit("/", 1)[-1]}


def _check_default_device(target: str) -> None:
    """A layer file may set torch's default device at import (torch.set_default_device): it must exist."""
    default = default_device_set()
    if default is None or torch.device(default).type == "cpu":
        return
    try:
        resolve_device(str(default))
    except UsageError as exc:
        raise UsageError(
            f"Loading {target} set torch's default device to {str(default)!r} (torch.set_default_device), "
            f"which cannot be used here: {exc.message}",
            "Remove torch.set_default_device from the layer file (gradcheck places tensors itself: --device), "
            "or run where that device exists.",
        ) from None


def _name_of(obj: Any) -> str:
    if isinstance(obj, torch.nn.Module):
        return type(obj).__name__
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__


@dataclass(frozen=True)
class _Sides:
    """What the stages before the tensors produced."""

    evaluator: Evaluator
    numeric: NumericSide
    analytic: Analytic
    plan: Plan
    notes: tuple[str, ...]


class _Run:
    """The stages of one check, in order; a signal turns what is done so far into an interrupted report."""

    def __init__(self, subject: Subject, opts: CheckOptions, placement: Placement, progress: ProgressFn | None) -> None:
        self.subject, self.opts, self.placement, self.progress = subject, opts, placement, progress
        self.guard = Guard(subject.target, subject.sizes_hint)
        self.started = time.perf_counter()

    def report(self) -> Report:
        tensors: list[TensorReport] = []  # appended to as they finish: an interrupt keeps those done
        notes: list[str] = list(self.subject.notes)
        sides = None
        try:
            sides = self._sides()
            notes += sides.notes
            advance = self._advance(sides.plan)
            for leaf in self.subject.leaves:
                outcome = check_tensor(leaf, sides.plan.tensors[leaf.name], sides.numeric, sides.analytic, self.opts, lambda n, leaf=leaf: advance(leaf.name, n))
                tensors.append(outcome.report)
                notes += outcome.notes
        except KeyboardInterrupt as exc:  # a real signal (see guard.py), or Ctrl-C where gradcheck cannot tell
            notes.append(f"interrupted: {len(tensors)} of {len(self.subject.leaves)} tensor(s) checked")
            raise Interrupted(replace(self._assemble(tensors, notes, sides), interrupted=True), getattr(exc, "signum", 2)) from None
        return self._assemble(tensors, notes, sides)

    def _sides(self) -> _Sides:
        subject, opts, placement, guard = self.subject, self.opts, self.placement, self.guard
        evaluator = Evaluator(subject.layer, subject.layer.params, list(subject.inputs), opts.seed, placement.device, opts.batch)
        base = base_point(subject, evaluator, opts.seed, placement, guard)
        analytic = analytic_side(subject, base.weights, opts.weighted_loss, opts.seed, placement, guard)
        numeric = numeric_side(subject, evaluator, base, opts, placement, guard)
        plan = make_plan(subject, numeric, opts, base.forward_s, analytic, self.started, self.progress)
        if self.progress:
            self.progress("", 0, plan.total, plan.estimate_s)
        return _Sides(evaluator, numeric, analytic, plan, base.notes + analytic.notes + numeric.notes + plan.notes)

    def _advance(self, plan: Plan) -> Callable[[str, int], None]:
        """progress(tensor, elements done so far, ...) as elements are differenced."""
        done = [0]

        def advance(name: str, count: int) -> None:
            done[0] += count
            if self.progress:
                self.progress(name, done[0], plan.total, plan.estimate_s)

        return advance

    def _assemble(self, tensors: list[TensorReport], notes: list[str], sides: _Sides | None) -> Report:
        tensors = _with_diagnoses(tensors)
        timing: dict[str, Any] = {"check_s": round(time.perf_counter() - self.started, 4)}
        if sides is not None:
            notes = notes + list(_run_notes(sides, tensors, self.opts))
            ev, numeric = sides.evaluator, sides.numeric.evaluator
            timing.update(
                estimate_s=round(sides.plan.estimate_s, 4),
                forward_calls=ev.calls + (numeric.calls if numeric is not ev else 0),
                points_evaluated=numeric.points,
                batched=bool(numeric.batched),
                grouped={name: t.stride for name, t in sides.plan.tensors.items() if t.stride},
                sets={t.name: t.sets["tests"] for t in tensors if t.sets is not None},
            )
        return Report(self.subject.target, tuple(tensors), self._config(sides), timing, tuple(notes))

    def _config(self, sides: _Sides | None) -> dict[str, Any]:
        opts = self.opts
        steps = sides.numeric.steps if sides is not None else opts.resolved()
        dtype = str(sides.numeric.dtype).replace("torch.", "") if sides is not None else opts.reference_dtype or opts.dtype
        return {
            "dtype": opts.dtype,
            "reference_dtype": dtype,
            "device": str(self.placement.device),
            "seed": opts.seed,
            "eps": steps.eps,
            "rtol": steps.rtol,
            "atol": steps.atol,
            "kinks": opts.kinks,
            "weighted_loss": opts.weighted_loss,
            "losses": list(LOSSES if opts.weighted_loss else ("l2",)),
            "max_elements": opts.max_elements,
            "sets": opts.sets,
            "noise_sigmas": NOISE_SIGMAS,
            "rel_floor": REL_FLOOR,
        }


def _run_notes(sides: _Sides, tensors: list[TensorReport], opts: CheckOptions) -> list[str]:
    """What the report says about the whole run: buffers restored, the evaluation path, grouping, kinks."""
    notes = []
    numeric = sides.numeric.evaluator
    if numeric.mutated_buffers:
        notes.append(
            f"the forward updates buffer(s) {', '.join(numeric.mutated_buffers)} in place; they are restored "
            "before every evaluation, so every point sees the same state"
        )
    if numeric.batched is False and numeric.batch_note:
        notes.append(numeric.batch_note)
    for name, planned in sides.plan.tensors.items():
        if planned.stride:
            apart = "" if planned.stride == 1 else f" of any {planned.stride} apart"
            notes.append(
                f"{name}: elements moved in groups, each output credited to the one element{apart} it depends on "
                f"(verified): {planned.grouping.forwards} forwards instead of {2 * len(planned.indices)}; "
                "--no-grouping checks one element at a time"
            )
    kinks = sum(t.counts.get("KINK", 0) for t in tensors)
    if kinks and opts.kinks == "pass":
        notes.append(f"{kinks} element(s) sit at a kink (non-differentiable point); reported as KINK, not failed (--kinks fail to fail them)")
    return notes


def _with_diagnoses(reports: list[TensorReport]) -> list[TensorReport]:
    """Name the pattern of each failing tensor's errors (scaled, transposed, swapped, borders, ...)."""
    out = []
    for rep in reports:
        if rep.n_failed and rep.analytic_grad is not None:
            others = {r.name: r.numeric_grad for r in reports if r is not rep and r.loss == rep.loss}
            rep = replace(rep, diagnosis=diagnose(rep.analytic_grad, rep.numeric_grad, rep.verdicts == FAIL, others))
        out.append(rep)
    return out

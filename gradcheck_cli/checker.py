"""The check: the stages in order, from a layer and its inputs to a frozen :class:`Report`.

    load (load.py) -> subject (subject.py) -> base point and numeric side (numeric.py)
      -> analytic side (analytic.py) -> plan (plan.py) -> each tensor (tensor_check.py)
      -> report (report.py), with diagnoses (diagnose.py)

Each stage takes the frozen results of the ones before and returns its own; the notes a
stage has for the report travel with its result. :func:`check` is the library entry
point: it never prints and never exits -- it returns a Report or raises a
:class:`~gradcheck_cli.errors.GradcheckError`.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .analytic import Analytic, analytic_side
from .diagnose import diagnose
from .double_backward import backward_subject
from .environment import Interrupt, Placement, deadline, default_device_set, interrupts, preserved_state, resolve_device
from .errors import LayerError, OutOfMemory, SpecError, TimedOut, UsageError
from .evaluate import Evaluator
from .fd import LOSSES
from .forward_ad import forward_side
from .guard import Guard
from .inputs import torch_dtype
from .load import load_target, spec_imports
from .matrix import only_combination, spec_key
from .numeric import BasePoint, NumericSide, base_point, numeric_side
from .options import RENAMED, CheckOptions, check_option, current_names, options
from .oracle import ReferenceSide, compare, compare_outputs, reference_side, reference_subject
from .plan import Plan, TensorPlan, make_plan
from .report import Report, TensorReport, check_label
from .rules import NOISE_SIGMAS, REL_FLOOR
from .sampling import select
from .source import locate
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
    keywords: dict[str, Any] | None = None,
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
    ``inputs`` are the positional arguments: tensors (copied, never modified),
    :class:`InputSpec`s, ``--input``-style strings (``"2x64"``, ``"=4.5"``, ``"grid=1x8x8x2"``),
    numbers and lists of numbers (literal tensors), or lists/tuples holding tensors (passed
    as such). ``keywords`` are keyword arguments of the call: tensors, InputSpecs, or any
    other value passed as it is (``{"mode": "bilinear"}``). ``args``/``kwargs`` construct
    a Module class. ``options`` are the fields of :class:`CheckOptions` (dtype, device, eps,
    rtol, atol, seed, constant, only, ...).
    """
    options, renamed = current_names(options)
    for old in renamed:
        warnings.warn(f"{old!r} is now called {RENAMED[old]!r}; the old name still works but will be removed.", DeprecationWarning, stacklevel=2)
    opts = CheckOptions(**options)
    target = name or (layer if isinstance(layer, str) else _name_of(layer))
    placement = Placement.of(opts.device)
    if not placement.has_float64 and "float64" in (opts.dtype, opts.numeric_dtype):
        raise UsageError("Apple MPS has no float64.", "Use --dtype float32 (and no --numeric-dtype float64) with --device mps.")
    # Whatever the caller's context: gradcheck needs autograd (no_grad, inference_mode) and
    # tells a real Ctrl-C from a layer raising KeyboardInterrupt. Importing the layer file runs
    # it: its RNG use, chdir and default dtype are kept away from the caller's state too.
    with preserved_state(placement.device), interrupts(), torch.inference_mode(False), torch.enable_grad(), deadline(opts.timeout, target):
        obj = load_target(layer) if isinstance(layer, str) else layer
        _check_default_device(target)
        subject = prepare(obj, target, list(inputs), opts, placement, keywords=keywords, args=args, kwargs=kwargs, params=params)
        reference = None
        if opts.reference:
            reference, said = reference_subject(opts.reference, subject, torch_dtype(opts.dtype), args, kwargs, placement, Guard(f"reference {opts.reference}"))
            subject = replace(subject, notes=subject.notes + said)
        # Where the layer's gradient is written (CI annotations, JUnit) and what --only left out.
        return replace(_Run(subject, opts, placement, progress, reference).report(), source=locate(obj), skipped=subject.left_out)


def check_spec(spec: LayerSpec, progress: ProgressFn | None = None, **overrides: Any) -> Report:
    """Check what a YAML spec describes; keyword ``overrides`` win over the spec's options.

    A spec with a ``matrix`` of several combinations is several checks: check each of
    :func:`gradcheck_cli.matrix.combinations` (a UsageError says so)."""
    spec = only_combination(spec)
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
            raise SpecError(spec.path, spec_key(spec, key), exc.detail, exc.hint) from None
    try:
        # A dotted layer or reference means the same wherever gradcheck runs (see load.spec_imports).
        with spec_imports(spec.path):
            report = check(spec.layer, list(spec.inputs), progress=progress, **spec_arguments(spec), **options)
        said = tuple(f"{spec.path}: key {old!r} is now called {RENAMED[old]!r}; the old name still works but will be removed" for old in spec.old_names)
        return replace(report, notes=said + report.notes) if said else report
    except SpecError:
        raise
    except UsageError as exc:
        # Problems with what the spec asked for (inputs, params, constructor args) name the spec file and key.
        if exc.key and overrides.get(exc.key) is None:  # not about a value the caller (the command line) gave
            raise SpecError(spec.path, spec_key(spec, exc.key), exc.detail, exc.hint) from exc
        raise


def spec_arguments(spec: LayerSpec) -> dict[str, Any]:
    """How a spec builds its layer: constructor args/kwargs, parameter values and a display name
    (with the combination, for one of a matrix: 'gauss.py:GaussFilter[seed=1,dtype=float32]')."""
    name = spec.layer.rsplit("/", 1)[-1] + (f"[{spec.variant_name}]" if spec.variant_name else "")
    return {"args": tuple(spec.args), "kwargs": dict(spec.kwargs), "params": dict(spec.params), "name": name}


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
    """What the stages before the tensors produced: the numeric side and plan, or the reference's side."""

    evaluator: Evaluator
    base: BasePoint
    analytic: Analytic
    numeric: NumericSide | None  # None when a reference implementation is the oracle
    plan: Plan | None
    reference: ReferenceSide | None
    notes: tuple[str, ...]

    def indices(self, leaf, shape: tuple[int, ...], opts: CheckOptions) -> tuple[int, ...]:
        """The elements of ``leaf`` to check: the plan's, else (against a reference) the sample --max-elements allows."""
        return self.plan.tensors[leaf.name].indices if self.plan is not None else tuple(select(shape, opts.max_elements, opts.seed))


# What a stage yields: a finished tensor's report, or notes for the report (a tensor of None).
Stage = Iterator[tuple[TensorReport | None, tuple[str, ...]]]


class _Run:
    """The stages of one check, in order; a signal turns what is done so far into an interrupted report.

    The backward is compared with finite differences (or, with ``reference``, with the
    reference implementation's autograd); ``forward_ad`` adds the forward-mode check on
    the same numeric side, ``order`` 2 the double backward (a check of the backward itself,
    see double_backward.py).
    """

    def __init__(self, subject: Subject, opts: CheckOptions, placement: Placement, progress: ProgressFn | None, reference: Subject | None = None) -> None:
        self.subject, self.opts, self.placement, self.progress = subject, opts, placement, progress
        self.reference = reference
        self.guard = Guard(subject.target, subject.sizes_hint)
        self.started = time.perf_counter()

    @property
    def checks(self) -> tuple[str, ...]:
        opts = self.opts
        return ("reference" if self.reference is not None else "backward",) + ("forward_ad",) * opts.forward_ad + ("double_backward",) * (opts.order == 2)

    def report(self) -> Report:
        tensors: list[TensorReport] = []  # appended to as they finish: an interrupt keeps those done
        notes: list[str] = list(self.subject.notes)
        seconds: dict[str, float] = {}  # each check's own time, after the shared base point
        sides = None
        try:
            sides = self._sides()
            notes += sides.notes
            stages = [(self.checks[0], self._against_reference(sides) if sides.reference is not None else self._backward(sides))]
            stages += [("forward_ad", self._forward_ad(sides))] if self.opts.forward_ad else []
            stages += [("double_backward", self._double_backward(sides))] if self.opts.order == 2 else []
            for name, stage in stages:
                started = time.perf_counter()
                for tensor, said in stage:
                    if tensor is not None:
                        tensors.append(tensor)
                    notes += said
                seconds[name] = round(time.perf_counter() - started, 4)
        except KeyboardInterrupt as exc:  # a real signal (see guard.py), or Ctrl-C where gradcheck cannot tell
            planned = len(self.subject.leaves) * (1 + self.opts.forward_ad)
            also = " (and the double backward)" if self.opts.order == 2 else ""
            notes.append(f"interrupted: {len(tensors)} of {planned}{also} tensor(s) checked")
            raise Interrupted(replace(self._assemble(tensors, notes, sides, seconds), interrupted=True), getattr(exc, "signum", 2)) from None
        return self._assemble(tensors, notes, sides, seconds)

    def _sides(self) -> _Sides:
        subject, opts, placement, guard = self.subject, self.opts, self.placement, self.guard
        evaluator = Evaluator(subject.layer, subject.layer.params, subject.inputs, opts.seed, placement.device, opts.batch)
        base = base_point(subject, evaluator, opts.seed, placement, guard)
        analytic = analytic_side(subject, base.weights, opts.weighted_loss, opts.seed, placement, guard)
        if self.reference is not None:
            shapes = [tuple(y.shape) for y in guard("forward", _outputs_of, subject)]
            ref = reference_side(
                self.reference, base.y, shapes, base.weights, opts.weighted_loss, torch_dtype(opts.dtype), opts.seed, placement, Guard(f"reference {self.reference.target}")
            )
            note = f"compared with the reference {self.reference.target} (autograd, in {str(ref.dtype).replace('torch.', '')}); no finite differences"
            return _Sides(evaluator, base, analytic, None, None, ref, base.notes + analytic.notes + (note,))
        numeric = numeric_side(subject, evaluator, base, opts, placement, guard)
        plan = make_plan(subject, numeric, opts, base.forward_s, analytic, self.started, self.progress)
        if self.progress:
            self.progress("", 0, plan.total, plan.estimate_s)
        return _Sides(evaluator, base, analytic, numeric, plan, None, base.notes + analytic.notes + numeric.notes + plan.notes)

    def _backward(self, sides: _Sides) -> Stage:
        """Each tensor's backward against central differences."""
        assert sides.numeric is not None and sides.plan is not None
        advance = self._advance(sides.plan)
        for leaf in self.subject.leaves:
            started = time.perf_counter()
            outcome = check_tensor(leaf, sides.plan.tensors[leaf.name], sides.numeric, sides.analytic, self.opts, lambda n, leaf=leaf: advance(leaf.name, n))
            yield replace(outcome.report, time=time.perf_counter() - started), outcome.notes  # its own time (JUnit)

    def _against_reference(self, sides: _Sides) -> Stage:
        """The outputs, then each tensor's backward, against the reference implementation."""
        assert sides.reference is not None
        steps = self.opts.resolved(self.opts.dtype)
        outputs = compare_outputs(sides.base.y, sides.reference, torch_dtype(self.opts.dtype), steps.rtol, steps.atol)
        for t in outputs:
            yield replace(t, name=f"{t.name} (forward)", check="reference", tensor=""), ()
        if any(not t.passed for t in outputs):
            yield None, ("the forward differs from the reference's: the layer does not compute the same function (gradients compared anyway)",)
        yield from self._compared(sides, sides.analytic, "reference")

    def _compared(self, sides: _Sides, analytic: Analytic, check: str) -> Stage:
        assert sides.reference is not None
        steps = self.opts.resolved(self.opts.dtype)
        losses = LOSSES if self.opts.weighted_loss else ("l2",)
        for leaf in self.subject.leaves:
            started = time.perf_counter()
            shape = tuple(self.subject.tensor(leaf).shape)
            t = compare(
                leaf,
                shape,
                sides.indices(leaf, shape, self.opts),
                {loss: analytic.grads[leaf.name][loss] for loss in losses},
                sides.reference.grads[leaf.name],
                {loss: analytic.allowance(leaf.name, loss) for loss in losses},
                analytic.unstable[leaf.name],
                steps.rtol,
                steps.atol,
                analytic.layer_scale,
                self.opts.kinks == "fail",
            )
            ref = sides.reference.grads[leaf.name]["l2"].reshape(-1)
            broken = int((~torch.isfinite(ref)).sum())
            said = (f"{broken} element(s) of {leaf.name}: the reference's gradient is NaN or infinite there (not differentiable?); reported NOISE",) if broken and check == "reference" else ()
            yield replace(t, name=check_label(leaf.name, check), check=check, tensor=leaf.name, time=time.perf_counter() - started), said

    def _forward_ad(self, sides: _Sides) -> Stage:
        """Each element's forward-mode derivative (jvp), against the same numeric side (or the reference)."""
        shapes = {leaf.name: tuple(self.subject.tensor(leaf).shape) for leaf in self.subject.leaves}
        indices = {leaf.name: sides.indices(leaf, shapes[leaf.name], self.opts) for leaf in self.subject.leaves}
        if self.opts.budget is not None:
            # One dual forward an element (three below float64): what is left of --budget sets how many.
            left = max(self.opts.budget - (time.perf_counter() - self.started), self.opts.budget / 4)
            per = 3 if torch_dtype(self.opts.dtype) != torch.float64 else 1
            cap = max(1, int(left / max(sides.base.forward_s * per, 1e-9) / len(self.subject.leaves)))
            sampled = {name: idx for name, idx in indices.items() if len(idx) > cap}
            for name in sampled:
                chosen = set(indices[name])
                indices[name] = tuple(i for i in select(shapes[name], cap, self.opts.seed + 7) if i in chosen) or indices[name][:cap]
            if sampled:
                yield None, (f"--budget {self.opts.budget:g}s: forward AD sampled at most {cap} elements of {', '.join(sampled)}",)
        y = sides.base.y
        forward = forward_side(self.subject, indices, y, sides.base.weights, self.opts.weighted_loss, self.opts.seed, self.placement, self.guard)
        if sides.reference is not None:
            yield from self._compared(sides, forward, "forward_ad")
            return
        assert sides.numeric is not None and sides.plan is not None
        for leaf in self.subject.leaves:
            started = time.perf_counter()
            planned = _narrowed(sides.plan.tensors[leaf.name], indices[leaf.name])
            outcome = check_tensor(leaf, planned, sides.numeric, forward, self.opts, lambda n: None)
            report = replace(outcome.report, name=check_label(leaf.name, "forward_ad"), check="forward_ad", tensor=leaf.name, time=time.perf_counter() - started)
            yield report, tuple(note.replace(f"{leaf.name}: ", f"{report.name}: ", 1) for note in outcome.notes)

    def _double_backward(self, sides: _Sides) -> Stage:
        """The backward as a layer of its own (double_backward.py), checked like the layer."""
        subject, opts = self.subject, self.opts
        backward, grad_outputs = backward_subject(subject, opts.seed, self.placement, self.guard)
        reference = backward_subject(self.reference, opts.seed, self.placement, Guard(f"reference {self.reference.target}"))[0] if self.reference else None
        kinds = {leaf.name: leaf.kind for leaf in subject.leaves}
        # The backward's graph cannot be vmapped (autograd.grad inside); only/constant were applied to the layer
        # already; --budget: what the first-order check left of it (at least a quarter).
        budget = None if opts.budget is None else max(opts.budget - (time.perf_counter() - self.started), opts.budget / 4)
        sub = opts.replace(order=1, forward_ad=False, batch=False, only=(), constant=(), budget=budget)

        def relabel(t: TensorReport) -> TensorReport:
            kind = "parameter" if kinds.get(t.name) == "param" else t.kind
            own = "" if t.name in grad_outputs else t.name
            return replace(t, name=check_label(t.name, "double_backward"), check="double_backward", tensor=own, kind=kind)

        try:
            report = _Run(backward, sub, self.placement, None, reference).report()
        except Interrupted as exc:
            for t in exc.report.tensors:
                if t.kind != "output":
                    yield relabel(t), ()
            raise Interrupt(exc.signum) from None
        except LayerError as exc:
            # The first-order backward ran; what fails now is running it under create_graph or differentiating it.
            # Running out of time or memory is no such verdict.
            if isinstance(exc, (TimedOut, OutOfMemory)):
                raise
            yield from _not_twice_differentiable(backward, grad_outputs, kinds, exc)
            return
        for t in report.tensors:
            if t.kind != "output":  # the backward's outputs against the reference's: the first-order check already did
                yield relabel(t), ()
        # What the first-order check said already (the reference, a forward that differs) is not said twice; that
        # the backward does not depend on a tensor is worth saying only where its double backward FAILs (it is
        # right for every term linear in that tensor: a bias, 2*x).
        said = ("compared with the reference", "the forward differs from the reference")
        failing = {t.name for t in report.tensors if not t.passed}
        notes = [note for note in report.warnings if not note.startswith(said)]
        yield None, tuple(_double_backward_note(note) for note in notes if _unused_name(note) in failing or _unused_name(note) is None)
        # The backward as a layer chooses its own numeric side (it may not run faithfully in float64 where the
        # layer does): where that differs from the first-order check's, the rows below were judged with it.
        theirs, numeric = report.config, sides.numeric
        first = None if numeric is None else (str(numeric.dtype).replace("torch.", ""), numeric.steps.eps, numeric.steps.rtol, numeric.steps.atol)
        if first is not None and (theirs.get("numeric_dtype"), theirs.get("eps"), theirs.get("rtol"), theirs.get("atol")) != first:
            yield None, (
                f"double backward: differenced in {theirs.get('numeric_dtype')} at eps {theirs.get('eps'):g} "
                f"(rtol {theirs.get('rtol'):g}, atol {theirs.get('atol'):g}), chosen for the backward as a layer of its own",
            )

    def _advance(self, plan: Plan) -> Callable[[str, int], None]:
        """progress(tensor, elements done so far, ...) as elements are differenced."""
        done = [0]

        def advance(name: str, count: int) -> None:
            done[0] += count
            if self.progress:
                self.progress(name, done[0], plan.total, plan.estimate_s)

        return advance

    def _assemble(self, tensors: list[TensorReport], notes: list[str], sides: _Sides | None, seconds: dict[str, float]) -> Report:
        tensors = _with_diagnoses(tensors)
        timing: dict[str, Any] = {"check_s": round(time.perf_counter() - self.started, 4), "checks_s": dict(seconds)}
        if sides is not None and sides.numeric is not None and sides.plan is not None:
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
        info = tuple(_info_notes(sides)) if sides is not None and sides.plan is not None else ()
        return Report(self.subject.target, tuple(tensors), self._config(sides), timing, said_once(notes), info=said_once(info), checks=self.checks)

    def _config(self, sides: _Sides | None) -> dict[str, Any]:
        opts = self.opts
        if sides is not None and sides.reference is not None:
            steps, dtype = opts.resolved(opts.dtype), None  # no numeric side: nothing is differenced
        elif sides is not None and sides.numeric is not None:
            steps, dtype = sides.numeric.steps, str(sides.numeric.dtype).replace("torch.", "")
        else:
            steps, dtype = opts.resolved(), opts.numeric_dtype or opts.dtype
        # Every declared option (options.py) as it was given, then the values this check resolved them to.
        config: dict[str, Any] = {name: list(v) if isinstance(v := getattr(opts, name), tuple) else v for name, opt in options() if opt.cli or opt.spec}
        config.update(
            numeric_dtype=dtype,
            device=str(self.placement.device),
            eps=None if self.reference is not None else steps.eps,  # against a reference, no step is taken anywhere
            rtol=steps.rtol,
            atol=steps.atol,
            losses=list(LOSSES if opts.weighted_loss else ("l2",)),
            reference=self.reference.target if self.reference is not None else None,
            reference_runs_in=str(sides.reference.dtype).replace("torch.", "") if sides is not None and sides.reference is not None else None,
            noise_sigmas=NOISE_SIGMAS,
            rel_floor=REL_FLOOR,
        )
        return config


def _narrowed(planned: TensorPlan, indices: Sequence[int]) -> TensorPlan:
    """The plan of a tensor for fewer of its elements (a sample of them), its grouped first pass kept for those."""
    if tuple(indices) == tuple(planned.indices):
        return planned
    where = {i: p for p, i in enumerate(planned.indices)}
    positions = torch.tensor([where[i] for i in indices], dtype=torch.long)
    first = None if planned.first_pass is None else {loss: d.select(positions.to(d.central.device)) for loss, d in planned.first_pass.items()}
    # Element by element: the forward-mode values exist only at the sampled elements, sets need all of them.
    return replace(planned, indices=tuple(indices), first_pass=first, by_sets=False)


def _outputs_of(subject: Subject) -> list[torch.Tensor]:
    with torch.no_grad():
        return subject.outputs()


_UNUSED = re.compile(r"backward returned no gradient \(None\) for (.+?): treated as zero.*")


def _unused_name(note: str) -> str | None:
    """The tensor of a 'backward returned no gradient for X' note, else None."""
    found = _UNUSED.fullmatch(note)
    return found.group(1) if found else None


DOUBLE_BACKWARD = "double backward: "


def said_once(notes: Sequence[str]) -> tuple[str, ...]:
    """Each note once, in the order first said. A note of the double-backward check that repeats one of the
    first-order check word for word ('double backward: numeric side computed in float64 ...' beside the
    same note) says nothing new either: its numeric side, tolerances and frozen parameters are the layer's."""
    every = set(notes)
    repeats = {note for note in every if note.startswith(DOUBLE_BACKWARD) and note[len(DOUBLE_BACKWARD) :] in every}
    return tuple(note for note in dict.fromkeys(notes) if note not in repeats)


def _double_backward_note(note: str) -> str:
    """A note of the double-backward check, in its terms: the 'layer' there is the backward."""
    name = _unused_name(note)
    if name is not None:
        return (
            f"double backward: the backward's result does not depend on {name} through autograd (treated as zero): a value "
            f"computed in the forward and kept on ctx instead of save_for_backward, a detach(), or @once_differentiable"
        )
    return f"{DOUBLE_BACKWARD}{note}"


def _not_twice_differentiable(backward: Subject, grad_outputs: tuple[str, ...], kinds: dict, exc: LayerError) -> Stage:
    """The backward could not be differentiated (once_differentiable, or it raises under create_graph): every tensor FAILs, said so."""
    message = exc.message
    for leaf in backward.leaves:
        shape = tuple(backward.tensor(leaf).shape)
        n = int(np.prod(shape)) if shape else 1
        yield (
            TensorReport(
                name=check_label(leaf.name, "double_backward"),
                kind="parameter" if kinds.get(leaf.name) == "param" else "input",
                shape=shape,
                n_elements=n,
                n_checked=n,
                counts={"PASS": 0, "FAIL": n, "KINK": 0, "NOISE": 0},
                max_rel_error=float("inf"),
                mean_rel_error=float("inf"),
                max_abs_error=float("inf"),
                worst_index=None,
                analytic=None,
                numeric=None,
                loss="l2",
                failed_losses=("l2",),
                diagnosis="the backward cannot be differentiated: " + message,
                check="double_backward",
                tensor="" if leaf.name in grad_outputs else leaf.name,
            ),
            (),
        )
    yield None, (
        f"double backward: the backward cannot be differentiated ({message}); a Function marked @once_differentiable, "
        "or a backward that raises under create_graph=True, breaks gradient penalties and Hessian-vector products: FAIL",
    )


def _run_notes(sides: _Sides, tensors: list[TensorReport], opts: CheckOptions) -> list[str]:
    """What the report says about the whole run: buffers restored, the evaluation path, grouping, kinks."""
    notes = []
    numeric = sides.numeric.evaluator
    if numeric.mutated_buffers:
        notes.append(
            f"the forward updates buffer(s) {', '.join(numeric.mutated_buffers)} in place; they are restored "
            "before every evaluation, so every point sees the same state"
        )
    notes += _info_notes(sides)
    kinks = sum(t.counts.get("KINK", 0) for t in tensors)
    if kinks and opts.kinks == "pass":
        notes.append(f"{kinks} element(s) sit at a kink (non-differentiable point); reported as KINK, not failed (--kinks fail to fail them)")
    return notes


def _info_notes(sides: _Sides) -> list[str]:
    """The notes that say nothing is wrong -- how the points were evaluated -- shown only when asked for (-v)."""
    notes = []
    numeric = sides.numeric.evaluator
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
    return notes


def _with_diagnoses(reports: list[TensorReport]) -> list[TensorReport]:
    """Name the pattern of each failing tensor's errors (scaled, transposed, swapped, borders, ...)."""
    out = []
    for rep in reports:
        if rep.n_failed and rep.analytic_grad is not None:
            others = {r.name: r.numeric_grad for r in reports if r is not rep and r.loss == rep.loss and r.check == rep.check}
            found = diagnose(rep.analytic_grad, rep.numeric_grad, rep.verdicts == FAIL, others, rep.kink_slopes)
            if found and rep.check == "double_backward":  # the gradient there is the double backward's
                found = found.replace("the backward ", "the double backward ")
            rep = replace(rep, diagnosis=found)
        out.append(rep)
    return out

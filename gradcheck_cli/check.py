"""Step 4: compare the layer's own gradients with central finite differences.

:func:`check` is the library entry point.  It never prints and never exits: it
returns a frozen :class:`~gradcheck_cli.report.Report` or raises a
:class:`~gradcheck_cli.errors.GradcheckError`.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import coloring, fd
from .config import InputSpec, LayerSpec
from .diagnose import diagnose
from .environment import deadline, default_device_set, interrupts, preserved_state, resolve_device, seed_rng
from .guard import guarded
from .errors import LayerError, SpecError, UsageError
from .evaluate import Evaluator, Leaf, chunk_size, chunks, release_free_memory, rounding_error, seconds_since
from .inputs import build_inputs, parse_input, torch_dtype
from .layer import Layer, flatten_outputs, make_layer, set_params
from .load import load_target
from .options import TOLERANCES, CheckOptions
from .report import Report, TensorReport, count_verdicts
from .sampling import coverage_note, select

__all__ = ["TOLERANCES", "CheckOptions", "Interrupted", "check", "check_spec", "resolve_device", "spec_arguments"]

# progress(tensor_name, elements_done, elements_total, estimated_seconds_total)
ProgressFn = Callable[[str, int, int, float], None]


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) during a check; ``report`` holds the tensors checked so far."""

    def __init__(self, report: "Report", signum: int = 2) -> None:
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
    opts = CheckOptions(**options).validated()
    target = name or (layer if isinstance(layer, str) else _name_of(layer))
    device = resolve_device(opts.device)
    # Whatever the caller's context: gradcheck needs autograd (no_grad, inference_mode) and
    # tells a real Ctrl-C from a layer raising KeyboardInterrupt. Importing the layer file runs
    # it: its RNG use, chdir and default dtype are kept away from the caller's state too.
    with preserved_state(device), interrupts(), torch.inference_mode(False), torch.enable_grad(), deadline(opts.timeout, target):
        obj = load_target(layer) if isinstance(layer, str) else layer
        _check_default_device(target)
        return _Checker(obj, target, list(inputs), args, kwargs, params or {}, opts, device, progress).run()


def check_spec(spec: LayerSpec, progress: ProgressFn | None = None, **overrides: Any) -> Report:
    """Check what a YAML spec describes; keyword ``overrides`` win over the spec's options."""
    given = {k: v for k, v in overrides.items() if v is not None}
    # The spec's own options are the spec's problem: its file and key are named.
    for key, value in spec.options.items():
        if key in given:
            continue
        try:
            CheckOptions(**{key: value}).validated()
            if key == "device":
                resolve_device(value)
        except UsageError as exc:
            raise SpecError(spec.path, key, exc.detail, exc.hint) from None
    try:
        return check(spec.layer, list(spec.inputs), progress=progress, **spec_arguments(spec), **{**spec.options, **given})
    except SpecError:
        raise
    except UsageError as exc:
        # Problems with what the spec asked for (inputs, params, constructor args) name the spec file and key.
        if exc.key:
            raise SpecError(spec.path, exc.key, exc.detail, exc.hint) from exc
        raise


def spec_arguments(spec: LayerSpec) -> dict[str, Any]:
    """How a spec builds its layer: constructor args/kwargs, parameter values and a display name."""
    return {
        "args": tuple(spec.args),
        "kwargs": dict(spec.kwargs),
        "params": dict(spec.params),
        "name": spec.layer.rsplit("/", 1)[-1],
    }


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


class _Checker:
    def __init__(self, obj, target, inputs, args, kwargs, params, opts: CheckOptions, device, progress):
        self.target = target
        self.opts = opts
        self.device = device
        # Differences are accumulated in float64 on the device, except where the device has no float64 (MPS).
        self.acc = torch.device("cpu") if device.type == "mps" else device
        self.progress = progress
        self.dtype = torch_dtype(opts.dtype)
        self.ref_dtype = torch_dtype(opts.reference_dtype) if opts.reference_dtype else self.dtype
        self.eps, self.rtol, self.atol = opts.resolved()
        if device.type == "mps" and torch.float64 in (self.dtype, self.ref_dtype):
            raise UsageError("Apple MPS has no float64.", "Use --dtype float32 (and no --reference-dtype float64) with --device mps.")
        self.notes: list[str] = []
        self.grouping: dict[str, list[tuple[int, coloring.Colouring]]] = {}  # per tensor: (elements, how) per step
        self._fwd_s: float | None = None  # one forward's time, once measured
        self.first_pass: dict[str, dict[str, fd.Differences]] = {}  # grouped tensors' slopes at h, from the plan
        base = make_layer(obj, target, tuple(args), kwargs)
        self.layer = base.cast(self.dtype, device)
        if params:
            set_params(self.layer, params)
        self.inputs = self._materialise(inputs)
        self._check_arity(base)

    # -- setup ----------------------------------------------------------------
    def _materialise(self, items: list) -> list:
        specs = [parse_input(x) if isinstance(x, str) else InputSpec(value=x) if isinstance(x, (int, float, list)) else x for x in items]
        built = build_inputs([s for s in specs if isinstance(s, InputSpec)], self.dtype, self.device, self.opts.seed)
        it = iter(built)
        out = []
        for s in specs:
            if isinstance(s, InputSpec):
                out.append(next(it))
            elif isinstance(s, torch.Tensor):
                t = s.detach().to(self.device)
                out.append((t.to(self.dtype) if t.is_floating_point() else t).clone(memory_format=torch.contiguous_format))
            else:
                out.append(s)  # non-tensor arguments are passed through as they are
        return out

    def _check_arity(self, base: Layer) -> None:
        fn = base.module.forward if base.module is not None else base.function_class.forward if base.function_class else base.fn
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        ps = list(sig.parameters.values())
        if base.function_class is not None and base.function_class.setup_context is torch.autograd.function._SingleLevelFunction.setup_context:
            ps = ps[1:]  # drop ctx
        if any(p.kind == p.VAR_POSITIONAL for p in ps):
            return
        keyword_only = [p.name for p in ps if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
        if keyword_only:
            raise UsageError(
                f"{self.target} needs keyword argument(s) {', '.join(keyword_only)}, which gradcheck cannot pass.",
                "Give them defaults, or check a small function that calls the layer with them.",
                key="inputs",
            )
        positional = [p for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p.name for p in positional if p.default is p.empty]
        given = len(self.inputs)
        if given < len(required):
            missing = ", ".join(required[given:])
            raise UsageError(
                f"{self.target} takes {len(required)} input(s) ({', '.join(required)}) but {given} were given; missing: {missing}.",
                "Give one input per positional argument, in order: on the command line a shape such as --input 1x100 "
                "(standard normal) or a literal such as --input =4.5; in a spec, one entry under 'inputs:' each.",
                key="inputs",
            )
        if given > len(positional):
            raise UsageError(
                f"{self.target} takes {len(positional)} input(s) ({', '.join(p.name for p in positional) or 'none'}) but {given} were given.",
                "Give one input per positional argument, in order: remove the extra --input options (or entries under 'inputs:' in a spec).",
                key="inputs",
            )

    def _leaves(self) -> list[tuple[str, Leaf]]:
        leaves: list[tuple[str, Leaf]] = []
        for i, x in enumerate(self.inputs):
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                leaves.append((f"input{i}", ("input", i)))
        for pname in self.layer.params:
            leaves.append((pname, ("param", pname)))
        if self.layer.frozen:
            self.notes.append(f"frozen parameter(s) {', '.join(self.layer.frozen)} (requires_grad=False): not checked")
        empty = [n for n, (kind, key) in leaves if (self.inputs[key] if kind == "input" else self.layer.params[key]).numel() == 0]
        if empty:
            raise UsageError(f"{', '.join(empty)} of {self.target} has no elements; there is nothing to check in it.", "Give inputs with at least one element.")
        if self.opts.only:
            known = [n for n, _ in leaves]
            unknown = [n for n in self.opts.only if n not in known]
            if unknown:
                raise UsageError(f"--only {', '.join(unknown)}: no such checked tensor.", f"tensors: {', '.join(known)}.")
            leaves = [(n, leaf) for n, leaf in leaves if n in self.opts.only]
        if not leaves:
            raise UsageError(
                f"{self.target} has nothing differentiable to check: no floating-point input and no floating parameter.",
                "Give at least one floating input (e.g. --input 1x100); integer inputs are passed through unchecked.",
            )
        return leaves

    # -- the check ------------------------------------------------------------
    def run(self) -> Report:
        started = time.perf_counter()
        leaves = self._leaves()
        losses = fd.LOSSES if self.opts.weighted_loss else ("l2",)
        reports: list[TensorReport] = []
        evaluator = numeric_eval = None
        try:
            evaluator = Evaluator(self.layer, self.layer.params, self.inputs, self.opts.seed, self.device, self.opts.batch)
            numeric_eval, analytic, grad_spread, at = self._setup(evaluator, leaves)
            plan = self._plan(leaves, numeric_eval, at)
            total = sum(len(idx) for idx in plan.values())
            done = 0
            for tname, leaf in leaves:
                rep = self._check_tensor(tname, leaf, plan[tname], numeric_eval, at, analytic[tname], grad_spread[tname], losses, done, total)
                done += rep.n_checked
                reports.append(rep)
        except KeyboardInterrupt as exc:  # a real signal (see guard.py), or Ctrl-C where gradcheck cannot tell
            self.notes.append(f"interrupted: {len(reports)} of {len(leaves)} tensor(s) checked")
            if numeric_eval is None:
                partial = Report(self.target, (), self._config(losses), {"check_s": round(time.perf_counter() - started, 4)}, tuple(self.notes), True)
            else:
                partial = replace(self._report(reports, losses, started, evaluator, numeric_eval), interrupted=True)
            raise Interrupted(partial, getattr(exc, "signum", 2)) from None
        return self._report(reports, losses, started, evaluator, numeric_eval)

    def _setup(self, evaluator: Evaluator, leaves):
        """The base point, the analytic side and the numeric side: (numeric evaluator, analytic, spread, base point)."""
        y0 = self._guarded("forward", evaluator.forward)
        self._check_finite(y0)
        t0 = time.perf_counter()
        y0_again = self._guarded("forward", evaluator.forward)
        if self.opts.budget is None:  # one warm forward is enough for the time estimate (see _forward_seconds)
            self._fwd_s = seconds_since(t0, self.device)
        y0, y0_again = self._f64(y0), self._f64(y0_again)
        fwd_spread = (y0 - y0_again).abs()
        if bool((fwd_spread > 0).any()):
            self.notes.append(
                f"forward is nondeterministic: two runs at the same point differ by up to {fwd_spread.max().item():.3g}; "
                "the comparison allows for it"
            )
        self._check_state_unchanged(evaluator)

        gen = torch.Generator(device="cpu").manual_seed(self.opts.seed + 1)
        m = y0.numel()
        weights = (torch.rand(m, generator=gen, dtype=torch.float64) + 0.5) * (torch.randint(0, 2, (m,), generator=gen) * 2 - 1)
        weights = _per_output_scaled(weights.to(self.acc), y0, evaluator.out_sizes)

        analytic, grad_spread = self._analytic(leaves, weights)
        self.layer_scale = {
            loss: max(float(g[loss].abs().max()) if g[loss].numel() else 0.0 for g in analytic.values()) for loss in fd.LOSSES
        }

        numeric_eval, y_base, y64 = self._numeric_evaluator(evaluator, y0)
        out_err = self._output_error(y_base, y64, fwd_spread)
        at = (y_base, weights, out_err, fd.ulp_of(y_base, self.num_dtype))
        return numeric_eval, analytic, grad_spread, at

    def _plan(self, leaves, ev: Evaluator, at) -> dict[str, list[int]]:
        """Which elements of each tensor to check, within --max-elements and --budget.

        Tensors whose outputs fit a stride (see :mod:`.coloring`) get their first pass
        here, usually a few dozen forwards (with --budget, at most an even share of it):
        only the others are sampled to fit --budget.
        """
        shapes = {tname: tuple(ev.tensor(leaf).shape) for tname, leaf in leaves}
        limit = self.opts.max_elements
        plan = {tname: select(shape, limit, self.opts.seed) for tname, shape in shapes.items()}
        cap = None
        if self.opts.budget is not None:
            cap = int(self.opts.budget / max(self._forward_seconds(ev), 1e-9) / len(leaves))
        for tname, leaf in leaves:
            grouped = self._grouped_differences(tname, ev, leaf, plan[tname], self.eps, at, cap)
            if grouped is not None:
                self.first_pass[tname] = grouped
        single = [(tname, leaf) for tname, leaf in leaves if tname not in self.first_pass]
        per_element = self._seconds_per_element(ev, single, plan) if single else 0.0
        self.estimate_s = per_element * sum(len(plan[tname]) for tname, _ in single)
        if self.opts.budget is not None and self.estimate_s > self.opts.budget:
            # Shrink the per-tensor limit until the estimate fits (small tensors stay whole).
            affordable = max(1, int(self.opts.budget / max(per_element, 1e-9)))
            per_tensor = max(1, affordable // len(single))
            limit = per_tensor if limit is None else min(limit, per_tensor)
            plan.update({tname: select(shapes[tname], limit, self.opts.seed) for tname, _ in single})
            self.estimate_s = per_element * sum(len(plan[tname]) for tname, _ in single)
            self.notes.append(
                f"--budget {self.opts.budget:g}s: sampled at most {limit} elements per tensor "
                "(tensors of up to 64 elements are always checked whole)"
            )
        if self.progress:
            self.progress("", 0, sum(len(i) for i in plan.values()), self.estimate_s)
        return plan

    def _seconds_per_element(self, ev: Evaluator, leaves, plan) -> float:
        """Cost of checking one element: two forwards, or a timed batched chunk when vmap works."""
        loop = 2 * self._forward_seconds(ev)
        n = sum(len(plan[tname]) for tname, _ in leaves)
        if ev.batched is False or (loop * n < 2.0 and self.opts.budget is None):
            return loop  # cheap anyway: an upper bound will do, no need to time a batch
        tname, leaf = leaves[0]
        idx = plan[tname][:16]
        self._guarded("forward", ev.perturbed, leaf, idx, self.eps)  # first call probes vmap against the loop
        if not ev.batched:
            return loop
        t0 = time.perf_counter()
        self._guarded("forward", ev.perturbed, leaf, idx, self.eps)
        return min(loop, seconds_since(t0, self.device) / len(idx))

    def _forward_seconds(self, ev: Evaluator) -> float:
        """Median time of a few plain forward calls (the loop path's unit of cost), measured once a check.

        Without --budget it only feeds the time estimate, and :meth:`run` sets it from the base
        point's second forward; --budget sizes the sample on it, so it is measured here.
        """
        if self._fwd_s is not None:
            return self._fwd_s
        times = []
        with torch.no_grad():
            for _ in range(3):
                t0 = time.perf_counter()
                self._guarded("forward", ev.forward)
                times.append(seconds_since(t0, self.device))
        self._fwd_s = sorted(times)[1]
        return self._fwd_s

    def _report(self, reports, losses, started, evaluator, numeric_eval) -> Report:
        reports = _with_diagnoses(reports)
        if numeric_eval.mutated_buffers:
            self.notes.append(
                f"the forward updates buffer(s) {', '.join(numeric_eval.mutated_buffers)} in place; they are restored "
                "before every evaluation, so every point sees the same state"
            )
        if numeric_eval.batched is False and numeric_eval.batch_note:
            self.notes.append(numeric_eval.batch_note)
        grouped = {}
        for tname, runs in self.grouping.items():
            n, how = runs[0]  # the first pass over the tensor
            if how.stride:
                grouped[tname] = how.stride
                apart = "" if how.stride == 1 else f" of any {how.stride} apart"
                self.notes.append(
                    f"{tname}: elements moved in groups, each output credited to the one element{apart} it depends on "
                    f"(verified): {how.forwards} forwards instead of {2 * n}; --no-coloring checks one element at a time"
                )
        kinks = sum(r.counts.get("KINK", 0) for r in reports)
        if kinks and self.opts.kinks == "pass":
            self.notes.append(f"{kinks} element(s) sit at a kink (non-differentiable point); reported as KINK, not failed (--kinks fail to fail them)")
        timing = {
            "check_s": round(time.perf_counter() - started, 4),
            "estimate_s": round(getattr(self, "estimate_s", 0.0), 4),
            "forward_calls": evaluator.calls + (numeric_eval.calls if numeric_eval is not evaluator else 0),
            "points_evaluated": numeric_eval.points,
            "batched": bool(numeric_eval.batched),
            "grouped": grouped,
        }
        return Report(self.target, tuple(reports), self._config(losses), timing, tuple(self.notes))

    def _config(self, losses) -> dict:
        return {
            "dtype": self.opts.dtype,
            "reference_dtype": str(getattr(self, "num_dtype", self.ref_dtype)).replace("torch.", ""),
            "device": str(self.device),
            "seed": self.opts.seed,
            "eps": self.eps,
            "rtol": self.rtol,
            "atol": self.atol,
            "kinks": self.opts.kinks,
            "losses": list(losses),
            "max_elements": self.opts.max_elements,
            "noise_sigmas": fd.NOISE_SIGMAS,
            "rel_floor": fd.REL_FLOOR,
        }

    def _guarded(self, stage: str, fn, *args):
        """Run the user's code; anything it raises becomes a LayerError naming the layer."""
        return guarded(f"The {stage} of {self.target}", fn, *args, sizes_hint=self._sizes_hint)

    def _f64(self, t: torch.Tensor) -> torch.Tensor:
        """A float64 copy on the accumulation device."""
        return t.detach().to(device=self.acc, dtype=torch.float64)

    def _sizes_hint(self) -> str:
        sizes = ", ".join(f"input{i} {list(x.shape)}" for i, x in enumerate(self.inputs) if isinstance(x, torch.Tensor))
        return f"Inputs: {sizes}. Use smaller shapes, or --max-elements to sample."

    def _check_finite(self, y: torch.Tensor) -> None:
        if y.numel() == 0:
            raise LayerError(
                f"{self.target} returned an empty tensor (no elements); there is nothing to compare gradients on.",
                "Check the layer's output shape for these inputs.",
            )
        bad = ~torch.isfinite(y)
        if bool(bad.any()):
            raise LayerError(
                f"{self.target} returned {int(bad.sum())} non-finite value(s) (NaN or Inf) at the check point; "
                "gradients cannot be compared there.",
                "Check the layer's forward, or choose inputs in its domain (a YAML spec can set dist: uniform with low/high).",
            )

    def _check_state_unchanged(self, evaluator: Evaluator) -> None:
        for i, (before, after) in enumerate(zip(self.inputs, evaluator.inputs)):
            if isinstance(before, torch.Tensor) and not torch.equal(before, after):
                raise LayerError(
                    f"The forward of {self.target} changed its input {i} in place; "
                    "finite differences need a forward that does not write into its inputs.",
                    "Use out-of-place ops on inputs (x = x * 2, not x.mul_(2)).",
                )
        for pname, value in self.layer.params.items():
            if not torch.equal(evaluator.params[pname], value):
                raise LayerError(
                    f"The forward of {self.target} changed its own parameter {pname!r} in place; "
                    "finite differences need a forward that is a pure function of its inputs and parameters.",
                    "Do not write into parameters inside forward (use out-of-place ops).",
                )

    def _analytic(self, leaves, weights) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        params = {k: v.detach().clone().requires_grad_(any(leaf == ("param", k) for _, leaf in leaves)) for k, v in self.layer.params.items()}
        inputs = list(self.inputs)
        tensors = []
        for _, (kind, key) in leaves:
            if kind == "input":
                inputs[key] = inputs[key].detach().clone().requires_grad_(True)
                tensors.append(inputs[key])
            else:
                tensors.append(params[key])

        def forward():
            seed_rng(self.opts.seed, self.device)
            with torch.enable_grad():
                buffers = {k: v.clone() for k, v in self.layer.buffers.items()}  # the forward may update them
                return flatten_outputs(self.layer.call(params, inputs, buffers), self.target)

        ys = self._guarded("forward", forward)
        live = [y for y in ys if y.requires_grad]
        sizes = [y.numel() for y in ys]
        w_parts = torch.split(weights, sizes)
        if not live:
            self.notes.append("the layer's output does not require grad: its backward is never called (analytic gradients are all zero)")

        def backward(grad_outputs):
            if not live:
                return [None] * len(tensors)
            # Backpropagate the scalar sum(y * g): the layer receives exactly g as its output
            # gradient (and torch skips a slow first-call import that tensor grad_outputs trigger).
            loss = sum((y * g.reshape(y.shape).to(y.dtype)).sum() for y, g in zip(ys, grad_outputs) if y.requires_grad)
            return torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)

        l2_out = [y.detach() for y in ys]
        g1 = self._guarded("backward", backward, l2_out)
        g1_again = self._guarded("backward", backward, l2_out)
        gw = self._guarded("backward", backward, list(w_parts)) if self.opts.weighted_loss else [None] * len(tensors)
        result, spread = {}, {}
        for (tname, _), t, a, a2, b in zip(leaves, tensors, g1, g1_again, gw):
            zero = torch.zeros(t.shape, dtype=torch.float64, device=self.acc)
            if a is None and live:
                self.notes.append(f"backward returned no gradient (None) for {tname}: treated as zero")
            a64 = zero if a is None else self._f64(a)
            a2_64 = zero if a2 is None else self._f64(a2)
            result[tname] = {"l2": a64, "weighted": zero if b is None else self._f64(b)}
            # Where the backward returned NaN/Inf the element fails (fd._broken_fails); no spread to measure.
            spread[tname] = (a64 - a2_64).abs().nan_to_num(nan=0.0, posinf=0.0)
            if bool((spread[tname] > 0).any()):
                self.notes.append(f"backward is nondeterministic for {tname}: two runs differ by up to {spread[tname].max().item():.3g}")
        return result, spread

    def _float64_forward(self) -> tuple[Evaluator, torch.Tensor] | None:
        """The layer run in float64 at the same point, or None where it cannot run so."""
        if self.acc.type != self.device.type:  # no float64 on this device (MPS)
            return None
        try:
            hi = self.layer.cast(torch.float64, self.device)
            hi_inputs = [x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in self.inputs]
            ev = Evaluator(hi, hi.params, hi_inputs, self.opts.seed, self.device, self.opts.batch)
            with torch.no_grad():
                return ev, ev.forward()
        except Exception:
            return None  # a float32-only layer

    def _numeric_evaluator(self, evaluator: Evaluator, y0: torch.Tensor):
        """Pick the dtype of the numeric side: returns (evaluator, its base outputs, float64 outputs or None).

        Unless --reference-dtype says otherwise, a layer checked below float64 has
        its numeric side computed in float64 when it runs there faithfully: the
        analytic side (what is being checked) stays in the layer's dtype, and the
        finite differences lose no digits to float32 rounding.
        """
        self.num_dtype = self.ref_dtype
        hi = None if self.dtype == torch.float64 else self._float64_forward()
        if self.opts.reference_dtype is None and hi is not None:
            ev64, y64 = hi
            if self._faithful_in_float64(y0, y64) and self._responds_in_float64(ev64):
                self.num_dtype = torch.float64
                self.eps, self.rtol, self.atol = self.opts.resolved("float64")
                self.notes.append(
                    f"numeric side computed in float64 (the layer runs in float64 too); the analytic side stays "
                    f"{self.opts.dtype}. Use --reference-dtype {self.opts.dtype} to difference in {self.opts.dtype}"
                )
                return ev64, self._f64(y64), None
        if self.num_dtype == self.dtype:
            return evaluator, y0, None if hi is None else self._f64(hi[1])
        ref_layer = self.layer.cast(self.num_dtype, self.device)
        ref_inputs = [x.to(self.num_dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in self.inputs]
        ev = Evaluator(ref_layer, ref_layer.params, ref_inputs, self.opts.seed, self.device, self.opts.batch)
        return ev, self._f64(self._guarded("forward", ev.forward)), None if hi is None else self._f64(hi[1])

    def _faithful_in_float64(self, y_low: torch.Tensor, y64: torch.Tensor) -> bool:
        """float64 outputs that are really float64 (not float32 inside) and agree with the layer's own."""
        if y64.dtype != torch.float64 or y64.shape != y_low.shape or not bool(torch.isfinite(y64).all()):
            return False
        y64 = self._f64(y64)
        if bool((y64 == y64.float().double()).all()):
            return False  # computed in float32 (or lower) internally
        u = torch.finfo(self.dtype).eps
        scale = float(y64.abs().max())
        return bool(((y64 - y_low).abs() <= 256 * u * (y64.abs() + scale)).all())

    def _responds_in_float64(self, ev: Evaluator) -> bool:
        """Does the float64 forward follow changes far below the layer dtype's resolution, linearly?

        Every floating input and parameter is scaled by 1 + k*delta (k = 1, 2, 3; delta a few
        ulps of the layer's dtype). A layer that is float64 throughout answers in proportion;
        one that rounds to float32 somewhere inside (x.float()) answers in quantised steps, and
        its finite differences must then be taken at float32 steps, not float64 ones.
        """
        delta = 4 * torch.finfo(self.dtype).eps
        tensors = [t for t in (*ev.params.values(), *ev.inputs) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        saved = [t.clone() for t in tensors]
        outs = []
        try:
            for k in range(4):
                for t, s in zip(tensors, saved):
                    t.copy_(s * (1 + k * delta))
                with torch.no_grad():
                    outs.append(self._f64(self._guarded("forward", ev.forward)))
        finally:
            for t, s in zip(tensors, saved):
                t.copy_(s)
        steps = [o - outs[0] for o in outs[1:]]
        scale = float(steps[-1].abs().max())
        if not math.isfinite(scale) or scale == 0.0:
            return False  # no visible response: cannot vouch for float64
        slack = 1e-2 * scale + 64 * torch.finfo(torch.float64).eps * float(outs[0].abs().max())
        return all(bool(((d - (k + 1) * steps[0]).abs() <= slack).all()) for k, d in enumerate(steps))

    def _output_error(self, y_base: torch.Tensor, y64: torch.Tensor | None, fwd_spread: torch.Tensor) -> torch.Tensor:
        """Estimated absolute rounding error of each output of the numeric forward."""
        err = rounding_error(y_base, self.num_dtype)
        if self.num_dtype != torch.float64 and y64 is not None and y64.shape == y_base.shape:
            # The real rounding error, measured against the float64 forward.
            err = torch.maximum(err, (y_base - y64).abs())
        return torch.maximum(err, fwd_spread)

    def _check_tensor(self, tname, leaf, idx, ev: Evaluator, at, analytic, spread, losses, done, total) -> TensorReport:
        base = ev.tensor(leaf)
        shape = tuple(base.shape)
        n = base.numel()
        h = self.eps
        per_loss = {loss: {"numeric": torch.full((n,), float("nan"), dtype=torch.float64, device=self.acc),
                           "verdict": torch.full((n,), fd.UNCHECKED, dtype=torch.long, device=self.acc)} for loss in losses}
        a_flat = {loss: analytic[loss].reshape(-1) for loss in losses}
        s_flat = spread.reshape(-1)

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if self.progress:
                self.progress(tname, done, total, self.estimate_s)

        grouped = tname in self.first_pass
        if grouped:
            diffs = self.first_pass.pop(tname)
            advance(len(idx))
        else:
            diffs = self._all_differences(ev, leaf, idx, h, at, advance)
        index = torch.tensor(idx, device=self.acc, dtype=torch.long)
        first, scales = {}, {}
        flagged = torch.zeros(len(idx), dtype=torch.bool, device=self.acc)
        for loss in losses:
            d = first[loss] = diffs[loss]
            a = a_flat[loss][index]
            scales[loss] = _largest(a, d.central)
            verdict = fd.first_pass(a, d, scales[loss], self.rtol, self.atol, s_flat[index], self.layer_scale[loss])
            per_loss[loss]["numeric"][index] = d.central
            per_loss[loss]["verdict"][index] = verdict
            flagged |= verdict == fd.FAIL
        # Confirm the flagged elements with two more step sizes, 2h and h/2.
        flagged_pos = torch.nonzero(flagged).reshape(-1).tolist()
        if flagged_pos:
            flagged_idx = [idx[p] for p in flagged_pos]
            fpos = torch.tensor(flagged_pos, device=self.acc, dtype=torch.long)
            findex = index[fpos]
            # A few flagged elements are confirmed one at a time, the grouped first pass included, so
            # that no verdict rests on grouping alone; many (a wrong backward) are confirmed in groups.
            regroup = grouped and len(flagged_idx) > coloring.REEVALUATE_MAX

            def slopes(step: float) -> dict[str, fd.Differences]:
                got = self._grouped_differences(tname, ev, leaf, flagged_idx, step, at) if regroup else None
                return got if got is not None else self._all_differences(ev, leaf, flagged_idx, step, at)

            single = slopes(h) if grouped and not regroup else None
            double, half = slopes(2 * h), slopes(h / 2)
            for loss in losses:
                verdict, numeric, _ = fd.confirm(
                    a_flat[loss][findex],
                    single[loss] if single is not None else _select(first[loss], fpos),
                    double[loss],
                    half[loss],
                    scales[loss], self.rtol, self.atol, s_flat[findex], self.layer_scale[loss],
                )
                per_loss[loss]["numeric"][findex] = numeric
                per_loss[loss]["verdict"][findex] = verdict
        broken = torch.nonzero(~torch.isfinite(a_flat[losses[0]][index])).reshape(-1).tolist()
        if broken:
            where = [list(np.unravel_index(idx[p], shape)) if shape else [] for p in broken[:3]]
            more = f" and {len(broken) - 3} more element(s)" if len(broken) > 3 else ""
            self.notes.append(
                f"{tname}: the analytic gradient (the backward's result) is NaN or infinite at "
                f"{', '.join(str([int(i) for i in w]) for w in where)}{more}: FAIL"
            )
        outside = int((~torch.isfinite(per_loss[losses[0]]["numeric"][index])).sum())
        if outside:
            self.notes.append(
                f"{outside} element(s) of {tname}: the layer returned NaN/Inf at x±h (the step leaves its domain?); "
                "reported NOISE. A smaller --eps may reach them"
            )
        if not (grouped and self.grouping[tname][0][1].stride == 1):  # stride 1: no two elements share an output
            self._check_joint_kinks(tname, leaf, ev, at, per_loss, a_flat, losses)
        return self._tensor_report(tname, leaf, shape, idx, per_loss, analytic, losses)

    def _all_differences(self, ev: Evaluator, leaf, idx: list[int], step: float, at, advance=None) -> dict[str, fd.Differences]:
        """Both losses' slopes for every element of ``idx``, one element per pair of forwards (or vmap batch)."""
        parts = []
        for number, part in enumerate(chunks(idx, chunk_size(at[0].numel()))):
            if number % 64 == 63:
                release_free_memory()
            parts.append(self._differences(ev, leaf, part, step, at))
            if advance:
                advance(len(part))
        return {loss: _cat_differences([c[loss] for c in parts]) for loss in parts[0]}

    def _grouped_differences(self, tname, ev: Evaluator, leaf, idx: list[int], step: float, at, cap: int | None = None) -> dict[str, fd.Differences] | None:
        """Slopes from moving many elements per forward (see :mod:`.coloring`), or None where that does not fit."""
        n = len(idx)
        if not self.opts.coloring or n < coloring.MIN_ELEMENTS:
            return None
        y0, weights, out_err, ulp = at
        index = torch.tensor(idx, device=self.device, dtype=torch.long)
        _, plus, minus, hp, hm = ev.steps(leaf, index, step)

        def evaluate(segments: list):
            segments = [(pos.to(self.device), signs.to(self.device)) for pos, signs in segments]
            return tuple(map(self._f64, self._guarded("forward", ev.groups, leaf, index, plus, minus, segments)))

        def assemble(parts):
            return fd.attributed_differences(parts, n, y0, self._f64(hp), self._f64(hm), weights, out_err, ulp)

        budget = int(coloring.BUDGET_FRACTION * 2 * n)
        if cap is not None:  # --budget: grouping may use no more than this tensor's share of it
            budget = min(budget, cap)
        seed = self.opts.seed + 2 + len(self.grouping.get(tname, []))  # fresh random probes at every step, reproducibly
        result, how = coloring.colour(evaluate, n, y0, out_err, budget, seed, assemble)
        self.grouping.setdefault(tname, []).append((n, how))
        return result

    def _differences(self, ev: Evaluator, leaf, part: list[int], step: float, at) -> dict[str, fd.Differences]:
        """Evaluate the elements of ``part`` moved by +-step and form both losses' slopes."""
        y0, weights, out_err, ulp = at
        yp, ym, hp, hm = map(self._f64, self._guarded("forward", ev.perturbed, leaf, part, step))
        if ev.probe_error is not None:  # batched and one-at-a-time results differ by rounding: count it as noise
            out_err = torch.maximum(out_err, self._f64(ev.probe_error))
        return fd.loss_differences(yp, ym, y0, hp, hm, weights, out_err, ulp)

    def _check_joint_kinks(self, tname, leaf, ev: Evaluator, base, per_loss, a_flat, losses) -> None:
        """KINK elements that move a common output are also perturbed together.

        Each tied maximum on its own has one-sided slopes [0, 1], so a backward
        that gives the full gradient to every tied element passes element by
        element. Moving the whole group by +-h must change the loss at a rate
        between the joint one-sided slopes, and the analytic gradients of the
        group must sum to a value in that range; otherwise the group FAILs.
        Kinks that share no output (ReLU, abs, clamp) form groups of one.
        """
        y0, weights, out_err, ulp = base
        kinked = torch.zeros_like(per_loss[losses[0]]["verdict"], dtype=torch.bool)
        for loss in losses:
            kinked |= per_loss[loss]["verdict"] == fd.KINK
        kink_idx = torch.nonzero(kinked).reshape(-1).tolist()
        if len(kink_idx) < 2 or len(kink_idx) > 4096:
            return
        yp, ym, _, _ = map(self._f64, self._guarded("forward", ev.perturbed, leaf, kink_idx, self.eps))
        noise = 4 * out_err + (self._f64(ev.probe_error) if ev.probe_error is not None else 0.0)
        moved = (((yp - y0).abs() > noise) | ((ym - y0).abs() > noise)).double()
        shares = (moved @ moved.T) > 0  # K x K: do two kink elements move a common output?
        for group in _components(shares.cpu().numpy()):
            if len(group) < 2:
                continue
            members = [kink_idx[g] for g in group]
            jp, jm, hp, hm = map(self._f64, self._guarded("forward", ev.joint, leaf, members, self.eps))
            d = fd.loss_differences(jp[None], jm[None], y0, hp[None], hm[None], weights, out_err, ulp)
            at = torch.tensor(members, device=self.acc, dtype=torch.long)
            for loss in losses:
                total = a_flat[loss][at].sum()
                lo, hi = torch.minimum(d[loss].right, d[loss].left)[0], torch.maximum(d[loss].right, d[loss].left)[0]
                slack = fd.tolerance(total.reshape(1), hi.abs().reshape(1), self.layer_scale[loss], self.rtol, self.atol)[0]
                slack = slack + fd.NOISE_SIGMAS * 2 * d[loss].noise[0]
                if bool(total < lo - slack) or bool(total > hi + slack):
                    per_loss[loss]["verdict"][at] = fd.FAIL
                    self.notes.append(
                        f"{tname}: {len(members)} elements at one kink (e.g. tied maxima) have analytic gradients summing "
                        f"to {float(total):.4g}, outside the joint one-sided slopes [{float(lo):.4g}, {float(hi):.4g}]"
                    )
                    break

    def _tensor_report(self, tname, leaf, shape, idx, per_loss, analytic, losses) -> TensorReport:
        n = len(idx)
        index = torch.tensor(idx, device=self.acc, dtype=torch.long)
        stats = {}
        for loss in losses:
            a = analytic[loss].reshape(-1)[index]
            num = per_loss[loss]["numeric"][index]
            scale = _largest(a, num)
            v = per_loss[loss]["verdict"][index]
            # Errors at kinks are expected, and an element with no finite estimate has none:
            # they are counted, not folded into the error statistics.
            rel = fd.relative_error(a, num, scale)
            rel = torch.where((v == fd.KINK) | ~torch.isfinite(rel), 0.0, rel)
            rel = torch.where(torch.isfinite(a), rel, float("inf"))  # a NaN/Inf backward is as wrong as it gets
            stats[loss] = (a, num, rel, v)
        combined = _combine([stats[loss][3] for loss in losses])
        failed_losses = tuple(loss for loss in losses if bool((stats[loss][3] == fd.FAIL).any()))
        headline = max(losses, key=lambda loss: (int((stats[loss][3] == fd.FAIL).sum()), float(stats[loss][2].max()) if n else 0.0))
        a, num, rel, v = stats[headline]
        abs_err = (a - num).abs().nan_to_num(nan=0.0)
        if n:
            pool = torch.nonzero(v == fd.FAIL).reshape(-1)
            if pool.numel() == 0:
                pool = torch.arange(n, device=self.acc)
            worst_pos = int(pool[rel[pool].argmax()].item())
            worst_index = tuple(int(i) for i in np.unravel_index(idx[worst_pos], shape)) if shape else ()
            analytic_v, numeric_v = float(a[worst_pos].item()), float(num[worst_pos].item())
        else:
            worst_index, analytic_v, numeric_v = None, None, None
        verdicts = torch.full((int(np.prod(shape)) if shape else 1,), fd.UNCHECKED, dtype=torch.long, device=self.acc)
        verdicts[index] = combined
        verdict_np = verdicts.cpu().numpy().reshape(shape)
        counts = count_verdicts(verdict_np)
        n_elements = int(np.prod(shape)) if shape else 1
        return TensorReport(
            name=tname,
            kind="parameter" if leaf[0] == "param" else "input",
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
            failed_losses=failed_losses,
            coverage=coverage_note(n, n_elements, counts["FAIL"]),
            analytic_grad=analytic[headline].cpu().numpy(),
            numeric_grad=per_loss[headline]["numeric"].cpu().numpy().reshape(shape),
            verdicts=verdict_np,
            kinks_fail=self.opts.kinks == "fail",
        )


def _per_output_scaled(weights: torch.Tensor, y0: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Divide each output tensor's weights by its RMS, so every output counts alike in sum(w*y).

    Without this, an output of size 1e-6 next to one of size 1e6 contributes nothing
    visible to the loss, and a backward that ignores its gradient would pass.
    """
    parts = []
    for w, y in zip(torch.split(weights, sizes), torch.split(y0, sizes)):
        rms = float(y.square().mean().sqrt()) if y.numel() else 0.0
        parts.append(w / rms if rms > 0 and math.isfinite(rms) else w)
    return torch.cat(parts) if parts else weights


def _largest(*tensors: torch.Tensor) -> float:
    """The largest finite magnitude among the tensors (0 for none)."""
    return max((float(t.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs().max()) for t in tensors if t.numel()), default=0.0)


def _with_diagnoses(reports: list[TensorReport]) -> list[TensorReport]:
    """Name the pattern of each failing tensor's errors (scaled, transposed, swapped, borders, ...)."""
    out = []
    for rep in reports:
        if rep.n_failed and rep.analytic_grad is not None:
            others = {r.name: r.numeric_grad for r in reports if r is not rep and r.loss == rep.loss}
            rep = replace(rep, diagnosis=diagnose(rep.analytic_grad, rep.numeric_grad, rep.verdicts == fd.FAIL, others))
        out.append(rep)
    return out


def _components(adjacent: np.ndarray) -> list[list[int]]:
    """Connected components of a symmetric boolean adjacency matrix."""
    seen = np.zeros(len(adjacent), dtype=bool)
    groups = []
    for start in range(len(adjacent)):
        if seen[start]:
            continue
        stack, group = [start], []
        seen[start] = True
        while stack:
            node = stack.pop()
            group.append(node)
            for nxt in np.nonzero(adjacent[node] & ~seen)[0]:
                seen[nxt] = True
                stack.append(int(nxt))
        groups.append(sorted(group))
    return groups


def _combine(verdicts: list[torch.Tensor]) -> torch.Tensor:
    """FAIL if any loss failed, else KINK if any saw a kink, else PASS if any verified, else NOISE."""
    stacked = torch.stack(verdicts)
    out = torch.full_like(verdicts[0], fd.NOISE)
    out = torch.where((stacked == fd.PASS).any(0), fd.PASS, out)
    out = torch.where((stacked == fd.KINK).any(0), fd.KINK, out)
    return torch.where((stacked == fd.FAIL).any(0), fd.FAIL, out)


def _cat_differences(parts: list[fd.Differences]) -> fd.Differences:
    return fd.Differences(*(torch.cat([getattr(p, f) for p in parts]) for f in ("central", "right", "left", "noise")))


def _select(d: fd.Differences, pos: torch.Tensor) -> fd.Differences:
    return fd.Differences(d.central[pos], d.right[pos], d.left[pos], d.noise[pos])

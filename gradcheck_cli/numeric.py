"""The numeric side: the base point, the dtype finite differences are taken in, and the differences themselves.

:func:`base_point` evaluates the layer where it is checked (twice: a forward that
changes between calls is nondeterministic, and its spread is allowed for) and draws
the weights of the loss sum(w*y). :func:`numeric_side` decides in which dtype the
finite differences are taken -- float64 where a layer checked below float64 runs
faithfully there, else the layer's own -- and returns the :class:`NumericSide`,
which turns perturbed forwards into per-element slopes of both losses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import fd, grouping
from .environment import Placement
from .errors import LayerError
from .evaluate import Evaluator, chunk_size, chunks, release_free_memory
from .fd import BaseOutputs, Differences
from .guard import Guard
from .inputs import torch_dtype
from .options import CheckOptions, Steps
from .subject import Leaf, Subject

Advance = Callable[[int], None]  # called with the number of elements just differenced


@dataclass(frozen=True)
class BasePoint:
    """The layer's outputs where it is checked, as the layer computes them (float64 copies)."""

    y: torch.Tensor
    spread: torch.Tensor  # |y - y again|: nonzero where the forward is nondeterministic
    weights: torch.Tensor  # of the loss sum(w*y), per output, scaled by each output tensor's RMS
    forward_s: float  # one warm forward's wall time
    notes: tuple[str, ...] = ()


def base_point(subject: Subject, evaluator: Evaluator, seed: int, placement: Placement, guard: Guard) -> BasePoint:
    y0 = guard("forward", evaluator.forward)
    _check_finite(y0, subject.target)
    started = time.perf_counter()
    y0_again = guard("forward", evaluator.forward)
    forward_s = placement.seconds_since(started)
    y0, y0_again = placement.f64(y0), placement.f64(y0_again)
    spread = (y0 - y0_again).abs()
    notes = ()
    if bool((spread > 0).any()):
        notes = (
            f"forward is nondeterministic: two runs at the same point differ by up to {spread.max().item():.3g}; "
            "the comparison allows for it",
        )
    _check_state_unchanged(subject, evaluator)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    m = y0.numel()
    weights = (torch.rand(m, generator=gen, dtype=torch.float64) + 0.5) * (torch.randint(0, 2, (m,), generator=gen) * 2 - 1)
    weights = _per_output_scaled(weights.to(placement.acc), y0, evaluator.out_sizes)
    return BasePoint(y0, spread, weights, forward_s, notes)


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


def _check_finite(y: torch.Tensor, target: str) -> None:
    if y.numel() == 0:
        raise LayerError(
            f"{target} returned an empty tensor (no elements); there is nothing to compare gradients on.",
            "Check the layer's output shape for these inputs.",
        )
    bad = ~torch.isfinite(y)
    if bool(bad.any()):
        raise LayerError(
            f"{target} returned {int(bad.sum())} non-finite value(s) (NaN or Inf) at the check point; "
            "gradients cannot be compared there.",
            "Check the layer's forward, or choose inputs in its domain (a YAML spec can set dist: uniform with low/high).",
        )


def _check_state_unchanged(subject: Subject, evaluator: Evaluator) -> None:
    for (path, before), (_, after) in zip(subject.inputs.tensors(), evaluator.inputs.tensors()):
        if not torch.equal(before, after):
            raise LayerError(
                f"The forward of {subject.target} changed its input {subject.names.get(path, path)} in place; "
                "finite differences need a forward that does not write into its inputs.",
                "Use out-of-place ops on inputs (x = x * 2, not x.mul_(2)).",
            )
    for name, value in subject.layer.params.items():
        if not torch.equal(evaluator.params[name], value):
            raise LayerError(
                f"The forward of {subject.target} changed its own parameter {name!r} in place; "
                "finite differences need a forward that is a pure function of its inputs and parameters.",
                "Do not write into parameters inside forward (use out-of-place ops).",
            )


# --------------------------------------------------------------------------- the numeric side


@dataclass(frozen=True)
class NumericSide:
    """Where and how finite differences are taken: the evaluator, its dtype, step and tolerances, the base outputs."""

    evaluator: Evaluator
    dtype: torch.dtype
    steps: Steps
    base: BaseOutputs
    placement: Placement
    guard: Guard
    notes: tuple[str, ...] = ()

    def singles(self, leaf: Leaf, idx: list[int], step: float, advance: Advance | None = None) -> dict[str, Differences]:
        """Both losses' slopes for every element of ``idx``, one element per pair of forwards (or vmap batch)."""
        parts = []
        for number, part in enumerate(chunks(idx, chunk_size(self.base.y.numel()))):
            if number % 64 == 63:
                release_free_memory()
            parts.append(self._differences(leaf, part, step))
            if advance:
                advance(len(part))
        return {loss: Differences.cat(c[loss] for c in parts) for loss in parts[0]}

    def _differences(self, leaf: Leaf, part: list[int], step: float) -> dict[str, Differences]:
        ev = self.evaluator
        yp, ym, hp, hm = map(self.placement.f64, self.guard("forward", ev.perturbed, leaf, part, step))
        base = self.base
        if ev.probe_error is not None:  # batched and one-at-a-time results differ by rounding: count it as noise
            base = BaseOutputs(base.y, base.weights, torch.maximum(base.out_err, self.placement.f64(ev.probe_error)), base.ulp)
        return fd.loss_differences(yp, ym, base, hp, hm)

    def grouped(
        self, leaf: Leaf, idx: list[int], step: float, budget: int, seed: int, tick: Callable[[int], None] | None = None
    ) -> tuple[dict[str, Differences] | None, grouping.Grouping]:
        """Slopes from moving many elements per forward (see :mod:`.grouping`), or None where no stride fits.

        ``tick(moves)`` is told of every evaluation (for progress)."""
        n = len(idx)
        f64, device = self.placement.f64, self.placement.device
        index = torch.tensor(idx, device=device, dtype=torch.long)
        _, plus, minus, hp, hm = self.evaluator.steps(leaf, index, step)

        def evaluate(segments: list):
            segments = [(pos.to(device), signs.to(device)) for pos, signs in segments]
            if tick is not None:
                tick(sum(len(signs) for _, signs in segments))
            return tuple(map(f64, self.guard("forward", self.evaluator.groups, leaf, index, plus, minus, segments)))

        def assemble(parts):
            return fd.attributed_differences(parts, n, self.base, f64(hp), f64(hm))

        return grouping.group(evaluate, n, self.base.y, self.base.out_err, budget, seed, assemble)

    def outputs_moved(self, leaf: Leaf, idx: list[int]) -> torch.Tensor:
        """(len(idx), M) bool: which outputs each element moves, beyond rounding, at this side's step."""
        f64 = self.placement.f64
        yp, ym, _, _ = map(f64, self.guard("forward", self.evaluator.perturbed, leaf, idx, self.steps.eps))
        noise = 4 * self.base.out_err + (f64(self.evaluator.probe_error) if self.evaluator.probe_error is not None else 0.0)
        return ((yp - self.base.y).abs() > noise) | ((ym - self.base.y).abs() > noise)

    def joint(self, leaf: Leaf, members: list[int], step: float, signs: list[int] | None = None) -> dict[str, Differences]:
        """Both losses' slopes with all ``members`` moved together, member i by signs[i]*step (length-1 Differences)."""
        jp, jm, hp, hm = map(self.placement.f64, self.guard("forward", self.evaluator.joint, leaf, members, step, signs))
        return fd.loss_differences(jp[None], jm[None], self.base, hp[None], hm[None])

    def time_per_element(self, leaf: Leaf, idx: list[int]) -> float | None:
        """Seconds per element of a chunk of ``idx`` on the path that will run, or None where vmap cannot.

        The first 16 elements probe vmap against the loop, then race the two (a loop chunk):
        neither is timed; the whole of ``idx`` is, on the path that won the race."""
        ev = self.evaluator
        probe = idx[:16]
        self.guard("forward", ev.perturbed, leaf, probe, self.steps.eps)
        if not ev.batched:
            return None  # vmap cannot run it (or lost the probe): no race, nothing batched to time
        self.guard("forward", ev.perturbed, leaf, probe, self.steps.eps)
        started = time.perf_counter()
        self.guard("forward", ev.perturbed, leaf, idx, self.steps.eps)
        return self.placement.seconds_since(started) / len(idx)


def numeric_side(subject: Subject, evaluator: Evaluator, base: BasePoint, opts: CheckOptions, placement: Placement, guard: Guard) -> NumericSide:
    """Pick the dtype of the numeric side and build it.

    Unless --numeric-dtype says otherwise, a layer checked below float64 has its numeric
    side computed in float64 when it runs there faithfully: the analytic side (what is being
    checked) stays in the layer's dtype, and the finite differences lose no digits to float32
    rounding.
    """
    dtype = torch_dtype(opts.dtype)
    wanted = torch_dtype(opts.numeric_dtype) if opts.numeric_dtype else dtype
    hi = None if dtype == torch.float64 else _float64_forward(subject, opts, placement)
    if opts.numeric_dtype is None and hi is not None:
        ev64, y64 = hi
        if _faithful_in_float64(base.y, y64, dtype, placement) and _responds_in_float64(ev64, dtype, placement, guard):
            note = (
                f"numeric side computed in float64 (the layer runs in float64 too); the analytic side stays "
                f"{opts.dtype}. Use --numeric-dtype {opts.dtype} to difference in {opts.dtype}"
            )
            outputs = _base_outputs(placement.f64(y64), None, torch.float64, base)
            return NumericSide(ev64, torch.float64, opts.resolved("float64"), outputs, placement, guard, (note,))
    y64 = None if hi is None else placement.f64(hi[1])
    if wanted == dtype:
        return NumericSide(evaluator, dtype, opts.resolved(), _base_outputs(base.y, y64, dtype, base), placement, guard)
    ref_layer = subject.layer.cast(wanted, placement.device)
    ref_inputs = subject.inputs.map_tensors(lambda x: x.to(wanted) if x.is_floating_point() else x)
    ev = Evaluator(ref_layer, ref_layer.params, ref_inputs, opts.seed, placement.device, opts.batch)
    y = placement.f64(guard("forward", ev.forward))
    return NumericSide(ev, wanted, opts.resolved(), _base_outputs(y, y64, wanted, base), placement, guard)


def _base_outputs(y: torch.Tensor, y64: torch.Tensor | None, dtype: torch.dtype, base: BasePoint) -> BaseOutputs:
    """The numeric side's base outputs ``y`` (computed in ``dtype``), with each output's estimated rounding error."""
    out_err = fd.rounding_error(y, dtype)
    if dtype != torch.float64 and y64 is not None and y64.shape == y.shape:
        out_err = torch.maximum(out_err, (y - y64).abs())  # the real rounding error, measured against float64
    out_err = torch.maximum(out_err, base.spread)
    return BaseOutputs(y, base.weights, out_err, fd.ulp_of(y, dtype))


def _float64_forward(subject: Subject, opts: CheckOptions, placement: Placement) -> tuple[Evaluator, torch.Tensor] | None:
    """The layer run in float64 at the same point, or None where it cannot run so."""
    if not placement.has_float64:  # no float64 on this device (MPS)
        return None
    try:
        hi = subject.layer.cast(torch.float64, placement.device)
        hi_inputs = subject.inputs.map_tensors(lambda x: x.double() if x.is_floating_point() else x)
        ev = Evaluator(hi, hi.params, hi_inputs, opts.seed, placement.device, opts.batch)
        with torch.no_grad():
            return ev, ev.forward()
    except Exception:
        return None  # a float32-only layer


def _faithful_in_float64(y_low: torch.Tensor, y64: torch.Tensor, dtype: torch.dtype, placement: Placement) -> bool:
    """float64 outputs that are really float64 (not float32 inside) and agree with the layer's own."""
    if y64.dtype != torch.float64 or y64.shape != y_low.shape or not bool(torch.isfinite(y64).all()):
        return False
    y64 = placement.f64(y64)
    if bool((y64 == y64.float().double()).all()):
        return False  # computed in float32 (or lower) internally
    u = torch.finfo(dtype).eps
    scale = float(y64.abs().max())
    return bool(((y64 - y_low).abs() <= 256 * u * (y64.abs() + scale)).all())


def _responds_in_float64(ev: Evaluator, dtype: torch.dtype, placement: Placement, guard: Guard) -> bool:
    """Does the float64 forward follow changes far below the layer dtype's resolution, linearly?

    Every floating input and parameter is scaled by 1 + k*delta (k = 1, 2, 3; delta a few
    ulps of float32, so below the resolution of every dtype a layer may round to inside,
    and small enough that products of scaled inputs stay linear in it). A layer that is
    float64 throughout answers in proportion; one that rounds to float32 (or lower)
    somewhere inside (x.float()) answers in quantised steps, and its finite differences
    must then be taken at its own steps, not float64 ones.
    """
    delta = 4 * torch.finfo(torch.float32).eps
    tensors = [t for t in (*ev.params.values(), *(t for _, t in ev.inputs.tensors())) if t.is_floating_point()]
    saved = [t.clone() for t in tensors]
    outs = []
    try:
        for k in range(4):
            for t, s in zip(tensors, saved):
                t.copy_(s * (1 + k * delta))
            with torch.no_grad():
                outs.append(placement.f64(guard("forward", ev.forward)))
    finally:
        for t, s in zip(tensors, saved):
            t.copy_(s)
    steps = [o - outs[0] for o in outs[1:]]
    scale = float(steps[-1].abs().max())
    if not math.isfinite(scale) or scale == 0.0:
        return False  # no visible response: cannot vouch for float64
    slack = 1e-2 * scale + 64 * torch.finfo(torch.float64).eps * float(outs[0].abs().max())
    return all(bool(((d - (k + 1) * steps[0]).abs() <= slack).all()) for k, d in enumerate(steps))

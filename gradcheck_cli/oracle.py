"""``--reference REF``: a plain-autograd implementation of the same layer as the oracle, instead of finite differences.

Where finite differences are weakest -- float32/float16/bfloat16 kernels, layers that cannot
run in float64, large outputs -- a slow implementation of the same function through plain
autograd is the better oracle: no step, no truncation, no rounding noise of differences.

:func:`reference_subject` builds the reference like the layer (same constructor arguments),
copies the layer's parameters and buffers into it by name and runs it on the same inputs,
in float64 where it can run there. :func:`reference_side` gives its outputs and its gradients
for the *layer's* output gradients (y of the layer for 1/2 sum y^2, the same w for sum w*y),
so that they are the very numbers the layer's backward must give. :func:`compare` turns two
such sets of numbers into a tensor's report: each element PASSes within the layer dtype's
rtol/atol plus the analytic side's measured rounding; nothing is NOISE for want of a step.
The outputs are compared first: a forward that disagrees with the reference is its own FAIL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch

from .environment import Placement
from .errors import UsageError
from .fd import LOSSES, rounding_error
from .guard import Guard
from .layer import flatten_outputs, make_layer
from .load import load_target
from .report import TensorReport
from .rules import Judge
from .subject import Leaf, Subject
from .tensor_check import Elements, tensor_report
from .verdicts import FAIL


@dataclass(frozen=True)
class ReferenceSide:
    """The reference's outputs (flat, float64) and gradients (per checked tensor, per loss; float64, the tensor's shape)."""

    outputs: torch.Tensor
    out_shapes: tuple[tuple[int, ...], ...]
    grads: Mapping[str, Mapping[str, torch.Tensor]]
    dtype: torch.dtype
    # How far the reference's own outputs move when it runs in the layer's dtype: the rounding a
    # correct implementation in that dtype has (a float16 dot product of 64 terms is 1% off), per output.
    out_rounding: torch.Tensor | float = 0.0


def reference_subject(target: str, subject: Subject, args: Sequence, kwargs: dict | None, placement: Placement, guard: Guard) -> Subject:
    """The reference, built and set like the layer, on the layer's inputs: in float64 where it runs there, else the layer's dtype."""
    obj = guard("import", load_target, target) if isinstance(target, str) else target
    constructed = isinstance(obj, type) and issubclass(obj, torch.nn.Module)  # the layer's constructor arguments, where it takes any
    base = guard("construction", make_layer, obj, target, tuple(args) if constructed else (), dict(kwargs or {}) if constructed else {})
    _same_parameters(subject, base, target)
    layer_dtype = next((subject.tensor(leaf).dtype for leaf in subject.leaves), torch.float64)
    dtypes = [torch.float64] if placement.has_float64 else []
    dtypes += [layer_dtype] if layer_dtype not in dtypes else []
    for dtype in dtypes:
        ref = _built(target, base, subject, dtype, placement)
        if dtype == dtypes[-1] or _runs_in_float64(ref):
            return ref
    raise AssertionError("unreachable: the last dtype is always taken")


def _built(target: str, base, subject: Subject, dtype: torch.dtype, placement: Placement) -> Subject:
    """The reference in ``dtype`` with the layer's parameters and (same-named, same-shaped) buffers."""
    layer = base.cast(dtype, placement.device)
    for name, value in subject.layer.params.items():
        layer.params[name] = value.detach().to(dtype).clone()
    for name, value in subject.layer.buffers.items():
        if name in layer.buffers and layer.buffers[name].shape == value.shape:
            layer.buffers[name] = value.detach().to(dtype if value.is_floating_point() else value.dtype).clone()
    inputs = subject.inputs.map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t)
    return Subject(target, layer, inputs, subject.leaves, (), subject.names)


def _runs_in_float64(ref: Subject) -> bool:
    """Does the reference run in float64 (and return float64)? Some run only in the layer's dtype."""
    try:
        with torch.no_grad():
            ys = flatten_outputs(ref.layer.call(ref.layer.params, ref.inputs, {k: v.clone() for k, v in ref.layer.buffers.items()}), ref.target)
    except Exception:  # noqa: BLE001 -- it raises in float64: use the layer's dtype
        return False
    return all(y.dtype == torch.float64 for y in ys)


def _same_parameters(subject: Subject, reference, target: str) -> None:
    """The reference must have exactly the layer's checked parameters (by name and shape)."""
    mine, theirs = subject.layer.params, reference.params
    missing = [n for n in mine if n not in theirs]
    extra = [n for n in theirs if n not in mine]
    wrong = [n for n in mine if n in theirs and tuple(theirs[n].shape) != tuple(mine[n].shape)]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"it lacks {', '.join(missing)}")
        if extra:
            parts.append(f"it has {', '.join(extra)} too")
        if wrong:
            parts.append(", ".join(f"{n} has shape {list(theirs[n].shape)}, not {list(mine[n].shape)}" for n in wrong))
        raise UsageError(
            f"{target} (the reference): its parameters are not the layer's ({'; '.join(parts)}).",
            "The reference must take the same constructor arguments and name its parameters as the layer does "
            "(they are copied into it by name).",
            key="reference",
        )


def reference_side(
    ref: Subject, y: torch.Tensor, weights: torch.Tensor, weighted_loss: bool, layer_dtype: torch.dtype, seed: int, placement: Placement, guard: Guard
) -> ReferenceSide:
    """The reference's outputs, and its gradients for the layer's output gradients (``y``: the layer's outputs; ``weights``)."""
    tensors, params, inputs = [], dict(ref.layer.params), ref.inputs
    for leaf in ref.leaves:
        t = ref.tensor(leaf).detach().clone().requires_grad_(True)
        tensors.append(t)
        if leaf.kind == "param":
            params[leaf.key] = t
        else:
            inputs = inputs.replaced(leaf.key, t)

    def forward() -> list[torch.Tensor]:
        placement.seed(seed)
        with torch.enable_grad():
            return flatten_outputs(ref.layer.call(params, inputs, {k: v.clone() for k, v in ref.layer.buffers.items()}), ref.target)

    ys = guard("forward", forward)
    sizes = tuple(t.numel() for t in ys)
    outputs = torch.cat([placement.f64(t).reshape(-1) for t in ys])
    if outputs.numel() != y.numel():
        raise UsageError(
            f"{ref.target} (the reference) returns {outputs.numel()} output values where the layer returns {y.numel()}.",
            "The reference must compute the same function: the same outputs, in the same order.",
            key="reference",
        )
    live = [(t, i) for i, t in enumerate(ys) if t.requires_grad]

    def backward(g: torch.Tensor) -> Sequence[torch.Tensor | None]:
        if not live:
            return [None] * len(tensors)
        parts = torch.split(g, list(sizes))
        with torch.enable_grad():
            loss = sum((t * parts[i].reshape(t.shape).to(device=t.device, dtype=t.dtype)).sum() for t, i in live)
            return torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)

    losses = LOSSES if weighted_loss else ("l2",)
    got = {loss: guard("backward", backward, y if loss == "l2" else weights) for loss in losses}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    for i, (leaf, t) in enumerate(zip(ref.leaves, tensors)):
        zero = torch.zeros(t.shape, dtype=torch.float64, device=placement.acc)
        grads[leaf.name] = {"weighted": zero, **{loss: zero if got[loss][i] is None else placement.f64(got[loss][i]) for loss in losses}}
    dtype = ys[0].dtype if ys else torch.float64
    rounding = _rounding_in(ref, layer_dtype, outputs, seed, placement) if dtype != layer_dtype else 0.0
    return ReferenceSide(outputs, tuple(tuple(t.shape) for t in ys), grads, dtype, rounding)


def _rounding_in(ref: Subject, dtype: torch.dtype, outputs: torch.Tensor, seed: int, placement: Placement) -> torch.Tensor | float:
    """|reference in ``dtype`` - reference|, plus a quarter of its RMS (one element can round small by chance); 0 where it cannot run so."""
    try:
        layer = ref.layer.cast(dtype, placement.device)
        inputs = ref.inputs.map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t)
        placement.seed(seed)
        with torch.no_grad():
            ys = flatten_outputs(layer.call(layer.params, inputs, {k: v.clone() for k, v in layer.buffers.items()}), ref.target)
        low = torch.cat([placement.f64(t).reshape(-1) for t in ys])
    except Exception:  # noqa: BLE001 -- a reference that runs only in float64
        return 0.0
    if low.shape != outputs.shape:
        return 0.0
    seen = (low - outputs).abs().nan_to_num(nan=0.0, posinf=0.0)
    return seen + 0.25 * seen.square().mean().sqrt()


def compare(
    leaf: Leaf,
    shape: tuple[int, ...],
    indices: Sequence[int],
    analytic: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    allowance: Mapping[str, torch.Tensor],
    unstable: torch.Tensor,
    rtol: float,
    atol: float,
    layer_scale: Mapping[str, float],
    kinks_fail: bool,
) -> TensorReport:
    """One tensor's elements at ``indices``: the analytic values against the reference's, per loss."""
    idx = torch.tensor(list(indices), dtype=torch.long, device=next(iter(analytic.values())).device)
    elements = {}
    for loss, a_full in analytic.items():
        a = a_full.reshape(-1)[idx]
        r = reference[loss].reshape(-1)[idx].to(a.device)
        noise = allowance[loss].reshape(-1)[idx].to(a.device)
        judge = Judge(rtol, atol, _largest(a, r), layer_scale.get(loss, 0.0))
        verdict = judge.against(a, r, noise)
        verdict[unstable.reshape(-1)[idx].to(a.device) > 0] = FAIL  # two backwards differ: not reentrant (analytic.py)
        elements[loss] = Elements(a, r, verdict, noise)
    grads = {loss: a.reshape(shape) for loss, a in analytic.items()}
    return replace(tensor_report(leaf, shape, tuple(indices), elements, grads, kinks_fail), oracle="reference")


def compare_outputs(y: torch.Tensor, ref: ReferenceSide, layer_dtype: torch.dtype, rtol: float, atol: float) -> list[TensorReport]:
    """The layer's outputs against the reference's, one report per output tensor ("output", or "output0", ...)."""
    reports = []
    start = 0
    for name, shape in zip(output_names(len(ref.out_shapes)), ref.out_shapes):
        n = 1
        for s in shape:
            n *= s
        yl, yr = y[start : start + n], ref.outputs[start : start + n].to(y.device)
        measured = ref.out_rounding[start : start + n].to(y.device) if isinstance(ref.out_rounding, torch.Tensor) else ref.out_rounding
        start += n
        noise = rounding_error(yl, layer_dtype, factor=2.0) + measured + (rounding_error(yr, ref.dtype, factor=2.0) if ref.dtype != torch.float64 else 0.0)
        judge = Judge(rtol, atol, _largest(yl, yr))
        verdict = judge.against(yl, yr, noise)
        leaf = Leaf(name, "output", ())
        report = tensor_report(leaf, tuple(shape), tuple(range(n)), {"l2": Elements(yl, yr, verdict, noise)}, {"l2": yl.reshape(shape)}, False)
        reports.append(replace(report, kind="output", oracle="reference", loss="forward", failed_losses=("forward",) if bool((verdict == FAIL).any()) else ()))
    return reports


def output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


def _largest(*tensors: torch.Tensor) -> float:
    return max((float(t.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs().max()) for t in tensors if t.numel()), default=0.0)

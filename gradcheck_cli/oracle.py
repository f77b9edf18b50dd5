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

from .analytic import pulled_back
from .environment import Placement
from .errors import GradcheckError, LayerError, UsageError
from .fd import LOSSES, rounding_error
from .guard import Guard
from .layer import Layer, make_layer
from .load import load_target
from .report import TensorReport
from .rules import Judge, largest
from .subject import Leaf, Subject
from .tensor_check import Elements, tensor_report
from .verdicts import FAIL, NOISE


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


def reference_subject(
    target: str, subject: Subject, layer_dtype: torch.dtype, args: Sequence, kwargs: dict | None, placement: Placement, guard: Guard
) -> tuple[Subject, tuple[str, ...]]:
    """The reference, built and set like the layer, on the layer's inputs: in float64 where it runs there, else
    in the layer's dtype; and notes (buffers of the layer it has no place for)."""
    try:
        obj = guard("import", load_target, target)
    except GradcheckError as exc:  # say which of the two targets could not be loaded
        kind = LayerError if isinstance(exc, LayerError) else UsageError
        raise kind(exc.detail, exc.hint, key="reference") from None
    constructed = isinstance(obj, type) and issubclass(obj, torch.nn.Module)  # the layer's constructor arguments, where it takes any
    base = guard("construction", make_layer, obj, target, tuple(args) if constructed else (), dict(kwargs or {}) if constructed else {})
    base = _named_as_the_layer(subject, base, target)
    missing = [n for n, v in subject.layer.buffers.items() if n not in base.buffers or base.buffers[n].shape != v.shape]
    notes = (
        (f"the reference has no buffer {', '.join(missing)} of the layer's (or not of its shape): it keeps its own",) if missing and base.module is not None else ()
    )
    dtypes = [torch.float64] if placement.has_float64 else []
    dtypes += [layer_dtype] if layer_dtype not in dtypes else []
    for dtype in dtypes:
        ref = _built(target, base, subject, dtype, placement)
        if dtype == dtypes[-1] or _runs_in_float64(ref, guard):
            return ref, notes
    raise AssertionError("unreachable: the last dtype is always taken")


def _built(target: str, base: Layer, subject: Subject, dtype: torch.dtype, placement: Placement) -> Subject:
    """The reference in ``dtype`` with the layer's parameters and (same-named, same-shaped) buffers."""
    layer = base.cast(dtype, placement.device)
    for name, value in subject.layer.params.items():
        layer.params[name] = value.detach().to(dtype).clone()
    for name, value in subject.layer.buffers.items():
        if name in layer.buffers and layer.buffers[name].shape == value.shape:
            layer.buffers[name] = value.detach().to(dtype if value.is_floating_point() else value.dtype).clone()
    inputs = subject.inputs.map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t)
    return Subject(target, layer, inputs, subject.leaves, (), subject.names)


def _runs_in_float64(ref: Subject, guard: Guard) -> bool:
    """Does the reference run in float64 (and return float64)? Some run only in the layer's dtype."""
    try:
        ys = guard("forward", _forward, ref)
    except LayerError:  # it raises in float64: use the layer's dtype (where an error that stays is reported)
        return False
    return all(y.dtype == torch.float64 for y in ys)


def _forward(ref: Subject) -> list[torch.Tensor]:
    with torch.no_grad():
        return ref.outputs()


def _named_as_the_layer(subject: Subject, reference: Layer, target: str) -> Layer:
    """The reference with its parameters under the layer's names (a tied tensor may be registered first under
    another of its names), refused unless they are exactly the layer's (names and shapes)."""
    mine, theirs = subject.layer.params, reference.params
    # Every name a reference tensor has -> the name it is registered under.
    known = {**{n: n for n in theirs}, **{alias: name for alias, name in reference.ties.items() if name in theirs}}
    aliases = {n: [n, *(a for a, t in subject.layer.ties.items() if t == n)] for n in mine}
    found = {n: next((known[c] for c in aliases[n] if c in known), None) for n in mine}
    missing = [n for n, r in found.items() if r is None]
    extra = [r for r in theirs if r not in found.values()]
    wrong = [n for n, r in found.items() if r is not None and tuple(theirs[r].shape) != tuple(mine[n].shape)]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"it lacks {', '.join(missing)}")
        if extra:
            parts.append(f"it has {', '.join(extra)} too")
        if wrong:
            parts.append(", ".join(f"{n} has shape {list(theirs[found[n]].shape)}, not {list(mine[n].shape)}" for n in wrong))  # type: ignore[index]
        raise UsageError(
            f"{target} (the reference): its parameters are not the layer's ({'; '.join(parts)}).",
            "The reference must take the same constructor arguments and name its parameters as the layer does "
            "(they are copied into it by name).",
            key="reference",
        )
    if all(n == r for n, r in found.items()):
        return reference
    renamed = {n: theirs[r] for n, r in found.items() if r is not None}
    # The reference's own names of each tensor now point at the layer's name.
    ties = {**{alias: n for n, r in found.items() for alias, t in reference.ties.items() if t == r}, **{r: n for n, r in found.items() if r != n}}
    return replace(reference, params=renamed, ties=ties)


def reference_side(
    ref: Subject,
    y: torch.Tensor,
    layer_shapes: Sequence[tuple[int, ...]],
    weights: torch.Tensor,
    weighted_loss: bool,
    layer_dtype: torch.dtype,
    seed: int,
    placement: Placement,
    guard: Guard,
) -> ReferenceSide:
    """The reference's outputs, and its gradients for the layer's output gradients (``y``: the layer's outputs,
    flat, of ``layer_shapes``; ``weights``)."""
    tensors = [ref.tensor(leaf).detach().clone().requires_grad_(True) for leaf in ref.leaves]
    params, inputs = ref.substituted(tensors)

    def forward() -> list[torch.Tensor]:
        placement.seed(seed)
        with torch.enable_grad():
            return ref.outputs(params, inputs)

    ys = guard("forward", forward)
    sizes = tuple(t.numel() for t in ys)
    shapes = tuple(tuple(t.shape) for t in ys)
    if shapes != tuple(layer_shapes):
        raise UsageError(
            f"{ref.target} (the reference) returns outputs of shapes {_shapes(shapes)} where the layer returns {_shapes(layer_shapes)}.",
            "The reference must compute the same function: the same outputs, of the same shapes, in the same order.",
            key="reference",
        )
    custom = _hand_written(ys)
    if custom:
        raise UsageError(
            f"{ref.target} (the reference) computes its gradients with a hand-written backward ({', '.join(custom)}): "
            "compared with it, a wrong backward could pass against itself.",
            "The reference must be plain autograd (torch operations only, no autograd.Function of your own); "
            "override forward in the reference class rather than calling the layer's Function.",
            key="reference",
        )
    outputs = torch.cat([placement.f64(t).reshape(-1) for t in ys])

    def backward(g: torch.Tensor) -> Sequence[torch.Tensor | None]:
        return pulled_back(ys, torch.split(g, list(sizes)), tensors)

    losses = LOSSES if weighted_loss else ("l2",)
    got = {loss: guard("backward", backward, y if loss == "l2" else weights) for loss in losses}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    for i, (leaf, t) in enumerate(zip(ref.leaves, tensors)):
        zero = torch.zeros(t.shape, dtype=torch.float64, device=placement.acc)
        grads[leaf.name] = {"weighted": zero, **{loss: zero if got[loss][i] is None else placement.f64(got[loss][i]) for loss in losses}}
    dtype = ys[0].dtype if ys else torch.float64
    rounding = _rounding_in(ref, layer_dtype, outputs, seed, placement, guard) if dtype != layer_dtype else 0.0
    return ReferenceSide(outputs, shapes, grads, dtype, rounding)


def _hand_written(ys: Sequence[torch.Tensor]) -> list[str]:
    """The autograd.Function classes outside torch in the graph of ``ys`` (a reference must not have any)."""
    seen, found, stack = set(), {}, [t.grad_fn for t in ys if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None) if isinstance(node, torch.autograd.function.BackwardCFunction) else None
        module = getattr(cls, "__module__", "") or ""
        if cls is not None and module != "torch" and not module.startswith("torch."):
            found[cls.__qualname__] = None
        stack.extend(next_fn for next_fn, _ in getattr(node, "next_functions", ()))
    return list(found)


def _shapes(shapes: Sequence[tuple[int, ...]]) -> str:
    return ", ".join(str(list(s)) for s in shapes) or "none"


def _rounding_in(ref: Subject, dtype: torch.dtype, outputs: torch.Tensor, seed: int, placement: Placement, guard: Guard) -> torch.Tensor | float:
    """|reference in ``dtype`` - reference|, plus a quarter of its RMS (one element can round small by chance); 0 where it cannot run so."""
    low_ref = replace(
        ref,
        layer=ref.layer.cast(dtype, placement.device),
        inputs=ref.inputs.map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t),
    )
    placement.seed(seed)
    try:
        ys = guard("forward", _forward, low_ref)
    except LayerError:  # a reference that runs only in float64
        return 0.0
    low = torch.cat([placement.f64(t).reshape(-1) for t in ys])
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
        judge = Judge(rtol, atol, largest(a, r), layer_scale.get(loss, 0.0))
        verdict = judge.against(a, r, noise)
        verdict[unstable.reshape(-1)[idx].to(a.device) > 0] = FAIL  # two backwards differ: not reentrant (analytic.py)
        # No finite reference value (not differentiable there, sqrt at 0): nothing to compare with, never the layer's FAIL.
        verdict[~torch.isfinite(r) & torch.isfinite(a)] = NOISE
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
        judge = Judge(rtol, atol, largest(yl, yr))
        verdict = judge.against(yl, yr, noise)
        leaf = Leaf(name, "output", ())
        report = tensor_report(leaf, tuple(shape), tuple(range(n)), {"l2": Elements(yl, yr, verdict, noise)}, {"l2": yl.reshape(shape)}, False)
        reports.append(replace(report, kind="output", oracle="reference", loss="forward", failed_losses=("forward",) if bool((verdict == FAIL).any()) else ()))
    return reports


def output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


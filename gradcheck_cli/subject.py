"""The layer with its inputs, ready to be checked: which tensors are checked, and how they are called.

:func:`prepare` builds the :class:`Subject` of a check: the layer (constructed, cast
to the check's dtype and device, its parameters set), its inputs (built from their
descriptions, or copies of the tensors given), and the :class:`Leaf` tensors whose
gradients are compared: every floating input and every floating parameter that
requires grad, less those ``only`` leaves out.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .environment import Placement
from .errors import UsageError
from .inputs import InputSpec, build_inputs, parse_input, torch_dtype
from .layer import Layer, make_layer, set_params
from .options import CheckOptions


@dataclass(frozen=True)
class Leaf:
    """A checked tensor: an input (``key`` its position) or a parameter (``key`` its name)."""

    name: str
    kind: str  # "input" or "param"
    key: int | str


@dataclass(frozen=True)
class Subject:
    """What a check works on."""

    target: str
    layer: Layer  # cast to the check's dtype and device
    inputs: tuple  # tensors (contiguous copies) and arguments passed through as they are
    leaves: tuple[Leaf, ...]
    notes: tuple[str, ...] = ()

    def tensor(self, leaf: Leaf) -> torch.Tensor:
        return self.layer.params[leaf.key] if leaf.kind == "param" else self.inputs[leaf.key]

    def sizes_hint(self) -> str:
        sizes = ", ".join(f"input{i} {list(x.shape)}" for i, x in enumerate(self.inputs) if isinstance(x, torch.Tensor))
        return f"Inputs: {sizes}. Use smaller shapes, or --max-elements to sample."


def prepare(
    obj: Any,
    target: str,
    inputs: Sequence,
    opts: CheckOptions,
    placement: Placement,
    *,
    args: Sequence = (),
    kwargs: dict | None = None,
    params: dict | None = None,
) -> Subject:
    """The subject of a check of ``obj`` (a Module, Function or callable) on ``inputs``."""
    dtype = torch_dtype(opts.dtype)
    base = make_layer(obj, target, tuple(args), kwargs)
    layer = base.cast(dtype, placement.device)
    if params:
        set_params(layer, params)
    built = tuple(_materialise(list(inputs), dtype, placement.device, opts.seed))
    _check_arity(base, target, len(built))
    notes = (f"frozen parameter(s) {', '.join(layer.frozen)} (requires_grad=False): not checked",) if layer.frozen else ()
    return Subject(target, layer, built, _leaves(target, layer, built, opts.only), notes)


def _materialise(items: list, dtype: torch.dtype, device: torch.device, seed: int) -> list:
    specs = [parse_input(x) if isinstance(x, str) else InputSpec(value=x) if isinstance(x, (int, float, list)) else x for x in items]
    built = iter(build_inputs([s for s in specs if isinstance(s, InputSpec)], dtype, device, seed))
    out = []
    for s in specs:
        if isinstance(s, InputSpec):
            out.append(next(built))
        elif isinstance(s, torch.Tensor):
            t = s.detach().to(device)
            out.append((t.to(dtype) if t.is_floating_point() else t).clone(memory_format=torch.contiguous_format))
        else:
            out.append(s)  # non-tensor arguments are passed through as they are
    return out


def _check_arity(base: Layer, target: str, given: int) -> None:
    """The layer's forward must take the inputs given: as many, and no keyword it cannot get."""
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
            f"{target} needs keyword argument(s) {', '.join(keyword_only)}, which gradcheck cannot pass.",
            "Give them defaults, or check a small function that calls the layer with them.",
            key="inputs",
        )
    positional = [p for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    if given < len(required):
        missing = ", ".join(required[given:])
        raise UsageError(
            f"{target} takes {len(required)} input(s) ({', '.join(required)}) but {given} were given; missing: {missing}.",
            "Give one input per positional argument, in order: on the command line a shape such as --input 1x100 "
            "(standard normal) or a literal such as --input =4.5; in a spec, one entry under 'inputs:' each.",
            key="inputs",
        )
    if given > len(positional):
        raise UsageError(
            f"{target} takes {len(positional)} input(s) ({', '.join(p.name for p in positional) or 'none'}) but {given} were given.",
            "Give one input per positional argument, in order: remove the extra --input options (or entries under 'inputs:' in a spec).",
            key="inputs",
        )


def _leaves(target: str, layer: Layer, inputs: tuple, only: tuple[str, ...]) -> tuple[Leaf, ...]:
    leaves = [Leaf(f"input{i}", "input", i) for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.is_floating_point()]
    leaves += [Leaf(name, "param", name) for name in layer.params]
    empty = [leaf.name for leaf in leaves if (inputs[leaf.key] if leaf.kind == "input" else layer.params[leaf.key]).numel() == 0]
    if empty:
        raise UsageError(f"{', '.join(empty)} of {target} has no elements; there is nothing to check in it.", "Give inputs with at least one element.")
    if only:
        known = [leaf.name for leaf in leaves]
        unknown = [n for n in only if n not in known]
        if unknown:
            raise UsageError(f"--only {', '.join(unknown)}: no such checked tensor.", f"tensors: {', '.join(known)}.")
        leaves = [leaf for leaf in leaves if leaf.name in only]
    if not leaves:
        raise UsageError(
            f"{target} has nothing differentiable to check: no floating-point input and no floating parameter.",
            "Give at least one floating input (e.g. --input 1x100); integer inputs are passed through unchecked.",
        )
    return tuple(leaves)

"""The layer with its inputs, ready to be checked: which tensors are checked, and how the layer is called.

:func:`prepare` builds the :class:`Subject` of a check: the layer (constructed, cast
to the check's dtype and device, its parameters set), the :class:`~gradcheck_cli.call.Call`
it is called with (positional and keyword arguments, tensors nested in lists and
tuples, any other values passed as they are), and the :class:`Leaf` tensors whose
gradients are compared: every floating input tensor and every floating parameter that
requires grad, less the constant ones and those ``only`` leaves out.

Inputs are named by the layer's own parameter names (``x``, ``grid``, ``coeffs[1][0]``),
read from its signature; where it has none, by position (``input0``), which also
stays an alias of every positional input.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from .call import Call
from .environment import Placement
from .errors import UsageError, suggest
from .inputs import build_call, torch_dtype
from .layer import Layer, flatten_outputs, make_layer, set_params
from .options import CheckOptions


@dataclass(frozen=True)
class Leaf:
    """A checked tensor: an input (``key`` its path in the Call) or a parameter (``key`` its name)."""

    name: str
    kind: str  # "input" or "param"
    key: Any
    aliases: tuple[str, ...] = field(default=(), compare=False)  # other names --only and constant accept


@dataclass(frozen=True)
class Subject:
    """What a check works on."""

    target: str
    layer: Layer  # cast to the check's dtype and device
    inputs: Call  # tensors (contiguous copies) and arguments passed through as they are
    leaves: tuple[Leaf, ...]
    notes: tuple[str, ...] = ()
    names: Mapping[Any, str] = field(default_factory=dict)  # the display name of every input tensor, by path
    left_out: tuple[str, ...] = ()  # the tensors that would be checked but for ``only`` (JUnit <skipped>)

    def tensor(self, leaf: Leaf) -> torch.Tensor:
        return self.layer.params[leaf.key] if leaf.kind == "param" else self.inputs.get(leaf.key)

    def substituted(self, tensors: Sequence[torch.Tensor]) -> tuple[dict[str, torch.Tensor], Call]:
        """The layer's parameters and its call with the checked tensors replaced by ``tensors`` (in ``leaves`` order)."""
        params, inputs = dict(self.layer.params), self.inputs
        for leaf, t in zip(self.leaves, tensors):
            if leaf.kind == "param":
                params[leaf.key] = t
            else:
                inputs = inputs.replaced(leaf.key, t)
        return params, inputs

    def outputs(self, params: dict[str, torch.Tensor] | None = None, inputs: Call | None = None) -> list[torch.Tensor]:
        """The layer's floating outputs at ``params``/``inputs`` (default: its own), its buffers fresh copies
        (a forward may update them in place)."""
        out = self.layer.call(self.layer.params if params is None else params, self.inputs if inputs is None else inputs, {k: v.clone() for k, v in self.layer.buffers.items()})
        return flatten_outputs(out, self.target)

    def sizes_hint(self) -> str:
        sizes = ", ".join(f"{self.names.get(path, path)} {list(t.shape)}" for path, t in self.inputs.tensors())
        return f"Inputs: {sizes}. Use smaller shapes, or --max-elements to sample."


def prepare(
    obj: Any,
    target: str,
    inputs: Sequence,
    opts: CheckOptions,
    placement: Placement,
    *,
    keywords: Mapping[str, Any] | None = None,
    args: Sequence = (),
    kwargs: dict | None = None,
    params: dict | None = None,
) -> Subject:
    """The subject of a check of ``obj`` (a Module, Function or callable) called with ``inputs`` and ``keywords``."""
    dtype = torch_dtype(opts.dtype)
    base = make_layer(obj, target, tuple(args), kwargs)
    layer = base.cast(dtype, placement.device)
    if params:
        set_params(layer, params)
    call, constants = build_call(list(inputs), dict(keywords or {}), dtype, placement.device, opts.seed)
    signature = _signature(base)
    _check_arity(signature, target, call)
    names = _names(signature, call)
    notes = (f"frozen parameter(s) {', '.join(layer.frozen)} (requires_grad=False): not checked",) if layer.frozen else ()
    leaves, left_out = _leaves(target, layer, call, names, constants, opts)
    return Subject(target, layer, call, leaves, notes, {path: name for path, (name, _) in names.items()}, left_out)


def _signature(base: Layer) -> list[inspect.Parameter] | None:
    """The parameters the layer's forward takes (ctx and self left out), or None where they cannot be read."""
    fn = base.module.forward if base.module is not None else base.function_class.forward if base.function_class else base.fn
    try:
        ps = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if base.function_class is not None and base.function_class.setup_context is torch.autograd.function._SingleLevelFunction.setup_context:
        ps = ps[1:]  # drop ctx
    return ps


def _check_arity(ps: list[inspect.Parameter] | None, target: str, call: Call) -> None:
    """The layer's forward must take the arguments given: as many, and only keywords it has."""
    if ps is None:
        return
    given = len(call.args)
    positional = [p for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_more = any(p.kind == p.VAR_POSITIONAL for p in ps)
    takes_any_keyword = any(p.kind == p.VAR_KEYWORD for p in ps)
    known = {p.name for p in ps if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [k for k in call.kwargs if k not in known and not takes_any_keyword]
    if unknown:
        near = suggest(unknown[0], sorted(known), "")  # a misspelt keyword (--input gird=...): the one meant
        near = f"; {near}" if near.startswith("did you mean") else "."
        raise UsageError(
            f"{target} has no argument named {unknown[0]!r} (it takes: {', '.join(p.name for p in ps) or 'none'}){near}",
            "Name inputs by the layer's own argument names (--input NAME=..., or 'name:' in a spec).",
            key="inputs",
        )
    filled = {p.name for p in positional[:given]} | set(call.kwargs)
    twice = [p.name for p in positional[:given] if p.name in call.kwargs]
    if twice:
        raise UsageError(f"{target}: argument {twice[0]!r} is given both by position and by name.", "Give it once.", key="inputs")
    keyword_only = [p.name for p in ps if p.default is p.empty and p.kind == p.KEYWORD_ONLY and p.name not in filled]
    if keyword_only:
        raise UsageError(
            f"{target} needs keyword argument(s) {', '.join(keyword_only)}, which were not given.",
            f"Give them by name: --input {keyword_only[0]}=... on the command line, an input with 'name: {keyword_only[0]}' "
            "in a spec, or keywords={...} in Python.",
            key="inputs",
        )
    missing = [p.name for p in ps if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in filled]
    if missing:
        required = [p.name for p in ps if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        raise UsageError(
            f"{target} takes {len(required)} input(s) ({', '.join(required) or 'none'}) but {given} were given; missing: {', '.join(missing)}.",
            "Give one input per argument, in order: on the command line a shape such as --input 1x100 (standard normal), "
            "a literal such as --input =4.5, or a keyword such as --input mode=:bilinear; in a spec, one entry under 'inputs:' each.",
            key="inputs",
        )
    if given > len(positional) and not takes_more:
        raise UsageError(
            f"{target} takes {len(positional)} input(s) ({', '.join(p.name for p in positional) or 'none'}) but {given} were given.",
            "Give one input per positional argument, in order: remove the extra --input options (or entries under 'inputs:' in a spec).",
            key="inputs",
        )


def _names(ps: list[inspect.Parameter] | None, call: Call) -> dict[Any, tuple[str, tuple[str, ...]]]:
    """Each input tensor's name and aliases, by path: the argument's name (``grid``), nested as ``coeffs[1][0]``."""
    positional = [p for p in ps or () if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = next((p.name for p in ps or () if p.kind == p.VAR_POSITIONAL), None)
    names = {}
    for path, _ in call.tensors():
        nested = "".join(f"[{i}]" for i in path[2:])
        if path[0] == "kwargs":
            names[path] = (f"{path[1]}{nested}", ())
            continue
        i = path[1]
        legacy = f"input{i}{nested}"
        if i < len(positional):
            base = positional[i].name
        elif varargs is not None and varargs != "args":  # forward(self, *xs): xs[0]; a generic *args says nothing
            base = f"{varargs}[{i - len(positional)}]"
        else:
            base = f"input{i}"
        names[path] = (f"{base}{nested}", (legacy,) if base != f"input{i}" else ())
    return names


def tensor_names(obj: Any, target: str, inputs: Sequence) -> tuple[tuple[str, ...], ...]:
    """Every tensor ``--only`` and ``--constant`` name for ``obj`` (a Module instance, a Function,
    a callable) called with ``inputs``: each one's names, the one it is shown by first, then its
    aliases (``input0``, a tied parameter's other names). Nothing of the layer runs but its
    signature; the inputs are built on the CPU (their names do not depend on dtype or device)."""
    base = make_layer(obj, target)
    call, _ = build_call(list(inputs), {}, torch.float64, torch.device("cpu"), 0)
    _, _, known = _candidates(base, call, _names(_signature(base), call))
    every = {id(leaf): leaf for leaf in known.values()}
    return tuple((leaf.name, *leaf.aliases) for leaf in every.values())


def _candidates(layer: Layer, call: Call, names: dict) -> tuple[list[Leaf], list[Leaf], dict[str, Leaf]]:
    """The floating inputs, every tensor that could be checked, and each tensor by every name that names it."""
    every = [(Leaf(names[path][0], "input", path, names[path][1]), t) for path, t in call.tensors()]
    inputs = [leaf for leaf, t in every if t.is_floating_point()]
    # A tied parameter is one tensor: --only and --constant take it by any of its names.
    leaves = inputs + [Leaf(name, "param", name, tuple(a for a, t in layer.ties.items() if t == name)) for name in layer.params]
    known = {n: leaf for leaf in [*(leaf for leaf, _ in every), *leaves] for n in (leaf.name, *leaf.aliases)}
    return inputs, leaves, known


def _leaves(target: str, layer: Layer, call: Call, names: dict, constants: frozenset, opts: CheckOptions) -> tuple[tuple[Leaf, ...], tuple[str, ...]]:
    """The tensors to check, and those that ``only`` leaves out."""
    inputs, leaves, known = _candidates(layer, call, names)
    for option, wanted in (("constant", opts.constant), ("only", opts.only)):
        unknown = [n for n in wanted if n not in known]
        if unknown:
            names = ", ".join(repr(n) for n in unknown)
            raise UsageError(
                f"{names}: no such checked tensor of {target}.",
                f"{suggest(unknown[0], [leaf.name for leaf in leaves], 'its tensors')}",
                key=option,
            )
    constant = {known[n].name for n in opts.constant} | {leaf.name for leaf in inputs if leaf.key in constants}
    leaves = [leaf for leaf in leaves if leaf.name not in constant]
    empty = [leaf.name for leaf in leaves if (call.get(leaf.key) if leaf.kind == "input" else layer.params[leaf.key]).numel() == 0]
    if empty:
        raise UsageError(f"{', '.join(empty)} of {target} has no elements; there is nothing to check in it.", "Give inputs with at least one element.")
    left_out: list[str] = []
    if opts.only:
        chosen = {known[n].name for n in opts.only}
        left_out = [leaf.name for leaf in leaves if leaf.name not in chosen]
        leaves = [leaf for leaf in leaves if leaf.name in chosen]
    if not leaves:
        raise UsageError(
            f"{target} has nothing differentiable to check: no floating-point input and no floating parameter"
            + (" that is not constant." if constant else "."),
            "Give at least one floating input (e.g. --input 1x100); integer inputs are passed through unchecked.",
        )
    return tuple(leaves), tuple(left_out)

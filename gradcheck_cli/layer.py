"""Step 2: turn a loaded object into a pure function of (parameters, inputs).

The user's module is never changed: parameters and buffers are copied (cast to
the check's dtype and device) and passed in with
:func:`torch.func.functional_call`, which swaps them in only for the duration
of one call.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.func import functional_call

from .call import Call
from .errors import LayerError, UsageError, suggest


@dataclass
class Layer:
    """A layer ready to be called functionally.

    ``params`` are the floating parameters (checked), ``buffers`` the rest of
    the module state (passed through).  ``call(params, inputs)`` evaluates it.
    """

    name: str
    module: torch.nn.Module | None
    fn: Callable[..., Any]
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    function_class: type | None = None
    frozen: tuple[str, ...] = ()  # floating parameters with requires_grad=False: not checked
    # Tied tensors: every other name of a parameter or buffer -> the one name it is checked under
    # (a tied embedding and output projection, a tied autoencoder's decoder weight).
    ties: dict[str, str] = field(default_factory=dict)

    def state(self, params: dict[str, torch.Tensor], buffers: dict | None = None) -> dict[str, torch.Tensor]:
        """Every tensor of the module by every name it has: a tied tensor is the same tensor under all of them."""
        state = {**(self.buffers if buffers is None else buffers), **params}
        state.update({alias: state[name] for alias, name in self.ties.items() if name in state})
        return state

    def call(self, params: dict[str, torch.Tensor], inputs: Call, buffers: dict | None = None) -> Any:
        if self.module is None:
            return inputs(self.fn)
        return functional_call(self.module, self.state(params, buffers), tuple(inputs.args), dict(inputs.kwargs), strict=False)

    def bound(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor] | None = None) -> Callable[[Call], Any]:
        """A fast callable of the inputs alone, with ``params`` (the very tensors) in place.

        For a Module this is a private deep copy with the tensors swapped in once, so
        a loop that perturbs ``params`` in place pays no per-call functional_call
        cost and the user's module is never touched. Falls back to functional_call
        for modules that cannot be deep-copied.
        """
        if self.module is None:
            return lambda inputs: inputs(self.fn)
        buffers = self.buffers if buffers is None else buffers
        try:
            import copy

            from torch.nn.utils._named_member_accessor import NamedMemberAccessor

            twin = copy.deepcopy(self.module)
            NamedMemberAccessor(twin).swap_tensors_dict(self.state(params, buffers), allow_missing=True)
        except Exception:
            return lambda inputs: self.call(params, inputs, buffers)
        return lambda inputs: inputs(twin)

    def cast(self, dtype: torch.dtype, device: torch.device) -> "Layer":
        """A copy of the state in ``dtype`` on ``device`` (floating tensors only change dtype)."""
        return Layer(
            self.name,
            self.module,
            self.fn,
            {k: _cast(v, dtype, device) for k, v in self.params.items()},
            {k: _cast(v, dtype, device) for k, v in self.buffers.items()},
            self.function_class,
            self.frozen,
            dict(self.ties),
        )


def _cast(t: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = t.detach()
    if t.is_floating_point():
        return t.to(device=device, dtype=dtype).clone(memory_format=torch.contiguous_format)
    return t.to(device=device).clone(memory_format=torch.contiguous_format)


def make_layer(obj: object, name: str, args: tuple = (), kwargs: dict | None = None) -> Layer:
    """Wrap a Module class or instance, an autograd.Function subclass or a callable."""
    kwargs = dict(kwargs or {})
    owner = getattr(obj, "__self__", None)
    if getattr(obj, "__name__", None) == "apply" and isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        obj = owner  # MyFunction.apply: the Function itself (its forward's signature names the inputs)
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        obj = instantiate(obj, name, args, kwargs)
    elif args or kwargs:
        raise UsageError(
            f"{name} is not an nn.Module class, so constructor args/kwargs cannot be applied to it.",
            "Remove 'args'/'kwargs' from the spec, or point 'layer' at the Module class.",
            key="args/kwargs",
        )
    if isinstance(obj, torch.nn.Module):
        _check_materialised(obj, name)
        named = dict(obj.named_parameters(remove_duplicate=True))
        # Parameters that are not floating, or frozen (requires_grad=False), have no gradient
        # to check: they are passed through like buffers.
        params = {k: v for k, v in named.items() if v.is_floating_point() and v.requires_grad}
        passed = {k: v for k, v in named.items() if k not in params}
        buffers = dict(obj.named_buffers(remove_duplicate=True))
        layer = Layer(name, obj, obj, params, {**buffers, **passed}, ties=_ties(obj))
        layer.frozen = tuple(k for k, v in passed.items() if v.is_floating_point())
        return layer
    if isinstance(obj, type) and issubclass(obj, torch.autograd.Function):
        cls = obj
        # Look ``apply`` up at call time, so batched evaluation can swap it (evaluate.py).
        return Layer(name, None, lambda *xs, **kw: cls.apply(*xs, **kw), {}, {}, function_class=cls)
    if isinstance(obj, type):
        raise UsageError(
            f"{name} is a class but neither an nn.Module nor a torch.autograd.Function.",
            "Point the target at an nn.Module, an autograd.Function subclass or a function of tensors.",
        )
    if not callable(obj):
        raise UsageError(
            f"{name} is a {type(obj).__name__}, not something that can be called.",
            "Point the target at an nn.Module, an autograd.Function subclass or a function of tensors.",
        )
    return Layer(name, None, obj, {}, {})


def _check_materialised(module: torch.nn.Module, name: str) -> None:
    """Parameters and buffers must hold values: not lazy (uninitialised), not on the meta device."""
    if "_parameters" not in vars(module):
        raise LayerError(
            f"{name} is an nn.Module whose __init__ never called super().__init__(): it has no parameters to check.",
            "Call super().__init__() first in the layer's __init__.",
        )
    try:
        state = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    except Exception as exc:
        raise LayerError(f"Listing the parameters of {name} raised {type(exc).__name__}: {exc}.", "Check the module's __getattr__ and its submodules.") from exc
    lazy = [k for k, v in state if torch.nn.parameter.is_lazy(v)]
    if lazy:
        raise UsageError(
            f"{name} has uninitialised lazy parameters ({', '.join(lazy[:4])}): a lazy module (nn.LazyLinear, ...) "
            "only gets its shapes from its first forward.",
            "Give the sizes in the constructor (nn.Linear(in, out) instead of nn.LazyLinear(out)), or check an "
            "instance that has run once on an example input.",
        )
    meta = [k for k, v in state if v.is_meta]
    if meta:
        raise UsageError(
            f"{name} has parameters or buffers on the meta device ({', '.join(meta[:4])}): they hold no values, "
            "so there is nothing to differentiate.",
            "Build the module on a real device, or call module.to_empty(device='cpu') and initialise it first.",
        )


def _ties(module: torch.nn.Module) -> dict[str, str]:
    """alias -> the first name, for every parameter and buffer registered under more than one name."""
    first: dict[int, str] = {}
    ties = {}
    for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        if id(t) in first:
            ties[name] = first[id(t)]
        else:
            first[id(t)] = name
    return ties


def instantiate(cls: type, name: str, args: tuple, kwargs: dict) -> torch.nn.Module:
    """Build a Module; a constructor that needs arguments gets a clear message."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            params = list(signature.parameters.values())
            # The required arguments not given (by position or by name): those the message says it needs.
            positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            given = set(positional[: len(args)]) | set(kwargs)
            missing = [
                p.name
                for p in params
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in given
            ]
            needs = f" (it needs: {', '.join(missing)})" if missing else ""
            # A misspelt keyword (--init scael=0.5): the parameter it was meant for.
            takes_any = any(p.kind == p.VAR_KEYWORD for p in params)
            named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            unknown = [k for k in kwargs if k not in named] if not takes_any else []
            near = f"; {suggest(unknown[0], named, 'it takes')}" if unknown else "."
            raise UsageError(
                f"Cannot construct {name}: {exc}{needs}{near}",
                "Give them on the command line with --init (--init 9 --init sigma=2.0), or in a YAML spec with 'args:' / 'kwargs:' (see the README, 'YAML specs').",
                key="args/kwargs",
            ) from None
    from .guard import guarded

    return guarded(f"Constructing {name}", cls, *args, **kwargs)


def set_params(layer: Layer, values: dict[str, Any], where: str = "params") -> None:
    """Overwrite (copies of) named parameters with given values, shape-checked."""
    for pname, value in values.items():
        pname = layer.ties.get(pname, pname)  # a tied parameter is set under the name it is checked by
        state = layer.buffers if pname in layer.frozen else layer.params
        if pname not in state:
            hint = suggest(pname, layer.params, "parameters")
            raise UsageError(f"{layer.name} has no floating parameter {pname!r}.", hint, key=f"{where}.{pname}")
        old = state[pname]
        new = torch.as_tensor(value, dtype=old.dtype, device=old.device)
        if new.shape != old.shape:
            if new.numel() == 1:
                new = new.reshape(()).expand(old.shape)
            else:
                raise UsageError(
                    f"value has shape {list(new.shape)}, parameter has shape {list(old.shape)}.",
                    "Give a value of the parameter's shape (or a single number).",
                    key=f"{where}.{pname}",
                )
        state[pname] = new.clone()


def flatten_outputs(out: Any, name: str) -> list[torch.Tensor]:
    """The floating tensors of a layer's output (tensor, tuple/list/dict of them)."""
    found: list[torch.Tensor] = []
    others: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            if o.is_complex():
                raise UsageError(
                    f"{name} returned a complex tensor; gradcheck checks real-valued layers only.",
                    "Return torch.view_as_real(y) (real and imaginary parts as a last axis of 2) to check it.",
                )
            if o.is_floating_point():
                found.append(o)
            else:
                others.append(f"a {str(o.dtype).replace('torch.', '')} tensor")
        elif isinstance(o, (tuple, list)):
            for item in o:
                walk(item)
        elif isinstance(o, dict):
            for item in o.values():
                walk(item)
        elif o is not None:
            others.append(f"a {type(o).__name__}")

    walk(out)
    if not found:
        what = ", ".join(others) if others else "nothing"
        raise LayerError(
            f"{name} returned {what}; there is no floating-point tensor output to differentiate.",
            "A layer must return a floating tensor (or a tuple/list of tensors).",
        )
    return found

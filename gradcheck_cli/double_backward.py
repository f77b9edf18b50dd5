"""``--order 2``: the layer's backward, as a layer of its own, to check its derivative (double backward).

A custom ``autograd.Function`` whose backward is right can still have a wrong derivative
of its backward -- a value saved on ``ctx`` in the forward (computed without autograd, so
double backward ignores how it depends on the input), ``x.detach()`` or an in-place op
on a saved tensor inside backward, ``@once_differentiable`` -- and gradient penalties,
MAML and Hessian-vector products are then silently wrong.

:func:`backward_subject` turns the check's :class:`~gradcheck_cli.subject.Subject` into
another one: the function

    B(x..., p..., v) = the layer's gradients at (x, p) for the output gradient v

(one forward and one ``torch.autograd.grad(..., create_graph=True)`` per call), whose
own hand-built graph is the layer's double backward. Checking B exactly as a layer is
checked -- its analytic gradients against central differences of B, element by element,
both losses -- checks the double backward, at O(elements) evaluations of the backward
and never a Hessian. Its tensors are the layer's checked ones (same names) and the
output gradient ``grad_output`` (the derivative of B in v is the backward itself,
differentiated once more: a backward computed outside autograd gets it wrong too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .call import Call
from .environment import Placement
from .guard import Guard
from .layer import Layer, flatten_outputs
from .subject import Leaf, Subject

# The name of the output gradient among the tensors of the double-backward check ("grad_output0", ... for several outputs).
GRAD_OUTPUT = "grad_output"


@dataclass
class BackwardLayer(Layer):
    """The backward of ``inner`` (a layer and its fixed arguments) as a function of its checked tensors and v."""

    inner: Subject | None = field(default=None, repr=False)
    seed: int = 0
    placement: Placement | None = field(default=None, repr=False)

    def cast(self, dtype: torch.dtype, device: torch.device) -> "BackwardLayer":
        """The same backward with the layer's state and its other arguments in ``dtype`` (the numeric side's)."""
        assert self.inner is not None and self.placement is not None
        inner = self.inner
        layer = inner.layer.cast(dtype, device)
        inputs = inner.inputs.map_tensors(lambda t: t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device))
        moved = Subject(inner.target, layer, inputs, inner.leaves, inner.notes, inner.names)
        return _backward_layer(moved, self.seed, self.placement, self.name)


def _backward_layer(inner: Subject, seed: int, placement: Placement, name: str) -> BackwardLayer:
    leaves, layer = inner.leaves, inner.layer
    n = len(leaves)

    def backward_of_layer(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xs, vs = list(tensors[:n]), tensors[n:]
        with torch.enable_grad():
            # Inside the analytic side the tensors carry the outer graph (use them as they are);
            # at a finite-difference point they are plain values that must require grad here.
            xs = [x if x.requires_grad else x.detach().requires_grad_(True) for x in xs]
            params, inputs = dict(layer.params), inner.inputs
            for leaf, x in zip(leaves, xs):
                if leaf.kind == "param":
                    params[leaf.key] = x
                else:
                    inputs = inputs.replaced(leaf.key, x)
            placement.seed(seed)
            buffers = {k: v.clone() for k, v in layer.buffers.items()}
            ys = flatten_outputs(layer.call(params, inputs, buffers), inner.target)
            pairs = [(y, v.to(y.dtype).reshape(y.shape)) for y, v in zip(ys, vs) if y.requires_grad]
            grads: Any = [None] * n
            if pairs:
                grads = torch.autograd.grad([y for y, _ in pairs], xs, [v for _, v in pairs], create_graph=True, allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs))

    return BackwardLayer(name, None, backward_of_layer, {}, {}, inner=inner, seed=seed, placement=placement)


def backward_subject(subject: Subject, seed: int, placement: Placement, guard: Guard) -> tuple[Subject, tuple[str, ...]]:
    """The subject of the double-backward check of ``subject`` (its backward, at random output gradients),
    and the names of the output gradients among its tensors."""
    layer = subject.layer

    def forward() -> list[torch.Tensor]:
        placement.seed(seed)
        with torch.no_grad():
            return flatten_outputs(layer.call(layer.params, subject.inputs, {k: v.clone() for k, v in layer.buffers.items()}), subject.target)

    outputs = guard("forward", forward)
    gen = torch.Generator(device="cpu").manual_seed(seed + 5)
    vs = [torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device=y.device, dtype=y.dtype) for y in outputs]
    xs = [subject.tensor(leaf).detach().clone() for leaf in subject.leaves]
    taken = {leaf.name for leaf in subject.leaves}
    base = GRAD_OUTPUT
    while base in taken or any(name.startswith(base) for name in taken):
        base += "_"  # the layer has an input of that name already
    names = [base] if len(vs) == 1 else [f"{base}{i}" for i in range(len(vs))]
    leaves = tuple(Leaf(leaf.name, "input", ("args", i), leaf.aliases) for i, leaf in enumerate(subject.leaves))
    leaves += tuple(Leaf(name, "input", ("args", len(xs) + i)) for i, name in enumerate(names))
    call = Call(tuple(xs + vs))
    backward = _backward_layer(subject, seed, placement, f"the backward of {subject.target}")
    return Subject(f"the backward of {subject.target}", backward, call, leaves, (), {leaf.key: leaf.name for leaf in leaves}), tuple(names)

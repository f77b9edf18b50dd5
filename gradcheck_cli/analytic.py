"""The analytic side: the gradients the layer's own backward gives, for both losses.

One forward with autograd recording, then one backward per loss through the layer's
hand-written backward, in the layer's dtype -- plus a second backward of the first
loss, whose difference from the first (the spread) shows a nondeterministic backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from .environment import Placement
from .guard import Guard
from .layer import flatten_outputs
from .subject import Subject


@dataclass(frozen=True)
class Analytic:
    """Per checked tensor (by name): its gradient under each loss, and the spread between two backwards.

    All float64 on the accumulation device, in the tensor's shape. ``layer_scale`` is the
    largest gradient of any checked tensor, per loss.
    """

    grads: Mapping[str, Mapping[str, torch.Tensor]]
    spread: Mapping[str, torch.Tensor]
    layer_scale: Mapping[str, float]
    notes: tuple[str, ...] = ()


def analytic_side(subject: Subject, weights: torch.Tensor, weighted_loss: bool, seed: int, placement: Placement, guard: Guard) -> Analytic:
    leaves = subject.leaves
    checked_params = {leaf.key for leaf in leaves if leaf.kind == "param"}
    params = {k: v.detach().clone().requires_grad_(k in checked_params) for k, v in subject.layer.params.items()}
    inputs = list(subject.inputs)
    tensors = []
    for leaf in leaves:
        if leaf.kind == "input":
            inputs[leaf.key] = inputs[leaf.key].detach().clone().requires_grad_(True)
            tensors.append(inputs[leaf.key])
        else:
            tensors.append(params[leaf.key])

    def forward():
        placement.seed(seed)
        with torch.enable_grad():
            buffers = {k: v.clone() for k, v in subject.layer.buffers.items()}  # the forward may update them
            return flatten_outputs(subject.layer.call(params, inputs, buffers), subject.target)

    ys = guard("forward", forward)
    live = [y for y in ys if y.requires_grad]
    notes = []
    if not live:
        notes.append("the layer's output does not require grad: its backward is never called (analytic gradients are all zero)")

    def backward(grad_outputs):
        if not live:
            return [None] * len(tensors)
        # Backpropagate the scalar sum(y * g): the layer receives exactly g as its output
        # gradient (and torch skips a slow first-call import that tensor grad_outputs trigger).
        loss = sum((y * g.reshape(y.shape).to(y.dtype)).sum() for y, g in zip(ys, grad_outputs) if y.requires_grad)
        return torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)

    l2_out = [y.detach() for y in ys]
    g1 = guard("backward", backward, l2_out)
    g1_again = guard("backward", backward, l2_out)
    w_parts = list(torch.split(weights, [y.numel() for y in ys]))
    gw = guard("backward", backward, w_parts) if weighted_loss else [None] * len(tensors)
    grads, spread = {}, {}
    for leaf, t, a, a2, b in zip(leaves, tensors, g1, g1_again, gw):
        zero = torch.zeros(t.shape, dtype=torch.float64, device=placement.acc)
        if a is None and live:
            notes.append(f"backward returned no gradient (None) for {leaf.name}: treated as zero")
        a64 = zero if a is None else placement.f64(a)
        a2_64 = zero if a2 is None else placement.f64(a2)
        grads[leaf.name] = {"l2": a64, "weighted": zero if b is None else placement.f64(b)}
        # Where the backward returned NaN/Inf the element fails (rules._broken_fails); no spread to measure.
        spread[leaf.name] = (a64 - a2_64).abs().nan_to_num(nan=0.0, posinf=0.0)
        if bool((spread[leaf.name] > 0).any()):
            notes.append(f"backward is nondeterministic for {leaf.name}: two runs differ by up to {spread[leaf.name].max().item():.3g}")
    scale = {loss: max(_largest(g[loss]) for g in grads.values()) for loss in ("l2", "weighted")}
    return Analytic(grads, spread, scale, tuple(notes))


def _largest(t: torch.Tensor) -> float:
    """The largest finite magnitude in ``t`` (0 for none): a NaN from a broken backward sets no scale."""
    return float(t.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs().max()) if t.numel() else 0.0

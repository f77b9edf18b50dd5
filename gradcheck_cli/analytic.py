"""The analytic side: the gradients the layer's own backward gives, for both losses.

One forward with autograd recording, then one backward per loss through the layer's
hand-written backward, in the layer's dtype. Two more things are measured, because the
analytic side is what is being checked and its own rounding is no bug:

* a second backward of the first loss: the two may differ by what real nondeterminism
  produces (atomics, reduction order: a few ulps of the gradient's scale), which is
  allowed for; a backward whose calls differ by more is not reentrant (it keeps state
  between calls), and that is a FAIL, never "noise";
* below float64, the backward's rounding: each loss's output gradient scaled by a few
  factors c (1.1, 0.9, ...) gives c times the same gradient in exact arithmetic, so
  |a(c g)/c - a(g)| samples the rounding of the backward's reductions -- in bfloat16 a
  sum over a batch of 256 can be 40% off the exact value -- and it is added to the
  noise allowance of each element (a wrong backward is wrong by the same factor at every
  scale, so it does not hide there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .environment import Placement
from .guard import Guard
from .layer import flatten_outputs
from .rules import largest
from .subject import Subject


@dataclass(frozen=True)
class Analytic:
    """Per checked tensor (by name): its gradient under each loss, and the spread between two backwards.

    All float64 on the accumulation device, in the tensor's shape. ``layer_scale`` is the
    largest gradient of any checked tensor, per loss.
    """

    grads: Mapping[str, Mapping[str, torch.Tensor]]
    spread: Mapping[str, torch.Tensor]  # between two backwards, as far as nondeterminism explains it
    rounding: Mapping[str, Mapping[str, torch.Tensor]]  # the backward's own rounding, per loss (0 in float64)
    unstable: Mapping[str, torch.Tensor]  # how far two backwards differ where nondeterminism cannot explain it (else 0)
    layer_scale: Mapping[str, float]
    notes: tuple[str, ...] = ()

    def allowance(self, name: str, loss: str) -> torch.Tensor:
        """What an element's analytic value may be off by without a bug: nondeterminism and rounding."""
        return self.spread[name] + self.rounding[name][loss]


# Output-gradient scales whose results sample the backward's rounding (not powers of two:
# those scale exactly and would change no rounding at all).
PROBE_SCALES = (1.1, 0.9, 1.3, 0.7)
# Two backwards at the same point may differ by up to this many ulps of the tensor's largest
# gradient (atomics, reduction order); a larger difference means the backward keeps state.
NONDETERMINISM_ULPS = 64


def analytic_side(subject: Subject, weights: torch.Tensor, weighted_loss: bool, seed: int, placement: Placement, guard: Guard) -> Analytic:
    leaves = subject.leaves
    checked_params = {leaf.key for leaf in leaves if leaf.kind == "param"}
    params = {k: v.detach().clone().requires_grad_(k in checked_params) for k, v in subject.layer.params.items()}
    inputs = subject.inputs
    tensors = []
    for leaf in leaves:
        if leaf.kind == "input":
            tensors.append(inputs.get(leaf.key).detach().clone().requires_grad_(True))
            inputs = inputs.replaced(leaf.key, tensors[-1])
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
        return pulled_back(ys, grad_outputs, tensors)

    outs = {"l2": [y.detach() for y in ys], "weighted": list(torch.split(weights, [y.numel() for y in ys]))}
    losses = ("l2", "weighted") if weighted_loss else ("l2",)
    first = {loss: guard("backward", backward, outs[loss]) for loss in losses}
    again = guard("backward", backward, outs["l2"])
    low = live and any(t.dtype != torch.float64 for t in tensors)
    probes = {loss: [guard("backward", backward, [g * c for g in outs[loss]]) for c in PROBE_SCALES] for loss in losses} if low else {}
    grads, spread, rounding, unstable = {}, {}, {}, {}
    f64 = placement.f64
    for i, (leaf, t) in enumerate(zip(leaves, tensors)):
        zero = torch.zeros(t.shape, dtype=torch.float64, device=placement.acc)
        if first["l2"][i] is None and live:
            constant = f"; if it is a constant (a fixed filter, a mask), say so: --constant {leaf.name} (in a spec, constant: true)" if leaf.kind == "input" else ""
            notes.append(f"backward returned no gradient (None) for {leaf.name}: treated as zero{constant}")
        got = {loss: zero if first[loss][i] is None else f64(first[loss][i]) for loss in losses}
        grads[leaf.name] = {"weighted": zero, **got}
        a2 = zero if again[i] is None else f64(again[i])
        # Where the backward returned NaN/Inf the element fails (rules._broken_fails); no spread to measure.
        diff = (got["l2"] - a2).abs().nan_to_num(nan=0.0, posinf=0.0)
        bound = NONDETERMINISM_ULPS * torch.finfo(t.dtype).eps * largest(got["l2"])
        unstable[leaf.name] = torch.where(diff > bound, diff, 0.0)
        spread[leaf.name] = torch.clamp(diff, max=bound)
        if bool((diff > 0).any()) and not bool(unstable[leaf.name].any()):
            notes.append(f"backward is nondeterministic for {leaf.name}: two runs differ by up to {diff.max().item():.3g}; the comparison allows for it")
        rounding[leaf.name] = {loss: _rounding(grads[leaf.name][loss], [p[i] for p in probes.get(loss, [])], f64) for loss in ("l2", "weighted")}
    scale = {loss: max(largest(g[loss]) for g in grads.values()) for loss in ("l2", "weighted")}
    return Analytic(grads, spread, rounding, unstable, scale, tuple(notes))


def pulled_back(ys: Sequence[torch.Tensor], grad_outputs: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor]) -> Sequence[torch.Tensor | None]:
    """The gradients of ``tensors`` for the output gradients ``grad_outputs`` (one per output, any shape of
    its size): the backward of sum(y * g), so each output receives exactly its g (and torch skips a slow
    first-call import that tensor grad_outputs trigger). None for each where no output depends on anything."""
    live = [(y, g) for y, g in zip(ys, grad_outputs) if y.requires_grad]
    if not live:
        return [None] * len(tensors)
    with torch.enable_grad():  # whatever the layer's import did to the grad mode (torch.set_grad_enabled(False))
        loss = sum((y * g.reshape(y.shape).to(device=y.device, dtype=y.dtype)).sum() for y, g in live)
        return torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)


def _rounding(a: torch.Tensor, probes: list, f64) -> torch.Tensor:
    """The backward's rounding at each element, from its results at scaled output gradients.

    The largest |a(c g)/c - a(g)| over the scales, plus a quarter of its RMS over the tensor
    (one element's few samples can all fall small by chance); 0 without probes (float64).
    """
    if not probes or any(p is None for p in probes):
        return torch.zeros_like(a)
    seen = torch.stack([(f64(p) / c - a).abs() for p, c in zip(probes, PROBE_SCALES)]).amax(0)
    seen = seen.nan_to_num(nan=0.0, posinf=0.0)
    return seen + 0.25 * seen.square().mean().sqrt()


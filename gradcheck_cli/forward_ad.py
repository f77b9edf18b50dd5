"""``--forward-ad``: the layer's forward-mode derivative (a Function's ``jvp``), element by element.

For each checked element x_i, one forward with dual tensors (:mod:`torch.autograd.forward_ad`)
along the unit tangent e_i gives the layer's own J e_i; projected on the two losses' output
gradients (y for 1/2 sum y^2, w for sum w*y) it is the number the backward gives at that
element, (J^T y)_i, and central differences estimate the same number. So the tangents
become an :class:`~gradcheck_cli.analytic.Analytic` side, and the rest of the check --
the numeric side, the plan, the verdict rules, the report -- is the backward's, unchanged.

Below float64 the tangents' own rounding is measured as the backward's is (tangents
scaled by a few factors give scaled results in exact arithmetic) and allowed for.
A layer with no forward-mode derivative (a Function without ``jvp``, an op torch has no
forward formula for) cannot be checked this way: that is a usage error (exit 2) -- the
check asked for does not exist for this layer; nothing about its gradients is known.
"""

from __future__ import annotations

import inspect
import os
import traceback
import warnings
from typing import Mapping, Sequence

import torch
import torch.autograd.forward_ad as fwAD

from .analytic import PROBE_SCALES, Analytic, _rounding
from .environment import Placement
from .errors import LayerError, UsageError
from .guard import Guard
from .layer import flatten_outputs
from .rules import largest
from .subject import Leaf, Subject


def forward_side(
    subject: Subject,
    indices: Mapping[str, Sequence[int]],
    y: torch.Tensor,
    weights: torch.Tensor,
    weighted_loss: bool,
    seed: int,
    placement: Placement,
    guard: Guard,
) -> Analytic:
    """The forward-mode values (J^T y)_i and (J^T w)_i at the planned elements of every checked tensor (NaN elsewhere).

    ``y`` are the layer's outputs at the base point (flat, float64), ``weights`` the weighted loss's.
    """
    losses = ("l2", "weighted") if weighted_loss else ("l2",)
    project = torch.stack([y, weights]).T.to(placement.acc)  # (M, 2)
    low = any(subject.tensor(leaf).dtype != torch.float64 for leaf in subject.leaves)
    scales = (1.0, *PROBE_SCALES[:2]) if low else (1.0,)
    grads, rounding, spread = {}, {}, {}
    for leaf in subject.leaves:
        t = subject.tensor(leaf)
        idx = list(indices[leaf.name])
        values = torch.full((len(scales), t.numel(), 2), float("nan"), dtype=torch.float64, device=placement.acc)
        for i in idx:
            for k, c in enumerate(scales):
                tangent = torch.zeros_like(t)
                tangent.view(-1)[i] = c
                values[k, i] = _tangent_outputs(subject, leaf, tangent, seed, placement, guard) @ project / c
        shape = t.shape
        got = {loss: values[0, :, j].reshape(shape) for j, loss in enumerate(("l2", "weighted"))}
        grads[leaf.name] = {"weighted": torch.zeros(shape, dtype=torch.float64, device=placement.acc), **{loss: got[loss] for loss in losses}}
        rounding[leaf.name] = {
            loss: _rounding(got[loss].nan_to_num(nan=0.0), [values[k, :, j].reshape(shape).nan_to_num(nan=0.0) * c for k, c in enumerate(scales) if k], placement.f64)
            for j, loss in enumerate(("l2", "weighted"))
        }
        spread[leaf.name] = torch.zeros(shape, dtype=torch.float64, device=placement.acc)
    scale = {loss: max(largest(g[loss]) for g in grads.values()) for loss in ("l2", "weighted")}
    return Analytic(grads, spread, rounding, dict(spread), scale)


def _tangent_outputs(subject: Subject, leaf: Leaf, tangent: torch.Tensor, seed: int, placement: Placement, guard: Guard) -> torch.Tensor:
    """J e: the tangents of every floating output (flat, float64) for ``tangent`` on ``leaf``."""
    layer = subject.layer

    def forward() -> list[torch.Tensor | None]:
        placement.seed(seed)
        params, inputs = dict(layer.params), subject.inputs
        with torch.no_grad(), fwAD.dual_level():
            dual = fwAD.make_dual(subject.tensor(leaf).detach(), tangent)
            if leaf.kind == "param":
                params[leaf.key] = dual
            else:
                inputs = inputs.replaced(leaf.key, dual)
            ys = flatten_outputs(layer.call(params, inputs, {k: v.clone() for k, v in layer.buffers.items()}), subject.target)
            return [(y, fwAD.unpack_dual(y).tangent) for y in ys]

    try:
        with warnings.catch_warnings():
            # torch's first dual level loads jvp decompositions through the deprecated torch.jit.script
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
            pairs = guard("forward (with forward-mode AD)", forward)
    except LayerError as exc:
        usage = _no_forward_mode(subject.target, exc)
        if usage is not None:
            raise usage from exc
        raise
    return torch.cat([placement.f64(torch.zeros_like(y) if t is None else t).reshape(-1) for y, t in pairs])


def _raised_by_base_jvp(exc: BaseException) -> bool:
    """Did ``exc`` come from torch.autograd.Function.jvp itself (the Function did not override it)?"""
    frames = traceback.extract_tb(exc.__traceback__)
    base = inspect.getsourcefile(torch.autograd.Function.jvp)
    return bool(frames) and frames[-1].name == "jvp" and base is not None and os.path.realpath(frames[-1].filename) == os.path.realpath(base)


def _no_forward_mode(target: str, exc: LayerError) -> UsageError | None:
    """The layer has no forward-mode derivative (a Function without jvp, an op without a forward formula)."""
    cause = exc.__cause__
    text = str(cause)
    if isinstance(cause, NotImplementedError) and _raised_by_base_jvp(cause):
        what = "a custom autograd.Function in it defines no jvp"
    elif isinstance(cause, (NotImplementedError, RuntimeError)) and ("forward AD" in text or "forward-mode" in text or "forward mode" in text):
        # torch gives no other sign of an operation that has no forward formula than its message
        what = "it uses an operation without a forward-mode derivative"
    else:
        return None
    return UsageError(
        f"{target} cannot be run in forward mode: {what} ({text.splitlines()[0] if text else type(cause).__name__}).",
        "Define jvp (and ctx.save_for_forward) on the Function to check it in forward mode, or drop --forward-ad; "
        "the backward is checked without it.",
        key="forward_ad",
    )

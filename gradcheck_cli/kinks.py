"""Kinks shared by several elements (tied maxima): moved together, their gradients must add up.

Each tied maximum on its own has one-sided slopes [0, 1], so a backward that gives the
full gradient to every tied element passes element by element. KINK elements that move
a common output are therefore also moved together: the analytic gradients of such a
group must sum to a value between the joint one-sided slopes; otherwise the group FAILs.
Kinks that share no output (ReLU, abs, clamp) form groups of one and are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .reference import NumericSide
from .rules import NOISE_SIGMAS, Judge, tolerance
from .subject import Leaf
from .verdicts import FAIL, KINK

# Above this many KINK elements in one tensor, their pairwise shared outputs are not examined.
MAX_KINKS = 4096


@dataclass(frozen=True)
class JointKinks:
    """The positions (into the checked elements) that the joint rule fails, per loss, and why."""

    failed: dict[str, list[int]]
    notes: tuple[str, ...] = ()


def check_joint(
    leaf: Leaf,
    idx: tuple[int, ...],
    verdicts: dict[str, torch.Tensor],
    analytic: dict[str, torch.Tensor],
    numeric: NumericSide,
    judges: dict[str, Judge],
) -> JointKinks:
    """``verdicts``/``analytic``: per loss, over the checked positions (``idx`` holds their flat indices)."""
    losses = list(verdicts)
    kinked = torch.zeros_like(verdicts[losses[0]], dtype=torch.bool)
    for loss in losses:
        kinked |= verdicts[loss] == KINK
    positions = torch.nonzero(kinked).reshape(-1).tolist()
    failed: dict[str, list[int]] = {loss: [] for loss in losses}
    if len(positions) < 2 or len(positions) > MAX_KINKS:
        return JointKinks(failed)
    moved = numeric.outputs_moved(leaf, [idx[p] for p in positions]).double()
    shares = (moved @ moved.T) > 0  # K x K: do two kink elements move a common output?
    notes = []
    for group in _components(shares.cpu().numpy()):
        if len(group) < 2:
            continue
        members = [positions[g] for g in group]
        d = numeric.joint(leaf, [idx[p] for p in members], numeric.steps.eps)
        at = torch.tensor(members, device=verdicts[losses[0]].device, dtype=torch.long)
        for loss in losses:
            total = analytic[loss][at].sum()
            lo = torch.minimum(d[loss].right, d[loss].left)[0]
            hi = torch.maximum(d[loss].right, d[loss].left)[0]
            judge = judges[loss]
            slack = tolerance(total.reshape(1), hi.abs().reshape(1), judge.layer_scale, judge.rtol, judge.atol)[0]
            slack = slack + NOISE_SIGMAS * 2 * d[loss].noise[0]
            if bool(total < lo - slack) or bool(total > hi + slack):
                failed[loss] += members
                notes.append(
                    f"{leaf.name}: {len(members)} elements at one kink (e.g. tied maxima) have analytic gradients summing "
                    f"to {float(total):.4g}, outside the joint one-sided slopes [{float(lo):.4g}, {float(hi):.4g}]"
                )
                break
    return JointKinks(failed, tuple(notes))


def apply(verdicts: dict[str, torch.Tensor], joint: JointKinks) -> None:
    for loss, positions in joint.failed.items():
        if positions:
            verdicts[loss][torch.tensor(positions, device=verdicts[loss].device, dtype=torch.long)] = FAIL


def _components(adjacent: np.ndarray) -> list[list[int]]:
    """Connected components of a symmetric boolean adjacency matrix."""
    seen = np.zeros(len(adjacent), dtype=bool)
    groups = []
    for start in range(len(adjacent)):
        if seen[start]:
            continue
        stack, group = [start], []
        seen[start] = True
        while stack:
            node = stack.pop()
            group.append(node)
            for nxt in np.nonzero(adjacent[node] & ~seen)[0]:
                seen[nxt] = True
                stack.append(int(nxt))
        groups.append(sorted(group))
    return groups

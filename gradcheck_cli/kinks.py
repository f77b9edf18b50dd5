"""Kinks shared by several elements: tied maxima must share their gradient, other kinks must combine.

Each tied maximum on its own has one-sided slopes [0, 1], so a backward that gives the
full gradient to every tied element passes element by element. KINK elements that move
a common output are therefore also moved together, along sign patterns s (member i by
s_i * h), and the analytic directional derivative sum(s_i * a_i) is held against the
one-sided slopes along s:

* a *genuine tie* is a group whose all-plus move is smooth (its one-sided slopes agree:
  shifting tied maxima together just shifts the maximum). There the sum of the analytic
  gradients must be that one slope -- the full-gradient-to-every-tie bug fails here;
* any other group (each element at a kink of its own that happens to share an output,
  as the x and y of a grid_sample point on a pixel centre) passes if the analytic value
  lies between the one-sided slopes along SOME sign pattern: a backward may take x's slope
  from one side and y's from the other. Only one that fits no pattern FAILs.

The allowance is the one every verdict gets (tolerance plus NOISE_SIGMAS of the noise),
plus the O(h) truncation of a one-sided difference, measured as the change of the slopes
from h to 2h. Kinks that share no output (ReLU, abs, clamp) form groups of one and are left
alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .numeric import NumericSide
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


# Sign patterns tried for a group (s and -s are the same pattern): all of them up to this many
# members, else the all-plus one and random ones up to MAX_PATTERNS.
MAX_PATTERNS = 16


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
        note = _check_group(leaf, idx, members, analytic, numeric, judges, failed)
        if note:
            notes.append(note)
    return JointKinks(failed, tuple(notes))


@dataclass(frozen=True)
class _Along:
    """One loss's one-sided slopes of a group moved along a sign pattern, and their allowance."""

    lo: float
    hi: float
    slack: float

    def holds(self, value: float) -> bool:
        return self.lo - self.slack <= value <= self.hi + self.slack


def _check_group(leaf, idx, members: list[int], analytic, numeric: NumericSide, judges, failed) -> str | None:
    """Check one group of kinks sharing outputs; mark its members FAIL under a loss it fails. The note, if it fails."""
    flat = [idx[p] for p in members]
    h = numeric.steps.eps
    at = torch.tensor(members, device=next(iter(analytic.values())).device, dtype=torch.long)
    patterns = _patterns(len(members), seed=sum(flat))
    along = {}
    for signs in patterns:
        d1, d2 = numeric.joint(leaf, flat, h, signs), numeric.joint(leaf, flat, 2 * h, signs)
        for loss, judge in judges.items():
            along[(tuple(signs), loss)] = _slopes(d1[loss], d2[loss], judge)
    for loss, judge in judges.items():
        a = analytic[loss][at]
        direction = {tuple(s): float((a * torch.tensor(s, dtype=a.dtype, device=a.device)).sum()) for s in patterns}
        plus = along[(tuple(patterns[0]), loss)]
        if plus.hi - plus.lo <= plus.slack:  # a genuine tie: the all-plus move is smooth
            if not plus.holds(direction[tuple(patterns[0])]):
                failed[loss] += members
                return (
                    f"{leaf.name}: {len(members)} tied elements (moved together they change the output smoothly, "
                    f"at a rate of {plus.hi:.4g}) have analytic gradients summing to {direction[tuple(patterns[0])]:.4g}: "
                    "a gradient shared by tied elements must add up to that rate (is it given in full to each of them?)"
                )
        elif not any(along[(tuple(s), loss)].holds(direction[tuple(s)]) for s in patterns):
            failed[loss] += members
            return (
                f"{leaf.name}: {len(members)} elements at kinks that share outputs have analytic gradients that no "
                f"combination of one-sided slopes gives (tried {len(patterns)} sign pattern(s) of a joint move)"
            )
    return None


def _slopes(d1, d2, judge: Judge) -> _Along:
    """The one-sided slopes at h, with the usual allowance and the O(h) truncation seen from h to 2h."""
    lo, hi = float(torch.minimum(d1.right, d1.left)[0]), float(torch.maximum(d1.right, d1.left)[0])
    truncation = max(abs(float(d2.right[0] - d1.right[0])), abs(float(d2.left[0] - d1.left[0])))
    allowed = tolerance(torch.tensor([hi]), torch.tensor([abs(lo)]), judge.layer_scale, judge.rtol, judge.atol)[0]
    return _Along(lo, hi, float(allowed) + NOISE_SIGMAS * 2 * float(d1.noise[0]) + truncation)


def _patterns(k: int, seed: int) -> list[list[int]]:
    """Sign patterns for k members, the all-plus one first; s and -s count once."""
    if k <= 5:
        return [[1] + [1 - 2 * ((code >> j) & 1) for j in range(k - 1)] for code in range(2 ** (k - 1))]
    gen = torch.Generator().manual_seed(seed)
    more = (torch.randint(0, 2, (MAX_PATTERNS - 1, k - 1), generator=gen) * -2 + 1).tolist()
    return [[1] * k] + [[1] + row for row in more]


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

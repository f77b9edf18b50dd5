"""The per-element verdicts (no torch here: reports and renderers read them too).

Verdicts are stored as integer codes in arrays; :class:`Verdict` names them and says
how each is shown (its character in an error map, its style) and how bad it is.
"""

from __future__ import annotations

from enum import IntEnum


class Verdict(IntEnum):
    UNCHECKED = -1
    PASS = 0
    FAIL = 1
    KINK = 2
    NOISE = 3

    @property
    def char(self) -> str:
        """Its cell in an error map (see errormap.py)."""
        return {Verdict.UNCHECKED: " ", Verdict.PASS: ".", Verdict.FAIL: "X", Verdict.KINK: "k", Verdict.NOISE: "?"}[self]

    @property
    def style(self) -> str:
        """Its rich style."""
        return {Verdict.UNCHECKED: "", Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.KINK: "yellow", Verdict.NOISE: "yellow"}[self]

    @property
    def severity(self) -> int:
        """How bad, mildest first: a map cell that covers several elements shows the worst of them."""
        return SEVERITY.index(self)


SEVERITY = (Verdict.UNCHECKED, Verdict.PASS, Verdict.NOISE, Verdict.KINK, Verdict.FAIL)
# Across the two losses an element gets FAIL if either failed, else KINK if either saw a kink,
# else PASS if either verified it, else NOISE.
ACROSS_LOSSES = (Verdict.FAIL, Verdict.KINK, Verdict.PASS, Verdict.NOISE)
CHECKED = (Verdict.PASS, Verdict.FAIL, Verdict.KINK, Verdict.NOISE)

UNCHECKED, PASS, FAIL, KINK, NOISE = (int(v) for v in (Verdict.UNCHECKED, Verdict.PASS, Verdict.FAIL, Verdict.KINK, Verdict.NOISE))


def count(codes) -> dict[str, int]:
    """{'PASS': n, 'FAIL': n, 'KINK': n, 'NOISE': n} of a numpy array of codes."""
    return {v.name: int((codes == v).sum()) for v in CHECKED}

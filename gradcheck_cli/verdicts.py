"""The per-element verdicts, as codes stored in arrays (no torch here)."""

from __future__ import annotations

UNCHECKED, PASS, FAIL, KINK, NOISE = -1, 0, 1, 2, 3
VERDICT_NAMES = {PASS: "PASS", FAIL: "FAIL", KINK: "KINK", NOISE: "NOISE"}

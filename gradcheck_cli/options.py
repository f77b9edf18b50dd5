"""How to check: the options and the per-dtype step/tolerance table (jax-style)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import FLOAT_DTYPES
from .errors import UsageError
from .inputs import torch_dtype

# dtype: (eps, rtol, atol).  Central differences have truncation error ~eps^2 and
# rounding error ~u/eps, so eps is near the cube root of the unit roundoff u.
TOLERANCES = {
    "float64": (1e-6, 1e-5, 1e-10),
    "float32": (1e-3, 2e-3, 1e-6),
    "float16": (1e-2, 2e-2, 1e-3),
    "bfloat16": (3e-2, 1e-1, 1e-2),
}


@dataclass(frozen=True)
class CheckOptions:
    """How to check.  ``None`` for eps/rtol/atol means the dtype's default."""

    dtype: str = "float64"
    reference_dtype: str | None = None
    device: str = "cpu"
    seed: int = 0
    eps: float | None = None
    rtol: float | None = None
    atol: float | None = None
    kinks: str = "pass"  # "pass": KINK elements are reported but do not fail; "fail": they fail
    weighted_loss: bool = True
    max_elements: int | None = None
    only: tuple[str, ...] = ()
    batch: bool = True
    coloring: bool = True  # move many elements per forward where verified safe (see coloring.py)
    budget: float | None = None  # seconds: sample elements so the check fits
    timeout: float | None = None  # seconds: stop a check that hangs

    def validated(self) -> "CheckOptions":
        for key in ("dtype", "reference_dtype"):
            value = getattr(self, key)
            if value is not None and value not in FLOAT_DTYPES:
                torch_dtype(value)  # raises with a suggestion for typos
                raise UsageError(f"--{key.replace('_', '-')} {value}: not a floating dtype.", f"choose one of: {', '.join(FLOAT_DTYPES)}.")
        for key in ("eps", "rtol", "atol"):
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise UsageError(f"--{key} must be a finite number, got {value!r}.", "Example: --eps 1e-6 --rtol 1e-5 --atol 1e-10.")
            if (key == "eps" and value <= 0) or value < 0:
                need = "positive" if key == "eps" else "zero or positive"
                raise UsageError(f"--{key} must be {need}, got {value!r}.", "Example: --eps 1e-6 --rtol 1e-5 --atol 1e-10.")
        if self.kinks not in ("pass", "fail"):
            raise UsageError(f"--kinks must be 'pass' or 'fail', got {self.kinks!r}.", "Use --kinks pass (report them) or --kinks fail.")
        if self.max_elements is not None and self.max_elements < 1:
            raise UsageError(f"--max-elements must be at least 1, got {self.max_elements}.", "Example: --max-elements 1000.")
        for key in ("budget", "timeout"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value <= 1e7):
                raise UsageError(
                    f"--{key} must be a positive, finite number of seconds, got {value!r}.", f"Example: --{key} 60."
                )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63 - 1:
            raise UsageError(f"--seed must be an integer from 0 to 2**63-2, got {self.seed!r}.", "Example: --seed 0.")
        return self

    def resolved(self, numeric_dtype: str | None = None) -> tuple[float, float, float]:
        """(eps, rtol, atol): given values, else the table's for the dtype of each side."""
        eps, rtol, atol = TOLERANCES[numeric_dtype or self.reference_dtype or self.dtype]
        _, rtol_own, atol_own = TOLERANCES[self.dtype]
        # The analytic side stays in the layer's dtype: its rounding sets the tolerance.
        rtol, atol = max(rtol, rtol_own), max(atol, atol_own)
        return (
            self.eps if self.eps is not None else eps,
            self.rtol if self.rtol is not None else rtol,
            self.atol if self.atol is not None else atol,
        )

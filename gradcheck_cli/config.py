"""Plain, frozen descriptions of what to check and how.

These are the data the CLI (or a YAML spec, or a Python caller) fills in and the
core reads.  Nothing here imports click.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DISTS = ("normal", "uniform")
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8", "bool")
DTYPES = FLOAT_DTYPES + INT_DTYPES


@dataclass(frozen=True)
class InputSpec:
    """One positional input of the layer.

    Exactly one of ``shape`` (a random tensor drawn from ``dist``) or ``value``
    (a literal: a number or nested list) is set.  ``dtype`` None means: the
    check dtype for floating data, int64 for integer literals.  Integer (and
    bool) inputs are passed through and never perturbed.
    """

    shape: tuple[int, ...] | None = None
    value: Any = None
    dist: str = "normal"
    low: float = 0.0
    high: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    dtype: str | None = None

    def describe(self) -> str:
        if self.shape is not None:
            text = "x".join(str(d) for d in self.shape) if self.shape else "scalar"
            if self.dist == "uniform":
                text += f" uniform[{self.low:g},{self.high:g}]"
            elif (self.mean, self.std) != (0.0, 1.0):
                text += f" normal({self.mean:g},{self.std:g})"
        else:
            text = "=" + _short(self.value)
        if self.dtype:
            text += f" {self.dtype}"
        return text


def _short(value: Any, limit: int = 24) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class LayerSpec:
    """Everything a YAML spec pins down about one check.

    ``layer`` is a target string as :func:`gradcheck_cli.load.load_target`
    takes it, with a file path already resolved against the spec's folder.
    ``options`` holds the check options the spec sets (keys of
    :class:`CheckOptions`); command-line values override them.
    """

    path: str
    layer: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    inputs: tuple[InputSpec, ...] = ()
    params: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    description: str | None = None

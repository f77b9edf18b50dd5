"""Step 3: build the layer's input tensors from their descriptions.

Random inputs are drawn from a private ``torch.Generator`` on the CPU (so the
user's global RNG is untouched and the same seed gives the same numbers on
every device), then cast and moved.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

import torch

from .config import DTYPES, FLOAT_DTYPES, InputSpec
from .errors import UsageError

# Refuse to allocate inputs larger than this (bytes, all inputs together).
MAX_INPUT_BYTES = 2 * 1024**3

_SHAPE = re.compile(r"^\d+(x\d+)*$")


def parse_input(text: str) -> InputSpec:
    """Parse one ``--input`` value: ``4x3x8`` (standard normal) or ``=JSON`` (a literal)."""
    raw = text.strip()
    if raw.startswith("="):
        try:
            value = json.loads(raw[1:])
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--input {text!r}: the literal after '=' is not valid JSON ({exc.msg}).",
                "Examples: --input =4.5, --input =[4.5], --input '=[[1,2],[3,4]]'.",
            ) from None
        check_literal(value, f"--input {text!r}")
        return InputSpec(value=value)
    shape_text = raw.lower()
    if shape_text in ("scalar", "()"):
        return InputSpec(shape=())
    if not _SHAPE.match(shape_text):
        raise UsageError(
            f"--input {text!r} is neither a shape nor a literal.",
            "Give a shape such as 1x100 or 4x3x8 (standard-normal data), or a literal after '=' such as =4.5.",
        )
    shape = tuple(int(d) for d in shape_text.split("x"))
    if any(d <= 0 for d in shape):
        raise UsageError(f"--input {text!r}: every dimension must be at least 1.", "Example: --input 1x100.")
    return InputSpec(shape=shape)


def check_literal(value: Any, where: str) -> None:
    """A literal must be a number or a rectangular nested list of numbers."""
    try:
        t = torch.tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(
            f"{where}: {json.dumps(value)} is not a number or a rectangular list of numbers ({exc}).",
            "Examples: 4.5, [4.5], [[1, 2], [3, 4]].",
        ) from None
    if t.is_complex():
        raise UsageError(f"{where}: complex literals are not supported.", "Give real numbers.")
    if t.is_floating_point() and not bool(torch.isfinite(torch.tensor(value, dtype=torch.float64)).all()):
        raise UsageError(f"{where}: the literal holds NaN or infinity; inputs must be finite numbers.", "Give finite numbers, e.g. =4.5.")
    if t.numel() == 0:
        raise UsageError(f"{where}: the literal {json.dumps(value)} has no elements.", "Give at least one number, e.g. =[4.5].")


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        import difflib

        close = difflib.get_close_matches(name, DTYPES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "choose one of: " + ", ".join(FLOAT_DTYPES) + "."
        raise UsageError(f"Unknown dtype {name!r}.", hint)
    return getattr(torch, name)


def estimate_bytes(specs: Sequence[InputSpec], dtype: torch.dtype) -> int:
    total = 0
    for spec in specs:
        if spec.shape is not None:
            itemsize = max(8, torch.empty((), dtype=dtype).element_size())  # drawn in float64 first
            total += math.prod(spec.shape) * itemsize
    return total


def build_inputs(
    specs: Sequence[InputSpec], dtype: torch.dtype, device: torch.device, seed: int
) -> list[torch.Tensor]:
    """Materialise input descriptions as tensors.  Raises :class:`UsageError` on absurd sizes."""
    need = estimate_bytes(specs, dtype)
    if need > MAX_INPUT_BYTES:
        shapes = ", ".join("x".join(map(str, s.shape)) for s in specs if s.shape is not None)
        raise UsageError(
            f"The inputs ({shapes}) would need {need / 1024**3:.1f} GiB; gradcheck refuses more than "
            f"{MAX_INPUT_BYTES / 1024**3:.0f} GiB.",
            "Checking costs two forward calls per element: use small shapes (a few thousand elements) "
            "or --max-elements to sample.",
        )
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [_build_one(spec, dtype, device, gen) for spec in specs]


def _build_one(spec: InputSpec, dtype: torch.dtype, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    want = torch_dtype(spec.dtype) if spec.dtype else None
    if spec.shape is not None:
        if spec.dist == "uniform":
            t = torch.rand(spec.shape, generator=gen, dtype=torch.float64) * (spec.high - spec.low) + spec.low
        else:
            t = torch.randn(spec.shape, generator=gen, dtype=torch.float64) * spec.std + spec.mean
        target = want or dtype
        if not target.is_floating_point:
            t = t.round()
        return t.to(device=device, dtype=target)
    t = torch.tensor(spec.value)
    if t.is_floating_point():
        t = torch.tensor(spec.value, dtype=torch.float64)  # not float32 first: =0.1 must stay 0.1 in float64
    if want is not None:
        target = want
    elif t.is_floating_point():
        target = dtype
    else:
        target = t.dtype  # int64 or bool literals pass through unchanged
    return t.to(device=device, dtype=target)

"""Step 3: build the layer's input tensors from their descriptions.

Random inputs are drawn from a private ``torch.Generator`` on the CPU (so the
user's global RNG is untouched and the same seed gives the same numbers on
every device), then cast and moved.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import replace
from typing import Any, Mapping, Sequence

import torch

from .call import Call, rebuilt
from .errors import UsageError, suggest
from .options import DTYPES
from .spec import MAX_DIMS, MAX_LITERAL_ELEMENTS, InputSpec, bounded_repr

# Refuse to allocate inputs larger than this (bytes, all inputs together).
MAX_INPUT_BYTES = 2 * 1024**3

# A literal holds at most MAX_LITERAL_ELEMENTS numbers in at most MAX_DIMS levels, here as in a
# spec (the caps and why they are what they are: gradcheck_cli/spec.py).
assert MAX_LITERAL_ELEMENTS * 8 < MAX_INPUT_BYTES

_SHAPE = re.compile(r"^\d+(x\d+)*$")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')
_BRACKET = re.compile(r"[\[\]{}]")
_LITERAL_HINT = "Examples: --input =4.5, --input =[4.5], --input '=[[1,2],[3,4]]'."
_INT64 = (-(2**63), 2**63 - 1)


class _BadNumber(Exception):
    """A number in a JSON literal that no tensor can hold (raised from json's number hooks)."""


def _shown(text: str) -> str:
    """The --input value as an error message quotes it: repr'd, and cut short when long."""
    return repr(text) if len(text) <= 60 else repr(text[:50]) + f"... ({len(text):,} characters)"


def _brief(value: Any) -> str:
    """A literal as an error message shows it, at bounded cost however large it is."""
    return bounded_repr(value)


_NAMED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.S)
INPUT_FORMS = (
    "a shape (1x100, 4x3x8: standard-normal data), =JSON (a literal tensor: =4.5, =[0,2,1]), :VALUE (a Python value "
    "passed as it is: :bilinear, :true, :0.5, :null), [A, B, ...] or (A, B, ...) (a list or tuple of inputs); "
    "NAME=... makes it a keyword argument (grid=1x8x8x2, mode=:bilinear)"
)


def parse_input(text: str) -> InputSpec:
    """Parse one ``--input`` value (see INPUT_FORMS)."""
    raw = text.strip()
    where = f"--input {_shown(text)}"
    named = _NAMED.fullmatch(raw)
    spec = _parse_body(named.group(2).strip() if named else raw, where, 0)
    return replace(spec, name=named.group(1)) if named else spec


def _parse_body(raw: str, where: str, depth: int) -> InputSpec:
    if raw.startswith("="):
        value = _parse_json(raw[1:], where)
        check_literal(value, where)
        return InputSpec(value=value)
    if raw.startswith(":"):
        return InputSpec(arg=_parse_arg(raw[1:], where))
    if raw[:1] in ("[", "(") and raw[-1:] == {"[": "]", "(": ")"}[raw[:1]]:
        if depth >= MAX_DIMS:
            raise UsageError(f"{where}: lists of inputs are nested too deeply.", "Nest at most a few levels.")
        parts = _split_top(raw[1:-1], where)
        return InputSpec(items=tuple(_parse_body(p, where, depth + 1) for p in parts), sequence="list" if raw[0] == "[" else "tuple")
    shape_text = raw.lower()
    if shape_text in ("scalar", "()"):
        return InputSpec(shape=())
    if not _SHAPE.match(shape_text):
        raise UsageError(f"{where} is not an input.", f"Give {INPUT_FORMS}.")
    parts = shape_text.split("x")
    if len(parts) > MAX_DIMS:
        raise UsageError(
            f"{where}: {len(parts)} dimensions, but torch supports at most {MAX_DIMS}.", "Example: --input 4x3x8."
        )
    if any(len(d.lstrip("0")) > 18 for d in parts):  # before int(): at most ~10**18, far above any memory
        raise UsageError(f"{where}: a dimension is too large.", "Example: --input 1x100.")
    shape = tuple(int(d) for d in parts)
    if any(d <= 0 for d in shape):
        raise UsageError(f"{where}: every dimension must be at least 1.", "Example: --input 1x100.")
    return InputSpec(shape=shape)


def parse_value(text: str, where: str) -> Any:
    """A Python value on the command line: JSON where it is JSON, else the text itself."""
    return _parse_arg(text, where)


def _parse_arg(text: str, where: str) -> Any:
    """A Python value after ':': JSON where it is JSON (:true, :0.5, :null, :"a b", :[1, 2]), else the text itself (:bilinear)."""
    text = text.strip()
    if _json_depth(text) > MAX_DIMS:
        raise UsageError(f"{where}: the value is nested too deeply.", "Give a plain value, e.g. :bilinear or :0.5.")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _split_top(text: str, where: str) -> list[str]:
    """The comma-separated items of a list of inputs, commas inside brackets and strings left alone."""
    parts, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(text):
        if quoted:
            quoted = ch != '"' or text[i - 1] == "\\"
        elif ch == '"':
            quoted = True
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    last = text[start:].strip()
    if last or parts:
        parts.append(last)
    if any(not p for p in parts):
        raise UsageError(f"{where}: an item of the list is empty.", "Example: --input '[2x8, [2x4, 2x2]]'.")
    return parts


def _json_depth(text: str) -> int:
    """How deeply the brackets of a JSON text nest (strings skipped), without parsing it."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _BadNumber(
            f"{text} is not a finite number: it is out of range for float64 (largest magnitude about 1.8e308), "
            "and JSON would read it as infinity"
        )
    return number


def _no_constant(text: str) -> float:
    raise _BadNumber(f"{text} is not a finite number; inputs must be finite numbers")


def _parse_json(body: str, where: str) -> Any:
    """The JSON after '=': nesting is checked on the text first, so json never recurses deeply."""
    depth = _json_depth(body)
    if depth > MAX_DIMS:
        raise UsageError(
            f"{where}: the literal is nested too deeply ({depth:,} levels of brackets); "
            f"torch supports at most {MAX_DIMS} dimensions.",
            _LITERAL_HINT,
        )
    try:
        return json.loads(body, parse_float=_finite_float, parse_constant=_no_constant)
    except _BadNumber as exc:
        raise UsageError(f"{where}: {exc}.", "Give finite numbers, e.g. =4.5.") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: the literal after '=' is not valid JSON ({exc.msg}).", _LITERAL_HINT) from None
    except RecursionError:  # not reached after the depth check; kept so no input can give a traceback
        raise UsageError(f"{where}: the literal is nested too deeply.", _LITERAL_HINT) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise UsageError(f"{where}: the literal holds a number that is too long ({exc}).", _LITERAL_HINT) from None


def check_literal(value: Any, where: str, to_float: bool = False) -> None:
    """A literal must be a number or a rectangular nested list of numbers that a tensor can hold.

    Its nesting, size and number ranges are checked first, without torch and without recursion,
    so that no literal can exhaust memory or give torch's overflow errors.  ``to_float``: the
    literal is made a floating tensor whatever its numbers are (its input has a floating dtype).
    """
    _check_structure(value, where, to_float)
    try:
        t = torch.tensor(value, dtype=torch.float64 if to_float else None)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise UsageError(
            f"{where}: {_brief(value)} is not a number or a rectangular list of numbers ({exc}).",
            "Examples: 4.5, [4.5], [[1, 2], [3, 4]].",
        ) from None
    if t.is_complex():
        raise UsageError(f"{where}: complex literals are not supported.", "Give real numbers.")
    if t.is_floating_point() and not bool(torch.isfinite(torch.tensor(value, dtype=torch.float64)).all()):
        raise UsageError(f"{where}: the literal holds NaN or infinity; inputs must be finite numbers.", "Give finite numbers, e.g. =4.5.")
    if t.numel() == 0:
        raise UsageError(f"{where}: the literal {_brief(value)} has no elements.", "Give at least one number, e.g. =[4.5].")


def _check_structure(value: Any, where: str, to_float: bool = False) -> None:
    """Nesting at most MAX_DIMS, at most MAX_LITERAL_ELEMENTS items, whole numbers that fit.

    Whole numbers only (no float among them, bools aside) make an int64 tensor, so each must fit
    int64; beside a float, or for a floating input, each becomes a float64 and must fit that.
    """
    hint = "Examples: 4.5, [4.5], [[1, 2], [3, 4]]."
    dims, item = [], value
    while isinstance(item, (list, tuple)) and item and len(dims) <= MAX_DIMS:  # the shape it would have
        dims.append(len(item))
        item = item[0]
    if len(dims) <= MAX_DIMS and math.prod(dims) > MAX_LITERAL_ELEMENTS:
        _too_many(where, "x".join(map(str, dims)))
    # Numbers, and lists and numbers together (a list of empty lists holds no number but costs a walk):
    # a rectangular literal of n numbers has fewer than n lists.
    stack, numbers, items, floats, ints = [(value, 0)], 0, 0, False, []
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple)):
            if depth >= MAX_DIMS:
                raise UsageError(
                    f"{where}: the literal is nested too deeply (more than {MAX_DIMS} levels of lists); "
                    f"torch supports at most {MAX_DIMS} dimensions.",
                    hint,
                )
            items += len(item)
            if items > 2 * MAX_LITERAL_ELEMENTS:
                _too_many(where)
            stack.extend((sub, depth + 1) for sub in item)
            continue
        numbers += 1
        if numbers > MAX_LITERAL_ELEMENTS:
            _too_many(where)
        if isinstance(item, float):
            floats = True
        elif isinstance(item, int) and not isinstance(item, bool) and not _INT64[0] <= item <= _INT64[1]:
            ints.append(item)
    for number in ints:
        if floats or to_float:
            if abs(number) > sys.float_info.max:
                raise UsageError(
                    f"{where}: {_brief(number)} is out of range for float64 (largest magnitude about 1.8e308).",
                    "Give finite numbers that float64 can hold.",
                )
        else:
            raise UsageError(
                f"{where}: {_brief(number)} is out of range for int64 ({_INT64[0]}..{_INT64[1]}): "
                "whole numbers make an int64 tensor.",
                "For a floating input write it with a dot and an exponent, e.g. =[1.0e20].",
            )


def _too_many(where: str, shape: str | None = None) -> None:
    size = f" (shape {shape})" if shape else ""
    raise UsageError(
        f"{where}: the literal holds more than {MAX_LITERAL_ELEMENTS:,} numbers{size}; "
        f"a literal may hold at most {MAX_LITERAL_ELEMENTS:,}.",
        "For a large tensor give its shape instead (e.g. --input 1000x1000): it is filled with random data.",
    )


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UsageError(f"Unknown dtype {name!r}.", suggest(name, DTYPES, "choose one of"))
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
    for i, spec in enumerate(specs):
        _check_spec(spec, f"input{i}", dtype)
    _check_size(specs, dtype)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [_build_one(spec, dtype, device, gen, f"input{i}") for i, spec in enumerate(specs)]


def build_call(positional: Sequence, keywords: Mapping[str, Any], dtype: torch.dtype, device: torch.device, seed: int) -> tuple[Call, frozenset]:
    """The layer's arguments, built: (the Call, the paths of the tensors marked constant).

    ``positional`` holds InputSpecs (a named one is a keyword argument), ``--input`` strings,
    tensors (copied), numbers and nested lists of numbers (literal tensors), and lists or
    tuples holding tensors (passed as such structures). ``keywords`` maps names to tensors,
    InputSpecs, or any other value passed as it is. Random tensors are drawn in the order
    given, from one private generator seeded with ``seed``.
    """
    entries: list[tuple[tuple, Any]] = []
    position = 0
    for item in positional:
        item = parse_input(item) if isinstance(item, str) else item
        if isinstance(item, InputSpec) and item.name:
            entries.append((("kwargs", item.name), item))
        else:
            entries.append((("args", position), _positional(item)))
            position += 1
    entries += [(("kwargs", k), v) for k, v in keywords.items()]
    names = [path[1] for path, _ in entries if path[0] == "kwargs"]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"keyword argument {twice[0]!r} is given twice.", "Give each keyword argument once.", key="inputs")
    specs = [spec for _, item in entries for spec in _random_specs(item)]
    for i, spec in enumerate(specs):
        _check_spec(spec, f"input {spec.describe()}", dtype)
    _check_size(specs, dtype)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    constants: set = set()
    built = {path: _build_item(item, path, dtype, device, gen, constants) for path, item in entries}
    args = tuple(v for (where, _), v in built.items() if where == "args")
    kwargs = {path[1]: v for path, v in built.items() if path[0] == "kwargs"}
    return Call(args, kwargs), frozenset(constants)


def _positional(item: Any) -> Any:
    """A positional item from the API: numbers and lists of numbers are literal tensors (as --input =JSON)."""
    if isinstance(item, bool) or item is None:
        return InputSpec(arg=item)
    if isinstance(item, (int, float)) or (isinstance(item, list) and not _holds_tensors(item)):
        return InputSpec(value=item)
    return item


def _holds_tensors(value: Any) -> bool:
    if isinstance(value, (torch.Tensor, InputSpec, str)):
        return True
    return isinstance(value, (list, tuple)) and any(_holds_tensors(v) for v in value)


def _random_specs(item: Any) -> list[InputSpec]:
    """The tensor descriptions inside an item (to check and to size before anything is drawn)."""
    if isinstance(item, InputSpec):
        if item.kind == "items":
            return [s for sub in item.items for s in _random_specs(sub)]
        return [item] if item.kind in ("random", "literal") else []
    if isinstance(item, (list, tuple)):
        return [s for sub in item for s in _random_specs(sub)]
    return []


def _build_item(item: Any, path: tuple, dtype: torch.dtype, device: torch.device, gen: torch.Generator, constants: set) -> Any:
    if isinstance(item, InputSpec):
        if item.kind == "arg":
            return item.arg
        if item.kind == "items":
            values = [_build_item(sub, path + (i,), dtype, device, gen, constants) for i, sub in enumerate(item.items)]
            built = tuple(values) if item.sequence == "tuple" else values
        else:
            built = _build_one(item, dtype, device, gen, f"input {item.describe()}")
        if item.constant:
            constants.update(path + sub for sub, _ in Call((built,)).tensors() for sub in [sub[2:]])
        return built
    if isinstance(item, torch.Tensor):
        t = item.detach().to(device)
        return (t.to(dtype) if t.is_floating_point() else t).clone(memory_format=torch.contiguous_format)
    if isinstance(item, (list, tuple)) and _holds_tensors(item):
        values = [_build_item(sub, path + (i,), dtype, device, gen, constants) for i, sub in enumerate(item)]
        return rebuilt(item, values)
    return item  # any other value, passed as it is


def _check_size(specs: Sequence[InputSpec], dtype: torch.dtype) -> None:
    need = estimate_bytes(specs, dtype)
    if need > MAX_INPUT_BYTES:
        shapes = ", ".join("x".join(map(str, s.shape)) for s in specs if s.shape is not None)
        raise UsageError(
            f"The inputs ({shapes}) would need {need / 1024**3:.1f} GiB; gradcheck refuses more than "
            f"{MAX_INPUT_BYTES / 1024**3:.0f} GiB.",
            "Checking costs two forward calls per element: use small shapes (a few thousand elements) "
            "or --max-elements to sample.",
        )


def _check_spec(spec: InputSpec, where: str, dtype: torch.dtype) -> None:
    """What a spec or --input has checked already, checked again for inputs given from Python,
    plus what only the check dtype decides: random values must be finite in it."""
    want = torch_dtype(spec.dtype) if spec.dtype else None
    target = want or dtype
    if spec.shape is None:
        check_literal(spec.value, where, to_float=want is not None and want.is_floating_point)
        return
    if len(spec.shape) > MAX_DIMS:
        raise UsageError(
            f"{where}: {len(spec.shape)} dimensions, but torch supports at most {MAX_DIMS}.", f"Give at most {MAX_DIMS} sizes."
        )
    if not target.is_floating_point:
        return
    largest = torch.finfo(target).max
    if spec.dist == "uniform":
        reach, which = max(abs(spec.low), abs(spec.high), abs(spec.high - spec.low)), "low and high"
    else:
        reach, which = abs(spec.mean) + 10 * abs(spec.std), "|mean| + 10·std"
    if not reach <= largest:  # also NaN
        name = str(target).removeprefix("torch.")
        raise UsageError(
            f"{where} ({spec.describe()}): its random values would overflow {name}: {which} must stay within "
            f"{largest:.4g}, the largest {name} number.",
            f"Use smaller {'low and high' if spec.dist == 'uniform' else 'mean and std'}, or a wider dtype such as float64.",
        )


def _build_one(spec: InputSpec, dtype: torch.dtype, device: torch.device, gen: torch.Generator, where: str) -> torch.Tensor:
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
    if want is not None and want.is_floating_point:
        t = torch.tensor(spec.value, dtype=torch.float64)  # whole numbers beyond int64 are fine here
    else:
        t = torch.tensor(spec.value)
        if t.is_floating_point():
            t = torch.tensor(spec.value, dtype=torch.float64)  # not float32 first: =0.1 must stay 0.1 in float64
    if want is not None:
        target = want
    elif t.is_floating_point():
        target = dtype
    else:
        target = t.dtype  # int64 or bool literals pass through unchanged
    out = t.to(device=device, dtype=target)
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        name = str(target).removeprefix("torch.")
        raise UsageError(
            f"{where} (={_brief(spec.value)}): the literal does not fit {name}: numbers beyond "
            f"{torch.finfo(target).max:.4g} become infinity.",
            "Give smaller numbers, or a wider dtype such as float64.",
        )
    return out

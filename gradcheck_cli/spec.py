"""Read YAML spec files: one file pins down one check (layer, inputs, options).

A spec is parsed with PyYAML's safe loader only (libyaml's where available), so
it can never run code, and validated strictly: every problem is a
:class:`SpecError` whose message names the file and the key path
(``inputs[1].shape``), usually with a hint.  The result is a frozen
:class:`LayerSpec`.  Nothing here imports torch.

Careless or hostile files are refused before they can cost much: the file's
kind and size are checked before it is read, nesting is checked on the parser's
events before anything is built, and duplicate keys, alias cycles and alias
expansion ("billion laughs") on the node graph before any value is walked (see
the caps below).

Validators below raise :class:`_Invalid` (key path, message, hint) without
knowing the file; :func:`load_spec` adds the file name.
"""

from __future__ import annotations

import difflib
import errno
import functools
import math
import os
import re
import reprlib
import stat
from pathlib import Path
from typing import Any, Callable

from .config import DISTS, DTYPES, FLOAT_DTYPES, INT_DTYPES, InputSpec, LayerSpec
from .errors import SpecError, UsageError
from .load import is_file_target, split_target

SUFFIXES = (".yaml", ".yml")

# Caps that keep a careless or hostile spec from hanging the reader or exhausting memory.  Each is
# checked structurally, before the data is walked, so no timer is needed.
#
# A spec file is a small text file: 1 MiB is hundreds of times the size of any real one, and
# still holds about half a million numbers written out.
MAX_SPEC_BYTES = 1024**2
# Lists and mappings inside each other: a real spec needs 3 levels plus one per dimension of a
# literal (at most MAX_DIMS), so 100 leaves room; it keeps every later walk (validation, repr,
# json.dumps, torch.tensor) far below Python's recursion limit, and libyaml's composer, which
# recurses in C and crashes the interpreter on deep input, never sees more.
MAX_NESTING = 100
# Values (scalars, lists, mappings) counted as if every YAML alias were expanded.  YAML shares an
# aliased value, so nine lines of aliases ("billion laughs") build 10**9 values that any walk of
# the data would visit one by one.  Written out without aliases, YAML spends at least about a byte
# on a value (the densest form, '{a,b,c}', gives each key a null value), so a file within
# MAX_SPEC_BYTES holds fewer than 1.1 million values and only aliases can pass this cap; walking
# 2 million values takes a second or two, so anything under it is still quick.
MAX_SPEC_VALUES = 2_000_000
# torch reduces (sums, norms) only tensors of up to 64 dimensions.
MAX_DIMS = 64
# Elements of one literal (a spec's 'value:' or 'params:' entry, or --input =JSON).  Each number
# of a literal is written out as text and held as a Python object (about 40 bytes with its list
# slot and its tensor copy), so 1 million is 40 MB -- far below the MAX_INPUT_BYTES guard on drawn
# inputs (2 GiB), and already more elements than finite differences can check (two forward calls
# each); larger tensors belong in a random input ('shape:').  Below MAX_SPEC_VALUES, so a spec's
# own literal meets this message, not the alias one.
MAX_LITERAL_ELEMENTS = 1_000_000
assert MAX_LITERAL_ELEMENTS < MAX_SPEC_VALUES and MAX_DIMS + 3 < MAX_NESTING

MINIMAL_SPEC = "A minimal spec: 'layer: layers/my_layer.py:MyLayer' and, below it, 'inputs: [{shape: [4, 3]}]'."

# Integer range of each non-float dtype (bool literals are 0/1, true/false).
INT_RANGES = {
    "int64": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int8": (-128, 127),
    "uint8": (0, 255),
    "bool": (0, 1),
}
assert set(INT_RANGES) == set(INT_DTYPES)

# Largest finite magnitude of each floating dtype (torch.finfo(dtype).max; no torch import here).
FLOAT_MAX = {
    "float64": 1.7976931348623157e308,
    "float32": 3.4028234663852886e38,
    "float16": 65504.0,
    "bfloat16": 3.3895313892515355e38,
}
assert set(FLOAT_MAX) == set(FLOAT_DTYPES)

# Which extra keys each distribution takes.
DIST_KEYS = {"normal": ("mean", "std"), "uniform": ("low", "high")}
assert set(DIST_KEYS) == set(DISTS)


class _Invalid(Exception):
    """A validation failure before the spec file's name is attached."""

    def __init__(self, key: str | None, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.key, self.message, self.hint = key, message, hint


# --------------------------------------------------------------------------- small validators


def _bounded_repr() -> reprlib.Repr:
    """A ``repr`` that looks at a few items of a few levels only, so its cost never grows with the value."""
    short = reprlib.Repr()
    short.maxlevel = 3
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 4
    short.maxstring = short.maxlong = short.maxother = 40
    return short


_REPR = _bounded_repr()


def bounded_repr(value: Any) -> str:
    """``repr(value)`` cut short, at a cost that does not grow with the value (for error messages)."""
    return _REPR.repr(value)


def _found(value: Any) -> str:
    """Describe a YAML value for an error message: type name and (short) value.

    The value may be huge or shared through aliases, so it is never repr'd in full.
    """
    if value is None:
        return "null (nothing)"
    text = _REPR.repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _name(key: Any) -> str:
    """A mapping key as it appears in a key path, cut short when it is long."""
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


_EXPONENT = re.compile(r"([-+]?)(\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)")


def _number_hint(value: Any) -> str | None:
    """YAML 1.1 reads ``1e-6`` (no dot) and ``1.0e39`` (no exponent sign) as text; say so when a string looks numeric."""
    if isinstance(value, str):
        try:
            if not math.isfinite(float(value)):
                return None
        except ValueError:
            return None
        exponent = _EXPONENT.fullmatch(value.strip())
        if exponent:
            sign, whole, fraction, exponent_sign, power = exponent.groups()
            fixed = f"{sign}{whole}.{fraction or '0'}e{exponent_sign or '+'}{power}"
            return (
                f"YAML reads {value!r} as text; write {fixed}: YAML needs a dot and a signed exponent "
                "(e.g. 1.0e-6 instead of 1e-6, 1.0e+39 instead of 1.0e39)."
            )
        return f"YAML reads {value!r} as text; write it with a dot and no quotes, e.g. 1.0e-6 instead of 1e-6."
    return None


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    """'did you mean ...?' for a near miss, else the list of allowed words."""
    close = difflib.get_close_matches(word[:100], choices, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "allowed: " + ", ".join(choices) + "."


def _check_keys(mapping: dict, allowed: tuple[str, ...], where: str) -> None:
    """Reject keys outside ``allowed``, suggesting the closest allowed one."""
    for key in mapping:
        if key not in allowed:
            path = f"{where}.{_name(key)}" if where else _name(key)
            raise _Invalid(path, f"unknown key {_name(key)!r}.", _suggest(str(key), allowed))


def _mapping(value: Any, key: str) -> dict:
    """A mapping whose keys are all strings."""
    if not isinstance(value, dict):
        raise _Invalid(key, f"expected a mapping (name: value), found {_found(value)}.")
    for name in value:
        if not isinstance(name, str):
            raise _Invalid(key, f"keys must be names (text), found {_found(name)}.")
    return value


def _list(value: Any, key: str) -> list:
    """A YAML list."""
    if not isinstance(value, list):
        raise _Invalid(key, f"expected a list, found {_found(value)}.", "Write a YAML list: [a, b], or one '- a' per line.")
    return value


def _string(value: Any, key: str) -> str:
    """Non-blank text."""
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(key, f"expected non-empty text, found {_found(value)}.")
    return value


def _int(value: Any, key: str, minimum: int) -> int:
    """An int (bools are not ints) that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(key, f"expected a whole number, found {_found(value)}.", _number_hint(value))
    if value < minimum:
        raise _Invalid(key, f"must be at least {minimum}, found {value}.")
    return value


def _number(value: Any, key: str, *, positive: bool = False, non_negative: bool = False) -> float:
    """A finite int or float (not a bool), returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(key, f"expected a number, found {_found(value)}.", _number_hint(value))
    if not math.isfinite(value):
        raise _Invalid(key, f"must be a finite number, found {value}.")
    if positive and value <= 0:
        raise _Invalid(key, f"must be greater than 0, found {value}.")
    if non_negative and value < 0:
        raise _Invalid(key, f"must be 0 or more, found {value}.")
    return float(value)


def _dtype(value: Any, key: str, choices: tuple[str, ...]) -> str:
    """A dtype name from ``choices``; a near miss gets a suggestion."""
    listing = "Choose one of: " + ", ".join(choices) + "."
    if not isinstance(value, str):
        raise _Invalid(key, f"expected a dtype name, found {_found(value)}.", listing)
    if value in DTYPES and value not in choices:
        raise _Invalid(key, f"{value!r} is not a floating dtype.", listing)
    if value not in choices:
        raise _Invalid(key, f"unknown dtype {value!r}.", _suggest(value, choices))
    return value


def _shape(value: Any, key: str) -> tuple[int, ...]:
    """A list of at most MAX_DIMS positive ints; ``[]`` is a 0-d (scalar) tensor."""
    hint = "Write a shape as a list of sizes, e.g. [4, 3]; [] is a scalar."
    if not isinstance(value, list):
        raise _Invalid(key, f"expected a list of sizes, found {_found(value)}.", hint)
    if len(value) > MAX_DIMS:
        raise _Invalid(
            key, f"has {len(value)} dimensions, but torch supports at most {MAX_DIMS}.", f"Give at most {MAX_DIMS} sizes."
        )
    for i, dim in enumerate(value):
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise _Invalid(f"{key}[{i}]", f"expected a whole number, found {_found(dim)}.", hint)
        if dim <= 0:
            raise _Invalid(f"{key}[{i}]", f"every size must be at least 1, found {dim}.", hint)
    return tuple(value)


def _literal_size(value: Any, key: str) -> None:
    """Refuse a literal deeper than MAX_DIMS or larger than MAX_LITERAL_ELEMENTS before it is walked.

    The first element of each level gives the shape a rectangular literal has, so a literal that is
    too large is refused after looking at one element per level; a ragged one is caught by the
    count in :func:`_literal`.
    """
    dims, item = [], value
    while isinstance(item, list) and item and len(dims) <= MAX_DIMS:
        dims.append(len(item))
        item = item[0]
    if len(dims) > MAX_DIMS:
        _too_deep(key)
    if math.prod(dims) > MAX_LITERAL_ELEMENTS:
        _too_many_elements(key, "x".join(map(str, dims)))


def _too_deep(key: str) -> None:
    raise _Invalid(
        key,
        f"is nested more than {MAX_DIMS} lists deep, but torch supports at most {MAX_DIMS} dimensions.",
        f"A literal needs one level of brackets per dimension; give at most {MAX_DIMS}.",
    )


def _too_many_elements(key: str, shape: str | None = None) -> None:
    size = f" (shape {shape})" if shape else ""
    raise _Invalid(
        key,
        f"holds more than {MAX_LITERAL_ELEMENTS:,} numbers{size}; a literal may hold at most {MAX_LITERAL_ELEMENTS:,}.",
        "For a large tensor use a random input ('shape: [...]') instead of writing the numbers out.",
    )


def _literal(value: Any, key: str, dtype: str | None = None) -> Any:
    """A number or rectangular nested list of numbers that fits ``dtype``.

    Bools are accepted only for ``dtype: bool`` or when every element is a bool
    and no dtype is given (a bool tensor); integer dtypes need whole numbers in
    range, and so does a literal of whole numbers only without a dtype (it
    becomes an int64 tensor); floating dtypes need numbers within their range.
    At most MAX_DIMS levels and MAX_LITERAL_ELEMENTS numbers.  Returns ``value``
    unchanged.
    """
    hint = "Examples: 4.5, [4.5], [[1, 2], [3, 4]]."
    _literal_size(value, key)
    leaves: list[tuple[str, Any]] = []

    def shape_of(item: Any, where: str, depth: int) -> tuple[int, ...]:
        if isinstance(item, list):
            if not item:
                raise _Invalid(where, "an empty list holds no numbers.", hint)
            if depth >= MAX_DIMS:  # only a ragged literal gets here: _literal_size saw the first elements
                _too_deep(key)
            if len(leaves) + len(item) > MAX_LITERAL_ELEMENTS:
                _too_many_elements(key)
            shapes = [shape_of(sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(item)]
            for i, sub in enumerate(shapes):
                if sub != shapes[0]:
                    raise _Invalid(
                        f"{where}[{i}]",
                        f"ragged list: this element has shape {list(sub)} but element 0 has {list(shapes[0])}.",
                        "Every row must have the same length (the value must be rectangular).",
                    )
            return (len(item),) + shapes[0]
        if not isinstance(item, (int, float)):
            raise _Invalid(where, f"expected a number, found {_found(item)}.", _number_hint(item) or hint)
        if isinstance(item, float) and not math.isfinite(item):
            raise _Invalid(where, f"{item} is not a finite number; inputs and parameters must be finite.", hint)
        leaves.append((where, item))
        return ()

    shape_of(value, key, 0)
    all_bools = all(isinstance(leaf, bool) for _, leaf in leaves)
    any_floats = any(isinstance(leaf, float) for _, leaf in leaves)
    for where, leaf in leaves:
        if isinstance(leaf, bool) and (dtype not in ("bool", None) or (dtype is None and not all_bools)):
            raise _Invalid(where, f"expected a number, found {_found(leaf)}.", "true/false only fit bool values.")
        if dtype in INT_RANGES:
            low, high = INT_RANGES[dtype]
            if isinstance(leaf, float) and not leaf.is_integer():
                raise _Invalid(where, f"dtype {dtype} needs whole numbers, found {leaf}.")
            if not low <= leaf <= high:
                raise _Invalid(where, f"{_REPR.repr(leaf)} is out of range for dtype {dtype} ({low}..{high}).")
        elif dtype is None and not any_floats and not all_bools:
            low, high = INT_RANGES["int64"]
            if not low <= leaf <= high:
                raise _Invalid(
                    where,
                    f"{_REPR.repr(leaf)} is out of range for int64 ({low}..{high}): "
                    "whole numbers without a dtype make an int64 tensor.",
                    "For a floating input write it with a dot and a signed exponent, e.g. 1.0e+20, or add 'dtype: float64'.",
                )
        elif dtype in FLOAT_MAX or any_floats:
            name = dtype if dtype in FLOAT_MAX else "float64"
            if abs(leaf) > FLOAT_MAX[name]:
                raise _Invalid(
                    where,
                    f"{_REPR.repr(leaf)} is out of range for {name} (largest magnitude {FLOAT_MAX[name]:.6g}).",
                    "Inputs and parameters must be finite in the dtype they are checked in.",
                )
    return value


# --------------------------------------------------------------------------- the spec's parts

OPTIONS: dict[str, Callable[[Any, str], Any]] = {
    "dtype": lambda v, k: _dtype(v, k, FLOAT_DTYPES),
    "reference_dtype": lambda v, k: _dtype(v, k, FLOAT_DTYPES),
    "device": _string,
    "seed": lambda v, k: _int(v, k, 0),
    "eps": lambda v, k: _number(v, k, positive=True),
    "rtol": lambda v, k: _number(v, k, non_negative=True),
    "atol": lambda v, k: _number(v, k, non_negative=True),
    "max_elements": lambda v, k: _int(v, k, 1),
}
TOP_KEYS = ("description", "layer", "args", "kwargs", "inputs", "params") + tuple(OPTIONS)
INPUT_KEYS = ("shape", "value", "dist", "low", "high", "mean", "std", "dtype")


def _layer(value: Any, spec_path: Path) -> str:
    """Resolve a file target against the spec's folder; keep a dotted target as is."""
    forms = "'path/to/file.py:ClassName' (relative to the spec's folder) or 'package.module:ClassName'"
    if value is None:
        raise _Invalid("layer", "is missing: the spec must name the layer to check.", f"Add 'layer:' with {forms}.")
    text = _string(value, "layer").strip()
    try:
        module_part, attr = split_target(text)
    except UsageError as exc:
        raise _Invalid("layer", exc.message, exc.hint) from None
    if not is_file_target(module_part):
        if attr is None and "." not in module_part:
            raise _Invalid("layer", f"{text!r} does not say which module the layer is in.", f"Write {forms}.")
        return text
    if attr is None:
        raise _Invalid(
            "layer", f"{text!r} names a file but no layer in it.", f"Write 'file.py:ClassName', e.g. '{text}:MyLayer'."
        )
    file = (spec_path.parent / Path(module_part).expanduser()).resolve()
    if not file.is_file():
        raise _Invalid(
            "layer",
            f"layer file {str(file)!r} {'is not a file' if file.exists() else 'does not exist'}.",
            f"A file path in 'layer' is relative to the spec's folder ({spec_path.parent.resolve()}).",
        )
    return f"{file}:{attr}"


def _draws_fit(dist: str, numbers: dict[str, float], key: str) -> None:
    """Random draws must stay finite in float64, where they are made.

    Uniform draws are ``low + u * (high - low)``, so ``high - low`` must not overflow.  Normal
    draws are ``mean + z * std``; float64 draws of ``z`` stay well inside 10, so ``|mean| + 10 * std``
    must be finite.  (Whether they also fit the check dtype is known only when the inputs are built.)
    """
    if dist == "uniform":
        low, high = numbers.get("low", 0.0), numbers.get("high", 1.0)
        if not math.isfinite(high - low):
            raise _Invalid(
                f"{key}.high",
                f"the range is too wide: high - low overflows ({high:g} - {low:g} is beyond the float64 range).",
                "Keep high - low below about 1.8e308; finite differences need far smaller values anyway.",
            )
    else:
        mean, std = numbers.get("mean", 0.0), numbers.get("std", 1.0)
        if not math.isfinite(abs(mean) + 10 * std):
            name = "std" if 10 * std >= abs(mean) else "mean"
            raise _Invalid(
                f"{key}.{name}",
                f"draws can overflow: mean ± 10·std (mean {mean:g}, std {std:g}) is beyond the float64 range.",
                "Keep |mean| + 10·std below about 1.8e308; finite differences need far smaller values anyway.",
            )


def _input(item: Any, key: str) -> InputSpec:
    """One entry of ``inputs``: a random tensor (``shape``) or a literal (``value``)."""
    example = "Write each input as '- shape: [4, 3]' (random data) or '- value: [4.5]' (a literal)."
    if not isinstance(item, dict):
        raise _Invalid(key, f"expected a mapping with 'shape' or 'value', found {_found(item)}.", example)
    _check_keys(item, INPUT_KEYS, key)
    if ("shape" in item) == ("value" in item):
        which = "both 'shape' and 'value'" if "shape" in item else "neither 'shape' nor 'value'"
        raise _Invalid(key, f"has {which}; an input needs exactly one of them.", example)
    dtype = None if item.get("dtype") is None else _dtype(item["dtype"], f"{key}.dtype", DTYPES)
    if "value" in item:
        for name in ("dist",) + DIST_KEYS["normal"] + DIST_KEYS["uniform"]:
            if name in item:
                raise _Invalid(f"{key}.{name}", "only applies to random ('shape') inputs.", f"Remove {name!r}.")
        return InputSpec(value=_literal(item["value"], f"{key}.value", dtype), dtype=dtype)

    dist = item.get("dist", "normal")
    if dist not in DISTS:
        raise _Invalid(f"{key}.dist", f"unknown distribution {_found(dist)}.", _suggest(str(dist), DISTS))
    for other in DISTS:
        for name in DIST_KEYS[other]:
            if other != dist and name in item:
                raise _Invalid(
                    f"{key}.{name}",
                    f"does not apply to dist {dist}; {name!r} belongs to dist {other}.",
                    f"dist {dist} takes {' and '.join(DIST_KEYS[dist])}.",
                )
    numbers = {name: _number(item[name], f"{key}.{name}") for name in DIST_KEYS[dist] if name in item}
    if numbers.get("std", 1.0) <= 0:
        raise _Invalid(f"{key}.std", f"must be greater than 0, found {item['std']}.")
    low, high = numbers.get("low", 0.0), numbers.get("high", 1.0)
    if dist == "uniform" and low >= high:
        raise _Invalid(
            f"{key}.low", f"low ({low:g}) must be less than high ({high:g}).", "The defaults are low: 0 and high: 1."
        )
    _draws_fit(dist, numbers, key)
    return InputSpec(shape=_shape(item["shape"], f"{key}.shape"), dist=dist, dtype=dtype, **numbers)


def _build(doc: dict, spec_path: Path) -> LayerSpec:
    """Validate the top-level mapping and convert it; raises :class:`_Invalid`."""
    _check_keys(doc, TOP_KEYS, "")

    def get(key: str, default: Any) -> Any:  # an absent or null key takes the default
        return default if doc.get(key) is None else doc[key]

    layer = _layer(doc.get("layer"), spec_path)
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        raise _Invalid("description", f"expected text, found {_found(description)}.")
    args = _list(get("args", []), "args")
    kwargs = _mapping(get("kwargs", {}), "kwargs")
    inputs = [_input(item, f"inputs[{i}]") for i, item in enumerate(_list(get("inputs", []), "inputs"))]
    params = _mapping(get("params", {}), "params")
    for name, value in params.items():
        _literal(value, f"params.{name}", "float64")
    options = {name: check(doc[name], name) for name, check in OPTIONS.items() if name in doc}
    return LayerSpec(
        path=str(spec_path),
        layer=layer,
        args=tuple(args),
        kwargs=dict(kwargs),
        inputs=tuple(inputs),
        params=dict(params),
        options=options,
        description=description,
    )


# --------------------------------------------------------------------------- reading files

_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_NOT_REGULAR_HINT = "A spec must be an ordinary .yaml file."
_LINK_HINT = "Fix the link so that it points at a spec file, or remove it."


def _kind(mode: int) -> str:
    return _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")


def _too_big(size: int) -> _Invalid:
    return _Invalid(
        None,
        f"is {size:,} bytes; a spec file may be at most {MAX_SPEC_BYTES // 1024**2} MiB ({MAX_SPEC_BYTES:,} bytes).",
        f"A spec is a small text file (limit: {MAX_SPEC_BYTES // 1024**2} MiB); for a large tensor use a random input "
        "('shape: [...]') instead of writing the numbers out.",
    )


def _unreadable(exc: OSError) -> _Invalid:
    if exc.errno == errno.ELOOP:
        return _Invalid(None, "is a symbolic link loop: the links point at each other and never reach a file.", _LINK_HINT)
    if isinstance(exc, FileNotFoundError):
        return _Invalid(None, "spec file does not exist.", "Check the path.")
    if isinstance(exc, IsADirectoryError):
        return _Invalid(None, "is a folder, not a spec file.", "Give a .yaml file, or a folder of them.")
    return _Invalid(None, f"cannot be read ({exc.strerror or exc}).", "Check the file's permissions.")


def _check_file(path: Path) -> None:
    """Refuse, before opening it, anything that is not a regular file of at most MAX_SPEC_BYTES.

    Opening a FIFO blocks until a writer comes and /dev/zero never ends, so the kind of file is
    checked with ``os.stat`` first; a symbolic link is followed, and a dangling one or a loop
    says so.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _Invalid(
                None, f"is a dangling symbolic link: it points to {_link_target(path)!r}, which does not exist.", _LINK_HINT
            ) from None
        raise _Invalid(None, "spec file does not exist.", "Check the path.") from None
    except OSError as exc:  # a link loop, a permission problem, a name too long...
        raise _unreadable(exc) from None
    except ValueError as exc:  # a NUL byte in the name
        raise _Invalid(None, f"is not a valid path ({exc}).", "Check the path.") from None
    if stat.S_ISDIR(info.st_mode):
        raise _Invalid(None, "is a folder, not a spec file.", "Give a .yaml file, or a folder of them.")
    if not stat.S_ISREG(info.st_mode):
        raise _Invalid(None, f"is not a regular file (it is {_kind(info.st_mode)}).", _NOT_REGULAR_HINT)
    if info.st_size > MAX_SPEC_BYTES:
        raise _too_big(info.st_size)


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _read_bytes(path: Path) -> bytes:
    """At most MAX_SPEC_BYTES + 1 bytes of ``path``, which :func:`_check_file` has passed.

    The file is opened non-blocking and checked again through its descriptor, so a FIFO or a
    device swapped in after the check can never block or stream forever.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _unreadable(exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Invalid(None, f"is not a regular file (it is {_kind(info.st_mode)}).", _NOT_REGULAR_HINT)
        if info.st_size > MAX_SPEC_BYTES:
            raise _too_big(info.st_size)
        chunks, total = [], 0
        while total <= MAX_SPEC_BYTES:
            chunk = os.read(fd, MAX_SPEC_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _unreadable(exc) from None
    finally:
        os.close(fd)
    if total > MAX_SPEC_BYTES:  # it grew after the size check
        raise _too_big(total)
    return b"".join(chunks)


def _read_text(path: Path) -> str:
    """The file's text as UTF-8; unreadable, special, huge files and non-UTF-8 bytes are errors."""
    _check_file(path)
    data = _read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _Invalid(
            None, f"is not UTF-8 text (undecodable byte on line {line}).", "Save the spec as UTF-8 YAML text."
        ) from None


@functools.lru_cache(maxsize=None)
def _loader() -> type:
    """The YAML loader for specs: libyaml's safe loader where PyYAML has it, else the pure-Python one.

    Only the safe constructors exist, so tags that would build Python objects are refused as
    before.  A value that YAML cannot turn into data (an invalid date, an integer with thousands
    of digits) is an error naming its line instead of a ValueError traceback.
    """
    import yaml

    class SpecLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def construct_object(self, node, deep=False):  # noqa: ANN001, ANN202
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, OverflowError) as exc:
                raise _Invalid(
                    None,
                    f"cannot read the value on line {node.start_mark.line + 1} ({_short_text(str(exc))}).",
                    "Write plain values (numbers, strings, lists, mappings).",
                ) from None

    return SpecLoader


def _short_text(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _scan(text: str, loader: type) -> tuple[int, int]:
    """(documents, values) in ``text``, from the parser's events alone.

    The parser keeps its own stack, but the composer that builds nodes recurses, in C for
    libyaml (thousands of levels crash the interpreter), so nesting deeper than MAX_NESTING is
    refused here, before anything is composed.
    """
    import yaml

    documents = values = depth = 0
    kinds = {
        yaml.SequenceStartEvent: 1,
        yaml.MappingStartEvent: 1,
        yaml.SequenceEndEvent: -1,
        yaml.MappingEndEvent: -1,
        yaml.ScalarEvent: 0,
        yaml.DocumentStartEvent: 2,
    }
    for event in yaml.parse(text, Loader=loader):
        kind = kinds.get(type(event))
        if kind == 0:
            values += 1
        elif kind == 1:
            depth += 1
            values += 1
            if depth > MAX_NESTING:
                raise _Invalid(
                    None,
                    f"is nested too deeply: more than {MAX_NESTING} levels of lists and mappings at line "
                    f"{event.start_mark.line + 1}.",
                    f"A spec needs a few levels, plus one per dimension of a literal (at most {MAX_DIMS}).",
                )
        elif kind == -1:
            depth -= 1
        elif kind == 2:
            documents += 1
    return documents, values


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(root: Any, loader: Any, written: int) -> None:
    """Walk the composed node graph once, before anything is constructed from it.

    Each distinct node is visited once (memoised by ``id()``; an alias is the same node object as
    its anchor), in an explicit stack, so that

    * a cycle (an alias inside its own anchor) is refused;
    * the values each node stands for, counted as if every alias were expanded, and the nesting
      it reaches through aliases, are summed from its children's counts -- the document may hold
      10**9 values and is refused after a few hundred steps, before any walk of the data;
    * each mapping's keys are checked for duplicates.

    Duplicates are checked here rather than in ``construct_mapping`` because SafeConstructor
    applies merge keys by rewriting ``node.value`` in place (``flatten_mapping``), so a mapping
    met through ``<<: *base`` and again on its own would look duplicated there.  Merge keys keep
    their YAML meaning: a key of the mapping itself overrides one merged in from ``<<`` (that is
    what merging is for), but a key written twice in one mapping -- ``<<`` included -- is an
    error, since YAML would silently keep only the last.
    """
    if _kind_of(root) == "scalar":
        return
    counts: dict[int, tuple[int, int]] = {}  # id -> (expanded values, expanded nesting) of a list or mapping
    parents: dict[int, tuple[Any, int]] = {}  # id -> (parent, index in it) on its first path from the root
    open_nodes: set[int] = set()  # the lists and mappings on the path from the root to the current one

    def step(parent: Any, index: int) -> str:
        if _kind_of(parent) == "sequence":
            return f"[{index}]"
        key = parent.value[index][0]
        return "." + _name(key.value if _kind_of(key) == "scalar" else "?")

    def path(node: Any, child: int | None = None) -> str | None:  # of node (or of its child); only for a message
        steps = [step(node, child)] if child is not None else []
        while id(node) in parents:
            node, index = parents[id(node)]
            steps.append(step(node, index))
        return "".join(reversed(steps)).lstrip(".") or None

    # Entries: (True, node, parent, index) visits a node; (False, node, kids, scalars) sums up its children.
    stack: list[tuple] = [(True, root, None, 0)]
    while stack:
        visit, node, other, number = stack.pop()
        ident = id(node)
        if not visit:  # every child is counted: sum them up
            values = 1 + number + sum(counts[id(kid)][0] for kid in other)
            nesting = 1 + max((counts[id(kid)][1] for kid in other), default=0)
            open_nodes.discard(ident)
            if values > MAX_SPEC_VALUES:
                how = "holds" if written > MAX_SPEC_VALUES else "expands, through YAML aliases, to"
                raise _Invalid(
                    path(node),
                    f"{how} more than {MAX_SPEC_VALUES:,} values (the value starting on line {node.start_mark.line + 1}).",
                    "Write the data out once instead of repeating it with aliases (*name); for a large tensor "
                    "use a random input ('shape: [...]').",
                )
            if nesting > MAX_NESTING:
                raise _Invalid(
                    path(node),
                    f"is nested too deeply through YAML aliases: more than {MAX_NESTING} levels of lists and mappings "
                    f"(the value starting on line {node.start_mark.line + 1}).",
                    "Write the value out instead of nesting aliases (*name) inside each other.",
                )
            counts[ident] = (values, nesting)
            continue
        if ident in counts:  # met before, through an alias: counted already
            continue
        if ident in open_nodes:
            at = path(other, number)
            raise _Invalid(
                None,
                f"is nested too deeply: the alias on line {node.start_mark.line + 1}{f' ({at})' if at else ''} refers "
                "to a value that holds it, so the value would hold itself without end.",
                "An alias (*name) may only repeat a value defined before it, outside it.",
            )
        if other is not None:
            parents[ident] = (other, number)
        if _kind_of(node) == "mapping":
            if node.value:
                _check_unique_keys(node, loader, lambda node=node: path(node))
            size = 2 * len(node.value)
            nested = [(kid, i) for i, pair in enumerate(node.value) for kid in pair if _kind_of(kid) != "scalar"]
        else:
            size = len(node.value)
            nested = [(kid, i) for i, kid in enumerate(node.value) if _kind_of(kid) != "scalar"]
        if not nested:  # scalars only (within the file's size, so within the cap): done at once
            counts[ident] = (1 + size, 1)
            continue
        open_nodes.add(ident)
        stack.append((False, node, [kid for kid, _ in nested], size - len(nested)))
        stack.extend((True, kid, node, i) for kid, i in reversed(nested))  # reversed: visited in file order


def _kind_of(node: Any) -> str:
    """'scalar', 'sequence' or 'mapping': from the node's own ``id``, not isinstance -- libyaml's C
    parser keeps making nodes of the classes it first imported, even where ``yaml`` is imported
    afresh later (pytest's pytester restores sys.modules between runs)."""
    return node.id


def _check_unique_keys(node: Any, loader: Any, where: Callable[[], str | None]) -> None:
    """Refuse a key written twice in one mapping (and keys that are not plain scalars).

    Keys are compared as the values YAML makes of them, as a dict would: 'on' and 'true' are one key.
    """
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if _kind_of(key_node) != "scalar":
            what = "list" if _kind_of(key_node) == "sequence" else "mapping"
            raise _Invalid(where(), f"has a {what} as a key on line {line}; keys must be names.", "Write name: value.")
        key = "<<" if key_node.tag == _MERGE_TAG else loader.construct_object(key_node)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:  # an unhashable scalar (none of the safe constructors makes one)
            raise _Invalid(where(), f"has a key on line {line} that cannot be a key.", "Write name: value.") from None
        if first is not key_node:
            text, at = _name(key_node.value), where()
            same = "" if first.value == key_node.value else f" ({_name(first.value)!r} and {text!r} are the same key)"
            raise _Invalid(
                f"{at}.{text}" if at else text,
                f"duplicate key {text!r} on lines {first.start_mark.line + 1} and {line}{same}; "
                "YAML would silently keep only the last one.",
                "Remove one of them.",
            )


def _parse(text: str) -> dict:
    """The single YAML document in ``text``, which must be a mapping."""
    import yaml  # here, not at import time: runs on plain layer targets never pay for it

    loader_class = _loader()
    try:
        documents, written = _scan(text, loader_class)
        if documents > 1:
            raise _Invalid(
                None,
                f"holds {documents} YAML documents (separated by '---'); a spec file holds exactly one.",
                "Split it into one file per spec.",
            )
        loader = loader_class(text)
        try:
            node = loader.get_single_node()
            doc = None
            if node is not None:
                _check_nodes(node, loader, written)
                doc = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}" if mark else ""
        if "constructor for the tag" not in str(exc.problem):
            raise _Invalid(
                None, f"cannot read the value{where} ({exc.problem}).", "Write plain values (numbers, strings, lists, mappings)."
            ) from None
        raise _Invalid(
            None,
            f"uses a YAML tag that is refused{where} ({exc.problem}): specs are read with yaml.safe_load, "
            "so they can hold only plain data, never Python objects.",
            "Write plain values (numbers, strings, lists, mappings).",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark and exc.context_mark is not mark:
            problem += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise _Invalid(None, f"YAML syntax error{where}: {problem}.", "Check indentation and quoting there.") from None
    except yaml.YAMLError as exc:
        raise _Invalid(None, f"is not valid YAML ({exc}).") from None
    if doc is None:
        raise _Invalid(None, "is empty.", MINIMAL_SPEC)
    if not isinstance(doc, dict):
        raise _Invalid(None, f"must be a mapping (layer: ..., inputs: ...), but it is a {_found(doc)}.", MINIMAL_SPEC)
    return doc


def _check_suffix(path: Path) -> None:
    """Only .yaml/.yml files are specs (a folder gets its own message from :func:`_check_file`)."""
    if path.suffix.lower() in SUFFIXES or _is_folder(path):
        return
    what = f"not {path.suffix!r}" if path.suffix else "and this name has no suffix"
    raise _Invalid(
        None,
        f"specs are .yaml/.yml files, {what}.",
        "Give a .yaml spec (or a folder of them), or a layer target such as 'file.py:MyLayer' with --input.",
    )


def _is_folder(path: Path) -> bool:
    """True for a folder (or a link to one); never raises, even for a link loop."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def load_spec(path: str | os.PathLike) -> LayerSpec:
    """Read, parse and validate one YAML spec file.  Raises :class:`SpecError`."""
    path = Path(path)
    try:
        _check_suffix(path)
        return _build(_parse(_read_text(path)), path)
    except _Invalid as exc:
        raise SpecError(str(path), exc.key, exc.message, exc.hint) from None
    except RecursionError:
        raise SpecError(str(path), None, "is nested too deeply (or an alias refers to itself).") from None


def find_specs(folder: str | os.PathLike) -> list[Path]:
    """Every ``*.yaml`` / ``*.yml`` entry directly in ``folder`` (hidden ones skipped), sorted by name.

    Entries are not filtered by whether they can be read: a dangling symbolic link, a link loop
    or a FIFO named like a spec is returned, so that the caller's :func:`load_spec` reports it as
    an error instead of the folder passing without it.  Only folders named like specs are left
    out (a folder is not a spec; the folder tests rely on that).
    """
    folder = Path(folder)
    if not folder.exists():
        raise UsageError(f"Spec folder {str(folder)!r} does not exist.", "Check the path.")
    if not folder.is_dir():
        raise UsageError(f"{str(folder)!r} is not a folder.", "Give a folder of .yaml specs, or one .yaml spec file.")
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise UsageError(f"Cannot list {str(folder)!r} ({exc.strerror or exc}).", "Check its permissions.") from None
    specs = [p for p in entries if p.suffix.lower() in SUFFIXES and not p.name.startswith(".") and not _is_folder(p)]
    return sorted(specs, key=lambda p: p.name)


def is_spec_path(text: str) -> bool:
    """True when ``text`` ends in .yaml/.yml (any case) or names an existing folder."""
    if not text:
        return False
    if text.lower().endswith(SUFFIXES):
        return True
    try:
        return Path(text).is_dir()
    except (OSError, ValueError):
        return False

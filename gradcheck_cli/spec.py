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

Validators below raise :class:`Invalid` (key path, message, hint) without
knowing the file; :func:`load_spec` adds the file name.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import SpecError, UsageError, suggest
from .load import is_file_target, split_target
from .matrix import Axis, Pick, read_matrix, variant_name
from .options import DTYPES, FLOAT_DTYPES, INT_DTYPES, RENAMED, SPEC_KEYS, check_option
from .yamlfile import MAX_NESTING, MAX_SPEC_VALUES, Invalid, bounded_repr, found, key_name, read_document

DISTS = ("normal", "uniform")

SUFFIXES = (".yaml", ".yml")

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


class _NotGiven:
    """No ``arg`` (None is a value an argument may have)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __reduce__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


@dataclass(frozen=True)
class InputSpec:
    """One argument of the layer.

    Exactly one of: ``shape`` (a random tensor drawn from ``dist``), ``value`` (a
    literal tensor: a number or nested list), ``arg`` (any other Python value, passed
    as it is: a flag, a string, None, a number as a number) or ``items`` (a list or a
    tuple of arguments, nested as the layer takes them). ``dtype`` None means: the check
    dtype for floating data, int64 for integer literals; integer (and bool) tensors are
    passed through and never perturbed. ``name`` makes it a keyword argument;
    ``constant`` passes its tensors without perturbing or checking them (a fixed filter,
    boxes, a mask).
    """

    shape: tuple[int, ...] | None = None
    value: Any = None
    dist: str = "normal"
    low: float = 0.0
    high: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    dtype: str | None = None
    arg: Any = NOT_GIVEN
    items: tuple["InputSpec", ...] | None = None
    sequence: str = "list"  # what ``items`` is passed as: "list" or "tuple"
    name: str | None = None
    constant: bool = False

    @property
    def kind(self) -> str:
        """'random', 'literal', 'arg' or 'items'."""
        if self.items is not None:
            return "items"
        if self.arg is not NOT_GIVEN:
            return "arg"
        return "random" if self.shape is not None else "literal"

    def describe(self) -> str:
        kind = self.kind
        if kind == "items":
            open_, close = ("[", "]") if self.sequence == "list" else ("(", ")")
            text = open_ + ", ".join(i.describe() for i in self.items) + close
        elif kind == "arg":
            text = ":" + _short(self.arg)
        elif kind == "random":
            text = "x".join(str(d) for d in self.shape) if self.shape else "scalar"
            if self.dist == "uniform":
                text += f" uniform[{self.low:g},{self.high:g}]"
            elif (self.mean, self.std) != (0.0, 1.0):
                text += f" normal({self.mean:g},{self.std:g})"
        else:
            text = "=" + _short(self.value)
        if self.dtype:
            text += f" {self.dtype}"
        if self.constant:
            text += " constant"
        return f"{self.name}={text}" if self.name else text


def _short(value: Any, limit: int = 24) -> str:
    import json

    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class LayerSpec:
    """Everything a YAML spec pins down about one check.

    ``layer`` is a target string as :func:`gradcheck_cli.load.load_target`
    takes it, with a file path already resolved against the spec's folder.
    ``options`` holds the check options the spec sets (keys of
    :class:`CheckOptions`); command-line values override them. ``matrix`` holds the
    axes of a ``matrix:`` (see matrix.py), which expands the spec into the specs of its
    combinations; each of those has no matrix and its ``variant``, the alternatives it took.
    """

    path: str
    layer: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    inputs: tuple[InputSpec, ...] = ()
    params: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    description: str | None = None
    matrix: tuple[Axis, ...] = ()
    variant: tuple[Pick, ...] = ()
    old_names: tuple[str, ...] = ()  # keys the spec gives under an option's old name (deprecated; said in the report)

    @property
    def variant_name(self) -> str:
        """'seed=1,dtype=float32' for a combination of a matrix; '' otherwise."""
        return variant_name(self.variant)

    def options_with(self, overrides: dict) -> dict:
        """The spec's check options with ``overrides`` (the command line's) on top; None overrides nothing."""
        return {**self.options, **{k: v for k, v in overrides.items() if v is not None}}



# --------------------------------------------------------------------------- small validators


def _number_hint(value: Any) -> str | None:
    """A number written as text (quoted: '1e-6'): say to write it without quotes. (Unquoted, 1e-6, 1E5 and
    1.0e39 are numbers: see yamlfile.YAML12_FLOAT.)"""
    if isinstance(value, str):
        try:
            if not math.isfinite(float(value)):
                return None
        except ValueError:
            return None
        return f"{value!r} is quoted, so YAML reads it as text; write the number without quotes: {value.strip()}."
    return None


def _check_keys(mapping: dict, allowed: tuple[str, ...], where: str) -> None:
    """Reject keys outside ``allowed``, suggesting the closest allowed one."""
    for key in mapping:
        if key not in allowed:
            path = f"{where}.{key_name(key)}" if where else key_name(key)
            raise Invalid(path, f"unknown key {key_name(key)!r}.", suggest(str(key), allowed))


def _mapping(value: Any, key: str) -> dict:
    """A mapping whose keys are all strings."""
    if not isinstance(value, dict):
        raise Invalid(key, f"expected a mapping (name: value), found {found(value)}.")
    for name in value:
        if not isinstance(name, str):
            raise Invalid(key, f"keys must be names (text), found {found(name)}.")
    return value


def _list(value: Any, key: str) -> list:
    """A YAML list."""
    if not isinstance(value, list):
        raise Invalid(key, f"expected a list, found {found(value)}.", "Write a YAML list: [a, b], or one '- a' per line.")
    return value


def _string(value: Any, key: str) -> str:
    """Non-blank text."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(key, f"expected non-empty text, found {found(value)}.")
    return value


def _int(value: Any, key: str, minimum: int) -> int:
    """An int (bools are not ints) that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(key, f"expected a whole number, found {found(value)}.", _number_hint(value))
    if value < minimum:
        raise Invalid(key, f"must be at least {minimum}, found {value}.")
    return value


def _number(value: Any, key: str, *, positive: bool = False, non_negative: bool = False) -> float:
    """A finite int or float (not a bool), returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(key, f"expected a number, found {found(value)}.", _number_hint(value))
    if not math.isfinite(value):
        raise Invalid(key, f"must be a finite number, found {value}.")
    if positive and value <= 0:
        raise Invalid(key, f"must be greater than 0, found {value}.")
    if non_negative and value < 0:
        raise Invalid(key, f"must be 0 or more, found {value}.")
    return float(value)


def _dtype(value: Any, key: str, choices: tuple[str, ...]) -> str:
    """A dtype name from ``choices``; a near miss gets a suggestion."""
    listing = "Choose one of: " + ", ".join(choices) + "."
    if not isinstance(value, str):
        raise Invalid(key, f"expected a dtype name, found {found(value)}.", listing)
    if value in DTYPES and value not in choices:
        raise Invalid(key, f"{value!r} is not a floating dtype.", listing)
    if value not in choices:
        raise Invalid(key, f"unknown dtype {value!r}.", suggest(value, choices))
    return value


def _shape(value: Any, key: str) -> tuple[int, ...]:
    """A list of at most MAX_DIMS positive ints; ``[]`` is a 0-d (scalar) tensor."""
    hint = "Write a shape as a list of sizes, e.g. [4, 3]; [] is a scalar."
    if not isinstance(value, list):
        raise Invalid(key, f"expected a list of sizes, found {found(value)}.", hint)
    if len(value) > MAX_DIMS:
        raise Invalid(
            key, f"has {len(value)} dimensions, but torch supports at most {MAX_DIMS}.", f"Give at most {MAX_DIMS} sizes."
        )
    for i, dim in enumerate(value):
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise Invalid(f"{key}[{i}]", f"expected a whole number, found {found(dim)}.", hint)
        if dim <= 0:
            raise Invalid(f"{key}[{i}]", f"every size must be at least 1, found {dim}.", hint)
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
    raise Invalid(
        key,
        f"is nested more than {MAX_DIMS} lists deep, but torch supports at most {MAX_DIMS} dimensions.",
        f"A literal needs one level of brackets per dimension; give at most {MAX_DIMS}.",
    )


def _too_many_elements(key: str, shape: str | None = None) -> None:
    size = f" (shape {shape})" if shape else ""
    raise Invalid(
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
                raise Invalid(where, "an empty list holds no numbers.", hint)
            if depth >= MAX_DIMS:  # only a ragged literal gets here: _literal_size saw the first elements
                _too_deep(key)
            if len(leaves) + len(item) > MAX_LITERAL_ELEMENTS:
                _too_many_elements(key)
            shapes = [shape_of(sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(item)]
            for i, sub in enumerate(shapes):
                if sub != shapes[0]:
                    raise Invalid(
                        f"{where}[{i}]",
                        f"ragged list: this element has shape {list(sub)} but element 0 has {list(shapes[0])}.",
                        "Every row must have the same length (the value must be rectangular).",
                    )
            return (len(item),) + shapes[0]
        if not isinstance(item, (int, float)):
            raise Invalid(where, f"expected a number, found {found(item)}.", _number_hint(item) or hint)
        if isinstance(item, float) and not math.isfinite(item):
            raise Invalid(where, f"{item} is not a finite number; inputs and parameters must be finite.", hint)
        leaves.append((where, item))
        return ()

    shape_of(value, key, 0)
    all_bools = all(isinstance(leaf, bool) for _, leaf in leaves)
    any_floats = any(isinstance(leaf, float) for _, leaf in leaves)
    for where, leaf in leaves:
        if isinstance(leaf, bool) and (dtype not in ("bool", None) or (dtype is None and not all_bools)):
            raise Invalid(where, f"expected a number, found {found(leaf)}.", "true/false only fit bool values.")
        if dtype in INT_RANGES:
            low, high = INT_RANGES[dtype]
            if isinstance(leaf, float) and not leaf.is_integer():
                raise Invalid(where, f"dtype {dtype} needs whole numbers, found {leaf}.")
            if not low <= leaf <= high:
                raise Invalid(where, f"{bounded_repr(leaf)} is out of range for dtype {dtype} ({low}..{high}).")
        elif dtype is None and not any_floats and not all_bools:
            low, high = INT_RANGES["int64"]
            if not low <= leaf <= high:
                raise Invalid(
                    where,
                    f"{bounded_repr(leaf)} is out of range for int64 ({low}..{high}): "
                    "whole numbers without a dtype make an int64 tensor.",
                    "For a floating input write it with a dot and a signed exponent, e.g. 1.0e+20, or add 'dtype: float64'.",
                )
        elif dtype in FLOAT_MAX or any_floats:
            name = dtype if dtype in FLOAT_MAX else "float64"
            if abs(leaf) > FLOAT_MAX[name]:
                raise Invalid(
                    where,
                    f"{bounded_repr(leaf)} is out of range for {name} (largest magnitude {FLOAT_MAX[name]:.6g}).",
                    "Inputs and parameters must be finite in the dtype they are checked in.",
                )
    return value


# --------------------------------------------------------------------------- the spec's parts

TOP_KEYS = ("description", "layer", "args", "kwargs", "inputs", "params") + SPEC_KEYS + ("matrix",) + tuple(RENAMED)
INPUT_KEYS = ("shape", "value", "arg", "list", "tuple", "name", "constant", "dist", "low", "high", "mean", "std", "dtype")


def _layer(value: Any, spec_path: Path, key: str = "layer") -> str:
    """Resolve a file target (``layer``, ``reference``) against the spec's folder; keep a dotted target as is."""
    forms = "'path/to/file.py:ClassName' (relative to the spec's folder) or 'package.module:ClassName'"
    if value is None:
        raise Invalid("layer", "is missing: the spec must name the layer to check.", f"Add 'layer:' with {forms}.")
    text = _string(value, key).strip()
    try:
        module_part, attr = split_target(text)
    except UsageError as exc:
        raise Invalid(key, exc.message, exc.hint) from None
    if not is_file_target(module_part):
        if attr is None and "." not in module_part:
            raise Invalid(key, f"{text!r} does not say which module the layer is in.", f"Write {forms}.")
        return text
    if attr is None:
        raise Invalid(
            key, f"{text!r} names a file but no layer in it.", f"Write 'file.py:ClassName', e.g. '{text}:MyLayer'."
        )
    file = (spec_path.parent / Path(module_part).expanduser()).resolve()
    if not file.is_file():
        raise Invalid(
            key,
            f"{key} file {str(file)!r} {'is not a file' if file.exists() else 'does not exist'}.",
            f"A file path in '{key}' is relative to the spec's folder ({spec_path.parent.resolve()}).",
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
            raise Invalid(
                f"{key}.high",
                f"the range is too wide: high - low overflows ({high:g} - {low:g} is beyond the float64 range).",
                "Keep high - low below about 1.8e308; finite differences need far smaller values anyway.",
            )
    else:
        mean, std = numbers.get("mean", 0.0), numbers.get("std", 1.0)
        if not math.isfinite(abs(mean) + 10 * std):
            name = "std" if 10 * std >= abs(mean) else "mean"
            raise Invalid(
                f"{key}.{name}",
                f"draws can overflow: mean ± 10·std (mean {mean:g}, std {std:g}) is beyond the float64 range.",
                "Keep |mean| + 10·std below about 1.8e308; finite differences need far smaller values anyway.",
            )


def _input(item: Any, key: str, depth: int = 0) -> InputSpec:
    """One entry of ``inputs``: a random tensor (``shape``), a literal tensor (``value``), a Python value
    passed as it is (``arg``), or a ``list``/``tuple`` of entries; ``name`` for a keyword argument."""
    example = (
        "Write each input as '- shape: [4, 3]' (random data), '- value: [4.5]' (a literal tensor), "
        "'- {name: mode, arg: bilinear}' (a Python value) or '- list: [...]' (a list of inputs)."
    )
    if not isinstance(item, dict):
        raise Invalid(key, f"expected a mapping with 'shape', 'value', 'arg', 'list' or 'tuple', found {found(item)}.", example)
    _check_keys(item, INPUT_KEYS, key)
    given = [k for k in ("shape", "value", "arg", "list", "tuple") if k in item]
    if len(given) != 1:
        which = " and ".join(repr(k) for k in given) if given else "none of 'shape', 'value', 'arg', 'list', 'tuple'"
        raise Invalid(key, f"has {which}; an input needs exactly one of them.", example)
    common = {"name": _argument_name(item.get("name"), f"{key}.name"), "constant": _flag(item.get("constant", False), f"{key}.constant")}
    if given[0] in ("arg", "list", "tuple"):
        for name in ("dist", "dtype") + DIST_KEYS["normal"] + DIST_KEYS["uniform"]:
            if name in item:
                raise Invalid(f"{key}.{name}", f"only applies to tensors ('shape' or 'value'), not to {given[0]!r}.", f"Remove {name!r}.")
    if given[0] == "arg":
        if common["constant"]:
            raise Invalid(f"{key}.constant", "only applies to tensors: a Python value ('arg') is never perturbed anyway.", "Remove 'constant'.")
        return InputSpec(arg=_plain(item["arg"], f"{key}.arg"), **common)
    if given[0] in ("list", "tuple"):
        if depth >= MAX_DIMS:
            raise Invalid(key, f"lists of inputs are nested more than {MAX_DIMS} deep.", "Nest at most a few levels.")
        entries = _list(item[given[0]], f"{key}.{given[0]}")
        items = tuple(_input(sub, f"{key}.{given[0]}[{i}]", depth + 1) for i, sub in enumerate(entries))
        named = [i for i, sub in enumerate(items) if sub.name]
        if named:
            raise Invalid(f"{key}.{given[0]}[{named[0]}].name", "the items of a list or tuple are positional: they have no names.", "Remove 'name'.")
        if common["constant"]:
            items = tuple(replace(sub, constant=True) if sub.kind in ("random", "literal", "items") else sub for sub in items)
        return InputSpec(items=items, sequence=given[0], **common)
    return replace(_tensor_input(item, key), **common)


def _tensor_input(item: dict, key: str) -> InputSpec:
    """A random tensor (``shape``) or a literal (``value``)."""
    dtype = None if item.get("dtype") is None else _dtype(item["dtype"], f"{key}.dtype", DTYPES)
    if "value" in item:
        for name in ("dist",) + DIST_KEYS["normal"] + DIST_KEYS["uniform"]:
            if name in item:
                raise Invalid(f"{key}.{name}", "only applies to random ('shape') inputs.", f"Remove {name!r}.")
        return InputSpec(value=_literal(item["value"], f"{key}.value", dtype), dtype=dtype)

    dist = item.get("dist", "normal")
    if dist not in DISTS:
        raise Invalid(f"{key}.dist", f"unknown distribution {found(dist)}.", suggest(str(dist), DISTS))
    for other in DISTS:
        for name in DIST_KEYS[other]:
            if other != dist and name in item:
                raise Invalid(
                    f"{key}.{name}",
                    f"does not apply to dist {dist}; {name!r} belongs to dist {other}.",
                    f"dist {dist} takes {' and '.join(DIST_KEYS[dist])}.",
                )
    numbers = {name: _number(item[name], f"{key}.{name}") for name in DIST_KEYS[dist] if name in item}
    if numbers.get("std", 1.0) <= 0:
        raise Invalid(f"{key}.std", f"must be greater than 0, found {item['std']}.")
    low, high = numbers.get("low", 0.0), numbers.get("high", 1.0)
    if dist == "uniform" and low >= high:
        raise Invalid(
            f"{key}.low", f"low ({low:g}) must be less than high ({high:g}).", "The defaults are low: 0 and high: 1."
        )
    _draws_fit(dist, numbers, key)
    return InputSpec(shape=_shape(item["shape"], f"{key}.shape"), dist=dist, dtype=dtype, **numbers)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _argument_name(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise Invalid(key, f"expected the name of one of the layer's arguments, found {found(value)}.", "Example: name: grid.")
    return value


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(key, f"expected true or false, found {found(value)}.")
    return value


def _plain(value: Any, key: str) -> Any:
    """A Python value given in a spec: plain data (numbers, text, booleans, null, lists and mappings of them)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, list):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _plain(v, f"{key}.{key_name(k)}") for k, v in _mapping(value, key).items()}
    raise Invalid(key, f"expected plain data (a number, text, true/false, null, a list or a mapping), found {found(value)}.")


def _option(name: str, value: Any, where: str | None = None) -> Any:
    """A check option the spec sets (at ``where``: its key), checked as the API and the command line check it (options.py)."""
    try:
        return check_option(name, value)
    except UsageError as exc:
        raise Invalid(where or name, exc.detail, _number_hint(value) or exc.hint) from None


def _params(value: Any, key: str) -> dict:
    params = _mapping(value, key)
    for name, literal in params.items():
        _literal(literal, f"{key}.{name}", "float64")
    return dict(params)


def _alternative(key: str, value: Any, where: str) -> Any:
    """One alternative of a matrix axis, read and checked as the same key at the top level is."""
    if key == "inputs":
        return tuple(_input(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where)))
    if key == "args":
        return tuple(_list(value, where))
    if key == "kwargs":
        return dict(_mapping(value, where))
    if key == "params":
        return _params(value, where)
    return _option(key, value, where)


def _matrix(doc: dict, spec_path: Path) -> tuple[Axis, ...]:
    if doc.get("matrix") is None:
        return ()

    def alternative(key: str, value: Any, where: str) -> Any:
        checked = _alternative(key, value, where)
        # A reference's file path is relative to the spec's folder, as at the top level.
        return _layer(checked, spec_path, where) if key == "reference" and checked is not None else checked

    axes = read_matrix(doc["matrix"], alternative)
    for axis in axes:
        if doc.get(axis.key) is not None:
            raise Invalid(
                f"matrix.{axis.key}",
                f"{axis.key!r} is set at the top level too; a key is either fixed there or varied here.",
                f"Remove the top-level {axis.key!r}, or list its value among the alternatives here.",
            )
    return axes


def _build(doc: dict, spec_path: Path) -> LayerSpec:
    """Validate the top-level mapping and convert it; raises :class:`Invalid`."""
    _check_keys(doc, TOP_KEYS, "")

    def get(key: str, default: Any) -> Any:  # an absent or null key takes the default
        return default if doc.get(key) is None else doc[key]

    layer = _layer(doc.get("layer"), spec_path)
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        raise Invalid("description", f"expected text, found {found(description)}.")
    args = _list(get("args", []), "args")
    kwargs = _mapping(get("kwargs", {}), "kwargs")
    inputs = [_input(item, f"inputs[{i}]") for i, item in enumerate(_list(get("inputs", []), "inputs"))]
    params = _params(get("params", {}), "params")
    options = {}
    for key in SPEC_KEYS + tuple(RENAMED):  # an option's old name (reference_dtype) still works
        if doc.get(key) is None:
            continue
        name = RENAMED.get(key, key)
        if name in options:
            raise Invalid(key, f"{key!r} is the old name of {name!r}, which is given too.", f"Keep {name} only.")
        options[name] = _option(name, doc[key], key)
    if "reference" in options:  # a file path is relative to the spec's folder, as in 'layer'
        options["reference"] = _layer(options["reference"], spec_path, "reference")
    matrix = _matrix(doc, spec_path)
    return LayerSpec(
        path=str(spec_path),
        layer=layer,
        args=tuple(args),
        kwargs=dict(kwargs),
        inputs=tuple(inputs),
        params=dict(params),
        options=options,
        description=description,
        matrix=matrix,
        old_names=tuple(key for key in RENAMED if doc.get(key) is not None),
    )


def _check_suffix(path: Path) -> None:
    """Only .yaml/.yml files are specs (a folder gets its own message from :func:`_check_file`)."""
    if path.suffix.lower() in SUFFIXES or _is_folder(path):
        return
    what = f"not {path.suffix!r}" if path.suffix else "and this name has no suffix"
    raise Invalid(
        None,
        f"specs are .yaml/.yml files, {what}.",
        "Give a .yaml spec (or a folder of them); a layer is named as file.py:MyLayer and checked with 'gradcheck run'.",
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
        return _build(read_document(path), path)
    except Invalid as exc:
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

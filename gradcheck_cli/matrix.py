"""One spec, many checks: a spec's ``matrix:`` and the combinations it expands to.

    matrix:
      seed: [0, 1, 2]
      dtype: [float64, float32]
      inputs:                 # alternatives for the whole inputs list
        - [{shape: [1, 31]}]
        - [{shape: [4, 1024]}]

Each key of ``matrix`` (an *axis*) is a key a spec may set at its top level -- a check
option of :mod:`.options` (``SPEC_KEYS``), or ``inputs``, ``args``, ``kwargs``, ``params`` --
and lists its alternatives, each read and checked exactly as the same key at the top level
(by spec.py's own validators, passed in). The spec expands to every combination, the first
axis outermost, at most :data:`MAX_COMBINATIONS`; a key is set either at the top level or
in the matrix, never both.

A combination is named by the axes that vary: ``seed=1,dtype=float32,inputs=1`` -- an
option by its value as written (``1e-06`` for 1e-6), an alternative of ``inputs``, ``args``,
``kwargs`` or ``params`` (and an option value that is not one plain word) by its index in
the list. ``spec.yaml[seed=1,dtype=float32,inputs=1]`` is a target: it checks just that
combination (``spec.yaml[dtype=float32]`` every combination with that value). Rerun lines,
JUnit suites, JSON entries and pytest ids all use that name.

An axis the command line fixes (``--seed 3``: any check option given, ``--input`` for a
spec's inputs, a positional ``--init`` for its args) is collapsed: its alternatives would all
run with the command line's value, so they are not expanded, and names leave the axis out.
A selector is applied before that, to the full matrix, so a rerun line (which repeats
``--seed`` and ``--dtype``) still finds its combination.

Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Collection, Mapping

from .errors import UsageError, suggest
from .options import RENAMED, SPEC_KEYS, check_option
from .yamlfile import Invalid, found, key_name

MAX_COMBINATIONS = 256
# Axes whose alternatives are whole lists or mappings: named by their index.
LISTED = ("inputs", "args", "kwargs", "params")
AXIS_KEYS = SPEC_KEYS + LISTED

EXAMPLE = "Example: matrix: {seed: [0, 1, 2], dtype: [float64, float32]}, or for inputs: 'inputs: [[{shape: [1, 31]}], [{shape: [4, 1024]}]]'."
# An option value named as it is: one plain word (a number, a dtype, a device, a tensor name).
_WORD = re.compile(r"[A-Za-z0-9_.:+\-]+")
# 'spec.yaml[seed=1,dtype=float32]': a spec file, then the combinations it picks.
_SELECTOR = re.compile(r"(?s)(.+\.ya?ml)\[(.*)\]", re.IGNORECASE)


@dataclass(frozen=True)
class Axis:
    """One key of a matrix: its alternatives (validated, as a spec holds them) and their names."""

    key: str
    values: tuple[Any, ...]
    labels: tuple[str, ...]

    @property
    def by_index(self) -> bool:
        return self.labels == tuple(str(i) for i in range(len(self.values)))


@dataclass(frozen=True)
class Pick:
    """The alternative a combination takes on one axis; ``shown`` when its name includes it.

    ``data`` is what the name says, as the JSON report gives it: the option's value, or the index."""

    key: str
    index: int
    label: str
    data: Any = None
    shown: bool = True


def variant_name(picks: tuple[Pick, ...]) -> str:
    """'seed=1,dtype=float32,inputs=1' (the picks that are shown); '' for a spec without a matrix."""
    return ",".join(f"{p.key}={p.label}" for p in picks if p.shown)


def named(path: str, spec: Any) -> str:
    """How a run names a combination of the spec at ``path``: 'path[seed=1,...]', or 'path' for the only one."""
    name = variant_name(spec.variant)
    return f"{path}[{name}]" if name else path


# --------------------------------------------------------------------------- reading


def read_matrix(value: Any, check: Callable[[str, Any, str], Any]) -> tuple[Axis, ...]:
    """A spec's ``matrix:`` mapping as its axes; ``check(key, alternative, where)`` validates one alternative
    as the same key at the top level is (raising :class:`Invalid` at ``where``). Raises :class:`Invalid`."""
    if not isinstance(value, dict):
        raise Invalid("matrix", f"expected a mapping of keys to lists of alternatives, found {found(value)}.", EXAMPLE)
    if not value:
        raise Invalid("matrix", "is empty: it varies no key.", "List at least one key with its alternatives (seed: [0, 1, 2]), or remove 'matrix'.")
    axes = []
    for key, alternatives in value.items():
        where = f"matrix.{key_name(key)}"
        if isinstance(key, str) and key in RENAMED:  # an option's old name, as at the top level
            if RENAMED[key] in value:
                raise Invalid(where, f"{key!r} is the old name of {RENAMED[key]!r}, which is varied too.", f"Keep {RENAMED[key]} only.")
            key = RENAMED[key]
        if key not in AXIS_KEYS:
            raise Invalid(where, f"unknown key {key_name(key)!r}: a matrix varies check options, inputs, args, kwargs and params.", suggest(str(key), AXIS_KEYS))
        if not isinstance(alternatives, list):
            raise Invalid(where, f"expected a list of alternatives (one check each), found {found(alternatives)}.", EXAMPLE)
        if not alternatives:
            raise Invalid(where, "is an empty list: each key of a matrix needs at least one alternative.", f"Give {key} its alternatives, or remove it from the matrix.")
        values = tuple(check(key, item, f"{where}[{i}]") for i, item in enumerate(alternatives))
        for i, item in enumerate(values):
            first = next(j for j, other in enumerate(values) if _same(other, item))
            if first < i:
                raise Invalid(f"{where}[{i}]", f"repeats {where}[{first}]: two alternatives would be the same check.", "Remove the repeated one.")
        axes.append(Axis(key, values, _labels(key, values)))
    total = math.prod(len(axis.values) for axis in axes)
    if total > MAX_COMBINATIONS:
        sizes = " x ".join(f"{len(axis.values)} {axis.key}" for axis in axes)
        raise Invalid(
            "matrix",
            f"expands to {total:,} combinations ({sizes}); a spec may expand to at most {MAX_COMBINATIONS}.",
            "List fewer alternatives, or split the matrix over several specs.",
        )
    return tuple(axes)


def _same(a: Any, b: Any) -> bool:
    """Equal as checks: True and 1 differ (YAML tells them apart), 1 and 1.0 do not."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _labels(key: str, values: tuple[Any, ...]) -> tuple[str, ...]:
    """Each alternative's name: its value where every one is a distinct plain word, else its index."""
    if key not in LISTED:
        texts = [_word(v) for v in values]
        if None not in texts and len(set(texts)) == len(texts):
            return tuple(texts)  # type: ignore[arg-type]
    return tuple(str(i) for i in range(len(values)))


def _word(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        text = str(value)
    elif isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
        text = "+".join(value)  # tensor names (only, constant)
    else:
        return None
    return text if _WORD.fullmatch(text) else None


# --------------------------------------------------------------------------- expanding


def combinations(spec: Any, selector: Mapping[str, str] | None = None, fixed: Collection[str] = (), target: str = "") -> list[Any]:
    """The checks a spec stands for: one :class:`~gradcheck_cli.spec.LayerSpec` per combination, each with its
    alternatives set, no matrix, and its ``variant`` (the picks that name it).

    ``selector`` ({'seed': '1'}) keeps the combinations with those alternatives, chosen from the
    full matrix; then the axes in ``fixed`` (set on the command line) collapse. A spec without a
    matrix, or whose matrix leaves one combination, is one check with no name of its own.
    Raises :class:`UsageError` for a selector that names no axis or no alternative.
    """
    axes = spec.matrix
    chosen = _select(axes, selector or {}, target or spec.path)
    shown = {axis.key for axis in axes if axis.key not in fixed and len(axis.values) > 1}
    specs, seen = [], set()
    for indices in itertools.product(*chosen):
        picks = tuple(Pick(axis.key, i, axis.labels[i], _data(axis, i), axis.key in shown) for axis, i in zip(axes, indices))
        name = variant_name(picks)
        if name in seen:
            continue  # the same check as one before: it differs only on collapsed axes
        seen.add(name)
        each = spec
        for axis, i in zip(axes, indices):
            each = _apply(each, axis.key, axis.values[i])
        specs.append(replace(each, matrix=(), variant=picks))
    return specs


def _data(axis: Axis, i: int) -> Any:
    if axis.by_index:
        return i
    value = axis.values[i]
    return list(value) if isinstance(value, tuple) else value


def only_combination(spec: Any) -> Any:
    """The spec as one check: its only combination, or a :class:`UsageError` where its matrix has several."""
    if not spec.matrix:
        return spec
    specs = combinations(spec)
    if len(specs) > 1:
        raise UsageError(
            f"{spec.path} has a matrix of {len(specs)} combinations; one check takes one of them.",
            "Check each: for each in gradcheck_cli.matrix.combinations(spec): check_spec(each) -- or run 'gradcheck run SPEC'.",
        )
    return specs[0]


def _apply(spec: Any, key: str, value: Any) -> Any:
    if key == "inputs":
        return replace(spec, inputs=tuple(value))
    if key == "args":
        return replace(spec, args=tuple(value))
    if key in ("kwargs", "params"):
        return replace(spec, **{key: dict(value)})
    options = {k: v for k, v in spec.options.items() if k != key}
    if value is not None:
        options[key] = value
    return replace(spec, options=options)


def _select(axes: tuple[Axis, ...], selector: Mapping[str, str], target: str) -> list[list[int]]:
    """For each axis, the indices of the alternatives ``selector`` keeps."""
    if selector and not axes:
        raise UsageError(f"{target}: the spec has no matrix, so there is no combination to pick.", "Name the spec without '[...]'.")
    keys = [axis.key for axis in axes]
    for key in selector:
        if key not in keys:
            raise UsageError(f"{target}: {key!r} is not a key of the spec's matrix.", suggest(key, keys, "its keys"))
    chosen = []
    for axis in axes:
        if axis.key not in selector:
            chosen.append(list(range(len(axis.values))))
            continue
        index = _match(axis, selector[axis.key])
        if index is None:
            raise UsageError(
                f"{target}: {axis.key}={selector[axis.key]} is none of the matrix's alternatives.",
                f"{axis.key} takes: {', '.join(axis.labels)}.",
            )
        chosen.append([index])
    return chosen


def _match(axis: Axis, text: str) -> int | None:
    """The alternative ``text`` names: by its name, else (an option) by its value (eps=1e-6 is eps=1e-06)."""
    if text in axis.labels:
        return axis.labels.index(text)
    if axis.key in LISTED:
        return None
    try:
        value = check_option(axis.key, text)
    except UsageError:
        return None
    return next((i for i, v in enumerate(axis.values) if v == value), None)


# --------------------------------------------------------------------------- targets


def describe(axes: tuple[Axis, ...]) -> str:
    """'seed 0|1|2 × inputs [1x31]|[4x1024]: 6 checks', as `gradcheck list` shows a matrix; '-' for none."""
    if not axes:
        return "-"
    parts = []
    for axis in axes:
        if axis.key == "inputs":
            shown = ["[" + ", ".join(item.describe() for item in value) + "]" for value in axis.values]
        else:
            shown = list(axis.labels)
        parts.append(f"{axis.key} {'|'.join(shown)}")
    return " × ".join(parts) + f": {math.prod(len(a.values) for a in axes)} checks"


def split_selector(target: str) -> tuple[str, str | None]:
    """'spec.yaml[seed=1]' -> ('spec.yaml', 'seed=1'); any other target -> (target, None)."""
    match = _SELECTOR.fullmatch(target.strip())
    return (match.group(1), match.group(2)) if match else (target, None)


def parse_selector(target: str, text: str) -> dict[str, str]:
    """'seed=1,dtype=float32' -> {'seed': '1', 'dtype': 'float32'}; raises :class:`UsageError`."""
    hint = "Pick combinations as spec.yaml[KEY=VALUE,...], e.g. 'spec.yaml[seed=1,dtype=float32]' (quoted for the shell)."
    picked: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier() or not value:
            raise UsageError(f"{target}: {part!r} is not KEY=VALUE.", hint)
        if key in picked:
            raise UsageError(f"{target}: {key} is picked twice.", hint)
        picked[key] = value
    return picked


def matrix_values(spec: Any) -> dict[str, Any]:
    """What a combination's name says, as data (the JSON report): {'seed': 1, 'dtype': 'float32', 'inputs': 1}."""
    return {pick.key: pick.data for pick in spec.variant if pick.shown}


def spec_key(spec: Any, key: str | None) -> str | None:
    """Where in the spec file a key of a combination was written: 'inputs' -> 'matrix.inputs[1]'."""
    if not key:
        return key
    top = re.split(r"[.\[]", key, maxsplit=1)[0]
    for pick in spec.variant:
        if pick.key == top:
            return f"matrix.{top}[{pick.index}]{key[len(top):]}"
    return key

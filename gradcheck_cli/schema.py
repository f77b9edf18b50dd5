"""The spec format as a JSON Schema, for editors (YAML language server, VS Code, PyCharm) and check-jsonschema.

Built from the same declarations the spec reader checks against -- the keys of
:mod:`.spec` and the option table of :mod:`.options` (each option's kind gives its
type) -- so the published file cannot drift from what ``gradcheck validate`` accepts;
``gradcheck_cli/spec.schema.json`` is this, written out, and a test holds the two equal.
The schema is a guide for editing: ``gradcheck validate`` still checks what a schema
cannot say (the layer file exists, a literal fits its dtype, low < high).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .matrix import AXIS_KEYS, MAX_COMBINATIONS
from .options import DTYPES, Choice, Device, Flag, Names, Number, Target, Whole, options
from .spec import DIST_KEYS, DISTS, INPUT_KEYS, MAX_DIMS, TOP_KEYS

FILE = Path(__file__).with_name("spec.schema.json")
SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

_NUMBER = {"type": "number"}
_INPUT_KINDS = ("shape", "value", "arg", "list", "tuple")  # an input has exactly one of these
_LITERAL = {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "array", "items": {"$ref": "#/$defs/literal"}, "minItems": 1}]}


def _kind(kind: Any) -> dict[str, Any]:
    if isinstance(kind, Choice):
        return {"enum": list(kind.choices)}
    if isinstance(kind, Number):
        bound: dict[str, Any] = {"exclusiveMinimum": 0} if kind.positive else {"minimum": 0}
        if kind.maximum is not None:
            bound["maximum"] = kind.maximum
        return {"type": "number", **bound}
    if isinstance(kind, Whole):
        whole: dict[str, Any] = {"type": "integer", "minimum": kind.minimum}
        if kind.maximum is not None:
            whole["maximum"] = kind.maximum
        return whole
    if isinstance(kind, Flag):
        return {"type": "boolean"}
    if isinstance(kind, Names):
        return {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string", "minLength": 1}}]}
    if isinstance(kind, Target):
        return {"type": "string", "minLength": 1, "pattern": r"^[^\n]+$"}
    if isinstance(kind, Device):
        return {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(:\d+)?$"}
    return {}


def spec_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a gradcheck YAML spec."""
    input_props: dict[str, Any] = {
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": MAX_DIMS, "description": "Random input of this shape ([] is a scalar)."},
        "value": {"$ref": "#/$defs/literal", "description": "A literal: a number or a nested list; whole numbers without a dtype are int64 and passed through."},
        "dist": {"enum": list(DISTS), "description": "Distribution of a random input (default normal)."},
        "dtype": {"enum": list(DTYPES), "description": "dtype of this input (default: the check's dtype; int64 for whole-number literals)."},
        **{name: {**_NUMBER, "description": f"{name} of dist {dist}."} for dist, names in DIST_KEYS.items() for name in names},
        "arg": {"description": "A Python value passed to the layer as it is (a string, number, bool, null, list or mapping), never perturbed."},
        "list": {"type": "array", "items": {"$ref": "#/$defs/input"}, "description": "A Python list of inputs (each an input entry, without 'name')."},
        "tuple": {"type": "array", "items": {"$ref": "#/$defs/input"}, "description": "A Python tuple of inputs (each an input entry, without 'name')."},
        "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "description": "Pass this input as the keyword argument of this name."},
        "constant": {"type": "boolean", "description": "Pass this tensor (or every tensor of this list) but do not check its gradient."},
    }
    assert set(input_props) == set(INPUT_KEYS)
    properties: dict[str, Any] = {
        "description": {"type": ["string", "null"], "description": "What the layer is; shown by 'gradcheck list'."},
        "layer": {"type": "string", "minLength": 1, "description": "path/to/file.py:Name (relative to the spec's folder) or package.module:Name."},
        "args": {"type": ["array", "null"], "description": "Positional arguments of a Module class's constructor."},
        "kwargs": {"type": ["object", "null"], "description": "Keyword arguments of a Module class's constructor."},
        "inputs": {"type": ["array", "null"], "items": {"$ref": "#/$defs/input"}, "description": "The layer's inputs: positional ones in order, keyword ones with 'name'."},
        "params": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/$defs/literal"}, "description": "Module parameters set by name before the check."},
    }
    for name, opt in options():
        if opt.spec:
            properties[name] = {"anyOf": [_kind(opt.kind), {"type": "null"}], "description": opt.help}
    renamed = {old: name for name, opt in options() if opt.spec for old in opt.old_names}
    alternatives = {key: {"type": "array", "minItems": 1, "uniqueItems": True, "items": _not_null(properties[key]), "description": f"Alternatives for {key!r}, one check each."} for key in AXIS_KEYS}
    properties["matrix"] = {
        "type": ["object", "null"],
        "additionalProperties": False,
        "minProperties": 1,
        "properties": alternatives,
        "description": f"Check every combination of these alternatives (at most {MAX_COMBINATIONS}); a key is varied here or set at the top level, not both.",
    }
    for old, name in renamed.items():
        properties[old] = {**properties[name], "deprecated": True, "description": f"The old name of {name!r}."}
    assert set(properties) == set(TOP_KEYS)
    return {
        "$schema": SCHEMA_URI,
        "title": "gradcheck layer spec",
        "description": "One check of a layer's hand-written backward: the layer, its inputs and the check options (gradcheck-cli).",
        "type": "object",
        "required": ["layer"],
        "additionalProperties": False,
        "properties": properties,
        "$defs": {
            "literal": _LITERAL,
            "input": {
                "type": "object",
                "additionalProperties": False,
                "properties": input_props,
                "oneOf": [{"required": [key]} for key in _INPUT_KINDS],
            },
        },
    }


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A top-level key's schema for one alternative of a matrix: the same value; null only for a check option (its default)."""
    schema = {k: v for k, v in schema.items() if k != "description"}
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:
        schema["type"] = [t for t in kind if t != "null"][0]
    return schema


def schema_text() -> str:
    return json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n"

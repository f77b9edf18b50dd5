"""Tests for gradcheck_cli.spec: reading and strictly validating YAML spec files."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest

from gradcheck_cli.errors import SpecError, UsageError
from gradcheck_cli.spec import InputSpec, LayerSpec, find_specs, is_spec_path, load_spec

LAYER = "layer: pkg.mod:Layer\n"


def write(folder: Path, text: str | bytes, name: str = "spec.yaml") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def spec_error(folder: Path, text: str | bytes, key: str | None, *fragments: str, name: str = "spec.yaml") -> SpecError:
    """Load ``text`` and check the SpecError names the file, the key path and ``fragments``."""
    path = write(folder, text, name)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    text_of_error = str(err)
    assert name in err.message
    assert err.key == key
    if key:
        assert key in err.message
    for fragment in fragments:
        assert fragment in text_of_error, text_of_error
    assert isinstance(err, UsageError) and err.exit_code == 2
    return err


# --------------------------------------------------------------------------- valid specs


def test_full_spec_round_trip(tmp_path: Path) -> None:
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers" / "gauss.py").write_text("class GaussFilter: pass\n")
    path = write(
        tmp_path,
        """\
        description: Gaussian filter, learnable sigma
        layer: layers/gauss.py:GaussFilter
        args: [12, "same"]
        kwargs: {mu: 0.5, learn: true}
        inputs:
          - shape: [1, 100]
          - shape: [4, 3]
            dist: uniform
            low: 0.5
            high: 2
          - shape: []
            mean: 1.0
            std: 0.25
            dtype: float32
          - value: [4.5]
          - value: [0, 2, 1]
            dtype: int64
          - value: [[true, false]]
        params:
          sigma: [4.5]
          mu: 0.5
        dtype: float64
        numeric_dtype: float64
        device: cuda:0
        seed: 3
        eps: 1.0e-6
        rtol: 1.0e-5
        atol: 0
        max_elements: 1000
        """,
    )
    spec = load_spec(path)
    assert spec == LayerSpec(
        path=str(path),
        layer=f"{(tmp_path / 'layers' / 'gauss.py').resolve()}:GaussFilter",
        args=(12, "same"),
        kwargs={"mu": 0.5, "learn": True},
        inputs=(
            InputSpec(shape=(1, 100)),
            InputSpec(shape=(4, 3), dist="uniform", low=0.5, high=2.0),
            InputSpec(shape=(), mean=1.0, std=0.25, dtype="float32"),
            InputSpec(value=[4.5]),
            InputSpec(value=[0, 2, 1], dtype="int64"),
            InputSpec(value=[[True, False]]),
        ),
        params={"sigma": [4.5], "mu": 0.5},
        options={
            "dtype": "float64",
            "numeric_dtype": "float64",
            "device": "cuda:0",
            "seed": 3,
            "eps": 1e-6,
            "rtol": 1e-5,
            "atol": 0.0,
            "max_elements": 1000,
        },
        description="Gaussian filter, learnable sigma",
    )
    assert isinstance(spec.options["atol"], float) and isinstance(spec.inputs[1].high, float)
    assert os.path.isabs(spec.layer.rpartition(":")[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.layer = "x"  # type: ignore[misc]


def test_minimal_spec_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "inputs:\n"))
    assert spec.layer == "pkg.mod:Layer"
    assert (spec.args, spec.kwargs, spec.inputs, spec.params, spec.options) == ((), {}, (), {}, {})
    assert spec.description is None


@pytest.mark.parametrize("target", ["pkg.mod:Layer", "pkg.mod.Layer", "torch.nn:Linear", "a.b:Outer.Inner"])
def test_dotted_layer_kept_as_is(tmp_path: Path, target: str) -> None:
    assert load_spec(write(tmp_path, f"layer: {target}\n")).layer == target


def test_layer_file_resolved_against_spec_folder_not_cwd(tmp_path: Path, monkeypatch) -> None:
    sub = tmp_path / "specs"
    sub.mkdir()
    (tmp_path / "gauss.py").write_text("")
    monkeypatch.chdir(sub)  # a different cwd must not matter
    spec = load_spec(write(sub, "layer: ../gauss.py:G\n"))
    assert spec.layer == f"{(tmp_path / 'gauss.py').resolve()}:G"
    absolute = load_spec(write(sub, f"layer: {tmp_path / 'gauss.py'}:G\n", "abs.yaml"))
    assert absolute.layer == spec.layer


def test_yml_suffix_bom_and_comments(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "\ufeff# a comment\n" + LAYER + "seed: 0\n", "x.yml"))
    assert spec.options == {"seed": 0}


# --------------------------------------------------------------------------- file-level errors


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    err = spec_error(tmp_path, LAYER + "inputs:\n  - shape: [1, 2\n  - value: 3\nseed: 0\n", None, "YAML syntax error", "line ")
    line = int(err.message.split("line ")[1].split(",")[0])
    assert 2 <= line <= 4
    spec_error(tmp_path, "layer: a.b:C\n kwargs: {}\n", None, "line 2")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    err = spec_error(tmp_path, text, None, "is empty")
    assert "layer:" in err.hint and "inputs" in err.hint


@pytest.mark.parametrize(("text", "what"), [("- a\n- b\n", "list"), ("42\n", "int 42"), ("just text\n", "str")])
def test_document_not_a_mapping(tmp_path: Path, text: str, what: str) -> None:
    spec_error(tmp_path, text, None, "must be a mapping", what)


def test_more_than_one_document(tmp_path: Path) -> None:
    spec_error(tmp_path, LAYER + "---\n" + LAYER, None, "2 YAML documents")


def test_not_utf8(tmp_path: Path) -> None:
    spec_error(tmp_path, b"layer: a.b:C\ndescription: caf\xe9\n", None, "not UTF-8", "line 2")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(SpecError, match="dir.yaml: is a folder"):
        load_spec(folder)


def test_unreadable_file(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, LAYER)
    real_open = os.open

    def denied(name, flags, *args, **kwargs) -> int:  # the spec reader opens with os.open (O_NONBLOCK)
        if Path(name) == path:
            raise PermissionError(13, "Permission denied", str(name))
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    err = spec_error(tmp_path, LAYER, None, "cannot be read", "Permission denied")
    assert err.path == str(path)


def test_safe_load_never_runs_code(tmp_path: Path) -> None:
    spec_error(tmp_path, "layer: !!python/object/apply:os.system ['echo hi']\n", None, "YAML")


def test_self_referencing_alias(tmp_path: Path) -> None:
    spec_error(tmp_path, LAYER + "params:\n  w: &a [1, *a]\n", None, "nested too deeply")


# --------------------------------------------------------------------------- top-level keys


@pytest.mark.parametrize(
    ("key", "suggestion"), [("inptus", "inputs"), ("kwarg", "kwargs"), ("sead", "seed"), ("max_element", "max_elements")]
)
def test_unknown_top_level_key_suggests(tmp_path: Path, key: str, suggestion: str) -> None:
    spec_error(tmp_path, LAYER + f"{key}: 1\n", key, "unknown key", f"did you mean {suggestion!r}?")


def test_unknown_top_level_key_lists_allowed(tmp_path: Path) -> None:
    err = spec_error(tmp_path, LAYER + "zzzzzz: 1\n", "zzzzzz", "unknown key")
    assert "allowed:" in err.hint and "inputs" in err.hint and "max_elements" in err.hint


def test_layer_missing(tmp_path: Path) -> None:
    err = spec_error(tmp_path, "inputs: []\n", "layer", "is missing")
    assert "file.py:ClassName" in err.hint


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("3", "expected non-empty text, found int 3"),
        ("''", "expected non-empty text"),
        ("Layer", "does not say which module"),
        ("'pkg.mod:'", "no attribute"),
    ],
)
def test_layer_bad_value(tmp_path: Path, value: str, fragment: str) -> None:
    spec_error(tmp_path, f"layer: {value}\n", "layer", fragment)


def test_layer_file_without_name(tmp_path: Path) -> None:
    (tmp_path / "gauss.py").write_text("")
    err = spec_error(tmp_path, "layer: gauss.py\n", "layer", "names a file but no layer")
    assert "file.py:ClassName" in err.hint


def test_layer_file_missing_names_resolved_path(tmp_path: Path) -> None:
    resolved = str((tmp_path / "layers" / "nope.py").resolve())
    spec_error(tmp_path, "layer: layers/nope.py:Layer\n", "layer", resolved, "does not exist")


@pytest.mark.parametrize(
    ("text", "key", "fragments"),
    [
        ("inputs: {shape: [1]}\n", "inputs", ("expected a list", "found dict")),
        ("args: 3\n", "args", ("expected a list", "found int 3")),
        ("kwargs: [1, 2]\n", "kwargs", ("expected a mapping", "found list [1, 2]")),
        ("kwargs: {1: a}\n", "kwargs", ("keys must be names", "int 1")),
        ("params: [1]\n", "params", ("expected a mapping",)),
        ("description: 12\n", "description", ("expected text", "int 12")),
    ],
)
def test_top_level_wrong_types(tmp_path: Path, text: str, key: str, fragments: tuple[str, ...]) -> None:
    spec_error(tmp_path, LAYER + text, key, *fragments)


@pytest.mark.parametrize(
    ("text", "key", "fragments"),
    [
        ("params: {sigma: abc}\n", "params.sigma", ("expected a number", "str 'abc'")),
        ("params: {sigma: [[1, 2], [3]]}\n", "params.sigma[1]", ("ragged",)),
        ("params: {sigma: [true]}\n", "params.sigma[0]", ("expected a number", "bool True")),
        ("params: {sigma: []}\n", "params.sigma", ("empty list",)),
    ],
)
def test_params_values(tmp_path: Path, text: str, key: str, fragments: tuple[str, ...]) -> None:
    spec_error(tmp_path, LAYER + text, key, *fragments)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("text", "key", "fragments"),
    [
        ("dtype: float46\n", "dtype", ("must be one of float64, float32", "did you mean 'float64'?")),
        ("numeric_dtype: int64\n", "numeric_dtype", ("must be one of float64", "'int64'")),
        ("dtype: 64\n", "dtype", ("must be one of", "64")),
        ("device: ''\n", "device", ("is not a torch device",)),
        ("device: 0\n", "device", ("is not a torch device", "0")),
        ("seed: -1\n", "seed", ("a whole number from 0",)),
        ("seed: true\n", "seed", ("a whole number", "True")),
        ("seed: 1.5\n", "seed", ("a whole number", "1.5")),
        ("eps: 0\n", "eps", ("greater than 0",)),
        ("eps: one\n", "eps", ("a finite number", "'one'")),
        ("eps: .inf\n", "eps", ("finite",)),
        ("rtol: -1.0e-5\n", "rtol", ("0 or more",)),
        ("atol: [1]\n", "atol", ("a finite number", "[1]")),
        ("max_elements: 0\n", "max_elements", ("a whole number from 1",)),
        ("max_elements: false\n", "max_elements", ("a whole number", "False")),
        ("kinks: maybe\n", "kinks", ("must be one of pass, fail",)),
        ("timeout: -3\n", "timeout", ("greater than 0",)),
        ("weighted_loss: 2\n", "weighted_loss", ("true or false",)),
    ],
)
def test_bad_options(tmp_path: Path, text: str, key: str, fragments: tuple[str, ...]) -> None:
    spec_error(tmp_path, LAYER + text, key, *fragments)


def test_numbers_in_the_forms_people_write_them(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-6 (no dot) as text; a spec takes it as the number it means."""
    spec = load_spec(write(tmp_path, LAYER + "eps: 1e-6\nrtol: '1E-5'\n"))
    assert spec.options == {"eps": 1e-6, "rtol": 1e-5}


def test_every_check_option_is_a_spec_key(tmp_path: Path) -> None:
    """kinks, budget, timeout, weighted_loss, grouping: refused with "unknown key" once."""
    text = "kinks: fail\nbudget: 30\ntimeout: 60\nweighted_loss: false\ngrouping: false\n"
    spec = load_spec(write(tmp_path, LAYER + text))
    assert spec.options == {"kinks": "fail", "budget": 30.0, "timeout": 60.0, "weighted_loss": False, "grouping": False}


def test_integer_tolerances_accepted(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "eps: 1\nrtol: 0\natol: 2\n"))
    assert spec.options == {"eps": 1.0, "rtol": 0.0, "atol": 2.0}
    assert all(isinstance(v, float) for v in spec.options.values())


# --------------------------------------------------------------------------- inputs


def inputs_error(tmp_path: Path, inputs: str, key: str, *fragments: str) -> SpecError:
    return spec_error(tmp_path, LAYER + "inputs:\n" + textwrap.indent(textwrap.dedent(inputs), "  "), key, *fragments)


def test_unknown_input_key_suggests(tmp_path: Path) -> None:
    inputs_error(tmp_path, "- shape: [1]\n- shpe: [2]\n", "inputs[1].shpe", "unknown key", "did you mean 'shape'?")


def test_unknown_input_key_lists_allowed(tmp_path: Path) -> None:
    err = inputs_error(tmp_path, "- shape: [1]\n  qqqqq: 1\n", "inputs[0].qqqqq", "unknown key")
    assert "allowed:" in err.hint and "value" in err.hint


def test_input_not_a_mapping(tmp_path: Path) -> None:
    inputs_error(tmp_path, "- [1, 2]\n", "inputs[0]", "expected a mapping", "found list")


def test_input_both_shape_and_value(tmp_path: Path) -> None:
    inputs_error(tmp_path, "- shape: [1]\n  value: 2\n", "inputs[0]", "has 'shape' and 'value'", "exactly one")


def test_input_neither_shape_nor_value(tmp_path: Path) -> None:
    inputs_error(tmp_path, "- dist: uniform\n", "inputs[0]", "none of 'shape', 'value', 'arg', 'list', 'tuple'")


@pytest.mark.parametrize(
    ("shape", "key", "fragments"),
    [
        ("4x3", "inputs[0].shape", ("expected a list of sizes", "str '4x3'")),
        ("5", "inputs[0].shape", ("expected a list of sizes", "int 5")),
        ("[4, 3.0]", "inputs[0].shape[1]", ("expected a whole number", "float 3.0")),
        ("[4, true]", "inputs[0].shape[1]", ("expected a whole number", "bool True")),
        ("[4, '3']", "inputs[0].shape[1]", ("expected a whole number", "str '3'")),
        ("[4, 0]", "inputs[0].shape[1]", ("at least 1", "found 0")),
        ("[-2]", "inputs[0].shape[0]", ("at least 1", "found -2")),
    ],
)
def test_bad_shape(tmp_path: Path, shape: str, key: str, fragments: tuple[str, ...]) -> None:
    inputs_error(tmp_path, f"- shape: {shape}\n", key, *fragments)


def test_empty_shape_is_scalar(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, LAYER + "inputs: [{shape: []}]\n")).inputs == (InputSpec(shape=()),)


def test_unknown_dist(tmp_path: Path) -> None:
    inputs_error(tmp_path, "- shape: [1]\n  dist: uniformm\n", "inputs[0].dist", "unknown distribution", "'uniform'")


@pytest.mark.parametrize(
    ("extra", "key"),
    [("low: 0", "inputs[0].low"), ("high: 2", "inputs[0].high")],
)
def test_uniform_keys_with_normal(tmp_path: Path, extra: str, key: str) -> None:
    inputs_error(tmp_path, f"- shape: [1]\n  {extra}\n", key, "does not apply to dist normal", "uniform")


@pytest.mark.parametrize(("extra", "key"), [("mean: 0", "inputs[0].mean"), ("std: 2", "inputs[0].std")])
def test_normal_keys_with_uniform(tmp_path: Path, extra: str, key: str) -> None:
    inputs_error(tmp_path, f"- shape: [1]\n  dist: uniform\n  {extra}\n", key, "does not apply to dist uniform")


@pytest.mark.parametrize("bounds", ["low: 2\n  high: 1", "low: 1\n  high: 1", "low: 3"])
def test_low_not_below_high(tmp_path: Path, bounds: str) -> None:
    inputs_error(tmp_path, f"- shape: [1]\n  dist: uniform\n  {bounds}\n", "inputs[0].low", "must be less than high")


@pytest.mark.parametrize("std", ["0", "-1.5"])
def test_std_not_positive(tmp_path: Path, std: str) -> None:
    inputs_error(tmp_path, f"- shape: [1]\n  std: {std}\n", "inputs[0].std", "greater than 0")


def test_dist_number_wrong_type(tmp_path: Path) -> None:
    inputs_error(tmp_path, "- shape: [1]\n  mean: one\n", "inputs[0].mean", "expected a number", "str 'one'")


def test_dist_keys_on_value_input(tmp_path: Path) -> None:
    inputs_error(tmp_path, "- value: 1.0\n  dist: uniform\n", "inputs[0].dist", "only applies to random")


def test_unknown_input_dtype_suggests(tmp_path: Path) -> None:
    inputs_error(tmp_path, "- shape: [1]\n  dtype: float46\n", "inputs[0].dtype", "unknown dtype", "'float64'")
    inputs_error(tmp_path, "- value: [1]\n  dtype: in64\n", "inputs[0].dtype", "unknown dtype", "'int64'")


@pytest.mark.parametrize(
    ("value", "key", "fragments"),
    [
        ("abc", "inputs[0].value", ("expected a number", "str 'abc'")),
        ("[1, x]", "inputs[0].value[1]", ("expected a number", "str 'x'")),
        ("{a: 1}", "inputs[0].value", ("expected a number", "dict")),
        ("null", "inputs[0].value", ("expected a number", "null")),
        ("[[1, 2], [3]]", "inputs[0].value[1]", ("ragged",)),
        ("[[1, 2], 3]", "inputs[0].value[1]", ("ragged",)),
        ("[]", "inputs[0].value", ("empty list",)),
        ("[1, true]", "inputs[0].value[1]", ("expected a number", "bool True")),
        ("['1e-3']", "inputs[0].value[0]", ("str '1e-3'", "without quotes: 1e-3")),  # quoted: text, said so
    ],
)
def test_bad_value(tmp_path: Path, value: str, key: str, fragments: tuple[str, ...]) -> None:
    inputs_error(tmp_path, f"- value: {value}\n", key, *fragments)


@pytest.mark.parametrize(
    ("value", "dtype", "key", "fragment"),
    [
        ("[0, 1.5]", "int64", "inputs[0].value[1]", "needs whole numbers"),
        ("[300]", "uint8", "inputs[0].value[0]", "out of range"),
        ("[-1]", "uint8", "inputs[0].value[0]", "out of range"),
        ("[2]", "bool", "inputs[0].value[0]", "out of range"),
        ("[true]", "float32", "inputs[0].value[0]", "bool True"),
    ],
)
def test_value_does_not_fit_dtype(tmp_path: Path, value: str, dtype: str, key: str, fragment: str) -> None:
    inputs_error(tmp_path, f"- value: {value}\n  dtype: {dtype}\n", key, fragment)


def test_values_that_fit_dtype(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "inputs:\n  - {value: [2.0, 3], dtype: int8}\n  - {value: [0, true], dtype: bool}\n"))
    assert [i.dtype for i in spec.inputs] == ["int8", "bool"]


# --------------------------------------------------------------------------- find_specs / is_spec_path


def test_find_specs_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["b.yaml", "a.yml", "C.YAML", "notes.txt", "layer.py", ".hidden.yaml", "yaml"]:
        (tmp_path / name).write_text(LAYER)
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.yaml").write_text(LAYER)
    assert [p.name for p in find_specs(tmp_path)] == ["C.YAML", "a.yml", "b.yaml"]
    assert all(isinstance(p, Path) for p in find_specs(str(tmp_path)))


def test_find_specs_empty_folder(tmp_path: Path) -> None:
    assert find_specs(tmp_path) == []


def test_find_specs_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        find_specs(tmp_path / "missing")
    file = write(tmp_path, LAYER)
    with pytest.raises(UsageError, match="is not a folder"):
        find_specs(file)


def test_is_spec_path(tmp_path: Path) -> None:
    assert is_spec_path("specs/gauss.yaml")
    assert is_spec_path("missing.YML")
    assert is_spec_path(str(tmp_path))
    assert not is_spec_path(str(tmp_path / "missing"))
    assert not is_spec_path("layers/gauss.py:GaussFilter")
    assert not is_spec_path("pkg.mod.Layer")
    assert not is_spec_path("")
    assert not is_spec_path("bad\0path")


def test_module_imports_neither_torch_nor_click() -> None:
    import ast

    import gradcheck_cli.spec as spec_module

    tree = ast.parse(Path(spec_module.__file__).read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {n for n in names if n.split(".")[0] in ("torch", "click")}


@pytest.mark.parametrize(
    ("text", "number"),
    [("1e-6", 1e-6), ("1E-6", 1e-6), ("-2.5e+3", -2500.0), ("1.0e39", 1e39), (".5e3", 500.0), ("3e2", 300.0), ("1.0e-6", 1e-6)],
)
def test_exponents_read_as_numbers_everywhere_in_a_spec(tmp_path: Path, text: str, number: float) -> None:
    """YAML 1.1 reads 1e-6 as text ("write 1.0e-6"); a spec reads it as the number it means, in every key."""
    spec = load_spec(write(tmp_path, LAYER + f"eps: 1e-6\natol: 1E-9\ninputs:\n  - shape: [3]\n    mean: {text}\n  - value: [{text}, 1.0]\n"))
    assert spec.options == {"eps": 1e-6, "atol": 1e-9}
    assert spec.inputs[0].mean == number and spec.inputs[1].value == [number, 1.0]

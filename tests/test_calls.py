"""Issue 14 through the user's own paths: layers called as their users call them.

The layers are those of tests/corpus/realcode.py (whose verdicts test_corpus.py checks
from Python, against torch.autograd.gradcheck too) and the packages of tests/corpus_pkg;
here they are given the way a user gives them: ``--input`` in its every form, YAML spec
keys, ``--constant``, ``--init``, the API's ``keywords=``/``constant=``, and the names
that come back in the table, JSON, JUnit, ``--only`` and the rerun lines.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from gradcheck_cli import InputSpec, check

TESTS = Path(__file__).resolve().parent
REALCODE = TESTS / "corpus" / "realcode.py"
PKG = TESTS / "corpus_pkg"
README = TESTS.parent / "README.md"


def layer(name: str) -> str:
    return f"{REALCODE}:{name}"


def run_json(run_cli, *args) -> tuple[int, dict, str]:
    """``gradcheck ARGS --json -``: (exit code, the JSON report, stderr)."""
    code, out, err = run_cli(*args, "--json", "-")
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not JSON (exit {code}):\n{out}\nstderr:\n{err}")


def statuses(data: dict) -> dict[str, str]:
    return {t["name"]: t["status"] for t in data["tensors"]}


def realcode():
    """The corpus module, as the tests import it."""
    from corpus import realcode as module

    return module


def x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- --input, every form


@pytest.mark.parametrize(("align", "code", "grid"), [(":false", 1, "FAIL"), (":true", 0, "PASS")])
def test_keyword_inputs_and_python_values_reach_the_layer(run_cli, align, code, grid):
    """NAME=shape for a keyword tensor, NAME=:VALUE for a flag or a string: the same code is wrong
    for align_corners=False only, so the verdict shows the value arrived."""
    got, data, err = run_json(
        run_cli, "run", layer("resample_fixed_scale"), "--input", "2x8", "--input", "grid=2x5", "--input", "mode=:linear", "--input", f"align_corners={align}"
    )
    assert got == code, err
    assert statuses(data) == {"x": "PASS", "grid": grid}


def test_an_unknown_keyword_value_is_the_layers_own_error(run_cli):
    code, _, err = run_cli("run", layer("resample"), "--input", "2x8", "--input", "2x5", "--input", "mode=:cubic")
    assert code == 1 and "unknown mode 'cubic'" in err


@pytest.mark.parametrize(("flip", "code"), [(":true", 1), (":false", 0)])
def test_positional_python_values(run_cli, flip, code):
    """:1.5 is a float passed as a float (not a tensor to check), :true a bool."""
    got, data, err = run_json(run_cli, "run", layer("ScaleFlipForgetsFlip"), "--input", "3x5", "--input", ":1.5", "--input", flip)
    assert got == code, err
    assert list(statuses(data)) == ["x"]


@pytest.mark.parametrize("bias", [":null", "bias=:null"])
def test_none_for_an_optional_argument(run_cli, bias):
    code, data, err = run_json(run_cli, "run", layer("linear"), "--input", "3x8", "--input", "4x8", "--input", bias)
    assert code == 0, err
    assert statuses(data) == {"x": "PASS", "weight": "PASS"}


DB2 = "=[-0.12940952255126037, 0.2241438680420134, 0.8365163037378079, 0.48296291314453416]"
DB2_HI = "=[-0.48296291314453416, 0.8365163037378079, -0.2241438680420134, -0.12940952255126037]"


def test_literal_filters_are_checked_unless_constant(run_cli):
    """=JSON gives the fixed filters; as variables they FAIL (backward returns None for them),
    marked --constant (by name, or by the position alias) they are passed and not checked."""
    args = ("run", layer("AFB1D"), "--input", "2x1x16", "--input", DB2, "--input", DB2_HI)
    code, data, _ = run_json(run_cli, *args)
    assert code == 1 and statuses(data) == {"x": "PASS", "h0": "FAIL", "h1": "FAIL"}
    code, data, err = run_json(run_cli, *args, "--constant", "h0", "--constant", "input2")
    assert code == 0, err
    assert statuses(data) == {"x": "PASS"}
    assert data["config"]["constant"] == ["h0", "input2"]


def test_constant_names_a_tensor_that_exists(run_cli):
    code, _, err = run_cli("run", layer("AFB1D"), "--input", "2x1x16", "--input", DB2, "--input", DB2_HI, "--constant", "h2")
    assert code == 2
    assert "h2" in err and "x, h0, h1" in err


@pytest.mark.parametrize("given", ["(2x4,[2x8,2x4])", "coeffs=(2x4, [2x8, 2x4])"])
def test_tuples_and_lists_are_nested_and_named_by_path(run_cli, given):
    code, data, err = run_json(run_cli, "run", layer("DWTInverse1DCopyPaste"), "--input", given)
    assert code == 1, err
    assert statuses(data) == {"coeffs[0]": "PASS", "coeffs[1][0]": "FAIL", "coeffs[1][1]": "FAIL"}
    shapes = {t["name"]: t["shape"] for t in data["tensors"]}
    assert shapes == {"coeffs[0]": [2, 4], "coeffs[1][0]": [2, 8], "coeffs[1][1]": [2, 4]}


def test_brackets_make_a_list_and_parentheses_a_tuple(run_cli, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """\
            def probe(coeffs, *, mode):
                yl, yh = coeffs
                assert type(coeffs) is tuple and type(yh) is list and mode == "a b", (type(coeffs), type(yh), mode)
                return yl.sum() * yh[0].sum() + yh[1].prod()
            """
        )
    )
    code, data, err = run_json(run_cli, "run", f"{probe}:probe", "--input", "(3, [2x2, =[1.5, 2.5]])", "--input", 'mode=:"a b"')
    assert code == 0, err
    assert statuses(data) == {"coeffs[0]": "PASS", "coeffs[1][0]": "PASS", "coeffs[1][1]": "PASS"}


def _pixel_centres(h: int, w: int) -> str:
    """A grid of (x, y) points exactly on pixel centres of an h x w image (align_corners=False),
    the first and last of them where padding_mode='border' clamps, as an =JSON literal."""
    points = [[[(2 * i + 1) / w - 1, (2 * j + 1) / h - 1] for i in (0, 2, w - 1)] for j in (0, 1, h - 1)]
    return "=" + json.dumps([points])


def test_grid_sample_at_pixel_centres_from_the_command_line(run_cli):
    """The issue's false alarm, as its user ran it: PyTorch's own backward, border padding, points on
    pixel centres and on the clamped border. Each coordinate is a kink of its own: KINK, never FAIL."""
    code, data, err = run_json(
        run_cli, "run", "torch.nn.functional.grid_sample", "--input", "1x2x5x6", "--input", _pixel_centres(5, 6),
        "--input", "mode=:bilinear", "--input", "padding_mode=:border", "--input", "align_corners=:false",
    )  # fmt: skip
    assert code == 0, err
    grid = {t["name"]: t for t in data["tensors"]}["grid"]
    assert grid["counts"]["KINK"] > 0 and grid["counts"]["FAIL"] == 0 and grid["status"] == "PASS"


# --------------------------------------------------------------------------- YAML spec keys


SPECS = {
    # name: (spec text, exit code, tensor statuses)
    "name_and_arg": (
        """\
        layer: torch.nn.functional.grid_sample
        inputs:
          - shape: [1, 2, 5, 6]
          - {name: grid, shape: [1, 4, 3, 2], dist: uniform, low: -0.9, high: 0.9}
          - {name: mode, arg: bilinear}
          - {name: padding_mode, arg: border}
          - {name: align_corners, arg: false}
        """,
        0,
        {"input": "PASS", "grid": "PASS"},
    ),
    "constant": (
        f"""\
        layer: {REALCODE}:AFB1DGarbageFilterGrad
        inputs:
          - shape: [2, 1, 16]
          - {{value: {DB2[1:]}, constant: true}}
          - {{value: {DB2_HI[1:]}, constant: true}}
        """,
        0,
        {"x": "PASS"},
    ),
    "tuple_and_list": (
        f"""\
        layer: {REALCODE}:DWTInverse1DCopyPaste
        inputs:
          - tuple:
              - shape: [2, 4]
              - list: [{{shape: [2, 8]}}, {{shape: [2, 4]}}]
        """,
        1,
        {"coeffs[0]": "PASS", "coeffs[1][0]": "FAIL", "coeffs[1][1]": "FAIL"},
    ),
    "constant_list": (
        f"""\
        layer: {REALCODE}:DWTInverse1DCopyPaste
        inputs:
          - tuple:
              - shape: [2, 4]
              - list: [{{shape: [2, 8]}}, {{shape: [2, 4]}}]
                constant: true
        """,
        0,
        {"coeffs[0]": "PASS"},
    ),
    "arg_positional_and_named": (
        f"""\
        layer: {REALCODE}:ScaleFlipForgetsFlip
        inputs:
          - shape: [3, 5]
          - arg: 1.5
          - {{name: flip, arg: true}}
        """,
        1,
        {"x": "FAIL"},
    ),
    "named_tensor": (
        f"""\
        layer: {REALCODE}:resample_fixed_scale
        inputs:
          - {{name: grid, shape: [2, 5], dist: uniform, low: -0.9, high: 0.9}}
          - {{name: x, shape: [2, 8]}}
          - {{name: align_corners, arg: false}}
        """,
        1,
        {"grid": "FAIL", "x": "PASS"},
    ),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_spec_keys(run_cli, tmp_path, name):
    text, expected_code, expected = SPECS[name]
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(textwrap.dedent(text))
    code, data, err = run_json(run_cli, "run", spec)
    assert code == expected_code, err
    assert statuses(data) == expected


def test_the_schema_accepts_every_call_shape():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    from gradcheck_cli.schema import spec_schema

    validator = jsonschema.Draft202012Validator(spec_schema())
    for name, (text, _, _) in SPECS.items():
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(textwrap.dedent(text)))]
        assert not errors, (name, errors)



def test_the_readme_shows_each_call_shape():
    text = README.read_text()
    for shown in ("arg:", "list:", "tuple:", "name:", "constant: true", "--constant", "--init", "=:", "coeffs[1][0]"):
        assert shown in text, shown


# --------------------------------------------------------------------------- --init


def test_init_by_position_and_by_name(run_cli):
    code, data, err = run_json(run_cli, "run", layer("TiedAutoencoder"), "--init", "6", "--init", "n_hidden=3", "--input", "2x6")
    assert code == 0, err
    shapes = {t["name"]: t["shape"] for t in data["tensors"]}
    assert shapes == {"x": [2, 6], "encoder.weight": [3, 6], "encoder.bias": [3], "decoder.bias": [6]}


def test_init_by_position_after_one_by_name_is_refused(run_cli):
    code, out, err = run_cli("run", layer("TiedAutoencoder"), "--init", "n_in=6", "--init", "3", "--input", "2x6")
    assert code == 2
    assert "--init '3'" in err and "by position after one by name" in err


def test_init_adds_to_a_specs_keyword_arguments(run_cli, tmp_path):
    spec = tmp_path / "ae.yaml"
    spec.write_text(f"layer: {REALCODE}:TiedAutoencoder\nkwargs: {{n_in: 5}}\ninputs:\n  - shape: [2, 5]\n")
    code, data, err = run_json(run_cli, "run", spec, "--init", "n_hidden=2")
    assert code == 0, err
    assert {t["name"]: t["shape"] for t in data["tensors"]}["encoder.weight"] == [2, 5]


def test_a_constructor_that_needs_arguments_names_init_and_a_readme_section_that_exists(run_cli):
    code, _, err = run_cli("run", f"{TESTS / 'layers' / 'simple.py'}:NeedsArg", "--input", "3")
    assert code == 2 and "--init" in err
    sections = re.findall(r"README, '([^']+)'", err)
    headings = [line.lstrip("#").strip() for line in README.read_text().splitlines() if line.startswith("#")]
    assert sections and all(s in headings for s in sections), (sections, err)


# --------------------------------------------------------------------------- the API: keywords=, constant=, inputs as the CLI writes them


def test_api_keywords_and_constants():
    rc = realcode()
    grid = torch.rand(2, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.8 - 0.9
    assert check(rc.resample_fixed_scale, [x(2, 8), grid], keywords={"align_corners": True}).passed
    bad = check(rc.resample_fixed_scale, [x(2, 8)], keywords={"grid": grid, "align_corners": False})
    assert {t.name: t.status for t in bad.tensors} == {"x": "PASS", "grid": "FAIL"}
    h0, h1 = rc.db2_filters()
    for constant in (["h0", "h1"], ["input1", "input2"]):
        report = check(rc.AFB1DGarbageFilterGrad, [x(2, 1, 16), h0, h1], constant=constant)
        assert report.passed and [t.name for t in report.tensors] == ["x"], report
    report = check(rc.AFB1D, [x(2, 1, 16), InputSpec(value=h0.tolist(), constant=True), InputSpec(value=h1.tolist(), constant=True)])
    assert report.passed and [t.name for t in report.tensors] == ["x"], report


def test_a_constant_input_is_never_perturbed():
    """A float mask marked constant reaches every forward exactly as given (gradcheck never moves it)."""
    seen = []

    class MaskedScale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, mask):
            seen.append(mask.clone())
            ctx.save_for_backward(mask)
            return v * mask

        @staticmethod
        def backward(ctx, g):
            (mask,) = ctx.saved_tensors
            return g * mask, None

    mask = torch.tensor([[1.0, 0.0, 0.5], [0.25, 1.0, 0.0]], dtype=torch.float64)
    for options in (dict(), dict(grouping=False), dict(grouping=False, batch=False)):
        seen.clear()
        report = check(MaskedScale, [x(2, 3)], keywords={"mask": InputSpec(value=mask.tolist(), constant=True)}, **options)
        assert report.passed and [t.name for t in report.tensors] == ["v"], report
        assert seen and all(torch.equal(m, mask) for m in seen), options


def test_api_takes_the_command_lines_input_forms():
    rc = realcode()
    report = check(rc.DWTInverse1DCopyPaste(), ["(2x4,[2x8,2x4])"])
    assert {t.name: t.status for t in report.tensors} == {"coeffs[0]": "PASS", "coeffs[1][0]": "FAIL", "coeffs[1][1]": "FAIL"}
    assert [t.aliases for t in report.tensors] == [("input0[0]",), ("input0[1][0]",), ("input0[1][1]",)]
    report = check(rc.ScaleFlip, ["3x5", ":1.5", "flip=:true"])
    assert report.passed and [t.name for t in report.tensors] == ["x"]


# --------------------------------------------------------------------------- names: table, JUnit, --only, rerun lines


def test_names_in_the_table_and_junit(run_cli, tmp_path):
    junit = tmp_path / "j.xml"
    code, out, err = run_cli("run", layer("DWTInverse1DCopyPaste"), "--input", "(2x4,[2x8,2x4])", "--junit-xml", junit, env={"COLUMNS": "200"})
    assert code == 1, err
    rows = {line.split("│")[1].strip(): line.split("│")[-2].strip() for line in out.splitlines() if line.startswith("│")}
    assert rows == {"coeffs[0]": "PASS", "coeffs[1][0]": "FAIL", "coeffs[1][1]": "FAIL"}
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert {c.get("name"): c.find("failure") is not None for c in cases} == {"coeffs[0]": False, "coeffs[1][0]": True, "coeffs[1][1]": True}


@pytest.mark.parametrize("only", ["coeffs[1][0]", "input0[1][0]"])
def test_only_by_name_or_by_position_alias(run_cli, only):
    code, data, err = run_json(run_cli, "run", layer("DWTInverse1DCopyPaste"), "--input", "(2x4,[2x8,2x4])", "--only", only)
    assert code == 1, err
    assert statuses(data) == {"coeffs[1][0]": "FAIL"}
    assert data["tensors"][0]["aliases"] == ["input0[1][0]"]
    assert data["skipped"] == ["coeffs[0]", "coeffs[1][1]"]


RERUN = {
    "nested": ([layer("DWTInverse1DCopyPaste"), "--input", "(2x4,[2x8,2x4])"], {"coeffs[1][0]", "coeffs[1][1]"}),
    "keywords": ([layer("resample_fixed_scale"), "--input", "2x8", "--input", "grid=2x5", "--input", "align_corners=:false"], {"grid"}),
    "init": ([layer("TiedAutoencoderForgetful"), "--init", "6", "--init", "n_hidden=3", "--input", "2x6"], {"encoder.weight"}),
    "constant": ([layer("AFB1DFlipped"), "--input", "2x1x16", "--input", DB2, "--input", DB2_HI, "--constant", "h0", "--constant", "h1"], {"x"}),
    "float32": ([layer("ScaleFlipForgetsFlip"), "--input", "3x5", "--input", ":1.5", "--input", "flip=:true", "--dtype", "float32", "--seed", "3"], {"x"}),
}


@pytest.mark.parametrize("name", list(RERUN))
def test_each_rerun_line_reruns_just_its_tensor_and_fails(run_cli, name):
    args, failing = RERUN[name]
    code, out, err = run_cli("run", *args, env={"COLUMNS": "200"})
    assert code == 1, err
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("gradcheck run ")]
    assert len(lines) == len(failing), out
    for line in lines:
        words = shlex.split(line)
        tensor = words[words.index("--only") + 1]
        assert tensor in failing
        code, data, err = run_json(run_cli, *words[1:])
        assert code == 1, (line, err)
        assert statuses(data) == {tensor: "FAIL"}, line



def test_the_api_rerun_hint_repeats_only_what_was_given():
    from gradcheck_cli import assert_gradients

    with pytest.raises(AssertionError) as failed:
        assert_gradients(realcode().ScaleFlipForgetsFlip, [x(3, 5), InputSpec(arg=1.5), True])
    (hint,) = [line for line in str(failed.value).splitlines() if "only=['x']" in line]
    assert "constant" not in hint, hint


# --------------------------------------------------------------------------- tied parameters in every evaluation path


def _path(monkeypatch, path: str) -> dict:
    """Check options (and evaluator settings) that make a check take one evaluation path."""
    import gradcheck_cli.evaluate as evaluate

    if path == "batched":  # vmap kept even where the loop would win the speed race
        monkeypatch.setattr(evaluate, "LOOP_MARGIN", 1e9)
    # sets off: whether sets take over depends on timed estimates (a loaded machine), not on the path asked for
    return {"grouped": dict(grouping=True, sets="off"), "batched": dict(grouping=False, batch=True, sets="off"), "loop": dict(grouping=False, batch=False, sets="off")}[path]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("path", ["grouped", "batched", "loop"])
@pytest.mark.parametrize(("correct", "buggy", "tied"), [("SharedLayerScale", "SharedLayerScaleDropsSecond", "block1.gamma"), ("TiedAutoencoder", "TiedAutoencoderForgetful", "encoder.weight")])
def test_a_tied_parameter_has_one_verdict_whatever_the_path(monkeypatch, dtype, path, correct, buggy, tied):
    rc = realcode()
    options = _path(monkeypatch, path)
    inputs = [x(3, 40 if correct == "SharedLayerScale" else 8, seed=5)]
    good = check(getattr(rc, correct)(), inputs, dtype=dtype, **options)
    assert good.passed, good
    bad = check(getattr(rc, buggy)(), inputs, dtype=dtype, **options)
    assert [t.name for t in bad.tensors if not t.passed] == [tied], bad
    if path == "grouped" and correct == "SharedLayerScale":
        assert tied in good.timing["grouped"] and tied in bad.timing["grouped"]
    if path != "grouped":
        assert good.timing["batched"] is (path == "batched") and not good.timing["grouped"]



def test_a_tied_parameter_answers_to_each_of_its_names(run_cli):
    code, data, err = run_json(run_cli, "run", layer("TiedAutoencoderForgetful"), "--input", "2x8", "--only", "decoder.weight")
    assert code == 1, err
    assert statuses(data) == {"encoder.weight": "FAIL"}


# --------------------------------------------------------------------------- half precision, reentrancy


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("reference", [(), ("--numeric-dtype", "float64")], ids=["default", "reference-float64"])
def test_a_correct_half_precision_layer_passes_at_defaults_and_with_a_float64_reference(run_cli, dtype, reference):
    code, data, err = run_json(run_cli, "run", layer("HalfLinear"), "--input", "8x64", "--dtype", dtype, *reference)
    assert code == 0, err
    assert statuses(data) == {"x": "PASS", "weight": "PASS", "bias": "PASS"}
    assert data["config"]["numeric_dtype"] == "float64"


def test_a_backward_that_is_not_reentrant_fails_and_says_so(run_cli):
    """On a larger input too: FAIL, not an INCONCLUSIVE that blames finite-difference noise."""
    code, data, err = run_json(run_cli, "run", layer("ScaledSoftplusCachedBufferFn"), "--input", "16x16")
    assert code == 1, err
    (t,) = data["tensors"]
    assert t["status"] == "FAIL" and t["counts"]["NOISE"] == 0
    assert any(n.startswith("x: backward is not reentrant: two calls at the same point differ by") for n in data["notes"]), data["notes"]


# --------------------------------------------------------------------------- packages


@pytest.fixture
def fresh_packages(monkeypatch):
    """No module of tests/corpus_pkg imported before or after the test; the folder not on sys.path."""

    def forget():
        for key in [k for k in sys.modules if k.split(".")[0] in ("tinywave", "needsvision")]:
            del sys.modules[key]

    forget()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != PKG])
    yield
    forget()


@pytest.mark.parametrize(("name", "code"), [("DWT1D", 0), ("DWT1DFlipped", 1)])
def test_a_file_inside_a_package_is_imported_with_its_package(run_cli, fresh_packages, name, code):
    """functional.py imports its filters relatively (from .filters import FILTERS)."""
    got, data, err = run_json(run_cli, "run", f"{PKG / 'tinywave' / 'functional.py'}:{name}", "--input", "2x1x16")
    assert got == code, err
    assert list(statuses(data)) == ["x"]


@pytest.mark.parametrize(("target", "code"), [("tinywave.functional:DWT1D", 0), ("tinywave.functional.DWT1DFlipped", 1), ("tinywave:DWT1D", 0)])
def test_a_dotted_target_from_the_checkout_folder(run_cli, fresh_packages, monkeypatch, target, code):
    monkeypatch.chdir(PKG)
    got, data, err = run_json(run_cli, "run", target, "--input", "2x1x15")
    assert got == code, err
    assert list(statuses(data)) == ["x"]


def test_a_package_whose_own_import_fails_names_the_import_and_the_file_form(run_cli, fresh_packages, monkeypatch):
    monkeypatch.chdir(PKG)
    code, _, err = run_cli("run", "needsvision.layers:SoftShrink", "--input", "3x4")
    assert code == 2
    assert "gc_torchvision_not_installed" in err and "transforms.py" in err
    assert "needsvision/layers.py:SoftShrink" in err  # the form that works
    code, data, err = run_json(run_cli, "run", "needsvision/layers.py:SoftShrink", "--input", "3x4", "--input", "lambd=:0.25")
    assert code == 0, err
    assert statuses(data) == {"x": "PASS"}


def test_a_file_that_needs_its_broken_package_names_the_missing_import(run_cli, fresh_packages):
    code, _, err = run_cli("run", f"{PKG / 'needsvision' / 'functional.py'}:softshrink", "--input", "3x4")
    assert code == 2
    assert "gc_torchvision_not_installed" in err



def test_a_file_that_needs_its_broken_package_says_where_the_import_failed(run_cli, fresh_packages):
    code, _, err = run_cli("run", f"{PKG / 'needsvision' / 'functional.py'}:softshrink", "--input", "3x4")
    assert code == 2
    assert "transforms.py" in err and "in the layer file" not in err


# --------------------------------------------------------------------------- diagnoses and report details


def test_errors_at_the_four_corners_are_diagnosed_as_corners(run_cli):
    code, out, err = run_cli("run", layer("BoxBlurReplicateNoCorners"), "--input", "1x2x8x8", env={"COLUMNS": "200"})
    assert code == 1, err
    assert "diagnosis: errors only at the corners (8 element(s) in 4 corner(s))" in out
    assert "borders" not in out


def test_a_kink_value_outside_its_slopes_is_diagnosed_as_such():
    from corpus.kinks import ReluBadKinkFn

    v = x(4, 6, seed=2)
    v[::2, ::3] = 0.0
    (t,) = check(ReluBadKinkFn, [v]).tensors
    assert t.status == "FAIL"
    assert re.search(r"4 failing element\(s\) sit at a kink .*slopes 0\.00 and [0-9.]+\)", t.diagnosis), t.diagnosis
    assert "zero" not in t.diagnosis



def test_the_tied_maximum_bug_is_not_diagnosed_as_a_value_outside_the_slopes():
    rc = realcode()
    v = (x(1, 2, 4, 6, seed=1503) * 2).round().clamp(min=0) / 2 + 0.25
    (t,) = check(rc.MaxPool2x2MaskFn, [v]).tensors
    assert t.status == "FAIL"
    from gradcheck_cli.verdicts import FAIL

    failed = t.verdicts == FAIL
    assert np.isclose(t.analytic_grad[failed], t.kink_slopes[failed].max(-1)).all()  # each is a one-sided slope
    assert t.diagnosis is None or "outside" not in t.diagnosis, t.diagnosis


def test_max_abs_err_leaves_kink_elements_out(run_cli):
    """clamp(-1, 1) at exactly +-1: the KINK elements' differences (one-sided vs central) are large,
    every other element's tiny; the column must show the latter."""
    literal = "=[[-1.0, -0.5, 0.3, 1.0, 2.0], [1.0, 0.7, -1.0, -1.5, 0.0]]"
    code, data, err = run_json(run_cli, "run", f"{TESTS / 'corpus' / 'kinks.py'}:ClampFn", "--input", literal)
    assert code == 0, err
    (t,) = data["tensors"]
    assert t["counts"]["KINK"] == 4 and t["max_abs_error"] < 1e-9
    from corpus.kinks import ClampFn

    from gradcheck_cli.verdicts import KINK

    (rep,) = check(ClampFn, [literal]).tensors
    kinked = rep.verdicts == KINK
    assert np.abs(rep.analytic_grad - rep.numeric_grad)[kinked].max() > 0.1  # what the column used to show


def test_a_shortened_note_ends_at_a_word():
    """The note on why vmap could not be used quotes torch's long message, cut at a word."""

    class GuardedExp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            if v.abs().max().item() > 80:  # an overflow guard: .item() cannot run under vmap
                raise OverflowError("exp would overflow")
            y = v.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * y

    report = check(GuardedExp, ["40"], grouping=False)
    assert report.passed
    (note,) = [n for n in report.notes if n.startswith("batched evaluation not possible")]
    quoted = note[note.index("(RuntimeError: ") + len("(RuntimeError: ") : note.rindex("); ")]
    with pytest.raises(RuntimeError) as full:
        torch.func.vmap(lambda v: v.abs().max().item())(torch.ones(2, 3))
    message = " ".join(str(full.value).split())
    assert quoted.endswith("...") and len(quoted) < len(message)
    kept = quoted[:-3]
    assert message.startswith(kept) and message[len(kept)] == " ", (kept, message)

"""options.py: every check option declared once; the API, a spec and the command line take the same set."""

from __future__ import annotations

import dataclasses

import pytest

from gradcheck_cli.cli import main
from gradcheck_cli.errors import UsageError
from gradcheck_cli.options import (
    CLI_OPTIONS,
    SPEC_KEYS,
    TOLERANCES,
    CheckOptions,
    Steps,
    check_option,
    cli_flag,
    options,
    rerun_arguments,
)
from gradcheck_cli.spec import TOP_KEYS


def test_the_api_the_spec_and_the_command_line_take_the_same_options():
    api = {f.name for f in dataclasses.fields(CheckOptions)}
    internal = {"batch"}  # an implementation switch for benchmarks, not a check option
    assert set(SPEC_KEYS) == api - internal
    assert set(CLI_OPTIONS) == api - internal
    assert set(SPEC_KEYS) <= set(TOP_KEYS)
    run = {p.name for p in main.commands["run"].params}
    sweep = {p.name for p in main.commands["sweep"].params}
    assert set(CLI_OPTIONS) <= run
    assert set(CLI_OPTIONS) - {"eps"} <= sweep and "eps" not in sweep  # sweep chooses eps itself


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("dtype", "float46", "did you mean 'float64'?"),
        ("eps", 0, "greater than 0"),
        ("eps", float("nan"), "finite"),
        ("rtol", -1, "0 or more"),
        ("seed", 2**63, "from 0 to"),
        ("seed", True, "whole number"),
        ("kinks", "maybe", "pass, fail"),
        ("weighted_loss", "yes", "true or false"),
        ("max_elements", 0, "from 1"),
        ("budget", 1e9, "at most"),
        ("only", [""], "tensor name"),
        ("device", "not a device!", "not a torch device"),
    ],
)
def test_a_bad_value_is_refused_the_same_way_from_every_side(name, value, fragment):
    with pytest.raises(UsageError) as api:
        CheckOptions(**{name: value})
    with pytest.raises(UsageError) as spec:
        check_option(name, value)
    assert api.value.key == spec.value.key == name
    assert fragment in api.value.message + (api.value.hint or "")
    assert api.value.message == spec.value.message


def test_values_are_normalised():
    opts = CheckOptions(eps="1e-6", seed="3", only=["input0", "w"], max_elements=10.0)
    assert (opts.eps, opts.seed, opts.only, opts.max_elements) == (1e-6, 3, ("input0", "w"), 10)
    assert isinstance(opts.max_elements, int)


def test_defaults_come_from_the_dtype_table_and_the_analytic_side_sets_the_tolerance():
    assert CheckOptions().resolved() == Steps(*TOLERANCES["float64"])
    f32 = CheckOptions(dtype="float32")
    # differenced in float64: float64's step, float32's tolerances (the analytic side's rounding)
    assert f32.resolved("float64") == Steps(TOLERANCES["float64"][0], TOLERANCES["float32"][1], TOLERANCES["float32"][2])
    assert CheckOptions(eps=1e-4, rtol=0.0).resolved() == Steps(1e-4, 0.0, TOLERANCES["float64"][2])


def test_rerun_arguments_repeat_what_changes_the_check():
    config = {"dtype": "float32", "numeric_dtype": "float64", "device": "cpu", "seed": 5, "eps": 1e-6, "rtol": 2e-3, "atol": 1e-6,
              "kinks": "fail", "weighted_loss": False, "max_elements": None}
    args = rerun_arguments(config)
    assert args == ["--dtype", "float32", "--numeric-dtype", "float64", "--seed", "5", "--eps", "1e-06", "--rtol", "0.002",
                    "--atol", "1e-06", "--kinks", "fail", "--no-weighted-loss"]
    same = rerun_arguments({**config, "numeric_dtype": "float32", "kinks": "pass", "weighted_loss": True})
    assert "--kinks" not in same and "--no-weighted-loss" not in same
    # below float64 the numeric dtype is repeated even where it is the layer's: automatic could choose float64
    assert same[same.index("--numeric-dtype") + 1] == "float32"
    assert "--numeric-dtype" not in rerun_arguments({**config, "dtype": "float64", "numeric_dtype": "float64"})


def test_every_option_has_help_and_a_flag_name():
    for name, opt in options():
        assert opt.help.strip() and cli_flag(name).startswith("--") and "_" not in cli_flag(name)


# --- reference_dtype -> numeric_dtype: "reference" is --reference (the implementation compared with)


def _square(tmp_path):
    layer = tmp_path / "square.py"
    layer.write_text("def square(x):\n    return x * x\n")
    return layer


def test_the_old_name_of_numeric_dtype_still_works_from_the_api_with_a_deprecation_warning():
    from gradcheck_cli import check

    with pytest.warns(DeprecationWarning, match="'reference_dtype' is now called 'numeric_dtype'"):
        report = check(lambda x: x * x, ["3"], dtype="float32", reference_dtype="float32")
    assert report.config["numeric_dtype"] == "float32" and "reference_dtype" not in report.config
    with pytest.raises(UsageError, match="one option"):
        check(lambda x: x * x, ["3"], reference_dtype="float32", numeric_dtype="float64")


def test_the_old_name_of_numeric_dtype_still_works_in_a_spec_and_pyproject(tmp_path):
    from gradcheck_cli.config import load
    from gradcheck_cli.errors import SpecError
    from gradcheck_cli.spec import load_spec

    _square(tmp_path)
    spec = tmp_path / "s.yaml"
    spec.write_text("layer: square.py:square\ninputs:\n  - shape: [3]\ndtype: float32\nreference_dtype: float32\n")
    assert load_spec(spec).options["numeric_dtype"] == "float32"
    spec.write_text("layer: square.py:square\ninputs:\n  - shape: [3]\nreference_dtype: float32\nnumeric_dtype: float64\n")
    with pytest.raises(SpecError, match="old name of 'numeric_dtype'"):
        load_spec(spec)
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck]\nreference_dtype = "float32"\n')
    assert load(tmp_path / "pyproject.toml").options == {"numeric_dtype": "float32"}


def test_the_old_flag_still_works_hidden_and_says_it_is_deprecated(tmp_path, run_cli):
    layer = _square(tmp_path)
    code, out, err = run_cli("run", f"{layer}:square", "-i", "3", "--dtype", "float32", "--reference-dtype", "float32", "--json", "-")
    assert code == 0, err
    assert "--reference-dtype is now called --numeric-dtype" in err
    assert '"numeric_dtype": "float32"' in out
    code, out, err = run_cli("run", f"{layer}:square", "-i", "3", "--reference-dtype", "float32", "--numeric-dtype", "float64")
    assert code == 2 and "given twice" in err
    assert "--reference-dtype" not in run_cli("run", "--help")[1]


def test_the_report_config_and_the_junit_properties_derive_from_the_option_table(tmp_path, run_cli):
    """A new option appears in the JSON config and, if a rerun repeats it, in JUnit, without editing either."""
    import xml.etree.ElementTree as ET

    from gradcheck_cli import check

    report = check(lambda x: x * x, ["3"], constant=(), sets="off")
    declared = {name for name, opt in options() if opt.cli or opt.spec}
    assert declared <= set(report.config)
    assert report.config["sets"] == "off" and report.config["grouping"] is True and report.config["only"] == []
    layer = _square(tmp_path)
    xml = tmp_path / "r.xml"
    code, _, err = run_cli("run", f"{layer}:square", "-i", "3", "--sets", "off", "--kinks", "fail", "--junit-xml", xml)
    assert code == 0, err
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).iter("property")}
    assert {"dtype", "numeric_dtype", "device", "seed", "eps", "rtol", "atol", "kinks", "sets", "order", "weighted_loss"} <= set(props)
    assert props["sets"] == "off" and props["kinks"] == "fail"


def test_the_old_name_works_as_a_matrix_key_too(tmp_path):
    from gradcheck_cli.matrix import combinations
    from gradcheck_cli.spec import load_spec

    _square(tmp_path)
    spec = tmp_path / "m.yaml"
    spec.write_text("layer: square.py:square\ninputs:\n  - shape: [3]\ndtype: float32\nmatrix:\n  reference_dtype: [float32, float64]\n")
    assert [c.options["numeric_dtype"] for c in combinations(load_spec(spec))] == ["float32", "float64"]


def test_a_spec_using_the_old_name_is_told_in_its_report(tmp_path):
    from gradcheck_cli import check_spec
    from gradcheck_cli.spec import load_spec

    _square(tmp_path)
    spec = tmp_path / "s.yaml"
    spec.write_text("layer: square.py:square\ninputs:\n  - shape: [3]\ndtype: float32\nreference_dtype: float32\n")
    report = check_spec(load_spec(spec))
    assert any("key 'reference_dtype' is now called 'numeric_dtype'" in note for note in report.notes)

"""The Python API as a layer developer uses it from their own tests.

    report = gradcheck_cli.check(layer, [tensor], dtype="float64")
    assert report.passed, str(report)

``str(report)`` is the plain-text report, so a failing assert explains itself.
(Pass ``str(report)``: in a test module pytest shows ``repr()`` of a non-string
message, cut to 240 characters.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gradcheck_cli
from gradcheck_cli.load import import_file

BORDER = Path(__file__).resolve().parent / "layers" / "border.py"
SPECS = Path(__file__).resolve().parent.parent / "layer_specs"


@pytest.fixture(scope="module")
def layers():
    return import_file(BORDER)


def test_correct_function_passes(layers) -> None:
    x = torch.randn(3, 4, dtype=torch.float64)
    report = gradcheck_cli.check(layers.Smooth, [x], dtype="float64")
    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == ["x"]


def test_module_instance_with_parameters(layers) -> None:
    module = layers.ScaledBorderBug()
    report = gradcheck_cli.check(module, [torch.randn(4, 5)], only=["weight"])
    assert report.passed, str(report)  # the weight gradient is right; only the input gradient is wrong
    assert [t.name for t in report.tensors] == ["weight"]


def test_float32_with_the_cli_options(layers) -> None:
    report = gradcheck_cli.check(layers.Smooth, [torch.randn(8)], dtype="float32", numeric_dtype="float64", seed=3, max_elements=4)
    assert report.passed, str(report)
    assert report.config["dtype"] == "float32" and report.config["seed"] == 3
    assert report.tensors[0].n_checked <= 8


def test_failing_report_names_the_tensor_and_worst_element(layers) -> None:
    report = gradcheck_cli.check(layers.BorderBug, [torch.randn(3, 5)], dtype="float64")
    assert not report.passed
    text = str(report)
    t = report.tensors[0]
    assert text.splitlines()[0].startswith("gradcheck BorderBug: FAIL (dtype float64")
    assert "x" in text and "FAIL" in text
    assert f"worst {list(t.worst_index)}: analytic {t.analytic:.6g} vs numeric {t.numeric:.6g}" in text
    i, j = t.worst_index
    assert i in (0, 2) or j in (0, 4)  # the worst element sits on the border
    # In a test module pytest shows repr() of a non-string assert message, so pass str(report).
    with pytest.raises(AssertionError) as info:
        assert report.passed, str(report)
    shown = str(info.value)
    assert all(line.strip() in shown for line in text.splitlines())


def test_eps_and_tolerances_reach_the_check(layers) -> None:
    report = gradcheck_cli.check(layers.Smooth, [torch.randn(5)], eps=1e-4, rtol=1e-3, atol=1e-8)
    assert (report.config["eps"], report.config["rtol"], report.config["atol"]) == (1e-4, 1e-3, 1e-8)


def test_bad_option_raises_a_usage_error(layers) -> None:
    with pytest.raises(gradcheck_cli.UsageError, match="no such checked tensor"):
        gradcheck_cli.check(layers.Smooth, [torch.randn(5)], only=["weight"])


def test_check_a_spec_from_python() -> None:
    from gradcheck_cli.spec import load_spec

    report = gradcheck_cli.check_spec(load_spec(SPECS / "broken" / "scaled_matrix_no_sum_bug.yaml"))
    assert not report.passed
    assert [t.name for t in report.tensors if not t.passed] == ["x"]


def test_check_is_the_function_and_no_submodule_shadows_it() -> None:
    import gradcheck_cli.checker as checker
    from gradcheck_cli.options import TOLERANCES

    assert callable(gradcheck_cli.check) and gradcheck_cli.check is checker.check
    assert gradcheck_cli.TOLERANCES is TOLERANCES
    assert "check" in dir(gradcheck_cli) and "Report" in gradcheck_cli.__all__

"""Beyond the first backward: --order 2 (double backward), --forward-ad (jvp), --reference REF.

Each check is run on correct layers and on buggy twins written the way such bugs are
written (tests/layers/higher.py), through the API and through the command line (table,
rerun line, JSON ``checks``, JUnit, a spec).
"""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gradcheck_cli import check
from gradcheck_cli.errors import UsageError

HIGHER = Path(__file__).resolve().parent / "layers" / "higher.py"


def layer(name: str) -> str:
    return f"{HIGHER}:{name}"


def statuses(report) -> dict[str, str]:
    return {t.name: t.status for t in report.tensors}


# --------------------------------------------------------------------------- double backward


def test_a_twice_differentiable_backward_passes_order_2() -> None:
    report = check(layer("Softplus"), ["4x5"], order=2)
    assert report.passed, str(report)
    assert report.checks == ("backward", "double_backward")
    assert statuses(report) == {"x": "PASS", "x (double backward)": "PASS", "grad_output (double backward)": "PASS"}
    assert report.config["order"] == 2


@pytest.mark.parametrize("name", ["SoftplusSavedOnCtx", "SoftplusDetached"])
def test_a_right_backward_with_a_wrong_derivative_fails_only_the_double_backward(name: str) -> None:
    """ctx.s = sigmoid(x) in forward, or x.detach() in backward: first order right, second order wrong."""
    report = check(layer(name), ["4x5"], order=2)
    assert statuses(report) == {"x": "PASS", "x (double backward)": "FAIL", "grad_output (double backward)": "PASS"}
    bad = next(t for t in report.tensors if t.name == "x (double backward)")
    assert bad.check == "double_backward" and bad.only_name == "x" and bad.analytic == 0.0 and bad.numeric != 0.0
    assert any("does not depend on x through autograd" in note and "ctx" in note for note in report.notes)
    # The first-order check alone passes: only --order 2 sees this bug.
    assert check(layer(name), ["4x5"]).passed


def test_once_differentiable_fails_the_double_backward_with_a_reason() -> None:
    report = check(layer("SoftplusOnce"), ["4x5"], order=2)
    assert not report.passed
    assert statuses(report)["x"] == "PASS"
    assert statuses(report)["x (double backward)"] == "FAIL" and statuses(report)["grad_output (double backward)"] == "FAIL"
    assert any("once_differentiable" in note for note in report.notes)


def test_a_backward_that_raises_under_create_graph_is_a_fail_not_an_error() -> None:
    report = check(layer("SoftplusRaisesWhenGraphed"), ["4x5"], order=2)
    assert statuses(report)["x"] == "PASS"  # the first-order check is kept
    bad = next(t for t in report.tensors if t.name == "x (double backward)")
    assert bad.status == "FAIL" and "cannot be differentiated" in bad.diagnosis and "not implemented for this kernel" in bad.diagnosis
    assert any("create_graph=True" in note for note in report.notes)


def test_double_backward_checks_parameters_and_names_the_wrong_one() -> None:
    good = check(layer("ScaleTanh"), ["4x5"], order=2)
    assert good.passed, str(good)
    kinds = {t.name: t.kind for t in good.tensors}
    assert kinds["weight (double backward)"] == "parameter" and kinds["grad_output (double backward)"] == "input"
    bad = check(layer("ScaleTanhDetachedWeight"), ["4x5"], order=2)
    assert [t.name for t in bad.tensors if not t.passed] == ["weight (double backward)"]


def test_only_narrows_the_double_backward_too() -> None:
    report = check(layer("ScaleTanhDetachedWeight"), ["4x5"], order=2, only=["weight"])
    assert [t.name for t in report.tensors] == ["weight", "weight (double backward)", "grad_output (double backward)"]


def test_order_2_on_the_command_line_with_a_rerun_line_that_reruns_it(run_cli, tmp_path: Path) -> None:
    code, out, _ = run_cli("run", layer("SoftplusSavedOnCtx"), "-i", "4x5", "--order", "2", "--json", tmp_path / "r.json")
    assert code == 1
    assert "x (double backward)" in out and "also double backward" in " ".join(out.split())
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["checks"] == ["backward", "double_backward"]
    assert [(t["name"], t["check"], t["tensor"]) for t in data["tensors"]] == [
        ("x", "backward", "x"),
        ("x (double backward)", "double_backward", "x"),
        ("grad_output (double backward)", "double_backward", ""),
    ]
    rerun = next(line.strip() for line in out.splitlines() if line.strip().startswith("gradcheck run"))
    assert "--order 2" in rerun and "--only x" in rerun
    args = shlex.split(rerun)[2:]
    code2, out2, _ = run_cli("run", *args)
    assert code2 == 1 and "x (double backward)" in out2


def test_order_is_validated_in_a_spec(run_cli, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"layer: {HIGHER}:Softplus\ninputs: [{{shape: [3]}}]\norder: 3\n")
    code, _, err = run_cli("run", spec)
    assert code == 2 and "order" in err and "from 1 to 2" in err


# --------------------------------------------------------------------------- forward-mode AD


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_right_jvp_passes(dtype: str) -> None:
    report = check(layer("CubeJvp"), ["4x6"], forward_ad=True, dtype=dtype)
    assert report.passed, str(report)
    assert report.checks == ("backward", "forward_ad")
    assert statuses(report) == {"x": "PASS", "x (forward AD)": "PASS"}


def test_a_wrong_jvp_beside_a_right_backward_fails_only_forward_mode() -> None:
    report = check(layer("CubeWrongJvp"), ["4x6"], forward_ad=True)
    assert statuses(report) == {"x": "PASS", "x (forward AD)": "FAIL"}
    bad = report.tensors[1]
    assert bad.analytic == pytest.approx(bad.numeric / 3, rel=1e-6)  # the jvp forgot the factor 3
    assert check(layer("CubeWrongJvp"), ["4x6"]).passed  # invisible to the backward check


def test_forward_ad_covers_parameters() -> None:
    report = check(layer("AffineJvp"), ["4x6"], forward_ad=True)
    assert report.passed, str(report)
    assert {t.name for t in report.tensors if t.check == "forward_ad"} == {"x (forward AD)", "weight (forward AD)", "bias (forward AD)"}


def test_a_function_without_jvp_is_a_usage_error_that_says_so(run_cli) -> None:
    with pytest.raises(UsageError, match="defines no jvp"):
        check(layer("CubeNoJvp"), ["3"], forward_ad=True)
    code, out, err = run_cli("run", layer("CubeNoJvp"), "-i", "3", "--forward-ad")
    assert code == 2 and "defines no jvp" in err and "Traceback" not in err


def test_forward_ad_of_torch_ops_needs_no_custom_jvp() -> None:
    import torch

    report = check(torch.nn.Linear(5, 3), ["2x5"], forward_ad=True)
    assert report.passed and len(report.tensors) == 6


def test_max_elements_samples_the_jvps_too() -> None:
    report = check(layer("CubeJvp"), ["20x20"], forward_ad=True, max_elements=70)
    forward = next(t for t in report.tensors if t.check == "forward_ad")
    assert forward.n_checked == 70 and forward.passed


# --------------------------------------------------------------------------- a reference implementation


def test_a_correct_float32_layer_passes_against_its_reference() -> None:
    report = check(layer("FastLinear"), ["16x64"], dtype="float32", reference=layer("PlainLinear"))
    assert report.passed, str(report)
    assert report.checks == ("reference",)
    assert [t.name for t in report.tensors] == ["output (forward)", "x", "weight", "bias"]
    assert report.tensors[0].kind == "output" and all(t.oracle == "reference" for t in report.tensors)
    assert report.config["reference_runs_in"] == "float64" and report.config["eps"] is None


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_1_percent_wrong_weight_gradient_fails_against_the_reference(dtype: str) -> None:
    report = check(layer("FastLinear"), ["16x64"], kwargs={"weight_grad_scale": 1.01}, dtype=dtype, reference=layer("PlainLinear"))
    assert [t.name for t in report.tensors if not t.passed] == ["weight"]
    bad = report.tensors[2]
    assert bad.analytic == pytest.approx(1.01 * bad.numeric, rel=2e-3 if dtype == "float32" else 3e-2)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_correct_passes_and_5_percent_fails_against_the_reference(dtype: str) -> None:
    for seed in (0, 1):
        good = check(layer("FastLinear"), ["16x64"], dtype=dtype, seed=seed, reference=layer("PlainLinear"))
        assert good.passed, str(good)
        bad = check(layer("FastLinear"), ["16x64"], kwargs={"weight_grad_scale": 1.05}, dtype=dtype, seed=seed, reference=layer("PlainLinear"))
        assert [t.name for t in bad.tensors if not t.passed] == ["weight"], str(bad)


def test_a_forward_that_is_not_the_references_fails_first() -> None:
    report = check(layer("FastLinear"), ["16x64"], dtype="float32", reference=layer("PlainLinearMinusBias"))
    assert report.tensors[0].name == "output (forward)" and report.tensors[0].status == "FAIL"
    assert any("does not compute the same function" in note for note in report.notes)


def test_a_reference_with_other_parameters_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"lacks bias"):
        check(layer("FastLinear"), ["16x64"], reference=layer("PlainLinearNoBias"))


def test_a_plain_function_reference_and_order_2_against_it() -> None:
    good = check(layer("Softplus"), ["4x5"], dtype="float32", order=2, reference=layer("plain_softplus"))
    assert good.passed, str(good)
    assert good.checks == ("reference", "double_backward")
    bad = check(layer("SoftplusSavedOnCtx"), ["4x5"], dtype="float32", order=2, reference=layer("plain_softplus"))
    assert [t.name for t in bad.tensors if not t.passed] == ["x (double backward)"]


def test_forward_ad_against_the_reference() -> None:
    report = check(layer("CubeWrongJvp"), ["4x6"], forward_ad=True, reference=layer("plain_cube"))
    assert statuses(report) == {"output (forward)": "PASS", "x": "PASS", "x (forward AD)": "FAIL"}


def test_reference_in_a_spec_is_relative_to_the_spec_and_never_overwritten(run_cli, tmp_path: Path) -> None:
    (tmp_path / "ref.py").write_text(HIGHER.read_text())
    spec = tmp_path / "lin.yaml"
    spec.write_text(
        f"layer: {HIGHER}:FastLinear\nkwargs: {{weight_grad_scale: 1.01}}\ndtype: float32\nreference: ref.py:PlainLinear\n"
        "inputs:\n  - shape: [8, 64]\n"
    )
    code, out, _ = run_cli("run", spec, "--junit-xml", tmp_path / "j.xml")
    assert code == 1 and "weight" in out and "reference" in out
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")}
    assert set(cases) == {"output (forward)", "x", "weight", "bias"} and cases["weight"].find("failure") is not None
    before = (tmp_path / "ref.py").read_text()
    code, _, err = run_cli("run", spec, "--json", tmp_path / "ref.py")
    assert code == 2 and "reference file" in err
    assert (tmp_path / "ref.py").read_text() == before


def test_sweep_refuses_a_reference(run_cli) -> None:
    code, _, err = run_cli("sweep", layer("FastLinear"), "-i", "4x64", "--reference", layer("PlainLinear"))
    assert code == 2 and "takes none" in err


# --------------------------------------------------------------------------- what the review found


def test_a_reference_that_exits_is_its_error_not_a_silent_exit() -> None:
    from gradcheck_cli.errors import LayerError

    with pytest.raises(LayerError, match=r"sys\.exit\(3\)"):
        check(layer("Softplus"), ["4x5"], dtype="float32", reference=layer("plain_softplus_exits"))


def test_a_reference_with_outputs_in_another_order_is_refused_naming_both() -> None:
    with pytest.raises(UsageError, match=r"outputs of shapes \[1, 3\], \[2, 3\] where the layer returns \[2, 3\], \[1, 3\]"):
        check(layer("pair"), ["2x3"], reference=layer("pair_swapped"))
    assert check(layer("pair"), ["2x3"], reference=layer("plain_pair")).passed


def test_a_nan_in_the_reference_is_noise_said_so_not_the_layers_fail() -> None:
    report = check(layer("sqrt_abs"), ["=[[0.0, 1.5, -2.0, 0.7]]"], reference=layer("plain_sqrt_abs"))
    x = next(t for t in report.tensors if t.name == "x")
    assert x.counts["FAIL"] == 0 and x.counts["NOISE"] == 1
    assert any("the reference's gradient is NaN or infinite" in note for note in report.notes)


def test_a_layer_linear_in_a_tensor_passes_order_2_without_a_false_note() -> None:
    """The double backward of 2x + b is zero in x and b: right, and no note suggests a ctx bug."""
    report = check(layer("Twice"), ["3x4"], order=2)
    assert report.passed, str(report)
    assert not any("does not depend on" in note for note in report.notes), report.notes
    bn = check(torch_module("BatchNorm1d", 3), ["4x3"], order=2)
    assert bn.passed and not any("does not depend on" in note for note in bn.notes), bn.notes


def torch_module(name: str, *args):
    import torch

    return getattr(torch.nn, name)(*args).double()


def test_forward_ad_keeps_to_the_budget() -> None:
    report = check(layer("CubeJvp"), ["60x60"], forward_ad=True, budget=0.05)
    forward = next(t for t in report.tensors if t.check == "forward_ad")
    assert forward.n_checked < 3600 and forward.passed
    assert any("forward AD sampled at most" in note for note in report.notes)


def test_a_namedtuple_input_reaches_the_layer_as_itself() -> None:
    import collections

    import torch

    Pair = collections.namedtuple("Pair", "a b")

    def product(p):
        return p.a * p.b  # a plain tuple has no .a

    report = check(product, [Pair(torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64))])
    assert report.passed and {t.name for t in report.tensors} == {"p[0]", "p[1]"}


def test_an_unknown_only_names_the_spec_key_or_not_the_spec(run_cli, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"layer: {HIGHER}:Softplus\ninputs: [{{shape: [3]}}]\nonly: [nope]\n")
    code, _, err = run_cli("run", spec)
    assert code == 2 and "s.yaml: only: 'nope': no such checked tensor" in err
    good = tmp_path / "g.yaml"
    good.write_text(f"layer: {HIGHER}:Softplus\ninputs: [{{shape: [3]}}]\n")
    code, _, err = run_cli("run", good, "--only", "nope")
    assert code == 2 and "g.yaml" not in err and "only: 'nope': no such checked tensor" in err  # the command line's, not the spec's


def test_a_missing_reference_says_it_is_the_reference(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("run", layer("Softplus"), "-i", "3", "--reference", str(tmp_path / "nope.py") + ":X")
    assert code == 2 and "reference:" in err and "nope.py" in err


def test_a_none_gradient_for_a_float_input_hints_constant() -> None:
    """A filter passed as a float input whose backward returns None: the note says how to mark it constant."""
    report = check(layer("_TwiceFn"), ["3x4", "4"])  # its backward returns a gradient for both: no hint
    assert not any("--constant" in note for note in report.notes)

    import torch

    class FixedTaps(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, taps):
            return x * taps.sum()

        @staticmethod
        def backward(ctx, g):
            return None, None  # (its x gradient is missing too: that one is a bug)

    report = check(FixedTaps, ["3", "=[0.25, 0.5, 0.25]"])
    assert any("--constant taps" in note and "constant: true" in note for note in report.notes), report.notes


def test_a_reference_that_runs_a_hand_written_backward_is_refused_not_a_pass(tmp_path, run_cli) -> None:
    """Regression: a reference class that forgot to override forward ran the layer's own Function, so a
    wrong backward was compared with itself and passed (exit 0)."""
    path = tmp_path / "refsame.py"
    path.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class _ScaleFn(torch.autograd.Function):\n"
        "    @staticmethod\n    def forward(ctx, x, w):\n        ctx.save_for_backward(x, w)\n        return x * w\n"
        "    @staticmethod\n    def backward(ctx, g):\n        x, w = ctx.saved_tensors\n        return g * w, 2 * (g * x).sum(0)\n\n"
        "class Fast(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, 3))\n"
        "    def forward(self, x):\n        return _ScaleFn.apply(x, self.weight)\n\n"
        "class Plain(Fast):\n    pass\n\n"
        "class Right(Fast):\n    def forward(self, x):\n        return x * self.weight\n"
    )
    code, out, err = run_cli("run", f"{path}:Fast", "--input", "4x3", "--reference", f"{path}:Plain")
    assert code == 2 and "hand-written backward (_ScaleFn)" in err, (out, err)
    code, out, err = run_cli("run", f"{path}:Fast", "--input", "4x3", "--reference", f"{path}:Fast")  # itself
    assert code == 2
    code, out, err = run_cli("run", f"{path}:Fast", "--input", "4x3", "--reference", f"{path}:Right")
    assert code == 1 and "weight" in out  # against a plain reference the doubled weight gradient fails


def test_a_double_backward_differenced_otherwise_than_the_first_order_says_so(tmp_path) -> None:
    """The backward as a layer picks its own numeric side; the report used to state only the first order's."""
    path = tmp_path / "db32.py"
    path.write_text(
        "import torch\nclass Cube(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n"
        "        ctx.save_for_backward(x)\n        return x ** 3\n    @staticmethod\n    def backward(ctx, g):\n"
        "        (x,) = ctx.saved_tensors\n        return (3 * x * x * g).float().to(g.dtype)\n"
    )
    report = check(f"{path}:Cube", ["6"], dtype="float32", order=2)
    assert report.config["numeric_dtype"] == "float64"
    assert any(n.startswith("double backward: differenced in float32 at eps 0.001") for n in report.notes), report.notes
    same = check(layer("Softplus"), ["4x5"], order=2)  # float64 both: nothing to say
    assert not any(n.startswith("double backward: differenced") for n in same.notes)


def test_the_rerun_line_keeps_a_numeric_dtype_equal_to_the_layers() -> None:
    """Regression: --dtype float32 --numeric-dtype float32 reran as 'numeric in float64' (a different check)."""
    from gradcheck_cli.options import rerun_arguments

    forced = check(layer("Softplus"), ["4x5"], dtype="float32", numeric_dtype="float32")
    assert "--numeric-dtype" in rerun_arguments(forced.config) and forced.config["numeric_dtype"] == "float32"
    plain = check(layer("Softplus"), ["4x5"])
    assert "--numeric-dtype" not in rerun_arguments(plain.config)  # float64: always float64


def test_a_reference_run_states_no_numeric_dtype() -> None:
    report = check(layer("FastLinear"), ["16x64"], dtype="float32", reference=layer("PlainLinear"))
    assert report.config["numeric_dtype"] is None and report.config["eps"] is None


def test_at_80_columns_the_table_keeps_both_values_before_the_worst_index(run_cli) -> None:
    """Regression: long names ('grad_output (double backward)') pushed analytic and numeric out while
    'worst at', an index without its values, stayed."""
    code, out, err = run_cli("run", f"{HIGHER}:SoftplusSavedOnCtx", "-i", "4x5", "--order", "2", env={"COLUMNS": "80"})
    assert code == 1, err
    header = next(line for line in out.splitlines() if line.startswith("tensor"))
    assert "analytic" in header and "numeric" in header and "worst at" not in header and len(header) <= 80


def test_running_out_of_memory_in_the_double_backward_is_an_error_not_a_verdict() -> None:
    """Out of memory under create_graph says nothing of the backward's derivative: exit 1 as an error,
    never 'not twice differentiable' FAIL rows (told by the error's type, not its words)."""
    from gradcheck_cli.errors import OutOfMemory

    with pytest.raises(OutOfMemory, match="Out of memory"):
        check(layer("oom_under_create_graph"), ["5"], order=2)

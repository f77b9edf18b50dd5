"""The library API: gradcheck_cli.check(layer, inputs, ...) -> Report, with layer objects and tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gradcheck_cli
from gradcheck_cli import GradcheckError, LayerError, Report, UsageError, check

SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"

TENSOR_KEYS = {"name", "shape", "passed", "max_rel_error", "max_abs_error", "n_elements", "n_failed", "worst_index", "analytic", "numeric"}
CONFIG_KEYS = {"dtype", "device", "eps", "rtol", "atol", "seed"}


def by_name(report: Report) -> dict:
    return {t.name: t for t in report.tensors}


def x34(seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(3, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------- correct layers pass


@pytest.mark.parametrize(
    ("name", "inputs", "tensors"),
    [
        ("Square", ["3x4"], ["x"]),
        ("Tanh", ["2x3x2"], ["x"]),
        ("Mul", ["3x4", "3x4"], ["a", "b"]),
        ("Scale", ["3x4"], ["x", "weight"]),
        ("scaled", ["2x4"], ["x", "weight"]),  # a module instance
        ("TwoOutputs", ["3x4"], ["x"]),
        ("poly", ["3x4", "3x4"], ["x", "y"]),  # a plain function using autograd
        ("square_fn", ["5"], ["x"]),  # a plain function using a hand-written Function
        ("Tanh", ["scalar"], ["x"]),
    ],
)
def test_correct_layers_pass(simple, name, inputs, tensors):
    report = check(getattr(simple, name), inputs)
    assert report.passed, report
    assert [t.name for t in report.tensors] == tensors
    for t in report.tensors:
        assert t.passed and t.n_failed == 0
        assert t.n_checked == t.n_elements > 0  # every element was checked, not a sample
        assert t.max_rel_error < 1e-5


def test_target_string_works_like_the_object():
    report = check(f"{SIMPLE}:ScaleWeightBug", ["3x4"])
    assert not report.passed
    assert [(t.name, t.passed) for t in report.tensors] == [("x", True), ("weight", False)]


def test_inputs_given_as_tensors_are_used_as_given(simple):
    x = x34()
    report = check(simple.Square, [x], weighted_loss=False)
    t = report.tensors[0]
    # L = 1/2 sum (x^2)^2  =>  dL/dx = 2 x^3, on the tensor the caller gave
    assert torch.allclose(torch.from_numpy(t.analytic_grad), 2 * x**3, rtol=1e-12, atol=0)
    assert torch.allclose(torch.from_numpy(t.numeric_grad), 2 * x**3, rtol=1e-7, atol=1e-10)


# --------------------------------------------------------------------------- planted bugs fail on the right tensor


def test_wrong_input_gradient_fails_every_element(simple):
    report = check(simple.SquareBug, ["3x4"])
    assert not report.passed
    (t,) = report.tensors
    assert t.name == "x" and not t.passed and t.n_failed == 12
    assert t.max_rel_error == pytest.approx(0.5, rel=1e-4)  # analytic is half the numeric gradient


def test_bug_in_second_input_marks_only_that_input(simple):
    report = check(simple.MulSecondBug, ["3x4", "3x4"])
    tensors = by_name(report)
    assert not report.passed
    assert tensors["a"].passed and tensors["a"].n_failed == 0
    assert not tensors["b"].passed and tensors["b"].n_failed > 0
    assert report.worst.name == "b"


def test_wrong_weight_gradient_fails_only_the_weight(simple):
    report = check(simple.ScaleWeightBug, ["3x4"])
    tensors = by_name(report)
    assert set(tensors) == {"x", "weight"}
    assert tensors["x"].passed
    assert not tensors["weight"].passed and tensors["weight"].n_failed == 4
    assert tensors["weight"].kind == "parameter" and tensors["x"].kind == "input"
    # the correct version of the same layer passes: the parameter really is checked, not just listed
    assert check(simple.Scale, ["3x4"]).passed


def test_tuple_output_gradients_are_all_checked(simple):
    assert check(simple.TwoOutputs, ["3x4"]).passed
    # the buggy variant ignores the gradient flowing into the second output: only visible if both outputs count
    report = check(simple.TwoOutputsBug, ["3x4"])
    assert not report.passed and report.tensors[0].n_failed > 0


def test_single_element_bug_reports_that_element_with_both_values(simple):
    x = x34(seed=5)
    report = check(simple.SquareOneElementBug, [x])
    (t,) = report.tensors
    assert t.n_failed == 1 and t.n_checked == 12
    assert t.worst_index == simple.BUG_INDEX
    assert t.analytic is not None and t.numeric is not None
    assert t.analytic - t.numeric == pytest.approx(simple.BUG_OFFSET, rel=1e-6)
    # with only the 1/2 sum y^2 loss the numeric value is the true gradient 2 x^3 at that element
    (t,) = check(simple.SquareOneElementBug, [x], weighted_loss=False).tensors
    assert t.worst_index == simple.BUG_INDEX and t.loss == "l2"
    true = 2 * x[simple.BUG_INDEX].item() ** 3
    assert t.numeric == pytest.approx(true, rel=1e-7)
    assert t.analytic == pytest.approx(true + simple.BUG_OFFSET, rel=1e-12)
    assert int((t.verdicts == 1).sum()) == 1 and t.verdicts[simple.BUG_INDEX] == 1  # FAIL only there


# --------------------------------------------------------------------------- integer inputs


def test_int_inputs_are_passed_through_and_not_checked(simple):
    labels = torch.tensor([0, 2, 3])
    before = labels.clone()
    simple.SEEN_LABELS.clear()
    report = check(simple.LabelPick, [x34(), labels])
    assert report.passed, report
    assert [t.name for t in report.tensors] == ["x"]  # labels are not a checked tensor
    assert simple.SEEN_LABELS, "the layer was never called"
    for dtype, seen in simple.SEEN_LABELS:
        assert dtype == torch.int64
        assert torch.equal(seen, before)  # never perturbed, never cast
    assert torch.equal(labels, before) and labels.dtype == torch.int64


def test_int_literal_input_is_int64(simple):
    simple.SEEN_LABELS.clear()
    report = check(simple.LabelPick, ["3x4", "=[1,0,3]"])
    assert report.passed and [t.name for t in report.tensors] == ["x"]
    assert {d for d, _ in simple.SEEN_LABELS} == {torch.int64}
    assert all(s.tolist() == [1, 0, 3] for _, s in simple.SEEN_LABELS)


def test_only_int_inputs_is_a_usage_error(simple):
    with pytest.raises(UsageError, match="nothing differentiable"):
        check(simple.only_labels, ["=[1,2,3]"])


# --------------------------------------------------------------------------- dtypes and options


@pytest.mark.parametrize("reference", [None, "float32"])
def test_float32_correct_layers_pass_at_float32_defaults(simple, reference):
    # reference None: the numeric side is computed in float64 (the layers run there too);
    # "float32": finite differences in float32 itself, with float32's eps.
    expected_ref = reference or "float64"
    for layer, inputs in [(simple.Tanh, ["3x4"]), (simple.Square, ["3x4"]), (simple.Scale, ["3x4"]), (simple.poly, ["3x4", "3x4"])]:
        report = check(layer, inputs, dtype="float32", numeric_dtype=reference)
        assert report.passed, report
        assert report.config["dtype"] == "float32"
        assert report.config["numeric_dtype"] == expected_ref
        assert report.config["eps"] == gradcheck_cli.TOLERANCES[expected_ref][0]
        assert report.config["rtol"] == gradcheck_cli.TOLERANCES["float32"][1]
    # ... and float32 tolerances still catch a real bug
    report = check(simple.ScaleWeightBug, ["3x4"], dtype="float32", numeric_dtype=reference)
    assert [(t.name, t.passed) for t in report.tensors] == [("x", True), ("weight", False)]


def test_default_config(simple):
    cfg = check(simple.Square, ["3"]).config
    assert cfg["dtype"] == "float64" and cfg["device"] == "cpu" and cfg["seed"] == 0
    assert (cfg["eps"], cfg["rtol"], cfg["atol"]) == gradcheck_cli.TOLERANCES["float64"]


def test_eps_rtol_atol_override(simple):
    cfg = check(simple.Square, ["3"], eps=1e-5, rtol=1e-4, atol=1e-9, seed=4).config
    assert (cfg["eps"], cfg["rtol"], cfg["atol"], cfg["seed"]) == (1e-5, 1e-4, 1e-9, 4)
    # a loose enough rtol accepts the factor-2 bug (relative error 0.5): the tolerance is really applied
    assert not check(simple.SquareBug, ["3x4"]).passed
    assert check(simple.SquareBug, ["3x4"], rtol=1.0).passed


@pytest.mark.parametrize(("option", "value"), [("eps", 0.0), ("eps", -1e-6), ("rtol", -1.0), ("atol", float("nan")), ("dtype", "float31"), ("dtype", "int64"), ("seed", -1)])
def test_bad_options_are_usage_errors(simple, option, value):
    with pytest.raises(UsageError) as info:
        check(simple.Square, ["3"], **{option: value})
    assert info.value.exit_code == 2


def test_cuda_unavailable_is_a_usage_error(simple):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(UsageError, match="CUDA"):
        check(simple.Square, ["3"], device="cuda")


def test_seed_makes_reports_reproducible(simple):
    a = check(simple.SquareBug, ["3x4"], seed=11).to_dict()["tensors"]
    b = check(simple.SquareBug, ["3x4"], seed=11).to_dict()["tensors"]
    c = check(simple.SquareBug, ["3x4"], seed=12).to_dict()["tensors"]
    assert (a[0]["analytic"], a[0]["numeric"]) == (b[0]["analytic"], b[0]["numeric"])
    assert (a[0]["analytic"], a[0]["numeric"]) != (c[0]["analytic"], c[0]["numeric"])


# --------------------------------------------------------------------------- the report as JSON


def test_to_dict_has_the_documented_keys(simple):
    report = check(simple.ScaleWeightBug, ["3x4"], seed=2)
    data = json.loads(json.dumps(report.to_dict()))  # plain JSON types only
    assert data["passed"] is False
    assert CONFIG_KEYS <= set(data["config"])
    assert data["config"]["seed"] == 2 and data["config"]["dtype"] == "float64" and data["config"]["device"] == "cpu"
    assert [t["name"] for t in data["tensors"]] == ["x", "weight"]
    for t in data["tensors"]:
        assert TENSOR_KEYS <= set(t)
    x, w = data["tensors"]
    assert x["shape"] == [3, 4] and x["n_elements"] == 12 and x["passed"] is True and x["n_failed"] == 0
    assert w["shape"] == [4] and w["n_elements"] == 4 and w["passed"] is False and w["n_failed"] == 4
    assert isinstance(w["worst_index"], list) and len(w["worst_index"]) == 1
    assert w["analytic"] == pytest.approx(2 * w["numeric"], rel=1e-6)  # the planted factor 2
    assert w["max_rel_error"] == pytest.approx(0.5, rel=1e-4)
    assert w["max_abs_error"] >= abs(w["analytic"] - w["numeric"]) * (1 - 1e-9)


def test_to_dict_scalar_input(simple):
    t = check(simple.Tanh, ["scalar"]).to_dict()["tensors"][0]
    assert t["shape"] == [] and t["n_elements"] == 1 and t["worst_index"] == []


# --------------------------------------------------------------------------- the user's things are left alone


def module_state(m: torch.nn.Module) -> dict:
    return {
        "params": {
            k: (p, p.detach().clone(), p.dtype, p.device, p.requires_grad, None if p.grad is None else p.grad.clone())
            for k, p in m.named_parameters()
        },
        "buffers": {k: (b, b.clone(), b.dtype) for k, b in m.named_buffers()},
        "training": [sub.training for sub in m.modules()],
    }


def assert_module_unchanged(m: torch.nn.Module, before: dict) -> None:
    after = dict(m.named_parameters())
    assert set(after) == set(before["params"])
    for k, (obj, value, dtype, device, requires_grad, grad) in before["params"].items():
        p = after[k]
        assert p is obj, f"parameter {k} was replaced"
        assert p.dtype == dtype and p.device == device and p.requires_grad == requires_grad, k
        assert torch.equal(p.detach(), value), f"parameter {k} changed value"
        if grad is None:
            assert p.grad is None, f"{k}.grad was set"
        else:
            assert p.grad is not None and torch.equal(p.grad, grad), f"{k}.grad changed"
    buffers = dict(m.named_buffers())
    assert set(buffers) == set(before["buffers"])
    for k, (obj, value, dtype) in before["buffers"].items():
        assert buffers[k] is obj and buffers[k].dtype == dtype and torch.equal(buffers[k], value), f"buffer {k} changed"
    assert [sub.training for sub in m.modules()] == before["training"]


@pytest.mark.parametrize("module_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", ["pass", "fail", "raise"])
def test_user_module_and_global_rng_unchanged(simple, rng_snapshot, kind, training, module_dtype):
    module = {"pass": simple.Scale(4), "fail": simple.ScaleWeightBug(4), "raise": simple.Raises()}[kind]
    module.to(module_dtype).train(training)
    first = next(module.parameters())
    first.grad = torch.full_like(first, 7.0)  # an old gradient the user still has
    state = module_state(module)
    torch.manual_seed(1234)
    snap = rng_snapshot()
    if kind == "raise":
        with pytest.raises(LayerError):
            check(module, ["3x3"])
    else:
        report = check(module, ["3x4"], seed=3)  # runs in float64 whatever the module's dtype
        assert report.passed == (kind == "pass")
    snap.assert_unchanged()
    assert_module_unchanged(module, state)


def test_module_without_old_grad_keeps_grad_none(simple):
    module = simple.Scale(4)
    check(module, ["3x4"])
    assert all(p.grad is None for p in module.parameters())


def test_layer_using_global_rng_leaves_it_unchanged(simple, rng_snapshot):
    torch.manual_seed(0)
    snap = rng_snapshot()
    report = check(simple.UsesGlobalRng(3), ["2x3"])
    assert report.passed, report
    snap.assert_unchanged()


def test_rng_unchanged_when_backward_raises(simple, rng_snapshot):
    snap = rng_snapshot()
    with pytest.raises(LayerError, match="backward"):
        check(simple.BackwardRaisesFn, ["3"])
    snap.assert_unchanged()


def test_rng_unchanged_when_loading_a_file_that_draws_at_import(tmp_path, rng_snapshot):
    path = tmp_path / "draws_at_import.py"
    path.write_text("from torch import nn\nlayer = nn.Linear(3, 2)\n")
    snap = rng_snapshot()
    assert check(f"{path}:layer", ["2x3"]).passed
    snap.assert_unchanged()


def test_user_input_tensors_are_not_modified(simple):
    x = x34(dtype=torch.float32).requires_grad_(True)
    y = x34(seed=1)
    x_before, y_before = x.detach().clone(), y.clone()
    report = check(simple.Mul, [x, y])  # checked in float64: x is not cast in place either
    assert report.passed
    assert x.dtype == torch.float32 and x.requires_grad and x.grad is None and torch.equal(x.detach(), x_before)
    assert torch.equal(y, y_before) and not y.requires_grad and y.grad is None


def test_user_tensor_safe_from_a_layer_that_writes_into_its_input(rng_snapshot):
    def scales_in_place(x):
        with torch.no_grad():
            x.mul_(2)
        return x * x

    x = x34()
    before = x.clone()
    with pytest.raises(GradcheckError):
        check(scales_in_place, [x])
    assert torch.equal(x, before)


# --------------------------------------------------------------------------- the layer's own errors


def test_forward_raising_is_a_layer_error_naming_the_layer(simple):
    with pytest.raises(LayerError) as info:
        check(simple.Raises, ["3"])
    err = info.value
    assert err.exit_code == 1
    assert "Raises" in err.message and "ValueError" in err.message and "planted failure in forward" in err.message


def test_missing_inputs_say_how_to_give_them(simple):
    with pytest.raises(UsageError) as info:
        check(simple.Mul, ["3"])
    assert "--input" in str(info.value)


def test_module_needing_constructor_args(simple):
    with pytest.raises(UsageError, match="NeedsArg"):
        check(simple.NeedsArg, ["2x3"])
    assert check(simple.NeedsArg(3), ["2x3"]).passed  # an instance is fine


# --------------------------------------------------------------------------- regressions found in review


def test_non_contiguous_input_is_checked_not_blamed_on_the_layer(simple):
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).t()
    assert not x.is_contiguous()
    for batch in (True, False):
        assert check(simple.Square, [x], batch=batch).passed
        assert [t.status for t in check(simple.SquareBug, [x], batch=batch).tensors] == ["FAIL"]


def test_non_contiguous_parameter_is_checked(simple):
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3).t())

        def forward(self, x):
            return simple.Square.apply(x * self.w)

    report = check(M(), ["3x4"], batch=False)
    assert report.passed, str(report)

    class Wrong(M):
        def forward(self, x):
            return simple.SquareBug.apply(x * self.w)

    wrong = check(Wrong(), ["3x4"], batch=False)
    assert {t.name: t.status for t in wrong.tensors} == {"x": "FAIL", "w": "FAIL"}


def test_frozen_parameter_is_not_checked_and_says_so():
    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            (w,) = ctx.saved_tensors
            return g * w, None  # w is frozen: no gradient for it

    class Frozen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.full((4,), 1.5, dtype=torch.float64), requires_grad=False)

        def forward(self, x):
            return Scale.apply(x, self.w)

    report = check(Frozen(), ["3x4"])
    assert report.passed and [t.name for t in report.tensors] == ["x"]
    assert any("frozen" in n and "w" in n for n in report.notes)


def test_complex_output_is_a_usage_error():
    with pytest.raises(UsageError, match="complex"):
        check(lambda x: torch.complex(x, x), ["3"])


def test_required_keyword_only_argument_is_a_usage_error():
    def layer(x, *, scale):
        return x * scale

    with pytest.raises(UsageError, match="keyword argument"):
        check(layer, ["3"])


def test_gradient_ignored_for_a_tiny_output_next_to_a_huge_one_fails():
    class Two(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin() * 1e6, x.cos() * 1e-6

        @staticmethod
        def backward(ctx, g1, g2):
            (x,) = ctx.saved_tensors
            return g1 * x.cos() * 1e6  # ignores g2: invisible in a loss that sums both outputs as they are

    class TwoOk(Two):
        @staticmethod
        def backward(ctx, g1, g2):
            (x,) = ctx.saved_tensors
            return g1 * x.cos() * 1e6 - g2 * x.sin() * 1e-6

    bad = check(Two, ["3x4"])
    assert not bad.passed and bad.tensors[0].failed_losses == ("weighted",)
    assert check(TwoOk, ["3x4"]).passed


def test_forward_that_updates_a_buffer_is_checked_at_a_fixed_state_and_user_buffer_untouched(simple):
    class Count(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros((), dtype=torch.float64))

        def forward(self, x):
            self.count += 1
            return simple.Square.apply(x) + self.count

    m = Count()
    report = check(m, ["3x4"])
    assert report.passed, str(report)
    assert any("count" in n and "restored" in n for n in report.notes)
    assert float(m.count) == 0.0


def test_layer_rounding_to_float32_inside_is_differenced_in_float32_not_float64():
    class F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.float().sin().to(x.dtype) * 1.1  # float32 inside, a float64 step after it

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.cos() * 1.1

    for shape in ("4x5", "5"):
        report = check(F, [shape], dtype="float32")
        assert report.passed, str(report)
        assert report.config["numeric_dtype"] == "float32"

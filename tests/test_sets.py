"""Set testing (sets.py): whole tensors cleared along random directions, the wrong elements found by bisection.

Three levels:

* the rule itself, on a SetTester with planted analytic errors: what a cleared set
  guarantees (a single wrong element can never pass; two cancelling errors escape one
  direction about half the time and sixteen essentially never), what it refuses to vouch
  for (noise, analytic rounding of a wide float32 set);
* ``check(..., sets="on")`` on dense layers (every output depends on every input, so
  grouping cannot help): correct layers pass with every element covered, a wrong element
  is found with both values, many wrong ones stop the splitting with a sample and a
  diagnosis, kinks end as KINK, NaN as FAIL, steps out of the domain as NOISE;
* the report: what was checked by sets, how, and what the guarantee is.

Every test runs on the CPU and, where there is one, on a CUDA device (same code).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gradcheck_cli import bisection, check, checker, sets
from gradcheck_cli.environment import Placement
from gradcheck_cli.options import CheckOptions
from gradcheck_cli.report import to_json
from gradcheck_cli.subject import prepare
from gradcheck_cli.verdicts import FAIL, KINK, NOISE, PASS

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))]


def dense(wrong_at: int | None = None, factor: float = 1.0, nan_at: int | None = None, by: float = 1.001):
    """y = x tanh(mean x) + 0.1 x^2 with a hand-written backward; optionally one element's gradient
    scaled by ``by``, the whole gradient by ``factor``, or one element NaN."""

    class Dense(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            t = torch.tanh(x.mean())
            ctx.save_for_backward(x, t)
            return x * t + 0.1 * x * x

        @staticmethod
        def backward(ctx, g):
            x, t = ctx.saved_tensors
            out = (g * (t + 0.2 * x) + (g * x).sum() * (1 - t * t) / x.numel()) * factor
            if wrong_at is not None:
                out = out.clone()
                out.view(-1)[wrong_at] *= by
            if nan_at is not None:
                out = out.clone()
                out.view(-1)[nan_at] = float("nan")
            return out

    return Dense


def _x(*shape: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).to(device)


def _tester(layer, x, directions: int = sets.DIRECTIONS, errors: dict[int, float] | None = None, seed: int = 0, **options):
    """A SetTester on the layer's first input, its analytic gradients shifted by ``errors`` (flat index -> amount)."""
    opts = CheckOptions(**options)
    placement = Placement.of(opts.device)
    subject = prepare(layer, "layer", [x], opts, placement)
    run = checker._Run(subject, opts, placement, None)
    numeric, analytic = run._sides().numeric, run._sides().analytic
    leaf = subject.leaves[0]
    grads = {loss: g.clone() for loss, g in analytic.grads[leaf.name].items()}
    for at, amount in (errors or {}).items():
        for g in grads.values():
            g.view(-1)[at] += amount
    unit = torch.finfo(x.dtype if opts.dtype == "float64" else getattr(torch, opts.dtype)).eps
    sides = sets.sides_of(grads, {loss: analytic.allowance(leaf.name, loss) for loss in grads}, numeric.steps.rtol, numeric.steps.atol, analytic.layer_scale, unit)
    return sets.SetTester(numeric, leaf, sides, seed, directions)


# ----------------------------------------------------------------------------- the rule


def test_a_set_with_one_element_wrong_by_more_than_its_bound_never_passes():
    """One wrong element: sum_i v_i e_i is exactly +-e_j, whatever the signs; beyond the bound it cannot clear."""
    x = _x(16, 16)
    clean = _tester(dense(), x).test(0, 256)
    assert clean.passed and clean.directions == sets.DIRECTIONS
    bound = max(clean.bound.values())
    for seed in range(30):
        t = _tester(dense(), x, errors={37: 1.1 * bound}, seed=seed).test(0, 256)
        assert not t.passed, f"seed {seed}: an element wrong by 1.1x the bound was cleared"


def test_two_cancelling_errors_escape_one_direction_half_the_time_and_sixteen_never():
    """Errors +e and -e: one direction misses them when the two signs agree (probability 1/2);
    DIRECTIONS independent directions miss with probability 2**-16."""
    x = _x(16, 16)
    errors = {10: 0.05, 200: -0.05}
    one = [_tester(dense(), x, directions=1, errors=errors, seed=s).test(0, 256).passed for s in range(100)]
    assert 30 <= sum(one) <= 70, sum(one)
    sixteen = [_tester(dense(), x, errors=errors, seed=s).test(0, 256).passed for s in range(100)]
    assert not any(sixteen)


def test_the_bound_is_twice_the_strictest_tolerance_plus_the_noise_and_covers_every_element():
    """The reported bound: 2 (T + 4 sigma + tau), T the tolerance of the set's smallest gradient;
    no element's error can exceed it unseen, and it is far below the elements' own tolerances here."""
    x = _x(32, 32)
    report = check(dense(), [x], sets="on")
    t = report.tensors[0]
    rtol, atol = report.config["rtol"], report.config["atol"]
    a = np.abs(t.analytic_grad)  # the headline loss's gradient
    strictest = atol + rtol * max(a.min(), report.config["rel_floor"] * a.max())
    assert t.sets["bound"][t.loss] >= 2 * strictest
    # every element's own tolerance (by |a|) is at least T: the bound relative to it is stated in the note
    assert "twice the tolerance of the set's strictest element" in " ".join(report.notes)
    assert t.sets["bound"][t.loss] < 1e-4 * a.max()  # float64: a bug of 0.01% of the largest gradient cannot hide


def test_a_noisy_set_is_split_not_cleared():
    """Differenced in float32, a dense layer's noise is as large as its small gradients: no set may vouch for them."""
    x = _x(48, 48)
    by_sets = check(dense(), [x], dtype="float32", numeric_dtype="float32", sets="on")
    alone = check(dense(), [x], dtype="float32", numeric_dtype="float32", sets="off")
    assert by_sets.tensors[0].counts == alone.tensors[0].counts
    assert by_sets.tensors[0].counts["NOISE"] > 0
    assert by_sets.tensors[0].n_checked == 48 * 48  # splitting never stops early on a tensor that does not fail


def test_the_analytic_rounding_of_a_wide_float32_set_splits_it_before_any_forward():
    assert sets.widest(1e-5, torch.finfo(torch.float64).eps) > 1e15
    assert 2e5 < sets.widest(2e-3, torch.finfo(torch.float32).eps) < 4e5
    assert sets.widest(2e-2, torch.finfo(torch.float16).eps) < 1  # float16: sets cannot help
    tester = _tester(dense(), _x(16, 16), dtype="float32")
    tester.sides = {loss: sets.LossSide(s.analytic, s.spread, s.rtol, s.atol, s.scale, s.layer_scale, 1e-4) for loss, s in tester.sides.items()}
    t = tester.test(0, 256)
    assert not t.passed and t.reason == "too wide" and tester.forwards == 0


def test_leaf_size_balances_measuring_alone_against_splitting():
    s = bisection.leaf_size(16)
    assert s == 256 and s / np.log2(s) >= 32 > (s / 2) / np.log2(s / 2)


# ----------------------------------------------------------------------------- check() by sets


@pytest.mark.parametrize("device", DEVICES)
def test_a_correct_dense_layer_is_cleared_by_one_test_covering_every_element(device):
    report = check(dense(), [_x(64, 64, device=device)], sets="on", device=device)
    t = report.tensors[0]
    assert report.passed and t.n_checked == t.n_elements == 4096
    assert t.sets["tests"] == 1 and t.sets["cleared"] == 4096 and t.sets["measured_alone"] == 0
    assert t.sets["forwards"] == 2 * 2 * sets.DIRECTIONS  # h and 2h, both sides, every direction
    assert (t.verdicts == PASS).all() and np.isnan(t.numeric_grad).all()  # covered, but no per-element value
    assert report.timing["sets"] == {"x": 1}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("at", [0, 1234, 4095])
def test_one_element_wrong_by_a_tenth_of_a_percent_is_found_with_both_values(at, device):
    x = _x(64, 64, device=device)
    report = check(dense(wrong_at=at), [x], sets="on", device=device, weighted_loss=False)
    t = report.tensors[0]
    assert not report.passed and t.counts["FAIL"] == 1 and t.counts["PASS"] == 4095 and t.n_checked == 4096
    assert t.worst_index == tuple(int(i) for i in np.unravel_index(at, (64, 64)))
    assert t.analytic == pytest.approx(t.numeric * 1.001, rel=1e-5)
    right = check(dense(), [x], sets="off", device=device, weighted_loss=False).tensors[0]
    assert t.numeric == pytest.approx(float(right.numeric_grad.reshape(-1)[at]), rel=1e-6)
    assert t.diagnosis and "single element" in t.diagnosis
    assert t.sets["tests"] < 2 * np.log2(4096)  # bisection, not a scan
    assert check(dense(wrong_at=at), [x], sets="on", device=device).tensors[0].worst_index == t.worst_index  # both losses


def test_many_wrong_elements_stop_the_splitting_with_a_sample_and_a_diagnosis():
    report = check(dense(factor=2.0), [_x(64, 64)], sets="on")
    t = report.tensors[0]
    assert t.status == "FAIL" and t.counts["FAIL"] >= 32
    assert t.n_checked < t.n_elements and t.coverage and "not checked" in t.coverage
    assert t.sets["stopped"] and "sample" in t.sets["stopped"]
    assert t.diagnosis and "2.00 × numeric" in t.diagnosis
    assert t.sets["tests"] <= 12  # known to fail after a few tests: no splitting down every branch


def test_a_kink_inside_a_set_ends_as_a_kink_element_not_a_failure():
    class ReluMean(torch.autograd.Function):
        """y = relu(x) * (1 + mean x): every output depends on every input; relu'(0) = 0."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.relu(x) * (1 + x.mean())

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (x > 0) * (1 + x.mean()) + (g * torch.relu(x)).sum() / x.numel()

    x = _x(32, 32)
    x.view(-1)[333] = 0.0
    report = check(ReluMean.apply, [x], sets="on")
    t = report.tensors[0]
    assert report.passed and t.counts["KINK"] == 1 and t.verdicts.reshape(-1)[333] == KINK
    strict = check(ReluMean.apply, [x], sets="on", kinks="fail")
    assert not strict.passed and strict.tensors[0].n_failed == 1


def test_float32_dense_layer_passes_by_sets_and_a_5pct_wrong_element_is_found():
    x = _x(48, 48)
    assert check(dense(), [x], dtype="float32", sets="on").passed
    report = check(dense(wrong_at=999, by=1.05), [x], dtype="float32", sets="on")
    t = report.tensors[0]
    assert t.counts["FAIL"] == 1 and t.worst_index == tuple(int(i) for i in np.unravel_index(999, (48, 48)))


def test_a_nan_gradient_fails_its_element_and_a_step_outside_the_domain_is_noise():
    report = check(dense(nan_at=100), [_x(16, 16)], sets="on")
    t = report.tensors[0]
    assert t.counts["FAIL"] == 1 and t.verdicts.reshape(-1)[100] == FAIL

    class SqrtMean(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            y = v.sqrt() * (1 + v.mean())
            ctx.save_for_backward(v)
            return y

        @staticmethod
        def backward(ctx, g):
            (v,) = ctx.saved_tensors
            return g * (1 + v.mean()) / (2 * v.sqrt()) + (g * v.sqrt()).sum() / v.numel()

    v = torch.rand(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 0.5
    v.view(-1)[77] = 4e-7  # v - h < 0: no estimate there
    report = check(SqrtMean.apply, [v], sets="on")
    t = report.tensors[0]
    assert t.counts["FAIL"] == 0 and t.counts["NOISE"] == 1 and t.verdicts.reshape(-1)[77] == NOISE


# ----------------------------------------------------------------------------- the report


def test_the_report_says_what_sets_checked_how_and_what_they_guarantee():
    report = check(dense(wrong_at=5), [_x(32, 32)], sets="on")
    data = json.loads(to_json(report.to_dict()))
    s = data["tensors"][0]["sets"]
    assert set(s) == {"tests", "directions", "directions_per_set", "miss_probability_per_set", "forwards", "cleared",
                      "measured_alone", "bound", "noise_factor", "stopped"}
    assert s["directions_per_set"] == sets.DIRECTIONS and s["miss_probability_per_set"] == 2.0**-sets.DIRECTIONS
    assert s["cleared"] + s["measured_alone"] == 1024 and 0 < s["measured_alone"] <= bisection.LEAF
    assert data["timing"]["sets"] == {"x": s["tests"]}
    note = next(n for n in report.notes if "checked by sets" in n)
    assert "2^-16 per set" in note and "--sets off" in note
    assert data["config"]["sets"] == "on"
    from gradcheck_cli.options import rerun_arguments

    assert rerun_arguments(report.config)[-2:] == ["--sets", "on"]


def test_sets_on_in_a_spec_means_on_though_yaml_reads_it_as_true(tmp_path):
    from gradcheck_cli import check_spec
    from gradcheck_cli.spec import load_spec

    layer = tmp_path / "dense.py"
    layer.write_text(
        "import torch\n\nclass Dense(torch.nn.Module):\n    def forward(self, x):\n        return x * torch.tanh(x.mean()) + 0.1 * x * x\n"
    )
    spec = tmp_path / "dense.yaml"
    spec.write_text("layer: dense.py:Dense\ninputs:\n  - shape: [8, 8]\nsets: on\n")
    report = check_spec(load_spec(spec))
    assert report.config["sets"] == "on" and report.timing["sets"] == {"x": 1}
    assert CheckOptions(sets=False).sets == "off"

"""Grouped evaluation: many elements per forward, each output credited to its one element.

Two levels:

* ``grouping.group`` on exact linear maps (dyadic numbers, so every sum is exact):
  which strides it accepts, which owners it credits, what it costs, and that it
  rejects structures that would misattribute -- including changes of three elements
  that cancel exactly inside the coded moves, which only the random probes can see.
* ``check`` on real layers: the grouped path gives the verdicts the
  one-element-per-forward path gives (correct layers, bugs, kinks, steps that leave
  the domain, long-range couplings), and it is refused where it cannot be trusted.
"""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
from corpus.elementwise import SqrtFn
from corpus.kinks import ReluFn

from gradcheck_cli import check, grouping
from gradcheck_cli.verdicts import FAIL

H = 2.0**-10


def _linear(a: torch.Tensor, x: torch.Tensor):
    """Group evaluation of y = A x, as check.py's evaluate does it (moved by sign*H, then -sign*H)."""
    n = x.numel()
    calls = []

    def evaluate(segments):
        d = torch.cat([torch.zeros(len(signs), n, dtype=x.dtype).scatter_(1, pos, signs.to(x.dtype)) for pos, signs in segments]) * H
        calls.append(len(d))
        return (x + d) @ a.T, (x - d) @ a.T

    return evaluate, calls


def _group(a: torch.Tensor, budget: int | None = None, seed: int = 0):
    n = a.shape[1]
    x = torch.arange(n, dtype=torch.float64) / 4 + 1  # dyadic: x +- H and every sum below are exact
    evaluate, calls = _linear(a, x)
    budget = n if budget is None else budget
    parts, how = grouping.group(evaluate, n, a @ x, torch.zeros(a.shape[0], dtype=torch.float64), budget, seed, list)
    return parts, how, calls


def _credits(parts) -> dict[int, list[int]]:
    """output -> the elements credited with its changes (one per class at most)."""
    out: dict[int, list[int]] = {}
    for members, owner, _, _ in parts:
        for g, m in torch.nonzero(owner >= 0).tolist():
            element = int(members[g, owner[g, m]])
            assert element not in out.get(m, []), f"output {m} credited to element {element} twice"
            out.setdefault(m, []).append(element)
    return out


def _credited_values(parts) -> list[tuple]:
    """(output, element, value at +h, value at -h) for every credit, sorted: what the evaluation gave."""
    got = []
    for members, owner, yp, ym in parts:
        for g, m in torch.nonzero(owner >= 0).tolist():
            got.append((m, int(members[g, owner[g, m]]), float(yp[g, m]), float(ym[g, m])))
    return sorted(got)


def _assert_credits_match(a: torch.Tensor, parts) -> None:
    """Every output is credited exactly the elements it depends on, once each."""
    credits = _credits(parts)
    for m in range(a.shape[0]):
        assert sorted(credits.get(m, [])) == torch.nonzero(a[m]).reshape(-1).tolist(), m


def test_elementwise_fits_stride_1_in_a_logarithmic_number_of_forwards():
    n = 64
    a = torch.diag(torch.linspace(1, 2, n, dtype=torch.float64))
    parts, how, calls = _group(a)
    assert how.stride == 1
    assert grouping.code_size(n) == (9, 5)  # C(9, 5) = 126 codes of 5 moves among 9, for 64 elements
    assert grouping.cost(n, 1) == 2 * (9 + grouping.PROBES) + 4  # + the screen's two moves
    screened = calls[0] // 2  # strides whose screens shared the first evaluation, within the budget
    assert how.forwards == 2 * sum(calls) == grouping.cost(n, 1) + 4 * (screened - 1)
    _assert_credits_match(a, parts)


def test_banded_layer_fits_the_first_stride_wider_than_its_band():
    n = 512
    a = sum(torch.diag(torch.full((n - abs(k),), 1.0 + k / 8, dtype=torch.float64), k) for k in range(-2, 3))  # width 5
    parts, how, _ = _group(a)
    assert how.stride == 8  # 1, 2 and 4 put two of an output's five inputs in one class
    _assert_credits_match(a, parts)


def test_a_wide_output_is_not_grouped_and_the_attempts_stay_within_budget():
    n = 64
    a = torch.ones(3, n, dtype=torch.float64)  # every output depends on every element
    parts, how, calls = _group(a, budget=n)
    assert parts is None and how.stride == 0
    assert how.forwards == 2 * sum(calls) <= n
    assert all(c % 2 == 0 for c in calls) and len(calls) <= 2  # refused by their screens: two moves each, a few per call


def test_a_long_range_coupling_is_refused_within_budget():
    n = 64
    a = torch.eye(n, dtype=torch.float64)
    a[torch.arange(32), torch.arange(32) + 32] = 0.5  # y_i depends on x_i and x_{i+32}
    parts, how, calls = _group(a, budget=n)
    assert parts is None and how.stride == 0
    assert how.forwards == 2 * sum(calls) <= n


def test_changes_that_cancel_exactly_inside_the_coded_moves_are_caught_by_the_random_probes(monkeypatch):
    """y_0 = x_0 - x_1 + x_11: the coded moves alone credit y_0 to element 7.

    With 64 elements each one takes part in 5 of 9 moves. Where 0, 1 and 11 move together
    the changes of 0 and 1 cancel exactly, and y_0 changes by +h in exactly the 5 moves of
    element 7's code -- which it does not depend on at all. (Even and odd members, the
    screen: +h and -h + h = 0, so that passes too.)
    """
    n = 64
    a = torch.eye(n, dtype=torch.float64)
    a[0, 1], a[0, 11] = -1.0, 1.0

    monkeypatch.setattr(grouping, "PROBES", 0)
    parts, how, _ = _group(a, budget=1000)
    assert how.stride == 1 and _credits(parts)[0] == [7]  # the hazard the probes exist for

    monkeypatch.setattr(grouping, "PROBES", 2)
    misattributed = 0
    for seed in range(100):
        parts, how, _ = _group(a, budget=1000, seed=seed)
        if how.stride == 1:
            misattributed += 1
        else:
            assert how.stride == 4  # the first stride that puts 0, 1 and 11 in different classes
            _assert_credits_match(a, parts)
    assert misattributed <= 10, misattributed  # ~6% expected for this one contrived output


def test_an_output_that_depends_on_nothing_is_credited_to_nothing():
    n = 40
    a = torch.zeros(n + 5, n, dtype=torch.float64)
    a[:n] = torch.eye(n, dtype=torch.float64)
    parts, how, _ = _group(a)
    assert how.stride == 1
    _assert_credits_match(a, parts)


# ----------------------------------------------------------------------------- through check()


class _Elementwise(torch.autograd.Function):
    """y = x sin(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (torch.sin(x) + x * torch.cos(x))


class _BuggyElementwise(_Elementwise):
    """BUG: 5% too large where x > 1.5."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        d = torch.sin(x) + x * torch.cos(x)
        return g * torch.where(x > 1.5, 1.05 * d, d)


class _Coupled(torch.autograd.Function):
    """y_i = x_i^2 + 0.5 x_{(i + n/2) mod n}: every output depends on two elements n/2 apart."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x + 0.5 * torch.roll(x, -x.shape[-1] // 2, dims=-1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g + 0.5 * torch.roll(g, x.shape[-1] // 2, dims=-1)


class _CoupledForgotten(_Coupled):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g  # BUG: the coupling term's gradient is missing


def _both(fn, x, **options):
    """The report with grouping and without; the verdicts of every tensor must agree.

    Element by element where grouping is off or gives way (sets=off): whether sets take over
    depends on timed estimates, which a loaded machine changes."""
    options.setdefault("sets", "off")
    on = check(fn.apply, [x.clone()], **options)
    off = check(fn.apply, [x.clone()], grouping=False, **options)
    assert off.timing["grouped"] == {}
    for a, b in zip(on.tensors, off.tensors):
        np.testing.assert_array_equal(a.verdicts, b.verdicts)
    assert on.passed == off.passed
    return on, off


def _x(n, seed=0, dtype=torch.float64):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).mul(1.5).to(dtype)


def test_a_correct_elementwise_layer_passes_grouped_in_few_forwards():
    on, off = _both(_Elementwise, _x(4096))
    assert on.passed
    assert on.timing["grouped"] == {"x": 1}
    assert on.timing["forward_calls"] < 100 and off.timing["points_evaluated"] >= 8192
    assert any("x: elements moved in groups" in note for note in on.notes)


def test_an_elementwise_bug_fails_on_exactly_the_wrong_elements_when_grouped():
    x = _x(4096)
    on, _ = _both(_BuggyElementwise, x)
    assert on.timing["grouped"] == {"x": 1}
    t = on.tensors[0]
    assert not on.passed and t.status == "FAIL"
    np.testing.assert_array_equal(t.verdicts == FAIL, (x > 1.5).numpy())


def test_float32_layer_grouped_with_float64_differences():
    on, _ = _both(_BuggyElementwise, _x(1024, dtype=torch.float32), dtype="float32")
    assert on.timing["grouped"] == {"x": 1}
    assert not on.passed


def test_a_long_range_coupling_bug_is_found_with_grouping_on():
    x = _x(256)
    good, _ = _both(_Coupled, x)
    assert good.passed
    bad, _ = _both(_CoupledForgotten, x)
    assert not bad.passed and bad.tensors[0].status == "FAIL"
    # No stride separates i from i + n/2 cheaply: this one is checked element by element.
    assert bad.timing["grouped"] == {}


def test_kinks_are_the_same_grouped_and_one_at_a_time():
    x = _x(512)
    x[::7] = 0.0  # exactly at the kink
    on, _ = _both(ReluFn, x)
    assert on.timing["grouped"] == {"x": 1}
    assert on.tensors[0].counts["KINK"] == len(range(0, 512, 7))
    assert on.passed


def test_steps_that_leave_the_domain_are_inconclusive_grouped_too():
    x = _x(256).abs() + 0.5
    x[::16] = 1e-7  # x - h < 0: sqrt is NaN there
    on, _ = _both(SqrtFn, x)
    assert on.timing["grouped"] == {"v": 1}
    assert on.tensors[0].counts["NOISE"] == 16


def test_a_nondeterministic_forward_is_not_grouped():
    calls = {"n": 0}

    def jitter(x):
        calls["n"] += 1
        return _Elementwise.apply(x) + 1e-12 * calls["n"]  # every output moves at every call

    report = check(jitter, [_x(256)])
    assert report.timing["grouped"] == {}


def test_the_cli_can_turn_grouping_off(tmp_path, run_cli):
    layer = tmp_path / "ew.py"
    layer.write_text("import torch\n\ndef ew(x):\n    return torch.sin(x) * x\n")
    code_on, out_on, _ = run_cli("run", f"{layer}:ew", "--input", "256", "--json", "-")
    code_off, out_off, _ = run_cli("run", f"{layer}:ew", "--input", "256", "--json", "-", "--no-grouping")
    assert code_on == code_off == 0
    assert json.loads(out_on)["timing"]["grouped"] == {"x": 1}
    assert json.loads(out_off)["timing"]["grouped"] == {}
    code, out, _ = run_cli("run", f"{layer}:ew", "--input", "256", "--no-color", "-v", env={"COLUMNS": "250"})
    assert code == 0
    assert "(grouped) in " in out and "perturbed points (grouped)" in out  # the caption wraps at the table's width
    assert "x: elements moved in groups, each output credited to the one element it depends on (verified)" in out


def test_the_corpus_gives_the_same_verdicts_grouped_as_one_at_a_time(monkeypatch):
    """Every corpus layer, grouped wherever its structure allows (however small the tensor)."""
    from corpus import REGISTRY

    monkeypatch.setattr(grouping, "MIN_ELEMENTS", 2)
    monkeypatch.setattr(grouping, "BUDGET_FRACTION", 100.0)
    grouped = 0
    for case in REGISTRY:
        options = dict(dtype=case.dtype, numeric_dtype=case.numeric_dtype, name=case.name, constant=case.constant, sets="off")
        (inputs, keywords), again = case.arguments(), case.arguments()
        on = check(case.make_layer(), inputs, keywords=keywords, **options)
        off = check(case.make_layer(), again[0], keywords=again[1], grouping=False, **options)
        grouped += bool(on.timing["grouped"])
        for a, b in zip(on.tensors, off.tensors):
            np.testing.assert_array_equal(a.verdicts, b.verdicts, err_msg=f"{case.name}: {a.name}")
    assert grouped >= len(REGISTRY) * 3 // 4


class _Stencil(torch.autograd.Function):
    """y = x, except y_0 = x_0 - x_1 + x_11 (the exactly cancelling output of the probe test)."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        y[0] = x[0] - x[1] + x[11]
        return y

    @staticmethod
    def backward(ctx, g):
        grad = g.clone()
        grad[1] = g[1] - g[0]
        grad[11] = g[11] + g[0]
        return grad


def test_a_misattribution_the_probes_miss_cannot_fail_a_correct_layer(monkeypatch):
    """Without probes the coded moves credit y_0 to element 7; re-evaluating flagged elements alone rescues the verdict."""
    monkeypatch.setattr(grouping, "PROBES", 0)
    monkeypatch.setattr(grouping, "BUDGET_FRACTION", 100.0)
    x = torch.arange(64, dtype=torch.float64) / 4 + 1  # dyadic, and a power-of-two step: exact cancellation
    on, off = _both(_Stencil, x, eps=2.0**-10)
    assert on.timing["grouped"] == {"x": 1}  # grouped, wrongly, at stride 1
    assert on.passed and off.passed


def test_kinks_of_an_elementwise_layer_are_not_moved_jointly_again():
    """Grouped at stride 1, no two elements share an output: the joint-kink pass has nothing to find."""
    x = _x(4096)
    x[::41] = 0.0  # 100 elements at the kink
    report = check(ReluFn.apply, [x])
    assert report.passed and report.tensors[0].counts["KINK"] == 100
    assert report.timing["points_evaluated"] < 200  # about 120, not 2 more per kink element (+200)


def test_budget_caps_the_forwards_spent_on_grouping():
    import time as _time

    def slow(x):
        _time.sleep(0.002)
        return _Elementwise.apply(x)

    x = _x(4096)
    free = check(slow, [x], max_elements=64)
    assert free.timing["grouped"] == {"x": 1}
    # 0.05 s at >= 2 ms a forward affords < 26 forwards; grouping 64 elements needs 2 * (2 * 6 + 2) = 28.
    capped = check(slow, [x], max_elements=64, budget=0.05)
    assert capped.timing["grouped"] == {}


def test_ctrl_c_while_grouping_gives_an_interrupted_report():
    from gradcheck_cli.checker import Interrupted

    calls = {"n": 0}

    def interrupted(x):
        calls["n"] += 1
        if calls["n"] == 4:  # two base forwards and one for the backward come first
            signal.raise_signal(signal.SIGINT)  # Ctrl-C
        return _Elementwise.apply(x)

    with pytest.raises(Interrupted) as caught:
        check(interrupted, [_x(1024)])
    assert caught.value.report.interrupted and caught.value.report.tensors == ()
    assert any("interrupted: 0 of 1" in note for note in caught.value.report.notes)


def test_the_seed_gaussian_filter_is_grouped_at_stride_32_and_its_conv_bug_found_on_the_same_elements():
    """The kernel spans 25 samples: strides up to 16 are refused, 32 fits; σ and μ are checked one at a time."""
    from pathlib import Path

    target = f"{Path(__file__).resolve().parents[1] / 'layer_specs' / 'gauss_filter.py'}:GaussFilterConvBug"
    on = check(target, ["1x1000"], kwargs={"sigma": 2.0, "mu": 1.5}, sets="off")
    off = check(target, ["1x1000"], kwargs={"sigma": 2.0, "mu": 1.5}, grouping=False, sets="off")
    assert on.timing["grouped"] == {"x": 32}
    assert {t.name: t.status for t in on.tensors} == {"x": "FAIL", "sigma": "PASS", "mu": "PASS"}
    for a, b in zip(on.tensors, off.tensors):
        np.testing.assert_array_equal(a.verdicts, b.verdicts)
    assert on.timing["points_evaluated"] < off.timing["points_evaluated"] / 2


@pytest.mark.parametrize("layer", ["GaussFilter", "GaussFilterConvBug"])
def test_a_batch_of_signals_is_guessed_across_row_ends_with_the_verdicts_of_one_at_a_time(layer):
    """Four signals of 250 in one input: classes of stride 32 straddle the ends of the rows, where
    the filter's outputs are cut short. Guessed classes must still give exactly the one-at-a-time
    verdicts, for the correct filter and for the convolution bug."""
    from pathlib import Path

    target = f"{Path(__file__).resolve().parents[1] / 'layer_specs' / 'gauss_filter.py'}:{layer}"
    on = check(target, ["4x250"], kwargs={"sigma": 2.0, "mu": 1.5}, sets="off")
    off = check(target, ["4x250"], kwargs={"sigma": 2.0, "mu": 1.5}, grouping=False, sets="off")
    assert on.timing["grouped"] == {"x": 32}
    assert on.passed == off.passed == (layer == "GaussFilter")
    for a, b in zip(on.tensors, off.tensors):
        np.testing.assert_array_equal(a.verdicts, b.verdicts)
    assert on.timing["points_evaluated"] < off.timing["points_evaluated"] / 2


def test_every_grouped_step_draws_its_own_random_probes(monkeypatch):
    """A miss of the probes at step h must not repeat itself at 2h and h/2 (same seed, same moves)."""
    seeds = []
    original = grouping.group

    def recording(evaluate, n, y0, tol, budget, seed, assemble):
        seeds.append(seed)
        return original(evaluate, n, y0, tol, budget, seed, assemble)

    monkeypatch.setattr(grouping, "group", recording)
    report = check(_BuggyElementwise.apply, [_x(4096)])  # about half the elements fail: confirmed in groups
    assert report.timing["grouped"] == {"x": 1} and not report.passed
    assert len(seeds) == 3 and len(set(seeds)) == 3  # h, 2h, h/2


def test_blocks_that_split_a_class_give_the_same_credits(monkeypatch):
    """Small evaluation blocks (two rows of each class at a time) and an odd number of rows per class,
    for the decoded seed classes and the guessed ones alike."""
    n = 200
    a = sum(torch.diag(torch.full((n - abs(k),), 1.0 + k / 8, dtype=torch.float64), k) for k in range(-1, 2))  # width 3
    whole, how_whole, _ = _group(a, budget=10_000)
    monkeypatch.setattr(grouping, "PROBES", 1)
    monkeypatch.setattr(grouping, "BLOCK_BYTES", 16 * 2 * (n + n) * 2)  # two rows of each of 2 classes per evaluation
    split, how_split, calls = _group(a, budget=10_000)
    assert how_whole.stride == how_split.stride == 4
    seed_rows = grouping.code_size(n // 4)[0] + grouping.PROBES  # 8 coded moves + 1 probe = 9
    trial_rows = grouping.trial_size(n // 4)  # 5
    screens = calls[0]
    assert screens == 2 * grouping.SCREENS_PER_CALL  # strides 1 .. 32 screened in one call, two moves each
    assert max(calls[1:]) <= 2 * 2 and sum(calls[1:]) == 2 * seed_rows + 2 * trial_rows  # many small blocks, some odd
    assert len(calls[1:]) >= -(-seed_rows // 2) + -(-trial_rows // 2)
    _assert_credits_match(a, split)
    assert _credited_values(whole) == _credited_values(split)


def test_memory_bounds_split_a_stride_into_small_cohorts(monkeypatch):
    """Many classes times many outputs: classes are checked a few at a time, with the same credits."""
    n = 256
    a = sum(torch.diag(torch.full((n - abs(k),), 1.0 + k / 8, dtype=torch.float64), k) for k in range(-2, 3))  # width 5
    whole, how_whole, _ = _group(a, budget=10_000)
    monkeypatch.setattr(grouping, "BLOCK_BYTES", 48 * n * 2)  # two classes' state at a time
    small, how_small, _ = _group(a, budget=10_000)
    assert how_whole.stride == how_small.stride == 8
    assert [len(m) for m, _, _, _ in whole] == [2, 6]  # the two seed classes decoded, the other six guessed
    sizes = [len(m) for m, _, _, _ in small]
    assert sizes[0] == 2 and max(sizes) <= 2 and sum(sizes) == 8 and len(sizes) > 2
    _assert_credits_match(a, small)


# ----------------------------------------------------------------------------- guessed classes


def _band(n: int, width: int) -> torch.Tensor:
    half = width // 2
    return sum(torch.diag(torch.full((n - abs(k),), 1.0 + k / 8, dtype=torch.float64), k) for k in range(-half, half + 1))


def test_classes_after_the_seeds_are_guessed_and_checked_in_fewer_forwards(monkeypatch):
    """A convolution: every class is class 0 shifted, so classes 2.. are credited from a few trial moves."""
    n = 1024
    a = _band(n, 25)
    parts, how, _ = _group(a, budget=10_000)
    assert how.stride == 32
    assert [len(m) for m, _, _, _ in parts] == [2, 30]
    _assert_credits_match(a, parts)
    k = n // 32
    screens = 2 * 2 * grouping.SCREENS_PER_CALL  # strides 1 .. 32 screened in one call
    assert how.forwards == screens + 2 * 2 * (grouping.code_size(k)[0] + grouping.PROBES) + 30 * 2 * grouping.trial_size(k)
    monkeypatch.setattr(grouping, "SEED_CLASSES", 0)  # every class decoded from its own coded moves
    decoded, how_decoded, _ = _group(a, budget=10_000)
    assert how_decoded.stride == 32 and [len(m) for m, _, _, _ in decoded] == [32]
    _assert_credits_match(a, decoded)
    assert how.forwards < 0.55 * how_decoded.forwards


def test_a_linear_layers_weight_is_guessed_with_no_shift():
    """y = W x for a batch: W[i, j] moves the outputs of row i, whatever j -- every class alike."""
    rows, cols, batch = 8, 16, 3
    x = torch.arange(1, batch * cols + 1, dtype=torch.float64).reshape(batch, cols) / 8
    a = torch.zeros(batch * rows, rows * cols, dtype=torch.float64)  # output (b, i) <- weight (i, j) times x[b, j]
    for b in range(batch):
        for i in range(rows):
            a[b * rows + i, i * cols : (i + 1) * cols] = x[b]
    parts, how, _ = _group(a, budget=10_000)
    assert how.stride == 16
    assert [len(m) for m, _, _, _ in parts] == [2, 14]
    _assert_credits_match(a, parts)


@pytest.mark.parametrize("seed", range(12))
def test_a_class_that_breaks_the_pattern_is_decoded_not_credited_to_the_guess(seed):
    """Output 0 also depends on element 85 (class 5 of stride 8, member 10): the guess for class 5 says
    member 0 (element 5). Its trial must fail at every seed -- element 85's code differs from element
    5's in some move, where output 0 changes although element 5 did not move -- and class 5 is decoded."""
    n = 256
    a = _band(n, 5)
    a[0, 85] = 0.75
    parts, how, _ = _group(a, budget=10_000, seed=seed)
    assert how.stride == 8
    assert sorted(len(m) for m, _, _, _ in parts) == [1, 2, 5]  # seeds, the five guessed, class 5 decoded
    _assert_credits_match(a, parts)


@pytest.mark.parametrize("seed", range(12))
def test_a_coupling_inside_a_guessed_class_is_found_at_every_seed(seed):
    """Output 3 depends on elements 5 and 85, both in class 5 of stride 8 (and 16): the trial fails,
    the decode then refuses the stride, and the first stride that separates them (32) is used."""
    n = 256
    a = _band(n, 5)
    a[3, 85] = 0.75
    parts, how, _ = _group(a, budget=10_000, seed=seed)
    assert how.stride == 32
    _assert_credits_match(a, parts)


def test_a_guess_that_does_not_reproduce_the_second_seed_is_not_tried():
    """Outputs in a scrambled order: class 1 is not class 0 shifted by any number of outputs, so
    nothing is guessed and every class is decoded -- at no cost beyond the decode itself."""
    n = 256
    order = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    a = _band(n, 5)[order]
    parts, how, _ = _group(a, budget=10_000)
    assert how.stride == 8
    assert [len(m) for m, _, _, _ in parts] == [2, 6]
    _assert_credits_match(a, parts)
    k = n // 8
    assert how.forwards == 2 * 2 * grouping.SCREENS_PER_CALL + 8 * 2 * (grouping.code_size(k)[0] + grouping.PROBES)


@pytest.mark.parametrize("k", [1, 2, 13, 14, 40, 41, 1000])
def test_trial_codes_are_nonzero_and_no_two_are_equal_or_opposite(k):
    moves = grouping.trial_size(k)
    codes = grouping._ternary_codes(moves)
    assert codes.shape == (moves, (3**moves - 1) // 2) and codes.shape[1] >= k
    assert moves == 1 or grouping._ternary_codes(moves - 1).shape[1] < k  # the fewest moves
    columns = {tuple(c) for c in codes.T.tolist()}
    assert len(columns) == codes.shape[1] and all(any(c) for c in columns)
    assert not columns & {tuple(-v for v in c) for c in columns}


@pytest.mark.parametrize("k", [2, 3, 5, 32, 64, 1000])
def test_every_member_gets_its_own_code_of_odd_weight_and_the_code_names_it(k):
    t, w = grouping.code_size(k)
    assert w % 2 == 1 and math.comb(t, w) >= k
    codes = grouping._codes(k, t, w, torch.device("cpu"))
    assert codes.shape == (t, k) and bool((codes.sum(0) == w).all())
    assert len({tuple(col) for col in codes.T.tolist()}) == k  # all distinct
    ranks = [sum(math.comb(j, i + 1) for i, j in enumerate(torch.nonzero(codes[:, q]).reshape(-1).tolist())) for q in range(k)]
    assert ranks == list(range(k))  # what _Owners decodes


def test_two_elements_whose_changes_cancel_exactly_are_refused_without_any_probe(monkeypatch):
    """y_0 = x_a - x_b, exactly: where both move, y_0 stays; where one moves, it moves by +h or by -h.

    Such an output changes in an even number of coded moves (never the odd weight) and by
    values of both signs (never one element's single value): refused either way.
    """
    monkeypatch.setattr(grouping, "PROBES", 0)
    n = 64
    for a_, b_ in [(0, 2), (4, 10), (1, 63), (20, 22), (7, 9), (30, 62)]:  # same parity: the screen cannot see them
        a = torch.eye(n, dtype=torch.float64)
        a[0, 0] = 0.0
        a[0, a_], a[0, b_] = 1.0, -1.0
        parts, how, _ = _group(a, budget=10_000)
        assert how.stride != 1, (a_, b_)
        if parts is not None:
            _assert_credits_match(a, parts)


@pytest.mark.parametrize("seed", range(40))
def test_random_banded_layers_with_stray_couplings_are_credited_exactly(seed):
    """Property check over random layers: bands of random width, a few stray dependencies of
    random signs and sizes (some equal or opposite to the band's), outputs sometimes shuffled.
    Whatever stride is chosen -- or none -- every credit is exactly a real dependency."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(64, 400, (1,), generator=g))
    a = _band(n, 2 * int(torch.randint(0, 6, (1,), generator=g)) + 1)
    for _ in range(int(torch.randint(0, 4, (1,), generator=g))):
        i, j = (int(v) for v in torch.randint(0, n, (2,), generator=g))
        a[i, j] = float(torch.randint(1, 8, (1,), generator=g)) / 4 * (1 if float(torch.rand(1, generator=g)) < 0.5 else -1)
    if float(torch.rand(1, generator=g)) < 0.2:
        a = a[torch.randperm(n, generator=g)]
    parts, how, _ = _group(a, budget=10**6, seed=seed)
    if parts is not None:
        _assert_credits_match(a, parts)

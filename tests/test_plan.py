"""plan.py: how each tensor is checked (grouped, by sets, one element at a time), the estimate, and progress.

No test here times anything it asserts on except by wide margins on sleeping layers:
costs are measured in benchmarks/, not in unit tests.
"""

from __future__ import annotations

import io
import time

import torch
from test_sets import _x, dense

from gradcheck_cli import check, checker, plan
from gradcheck_cli.environment import Placement
from gradcheck_cli.options import CheckOptions
from gradcheck_cli.subject import prepare


class _Elementwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)


def _by_sets(report) -> set[str]:
    return set(report.timing["sets"])


def test_auto_uses_sets_only_where_one_element_at_a_time_would_take_long(monkeypatch):
    x = _x(32, 32)
    # The threshold is on the timed estimate (~2000 cheap forwards here: below it on an idle machine,
    # not always on a loaded one); both sides of it are pinned.
    monkeypatch.setattr(plan, "SETS_AFTER_S", 1e9)
    assert _by_sets(check(dense(), [x])) == set()
    monkeypatch.setattr(plan, "SETS_AFTER_S", 0.0)
    assert _by_sets(check(dense(), [x])) == {"x"}
    assert _by_sets(check(dense(), [x], sets="off")) == set()
    # a sample was asked for: sets cover whole tensors only
    assert _by_sets(check(dense(), [x], max_elements=100)) == set()
    # grouping fits first (each output depends on one element): no sets
    grouped = check(_Elementwise.apply, [_x(4096)])
    assert grouped.timing["grouped"] == {"x": 1} and _by_sets(grouped) == set()


def test_sets_on_checks_every_tensor_that_is_not_grouped():
    report = check(dense(), [_x(8, 8)], sets="on")
    assert _by_sets(report) == {"x"} and report.tensors[0].sets["cleared"] == 64


def test_a_long_element_by_element_check_goes_to_sets_and_its_estimate_counts_them():
    """A forward of 5 ms that vmap cannot batch: 400 elements alone would take 4 s; sets take ~64 forwards."""

    def slow(x):
        time.sleep(0.005)
        if not bool(torch.isfinite(x).all()):  # not vmappable
            raise ValueError
        return dense().apply(x)

    report = check(slow, [_x(20, 20)])
    assert _by_sets(report) == {"x"}
    assert report.timing["forward_calls"] < 200
    assert report.timing["estimate_s"] < 2.0  # not the 4 s of checking element by element


def _numeric(layer, x):
    opts = CheckOptions()
    placement = Placement.of("cpu")
    subject = prepare(layer, "layer", [x], opts, placement)
    run = checker._Run(subject, opts, placement, None)
    return run._sides().numeric, subject.leaves[0]


def test_time_per_element_times_the_path_that_runs_not_the_race_against_the_loop():
    """Regression: the timed call was the race's loop leg, so a batched layer was estimated at loop speed."""

    def sleepy(x):
        time.sleep(0.01)  # once per call: a vmapped call of 16 rows sleeps once, the loop 32 times
        return dense().apply(x)

    numeric, leaf = _numeric(sleepy, _x(8, 8))
    per_element = numeric.time_per_element(leaf, list(range(16)))
    assert per_element is not None and per_element < 0.005  # the loop costs 0.02 s an element


def test_a_long_grouping_reports_progress_before_the_plan(monkeypatch):
    monkeypatch.setattr(plan, "PROGRESS_AFTER_S", 0.0)
    calls = []
    check(_Elementwise.apply, [_x(4096)], progress=lambda *a: calls.append(a))
    first_plan = next(i for i, c in enumerate(calls) if c[0] == "" and c[1] == 0 and i > 0 and calls[i - 1][0])
    during = calls[:first_plan]
    assert during[0][0] == "" and any(c[0] == "x" for c in during)  # announced, then the grouping's moves


def test_the_sets_phase_reports_progress_up_to_every_element():
    calls = []
    check(dense(wrong_at=3), [_x(32, 32)], sets="on", progress=lambda *a: calls.append(a))
    done = [c[1] for c in calls if c[0] == "x"]
    assert done == sorted(done) and done[-1] == 1024 and len(done) >= 3


def test_a_revised_estimate_revises_the_bar_and_prints_once():
    from rich.console import Console

    from gradcheck_cli.render import progress_bar

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with progress_bar(console, True) as update:
        update("", 0, 100, 1.0)  # short: nothing shown
        update("", 0, 100, 30.0)  # revised above 2 s: shown now
        update("", 10, 100, 40.0)  # revised again: not printed again
        update("x", 50, 100, 0.0)
    text = out.getvalue()
    assert text.count("estimated") == 1 and "estimated 30s" in text


def test_a_budget_the_element_by_element_check_does_not_fit_is_met_by_sets_not_by_sampling(monkeypatch):
    # The decision, not the timers: element by element 1 ms an element, sets 50 ms in all (a loaded
    # machine made the two timings cross).
    monkeypatch.setattr(plan, "_seconds_per_element", lambda *a, **k: 1e-3)
    monkeypatch.setattr(plan, "sets_seconds", lambda *a, **k: 0.05)
    report = check(dense(), [_x(32, 32)], budget=1e-4)
    t = report.tensors[0]
    assert _by_sets(report) == {"x"} and t.n_checked == t.n_elements and t.coverage is None
    assert not any("sampled" in note for note in report.notes)
    sampled = check(dense(), [_x(32, 32)], budget=1e-4, sets="off")
    assert sampled.tensors[0].n_checked < 1024  # without sets, the budget samples


def test_the_progress_bar_shows_a_tensor_name_literally():
    """Regression: a parameter named '[/oops]' raised rich's MarkupError from the bar (on a terminal),
    and '[red]w' was shown as a red 'w'."""
    from rich.console import Console

    from gradcheck_cli.render import progress_bar

    for name in ("[/oops]", "[red]w"):
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=120)
        with progress_bar(console, True) as update:
            update("", 0, 100, 30.0)
            update(name, 60, 100, 0.0)
            time.sleep(0.3)  # the bar refreshes in its own thread
        assert name in out.getvalue()

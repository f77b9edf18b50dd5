"""The evaluator: batched (vmap) and loop paths agree, and the faster one is kept."""

from __future__ import annotations

import time

import pytest
import torch

from gradcheck_cli.call import Call
from gradcheck_cli.evaluate import RACE_MIN, Evaluator
from gradcheck_cli.layer import make_layer
from gradcheck_cli.subject import Leaf

X0 = Leaf("x", "input", ("args", 0))  # the layer's first input


GEN = torch.Generator().manual_seed(0)
MODULE = torch.nn.Linear(6, 3).double()
X = torch.randn(4, 6, dtype=torch.float64, generator=GEN)


def _evaluator():
    layer = make_layer(MODULE, "Linear")
    return Evaluator(layer, layer.params, Call((X,)), seed=0, device=torch.device("cpu"))


def test_batched_and_loop_paths_give_the_same_outputs():
    batched, loop = _evaluator(), _evaluator()
    loop.batched = False
    idx = list(range(24))
    yb = batched.perturbed(X0, idx, 1e-6)
    yl = loop.perturbed(X0, idx, 1e-6)
    assert batched.batched is True and loop.batched is False
    for a, b in zip(yb, yl):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_the_loop_is_kept_when_vmap_is_slower(monkeypatch):
    ev = _evaluator()
    original = Evaluator._batched

    def slow_batched(self, *args):
        time.sleep(0.05)  # stands in for a layer whose batched kernels are slow (conv1d on the CPU)
        return original(self, *args)

    monkeypatch.setattr(Evaluator, "_batched", slow_batched)
    idx = list(range(RACE_MIN))
    for _ in range(3):
        ev.perturbed(X0, idx, 1e-6)
    assert ev.batched is False
    assert "faster than vmap" in ev.batch_note


def test_vmap_is_kept_when_the_loop_is_slower(monkeypatch):
    ev = _evaluator()
    original = Evaluator._loop

    def slow_loop(self, *args):
        time.sleep(0.05)
        return original(self, *args)

    ev.perturbed(X0, list(range(RACE_MIN)), 1e-6)  # the probe (runs a short loop too)
    monkeypatch.setattr(Evaluator, "_loop", slow_loop)
    for _ in range(3):
        ev.perturbed(X0, list(range(RACE_MIN)), 1e-6)
    assert ev.batched is True


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_the_loop_moves_exactly_one_element_by_exactly_the_step_and_restores_it(dtype):
    """The CPU loop writes through a numpy view (bfloat16: tensor writes); either way x +- h lands exactly."""
    x = torch.linspace(-1, 1, 12, dtype=dtype).reshape(3, 4)
    layer = make_layer(lambda v: v * 1, "identity")
    ev = Evaluator(layer, {}, Call((x,)), seed=0, device=torch.device("cpu"), batch=False)
    idx = [0, 5, 11]
    yp, ym, hp, hm = ev.perturbed(X0, idx, 0.25)
    flat = x.reshape(-1)
    for row, i in enumerate(idx):
        want_p, want_m = flat.clone(), flat.clone()
        want_p[i] += 0.25
        want_m[i] -= 0.25
        assert torch.equal(yp[row], want_p) and torch.equal(ym[row], want_m)
    assert torch.equal(ev.inputs.args[0], x)  # restored


class _ReusedBuffer(torch.autograd.Function):
    """y = x^2, written into the same tensor at every call (some kernels reuse an output buffer)."""

    buffer: torch.Tensor | None = None

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        if _ReusedBuffer.buffer is None or _ReusedBuffer.buffer.shape != x.shape or _ReusedBuffer.buffer.dtype != x.dtype:
            _ReusedBuffer.buffer = torch.empty_like(x)
        return torch.mul(x, x, out=_ReusedBuffer.buffer)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _ReusedBufferWrongAtOne(_ReusedBuffer):
    """The same forward; its backward is wrong at element 1 only."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        grad = 2 * x * g
        grad[1] *= 1.5
        return grad


@pytest.mark.parametrize("grouping", [False, True])
def test_a_layer_that_reuses_its_output_buffer_is_checked_correctly(grouping):
    """Every forward's outputs are copied before the next forward overwrites them."""
    from gradcheck_cli import check

    report = check(_ReusedBuffer.apply, ["64"], batch=False, grouping=grouping)
    assert report.passed, str(report)
    wrong = check(_ReusedBufferWrongAtOne.apply, ["64"], batch=False, grouping=grouping)
    assert wrong.tensors[0].counts["FAIL"] == 1 and wrong.tensors[0].worst_index == (1,)


def test_seeding_for_a_cpu_check_draws_what_torch_manual_seed_draws():
    """seed_rng replaces torch.manual_seed (80 us a call where CUDA is not initialised) on the CPU."""
    from gradcheck_cli.environment import seed_rng

    torch.manual_seed(123)
    want = torch.rand(5)
    torch.manual_seed(0)
    seed_rng(123, torch.device("cpu"))
    assert torch.equal(torch.rand(5), want)


def test_a_short_chunk_is_looped_without_trying_vmap(monkeypatch):
    """A bias or a sigma: two forwards an element are cheaper than two vmap calls."""
    ev = _evaluator()

    def no_vmap(*args):
        raise AssertionError("vmap tried for a chunk of 3")

    monkeypatch.setattr(Evaluator, "_batched", no_vmap)
    yp, ym, _, _ = ev.perturbed(X0, [0, 1, 2], 1e-6)
    assert yp.shape[0] == 3 and ev.batched is None  # undecided: a longer chunk may still batch


def _grouped_block(ev):
    """Ten grouped moves of the input (two elements each), as grouping.py asks for them."""
    leaf = X0
    index = torch.arange(X.numel())
    _, plus, minus, _, _ = ev.steps(leaf, index, 1e-6)
    positions = torch.arange(20).reshape(10, 2)
    signs = torch.ones(10, 2, dtype=torch.int8)
    return ev.groups(leaf, index, plus, minus, [(positions, signs)])


@pytest.mark.parametrize("slow_blocks, batched", [(1, True), (2, False)])
def test_grouped_moves_switch_to_the_loop_only_when_vmap_loses_two_races(monkeypatch, slow_blocks, batched):
    """One slow vmap block (a cold allocator, a busy machine) does not condemn vmap for the whole check."""
    ev = _evaluator()
    original = Evaluator._batched_moves
    calls = []

    def sometimes_slow(self, *args):
        calls.append(1)
        if len(calls) <= slow_blocks:
            time.sleep(0.05)
        return original(self, *args)

    looped = Evaluator._looped_moves

    def slow_loop(self, *args):
        time.sleep(0.01)  # 2.5 ms a move over the race's four: slower than vmap, unless vmap sleeps
        return looped(self, *args)

    monkeypatch.setattr(Evaluator, "_batched_moves", sometimes_slow)
    monkeypatch.setattr(Evaluator, "_looped_moves", slow_loop)
    first = _grouped_block(ev)
    assert ev.group_batched is None  # the loop won once: undecided
    second = _grouped_block(ev)
    assert ev.group_batched is batched
    for a, b in zip(first, second):
        assert torch.equal(a, b)  # either path, the same outputs


@pytest.mark.parametrize("loop_share, batched", [(0.9, True), (0.5, False)])
def test_the_loop_takes_over_single_elements_only_when_clearly_faster(monkeypatch, loop_share, batched):
    """The same rule as for grouped moves: a loop 10% faster than vmap's first (cold) chunk is a
    near-tie and vmap stays; twice as fast, the loop takes over."""
    ev = _evaluator()
    timings = iter([1.0, loop_share])  # the vmap chunk, then the loop chunk
    monkeypatch.setattr(Evaluator, "_seconds", lambda self, started: next(timings))
    idx = list(range(RACE_MIN))
    ev.perturbed(X0, idx, 1e-6)
    ev.perturbed(X0, idx, 1e-6)
    assert ev.batched is batched

"""--input parsing (shapes, scalars, JSON literals) and building input tensors reproducibly."""

from __future__ import annotations

import pytest
import torch

from gradcheck_cli.errors import UsageError
from gradcheck_cli.inputs import MAX_INPUT_BYTES, build_inputs, parse_input
from gradcheck_cli.spec import InputSpec

CPU = torch.device("cpu")


def build(*texts: str, dtype=torch.float64, seed: int = 0) -> list[torch.Tensor]:
    return build_inputs([parse_input(t) for t in texts], dtype, CPU, seed)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("text", "shape"),
    [("1x100", (1, 100)), ("4x3x8", (4, 3, 8)), ("7", (7,)), (" 2x3 ", (2, 3)), ("2X3", (2, 3)), ("scalar", ())],
)
def test_shape_specs(text, shape):
    spec = parse_input(text)
    assert spec.shape == shape and spec.value is None
    (t,) = build_inputs([spec], torch.float64, CPU, 0)
    assert tuple(t.shape) == shape and t.dtype == torch.float64


def test_shape_inputs_are_standard_normal():
    (t,) = build("100x100")
    assert abs(t.mean().item()) < 0.05 and abs(t.std().item() - 1.0) < 0.05


def test_shape_inputs_take_the_check_dtype():
    (t,) = build("3x4", dtype=torch.float32)
    assert t.dtype == torch.float32


# --------------------------------------------------------------------------- literals


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("=4.5", torch.tensor(4.5, dtype=torch.float64)),
        ("=-19.5", torch.tensor(-19.5, dtype=torch.float64)),
        ("=[4.5]", torch.tensor([4.5], dtype=torch.float64)),
        ("=[[1.0,2],[3,4]]", torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)),
        ("=2.5e-1", torch.tensor(0.25, dtype=torch.float64)),
    ],
)
def test_float_literals(text, expected):
    (t,) = build(text)
    assert t.dtype == torch.float64 and torch.equal(t, expected)


@pytest.mark.parametrize("text", ["=0.1", "=[1e-3, 16777217.0]"])
def test_float64_literal_keeps_full_precision(text):
    import json

    (t,) = build(text)
    assert torch.equal(t, torch.tensor(json.loads(text[1:]), dtype=torch.float64))


def test_float_literal_follows_check_dtype():
    (t,) = build("=[0.5, 1.5]", dtype=torch.float32)
    assert t.dtype == torch.float32 and t.tolist() == [0.5, 1.5]


@pytest.mark.parametrize(("text", "values"), [("=3", 3), ("=[0,2,1]", [0, 2, 1]), ("=[[1,2],[3,4]]", [[1, 2], [3, 4]])])
def test_int_literals_become_int64(text, values):
    for dtype in (torch.float64, torch.float32):
        (t,) = build(text, dtype=dtype)
        assert t.dtype == torch.int64 and t.tolist() == values


def test_literals_are_not_random():
    assert torch.equal(build("=[1.5, 2.5]", seed=0)[0], build("=[1.5, 2.5]", seed=7)[0])


# --------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize("text", ["4x", "x4", "abc", "4*3", "4,3", "2.5x3", "-1x3", "", "1x100y"])
def test_bad_shape_says_how_to_write_it(text):
    with pytest.raises(UsageError) as info:
        parse_input(text)
    err = info.value
    assert err.exit_code == 2
    assert repr(text) in err.message or text in err.message
    # the hint shows both forms
    assert "1x100" in err.hint and "=4.5" in err.hint


@pytest.mark.parametrize("text", ["=[1,", "=4.5.1", "=abc", "=", "=[[1,2],[3]]", '="text"', "=null", "={}"])
def test_bad_literal_says_how_to_write_it(text):
    with pytest.raises(UsageError) as info:
        parse_input(text)
    err = info.value
    assert err.exit_code == 2
    assert "[4.5]" in str(err) or "[[1, 2], [3, 4]]" in str(err)


@pytest.mark.parametrize("text", ["0x3", "3x0", "0", "2x0x2"])
def test_zero_dims_are_refused(text):
    with pytest.raises(UsageError, match="at least 1"):
        parse_input(text)


@pytest.mark.parametrize("text", ["=[]", "=[[]]"])
def test_empty_literal_is_refused(text):
    with pytest.raises(UsageError):
        parse_input(text)


# --------------------------------------------------------------------------- reproducibility and the global RNG


def test_same_seed_same_inputs():
    a = build("3x4", "5", "=[1.5]", seed=3)
    b = build("3x4", "5", "=[1.5]", seed=3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_different_seeds_differ():
    a = build("3x4", seed=0)[0]
    b = build("3x4", seed=1)[0]
    assert not torch.equal(a, b)


def test_inputs_differ_from_each_other():
    a, b = build("3x4", "3x4")
    assert not torch.equal(a, b)


def test_seed_does_not_depend_on_global_rng():
    torch.manual_seed(123)
    a = build("3x4", seed=5)[0]
    torch.manual_seed(456)
    torch.rand(10)
    b = build("3x4", seed=5)[0]
    assert torch.equal(a, b)


def test_building_inputs_leaves_global_rng_alone(rng_snapshot):
    torch.manual_seed(42)
    snap = rng_snapshot()
    build("30x30", "4", "=[1.0]", seed=9)
    snap.assert_unchanged()
    # and the next draw from the user's generator is what it would have been
    expected = torch.Generator().manual_seed(42)
    assert torch.equal(torch.rand(5), torch.rand(5, generator=expected))


# --------------------------------------------------------------------------- memory guard


def test_memory_guard_refuses_huge_shapes_with_gib():
    with pytest.raises(UsageError) as info:
        build("100000x100000")  # 80 GB of float64: must be refused before anything is allocated
    err = info.value
    assert "GiB" in err.message and "100000x100000" in err.message
    assert f"{MAX_INPUT_BYTES / 1024**3:.0f} GiB" in err.message
    assert err.hint


def test_memory_guard_counts_all_inputs_together():
    side = int((MAX_INPUT_BYTES / 8 / 2) ** 0.5) + 100  # each input alone fits, both together do not
    specs = [InputSpec(shape=(side, side)), InputSpec(shape=(side, side))]
    with pytest.raises(UsageError, match="GiB"):
        build_inputs(specs, torch.float64, CPU, 0)

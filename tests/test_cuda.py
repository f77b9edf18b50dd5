"""The check on a CUDA device: same verdicts as on the CPU, user state untouched.

Skipped cleanly where torch has no CUDA device.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gradcheck_cli
from gradcheck_cli.spec import find_specs, load_spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(find_specs(ROOT / "layer_specs")) + sorted(find_specs(ROOT / "layer_specs" / "broken"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_bundled_specs_give_the_same_verdicts_on_cuda_as_on_cpu(path):
    spec = load_spec(path)
    cpu = gradcheck_cli.check_spec(spec, device="cpu")
    gpu = gradcheck_cli.check_spec(spec, device="cuda")
    assert gpu.config["device"].startswith("cuda")
    assert {t.name: t.passed for t in gpu.tensors} == {t.name: t.passed for t in cpu.tensors}


def test_float32_on_cuda_passes_and_leaves_cuda_rng_alone():
    state = torch.cuda.get_rng_state()
    report = gradcheck_cli.check(f"{ROOT}/layer_specs/gauss_filter.py:GaussFilter", ["2x64"], device="cuda", dtype="float32")
    assert report.passed, str(report)
    assert torch.equal(torch.cuda.get_rng_state(), state)


def test_explicit_device_index():
    report = gradcheck_cli.check(f"{ROOT}/layer_specs/linear_sigmoid.py:LinearSigmoid", ["4x5"], device="cuda:0")
    assert report.passed and report.config["device"] == "cuda:0"


def test_device_index_out_of_range_is_a_usage_error():
    with pytest.raises(gradcheck_cli.UsageError, match="does not exist"):
        gradcheck_cli.check(f"{ROOT}/layer_specs/linear_sigmoid.py:LinearSigmoid", ["4x5"], device=f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("target", ["layer_specs/gauss_filter.py:GaussFilter", "layer_specs/gauss_filter.py:GaussFilterConvBug"])
def test_grouped_moves_on_cuda_give_the_cpu_verdicts(target):
    cpu = gradcheck_cli.check(f"{ROOT}/{target}", ["1x1000"], device="cpu")
    gpu = gradcheck_cli.check(f"{ROOT}/{target}", ["1x1000"], device="cuda")
    assert cpu.timing["grouped"] == {"x": 32}
    # A nondeterministic cuDNN algorithm would make grouping refuse (every output moves): allowed.
    assert gpu.timing["grouped"] in ({}, cpu.timing["grouped"])
    for a, b in zip(gpu.tensors, cpu.tensors):
        assert (a.verdicts == b.verdicts).all(), a.name


def test_an_elementwise_layer_is_grouped_on_cuda():
    report = gradcheck_cli.check(f"{ROOT}/benchmarks/layers.py:SiLU", ["1x4096"], device="cuda")
    assert report.passed and report.timing["grouped"] == {"x": 1}
    assert report.timing["points_evaluated"] < 200


def test_a_cpu_check_leaves_every_cuda_rng_state_alone():
    """The check seeds only the generators of its own device (torch.manual_seed would reseed CUDA too)."""
    torch.cuda.init()
    before = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    report = gradcheck_cli.check(f"{ROOT}/layer_specs/gauss_filter.py:GaussFilter", ["2x64"], device="cpu")
    assert report.passed
    assert all(torch.equal(torch.cuda.get_rng_state(i), s) for i, s in enumerate(before))

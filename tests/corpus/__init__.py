"""A corpus of layers with hand-written backwards, each with its expected verdict.

Every :class:`Case` names a layer factory, deterministic inputs (built from a
fixed ``torch.Generator``), whether ``check()`` must pass, and the exact set of
tensor names (``input0``, ``input1``, ..., or parameter names) whose gradient is
wrong.  About half the layers are correct and half carry a realistic backward
bug; some are evaluated exactly at kinks, some in float32.  ``realcode`` holds
layers called as real code calls them: keyword arguments, constant inputs,
Python values and nested lists/tuples among the inputs, names such as ``grid``.

``tests/test_corpus.py`` runs them all.  A case the checker currently gets wrong
keeps its *correct* expectation and carries ``xfail`` (the reason), so the test
turns into an unexpected pass (an error, strict xfail) the day the rule is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Case:
    name: str
    make_layer: Callable[[], Any]  # a Module instance, an autograd.Function subclass or a function
    inputs: list
    expect_pass: bool
    wrong: set = field(default_factory=set)  # tensors whose gradient is wrong: must be reported FAIL
    dtype: str = "float64"
    kinks_expected: bool = False
    numeric_dtype: str | None = None
    notes: str = ""
    # Optional extra expectations.
    inconclusive: set = field(default_factory=set)  # correct tensors FD cannot verify here: status NOISE
    caught_by: tuple | None = None  # exact report.tensors[..].failed_losses for every wrong tensor
    xfail: str | None = None  # reason, when the checker is known to misclassify this case
    # How the layer is called (issue 14): keyword arguments, inputs marked constant (by name),
    # and ``inputs`` may then hold InputSpec(arg=...) values and lists/tuples of tensors.
    keywords: dict = field(default_factory=dict)
    constant: tuple = ()
    by_name: bool = False  # wrong/inconclusive name tensors by the layer's own names (x, coeffs[1][0]), not input0
    says: tuple = ()  # texts the report (str(report)) must contain
    # Ground truth (test_corpus.py): torch.autograd.gradcheck must agree with expect_pass, with these
    # options where its defaults are wider than the planted bug (atol 1e-5 hides a 2x error at 1e-6),
    # unless it cannot judge the case at all (exact kinks): then the reason.
    torch_options: dict = field(default_factory=dict)
    torch_unreliable: str | None = None

    def arguments(self) -> tuple[list, dict]:
        """Fresh copies of the inputs and keywords, as a check is given them (it must not see the originals)."""
        return copied(self.inputs), copied(self.keywords)

    @property
    def kind(self) -> str:
        if self.kinks_expected:
            return "kink"
        if self.dtype != "float64":
            return "float32"
        return "correct" if self.expect_pass else "buggy"


def copied(item: Any) -> Any:
    """Tensors cloned, lists, tuples and dicts rebuilt around them, anything else as it is."""
    if isinstance(item, torch.Tensor):
        return item.clone()
    if isinstance(item, (list, tuple)):
        return type(item)(copied(i) for i in item)
    if isinstance(item, dict):
        return {k: copied(v) for k, v in item.items()}
    return item


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, scale: float = 1.0, mean: float = 0.0) -> torch.Tensor:
    """Deterministic float64 normal tensor (the global RNG is never touched)."""
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64) * scale + mean


def uniform(*shape: int, seed: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(*shape, generator=gen(seed), dtype=torch.float64) * (high - low) + low


def param(*shape: int, seed: int, scale: float = 1.0, mean: float = 0.0) -> torch.nn.Parameter:
    return torch.nn.Parameter(randn(*shape, seed=seed, scale=scale, mean=mean))


def _registry() -> list[Case]:
    from . import conv, elementwise, float32, kinks, linear, realcode, reductions, structure

    cases: list[Case] = []
    for mod in (linear, conv, elementwise, reductions, structure, float32, kinks, realcode):
        cases.extend(mod.CASES)
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    assert not dupes, f"duplicate case names: {dupes}"
    return cases


REGISTRY: list[Case] = _registry()

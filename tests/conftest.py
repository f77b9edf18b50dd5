"""Shared fixtures for the gradcheck test suite.

Test layers live in tests/layers/ (see tests/layers/simple.py): correct
elementwise Functions, the same with planted bugs, a Module whose weight
gradient is wrong, tuple outputs, int64 labels, plain functions, a module
instance, and a Module whose constructor needs an argument.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml  # noqa: F401 -- imported here, before any pytester run: see below
from click.testing import CliRunner

# tests/test_pytest_plugin.py runs pytest inside pytest (pytester), which restores sys.modules
# after each inner run. A module first imported inside one is imported afresh afterwards; for
# PyYAML that pairs a new `yaml` with the old libyaml C extension, which then crashes. So yaml
# is imported once, here, by the outer session.

SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"

# The test layers are tiny: one intra-op thread is much faster than several that
# spin against each other on a small, busy CI machine (30 ms vs 60 us a forward).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_sys_path():
    """Loading a layer file puts its folder on sys.path; keep tests independent of each other."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@pytest.fixture(scope="session")
def simple():
    """The tests/layers/simple.py module, imported the way gradcheck imports layer files."""
    from gradcheck_cli.load import import_file

    return import_file(SIMPLE)


@pytest.fixture
def run_cli():
    """run_cli(*args, env=None) -> (exit_code, stdout, stderr) of ``gradcheck ARGS`` via CliRunner."""
    from gradcheck_cli.cli import main

    def run(*args: str, env: dict | None = None, input: str | None = None):
        runner = CliRunner()  # click >= 8.2 keeps stderr apart from stdout
        result = runner.invoke(main, [str(a) for a in args], env=env, input=input, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            # An exception that escaped the CLI: show it, it is always a bug.
            import traceback

            detail = "".join(traceback.format_exception(*result.exc_info))
            raise AssertionError(f"gradcheck {' '.join(map(str, args))} raised instead of exiting:\n{detail}")
        return result.exit_code, result.stdout, result.stderr

    return run


class RngSnapshot:
    """The state of every global RNG a layer (or the checker) could touch: torch, numpy, random."""

    def __init__(self) -> None:
        np_state = np.random.get_state()
        self.torch = torch.get_rng_state().clone()
        self.numpy = (np_state[0], np_state[1].copy(), *np_state[2:])
        self.random = random.getstate()

    def assert_unchanged(self) -> None:
        now = RngSnapshot()
        assert torch.equal(self.torch, now.torch), "the global torch RNG state changed"
        assert self.numpy[0] == now.numpy[0] and np.array_equal(self.numpy[1], now.numpy[1]), "numpy's global RNG changed"
        assert self.numpy[2:] == now.numpy[2:], "numpy's global RNG changed"
        assert self.random == now.random, "the random module's state changed"


@pytest.fixture
def rng_snapshot():
    """rng_snapshot() takes a snapshot; snapshot.assert_unchanged() compares with now."""
    return RngSnapshot

"""What `gradcheck run TARGET...` means: module targets from the project folder, several targets, globs, folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SWISH = "import torch\n\nclass Swish(torch.nn.Module):\n    def forward(self, x):\n        return x * torch.sigmoid(x)\n"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A user's project folder holding mylayers.py, as the current folder, which is *not* on sys.path
    (as under the `gradcheck` console script, or `python -P`)."""
    (tmp_path / "mylayers_cwd.py").write_text(SWISH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd(), str(tmp_path))])
    return tmp_path


def test_module_target_in_the_current_folder_is_importable_as_with_python_m(project, run_cli) -> None:
    code, out, err = run_cli("run", "mylayers_cwd:Swish", "--input", "3", "--no-isolate", "-q")
    assert code == 0, err
    assert "PASS" in out and "no such module" not in err


def test_module_target_in_the_current_folder_from_python(project) -> None:
    import gradcheck_cli

    before = list(sys.path)
    assert gradcheck_cli.check("mylayers_cwd.Swish", ["3"]).passed
    assert sys.path == before  # put there for the check only

"""What `gradcheck run TARGET...` means: module targets from the project folder, several targets, globs, folders."""

from __future__ import annotations

import json
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


SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"


@pytest.fixture
def specs(tmp_path) -> Path:
    """specs/a.yaml (pass), specs/b.yaml (fail), specs/sub/c.yaml (pass), specs/.hidden/d.yaml (never checked)."""
    root = tmp_path / "specs"
    for folder, name, layer in [("", "a", "Square"), ("", "b", "SquareBug"), ("sub", "c", "Tanh"), (".hidden", "d", "SquareBug")]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{name}.yaml").write_text(f"layer: {SIMPLE}:{layer}\ninputs:\n  - shape: [3]\n")
    return root


def checked(out: str) -> list[str]:
    return [Path(s["spec"]).name for s in json.loads(out)["specs"]]


def test_several_targets_of_every_kind_in_the_order_given(run_cli, specs) -> None:
    code, out, err = run_cli("run", specs / "b.yaml", f"{SIMPLE}:Square", specs / "a.yaml", "--input", "3", "--json", "-")
    assert code == 1, err
    specs_run = json.loads(out)["specs"]
    assert [(Path(s["spec"]).name, s["status"]) for s in specs_run] == [("b.yaml", "FAIL"), ("simple.py:Square", "PASS"), ("a.yaml", "PASS")]


def test_a_folder_is_not_searched_below_unless_recursive(run_cli, specs) -> None:
    code, out, _ = run_cli("run", specs, "--json", "-")
    assert code == 1 and checked(out) == ["a.yaml", "b.yaml"]
    code, out, _ = run_cli("run", specs, "--recursive", "--json", "-")
    assert code == 1 and checked(out) == ["a.yaml", "b.yaml", "c.yaml"]  # hidden folders skipped


def test_a_glob_the_shell_left_alone_is_expanded(run_cli, specs) -> None:
    code, out, _ = run_cli("run", f"{specs}/*.yaml", "--json", "-")
    assert code == 1 and checked(out) == ["a.yaml", "b.yaml"]
    code, out, _ = run_cli("run", f"{specs}/**/c.yaml", "--json", "-")
    assert code == 0 and json.loads(out)["target"] == "simple.py:Tanh"  # one match: one target


def test_a_glob_that_matches_nothing_is_a_usage_error(run_cli, specs) -> None:
    code, _, err = run_cli("run", f"{specs}/*.yml")
    assert code == 2 and "matches no file" in err and "Traceback" not in err


def test_a_spec_named_twice_is_checked_once(run_cli, specs) -> None:
    code, out, _ = run_cli("run", specs, specs / "a.yaml", "--json", "-")
    assert checked(out) == ["a.yaml", "b.yaml"]


def test_several_targets_get_a_summary_with_paths_below_their_common_folder(run_cli, specs) -> None:
    code, out, _ = run_cli("run", specs, "-r", "-q")
    assert code == 1
    assert "sub/c.yaml" in out and "a.yaml" in out and ".hidden" not in out


def test_a_broken_spec_among_several_is_reported_and_the_others_run(run_cli, specs) -> None:
    (specs / "z.yaml").write_text("layer: nowhere.py:X\n")
    code, out, err = run_cli("run", specs / "a.yaml", specs / "z.yaml", "--json", "-")
    assert code == 2 and [s["status"] for s in json.loads(out)["specs"]] == ["PASS", "ERROR"]

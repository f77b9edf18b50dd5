"""Shell completion through click: TARGET completes as a file path, choice options to their choices."""

from __future__ import annotations

import pytest


def complete(run_cli, words: str) -> list[tuple[str, str]]:
    """What bash completion would offer for the last word of ``words`` (click's bash_complete protocol)."""
    parts = words.split(" ")
    env = {"_GRADCHECK_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1)}
    code, out, _ = run_cli(env=env)
    assert code == 0
    return [tuple(line.split(",", 1)) for line in out.splitlines()]


@pytest.mark.parametrize("command", ["run", "sweep", "validate"])
def test_target_completes_as_a_file_path(run_cli, command) -> None:
    assert complete(run_cli, f"gradcheck {command} layer_sp") == [("file", "layer_sp")]


def test_choice_options_complete_to_their_choices(run_cli) -> None:
    assert complete(run_cli, "gradcheck run x --dtype float") == [("plain", c) for c in ("float64", "float32", "float16")]
    assert complete(run_cli, "gradcheck run x --kinks ") == [("plain", "pass"), ("plain", "fail")]


def test_report_paths_complete_as_files(run_cli) -> None:
    assert complete(run_cli, "gradcheck run x --junit-xml rep") == [("file", "rep")]


def test_the_completion_script_for_each_shell(run_cli) -> None:
    for shell in ("bash", "zsh", "fish"):
        code, out, _ = run_cli(env={"_GRADCHECK_COMPLETE": f"{shell}_source"})
        assert code == 0 and "_GRADCHECK_COMPLETE" in out

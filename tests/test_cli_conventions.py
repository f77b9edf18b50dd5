"""CLI conventions: --version, -h with examples, --quiet/--verbose, stdout for the report, stderr for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradcheck_cli import __version__

BORDER = Path(__file__).resolve().parent / "layers" / "border.py"


def test_version(run_cli) -> None:
    code, out, _ = run_cli("--version")
    assert code == 0 and __version__ in out


@pytest.mark.parametrize("command", [[], ["run"], ["sweep"], ["list"]])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_with_examples(run_cli, command: list[str], flag: str) -> None:
    code, out, _ = run_cli(*command, flag)
    assert code == 0 and "Examples:" in out and "gradcheck " in out.split("Examples:")[1]


def test_quiet_and_verbose_exclude_each_other(run_cli) -> None:
    code, out, err = run_cli("run", f"{BORDER}:Smooth", "--input", "4", "-q", "-v")
    assert code == 2 and "exclude each other" in err and out == ""


def test_verbose_adds_counts_and_timing(run_cli) -> None:
    code, out, _ = run_cli("run", f"{BORDER}:ScaledBorderBug", "--input", "3x4", "--verbose")
    assert code == 1
    assert "x: 12 of 12 elements checked: 2 pass, 10 fail, 0 kink, 0 noise" in out
    assert "weight: 1 of 1 elements checked: 1 pass, 0 fail, 0 kink, 0 noise" in out
    assert "timing: " in out and "forward calls" in out
    _, plain, _ = run_cli("run", f"{BORDER}:ScaledBorderBug", "--input", "3x4")
    assert "timing: " not in plain and "elements checked:" not in plain


def test_quiet_prints_only_the_verdict(run_cli) -> None:
    code, out, err = run_cli("run", f"{BORDER}:BorderBug", "--input", "3x4", "-q")
    assert code == 1
    assert out.startswith("FAIL: 1 of 1 tensor(s) do not match: x.") and len(out.strip().splitlines()) == 1
    assert err == ""


def test_report_on_stdout_diagnostics_on_stderr(run_cli, tmp_path: Path) -> None:
    layer = tmp_path / "chatty.py"
    layer.write_text(BORDER.read_text() + "\nprint('hello from the layer file')\n")
    code, out, err = run_cli("run", f"{layer}:BorderBug", "--input", "3x4")
    assert code == 1
    assert "hello from the layer file" in err and "hello" not in out
    assert "│ x " in out and "│ x " not in err
    code, out, err = run_cli("run", f"{tmp_path}/missing.py:X", "--input", "3")
    assert code == 2 and out == "" and "does not exist" in err

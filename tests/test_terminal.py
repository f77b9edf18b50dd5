"""The report at the width it is read at: readable at 80 columns, COLUMNS followed off a terminal, no padding."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONV_BUG = "layer_specs/broken/gauss_filter_conv_bug.yaml"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HEADERS = ("tensor", "max rel err", "verdicts", "result")


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("width", [60, 80, 100, 120])
def test_the_table_fits_the_width_without_cutting_a_cell(run_cli, width) -> None:
    code, out, _ = run_cli("run", CONV_BUG, env={"COLUMNS": str(width)})
    assert code == 1
    lines = out.splitlines()
    assert max(len(line) for line in lines if not line.startswith("    gradcheck run")) <= width  # the rerun line is never cut
    assert "…" not in out  # no "ten…", "-1.…"
    header = next(line for line in lines if line.startswith("tensor") or line.startswith("┃ tensor"))
    assert all(h in header for h in HEADERS), header
    row = next(line for line in lines if line.startswith("x ") and "FAIL" in line)
    assert "1.96" in row and "128 fail" in row  # the failing tensor's error and verdicts survive at any width


def test_at_80_columns_the_left_out_columns_are_named(run_cli) -> None:
    code, out, _ = run_cli("run", CONV_BUG, env={"COLUMNS": "80"})
    said = " ".join(out.split())
    assert code == 1 and "left out at this width: shape, mean rel err, max abs err" in said


def test_wide_enough_the_full_table(run_cli) -> None:
    code, out, _ = run_cli("run", CONV_BUG, env={"COLUMNS": "140"})
    header = next(line for line in out.splitlines() if "tensor" in line)
    assert "mean rel err" in header and "max abs err" in header and "numeric" in header and "left out" not in out


@pytest.mark.parametrize("env", [{}, {"COLUMNS": "90"}], ids=["no COLUMNS", "COLUMNS=90"])
def test_no_line_ends_in_padding(run_cli, env) -> None:
    for args in ([CONV_BUG, "--show-errors"], ["layer_specs/"]):
        _, out, err = run_cli("run", *args, env=env)
        padded = [line for line in (out + err).splitlines() if line != line.rstrip(" ")]
        assert not padded, padded[:3]


def test_off_a_terminal_without_columns_nothing_is_cut(run_cli) -> None:
    """A CI log has no width: every column, no wrapped caption."""
    code, out, _ = run_cli("run", CONV_BUG, env={"COLUMNS": None})
    header = next(line for line in out.splitlines() if "tensor" in line)
    assert "mean rel err" in header and "numeric" in header
    assert any(line.startswith("dtype float64") and "evaluations" in line for line in out.splitlines())


def test_a_real_80_column_terminal(tmp_path) -> None:
    """One real process on a pseudo-terminal 80 columns wide, without COLUMNS: rich reads the terminal's size."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", "run", CONV_BUG], stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 1
    text = ANSI.sub("", b"".join(chunks).decode()).replace("\r", "")
    # On a loaded machine the estimate may pass 2 s: the transient progress bar redraws its line with
    # carriage returns (joined here), which is not the report; the rerun line is never cut.
    lines = [line for line in text.splitlines() if not line.startswith(("    gradcheck run", "checking"))]
    assert max(map(len, lines)) <= 80 and "…" not in text
    assert "x " in text and "128 fail" in text

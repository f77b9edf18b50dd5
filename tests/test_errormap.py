"""Error maps (--show-errors, --plot): where in a tensor the checked elements fail."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli import check
from gradcheck_cli.errormap import LEGEND, PLOT_HINT, error_map, relative_errors
from gradcheck_cli.load import import_file
from gradcheck_cli.verdicts import FAIL, KINK, NOISE, PASS, UNCHECKED

BORDER = Path(__file__).resolve().parent / "layers" / "border.py"
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def layers():
    return import_file(BORDER)


def cells(lines: list[str]) -> list[str]:
    """The cell characters of each grid row (between the '|' frame)."""
    return [line[line.index("|") + 1 : -1] for line in lines if line.endswith("|")]


# --------------------------------------------------------------------------- from a real check


def test_1d_border_bug_marks_only_the_ends(layers) -> None:
    report = check(layers.BorderBug, ["12"])
    lines = error_map(report.tensors[0].verdicts)
    assert cells(lines) == ["X" + "." * 10 + "X"]
    assert lines[-1] == LEGEND
    assert lines[0].split() == ["0", "10"]  # the column ruler


def test_2d_border_bug_marks_only_the_frame(layers) -> None:
    report = check(layers.BorderBug, ["5x7"])
    rows = cells(error_map(report.tensors[0].verdicts))
    assert rows == ["XXXXXXX", "X.....X", "X.....X", "X.....X", "XXXXXXX"]


def test_2d_rows_are_labelled_with_their_index(layers) -> None:
    report = check(layers.BorderBug, ["12x3"])
    labels = [line.split("|")[0].strip() for line in error_map(report.tensors[0].verdicts) if line.endswith("|")]
    assert labels == [str(i) for i in range(12)]


def test_3d_one_grid_per_leading_index(layers) -> None:
    report = check(layers.BorderBug, ["2x4x5"])
    lines = error_map(report.tensors[0].verdicts)
    assert "[0, :, :]:" in lines and "[1, :, :]:" in lines
    rows = cells(lines)
    frame = ["XXXXX", "X...X", "X...X", "XXXXX"]
    assert rows == frame + frame


def test_correct_layer_maps_all_pass(layers) -> None:
    report = check(layers.Smooth, ["3x4"])
    assert set("".join(cells(error_map(report.tensors[0].verdicts)))) == {"."}


# --------------------------------------------------------------------------- binning and layout


def test_binning_keeps_an_isolated_failure_visible_1d() -> None:
    verdicts = np.zeros(1000, dtype=int)
    verdicts[517] = FAIL
    lines = error_map(verdicts)
    (row,) = cells(lines)
    assert len(row) <= 64 and row.count("X") == 1
    assert row.index("X") == 517 // 16
    assert any("each cell = 16 elements" in line for line in lines)


def test_binning_keeps_an_isolated_failure_visible_2d() -> None:
    verdicts = np.zeros((100, 300), dtype=int)
    verdicts[57, 211] = FAIL
    lines = error_map(verdicts, max_cols=64, max_rows=32)
    rows = cells(lines)
    assert len(rows) <= 32 and all(len(r) <= 64 for r in rows)
    hits = [(r, row.index("X")) for r, row in enumerate(rows) if "X" in row]
    assert hits == [(57 // 4, 211 // 5)]
    assert any("each cell = 4x5 elements" in line for line in lines)


def test_a_bin_shows_its_worst_verdict() -> None:
    verdicts = np.full(8, PASS)
    verdicts[1], verdicts[2], verdicts[5], verdicts[6:] = KINK, FAIL, NOISE, UNCHECKED
    assert cells(error_map(verdicts, max_cols=4)) == ["kX? "]  # bins of 2: (P,K) (F,P) (P,N) (U,U)


def test_characters_for_each_verdict() -> None:
    verdicts = np.array([PASS, FAIL, KINK, NOISE, UNCHECKED])
    assert cells(error_map(verdicts)) == [".Xk? "]


def test_many_leading_slices_get_an_overview_and_only_failing_slices() -> None:
    verdicts = np.zeros((4, 16, 5, 5), dtype=int)
    verdicts[1, 3, 0, 0] = verdicts[2, 3, 4, 4] = FAIL
    lines = error_map(verdicts, max_slices=8)
    assert "worst verdict per [i, j, :, :]:" in lines
    overview = cells(lines)[:4]  # 4 rows of 16 leading indices
    assert [row.find("X") for row in overview] == [-1, 3, 3, -1]
    assert "[1, 3, :, :]:" in lines and "[2, 3, :, :]:" in lines and "[0, 0, :, :]:" not in lines
    assert any("2 of 64 slices shown" in line for line in lines)


def test_scalar_tensor() -> None:
    assert cells(error_map(np.array(FAIL))) == ["X"]


def test_relative_errors_follow_the_layout(layers) -> None:
    report = check(layers.BorderBug, ["5x7"])
    t = report.tensors[0]
    rel = relative_errors(t)
    assert rel.shape == (5, 7)
    assert np.all(rel[1:-1, 1:-1] < 1e-6) and np.all(rel[0] > 0.1)
    assert np.isclose(np.nanmax(rel), t.max_rel_error)


# --------------------------------------------------------------------------- CLI


def test_show_errors_prints_the_map_for_failing_tensors_only(run_cli) -> None:
    code, out, _ = run_cli("run", f"{BORDER}:ScaledBorderBug", "--input", "4x6", "--show-errors")
    assert code == 1
    assert "x [4, 6]: where the checked elements fail" in out
    assert "weight [1]" not in out
    assert re.search(r"^\s+0 \|XXXXXX\|$", out, re.M) and re.search(r"^\s+1 \|X\.\.\.\.X\|$", out, re.M)
    assert LEGEND in out


def test_no_map_without_the_flag_or_when_passing(run_cli) -> None:
    _, out, _ = run_cli("run", f"{BORDER}:BorderBug", "--input", "4x6")
    assert LEGEND not in out
    code, out, _ = run_cli("run", f"{BORDER}:Smooth", "--input", "4x6", "--show-errors")
    assert code == 0 and LEGEND not in out


def test_plot_without_matplotlib_is_a_usage_error(run_cli, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails, find_spec says None
    code, out, err = run_cli("run", f"{BORDER}:BorderBug", "--input", "4x6", "--plot", tmp_path / "e.png")
    assert code == 2
    assert PLOT_HINT in err
    assert out == "" and not (tmp_path / "e.png").exists()


def test_plot_folder_must_exist(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("run", f"{BORDER}:BorderBug", "--input", "4x6", "--plot", tmp_path / "nope" / "e.png")
    assert code == 2 and "does not exist" in err


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")
def test_plot_writes_a_png(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "errors.png"
    code, _, _ = run_cli("run", f"{BORDER}:ScaledBorderBug", "--input", "3x4x5", "--plot", path)
    assert code == 1
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")
def test_plot_of_a_passing_check_shows_all_tensors(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    code, _, _ = run_cli("run", f"{BORDER}:Smooth", "--input", "7", "--plot", path)
    assert code == 0 and path.read_bytes()[:8] == PNG_MAGIC

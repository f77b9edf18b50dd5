"""gradcheck sweep: worst relative error against eps, to choose the step size."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from gradcheck_cli import UsageError
from gradcheck_cli.errormap import PLOT_HINT
from gradcheck_cli.load import import_file
from gradcheck_cli.spec import load_spec
from gradcheck_cli.sweep import EPS_RANGES, SweepResult, eps_grid, sweep, sweep_spec

BORDER = Path(__file__).resolve().parent / "layers" / "border.py"
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def layers():
    return import_file(BORDER)


@pytest.fixture(scope="module")
def smooth_sweep(layers) -> SweepResult:
    return sweep(layers.Smooth, ["3x4"])


def test_one_row_per_eps_and_one_column_per_tensor(layers) -> None:
    result = sweep(layers.ScaledBorderBug, ["3x4"], eps_range=(1e-8, 1e-2), points=4)
    assert [p.eps for p in result.points] == [1e-8, 1e-6, 1e-4, 1e-2]
    assert result.tensors == ("x", "weight")
    for p in result.points:
        assert len(p.errors) == 2 and p.worst == max(p.errors)
        assert p.n_failed > 0  # the border bug fails at every step size
    assert dataclasses.is_dataclass(result) and result.__dataclass_params__.frozen


def test_default_grid_float64(smooth_sweep: SweepResult) -> None:
    eps = [p.eps for p in smooth_sweep.points]
    assert len(eps) == 10 and eps[0] == 1e-10 and eps[-1] == 1e-1
    assert all(b > a for a, b in zip(eps, eps[1:]))
    assert smooth_sweep.default_eps == 1e-6 and smooth_sweep.default_source == "default"
    assert smooth_sweep.config["max_elements"] == 256 and "eps" not in smooth_sweep.config


def test_u_shaped_curve_has_its_minimum_inside(smooth_sweep: SweepResult) -> None:
    worst = [p.worst for p in smooth_sweep.points]
    low = worst.index(min(worst))
    assert 0 < low < len(worst) - 1
    assert worst[0] > 100 * worst[low] and worst[-1] > 100 * worst[low]  # rounding on the left, truncation on the right
    assert smooth_sweep.best.eps == smooth_sweep.points[low].eps
    assert 1e-8 <= smooth_sweep.best.eps <= 1e-4


def test_float32_default_range(layers) -> None:
    result = sweep(layers.Smooth, ["4"], dtype="float32", points=5)
    assert (result.points[0].eps, result.points[-1].eps) == EPS_RANGES["float32"] == (1e-6, 1.0)
    assert result.default_eps == 1e-3


def test_numeric_dtype_picks_the_range_of_the_numeric_side(layers) -> None:
    result = sweep(layers.Smooth, ["4"], dtype="float32", numeric_dtype="float64", points=3)
    assert (result.points[0].eps, result.points[-1].eps) == EPS_RANGES["float64"]


def test_max_elements_samples_large_tensors(layers) -> None:
    result = sweep(layers.Smooth, ["40x40"], points=2, max_elements=100)
    assert result.config["max_elements"] == 100


def test_eps_is_not_an_option(layers) -> None:
    with pytest.raises(UsageError, match="--eps-range"):
        sweep(layers.Smooth, ["4"], eps=1e-3)


@pytest.mark.parametrize("low, high, points", [(1e-3, 1e-5, 4), (0.0, 1.0, 4), (1e-5, 1e-3, 1)])
def test_bad_grid(low: float, high: float, points: int) -> None:
    with pytest.raises(UsageError):
        eps_grid(low, high, points)


def test_spec_eps_is_the_reference_point(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"layer: {BORDER}:Smooth\ninputs:\n  - shape: [5]\neps: 1.0e-5\nmax_elements: 3\n")
    result = sweep_spec(load_spec(spec), points=3, eps_range=(1e-7, 1e-3))
    assert result.default_eps == 1e-5 and result.default_source == "spec"
    assert result.config["max_elements"] == 3  # the spec's value beats the sweep default
    assert sweep_spec(load_spec(spec), points=2, max_elements=2).config["max_elements"] == 2  # and an override beats both


def test_to_dict(smooth_sweep: SweepResult) -> None:
    data = smooth_sweep.to_dict()
    assert len(data["points"]) == 10 and data["best_eps"] == smooth_sweep.best.eps
    assert set(data["points"][0]["errors"]) == {"x"}


# --------------------------------------------------------------------------- CLI


def table_rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def test_cli_table_and_suggestion(run_cli) -> None:
    code, out, err = run_cli("sweep", f"{BORDER}:ScaledBorderBug", "--input", "3x4", "--points", "5", "--eps-range", "1e-9", "1e-1")
    assert code == 1  # the border bug fails at the best step too: no step the sweep can vouch for
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    for col in ("eps", "worst rel err", "x", "weight", "verdicts"):
        assert col in header
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["1e-9", "1e-7", "1e-5", "1e-3", "1e-1"]
    marked = [r for r in rows if "◀ best" in r[-1]]
    assert len(marked) == 1
    best_line = next(line for line in out.splitlines() if line.startswith("best eps ≈ "))
    assert f"best eps ≈ {marked[0][0]} (default 1e-6)" in best_line
    assert "fail" in rows[0][4]  # the border bug shows in the verdicts column
    assert "checking at 5 step sizes" in err and "checking" not in out


def test_cli_default_eps_row_is_marked(run_cli) -> None:
    code, out, _ = run_cli("sweep", f"{BORDER}:Smooth", "--input", "4")
    assert code == 0
    rows = table_rows(out)
    assert len(rows) == 10
    assert any(r[0] == "1e-6" and "default" in r[-1] for r in rows)


def test_cli_quiet_prints_only_the_suggestion(run_cli) -> None:
    code, out, err = run_cli("sweep", f"{BORDER}:Smooth", "--input", "4", "--points", "3", "-q")
    assert code == 0
    assert out.startswith("best eps ≈ ") and len(out.strip().splitlines()) == 1 and err == ""


def test_cli_verbose_reports_each_step_on_stderr(run_cli) -> None:
    code, _, err = run_cli("sweep", f"{BORDER}:Smooth", "--input", "4", "--points", "3", "-v")
    assert code == 0 and err.count("checking at eps") == 3


def test_cli_spec_target(run_cli, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"layer: {BORDER}:Smooth\ninputs:\n  - shape: [5]\neps: 1.0e-5\n")
    code, out, _ = run_cli("sweep", spec, "--points", "3")
    assert code == 0 and "(spec 1e-5)" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--eps", "1e-3"], "No such option"),
        (["--points", "1"], "--points"),
        (["--eps-range", "1e-2", "1e-4"], "LOW < HIGH"),
        (["--quiet", "--verbose"], "exclude each other"),
    ],
)
def test_cli_usage_errors(run_cli, args: list[str], fragment: str) -> None:
    code, _, err = run_cli("sweep", f"{BORDER}:Smooth", "--input", "4", *args)
    assert code == 2 and fragment in err


def test_cli_folder_is_refused(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("sweep", tmp_path)
    assert code == 2 and "not a folder" in err


def test_cli_plot_without_matplotlib(run_cli, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run_cli("sweep", f"{BORDER}:Smooth", "--input", "4", "--plot", tmp_path / "s.png")
    assert code == 2 and PLOT_HINT in err and out == ""


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")
def test_cli_plot_writes_a_png(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "sweep.png"
    code, _, _ = run_cli("sweep", f"{BORDER}:Smooth", "--input", "4", "--points", "4", "--plot", path)
    assert code == 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_help_has_examples(run_cli) -> None:
    code, out, _ = run_cli("sweep", "-h")
    assert code == 0 and "Examples:" in out and "gradcheck sweep layer_specs/gauss_filter.yaml" in out
    assert "--eps-range" in out and "--eps " not in out

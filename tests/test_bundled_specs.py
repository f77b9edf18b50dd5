"""Every bundled spec in layer_specs/ and layer_specs/broken/ keeps its expected verdict.

The expectation table below is the single source of truth: a correct spec must
pass, a buggy one must fail on exactly the tensors its bug touches.  A spec file
without an entry here fails the test, so a new spec cannot rot silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradcheck_cli import check_spec
from gradcheck_cli.spec import find_specs, load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "layer_specs"
BROKEN = SPECS / "broken"

# spec path relative to layer_specs/ (without suffix) -> the tensors that must fail (empty: must pass)
EXPECTED: dict[str, frozenset[str]] = {
    "gauss_filter": frozenset(),
    "large_margin": frozenset(),
    "linear_sigmoid": frozenset(),
    "scaled_matrix": frozenset(),
    "broken/gauss_filter_conv_bug": frozenset({"x"}),
    "broken/gauss_filter_mu_bug": frozenset({"mu"}),
    "broken/linear_sigmoid_transposed_bug": frozenset({"weight"}),
    "broken/scaled_matrix_no_sum_bug": frozenset({"x"}),
}


def key_of(path: Path) -> str:
    return path.relative_to(SPECS).with_suffix("").as_posix()


def bundled() -> list[Path]:
    return find_specs(SPECS) + find_specs(BROKEN)


def failing(report) -> set[str]:
    return {t.name for t in report.tensors if not t.passed}


def test_every_bundled_spec_has_an_expectation() -> None:
    on_disk = {key_of(p) for p in bundled()}
    # find_specs takes *.yaml and *.yml; also look for anything it might miss (e.g. upper-case suffixes).
    on_disk |= {key_of(p) for folder in (SPECS, BROKEN) for p in folder.iterdir() if p.suffix.lower() in (".yaml", ".yml")}
    assert on_disk - set(EXPECTED) == set(), "bundled spec(s) without an expectation in EXPECTED"
    assert set(EXPECTED) - on_disk == set(), "EXPECTED names spec(s) that no longer exist"


def test_correct_specs_live_apart_from_broken_ones() -> None:
    for key, bad in EXPECTED.items():
        assert key.startswith("broken/") == bool(bad), f"{key}: correct specs go in layer_specs/, buggy ones in layer_specs/broken/"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("path", bundled(), ids=key_of)
def test_bundled_spec_verdict(path: Path, dtype: str) -> None:
    expected = EXPECTED.get(key_of(path))
    assert expected is not None, f"{key_of(path)} has no expectation in EXPECTED"
    spec = load_spec(path)
    report = check_spec(spec, dtype=dtype)
    assert report.config["dtype"] == dtype
    assert report.tensors, "nothing was checked"
    assert {t.name for t in report.tensors} >= expected, "an expected failing tensor was not checked at all"
    if expected:
        assert not report.passed, str(report)
        assert failing(report) == set(expected), str(report)
        # A real gradient bug, not finite-difference noise.
        assert all(t.status == "FAIL" for t in report.tensors if t.name in expected), str(report)
    else:
        assert report.passed, str(report)
        assert failing(report) == set(), str(report)


def test_cli_runs_the_correct_folder_green(run_cli, tmp_path: Path) -> None:
    out_json = tmp_path / "good.json"
    code, out, err = run_cli("run", SPECS, "--json", out_json, "-q")
    assert code == 0, out + err
    data = json.loads(out_json.read_text())
    assert data["passed"] is True
    assert [Path(s["spec"]).name for s in data["specs"]] == [p.name for p in find_specs(SPECS)]
    assert all(s["passed"] for s in data["specs"])


def test_cli_runs_the_broken_folder_red_on_exactly_the_buggy_tensors(run_cli, tmp_path: Path) -> None:
    out_json = tmp_path / "broken.json"
    code, out, err = run_cli("run", BROKEN, "--json", out_json, "-q")
    assert code == 1, out + err
    data = json.loads(out_json.read_text())
    assert data["passed"] is False
    assert [Path(s["spec"]).name for s in data["specs"]] == [p.name for p in find_specs(BROKEN)]
    for entry in data["specs"]:
        key = key_of(Path(entry["spec"]).resolve())
        assert entry["passed"] is False, key
        assert entry.get("error") is None, f"{key}: {entry.get('error')}"
        assert {t["name"] for t in entry["tensors"] if not t["passed"]} == set(EXPECTED[key]), key

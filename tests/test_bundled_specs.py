"""Every bundled spec in layer_specs/, layer_specs/broken/ and layer_specs/examples/ keeps its expected verdict.

The expectation table below is the single source of truth: a correct spec must
pass, a buggy one must fail on exactly the tensors its bug touches.  A spec file
without an entry here fails the test, so a new spec cannot rot silently.

layer_specs/ holds correct specs only, so that `gradcheck run layer_specs/` passes;
broken/ holds bugs only; examples/ holds the README's examples, which fail where the
README shows them failing (pool.yaml's odd-tail bug, in the combinations of odd length).
A spec with a matrix has one expectation per combination (its name as the CLI prints it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradcheck_cli import check_spec
from gradcheck_cli.matrix import combinations
from gradcheck_cli.spec import find_specs, load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "layer_specs"
BROKEN = SPECS / "broken"
EXAMPLES = SPECS / "examples"
FOLDERS = (SPECS, BROKEN, EXAMPLES)

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
    "examples/blur": frozenset(),
    "examples/merge": frozenset(),
    "examples/resample": frozenset(),
    "examples/scaled_swish": frozenset(),
    "examples/swish": frozenset(),
    **{
        f"examples/pool[seed={seed},dtype={dtype},inputs={inputs}]": frozenset({"x"}) if inputs == 0 else frozenset()
        for seed in (0, 1)
        for dtype in ("float64", "float32")
        for inputs in (0, 1)
    },
}


def key_of(path: Path) -> str:
    return path.relative_to(SPECS).with_suffix("").as_posix()


def bundled() -> list[Path]:
    return [p for folder in FOLDERS for p in find_specs(folder)]


def checks() -> list[tuple[str, object]]:
    """(expectation key, spec) of every check of every bundled spec: one per combination of a matrix."""
    found = []
    for path in bundled():
        for spec in combinations(load_spec(path)):
            found.append((key_of(path) + (f"[{spec.variant_name}]" if spec.variant_name else ""), spec))
    return found


def failing(report) -> set[str]:
    return {t.name for t in report.tensors if not t.passed}


def test_every_bundled_spec_has_an_expectation() -> None:
    on_disk = {key for key, _ in checks()}
    # find_specs takes *.yaml and *.yml; also look for anything it might miss (e.g. upper-case suffixes).
    missed = {key_of(p) for folder in FOLDERS for p in folder.iterdir() if p.suffix.lower() in (".yaml", ".yml")} - {key_of(p) for p in bundled()}
    assert missed == set(), "spec files find_specs does not take"
    # Nothing below layer_specs/ but these three folders holds specs (each folder's role is documented).
    assert {p.parent for p in SPECS.rglob("*") if p.suffix.lower() in (".yaml", ".yml")} <= set(FOLDERS)
    assert on_disk - set(EXPECTED) == set(), "bundled spec(s) without an expectation in EXPECTED"
    assert set(EXPECTED) - on_disk == set(), "EXPECTED names spec(s) that no longer exist"


def test_correct_specs_live_apart_from_broken_ones() -> None:
    for key, bad in EXPECTED.items():
        if key.startswith("examples/"):
            continue  # the README's examples: they pass or fail as the README shows
        assert key.startswith("broken/") == bool(bad), f"{key}: correct specs go in layer_specs/, buggy ones in layer_specs/broken/"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("key", "spec"), checks(), ids=[key for key, _ in checks()])
def test_bundled_spec_verdict(key: str, spec, dtype: str) -> None:
    expected = EXPECTED.get(key)
    assert expected is not None, f"{key} has no expectation in EXPECTED"
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


def test_cli_runs_the_examples_folder_red_on_the_odd_tail_alone(run_cli, tmp_path: Path) -> None:
    out_json = tmp_path / "examples.json"
    code, out, err = run_cli("run", EXAMPLES, "--json", out_json, "-q")
    assert code == 1, out + err
    failing = {Path(s["spec"]).name for s in json.loads(out_json.read_text())["specs"] if not s["passed"]}  # 'pool.yaml[seed=0,...]'
    assert failing == {f"pool.yaml[{key.split('[')[1]}" for key, bad in EXPECTED.items() if key.startswith("examples/pool") and bad}


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

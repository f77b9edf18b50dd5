"""The pytest plugin: `pytest --gradcheck-specs DIR` turns each YAML spec into a test item.

Runs pytest inside pytest with the ``pytester`` fixture, on the bundled specs
(layer_specs/ all pass, layer_specs/broken/ all fail) and on small specs
written into pytester's temporary folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
GOOD = ROOT / "layer_specs"
BROKEN = GOOD / "broken"
BORDER = Path(__file__).resolve().parent / "layers" / "border.py"
HAS_XDIST = importlib.util.find_spec("xdist") is not None


@pytest.fixture
def run(pytester: pytest.Pytester):
    """run(*args) -> RunResult of an in-process pytest with the cache off (nothing written next to the specs)."""

    def go(*args: str | Path) -> pytest.RunResult:
        return pytester.runpytest("-p", "no:cacheprovider", *map(str, args))

    return go


def test_good_specs_pass(run) -> None:
    result = run("--gradcheck-specs", GOOD)
    result.assert_outcomes(passed=4)


def test_broken_specs_fail_with_the_report(run) -> None:
    result = run("--gradcheck-specs", BROKEN)
    result.assert_outcomes(failed=4)
    out = result.stdout.str()
    # the report as the CLI prints it: the table, the worst element, the rerun line
    assert "gradcheck gauss_filter.py:GaussFilterConvBug" in out and "FAIL: 1 of 3 tensor(s) do not match: x" in out
    assert any(line.startswith("x") and line.rstrip().endswith("FAIL") for line in result.stdout.lines)
    assert "Worst: x[" in out and "analytic" in out
    assert "gradcheck run " in out and "--only x" in out
    assert "gradcheck_cli/" not in out and "Traceback" not in out  # the report, not a traceback into gradcheck
    result.stdout.fnmatch_lines(["FAILED *gauss_filter_mu_bug.yaml::gauss_filter_mu_bug*"])


def test_items_are_named_after_the_spec_file(run) -> None:
    result = run("--gradcheck-specs", GOOD, "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["*gauss_filter.yaml::gauss_filter", "*large_margin.yaml::large_margin", "*linear_sigmoid.yaml::linear_sigmoid", "*scaled_matrix.yaml::scaled_matrix"]
    )


def test_k_selects_specs(run) -> None:
    result = run("--gradcheck-specs", GOOD, "--gradcheck-specs", BROKEN, "-k", "mu_bug or scaled_matrix")
    result.assert_outcomes(passed=1, failed=2, deselected=5)


def test_single_spec_file(run) -> None:
    run("--gradcheck-specs", GOOD / "scaled_matrix.yaml").assert_outcomes(passed=1)


def test_ini_option(pytester: pytest.Pytester, run) -> None:
    pytester.makeini(f"[pytest]\ngradcheck_specs =\n    {GOOD / 'scaled_matrix.yaml'}\n    {BROKEN / 'scaled_matrix_no_sum_bug.yaml'}\n")
    run().assert_outcomes(passed=1, failed=1)
    # the command line replaces the ini option
    run("--gradcheck-specs", GOOD / "linear_sigmoid.yaml").assert_outcomes(passed=1)


def test_ini_paths_are_relative_to_the_ini_file(pytester: pytest.Pytester, run) -> None:
    specs = pytester.mkdir("specs")
    (specs / "ok.yaml").write_text(f"layer: {BORDER}:Smooth\ninputs:\n  - shape: [4]\n")
    pytester.makeini("[pytest]\ngradcheck_specs = specs\n")
    run().assert_outcomes(passed=1)


def test_spec_error_is_reported_without_a_traceback(pytester: pytest.Pytester, run) -> None:
    specs = pytester.mkdir("specs")
    (specs / "typo.yaml").write_text(f"layer: {BORDER}:Smooth\ninptus:\n  - shape: [4]\n")
    (specs / "raises.yaml").write_text(f"layer: {BORDER}:Smooth\ninputs:\n  - shape: [4]\n  - shape: [4]\n")
    result = run("--gradcheck-specs", specs)
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "gradcheck spec typo.yaml: could not run" in out and "did you mean 'inputs'?" in out
    assert "gradcheck spec raises.yaml: could not run" in out and "2 were given" in out
    assert "Traceback" not in out and "gradcheck_cli/" not in out


def test_failing_layer_written_next_to_the_test(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile(layer=BORDER.read_text())
    specs = pytester.mkdir("specs")
    (specs / "edge.yaml").write_text("layer: ../layer.py:BorderBug\ninputs:\n  - shape: [3, 5]\n")
    result = run("--gradcheck-specs", specs)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["collected 1 item", "FAILED specs/edge.yaml::edge*"])
    assert any(line.startswith("x") and "FAIL" in line for line in result.stdout.lines)
    assert "FAIL: 1 of 1 tensor(s) do not match: x" in " ".join(result.stdout.str().split())


def test_missing_path_is_a_usage_error(run, tmp_path: Path) -> None:
    result = run("--gradcheck-specs", tmp_path / "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*gradcheck specs:*nope does not exist*"])


def test_without_the_option_nothing_is_added(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    run().assert_outcomes(passed=1)


def test_help_lists_the_option(run) -> None:
    result = run("--help")
    result.stdout.fnmatch_lines(["*--gradcheck-specs=PATH*", "*gradcheck_specs*"])


def test_registered_through_the_entry_point() -> None:
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "gradcheck"]
    assert ep.value == "gradcheck_cli.pytest_plugin"


@pytest.mark.skipif(not HAS_XDIST, reason="pytest-xdist is not installed")
def test_xdist_spreads_specs_over_workers_and_k_still_selects(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", "--gradcheck-specs", GOOD, "--gradcheck-specs", BROKEN, "-k", "not gauss_filter"
    )
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*created: 2/2 workers*", "*2 workers [[]5 items[]]*"])
    assert "ScaledMatrixNoSumBug: FAIL" in result.stdout.str()


def test_a_dangling_spec_link_fails_as_an_item_not_skipped(pytester):
    """A broken entry of a spec folder is an error, never silently left out (issue 12)."""
    specs = pytester.path / "specs"
    specs.mkdir()
    (specs / "gone.yaml").symlink_to(specs / "missing.yaml")
    result = pytester.runpytest("--gradcheck-specs", str(specs), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*dangling symbolic link*"])

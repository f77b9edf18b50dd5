"""pytest as its users expect: specs collected by pytest_collect_file, node ids that rerun, assert_gradients."""

from __future__ import annotations

from pathlib import Path

import pytest

# Imported here, by the outer session: pytester's inline runs then reuse them instead of importing
# the checker afresh in every run (it restores sys.modules after each).
import gradcheck_cli.assertions  # noqa: F401
import gradcheck_cli.checker  # noqa: F401

pytest_plugins = ["pytester"]

BORDER = Path(__file__).resolve().parent / "layers" / "border.py"
SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """specs/scale.yaml (passes), specs/edge.yaml (fails), specs/sub/deep.yaml (not a direct child), specs/notes.yaml."""
    specs = pytester.mkdir("specs")
    (specs / "sub").mkdir()
    (specs / "scale.yaml").write_text(f"layer: {SIMPLE}:Scale\ninputs:\n  - shape: [3, 4]\n")
    (specs / "edge.yaml").write_text(f"layer: {BORDER}:BorderBug\ninputs:\n  - shape: [3, 5]\n")
    (specs / "sub" / "deep.yaml").write_text(f"layer: {SIMPLE}:SquareBug\ninputs:\n  - shape: [3]\n")
    pytester.makeini("[pytest]\ngradcheck_specs = specs\n")
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_the_node_id_pytest_prints_reruns_that_item(project) -> None:
    result = run(project, "-rA")
    result.assert_outcomes(passed=1, failed=1)  # sub/ is not a direct child: as `gradcheck run specs/`
    result.stdout.fnmatch_lines(["PASSED specs/scale.yaml::scale", "FAILED specs/edge.yaml::edge*"])
    again = run(project, "specs/edge.yaml::edge")
    again.assert_outcomes(failed=1)
    assert "not found" not in again.stdout.str() + again.stderr.str()
    run(project, "specs/scale.yaml::scale", "specs/scale.yaml").assert_outcomes(passed=1)


def test_a_spec_file_given_on_the_command_line_is_collected_without_configuration(pytester) -> None:
    (pytester.path / "one.yaml").write_text(f"layer: {SIMPLE}:Square\ninputs:\n  - shape: [3]\n")
    (pytester.path / "other.yaml").write_text("not: a spec\n")  # never collected: not named, not in a spec folder
    run(pytester, "one.yaml::one").assert_outcomes(passed=1)
    run(pytester).assert_outcomes()


def test_spec_folders_from_tool_gradcheck(pytester) -> None:
    specs = pytester.mkdir("checks")
    (specs / "ok.yaml").write_text(f"layer: {SIMPLE}:Square\ninputs:\n  - shape: [3]\n")
    (pytester.path / "pyproject.toml").write_text('[tool.gradcheck]\nspecs = ["checks"]\nrtol = 1e-4\n')
    run(pytester, "-rA").stdout.fnmatch_lines(["PASSED checks/ok.yaml::ok"])


def test_a_failure_reads_like_the_cli_with_its_rerun_line(project) -> None:
    result = run(project, "specs/edge.yaml")
    out = result.stdout.str()
    assert "gradcheck border.py:BorderBug" in out and "Worst: x[" in out
    assert "rerun only a failing tensor:" in out and "gradcheck run specs/edge.yaml --only x" in out


def test_notes_that_say_nothing_is_wrong_only_with_v(pytester) -> None:
    (pytester.path / "bad.yaml").write_text("layer: ew.py:ew\ninputs:\n  - shape: [256]\n")
    # an elementwise layer (checked in grouped moves, which the note describes) whose backward doubles
    (pytester.path / "ew.py").write_text(
        "import torch\n\nclass Double(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n"
        "        ctx.save_for_backward(x)\n        return torch.sin(x) * x\n\n    @staticmethod\n    def backward(ctx, g):\n"
        "        (x,) = ctx.saved_tensors\n        return 2 * g * (torch.cos(x) * x + torch.sin(x))\n\ndef ew(x):\n    return Double.apply(x)\n"
    )
    quiet = run(pytester, "bad.yaml").stdout.str()
    loud = run(pytester, "bad.yaml", "-v").stdout.str()
    assert "FAIL" in quiet and "moved in groups" not in quiet
    assert "moved in groups" in loud


def test_assert_gradients_in_an_ordinary_test(pytester) -> None:
    pytester.makepyfile(
        f"""
        import torch
        from gradcheck_cli import assert_gradients

        def test_good():
            report = assert_gradients({str(SIMPLE)!r} + ":Square", ["3"])
            assert report.passed

        def test_bad():
            assert_gradients({str(SIMPLE)!r} + ":ScaleWeightBug", ["3x4"], seed=2)

        def test_bad_with_tensors(gradcheck):
            gradcheck({str(SIMPLE)!r} + ":ScaleWeightBug", [torch.ones(3, 4)])
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "AssertionError" in out and "FAIL: 1 of 2 tensor(s) do not match: weight" in " ".join(out.split())
    assert "diagnosis: analytic ≈ 2.00 × numeric" in out
    assert "gradcheck run " in out and ":ScaleWeightBug --only weight --input 3x4" in out and "--seed 2" in out
    assert "only=['weight']" in out  # tensors cannot go on a command line: the keywords to rerun with


def test_assert_gradients_returns_the_report_and_raises_on_a_bug(simple) -> None:
    from gradcheck_cli import assert_gradients

    assert assert_gradients(simple.Square, ["3"]).passed
    with pytest.raises(AssertionError) as info:
        assert_gradients(simple.SquareBug, ["3"])
    text = str(info.value)
    assert "x" in text and "FAIL" in text and "rerun only a failing tensor" in text
    assert "\x1b[" not in text  # plain text, whatever the terminal


def test_assert_gradients_reruns_what_a_command_line_cannot_say_as_keywords(tmp_path) -> None:
    """Regression: a Module instance gave 'gradcheck run file.py:Class ...' (a fresh instance: another layer, or
    exit 2 for a constructor with arguments), and an input with dist/low/high gave a bare '--input 8'."""
    import importlib.util

    from gradcheck_cli import assert_gradients
    from gradcheck_cli.inputs import InputSpec

    spec = importlib.util.spec_from_file_location("simple_layers", SIMPLE)
    simple = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(simple)
    bug = simple.ScaleWeightBug
    with pytest.raises(AssertionError) as instance:
        assert_gradients(bug(), ["3x4"])
    assert "gradcheck run" not in str(instance.value) and "assert_gradients(..., only=['weight']" in str(instance.value)
    with pytest.raises(AssertionError) as ranged:
        assert_gradients(f"{SIMPLE}:ScaleWeightBug", [InputSpec(shape=(3, 4), dist="uniform", low=0.5, high=2.0)])
    assert "gradcheck run" not in str(ranged.value)
    with pytest.raises(AssertionError) as plain:
        assert_gradients(f"{SIMPLE}:ScaleWeightBug", ["3x4"])
    assert "gradcheck run" in str(plain.value) and "--input 3x4" in str(plain.value)

"""--format github: GitHub Actions annotations on the line of the layer's backward, as ruff's github format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gradcheck_cli.github import command, escape_data, escape_property

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"
COMMAND = re.compile(r"^::(error|warning|notice)(?: ([^:]*))?::(.*)$")


def annotations_in(text: str) -> list[dict[str, str]]:
    """Each workflow command in ``text``: {'kind', 'message', and its properties, unescaped}."""
    found = []
    for line in text.splitlines():
        match = COMMAND.match(line)
        if match:
            props = dict(p.split("=", 1) for p in match.group(2).split(",")) if match.group(2) else {}
            def unescape(v):
                return v.replace("%2C", ",").replace("%3A", ":").replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%")
            found.append({"kind": match.group(1), "message": unescape(match.group(3)), **{k: unescape(v) for k, v in props.items()}})
    return found


def on_backward_of(path: Path, line: int) -> str:
    """The class whose ``def backward`` is on ``line`` of ``path`` (fails if that line is not one)."""
    lines = path.read_text().splitlines()
    assert lines[line - 1].strip().startswith("def backward"), lines[line - 1]
    return re.findall(r"^class (\w+)", "\n".join(lines[:line]), re.MULTILINE)[-1]


def test_escaping_follows_the_runner() -> None:
    assert escape_data("50% of\r\nrows") == "50%25 of%0D%0Arows"
    assert escape_property("a,b: c") == "a%2Cb%3A c"
    assert command("error", "x: y, z", file="f,1.py", line=3, title=None) == "::error file=f%2C1.py,line=3::x: y, z"


def test_a_failing_spec_points_at_the_backward_of_the_buggy_function(run_cli, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run_cli("run", "layer_specs/broken/gauss_filter_mu_bug.yaml", "--format", "github", "-q")
    assert code == 1
    (note,) = annotations_in(out)
    source = ROOT / "layer_specs" / "gauss_filter.py"
    # GaussFilterMuBug uses GaussianConvFunctionMuBug: the annotation sits on that class's backward
    assert note["kind"] == "error" and note["file"] == "layer_specs/gauss_filter.py"
    assert on_backward_of(source, int(note["line"])) == "GaussianConvFunctionMuBug"
    assert "mu" in note["title"] and "does not match" in note["title"]
    assert "diagnosis: analytic matches the numeric gradient of sigma" in note["message"]
    assert "rerun: gradcheck run layer_specs/broken/gauss_filter_mu_bug.yaml --only mu" in note["message"]


def test_one_annotation_per_failing_tensor_and_none_for_passing_ones(run_cli) -> None:
    code, out, _ = run_cli("run", f"{SIMPLE}:ManyScalesWeightBug", "--input", "2x3", "--format", "github")
    notes = annotations_in(out)
    report_failing = [line for line in out.splitlines() if line.startswith(("│", "|")) and "FAIL" in line]
    assert code == 1 and len(notes) == len(report_failing) >= 1
    code, out, _ = run_cli("run", f"{SIMPLE}:Square", "--input", "3", "--format", "github")
    assert code == 0 and annotations_in(out) == []
    assert "PASS" in out  # the report is still there for people reading the log


def test_automatic_inside_github_actions(run_cli) -> None:
    code, out, _ = run_cli("run", f"{SIMPLE}:SquareBug", "--input", "3", env={"GITHUB_ACTIONS": "true"})
    (note,) = annotations_in(out)
    assert code == 1 and on_backward_of(SIMPLE, int(note["line"])) == "SquareBug"
    code, out, _ = run_cli("run", f"{SIMPLE}:SquareBug", "--input", "3", "--format", "table", env={"GITHUB_ACTIONS": "true"})
    assert code == 1 and annotations_in(out) == []  # an explicit --format wins


def test_annotations_keep_json_on_stdout_pure(run_cli) -> None:
    code, out, err = run_cli("run", f"{SIMPLE}:SquareBug", "--input", "3", "--format", "github", "--json", "-")
    assert code == 1 and json.loads(out)["passed"] is False
    assert len(annotations_in(err)) == 1  # GitHub reads workflow commands from stderr too


def test_a_broken_spec_is_annotated_at_its_key(run_cli, tmp_path) -> None:
    spec = tmp_path / "typo.yaml"
    spec.write_text(f"layer: {SIMPLE}:Square\n\ninptus:\n  - shape: [3]\n")
    code, out, err = run_cli("run", spec, "--format", "github")
    (note,) = annotations_in(out + err)
    assert code == 2 and note["file"].endswith("typo.yaml") and note["line"] == "3"
    assert "could not be checked" in note["title"] and "did you mean 'inputs'" in note["message"]


def test_layer_text_in_an_annotation_cannot_inject_a_command(run_cli, tmp_path) -> None:
    layer = tmp_path / "evil.py"
    layer.write_text(
        "import torch\n\nclass Evil(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n        return x * 2\n\n"
        "    @staticmethod\n    def backward(ctx, g):\n        return g * 3\n"
    )
    code, out, _ = run_cli("run", f"{layer}:Evil", "--input", "3", "--only", "input0", "--format", "github")
    assert code == 1
    commands = [line for line in out.splitlines() if line.startswith("::")]
    assert len(commands) == 1 and "%0A" in commands[0]  # multi-line message kept on one line


@pytest.mark.parametrize("env", [{}, {"GITHUB_ACTIONS": "false"}])
def test_no_annotations_elsewhere(run_cli, env) -> None:
    code, out, err = run_cli("run", f"{SIMPLE}:SquareBug", "--input", "3", env=env)
    assert code == 1 and "::error" not in out + err


def test_a_layer_that_raises_is_annotated_where_it_raised(run_cli) -> None:
    code, out, _ = run_cli("run", f"{SIMPLE}:Raises", "--input", "3", "--format", "github")
    (note,) = annotations_in(out)
    assert code == 1 and Path(note["file"]).resolve() == SIMPLE and "raise" in SIMPLE.read_text().splitlines()[int(note["line"]) - 1]
    assert "the layer's code failed" in note["title"]

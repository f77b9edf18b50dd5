"""Regressions for the review findings (review-b): each asserts what the user sees, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"

LAYER = """\
import torch

class Sq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g

def f(x):
    return Sq.apply(x)
"""


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder: a layer file, two specs in specs/, and the current folder there."""
    (tmp_path / "lay.py").write_text(LAYER)
    (tmp_path / "specs").mkdir()
    for name in ("a", "b"):
        (tmp_path / "specs" / f"{name}.yaml").write_text("layer: ../lay.py:f\ninputs:\n  - shape: [3]\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pyproject(folder: Path, body: str) -> None:
    (folder / "pyproject.toml").write_text(f"[tool.gradcheck]\n{body}\n")


# 6. validate: a missing path, layer files and layer targets


def test_validate_a_missing_layer_file_is_exit_2(run_cli, project) -> None:
    code, out, err = run_cli("validate", "does_not_exist.py")
    assert code == 2 and "Layer file 'does_not_exist.py' does not exist" in err
    assert "OK" not in out and "skipped" not in out


def test_validate_does_not_count_layer_files_as_valid_specs(run_cli, project) -> None:
    code, out, _ = run_cli("validate", "specs/a.yaml", "lay.py")
    assert code == 0
    assert "skipped lay.py" in out and "all 1 spec(s) are valid; 1 layer file(s) not validated." in out


def test_validate_with_only_layer_files_validated_nothing(run_cli, project) -> None:
    code, out, err = run_cli("validate", "lay.py")
    assert code == 2 and "OK" not in out
    assert "Nothing validated: 1 layer file(s) and no spec" in err


def test_validate_a_typo_in_the_project_specs_is_exit_2(run_cli, project) -> None:
    pyproject(project, 'specs = ["specs/", "layres.py"]')
    code, out, err = run_cli("validate")
    assert code == 2 and "'layres.py' does not exist" in err and "INVALID" in out


def test_validate_a_layer_target_hint_names_run_not_input(run_cli, project) -> None:
    code, _, err = run_cli("validate", "lay.py:f")
    assert code == 2 and "is a layer, not a spec" in err
    hint = err.split("Hint:", 1)[1]
    assert "gradcheck run lay.py:f --input" in hint  # the hint names the command that takes --input


# 7. list and the pytest plugin take the project's specs as run does: files, globs, layer files


@pytest.mark.parametrize("specs", ['["specs/a.yaml", "lay.py"]', '["specs/*.yaml"]', '["specs/a.yaml", "specs/"]'])
def test_list_takes_spec_files_and_globs_from_the_project(run_cli, project, specs) -> None:
    pyproject(project, f"specs = {specs}")
    assert run_cli("validate")[0] == 0  # validate (and run) accept them ...
    code, out, err = run_cli("list")  # ... and so does list
    assert code == 0, out + err
    assert "a.yaml" in out and "../lay.py:f" in out
    if "lay.py" in specs:
        assert "skipped lay.py" in err


def test_list_of_a_glob_and_a_file_given(run_cli, project) -> None:
    code, out, err = run_cli("list", "specs/*.yaml", "specs/b.yaml")
    assert code == 0, out + err
    assert "specs/a.yaml" in out and "specs/b.yaml" in out


def test_list_of_layer_files_alone_is_exit_2(run_cli, project) -> None:
    code, _, err = run_cli("list", "lay.py")
    assert code == 2 and "No spec to list" in err


def test_pytest_plugin_takes_a_glob_in_the_project_specs(project) -> None:
    import subprocess
    import sys

    pyproject(project, 'specs = ["specs/*.yaml"]')
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    pyproject(project, 'specs = ["nothing/*.yaml"]')
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4 and "matches no file" in done.stderr, done.stdout + done.stderr


# 8. sweep and the project's eps / reference


def test_sweep_ignores_the_project_eps_with_a_note(run_cli, project) -> None:
    pyproject(project, "eps = 1e-5")
    code, out, err = run_cli("sweep", "lay.py:f", "--input", "3", "--points", "3")
    assert code == 0, out + err
    assert "--eps" not in err and "sweep chooses eps itself: eps = 1e-05 of" in err and "is not used" in err
    assert "(default 1e-6)" in out


def test_sweep_of_a_spec_does_not_call_the_project_eps_the_spec_s(run_cli, project) -> None:
    pyproject(project, "eps = 1e-5")
    code, out, err = run_cli("sweep", "specs/a.yaml", "--points", "3")
    assert code == 0, out + err
    assert "(spec 1e-5)" not in out and "(default 1e-6)" in out
    (project / "specs" / "own.yaml").write_text("layer: ../lay.py:f\ninputs: [{shape: [3]}]\neps: 1e-4\n")
    code, out, err = run_cli("sweep", "specs/own.yaml", "--points", "3")
    assert code == 0 and "(spec 1e-4)" in out and "is not used" not in err  # the spec's own eps is its reference point


def test_sweep_ignores_the_project_reference_with_a_note(run_cli, project) -> None:
    (project / "ref.py").write_text("def f(x):\n    return x * x\n")
    pyproject(project, 'reference = "ref.py:f"')
    code, out, err = run_cli("sweep", "lay.py:f", "--input", "3", "--points", "3")
    assert code == 0, out + err
    assert "sweep takes finite differences, not a reference: reference =" in err


# 12. the run's verdict line: checks of a matrix, and an error is not a failed check


def test_verdict_counts_the_checks_of_a_matrix_and_names_the_spec(run_cli, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run_cli("run", "layer_specs/examples/pool.yaml", "-q")
    assert code == 1 and out.splitlines()[-1] == "FAIL: 4 of 8 checks (from 1 spec) did not pass."


def test_verdict_of_a_run_that_only_errored_is_error_not_fail(run_cli, project) -> None:
    (project / "skip.py").write_text(
        "import torch\n\nclass NoInputs(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n        return x * 2\n\n"
        "    @staticmethod\n    def backward(ctx, g):\n        return 2 * g\n"
    )
    code, out, _ = run_cli("run", "skip.py", "nowhere.py:f", "--input", "3")
    assert code == 2
    last = out.splitlines()[-1]
    assert last.startswith("ERROR: ") and "could not be checked" in last and "FAIL" not in last


def test_verdict_of_failures_and_errors_tells_them_apart(run_cli, project) -> None:
    (project / "bad.py").write_text(LAYER.replace("return 2 * x * g", "return 3 * x * g"))
    code, out, _ = run_cli("run", "bad.py:f", "nowhere.py:f", "--input", "3", "-q")
    assert code == 2
    assert out.splitlines()[-1] == "FAIL: 1 of 2 checks did not pass; 1 more could not be checked (see the errors above)."


# 13. sweep's caption states what decides its verdicts (and its exit status)


def test_sweep_caption_states_tolerances_losses_and_kinks(run_cli, project) -> None:
    code, out, _ = run_cli("sweep", "lay.py:f", "--input", "3", "--points", "3", "--rtol", "0.5", "--kinks", "fail")
    assert code == 0
    caption = " ".join(out[out.index("dtype "):out.index("best eps")].split())  # wrapped at the width
    for fact in ("dtype float64", "rtol 0.5", "atol 1e-10", "seed 0", "losses l2+weighted", "kinks fail", "at most 256 elements per tensor"):
        assert fact in caption, caption


# 15. the README, the help and the notes say what the tool does


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_spec_template_lists_every_spec_key() -> None:
    import re

    from gradcheck_cli.options import SPEC_KEYS

    text = _readme()
    start = text.index("Every key, as a template")
    block = text[text.index("```yaml", start) : text.index("```\n", text.index("```yaml", start) + 7)]
    keys = set(re.findall(r"^#? ?([a-z_]+):", block, flags=re.M))
    missing = [k for k in (*SPEC_KEYS, "description", "layer", "args", "kwargs", "inputs", "params", "matrix") if k not in keys]
    assert not missing, f"the README's 'Every key' template lacks {missing}"


def test_readme_lists_every_spec_key_for_tool_gradcheck() -> None:
    from gradcheck_cli.options import SPEC_KEYS

    text = _readme()
    start = text.index("The keys are the spec keys of the option table")
    listing = text[start : text.index("plus `specs`", start)]
    missing = [k for k in SPEC_KEYS if f"`{k}`" not in listing]
    assert not missing, f"the README's [tool.gradcheck] key list lacks {missing}"


def test_readme_names_the_junit_suite_as_the_tool_does(run_cli, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    _, out, _ = run_cli("run", "layer_specs/examples/mylayers.py", "--junit-xml", "-")
    assert 'testsuite name="layer_specs/examples/mylayers.py:Scale"' in out
    assert "JUnit suite (`layer_specs/examples/mylayers.py:Scale`)" in _readme()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_input_metavar_is_honest(run_cli, command) -> None:
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "SHAPE|=JSON" not in out
    assert "--input INPUT" in out and ":VALUE" in out and "NAME=..." in " ".join(out.split())


def test_sets_note_and_coverage_line_count_the_same_unchecked_elements(run_cli, monkeypatch) -> None:
    import re

    monkeypatch.chdir(ROOT)
    code, out, err = run_cli("run", "benchmarks/layers.py:DenseDoubled", "--input", "64x64", "--sets", "on")
    text = " ".join((out + err).split())
    coverage = re.search(r"(\d+) of (\d+) elements not checked", text)
    note = re.search(r"(\d+) of (\d+) element\(s\) left unchecked", text)
    assert coverage and note, text
    assert note.groups() == coverage.groups()

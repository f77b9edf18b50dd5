"""[tool.gradcheck] in pyproject.toml: project defaults for every option, and the spec folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradcheck_cli.config import KEYS, load
from gradcheck_cli.errors import UsageError
from gradcheck_cli.options import SPEC_KEYS

SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project with specs/ok.yaml, worked on from a subfolder (the config is found upwards)."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "ok.yaml").write_text(f"layer: {SIMPLE}:Square\ninputs:\n  - shape: [3]\n")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "deep")
    return tmp_path


def pyproject(project: Path, body: str) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "mine"\n\n[tool.gradcheck]\n' + body)


def config_of(out: str) -> dict:
    return json.loads(out)["config"]


def test_keys_derive_from_the_option_table() -> None:
    assert set(KEYS) == {"specs", *SPEC_KEYS}
    assert {"kinks", "rtol", "dtype", "eps", "atol", "seed", "max_elements"} <= set(KEYS)


def test_defaults_from_the_nearest_pyproject_and_the_command_line_overrides(run_cli, project) -> None:
    pyproject(project, 'kinks = "fail"\nrtol = 1e-4\nseed = 7\n')
    code, out, err = run_cli("run", f"{SIMPLE}:Square", "--input", "3", "--json", "-")
    assert code == 0, err
    assert config_of(out)["kinks"] == "fail" and config_of(out)["rtol"] == 1e-4 and config_of(out)["seed"] == 7
    code, out, _ = run_cli("run", f"{SIMPLE}:Square", "--input", "3", "--json", "-", "--seed", "3", "--kinks", "pass")
    assert config_of(out)["seed"] == 3 and config_of(out)["kinks"] == "pass" and config_of(out)["rtol"] == 1e-4


def test_a_specs_own_key_beats_the_project_default(run_cli, project) -> None:
    pyproject(project, "seed = 7\nrtol = 1e-4\n")
    (project / "specs" / "seeded.yaml").write_text(f"layer: {SIMPLE}:Square\ninputs:\n  - shape: [3]\nseed: 11\n")
    code, out, _ = run_cli("run", project / "specs" / "seeded.yaml", "--json", "-")
    assert code == 0 and config_of(out)["seed"] == 11 and config_of(out)["rtol"] == 1e-4


def test_spec_folders_are_the_targets_when_none_is_given(run_cli, project) -> None:
    pyproject(project, 'specs = ["specs"]\n')
    code, out, err = run_cli("run", "-q")
    assert code == 0, err
    assert "ok.yaml" in out and "PASS" in out


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('kinsk = "fail"\n', ("unknown key 'kinsk'", "did you mean 'kinks'?")),
        ('rtol = "lots"\n', ("rtol", "must be a finite number")),
        ('dtype = "float31"\n', ("dtype", "float64")),
        ("specs = 3\n", ("specs", "a path or a list of paths")),
        ("kinks = \n", ("not valid TOML",)),
    ],
)
def test_a_bad_table_is_a_usage_error_naming_the_file(run_cli, project, body, fragments) -> None:
    pyproject(project, body)
    code, out, err = run_cli("run", f"{SIMPLE}:Square", "--input", "3", "--json", "-")
    assert code == 2 and "Traceback" not in err
    assert "pyproject.toml" in err
    for fragment in fragments:
        assert fragment in err, err
    assert json.loads(out)["exit_code"] == 2  # the report of this run says so too


def test_a_pyproject_without_the_table_is_passed_over(project, tmp_path) -> None:
    pyproject(project, 'kinks = "fail"\n')
    (project / "src" / "pyproject.toml").write_text('[project]\nname = "inner"\n')  # nearer, but no [tool.gradcheck]
    assert load().options == {"kinks": "fail"}


def test_no_pyproject_no_defaults(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load().options == {} and load().specs == ()


def test_a_bad_table_is_refused_from_python_too(project) -> None:
    pyproject(project, "eps = -1\n")
    with pytest.raises(UsageError, match="eps: must be greater than 0"):
        load()

"""Specs checked without running them: `gradcheck validate`, `gradcheck list`, the JSON Schema, the pre-commit hooks."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from gradcheck_cli.schema import FILE, schema_text, spec_schema

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"


@pytest.fixture
def specs(tmp_path) -> Path:
    (tmp_path / "boom.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "a_ok.yaml").write_text(f"layer: {SIMPLE}:Square\ninputs:\n  - shape: [3]\neps: 1e-6\n")
    (tmp_path / "b_typo.yaml").write_text(f"layer: {SIMPLE}:Square\ninptus:\n  - shape: [3]\n")
    (tmp_path / "c_missing.yaml").write_text("layer: nowhere.py:X\n")
    (tmp_path / "d_never_run.yaml").write_text("layer: boom.py:X\ninputs: [{shape: [3]}]\n")
    return tmp_path


def test_validate_lists_every_problem_and_exits_2(run_cli, specs) -> None:
    code, out, err = run_cli("validate", specs)
    assert code == 2 and "Traceback" not in err
    assert "b_typo.yaml: inptus: unknown key 'inptus'" in err and "did you mean 'inputs'?" in err
    assert "c_missing.yaml: layer: layer file" in err and "does not exist" in err
    assert "2 of 4 spec(s) have problems" in out
    assert "imported!" not in out + err  # nothing is run: the layer is never imported
    assert "ok " in out and "a_ok.yaml" in out and "d_never_run.yaml" in out


def test_validate_passes_valid_specs(run_cli, specs) -> None:
    code, out, _ = run_cli("validate", specs / "a_ok.yaml", specs / "d_never_run.yaml")
    assert code == 0 and "all 2 spec(s) are valid" in out


def test_validate_the_bundled_specs_recursively(run_cli, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run_cli("validate", "layer_specs", "--recursive", "-q")
    bundled = len(list((ROOT / "layer_specs").rglob("*.yaml")))  # layer_specs/, broken/ and examples/
    assert bundled >= 14
    assert code == 0 and f"all {bundled} spec(s) are valid" in out


def test_validate_with_nothing_to_validate_is_exit_2(run_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("validate")
    assert code == 2 and "No SPEC given" in err
    code, _, err = run_cli("validate", tmp_path / "*.yaml")
    assert code == 2 and "matches no file" in err


def test_validate_annotates_for_github(run_cli, specs) -> None:
    code, _, err = run_cli("validate", specs / "b_typo.yaml", "--format", "github")
    (line,) = [x for x in err.splitlines() if x.startswith("::error ")]
    assert code == 2 and "b_typo.yaml,line=2," in line


def test_list_exits_2_for_an_invalid_spec_and_keeps_the_hint(run_cli, specs) -> None:
    code, out, err = run_cli("list", specs)
    assert code == 2
    assert "invalid" in out and "a_ok.yaml" in out
    assert "did you mean 'inputs'?" in err


# --------------------------------------------------------------------------- the JSON Schema


def test_the_published_schema_is_the_one_the_reader_derives() -> None:
    assert FILE.read_text() == schema_text(), "run: python -m gradcheck_cli schema > gradcheck_cli/spec.schema.json"


def test_gradcheck_schema_prints_it(run_cli) -> None:
    code, out, _ = run_cli("schema")
    assert code == 0 and json.loads(out) == spec_schema()


def test_the_schema_accepts_every_bundled_spec_and_refuses_typos() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(spec_schema())
    jsonschema.Draft202012Validator.check_schema(spec_schema())
    for path in sorted((ROOT / "layer_specs").rglob("*.yaml")):
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path.name, errors)
    bad = {"layer": "x.py:X", "inptus": [], "kinks": "maybe", "inputs": [{"shape": [2], "value": 1}], "eps": -1}
    messages = " ".join(e.message for e in validator.iter_errors(bad))
    assert "inptus" in messages
    assert len(list(validator.iter_errors(bad))) == 4


def test_schema_and_reader_agree_on_option_values() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(spec_schema())
    assert validator.is_valid({"layer": "m:X", "dtype": "float32", "seed": 3, "max_elements": 10, "only": ["input0"], "device": "cuda:1"})
    for key, value in [("dtype", "float31"), ("seed", -1), ("max_elements", 0), ("weighted_loss", "yes"), ("device", "CUDA!")]:
        assert not validator.is_valid({"layer": "m:X", key: value}), key


# --------------------------------------------------------------------------- pre-commit


def test_pre_commit_hooks_run_validate_on_spec_files(run_cli, specs) -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"gradcheck-validate", "gradcheck-validate-system"}
    for hook in hooks:
        assert {"id", "name", "entry", "language", "files"} <= set(hook)
        pattern = re.compile(hook["files"])
        assert pattern.search("specs/gauss.yaml") and pattern.search("layer_specs/broken/a.yml")
        assert not pattern.search(".github/workflows/ci.yml") and not pattern.search(".pre-commit-config.yaml")
        program, *args = shlex.split(hook["entry"])
        assert program == "gradcheck"
        # pre-commit appends the changed files' names
        assert run_cli(*args, specs / "a_ok.yaml")[0] == 0
        assert run_cli(*args, specs / "a_ok.yaml", specs / "b_typo.yaml")[0] == 2

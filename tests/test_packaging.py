"""Packaging as users of black and ruff expect: SPDX licence, a typed package, an sdist that can test itself."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tarfile.TarFile:
    """The sdist setuptools builds from a copy of this tree (the build writes egg-info next to the sources)."""
    tree = tmp_path_factory.mktemp("tree") / "src"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", ".pytest_cache", "build", "dist"))
    out = tmp_path_factory.mktemp("dist")
    code = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=tree, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip().splitlines()[-1]
    archive = tarfile.open(out / name)
    yield archive
    archive.close()


def test_sdist_holds_what_its_test_suite_needs(sdist) -> None:
    names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    needed = {
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "gradcheck_cli/py.typed",
        "gradcheck_cli/spec.schema.json",
        ".pre-commit-hooks.yaml",
        "tests/conftest.py",
        "tests/layers/simple.py",
        "tests/layers/robust",
        "tests/corpus/conv.py",
        "layer_specs/gauss_filter.yaml",
        "layer_specs/gauss_filter.py",
        "layer_specs/broken/gauss_filter_conv_bug.yaml",
    }
    missing = {n for n in needed if n not in names and not any(m.startswith(n + "/") for m in names)}
    assert not missing, f"the sdist lacks {sorted(missing)}"
    assert not any("__pycache__" in n for n in names)


def test_sdist_metadata_has_an_spdx_licence_and_urls(sdist) -> None:
    (info,) = [m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")]
    meta = sdist.extractfile(info).read().decode()
    assert "License-Expression: MIT" in meta
    assert "License-File: LICENSE" in meta
    assert "Classifier: Typing :: Typed" in meta
    assert "Project-URL: Issues" in meta


def test_pyproject_uses_no_deprecated_licence_table() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # an SPDX expression, not {text = ...}
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # superseded by the expression


def test_version_names_torch_and_python(run_cli) -> None:
    import torch

    code, out, _ = run_cli("--version")
    assert code == 0
    assert f"torch {torch.__version__}" in out and f"Python {platform.python_version()}" in out

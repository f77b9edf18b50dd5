"""The bundled specs describe their layer, not where it came from (`gradcheck list` shows the description)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradcheck_cli.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "layer_specs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_a_bundled_description_names_the_layer_not_its_source_document(path: Path) -> None:
    description = load_spec(path).description or ""
    assert len(description) > 30
    assert not re.search(r"\bseed \d|\bsection \d", description), description


def test_the_bundled_layer_files_do_not_cite_source_documents() -> None:
    for path in sorted((ROOT / "layer_specs").glob("*.py")):
        assert not re.search(r"\bseed \d{3}|\bsection \d", path.read_text().split('"""')[1]), path.name

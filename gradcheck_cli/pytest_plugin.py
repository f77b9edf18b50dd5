"""pytest plugin: every YAML layer spec becomes a test item.

    pytest --gradcheck-specs layer_specs/          # a folder of specs, or one spec file; repeatable
    [pytest] gradcheck_specs = layer_specs/        # or the ini option (paths relative to the ini file)

Each spec is one item named after its file stem, so ``-k gauss`` selects and
``pytest -n auto`` (pytest-xdist) spreads specs over workers.  A mismatch
fails the item with the plain-text gradcheck report; a spec that cannot run
(bad spec, missing layer, the layer raised) fails with the error message, not
a traceback into gradcheck.

Registered through the ``pytest11`` entry point, so it loads in every pytest
run: importing it stays cheap (torch and the checker are imported when a spec
item runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from .errors import GradcheckError

_SPEC_PATHS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradient checks of YAML layer specs (gradcheck-cli)")
    group.addoption(
        "--gradcheck-specs",
        action="append",
        default=[],
        metavar="PATH",
        help="check every YAML spec in this folder (or this spec file) as a test item; repeatable. Overrides the gradcheck_specs ini option.",
    )
    parser.addini("gradcheck_specs", type="paths", default=[], help="folders or files of gradcheck YAML specs to collect as test items")


def pytest_configure(config: pytest.Config) -> None:
    given = config.getoption("gradcheck_specs")
    paths = [config.invocation_params.dir / p for p in given] if given else list(config.getini("gradcheck_specs"))
    for path in paths:
        if not path.exists():
            raise pytest.UsageError(f"gradcheck specs: {path} does not exist (from --gradcheck-specs or the gradcheck_specs ini option).")
    config.stash[_SPEC_PATHS] = paths


def _spec_files(paths: list[Path]) -> list[Path]:
    """The spec files: each folder's specs as ``gradcheck run FOLDER`` finds them (broken entries
    included: they fail as items), or the path itself; no duplicates."""
    from .spec import find_specs

    files: list[Path] = []
    for path in paths:
        found = find_specs(path) if path.is_dir() else [path]
        files += [f for f in found if os.path.realpath(f) not in {os.path.realpath(g) for g in files}]
    return files


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so those apply to spec items too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for file in _spec_files(config.stash.get(_SPEC_PATHS, [])):
        items.extend(session.genitems(SpecFile.from_parent(session, path=file)))  # reported like any collected file


class SpecFile(pytest.File):
    """One YAML spec file; it holds one item."""

    def collect(self) -> Iterator[SpecItem]:
        yield SpecItem.from_parent(self, name=self.path.stem)


class CheckFailed(Exception):
    """The spec ran and some gradient does not match; ``report`` says which."""

    def __init__(self, report: Any) -> None:
        super().__init__(str(report))
        self.report = report


class SpecItem(pytest.Item):
    """Check one spec, exactly as ``gradcheck run SPEC`` does."""

    def runtest(self) -> None:
        from .checker import check_spec
        from .spec import load_spec

        report = check_spec(load_spec(self.path))
        self.user_properties.append(("gradcheck", "PASS" if report.passed else "FAIL"))
        if report.worst is not None:
            self.user_properties.append(("max_rel_error", f"{report.worst.max_rel_error:.3g}"))
        if not report.passed:
            raise CheckFailed(report)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CheckFailed):
            return str(excinfo.value.report)
        if isinstance(excinfo.value, GradcheckError):
            kind = "could not run" if excinfo.value.exit_code == 2 else "the layer failed"
            return f"gradcheck spec {self.path.name}: {kind}\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"gradcheck spec {self.path.name}"

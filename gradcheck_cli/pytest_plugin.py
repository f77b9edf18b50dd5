"""pytest plugin: every YAML layer spec becomes a test item, collected by pytest's own hooks.

    pytest --gradcheck-specs layer_specs/          # a folder of specs, or one spec file; repeatable
    [pytest] gradcheck_specs = layer_specs/        # or the ini option (paths relative to the ini file)
    [tool.gradcheck] specs = ["layer_specs/"]      # or the project's gradcheck table (pyproject.toml)
    pytest layer_specs/scale.yaml::scale           # rerun one item by the node id pytest printed
    pytest --gradcheck-specs mylayers.py           # every layer a Python file defines (discover.py)

Specs are collected with ``pytest_collect_file`` (pytest's YAML example): a ``.yaml``/``.yml``
file directly in a spec folder, a spec file named in the configuration, or a spec file given
on the command line is a :class:`SpecFile` holding one :class:`SpecItem` named after its stem
(one per combination of its matrix: ``gauss[seed=1,dtype=float32]``), so ``-k gauss`` selects,
``pytest -n auto`` (pytest-xdist) spreads specs over workers, and the node id pytest prints can
be passed back to pytest. A ``.py`` file named in the configuration is a :class:`LayerFile`:
one :class:`LayerItem` per layer it defines (``mylayers.py::Scale``), skipped with the reason
where it cannot be checked. A mismatch fails the item with the report
as the CLI prints it -- table, worst element, diagnosis, rerun line; notes that say nothing is
wrong only with ``-v`` -- and a spec that cannot run fails with its error message, not a
traceback into gradcheck.

:func:`assert_gradients` (also the ``gradcheck`` fixture) does the same for ordinary test
functions: see :mod:`gradcheck_cli.assertions`.

Registered through the ``pytest11`` entry point, so it loads in every pytest run: importing
it stays cheap (torch and the checker are imported when a spec item runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .errors import GradcheckError

_SPEC_PATHS = pytest.StashKey[list]()
SUFFIXES = (".yaml", ".yml")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradient checks of YAML layer specs (gradcheck-cli)")
    group.addoption(
        "--gradcheck-specs",
        action="append",
        default=[],
        metavar="PATH",
        help="check every YAML spec in this folder (or this spec file) as a test item; repeatable. "
        "Overrides the gradcheck_specs ini option and [tool.gradcheck] specs.",
    )
    parser.addini("gradcheck_specs", type="paths", default=[], help="folders or files of gradcheck YAML specs to collect as test items")


def pytest_configure(config: pytest.Config) -> None:
    given = config.getoption("gradcheck_specs")
    if given:
        paths = [config.invocation_params.dir / p for p in given]
    else:
        paths = list(config.getini("gradcheck_specs")) or list(_project(config).specs)
    paths = _expand_globs(paths)
    for path in paths:
        if not path.exists():
            raise pytest.UsageError(f"gradcheck specs: {path} does not exist (from --gradcheck-specs, the gradcheck_specs ini option or [tool.gradcheck]).")
    config.stash[_SPEC_PATHS] = [Path(os.path.realpath(p)) for p in paths]
    # Where pytest chose what to collect (no paths given), or --gradcheck-specs asked for them, the
    # spec paths are collected too; `pytest specs/a.yaml::a` collects just that item.
    if paths and (given or config.args_source != pytest.Config.ArgsSource.ARGS):
        config.args.extend(str(p) for p in paths if not _covered(p, config))


def _expand_globs(paths: list[Path]) -> list[Path]:
    """Globs (``specs/*.yaml``) expanded as ``gradcheck run`` expands them (targets.py); other paths as they are."""
    from .targets import GLOB, expand_globs

    if not any(GLOB.search(str(p)) for p in paths):
        return paths  # nothing to expand: the plugin stays cheap to load
    try:
        return [Path(p) for p in expand_globs([str(p) for p in paths])]
    except GradcheckError as exc:
        raise pytest.UsageError(f"gradcheck specs: {exc.message} (from --gradcheck-specs, the gradcheck_specs ini option or [tool.gradcheck]).") from None


def _project(config: pytest.Config) -> Any:
    from .config import load

    try:
        return load(start=config.invocation_params.dir)
    except GradcheckError as exc:
        raise pytest.UsageError(f"gradcheck: {exc}") from None


def _covered(path: Path, config: pytest.Config) -> bool:
    """Is ``path`` already inside a path pytest collects?"""
    for arg in config.args:
        base = Path(os.path.realpath(config.invocation_params.dir / arg.split("::")[0]))
        if Path(os.path.realpath(path)).is_relative_to(base):
            return True
    return False


def _is_spec(file_path: Path, config: pytest.Config, explicit: bool) -> bool:
    """A spec file of this run: directly in a spec folder, named as a spec path, or given on the command line."""
    if file_path.suffix.lower() not in SUFFIXES or file_path.name.startswith("."):
        return False
    real = Path(os.path.realpath(file_path))
    for path in config.stash.get(_SPEC_PATHS, []):
        if real == path or (path.is_dir() and Path(os.path.realpath(file_path.parent)) == path):
            return True
    return explicit


def _is_layer_file(file_path: Path, config: pytest.Config) -> bool:
    """A Python file named as such in the configuration: every layer it defines is checked."""
    real = Path(os.path.realpath(file_path))
    return file_path.suffix == ".py" and any(real == path for path in config.stash.get(_SPEC_PATHS, []))


@pytest.hookimpl(hookwrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Iterator[None]:
    """A spec file is a SpecFile; a layer file named in the configuration is a LayerFile *instead of* the
    test module pytest would make of it (which would import it a second time, outside gradcheck's guards)."""
    outcome = yield
    if _is_spec(file_path, parent.config, parent.session.isinitpath(file_path)):
        outcome.force_result([*outcome.get_result(), SpecFile.from_parent(parent, path=file_path)])
    elif _is_layer_file(file_path, parent.config):
        others = [c for c in outcome.get_result() if not isinstance(c, pytest.Module)]
        outcome.force_result([*others, LayerFile.from_parent(parent, path=file_path)])


if hasattr(pytest, "Dir"):  # pytest >= 8: a spec folder's entries that are not files (a dangling link) still fail as items

    class SpecFolder(pytest.Dir):
        """A spec folder: what pytest collects there, plus the specs ``gradcheck run FOLDER`` would check that are not files."""

        def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
            from .spec import find_specs

            yield from super().collect()
            for path in find_specs(self.path):
                if not path.is_file():
                    yield SpecFile.from_parent(self, path=path)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if Path(os.path.realpath(path)) in parent.config.stash.get(_SPEC_PATHS, []):
            return SpecFolder.from_parent(parent, path=path)
        return None


class SpecFile(pytest.File):
    """One YAML spec file; it holds one item, or one per combination of its matrix."""

    def collect(self) -> Iterator[SpecItem]:
        from .matrix import combinations
        from .spec import load_spec

        try:
            specs = combinations(load_spec(self.path))
        except GradcheckError:
            specs = [None]  # the item fails with the error when it runs
        for spec in specs:
            variant = spec.variant_name if spec is not None else ""
            yield SpecItem.from_parent(self, name=f"{self.path.stem}[{variant}]" if variant else self.path.stem, spec=spec)


class CheckFailed(Exception):
    """The spec ran and some gradient does not match; ``text`` is the report as the CLI prints it."""

    def __init__(self, report: Any, text: str) -> None:
        super().__init__(text)
        self.report = report
        self.text = text


class _CheckItem(pytest.Item):
    """What a spec's and a layer's items share: how a report passes or fails the item."""

    what = "spec"

    def verdict(self, report: Any, target: str, given: list[str] = ()) -> None:
        from .assertions import failure_text
        from .render import repro_commands

        self.user_properties.append(("gradcheck", "PASS" if report.passed else "FAIL"))
        if report.worst is not None:
            self.user_properties.append(("max_rel_error", f"{report.worst.max_rel_error:.3g}"))
        if not report.passed:
            repro = repro_commands(report, target, given)
            raise CheckFailed(report, failure_text(report, repro, verbose=self.config.get_verbosity() > 0, width=_width(self.config)))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CheckFailed):
            return excinfo.value.text
        if isinstance(excinfo.value, GradcheckError):
            kind = "could not run" if excinfo.value.exit_code == 2 else "the layer failed"
            return f"gradcheck {self.what} {self.path.name}: {kind}\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"gradcheck {self.what} {self.path.name}"


class SpecItem(_CheckItem):
    """Check one spec (one combination of its matrix), exactly as ``gradcheck run SPEC`` does (with the
    project's [tool.gradcheck] defaults)."""

    def __init__(self, *, spec: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self) -> None:
        from .checker import check_spec
        from .matrix import named
        from .spec import load_spec

        spec = self.spec if self.spec is not None else load_spec(self.path)
        report = check_spec(spec, **_project(self.config).overrides(spec.options, {}))
        self.verdict(report, named(_shown(self.path, self.config), spec))


class LayerFile(pytest.File):
    """A Python file of layers: one item per Function or Module it defines (discover.py)."""

    def collect(self) -> Iterator[LayerItem]:
        from .discover import discover, unknown_names

        # [tool.gradcheck]'s only/constant apply to each layer that has a tensor of that name.
        options = _project(self.config).overrides({}, {})
        only, constant = tuple(options.get("only") or ()), tuple(options.get("constant") or ())
        try:
            discovery = discover(str(self.path), shown=_shown(self.path, self.config), names=bool(only or constant))
        except GradcheckError as exc:  # the file does not import: one item that fails with why
            yield LayerItem.from_parent(self, name=self.path.stem, error=exc)
            return
        problem = discovery.nothing_to_check(self.path.name) or unknown_names([discovery], only, constant)
        if problem is not None:
            yield LayerItem.from_parent(self, name=self.path.stem, error=problem)
            return
        for found in discovery.classes:
            found = found.narrowed(only, constant)
            item = LayerItem.from_parent(self, name=found.name, found=found)
            if found.skipped is not None:
                item.add_marker(pytest.mark.skip(reason=f"gradcheck: {found.name}: {found.skipped}"))
            yield item


class LayerItem(_CheckItem):
    """Check one layer of a file with its gradcheck_inputs, as ``gradcheck run FILE.py`` does; skipped where it cannot be."""

    what = "layer"

    def __init__(self, *, found: Any = None, error: GradcheckError | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.found, self.error = found, error or (found.error if found is not None else None)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.found.line if self.found is not None and self.found.line else 1
        return self.path, line - 1, f"gradcheck layer {self.path.name}:{self.name}"

    def runtest(self) -> None:
        from .checker import check
        from .render import input_arg

        if self.error is not None:
            raise self.error
        inputs = list(self.found.inputs)
        options = _project(self.config).overrides({}, {})
        if options.get("only") or options.get("constant") or self.found.constant:  # this layer's own (discover.Found.narrowed)
            options.update(only=self.found.only, constant=self.found.constant)
        report = check(f"{self.path}:{self.found.name}", inputs, name=f"{self.path.name}:{self.found.name}", **options)
        given = [arg for spec in inputs for arg in ("--input", input_arg(spec))]
        self.verdict(report, f"{_shown(self.path, self.config)}:{self.found.name}", given)


def _shown(path: Path, config: pytest.Config) -> str:
    """The spec's path as the user would type it in the folder pytest was started from."""
    try:
        return os.path.relpath(path, config.invocation_params.dir)
    except ValueError:
        return str(path)


def _width(config: pytest.Config) -> int:
    try:
        return config.get_terminal_writer().fullwidth
    except Exception:  # noqa: BLE001 -- no terminal writer (a plugin replaced it): a usual width
        return 120


@pytest.fixture
def gradcheck() -> Callable[..., Any]:
    """``gradcheck(layer, inputs, **options)``: :func:`gradcheck_cli.assert_gradients` as a fixture."""
    from .assertions import assert_gradients

    return assert_gradients

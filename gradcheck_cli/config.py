"""``[tool.gradcheck]`` in ``pyproject.toml``: a project's defaults, found as pytest and ruff find theirs.

    [tool.gradcheck]
    specs = ["specs/"]     # what `gradcheck run`, `validate`, `list` and the pytest plugin check when given nothing
    kinks = "fail"         # any check option a spec may set, as a spec sets it (options.py)
    rtol = 1e-4

The nearest ``pyproject.toml`` with a ``[tool.gradcheck]`` table, from the current folder
upwards, is the project's. Its keys are the check options a spec may set -- derived from
the one option table in :mod:`.options`, checked by the same kinds -- plus ``specs`` (paths
relative to the pyproject file). Precedence, lowest first: built-in defaults, this table, a
spec's own keys, the command line. A key that is not one of these is an error that names
the closest one. No click, no torch, no printing here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError, suggest
from .options import RENAMED, SPEC_KEYS, check_option

FILE = "pyproject.toml"
TABLE = "[tool.gradcheck]"
PATH_KEYS = ("specs",)
KEYS = PATH_KEYS + SPEC_KEYS
OLD_KEYS = tuple(RENAMED)  # still accepted


@dataclass(frozen=True)
class Config:
    """A project's ``[tool.gradcheck]``: check options and spec paths; empty where there is none."""

    path: Path | None = None  # the pyproject.toml it came from
    options: dict[str, Any] = field(default_factory=dict)
    specs: tuple[Path, ...] = ()  # absolute

    def overrides(self, spec_options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """The options to check with: this table's where the spec sets nothing, then the command line's on top.

        For a spec these are the overrides :func:`~gradcheck_cli.checker.check_spec` puts over the
        spec's own keys; for a layer target (``spec_options`` empty) they are all its options.
        """
        return {**{k: v for k, v in self.options.items() if k not in spec_options}, **given}

    def describe(self) -> str:
        return f"{self.path} {TABLE}" if self.path else "no configuration"


def find(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest pyproject.toml with a [tool.gradcheck] table, from ``start`` (the current folder) upwards."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / FILE
        if candidate.is_file() and _has_table(candidate):
            return candidate
    return None


def _has_table(path: Path) -> bool:
    try:
        data = _read(path)
    except UsageError:
        return True  # broken: loading it says what is wrong
    return isinstance(data.get("tool"), dict) and "gradcheck" in data["tool"]


def _read(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"Cannot read {str(path)!r} ({exc.strerror or exc}).", "Check its permissions.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: is not valid TOML ({exc}).", "Fix the file; see https://toml.io.") from None


def load(path: str | os.PathLike | None = None, start: str | os.PathLike | None = None) -> Config:
    """The [tool.gradcheck] of ``path`` (else of the nearest pyproject.toml that has one); raises UsageError."""
    path = Path(path) if path is not None else find(start)
    if path is None:
        return Config()
    table = _read(path).get("tool", {}).get("gradcheck", {})
    where = f"{path}: {TABLE}"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table of options, found {type(table).__name__}.", "Write it as [tool.gradcheck] with key = value lines.")
    options: dict[str, Any] = {}
    specs: tuple[Path, ...] = ()
    for key, value in table.items():
        if key not in KEYS + OLD_KEYS:
            raise UsageError(f"{where}: unknown key {key!r}.", f"{suggest(key, KEYS)} Keys: {', '.join(KEYS)}.")
        if key == "specs":
            specs = _paths(value, path.parent, f"{where}: specs")
            continue
        name = RENAMED.get(key, key)
        if name in options or (name != key and name in table):
            raise UsageError(f"{where}: {key!r} is the old name of {name!r}, which is given too.", f"Keep {name} only.")
        try:
            options[name] = check_option(key, list(value) if isinstance(value, list) else value)
            if name == "reference" and options[name] is not None:
                options[name] = _file_relative_to(options[name], path.parent)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.message}", exc.hint) from None
    return Config(path, options, specs)


def _file_relative_to(target: str, base: Path) -> str:
    """A file target (``ref/plain.py:Plain``) resolved against the pyproject's folder, as ``specs`` are (it
    means the same from every folder below it); a dotted target as it is."""
    from .load import is_file_target, split_target

    module_part, attr = split_target(target)
    if not is_file_target(module_part) or attr is None:
        return target
    return f"{(base / Path(module_part).expanduser()).resolve()}:{attr}"


def _paths(value: Any, base: Path, where: str) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise UsageError(f"{where}: must be a path or a list of paths, got {value!r}.", 'Example: specs = ["specs/"]')
    return tuple((base / Path(v).expanduser()).resolve() for v in items)

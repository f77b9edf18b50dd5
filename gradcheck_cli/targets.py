"""Which checks a ``gradcheck run TARGET...`` means, settled before any of the user's code runs.

A target is a layer (``file.py:Name``, ``pkg.mod:Name``), a layer file (``file.py``: every
layer it defines, found when it is loaded: discover.py), a YAML spec (``spec.yaml``; one
entry per combination of its ``matrix``, and ``spec.yaml[seed=1]`` picks combinations: matrix.py),
a folder of specs (``--recursive``: with its subfolders) or a glob of them; several may be
given. Every spec is read and validated here and every path made absolute, so that a
layer that calls ``os.chdir`` cannot make the next spec "not exist", and the files
the run reads are known (a report must never be written over one of them).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Collection, Sequence

from .errors import GradcheckError, UsageError
from .load import is_file_target, split_target
from .matrix import combinations, named, parse_selector, split_selector
from .outputs import resolve
from .spec import LayerSpec, find_specs, is_spec_path, load_spec


@dataclass(frozen=True)
class Entry:
    """One check of the run."""

    name: str  # as the user wrote it (a spec's path, a target): shown and reported
    target: str  # what the core loads: the target with its file made absolute
    spec: LayerSpec | None = None  # the spec (one combination of its matrix), when the entry is one that loaded
    error: GradcheckError | None = None  # why a spec could not be loaded
    whole_file: bool = False  # a layer file named without ':Name': each layer it defines is checked (discover.py)


@dataclass(frozen=True)
class RunPlan:
    entries: tuple[Entry, ...]
    folder: bool  # several checks (a folder of specs, several targets): reported one by one, with a summary
    inputs: tuple[tuple[str, Path], ...]  # (what, path) of every file the run reads


GLOB = re.compile(r"[*?\[]")


def plan_run(targets: str | Sequence[str], recursive: bool = False, fixed: Collection[str] = ()) -> RunPlan:
    """The entries of ``targets`` (layers, layer files, specs, folders of specs, globs of them), in the order given.

    A folder gives its specs sorted by name, and with ``recursive`` those of its subfolders too
    (hidden ones skipped); a glob (``specs/*.yaml``, ``specs/**/*.yaml``) that the shell left
    unexpanded is expanded here. A spec gives one entry per combination of its matrix
    (``spec.yaml[KEY=VALUE,...]`` those it picks); ``fixed`` are the keys the command line sets
    (check options; ``inputs`` for --input, which replaces a spec's inputs only in a run of
    specs alone; ``args`` for a positional --init), whose matrix axes collapse (matrix.py).
    Raises :class:`UsageError` for a target that names nothing to check.
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise UsageError(
            "No TARGET given: name a layer, a spec or a folder of specs.",
            "Example: gradcheck run specs/ (or set specs = [\"specs/\"] under [tool.gradcheck] in pyproject.toml).",
        )
    found_entries: list[tuple[Entry, str | None, str]] = []  # (entry, its selector, the target as given)
    several = len(targets) > 1
    alone = len(targets) == 1
    for target in targets:
        path, selector = split_selector(target)
        if selector is not None:
            found_entries.append((_spec_entry(path, alone), selector, target))
            continue
        for found in _expand(target):
            if is_spec_path(found) and Path(found).is_dir():
                specs = _specs_in(found, recursive)
                if not specs:
                    deeper = "" if recursive else " (subfolders are searched only with --recursive)"
                    raise UsageError(
                        f"Folder {found!r} holds no *.yaml or *.yml spec{deeper}.",
                        "Point at the folder that holds the specs, or give a layer target such as mylayer.py:MyLayer --input 4x3.",
                    )
                found_entries += [(_spec_entry(str(path)), None, str(path)) for path in specs]
                several = True
            elif is_spec_path(found):
                found_entries.append((_spec_entry(found, alone), None, found))
            else:
                _refuse_data_file(found)
                whole = _names_a_file(found)
                found_entries.append((Entry(found, _absolute(found), whole_file=whole), None, found))
                several = several or whole
    specs_only = all(entry.spec is not None or entry.error is not None for entry, _, _ in found_entries)
    collapsed = set(fixed) if specs_only else set(fixed) - {"inputs"}
    entries: list[Entry] = []
    for entry, selector, target in found_entries:
        if entry.spec is None:
            entries.append(entry)
            continue
        try:
            picked = parse_selector(target, selector) if selector is not None else None
            each = combinations(entry.spec, picked, collapsed, target)
        except UsageError as exc:
            if alone:
                raise
            entries.append(replace(entry, name=target, spec=None, error=exc))
            continue
        several = several or len(each) > 1
        entries += [Entry(named(entry.name, spec), entry.target, spec=spec) for spec in each]
    entries = _unique(entries)
    return RunPlan(tuple(entries), several or len(entries) > 1, _inputs(tuple(entries)))


def _names_a_file(target: str) -> bool:
    """``layers.py`` or ``path/to/layers``: a layer file named without ':Name'."""
    try:
        module_part, attr = split_target(target)
    except GradcheckError:
        return False
    return attr is None and is_file_target(module_part)


def spec_files(targets: Sequence[str], recursive: bool = False) -> list[str]:
    """The spec files that ``targets`` (specs, folders of specs, globs) name, as ``plan_run`` finds them; nothing is loaded."""
    files: list[str] = []
    for target in targets:
        if split_selector(target)[1] is not None:  # 'spec.yaml[seed=1]': the combinations of one spec
            files.append(target)
            continue
        for found in _expand(target):
            if Path(found).is_dir():
                specs = _specs_in(found, recursive)
                if not specs:
                    raise UsageError(f"Folder {found!r} holds no *.yaml or *.yml spec.", "Point at the folder that holds the specs (or add --recursive).")
                files += [str(p) for p in specs]
            else:
                files.append(found)
    seen: set[str] = set()
    return [f for f in files if not (str(resolve(f)) in seen or seen.add(str(resolve(f))))]  # each once, in order


def expand_globs(targets: Sequence[str]) -> list[str]:
    """``targets`` with each glob (``specs/*.yaml``) replaced by what it matches, as ``plan_run`` expands it; folders stay
    folders. Raises :class:`UsageError` for a glob that matches nothing."""
    return [found for target in targets for found in _expand(str(target))]


def _expand(target: str) -> list[str]:
    """A glob the shell did not expand (quoted, or on Windows), as the files it matches; anything else as it is."""
    if not GLOB.search(target) or Path(target).exists() or ":" in Path(target).name:
        return [target]
    matches = sorted(glob.glob(target, recursive=True))
    matches = [m for m in matches if Path(m).is_dir() or is_spec_path(m) or m.endswith(".py")]
    if not matches:
        raise UsageError(f"{target!r} matches no file.", "Check the pattern; specs are *.yaml or *.yml files.")
    return matches


def _specs_in(folder: str, recursive: bool) -> list[Path]:
    """The specs of ``folder`` (find_specs), then, with ``recursive``, each subfolder's, depth first, sorted; hidden folders skipped."""
    found = list(find_specs(folder))
    if recursive:
        for root, dirs, _ in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            if root != folder and os.path.normpath(root) != os.path.normpath(folder):
                found += find_specs(root)
    return found


def _unique(entries: list[Entry]) -> list[Entry]:
    """Each spec once, however many targets name it (``specs/ specs/a.yaml``)."""
    seen: set[str] = set()
    kept = []
    for entry in entries:
        key = entry.target if entry.spec is None and entry.error is None else f"{entry.target}[{entry.spec.variant_name if entry.spec else entry.name}]"
        if key not in seen:
            seen.add(key)
            kept.append(entry)
    return kept


def _refuse_data_file(target: str) -> None:
    """``spec.json``, ``spec.toml``: a file that is neither a spec nor a layer file."""
    path = Path(target)
    if ":" in target or path.suffix.lower() in (".py", "") or not path.is_file():
        return
    raise UsageError(
        f"{target!r} is neither a spec nor a layer: specs are .yaml/.yml files, layers are named as file.py:Name.",
        "Write the spec as YAML (spec.yaml), or name the layer as path/to/file.py:Name.",
    )


def files_read(targets: Sequence[str], recursive: bool = False) -> tuple[tuple[str, Path], ...]:
    """The files a run of ``targets`` reads, as far as they can be told without running anything; never raises.

    The CLI checks its outputs against them before anything else: a report is never
    written over the spec, a spec of the folder or a layer file (see outputs.py).
    """
    try:
        return plan_run(targets, recursive=recursive).inputs
    except GradcheckError:
        pass
    found: list[tuple[str, Path]] = []
    for target in targets:
        try:
            found += plan_run([target], recursive=recursive).inputs
        except GradcheckError:
            path, _ = split_selector(target)
            if is_spec_path(path) and not Path(path).is_dir():
                found.append((f"the spec {path!r}", resolve(path)))
            elif not is_spec_path(target):
                found += _inputs((Entry(target, _absolute(target)),))
    return tuple(found)


def _spec_entry(path: str, alone: bool = False) -> Entry:
    """The spec at ``path``, loaded (its matrix not yet expanded); a spec that cannot be loaded is an entry with
    its error, or -- the run's only target -- raises it."""
    try:
        spec = load_spec(path)
    except GradcheckError as exc:
        if alone:
            raise
        return Entry(path, str(resolve(path)), error=exc)
    return Entry(path, str(resolve(path)), spec=spec)


def _absolute(target: str) -> str:
    """``file.py:Name`` with the file's path made absolute; other targets as they are."""
    try:
        module_part, attr = split_target(target)
    except GradcheckError:
        return target  # the core says what is wrong with it
    if not is_file_target(module_part):
        return target
    return f"{resolve(module_part)}:{attr}" if attr is not None else str(resolve(module_part))


def _inputs(entries: tuple[Entry, ...]) -> tuple[tuple[str, Path], ...]:
    found: list[tuple[str, Path]] = []
    for entry in entries:
        if entry.spec is not None or entry.error is not None:
            found.append((f"the spec {split_selector(entry.name)[0]!r}", Path(entry.target)))
        layer = entry.spec.layer if entry.spec is not None else entry.target if entry.error is None else None
        reference = entry.spec.options.get("reference") if entry.spec is not None else None
        found += layer_files([(layer, "the layer file"), (reference, "the reference file")])
    return tuple(found)


def layer_files(targets: Sequence[tuple[str | None, str]]) -> list[tuple[str, Path]]:
    """The files of those (target, what) that name a file ('file.py:Name'), as (description, path)."""
    found: list[tuple[str, Path]] = []
    for target, what in targets:
        if not target:
            continue
        try:
            module_part, _ = split_target(target)
        except GradcheckError:
            continue
        if is_file_target(module_part):
            found.append((f"{what} {module_part!r}", resolve(module_part)))
    return found

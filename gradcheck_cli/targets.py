"""Which checks a ``gradcheck run TARGET`` means, settled before any of the user's code runs.

A target is a layer (``file.py:Name``, ``pkg.mod:Name``), a YAML spec or a folder of
specs. Every spec is read and validated here and every path made absolute, so that a
layer that calls ``os.chdir`` cannot make the next spec "not exist", and the files
the run reads are known (a report must never be written over one of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .spec import LayerSpec
from .errors import GradcheckError, UsageError
from .load import is_file_target, split_target
from .outputs import resolve
from .spec import find_specs, is_spec_path, load_spec


@dataclass(frozen=True)
class Entry:
    """One check of the run."""

    name: str  # as the user wrote it (a spec's path, a target): shown and reported
    target: str  # what the core loads: the target with its file made absolute
    spec: LayerSpec | None = None  # the spec, when the entry is one that loaded
    error: GradcheckError | None = None  # why a spec could not be loaded


@dataclass(frozen=True)
class RunPlan:
    entries: tuple[Entry, ...]
    folder: bool  # a folder of specs: reported spec by spec, with a summary
    inputs: tuple[tuple[str, Path], ...]  # (what, path) of every file the run reads


def plan_run(target: str) -> RunPlan:
    """The entries of ``target``; raises :class:`UsageError` for a target that names nothing to check."""
    if is_spec_path(target) and Path(target).is_dir():
        specs = find_specs(target)
        if not specs:
            raise UsageError(
                f"Folder {target!r} holds no *.yaml or *.yml spec (subfolders are not searched).",
                "Point at the folder that holds the specs, or give a layer target such as mylayer.py:MyLayer --input 4x3.",
            )
        entries = tuple(_spec_entry(str(path)) for path in specs)
        return RunPlan(entries, True, _inputs(entries))
    if is_spec_path(target):
        entry = _spec_entry(target)
        return RunPlan((entry,), False, _inputs((entry,)))
    _refuse_data_file(target)
    entry = Entry(target, _absolute(target))
    return RunPlan((entry,), False, _inputs((entry,)))


def _refuse_data_file(target: str) -> None:
    """``spec.json``, ``spec.toml``: a file that is neither a spec nor a layer file."""
    path = Path(target)
    if ":" in target or path.suffix.lower() in (".py", "") or not path.is_file():
        return
    raise UsageError(
        f"{target!r} is neither a spec nor a layer: specs are .yaml/.yml files, layers are named as file.py:Name.",
        "Write the spec as YAML (spec.yaml), or name the layer as path/to/file.py:Name.",
    )


def files_read(target: str) -> tuple[tuple[str, Path], ...]:
    """The files a run of ``target`` reads, as far as they can be told without running anything; never raises.

    The CLI checks its outputs against them before anything else: a report is never
    written over the spec, a spec of the folder or a layer file (see outputs.py).
    """
    try:
        return plan_run(target).inputs
    except GradcheckError:
        pass
    found: list[tuple[str, Path]] = []
    if is_spec_path(target) and not Path(target).is_dir():
        found.append((f"the spec {target!r}", resolve(target)))
    else:
        found += _inputs((Entry(target, _absolute(target)),))
    return tuple(found)


def _spec_entry(path: str) -> Entry:
    try:
        spec = load_spec(path)
    except GradcheckError as exc:
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
            found.append((f"the spec {entry.name!r}", resolve(entry.name)))
        layer = entry.spec.layer if entry.spec is not None else entry.target if entry.error is None else None
        if layer:
            try:
                module_part, _ = split_target(layer)
            except GradcheckError:
                continue
            if is_file_target(module_part):
                found.append((f"the layer file {module_part!r}", resolve(module_part)))
    return tuple(found)

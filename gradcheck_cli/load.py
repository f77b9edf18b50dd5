"""Step 1: turn a target string into a Python object.

Three forms are accepted:

* ``path/to/file.py:Name`` -- the file is imported under a unique module name
  and its folder is put on ``sys.path`` so that sibling imports work;
* ``pkg.mod:Name`` -- an importable module, then an attribute (``Outer.Inner``
  works too); the current folder is importable, as with ``python -m``;
* ``pkg.mod.Name`` -- the longest importable module prefix, then attributes.

A spec's dotted targets mean the same wherever gradcheck runs: inside
:func:`spec_imports`, a module that ``sys.path`` does not have is looked for in the
spec's folder and its ancestors up to the project root, as its file paths are
resolved against the spec's folder.

Importing a layer file runs it, exactly as pytest runs test files.  Anything the
file prints while it is imported goes to stderr, so it cannot corrupt a report
written to stdout.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

from .errors import GradcheckError, LayerError, UsageError, user_frame

# A layer's Python source is read whole (and hashed) before it is imported: larger is no source file.
MAX_LAYER_BYTES = 64 * 1024**2

FORMS = "'path/to/file.py:Name', 'package.module:Name' or 'package.module.Name'"

# What makes a folder a project's root: where a spec's dotted imports stop looking upwards.
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


class _Search:
    """The folders a spec's dotted targets are also looked for in (spec_imports), nearest first, and
    whether a target was looked for there (only then are modules forgotten afterwards)."""

    def __init__(self, folders: tuple[Path, ...]) -> None:
        self.folders = folders
        self.used = False


_SPEC_SEARCH: contextvars.ContextVar[_Search | None] = contextvars.ContextVar("gradcheck_spec_search", default=None)


def spec_folders(spec_path: str | os.PathLike) -> tuple[Path, ...]:
    """The spec's folder and its ancestors up to the project root (the nearest folder with a
    pyproject.toml, setup.py, setup.cfg or .git), nearest first; the spec's folder alone where
    no folder above it is a project's root."""
    start = Path(os.path.realpath(Path(spec_path).expanduser())).parent
    folders = []
    for folder in (start, *start.parents):
        folders.append(folder)
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return tuple(folders)
    return (start,)


@contextlib.contextmanager
def spec_imports(spec_path: str | os.PathLike) -> Iterator[None]:
    """Dotted targets loaded inside resolve as the spec at ``spec_path`` means them.

    A module that is not on ``sys.path`` is looked for in :func:`spec_folders` too, after
    ``sys.path`` (so an installed package still wins); those folders stay importable for the
    rest of the check (the check restores ``sys.path``). Afterwards ``sys.modules`` holds none
    of the modules only they made importable: a second spec of another project with a package
    of the same name gets its own.
    """
    search = _Search(spec_folders(spec_path))
    before = set(sys.modules)
    path = list(sys.path) + ([os.getcwd()] if _cwd_exists() else [])
    token = _SPEC_SEARCH.set(search)
    try:
        yield
    finally:
        _SPEC_SEARCH.reset(token)
        if search.used:
            _forget_found_in(search.folders, before, path)


def _cwd_exists() -> bool:
    try:
        os.getcwd()
        return True
    except OSError:
        return False


def _forget_found_in(folders: tuple[Path, ...], before: set[str], path: list[str]) -> None:
    """Remove the modules imported since ``before`` that only ``folders`` made importable (not ``path``)."""
    added = [name for name in list(sys.modules) if name not in before]
    local: dict[str, bool] = {}
    for name in added:
        top = name.partition(".")[0]
        if top not in local:
            local[top] = _only_in(top, folders, path)
        if local[top]:
            sys.modules.pop(name, None)


def _only_in(top: str, folders: tuple[Path, ...], path: list[str]) -> bool:
    """Is the top-level module ``top`` one that ``folders`` make importable and ``path`` does not?

    (A layer file imported by its path -- ``gradcheck_target_...`` -- is no module of those folders:
    it stays, as file imports always leave it, for the next check of the same file.)"""
    module = sys.modules.get(top)
    where = getattr(getattr(module, "__spec__", None), "origin", None) or getattr(module, "__file__", None)
    places = [str(p) for p in getattr(module, "__path__", None) or ()] + ([where] if where else [])
    if not places or top in sys.builtin_module_names:
        return False
    if not any(Path(os.path.realpath(place)).is_relative_to(folder) for place in places for folder in folders):
        return False
    try:
        finder = importlib.machinery.PathFinder
        return finder.find_spec(top, [str(f) for f in folders]) is not None and finder.find_spec(top, [p for p in path if isinstance(p, str)]) is None
    except (ImportError, ValueError, OSError):
        return False


def split_target(text: str) -> tuple[str, str | None]:
    """Split ``text`` into (module part, attribute part or None)."""
    text = text.strip()
    if not text:
        raise UsageError("The target is empty.", f"Name a layer as {FORMS}.")
    head, sep, tail = text.rpartition(":")
    # A lone drive letter ("C:") is part of a Windows path, not a separator.
    if sep and tail and not (len(head) == 1 and tail.startswith(("\\", "/"))):
        return head, tail
    if text.endswith(":"):
        raise UsageError(f"The target {text!r} names no attribute after ':'.", f"Write it as {FORMS}.")
    return text, None


def is_file_target(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or "\\" in module_part


def load_target(text: str) -> object:
    """Return the object a target string names.  Raises :class:`UsageError`."""
    module_part, attr = split_target(text)
    if is_file_target(module_part):
        module = import_file(Path(module_part))
        if attr is None:
            raise UsageError(
                f"The target {text!r} names a file but no layer in it.",
                f"Add ':Name' after the file name; {_candidates_hint(module)}",
            )
        return _get_attr(module, attr, text)
    if attr is not None:
        return _get_attr(_import_module(module_part, text), attr, text)
    return _load_dotted(module_part)


def import_file(path: Path) -> ModuleType:
    """Import a Python file under a unique module name; its folder becomes importable.

    The module is kept for the next check of the same file, unless the file changed
    since: then it is imported afresh (an API caller who fixed the layer checks the fix).
    """
    path = path.expanduser()
    if not path.exists():
        raise UsageError(f"Layer file {str(path)!r} does not exist.", f"Check the path; targets look like {FORMS}.")
    if not path.is_file():
        raise UsageError(f"Layer file {str(path)!r} is not a file.", f"Targets look like {FORMS}.")
    path = path.resolve()
    if path.stat().st_size > MAX_LAYER_BYTES:
        raise UsageError(
            f"Layer file {str(path)!r} is {path.stat().st_size:,} bytes; a Python source file of a layer is at most "
            f"{MAX_LAYER_BYTES // 1024**2} MiB.",
            "Point the target at the layer's .py file.",
        )
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"Layer file {str(path)!r} cannot be read ({exc.strerror or exc}).", "Check the file's permissions."
        ) from None
    content = hashlib.sha1(source).hexdigest()
    package = _package_of(path)
    if package is not None:
        return _import_in_package(path, content, *package)
    return _import_alone(path, content)


def _import_alone(path: Path, content: str) -> ModuleType:
    """A file outside any package: imported under a unique name, its folder on sys.path (sibling imports work)."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"gradcheck_target_{digest}_{path.stem}".replace("-", "_").replace(".", "_")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    cached = sys.modules.get(name)
    if cached is not None and getattr(cached, "__gradcheck_source__", None) == content:
        return cached
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"Cannot import {str(path)!r} as Python code.", "Layer files must end in '.py'.")
    module = importlib.util.module_from_spec(spec)
    module.__gradcheck_source__ = content
    sys.modules[name] = module
    try:
        _run_import(lambda: spec.loader.exec_module(module), str(path))
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _package_of(path: Path) -> tuple[Path, str] | None:
    """(the folder that holds the top package, the file's dotted module name) for a file inside a package, else None.

    A folder is a package when it holds an ``__init__.py``; the file is imported as part of
    it, as its package's own code imports it, so that its relative imports work.
    """
    if path.name == "__init__.py" or not (path.parent / "__init__.py").is_file():
        return None
    parts, folder = [path.stem], path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    if not all(p.isidentifier() for p in parts) or len(parts) < 2:
        return None
    return folder, ".".join(parts)


def _import_in_package(path: Path, content: str, root: Path, dotted: str) -> ModuleType:
    """The file imported as ``dotted`` with ``root`` on sys.path; imported afresh when it changed.

    If the package's own ``__init__`` fails (an optional dependency missing), the file is
    imported alone instead when it can be; otherwise the error says which import failed.
    """
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    cached = sys.modules.get(dotted)
    if cached is not None and getattr(cached, "__file__", None) and Path(cached.__file__).resolve() == path:
        if getattr(cached, "__gradcheck_source__", None) == content:
            return cached
        sys.modules.pop(dotted, None)  # changed since: imported afresh below
    elif cached is not None:
        return _import_alone(path, content)  # another module of that name is loaded: do not disturb it
    try:
        module = _run_import(lambda: importlib.import_module(dotted), f"{dotted} (the package of {path.name})")
    except (UsageError, LayerError) as exc:
        if not _failed_above(exc, path):
            raise
        try:
            return _import_alone(path, content)
        except (UsageError, LayerError):
            raise exc from None
    module.__gradcheck_source__ = content
    return module


def _failed_above(exc: BaseException, path: Path) -> bool:
    """Did the import fail in a package above the file (its ``__init__.py``), not in the file itself?"""
    import traceback

    cause = exc.__cause__
    if cause is None:
        return False
    files = [Path(f.filename).resolve() for f in traceback.extract_tb(cause.__traceback__) if f.filename.endswith(".py")]
    return path not in files and any(f.name == "__init__.py" and path.is_relative_to(f.parent) for f in files)


def _import_module(name: str, text: str) -> ModuleType:
    _current_folder_importable()
    try:
        try:
            return _run_import(lambda: importlib.import_module(name), name)
        except UsageError as exc:
            search = _SPEC_SEARCH.get()
            if search is None or not _not_found(exc, name):
                raise
        # A spec's module: also in the spec's folder and above, up to the project root (after sys.path).
        search.used = True
        sys.path.extend(str(f) for f in search.folders if str(f) not in sys.path)
        importlib.invalidate_caches()
        return _run_import(lambda: importlib.import_module(name), name)
    except UsageError as exc:
        if _not_found(exc, name):
            search = _SPEC_SEARCH.get()
            looked = (
                f" It was looked for on sys.path, then in the spec's folder and above it up to the project root: "
                f"{', '.join(str(f) for f in search.folders)}."
                if search is not None
                else ""
            )
            raise UsageError(
                f"Cannot import module {name!r} for target {text!r}: no such module.{looked}",
                f"Is the package installed, or did you mean a file? Targets look like {FORMS}.",
            ) from None
        if isinstance(exc.__cause__, ModuleNotFoundError):
            where = user_frame(exc.__cause__, skip=("importlib",))
            attr = text.rsplit(":", 1)[1] if ":" in text else "Name"
            raise UsageError(
                f"Importing {name!r} for target {text!r} failed: it imports {exc.__cause__.name!r}, which is not installed ({where}).",
                f"Install {exc.__cause__.name!r}; or name the layer by its file ({name.replace('.', '/')}.py:{attr}), "
                "which imports only what that file needs where it can.",
            ) from None
        raise


def _not_found(exc: UsageError, name: str) -> bool:
    """Did importing ``name`` fail because it (or a package above it) does not exist at all?"""
    return isinstance(exc.__cause__, ModuleNotFoundError) and exc.__cause__.name in _prefixes(name)


def _current_folder_importable() -> None:
    """The current folder on ``sys.path``, as ``python -m`` has it: ``mylayers:Swish`` works in the project
    folder whether gradcheck started as a console script, from pytest or from Python (the check restores
    ``sys.path`` afterwards). Appended, not first: a file there named like a module gradcheck or the
    layer imports (inspect.py, yaml.py) shadows nothing."""
    here = os.getcwd()
    if not any(entry in ("", here) for entry in sys.path):
        sys.path.append(here)


def _prefixes(dotted: str) -> set[str]:
    parts = dotted.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def _run_import(do_import, where: str):
    """Run an import; say what went wrong when the imported code fails.

    A file that is not Python, or imports a module that is not installed, is a usage
    problem (exit 2); anything else the imported code raises -- any BaseException,
    sys.exit included -- is the layer's own error (exit 1).
    """
    from .environment import ExitCalled, Interrupt, user_code, watching_interrupts
    from .supervise import stage

    stage(f"Importing {where}")
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ left in the user's folders
    try:
        with contextlib.redirect_stdout(sys.stderr), user_code():
            return do_import()
    except SyntaxError as exc:
        if exc.lineno is None:  # e.g. NUL bytes: not Python source at all
            raise UsageError(f"{exc.filename or where} is not Python source: {exc.msg}.", "Point the target at a .py text file.") from exc
        raise UsageError(
            f"Syntax error in {exc.filename or where}, line {exc.lineno}: {exc.msg}.",
            "Fix the layer file and run again.",
        ) from exc
    except ModuleNotFoundError as exc:
        # Where the import is: the layer file, or a module it imports (its package's __init__.py).
        raise UsageError(
            f"Importing {where} failed: no module named {exc.name!r} ({user_frame(exc, skip=('importlib',))}).",
            f"Install {exc.name!r}, or fix that import.",
        ) from exc
    except (GradcheckError, Interrupt):
        raise
    except (SystemExit, ExitCalled) as exc:
        how = "sys.exit" if isinstance(exc, SystemExit) else "os._exit"
        raise LayerError(
            f"Importing {where} called {how}({exc.code!r}); no check was run.",
            "Move script code under `if __name__ == \"__main__\":`.",
        ) from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and not watching_interrupts():
            raise  # cannot tell it from a real Ctrl-C here
        from .guard import first_line

        raise LayerError(
            f"Importing {where} raised {type(exc).__name__}: {first_line(exc)} ({user_frame(exc, skip=('importlib',))}).",
            "Fix the layer file; run with --debug for the full traceback.",
        ) from exc
    finally:
        sys.dont_write_bytecode = dont_write


def _get_attr(module: ModuleType, attr: str, text: str) -> object:
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"{getattr(module, '__file__', None) or module.__name__} has no attribute {attr!r}.",
                _candidates_hint(module),
            ) from None
        except BaseException as exc:  # a module-level __getattr__ (lazy imports) that raises
            from .guard import layer_error

            raise layer_error(exc, f"Getting {attr!r} from {getattr(module, '__file__', None) or module.__name__}") from exc
    return obj


def _load_dotted(text: str) -> object:
    parts = text.split(".")
    if len(parts) < 2:
        raise UsageError(f"Cannot tell which module {text!r} is in.", f"Write the target as {FORMS}.")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = _import_module(module_name, text)
        except UsageError as exc:
            # Only a prefix that is not a module at all means "try a shorter one"; a module
            # that exists but fails to import (a missing dependency) is the user's error.
            if "no such module" in exc.message:
                continue
            raise
        return _get_attr(module, ".".join(parts[cut:]), text)
    raise UsageError(f"Cannot import any module of {text!r}.", f"Is the package installed? Targets look like {FORMS}.")


def _candidates_hint(module: ModuleType) -> str:
    import torch

    names = []
    for name, value in vars(module).items():
        try:
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
        except Exception:  # an object whose attribute lookup raises
            continue
        if isinstance(value, type) and issubclass(value, (torch.nn.Module, torch.autograd.Function)):
            names.append(name)
        elif isinstance(value, torch.nn.Module):
            names.append(name)
    if names:
        return "layers defined there: " + ", ".join(sorted(names)) + "."
    return "no nn.Module or autograd.Function is defined there."

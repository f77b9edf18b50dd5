"""Where a layer's hand-written gradient is written: the file and line a CI annotation points at.

:func:`locate` finds, for the object a check loaded, the code a failure most likely lives
in -- the ``backward`` of its autograd.Function (for a Module, the one Function its class
uses or its forward calls), else its ``forward``, else the callable or class itself -- by
:mod:`inspect`, without running anything. Nothing here prints; torch is imported only when
called.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Source:
    """A place in the user's code: an absolute file, a 1-based line, and what is there ('Square.backward')."""

    file: str
    line: int
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "name": self.name}


def locate(obj: Any) -> Source | None:
    """The backward (or forward, or definition) of the layer ``obj``; None where no source file is known.

    Never raises: an object that resists inspection (a metaclass, a C type) has no known source.
    """
    try:
        return _locate(obj)
    except Exception:  # noqa: BLE001 -- where the code is written is a courtesy, never a reason to fail
        return None


def _locate(obj: Any) -> Source | None:
    import torch

    cls = obj if isinstance(obj, type) else type(obj) if isinstance(obj, torch.nn.Module) else None
    if cls is not None and issubclass(cls, torch.autograd.Function):
        return _place(cls, "backward") or _place(cls, "forward") or _place(cls, None)
    if cls is not None and issubclass(cls, torch.nn.Module):
        function = _function_of(cls, torch.autograd.Function)
        if function is not None:
            found = _place(function, "backward")
            if found is not None:
                return found
        return _place(cls, "backward") or _place(cls, "forward") or _place(cls, None)
    function = _called_function(obj, torch.autograd.Function)
    return (_place(function, "backward") if function is not None else None) or _place(obj, None)


def _function_of(cls: type, function_type: type) -> type | None:
    """The one autograd.Function a Module class holds as an attribute or names in its forward (None if not exactly one)."""
    found: dict[str, type] = {}
    for name in dir(cls):
        if name.startswith("__"):
            continue
        try:
            value = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(value, type) and issubclass(value, function_type) and value is not function_type:
            found[value.__qualname__] = value
    called = _called_function(inspect.getattr_static(cls, "forward", None), function_type)
    if called is not None:
        found[called.__qualname__] = called
    return next(iter(found.values())) if len(found) == 1 else None


def _called_function(fn: Any, function_type: type) -> type | None:
    """The one autograd.Function the Python function ``fn`` names (``SquareFn.apply(x)``), if exactly one."""
    code = getattr(fn, "__code__", None)
    scope = getattr(fn, "__globals__", {})
    found = {
        value
        for value in (scope.get(name) for name in (code.co_names if code is not None else ()))
        if isinstance(value, type) and issubclass(value, function_type) and value is not function_type
    }
    return found.pop() if len(found) == 1 else None


def _place(owner: Any, attribute: str | None) -> Source | None:
    """The file and first line of ``owner.attribute`` (or of ``owner``) when it is the user's Python code."""
    target = owner
    if attribute is not None:
        target = inspect.getattr_static(owner, attribute, None) if isinstance(owner, type) else getattr(owner, attribute, None)
        if target is None or (isinstance(owner, type) and not _defined_below(owner, attribute)):
            return None
    target = getattr(target, "__func__", target)  # staticmethod / classmethod
    target = inspect.unwrap(target) if callable(target) else target
    try:
        file = inspect.getsourcefile(target)
        lines, first = inspect.getsourcelines(target)
    except (TypeError, OSError, AttributeError):
        return None
    # The 'def' or 'class' line itself, not a decorator above it (@staticmethod).
    skip = next((i for i, text in enumerate(lines) if not text.lstrip().startswith("@")), 0)
    line = max(first, 1) + skip - 1
    if not file or "torch" in os.path.normpath(file).split(os.sep):
        return None
    qualname = getattr(target, "__qualname__", None) or getattr(owner, "__qualname__", None) or type(owner).__qualname__
    return Source(os.path.abspath(file), line + 1, qualname)


def _defined_below(cls: type, attribute: str) -> bool:
    """``attribute`` is defined by ``cls`` or a class of the user's between it and torch's base classes."""
    for klass in cls.__mro__:
        if attribute in vars(klass):
            return not klass.__module__.startswith("torch")
    return False


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as CI tools want it: relative to the workspace ($GITHUB_WORKSPACE, else the current
    folder) when it lies inside, with '/' separators; else absolute."""
    absolute = os.path.abspath(path)
    for root in (os.environ.get("GITHUB_WORKSPACE"), os.getcwd()):
        if root and (absolute == os.path.abspath(root) or absolute.startswith(os.path.join(os.path.abspath(root), ""))):
            return os.path.relpath(absolute, root).replace(os.sep, "/")
    return absolute.replace(os.sep, "/")


def key_line(spec_path: str | os.PathLike, key: str | None) -> int | None:
    """The line of a spec's top-level key (``inputs`` for ``inputs[1].shape``), for pointing at it; None if not found."""
    import re

    if not key:
        return None
    top = re.split(r"[.\[]", key, maxsplit=1)[0]
    try:
        with open(spec_path, encoding="utf-8", errors="replace") as f:
            for number, text in enumerate(f, 1):
                if re.match(rf"{re.escape(top)}\s*:", text):
                    return number
    except OSError:
        return None
    return None

"""Everything in a file: ``gradcheck run mylayers.py`` finds the layers a file defines and how to call them.

The file is imported once (load.py: its import errors are the layer's, exit 1). Its classes
are those bound to a name at its top level whose ``__module__`` is the file's -- defined
there, not imported into it -- that subclass ``torch.autograd.Function`` or ``nn.Module``,
in the order the file defines them. Each is checked, or skipped for a stated reason:

* a **Function** is checkable when its ``backward`` (or ``vjp``), its own or inherited, is
  not torch's: the hand-written backward the check is about;
* a **Module** is checkable when its constructor takes no required argument and a
  hand-written backward is below it: its code (the functions of its class and of its bases
  outside torch, and the functions of the module they call by name, a few calls deep) names
  such a Function, or holds one as an attribute; else, once it is built, one of its
  submodules is of a class that does, or it holds one on the instance. A Module that
  autograd differentiates throughout has no hand-written backward to check.

Inputs come from ``gradcheck_inputs``, in the ``--input`` grammar (``"4x16"``, ``"=[1.5, 2]"``,
``"mode=:bilinear"``), so that every check has a rerun line: the module's
``gradcheck_inputs = {"Name": [...]}`` dict first, else the class's ``gradcheck_inputs``
(own or inherited) -- a list of strings, one string, or a static/class method returning one
of those. A class without any is skipped (a Function used by a checked Module says so).

Nothing here prints; the user's code runs only through load.py and guard.py.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch

from .environment import deadline, interrupts, preserved_state
from .errors import GradcheckError, UsageError, suggest
from .guard import guarded
from .inputs import parse_input
from .load import import_file
from .spec import InputSpec

NAME = "gradcheck_inputs"
EXAMPLE = 'gradcheck_inputs = ["4x16"] (its inputs, as --input takes them)'
# How many calls deep a Module's code is followed into the file's functions.
CALL_DEPTH = 4


@dataclass(frozen=True)
class Found:
    """One class the file defines: what it is checked with, or why it is not."""

    name: str
    kind: str  # "Function" or "Module"
    inputs: tuple[InputSpec, ...] = ()
    skipped: str | None = None  # why it is not checked
    error: GradcheckError | None = None  # its gradcheck_inputs cannot be used (exit 2), building it raised (exit 1)
    line: int | None = None  # where the file defines it (1-based)

    @property
    def checked(self) -> bool:
        return self.skipped is None and self.error is None


@dataclass(frozen=True)
class Discovery:
    """The layers of one file, in the order it defines them."""

    path: str
    classes: tuple[Found, ...]

    def nothing_to_check(self, shown: str) -> UsageError | None:
        """The error of a file where no class can be checked (None where one can), listing each with its reason."""
        if any(f.checked or f.error is not None for f in self.classes):
            return None
        if not self.classes:
            return UsageError(
                f"{shown} defines no torch.autograd.Function or nn.Module subclass: there is nothing to check.",
                "Name the layer as FILE.py:Name if it is imported into this file from another one.",
            )
        reasons = "; ".join(f"{f.name}: {f.skipped}" for f in self.classes)
        return UsageError(f"no layer {shown} defines can be checked -- {reasons}.", f"Give a layer {EXAMPLE}, or write a spec for it.")


def discover(path: str, timeout: float | None = None, shown: str | None = None) -> Discovery:
    """Import the layer file at ``path`` and sort its classes into those to check and those to skip.

    ``shown`` is the file as the user named it (default ``path``): the commands a skip reason
    suggests name it so, to be pasted where the user is.

    Raises what importing the file raises (UsageError: not found, syntax; LayerError: it raised, or
    called sys.exit). What the import and the constructors it runs change globally is put back (the
    RNGs, the working folder, sys.path, torch's defaults), and ``timeout`` seconds stop them, as a check's.
    """
    with preserved_state(torch.device("cpu")), interrupts(), deadline(timeout, path):
        return _discover(path, shown or path)


def _discover(path: str, shown: str) -> Discovery:
    module = import_file(Path(path))
    table = _module_table(module)
    classes = list(_classes(module))
    known = {cls.__name__ for cls in classes}
    found = [replace(_classify(cls, module, table, shown), line=_line(cls)) for cls in classes]
    uses = {cls: _functions_named(cls) for cls, f in zip(classes, found) if f.checked and f.kind == "Module"}
    found = [_through(f, cls, uses) for f, cls in zip(found, classes)]
    for name in table:
        if name not in known:
            found.append(Found(name, "?", error=UsageError(
                f"{NAME} of {path} names {name!r}, which is no Function or Module class defined in the file.",
                suggest(name, sorted(known), "its layers"),
            )))
    return Discovery(path, tuple(found))


def _module_table(module: types.ModuleType) -> dict[str, Any]:
    table = vars(module).get(NAME)
    if table is None:
        return {}
    if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
        raise UsageError(
            f"{module.__file__}: the module's {NAME} must be a dict from class names to inputs, found {type(table).__name__}.",
            f'Example: {NAME} = {{"Scale": ["4x3"]}}; or give each class its own {NAME}.',
        )
    return table


def _classes(module: types.ModuleType) -> Iterator[type]:
    """The Function and Module subclasses defined in ``module`` (not imported into it), each once, in order."""
    seen: set[int] = set()
    for value in list(vars(module).values()):
        try:
            ours = isinstance(value, type) and value.__module__ == module.__name__ and issubclass(value, (torch.autograd.Function, torch.nn.Module))
        except Exception:  # noqa: BLE001 -- a class whose attributes raise is no layer of ours
            ours = False
        if ours and id(value) not in seen:
            seen.add(id(value))
            yield value


def _classify(cls: type, module: types.ModuleType, table: dict[str, Any], shown: str) -> Found:
    name = cls.__name__
    kind = "Function" if issubclass(cls, torch.autograd.Function) else "Module"
    if kind == "Function" and not has_backward(cls):
        return Found(name, kind, skipped="no hand-written backward (its backward is torch's)")
    static = kind == "Function" or bool(_functions_named(cls))
    if kind == "Module":
        needs = _required_arguments(cls)
        if needs:
            return Found(name, kind, skipped=f"its constructor needs arguments ({', '.join(needs)}): use a spec, or {shown}:{name} --init")
    try:
        inputs = _inputs_of(cls, module, table)
    except GradcheckError as exc:
        return Found(name, kind, error=exc)
    if inputs is None:
        also = "" if static else " (nor an autograd.Function with a backward in its code)"
        return Found(name, kind, skipped=f"no {NAME}{also}")
    if not static:
        try:
            instance = guarded(f"Constructing {name}", cls)
        except GradcheckError as exc:
            return Found(name, kind, error=exc)
        if not _holds_backward(instance):
            return Found(name, kind, skipped="no hand-written backward: no autograd.Function with one in its code or submodules")
    return Found(name, kind, inputs=inputs)


def has_backward(cls: type) -> bool:
    """A Function subclass whose backward (or vjp) is the user's, not torch's."""
    base = torch.autograd.Function
    return getattr(cls, "backward", None) is not base.backward or getattr(cls, "vjp", None) is not base.vjp


def _required_arguments(cls: type) -> list[str]:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature.parameters.values() if p.default is p.empty and p.kind in kinds]


def _inputs_of(cls: type, module: types.ModuleType, table: dict[str, Any]) -> tuple[InputSpec, ...] | None:
    """The class's inputs from gradcheck_inputs (the module's dict, else the class's), or None where there are none."""
    name = cls.__name__
    if name in table:
        value, where = table[name], f"{NAME}[{name!r}]"
    else:
        try:
            value = inspect.getattr_static(cls, NAME)
        except AttributeError:
            return None
        where = f"{name}.{NAME}"
        if isinstance(value, (staticmethod, classmethod)) or inspect.isfunction(value):
            value = guarded(f"Calling {where}", getattr(cls, NAME))
            where += "()"
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        shown = type(value).__name__ if not isinstance(value, (list, tuple)) else "a list holding " + ", ".join(sorted({type(i).__name__ for i in items if not isinstance(i, str)}))
        raise UsageError(
            f"{where} must be a list of inputs in the --input grammar (strings), found {shown}.",
            f"Example: {EXAMPLE}; literals as '=[1.5, 2.0]', Python values as ':bilinear'. Tensors cannot be repeated by a rerun line.",
        )
    parsed = []
    for i, text in enumerate(items):
        try:
            parsed.append(parse_input(text))
        except UsageError as exc:
            raise UsageError(f"{where}[{i}]: {exc.message}", exc.hint) from None
    return tuple(parsed)


def _functions_named(cls: type) -> set[type]:
    """The Functions with a hand-written backward that a Module class's own code names or holds (no code runs)."""
    found: set[type] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("torch") or klass is object:
            continue
        for value in vars(klass).values():
            if _is_custom_function(value):
                found.add(value)
            fn = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if inspect.isfunction(fn):
                found |= _named_in(fn, CALL_DEPTH, set())
    return found


def _named_in(fn: types.FunctionType, depth: int, seen: set[int]) -> set[type]:
    """The Functions ``fn`` names (as a global, or an attribute of a module it names), and those the
    functions of its own module that it calls name, ``depth`` calls deep."""
    if id(fn.__code__) in seen:
        return set()
    seen.add(id(fn.__code__))
    scope = fn.__globals__
    names = set(_code_names(fn.__code__))
    found: set[type] = set()
    for name in names:
        value = scope.get(name)
        if _is_custom_function(value):
            found.add(value)
        elif isinstance(value, types.ModuleType):
            found |= {v for v in (getattr(value, n, None) for n in names) if _is_custom_function(v)}
        elif inspect.isfunction(value) and depth > 0 and value.__module__ == fn.__module__:
            found |= _named_in(value, depth - 1, seen)
    return found


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # lambdas, comprehensions, nested functions
            yield from _code_names(const)


def _is_custom_function(value: Any) -> bool:
    try:
        return isinstance(value, type) and issubclass(value, torch.autograd.Function) and has_backward(value)
    except Exception:  # noqa: BLE001
        return False


def _holds_backward(instance: torch.nn.Module) -> bool:
    """After construction: a submodule of a class whose code names such a Function, or one held on a module."""
    for sub in instance.modules():
        if sub is not instance and _functions_named(type(sub)):
            return True
        if any(_is_custom_function(v) or _is_custom_function(getattr(v, "__self__", None)) for v in vars(sub).values()):
            return True
    return False


def _through(found: Found, cls: type, uses: dict[type, set[type]]) -> Found:
    """A Function skipped for want of inputs, that a checked Module of the file uses, says so: its backward is checked after all."""
    if found.kind != "Function" or found.skipped is None or not found.skipped.startswith(f"no {NAME}"):
        return found
    users = [module.__name__ for module, functions in uses.items() if cls in functions]
    return found if not users else replace(found, skipped=f"{found.skipped}; checked through {', '.join(users)}")


def _line(cls: type) -> int | None:
    try:
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return None

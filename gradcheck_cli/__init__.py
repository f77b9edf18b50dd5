"""gradcheck: is my backward right?

Library first: :func:`check` (and :func:`check_spec`) return a frozen
:class:`Report`; nothing here prints or exits.  The ``gradcheck`` command in
:mod:`gradcheck_cli.cli` is a thin layer on top.

The names below are imported on first use, so ``import gradcheck_cli`` (and the
pytest plugin, which pytest loads in every run) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "check": "check",
    "check_spec": "check",
    "CheckOptions": "check",
    "TOLERANCES": "check",
    "InputSpec": "config",
    "LayerSpec": "config",
    "GradcheckError": "errors",
    "UsageError": "errors",
    "SpecError": "errors",
    "LayerError": "errors",
    "Report": "report",
    "TensorReport": "report",
}

__all__ = [
    "__version__",
    "check",
    "check_spec",
    "CheckOptions",
    "TOLERANCES",
    "InputSpec",
    "LayerSpec",
    "Report",
    "TensorReport",
    "GradcheckError",
    "UsageError",
    "SpecError",
    "LayerError",
]
assert set(__all__) == {"__version__", *_EXPORTS}

if TYPE_CHECKING:
    from .check import TOLERANCES, CheckOptions, check, check_spec
    from .config import InputSpec, LayerSpec
    from .errors import GradcheckError, LayerError, SpecError, UsageError
    from .report import Report, TensorReport


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Keeps ``gradcheck_cli.check`` the function once the submodule of the same name is imported.

    Importing a submodule binds it as an attribute of the package; for
    ``check`` that would hide the function, so that one binding is skipped.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

"""gradcheck: is my backward right?

Library first: :func:`check` (and :func:`check_spec`) return a frozen
:class:`Report`; nothing here prints or exits.  The ``gradcheck`` command in
:mod:`gradcheck_cli.cli` is a thin layer on top.

The names below are imported on first use, so ``import gradcheck_cli`` (and the
pytest plugin, which pytest loads in every run) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "check": "checker",
    "check_spec": "checker",
    "assert_gradients": "assertions",
    "CheckOptions": "options",
    "TOLERANCES": "options",
    "InputSpec": "spec",
    "LayerSpec": "spec",
    "load_spec": "spec",
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
    "assert_gradients",
    "CheckOptions",
    "TOLERANCES",
    "InputSpec",
    "LayerSpec",
    "load_spec",
    "GradcheckError",
    "UsageError",
    "SpecError",
    "LayerError",
    "Report",
    "TensorReport",
]
assert set(__all__) == {"__version__", *_EXPORTS}

if TYPE_CHECKING:
    from .assertions import assert_gradients
    from .checker import check, check_spec
    from .errors import GradcheckError, LayerError, SpecError, UsageError
    from .options import TOLERANCES, CheckOptions
    from .report import Report, TensorReport
    from .spec import InputSpec, LayerSpec, load_spec


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

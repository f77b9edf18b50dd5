"""gradcheck: is my backward right?

Library first: :func:`check` (and :func:`check_spec`) return a frozen
:class:`Report`; nothing here prints or exits.  The ``gradcheck`` command in
:mod:`gradcheck_cli.cli` is a thin layer on top.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .check import TOLERANCES, CheckOptions, check, check_spec  # noqa: E402
from .config import InputSpec, LayerSpec  # noqa: E402
from .errors import GradcheckError, LayerError, SpecError, UsageError  # noqa: E402
from .report import Report, TensorReport  # noqa: E402

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

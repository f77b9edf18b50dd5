"""The ``gradcheck`` console script (and ``python -m gradcheck_cli``).

Kept apart from :mod:`.cli` so that the supervisor (see :mod:`.supervise`) starts
without importing click, rich or torch.
"""

from __future__ import annotations

import os
import sys

# Bound now: a layer that replaces os._exit (or sys.exit) cannot change how this process ends.
_exit = os._exit


def main() -> None:
    """Run the command, isolated in a child process where it runs the layer's code.

    Ends with ``os._exit``: a thread the layer started and never stopped cannot keep the
    process alive after the report, and an ``atexit`` hook of the layer's cannot change
    the exit status.
    """
    from .streams import ensure_std_fds

    ensure_std_fds()  # before any pipe or file is opened: none may take the number of a closed stdin/stdout
    try:
        code = _run(sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C before gradcheck's own handling was in place (starting up)
        try:
            sys.stderr.write("\nInterrupted.\n")
        except (OSError, ValueError, AttributeError):
            pass
        code = 130
    from . import supervise

    supervise.tell(done=code)
    _flush()
    _exit(code)
    raise SystemExit(code)  # not reached


def _run(args: list[str]) -> int:
    from . import supervise

    if supervise.wants_isolation(args):
        return supervise.supervise(args)
    supervise.connect()
    from .cli import main as command
    from .streams import finish, protect_stdout

    protect_stdout()
    code = command.main(args, prog_name="gradcheck", standalone_mode=False)
    finish()
    return code


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass

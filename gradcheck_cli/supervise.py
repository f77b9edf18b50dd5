"""Isolation: the layer runs in a child process, and this process vouches for the exit status.

A layer's code can end a process in ways no ``try`` can catch: ``os._exit(0)`` in
forward (an exit 0 with no check behind it), a segfault in a C extension (exit
139 with no words), a C-level hang that ignores ``--timeout``, a bare ``except:``
in a loop that swallows every stop. So ``gradcheck run`` and ``gradcheck sweep``
run the whole command in a child process (``python -m gradcheck_cli``, the same
arguments) and wait:

* the child reports over a private pipe where its reports go, which stage of the
  layer's code is running (import, construction, forward, backward) and when its
  ``--timeout`` deadline starts; at the very end it reports its exit status;
* a child that ends without that last word died: exit 1, "the layer's process died
  with SIGSEGV during the forward of X", and the requested reports say so;
* a child still running ``KILL_GRACE_S`` after its deadline is killed: exit 1, and
  the reports say why;
* Ctrl-C reaches both processes; this one waits for the child's interrupted report
  (a second Ctrl-C, or SIGTERM left unanswered for ``KILL_GRACE_S``, kills it).

This process imports neither torch nor click nor rich: isolation costs one small
interpreter start (~40 ms), against a torch import of a second or more. Turn it off
with ``--no-isolate`` (e.g. to step through a layer in a debugger) or
``GRADCHECK_ISOLATE=0``; where ``pass_fds`` is not available (Windows) the command
runs in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

ENV_FD = "GRADCHECK_SUPERVISOR_FD"
ENV_PARENT = "GRADCHECK_SUPERVISOR_PID"
# The child: the same command, without the working folder first on sys.path (`python -m` would
# put it there, and a file named inspect.py or yaml.py in it would shadow the real modules).
CHILD = "import sys; del sys.path[0]; from gradcheck_cli.entry import main; main()"
ENV_ISOLATE = "GRADCHECK_ISOLATE"
# How long a child may run past its --timeout deadline (it is asked to stop every 50 ms
# meanwhile), or past a SIGTERM or a second Ctrl-C, before it is killed.
KILL_GRACE_S = 5.0
ISOLATED_COMMANDS = ("run", "sweep")


# --------------------------------------------------------------------------- the child's side


class _Channel:
    """The child's end of the pipe: one JSON object a line."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.last_stage: str | None = None

    def send(self, **message: Any) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            os.write(self.fd, data)
        except OSError:  # the supervisor went away: nothing to tell
            pass

    def stage(self, what: str) -> None:
        if what != self.last_stage:
            self.last_stage = what
            self.send(stage=what)


_channel: _Channel | None = None


def connect() -> None:
    """In the child: open the channel the supervisor passed, and hide it from the layer's own children."""
    global _channel
    fd, parent = os.environ.pop(ENV_FD, None), os.environ.pop(ENV_PARENT, None)
    if fd is None or not fd.isdigit() or parent != str(os.getppid()):
        return  # not started by a supervisor (a stray variable in the environment): no channel
    try:
        os.fstat(int(fd))
    except OSError:
        return
    _channel = _Channel(int(fd))
    os.set_inheritable(int(fd), False)
    _watch_parent(int(parent))


def ready_for_interrupts() -> None:
    """In the child, when gradcheck's own handlers are about to go in: Ctrl-C is the child's to answer from now.

    The supervisor started it with SIGINT ignored, and answered a Ctrl-C itself until now
    (the child was importing, and a KeyboardInterrupt there can surface as any error).
    """
    if _channel is not None and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _channel.send(ready=True)


def _watch_parent(parent: int) -> None:
    """Where the kernel cannot kill the child with its parent (not Linux): it ends itself, without a report."""
    if sys.platform.startswith("linux"):
        return
    import threading

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="gradcheck-parent-watch", daemon=True).start()


def supervised() -> bool:
    return _channel is not None


def tell(**message: Any) -> None:
    """Tell the supervisor something (no-op when not supervised)."""
    if _channel is not None:
        _channel.send(**message)


def stage(what: str) -> None:
    """The layer's code is about to run ``what`` ('The forward of X')."""
    if _channel is not None:
        _channel.stage(what)


# --------------------------------------------------------------------------- the supervisor's side


def wants_isolation(args: list[str]) -> bool:
    if os.environ.get(ENV_PARENT) == str(os.getppid()) or os.environ.get(ENV_ISOLATE, "1") == "0":
        return False  # the supervised child itself, or isolation turned off
    if not hasattr(os, "fork") or not args or args[0] not in ISOLATED_COMMANDS:
        return False
    words = args[: args.index("--")] if "--" in args else args
    return not any(w in ("--no-isolate", "-h", "--help") for w in words)


class _State:
    """What the child has told so far."""

    def __init__(self) -> None:
        self.outputs: dict[str, str | None] = {}
        self.target: str | None = None
        self.stage: str | None = None
        self.kill_at: float | None = None  # monotonic time after which the child is killed
        self.timeout: float | None = None
        self.done: int | None = None
        self.interrupts = 0
        self.terminated = False
        self.ready = False  # the child listens for Ctrl-C itself
        self.stopped_early = False  # a signal came before it did: it was stopped here

    def read(self, line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if "outputs" in message:
            self.outputs = message["outputs"] or {}
        if "target" in message:
            self.target = message["target"]
        if "stage" in message:
            self.stage = message["stage"]
        if "timeout" in message:
            self.timeout = message["timeout"]
            self.kill_at = None if message["timeout"] is None else time.monotonic() + message["timeout"] + KILL_GRACE_S
        if message.get("ready"):
            self.ready = True
        if "done" in message:
            self.done = int(message["done"])


def supervise(args: list[str]) -> int:
    """Run ``gradcheck ARGS`` in a child process; return the exit status this command ends with.

    The child starts with SIGINT ignored and takes Ctrl-C over once it is ready (it says so):
    a Ctrl-C before that, while it is still importing, is answered here by stopping it -- no
    half-started child printing a KeyboardInterrupt traceback, no child left running.
    """
    state = _State()
    children: list[subprocess.Popen] = []

    def on_signal(signum, frame):
        if signum == signal.SIGINT:
            state.interrupts += 1
        else:
            state.terminated = True
        if not children or not state.ready:
            state.stopped_early = True  # not started, or not yet listening: stop it now
            state.kill_at = time.monotonic()
            return
        _send(children[0], signum)  # a Ctrl-C at the terminal reached the child too: it counts the two as one
        grace = 0.0 if state.interrupts >= 3 else KILL_GRACE_S
        state.kill_at = min(state.kill_at or float("inf"), time.monotonic() + grace) if state.interrupts >= 2 or state.terminated else state.kill_at

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    read_end, write_end = os.pipe()
    killed = False
    try:
        env = {**os.environ, ENV_FD: str(write_end), ENV_PARENT: str(os.getpid())}
        children.append(subprocess.Popen([sys.executable, "-c", CHILD, *args], pass_fds=(write_end,), env=env, preexec_fn=_in_child))
        os.close(write_end)
        child = children[0]
        buffer = b""
        os.set_blocking(read_end, False)
        while True:
            buffer = _drain(read_end, buffer, state)
            if child.poll() is not None:
                _drain(read_end, buffer, state)
                break
            if state.kill_at is not None and time.monotonic() >= state.kill_at:
                child.kill()
                child.wait()
                killed = True
                break
            time.sleep(0.02)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(read_end)
    asked = signal.SIGTERM if state.terminated else signal.SIGINT if state.interrupts else None
    if state.done is not None and not killed:
        if asked is not None and state.done == 0:  # the run was asked to stop, and the layer would not let it
            _say(_ignored(asked))
            return 128 + asked
        return state.done
    if state.stopped_early and state.done is None:
        _say_interrupted(state)
        return 128 + (asked or signal.SIGINT)
    if asked is not None and not killed:  # it died of the signal it was sent (the layer reset the handler), or at start-up
        result = _died(children[0].returncode, state, killed, report_only=True)
        return 128 + asked if result is None else result
    return _died(children[0].returncode, state, killed)


def _ignored(signum: int):
    from .errors import LayerError

    name = signal.Signals(signum).name
    return LayerError(
        f"The run was asked to stop ({name}) but the check went on to its end: the layer's code replaced gradcheck's "
        f"{name} handler. Its report stands, but the run counts as interrupted.",
        f"Do not ignore or replace {name} in the layer's code.",
    )


def _say_interrupted(state: "_State", when: str = "while starting up: nothing was checked") -> None:
    try:
        name = "SIGTERM" if state.terminated else "SIGINT"
        sys.stderr.write(f"\nInterrupted ({name}) {when}.\n")
    except (OSError, ValueError):
        pass


def _in_child() -> None:
    """Run in the child before it starts: Ctrl-C ignored until it is ready for it (see supervise), and
    on Linux, the child dies with the supervisor (a SIGKILLed gradcheck leaves no check running
    on, to write a report over a later run's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _send(child: subprocess.Popen, signum: int) -> None:
    try:
        child.send_signal(signum)
    except OSError:
        pass


def _drain(fd: int, buffer: bytes, state: _State) -> bytes:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        except OSError:
            break
        if not chunk:
            break
        buffer += chunk
    *lines, buffer = buffer.split(b"\n")
    for line in lines:
        state.read(line.decode(errors="replace"))
    return buffer


def _died(returncode: int, state: _State, killed: bool, report_only: bool = False) -> int | None:
    """The child ended without saying how: say it here, write the reports, and return the exit status.

    ``report_only``: it ended because of the signal it was sent: an interrupted report, and None.
    """
    from .errors import LayerError, UsageError
    from .report import EXIT_FAIL, RunResult, SuiteResult

    if report_only:
        signum = signal.SIGTERM if state.terminated else signal.SIGINT
        _say_interrupted(state, "before the check finished")
        _write(state.outputs, RunResult((SuiteResult(state.target or "the layer", signum=signum),), signum=signum))
        return None

    where = _during(state.stage)
    target = state.target or "the layer"
    signum = None
    if killed and (state.interrupts or state.terminated or state.timeout is None):
        signum = signal.SIGTERM if state.terminated else signal.SIGINT
        message = f"The check of {target} did not stop when asked{where}; its process was killed."
        error = LayerError(message, "The layer may be stuck in C code, or catch every exception (a bare 'except:').")
    elif killed:
        message = (
            f"The check of {target} did not finish within --timeout {state.timeout:g}s and did not stop when asked{where} "
            f"(it catches every exception, or hangs in C code); its process was killed after {KILL_GRACE_S:g}s more."
        )
        error = LayerError(message, "Look for an endless loop, a bare 'except:' or a blocking call in the layer.")
    elif returncode < 0:
        name = _signal_name(-returncode)
        error = LayerError(
            f"The layer's process died with {name}{where}; no verdict could be reached.",
            "A crash in C code (a custom extension, a kernel) kills the process: run the layer on its own to find it.",
        )
    elif state.stage is None and returncode == 2:
        return returncode  # click refused the command line before anything ran: its message is out already
    else:
        error = LayerError(
            f"The layer's process exited with status {returncode}{where}, before the check finished (os._exit in the layer, "
            "or a crash of gradcheck itself); no verdict could be reached.",
            "Remove os._exit from the layer's code; if it has none, rerun with --no-isolate --debug to see where it ended.",
        )
    _say(error)
    result = RunResult((SuiteResult(target, error=error, signum=signum),))
    _write(state.outputs, result)
    return 128 + signum if signum is not None else EXIT_FAIL if not isinstance(error, UsageError) else 2


def _during(stage: str | None) -> str:
    """' while importing X' / ' during the forward of X' for the stage the child last reported."""
    if not stage:
        return ""
    if stage.startswith("Importing "):
        return f" while importing {stage[len('Importing '):]}"
    return f" during {stage[:1].lower()}{stage[1:]}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _say(error) -> None:
    from .streams import printable

    try:
        sys.stderr.write(f"Error: {printable(error.message)}\n")
        if error.hint:
            sys.stderr.write(f"Hint: {printable(error.hint)}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _write(told: dict[str, str | None], result) -> None:
    from .errors import GradcheckError
    from .outputs import Outputs

    try:
        Outputs.from_told(told).write(result)
    except GradcheckError as exc:  # a report that cannot be written: say so, keep the status
        _say(exc)

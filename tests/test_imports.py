"""What each entry point imports: the costs users pay before any check runs.

Each check needs a fresh interpreter, and an interpreter costs a second or more of this
suite, so the checks that can share one do, in the order that keeps them honest (the
lightest imports first). What they assert:

* the supervisor (``gradcheck run`` starts it first, see supervise.py) and the package
  itself import neither torch nor click nor rich nor numpy;
* the Python API checks a layer without importing click or rich;
* the pytest plugin (which pytest loads in every run) imports neither torch nor numpy;
* ``gradcheck --help`` and ``--version`` import no torch (they answer at once);
* ``python -m gradcheck_cli --help`` works.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LIBRARY = """
import sys
heavy = ('torch', 'click', 'rich', 'numpy')
import gradcheck_cli.entry, gradcheck_cli.supervise, gradcheck_cli.outputs, gradcheck_cli.report, gradcheck_cli.junit
assert not [m for m in heavy if m in sys.modules], ('supervisor', [m for m in heavy if m in sys.modules])
import gradcheck_cli
assert 'torch' not in sys.modules, 'import gradcheck_cli imported torch'
import torch
report = gradcheck_cli.check(lambda x: x * 2, [torch.randn(3)])
assert report.passed, report
assert not [m for m in ('click', 'rich') if m in sys.modules], 'the API imported click or rich'
"""

COMMAND = """
import io, sys, contextlib
import gradcheck_cli.pytest_plugin
assert not [m for m in ('torch', 'numpy') if m in sys.modules], 'the pytest plugin imported torch or numpy'
from gradcheck_cli.cli import main
for args in (['--help'], ['--version'], ['run', '--help'], ['sweep', '--help']):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main.main(args, standalone_mode=False) == 0, args
assert 'torch' not in sys.modules, 'help or version imported torch'
"""


def test_what_the_library_and_the_supervisor_import() -> None:
    subprocess.run([sys.executable, "-c", LIBRARY], check=True, cwd=ROOT)


def test_what_the_command_imports_before_it_checks() -> None:
    subprocess.run([sys.executable, "-c", COMMAND], check=True, cwd=ROOT)
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "gradcheck" in proc.stdout and "run" in proc.stdout

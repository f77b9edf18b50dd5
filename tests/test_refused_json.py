"""A command line click refuses still leaves a JSON report of this run -- on stdout too, with --json -."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"


@pytest.mark.parametrize("bad", [["--dtype", "float31"], ["--kinks", "maybe"], ["--no-such-option"]])
def test_a_refused_command_line_prints_its_json_report_on_stdout(run_cli, bad) -> None:
    code, out, err = run_cli("run", f"{SIMPLE}:Square", "--input", "3", "--json", "-", *bad)
    assert code == 2 and "Error" in err
    report = json.loads(out)  # stdout holds the JSON report alone
    assert report["passed"] is False and report["exit_code"] == 2 and report["status"] == "ERROR"
    assert "refused" in report["error"] and bad[0] in report["error"]

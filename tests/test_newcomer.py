"""What a newcomer tripped over: specs that meant something else from another folder, a JUnit report
written to a file named '-', duplicate notes, README commands that did not run.

Each test asserts what the user sees (through the command line where the user meets it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from gradcheck_cli import check_spec
from gradcheck_cli.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def gradcheck(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command as a user types it: its own process (and its supervised child), in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "GITHUB_ACTIONS", "GRADCHECK_ISOLATE", "FORCE_COLOR")}
    return subprocess.run(
        [sys.executable, "-m", "gradcheck_cli", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------- 1. a spec's dotted layer, wherever gradcheck runs

LAYERS = """\
    import torch
    from torch import nn

    from ._ops import twice  # a relative import inside the package


    class _Resample(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return twice(x) * FACTOR

        @staticmethod
        def backward(ctx, g):
            return twice(g) * BACKWARD_FACTOR


    class Resample(nn.Module):
        def forward(self, x):
            return _Resample.apply(x)


    class Plain(nn.Module):
        def forward(self, x):
            return 2 * x * FACTOR
    """


def project(root: Path, package: str, backward_factor: float = 3.0, marker: str = "pyproject.toml") -> Path:
    """root/{pyproject.toml, PACKAGE/{__init__,_ops,layers}.py, specs/resample.yaml}; the spec's path."""
    write(root / marker, "")
    write(root / package / "__init__.py", "")
    write(root / package / "_ops.py", "def twice(x):\n    return 2 * x\n")
    write(root / package / "layers.py", f"FACTOR = 3.0\nBACKWARD_FACTOR = {backward_factor}\n" + textwrap.dedent(LAYERS))
    return write(root / "specs" / "resample.yaml", f"layer: {package}.layers:Resample\ninputs:\n  - shape: [3, 4]\n")


@pytest.fixture
def package_name():
    """A package name no other test uses, taken off sys.modules afterwards whatever happened."""
    name = f"gc_newc_{uuid.uuid4().hex[:8]}"
    yield name
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def test_a_spec_with_a_dotted_layer_runs_from_its_own_folder(tmp_path: Path, package_name: str) -> None:
    spec = project(tmp_path / "proj", package_name)
    from_specs = gradcheck("run", spec.name, "-q", cwd=spec.parent)
    assert from_specs.returncode == 0, from_specs.stdout + from_specs.stderr
    assert from_specs.stdout.startswith("PASS: all 1 tensor(s) match (12 elements checked)."), from_specs.stdout


def test_a_folder_of_specs_with_dotted_layers_runs_from_anywhere(run_cli, tmp_path: Path, package_name: str, monkeypatch) -> None:
    project(tmp_path / "proj", package_name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli("run", "../proj/specs/", "-q")
    assert code == 0, out + err
    assert "resample.yaml: PASS" in out
    monkeypatch.chdir(tmp_path / "proj")  # from the project root, as it always worked
    code, out, err = run_cli("run", "specs/resample.yaml", "-q")
    assert code == 0, out + err


def test_a_spec_import_leaves_the_callers_sys_path_and_sys_modules_as_they_were(tmp_path: Path, package_name: str, monkeypatch) -> None:
    spec = project(tmp_path / "proj", package_name)
    monkeypatch.chdir(tmp_path)
    path, modules = list(sys.path), set(sys.modules)
    report = check_spec(load_spec(spec))
    assert report.passed, str(report)
    assert sys.path == path
    assert not [m for m in sys.modules if m not in modules and m.startswith(package_name)]


def test_two_projects_with_a_package_of_the_same_name_each_get_their_own(run_cli, tmp_path: Path, package_name: str, monkeypatch) -> None:
    right = project(tmp_path / "right", package_name, backward_factor=3.0)
    wrong = project(tmp_path / "wrong", package_name, backward_factor=2.0)  # the backward forgets FACTOR
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", right, wrong, "--json", tmp_path / "both.json", "-q")
    assert code == 1, out + err
    specs = json.loads((tmp_path / "both.json").read_text())["specs"]
    assert [(Path(s["spec"]).parent.parent.name, s["passed"]) for s in specs] == [("right", True), ("wrong", False)]


def test_a_dotted_reference_in_a_spec_resolves_like_its_layer(run_cli, tmp_path: Path, package_name: str, monkeypatch) -> None:
    spec = project(tmp_path / "proj", package_name)
    spec.write_text(spec.read_text() + f"reference: {package_name}.layers:Plain\n")
    monkeypatch.chdir(spec.parent)
    code, out, err = run_cli("run", spec.name, "-q")
    assert code == 0, out + err


def test_sys_path_comes_first_then_the_specs_folders(run_cli, tmp_path: Path, package_name: str, monkeypatch) -> None:
    """A package the current folder has (python -m's rule) wins over the spec's project's: sys.path first."""
    spec = project(tmp_path / "proj", package_name, backward_factor=2.0)  # wrong here
    project(tmp_path / "here", package_name, backward_factor=3.0)  # right in the current folder
    monkeypatch.chdir(tmp_path / "here")
    code, out, err = run_cli("run", spec, "-q")
    assert code == 0, out + err


def test_the_search_stops_at_the_project_root_and_the_error_says_where_it_looked(run_cli, tmp_path: Path, package_name: str, monkeypatch) -> None:
    project(tmp_path, package_name)  # the package sits above the project root below
    spec = write(tmp_path / "proj" / "specs" / "resample.yaml", f"layer: {package_name}.layers:Resample\ninputs:\n  - shape: [3]\n")
    write(tmp_path / "proj" / "setup.cfg", "")
    monkeypatch.chdir(spec.parent)
    code, out, err = run_cli("run", spec.name)
    assert code == 2 and out == ""
    assert f"Cannot import module '{package_name}.layers'" in err and "no such module" in err
    assert f"{spec.parent.resolve()}, {(tmp_path / 'proj').resolve()}." in err, err
    assert "Traceback" not in err
    # A .git (a folder, or a worktree's file) marks the root as well.
    (tmp_path / "proj" / "setup.cfg").unlink()
    (tmp_path / "proj" / ".git").write_text("gitdir: elsewhere\n")
    code, _, err = run_cli("run", spec.name)
    assert code == 2 and f"{(tmp_path / 'proj').resolve()}." in err


def test_sweep_of_a_spec_with_a_dotted_layer_from_its_folder(run_cli, tmp_path: Path, package_name: str, monkeypatch) -> None:
    spec = project(tmp_path / "proj", package_name)
    monkeypatch.chdir(spec.parent)
    code, out, err = run_cli("sweep", spec.name, "--points", "3", "-q")
    assert code == 0, out + err


def test_sweep_leaves_the_callers_sys_path_as_it_was() -> None:
    from gradcheck_cli.sweep import sweep

    path = list(sys.path)
    sweep(f"{ROOT / 'layer_specs' / 'gauss_filter.py'}:GaussFilter", ["1x12"], points=2)
    assert sys.path == path


# --------------------------------------------------------------------------- 2. --junit-xml - is stdout, as --json - is

GAUSS_SPEC = ROOT / "layer_specs" / "gauss_filter.yaml"


def test_junit_xml_dash_writes_the_xml_to_stdout_and_the_table_to_stderr(run_cli, tmp_path: Path, monkeypatch) -> None:
    import xml.etree.ElementTree as ET

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", GAUSS_SPEC, "--junit-xml", "-")
    assert code == 0, err
    suites = ET.fromstring(out)  # stdout is the XML alone
    assert suites.tag == "testsuites" and suites.get("tests") == "3" and suites.get("failures") == "0"
    assert "│ sigma " in err and "PASS: all 3 tensor(s) match" in err  # the table moved to stderr, as with --json -
    assert not (tmp_path / "-").exists(), "a file named '-' was written"


def test_junit_xml_dash_in_a_real_process_and_when_the_layer_fails(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    bug = ROOT / "layer_specs" / "broken" / "gauss_filter_conv_bug.yaml"
    proc = gradcheck("run", bug, "--junit-xml", "-", "-q", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    suites = ET.fromstring(proc.stdout)
    assert suites.get("failures") == "1"
    assert proc.stderr.startswith("FAIL: 1 of 3 tensor(s) do not match: x."), proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("junit", ["-", "/dev/stdout"])
def test_json_and_junit_xml_both_on_stdout_are_refused(run_cli, tmp_path: Path, monkeypatch, junit: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", GAUSS_SPEC, "--json", "-", "--junit-xml", junit)
    assert code == 2
    assert out == ""  # neither report: mixed, they would be unreadable
    message = err[err.index("Error") :].strip()
    assert "--json -" in message and f"--junit-xml {junit}" in message and "both write to stdout" in message
    assert "\n\n" not in message and len(message.splitlines()) == 2 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_refused_command_line_with_junit_xml_dash_says_so_in_xml_on_stdout(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    proc = gradcheck("run", GAUSS_SPEC, "--junit-xml", "-", "--dtype", "float31", cwd=tmp_path)
    assert proc.returncode == 2
    error = ET.fromstring(proc.stdout).find(".//error")
    assert error is not None and "float31" in error.get("message")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 4. each note once

HIGHER = ROOT / "tests" / "layers" / "higher.py"


def test_a_float32_double_backward_run_says_its_float64_note_once(run_cli, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, out, err = run_cli("run", f"{HIGHER}:Softplus", "-i", "4x5", "--order", "2", "--dtype", "float32", "--json", report)
    assert code == 0, out + err
    shown = [line for line in err.splitlines() if line.strip().startswith("note:")]  # the table is on stdout; notes too
    shown += [line for line in out.splitlines() if line.strip().startswith("note:")]
    assert len([line for line in shown if "numeric side computed in float64" in line]) == 1, out
    notes = json.loads(report.read_text())["notes"]
    assert len([n for n in notes if "numeric side computed in float64" in n]) == 1, notes
    assert len(notes) == len(set(notes))


def test_notes_are_unique_in_the_order_first_said() -> None:
    from gradcheck_cli.checker import said_once

    notes = ["b", "a", "b", "double backward: a", "double backward: c", "c", "double backward: c"]
    assert said_once(notes) == ("b", "a", "c")
    assert said_once(["double backward: only there"]) == ("double backward: only there",)


# --------------------------------------------------------------------------- 3. every README command runs as shown

README = ROOT / "README.md"
EXAMPLES = ROOT / "layer_specs" / "examples"


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """The fenced blocks of a Markdown text: (info string, lines)."""
    blocks, info, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if info is None:
                info, lines = line[3:].strip(), []
            else:
                blocks.append((info, lines))
                info = None
        elif info is not None:
            lines.append(line)
    return blocks


def _split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the comment starts at the first '#' outside quotes after a blank."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def _verdict(output: list[str]) -> int:
    """The exit status a transcript's output shows: FAIL is 1, an Error 2, else 0."""
    if any(line.startswith("FAIL") for line in output):
        return 1
    if any(line.startswith("Error:") for line in output):
        return 2
    return 0


def readme_commands() -> list[tuple[str, int, list[str]]]:
    """(command line, expected exit status, the output the README shows) of every gradcheck command
    a reader can paste: the lines of ```bash blocks, and the '$ ' lines of transcripts."""
    import re

    found = []
    for info, lines in _blocks(README.read_text(encoding="utf-8")):
        if info == "bash":
            for line in lines:
                command, comment = _split_comment(line)
                if re.match(r"^\(?(cd \S+ && )?gradcheck\b", command) or " && gradcheck " in command:
                    said = re.search(r"\bexit (\d+)\b", comment)
                    if not command.startswith(("(cd ", "cd ")) and " && gradcheck " in command:
                        command = command[command.index("gradcheck ") :]  # what follows the install steps
                    found.append((command, int(said.group(1)) if said else 0, []))
        elif info == "":
            for i, line in enumerate(lines):
                if not line.startswith("$ ") or not re.match(r"^(\w+=\S+ )*gradcheck\b", line[2:]):
                    continue
                rest = lines[i + 1 :]
                end = next((j for j, later in enumerate(rest) if later.startswith("$ ")), len(rest))
                output, code = rest[:end], _verdict(rest[:end])
                if end < len(rest) and rest[end] == "$ echo $?":
                    code = int(rest[end + 1])
                found.append((line[2:], code, output))
    return found


def _run_line(run_cli, command: str, monkeypatch, *extra: str):
    """Run one README command line in-process, from the checkout's root (or the folder it cd's to)."""
    import re
    import shlex

    line = command.strip()
    cwd = ROOT
    sub = re.fullmatch(r"\(cd (\S+) && (.*)\)", line) or re.fullmatch(r"cd (\S+) && (.*)", line)
    if sub:
        cwd, line = ROOT / sub.group(1), sub.group(2)
    words = shlex.split(line)
    env = {}
    while words and re.fullmatch(r"\w+=\S*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[0] == "gradcheck", command
    monkeypatch.chdir(cwd)
    return run_cli(*words[1:], *extra, env={"COLUMNS": None, "GITHUB_ACTIONS": None, **env})


COMMANDS = readme_commands()


def test_the_readme_has_its_commands() -> None:
    lines = [c for c, _, _ in COMMANDS]
    assert len(lines) >= 20, lines
    for shown in ("gradcheck run layer_specs/examples/mylayers.py -q", "gradcheck run layer_specs/ --recursive"):
        assert any(c.startswith(shown) for c in lines), shown


@pytest.mark.parametrize(("command", "expected", "output"), COMMANDS, ids=[c for c, _, _ in COMMANDS])
def test_a_readme_command_runs_as_shown(run_cli, monkeypatch, tmp_path: Path, command: str, expected: int, output: list[str]) -> None:
    import re

    report = tmp_path / "report.json"
    code, out, err = _run_line(run_cli, command, monkeypatch, "--json", str(report)) if command.split()[1:2] == ["run"] else _run_line(run_cli, command, monkeypatch)
    assert code == expected, f"{command}\nexit {code}, the README says {expected}\n{out}{err}"
    shown = "\n".join(out.splitlines() + err.splitlines())
    # The verdict lines the README shows (up to the worst element's numbers) are the tool's.
    for line in output:
        verdict = re.match(r"^(\S+: )?(PASS|FAIL|SKIPPED): .*", line)
        if verdict:
            head = line.split(" Worst:")[0]
            assert head in shown, f"{command}: the README shows\n{line}\nbut the tool printed\n{shown}"
    # The tensors of a table it shows are the tensors the tool checks, under the names it prints.
    rows = [line.strip("│").split("│")[0].strip() for line in output if line.startswith("│")]
    if rows and not any(line == "summary" for line in output) and report.exists():
        names = [t["name"] for t in json.loads(report.read_text())["tensors"]]
        assert sorted(set(r for r in rows if r)) == sorted(names), command


def test_the_readmes_example_specs_are_the_files() -> None:
    """A spec the README shows under a layer_specs/examples/ name is that file, word for word."""
    shown = {}
    for info, lines in _blocks(README.read_text(encoding="utf-8")):
        if info == "yaml" and lines and lines[0].startswith("# layer_specs/examples/"):
            name = lines[0][2:].split(" ")[0]
            shown[name] = "\n".join(lines) + "\n"
    assert len(shown) >= 6, sorted(shown)
    for name, text in shown.items():
        assert (ROOT / name).read_text(encoding="utf-8") == text, name


@pytest.mark.parametrize(
    ("target", "inputs", "options"),
    [
        ("higher.py:Softplus", ["4x5"], {"order": 2}),
        ("higher.py:CubeJvp", ["4x6"], {"forward_ad": True, "order": 2}),
        ("higher.py:FastLinear", ["16x64"], {"dtype": "float32", "reference": str(EXAMPLES / "higher.py:PlainLinear")}),
        ("higher.py:FastLinear", ["4x64"], {"dtype": "float32"}),
        ("pool.py:Pool2", ["3x31"], {}),
        ("resample.py:Blur", ["1x2x16", "=[0.1, 0.5, 0.4]"], {"constant": ["taps"]}),
        ("mylib/layers.py:ScaledSwish", ["2x4"], {"args": (4,), "kwargs": {"beta": 0.5}}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_the_examples_correct_layers_pass(target: str, inputs: list, options: dict) -> None:
    """The README's example layers that are meant to be right are right (their buggy twins fail where it says)."""
    from gradcheck_cli import check

    report = check(f"{EXAMPLES / target}", inputs, **options)
    assert report.passed, str(report)


# --------------------------------------------------------------------------- siblings found on the way


def test_a_skipped_layers_hint_names_the_file_as_the_user_did(run_cli, tmp_path: Path, monkeypatch) -> None:
    """'use a spec, or layers.py:Gate --init' named the file without its folder: pasted, it did not run."""
    import re

    write(tmp_path / "proj" / "layers.py", """\
        import torch
        from torch import nn


        class _Mul(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, w):
                ctx.save_for_backward(x, w)
                return x * w

            @staticmethod
            def backward(ctx, g):
                x, w = ctx.saved_tensors
                return g * w, (g * x).reshape(-1, w.numel()).sum(0)


        class Gate(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.weight = nn.Parameter(torch.ones(width))

            def forward(self, x):
                return _Mul.apply(x, self.weight)
        """)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", "proj/layers.py", "-q")
    assert code == 2, out + err  # nothing in it can be checked as it stands
    hint = re.search(r"use a spec, or (\S+) --init", out + err)
    assert hint is not None and hint.group(1) == "proj/layers.py:Gate", out + err
    code, out, err = run_cli("run", hint.group(1), "--init", "3", "--input", "2x3", "-q")
    assert code == 0, out + err


def test_the_help_examples_name_files_that_exist() -> None:
    """`gradcheck run --help` and `gradcheck sweep --help` show commands to paste: their files exist."""
    import re
    import shlex

    from gradcheck_cli.cli import RUN_EPILOG, SWEEP_EPILOG

    lines = [line.strip() for text in (RUN_EPILOG, SWEEP_EPILOG) for line in text.splitlines() if line.strip().startswith("gradcheck ")]
    assert len(lines) >= 10
    for line in lines:
        for word in shlex.split(line)[2:]:
            if word.startswith("-") or "=" in word.split(":")[0]:
                continue
            path = re.sub(r"\[.*\]$", "", word).split(":")[0]
            if "/" in path or path.endswith((".py", ".yaml")):
                matches = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
                assert matches, f"{line}: {path} does not exist"
    assert "--only input0" not in RUN_EPILOG  # inputs are named by the layer's signature


def test_bundled_descriptions_name_inputs_as_the_tool_does(run_cli, monkeypatch) -> None:
    """`gradcheck list` shows the descriptions: 'wrong input0 only' named a tensor the report calls x."""
    import re

    monkeypatch.chdir(ROOT)
    code, out, _ = run_cli("list", "layer_specs/broken/")
    assert code == 0
    assert "(wrong x only)" in out and "input0" not in out
    for path in sorted((ROOT / "layer_specs").rglob("*.yaml")):
        assert not re.search(r"\binput\d", load_spec(path).description or ""), path


@pytest.mark.parametrize("command", [["run", str(ROOT / "layer_specs" / "broken" / "gauss_filter_conv_bug.yaml")], ["sweep", str(GAUSS_SPEC), "--points", "3"]])
def test_plot_dash_is_refused_not_a_file_named_dash(run_cli, tmp_path: Path, monkeypatch, command: list[str]) -> None:
    """--plot - wrote a PNG named '-' (as --junit-xml - wrote XML there): a plot is a file, said before anything runs."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*command, "--plot", "-")
    assert code == 2, out + err
    assert "--plot -" in err and "file name" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_reference_file_in_tool_gradcheck_means_the_same_from_a_subfolder(run_cli, tmp_path: Path, monkeypatch) -> None:
    """[tool.gradcheck] reference = "higher.py:PlainLinear" was looked up from the current folder ('does not
    exist' one folder down); like specs, it is relative to the pyproject.toml."""
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck]\nreference = "higher.py:PlainLinear"\n')
    (tmp_path / "higher.py").write_text((EXAMPLES / "higher.py").read_text())
    (tmp_path / "sub").mkdir()
    for folder, target in ((tmp_path, "higher.py:FastLinear"), (tmp_path / "sub", "../higher.py:FastLinear")):
        monkeypatch.chdir(folder)
        code, out, err = run_cli("run", target, "-i", "4x64", "--json", tmp_path / "r.json", "-q")
        assert code == 0, out + err
        assert json.loads((tmp_path / "r.json").read_text())["config"]["reference"] == f"{(tmp_path / 'higher.py').resolve()}:PlainLinear"


def test_a_refused_command_line_with_json_to_dev_stdout_reports_there_without_a_traceback(tmp_path: Path) -> None:
    """--json /dev/stdout is --json -; on a command line click refused, it ended in an IndexError traceback."""
    proc = gradcheck("run", GAUSS_SPEC, "--json", "/dev/stdout", "--dtype", "float31", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is False and "float31" in data["error"]


def test_a_specs_layer_file_is_still_imported_once_for_all_its_checks(tmp_path: Path, package_name: str) -> None:
    """Forgetting what the spec's folders made importable must not forget a layer file imported by its path
    (the cache that imports it once for every check of it) -- nor does a spec that never needed the search."""
    log = tmp_path / "imports.log"
    write(tmp_path / "proj" / "pyproject.toml", "")
    write(tmp_path / "proj" / "specs" / "counted.py", f"""\
        import torch
        open({str(log)!r}, "a").write("imported\\n")


        class Double(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return 2 * x

            @staticmethod
            def backward(ctx, g):
                return 2 * g
        """)
    spec = write(tmp_path / "proj" / "specs" / "counted.yaml", "layer: counted.py:Double\ninputs:\n  - shape: [3]\n")
    for _ in range(3):
        assert check_spec(load_spec(spec)).passed
    assert log.read_text().splitlines() == ["imported"]

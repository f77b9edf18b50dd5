"""Repro lines: for each failing tensor, a command that rechecks just it -- and running it does."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from gradcheck_cli import check
from gradcheck_cli.render import input_arg, repro_commands
from gradcheck_cli.spec import InputSpec

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "layer_specs"
BORDER = Path(__file__).resolve().parent / "layers" / "border.py"
HEADER = "rerun only a failing tensor:"


def repro_lines(stdout: str) -> list[str]:
    """The printed commands (the lines under the header that start with 'gradcheck run')."""
    return [line.strip() for line in stdout.splitlines() if line.strip().startswith("gradcheck run ")]


def rerun(run_cli, line: str):
    argv = shlex.split(line)
    assert argv[:2] == ["gradcheck", "run"]
    return run_cli(*argv[1:])


def tensor_rows(stdout: str, names: list[str]) -> list[str]:
    """Which of ``names`` have a row in the report table."""
    return [n for n in names if any(line.startswith(f"│ {n} ") for line in stdout.splitlines())]


@pytest.mark.parametrize(
    "args, failing, others",
    [
        ([f"{BORDER}:ScaledBorderBug", "--input", "4x6"], "x", ["weight"]),
        (
            [f"{SPECS}/gauss_filter.py:GaussianConvFunctionConvBug", "--input", "1x40", "--input", "=4.5", "--input", "=-1.5"],
            "x",
            ["sigma", "mu"],
        ),
        ([str(SPECS / "broken" / "gauss_filter_mu_bug.yaml")], "mu", ["x", "sigma"]),
        ([str(SPECS / "broken" / "gauss_filter_conv_bug.yaml"), "--input", "2x30", "--seed", "3"], "x", ["sigma", "mu"]),
    ],
)
def test_printed_line_reproduces_the_failure_of_only_that_tensor(run_cli, args, failing, others) -> None:
    code, out, _ = run_cli("run", *args)
    assert code == 1
    assert HEADER in out
    (line,) = repro_lines(out)
    assert f"--only {failing}" in line
    assert tensor_rows(out, [failing, *others]) == [failing, *others]

    code, out2, _ = rerun(run_cli, line)
    assert code == 1
    assert tensor_rows(out2, [failing, *others]) == [failing]
    assert "FAIL: 1 of 1 tensor(s) do not match" in out2
    # The same element is the worst, with the same values: the check really is the same.
    worst = out.split("Worst: ")[1].splitlines()[0]
    assert worst in out2


def test_line_carries_every_setting_that_changes_the_check(run_cli) -> None:
    code, out, _ = run_cli(
        "run", f"{BORDER}:BorderBug", "--input", "40x30", "--dtype", "float32", "--numeric-dtype", "float64",
        "--max-elements", "100", "--no-weighted-loss", "--kinks", "fail", "--seed", "7", "--eps", "3e-4", "--rtol", "0.01", "--atol", "1e-5",
    )  # fmt: skip
    assert code == 1
    (line,) = repro_lines(out)
    argv = shlex.split(line)
    for pair in [("--seed", "7"), ("--dtype", "float32"), ("--numeric-dtype", "float64"), ("--eps", "0.0003"), ("--rtol", "0.01"),
                 ("--atol", "1e-05"), ("--max-elements", "100"), ("--kinks", "fail"), ("--input", "40x30")]:  # fmt: skip
        i = argv.index(pair[0])
        assert argv[i + 1] == pair[1], pair
    assert "--no-weighted-loss" in argv
    code, out2, _ = rerun(run_cli, line)
    assert code == 1
    assert out.split("Worst: ")[1].splitlines()[0] in out2


def test_folder_run_prints_one_line_per_failing_tensor_and_each_reproduces(run_cli) -> None:
    code, out, _ = run_cli("run", SPECS / "broken")
    assert code == 1
    lines = repro_lines(out)
    assert len(lines) == 4  # one failing tensor in each broken spec
    for line in lines:
        spec = shlex.split(line)[2]
        assert Path(spec).parent == SPECS / "broken"
        code, out2, _ = rerun(run_cli, line)
        assert code == 1, line
        assert "FAIL: 1 of 1 tensor(s) do not match" in out2


def test_no_line_when_passing_or_quiet(run_cli) -> None:
    code, out, _ = run_cli("run", f"{BORDER}:Smooth", "--input", "4x6")
    assert code == 0 and HEADER not in out and not repro_lines(out)
    code, out, err = run_cli("run", f"{BORDER}:BorderBug", "--input", "4x6", "-q")
    assert code == 1 and not repro_lines(out) and not repro_lines(err)


def test_lines_go_to_stdout_and_are_never_wrapped(run_cli, tmp_path: Path) -> None:
    deep = tmp_path / ("a_long_folder_name_" * 6) / "with space"
    deep.mkdir(parents=True)
    layer = deep / "border.py"
    layer.write_text(BORDER.read_text())
    code, out, err = run_cli("run", f"{layer}:BorderBug", "--input", "4x6")
    assert code == 1 and not repro_lines(err)
    (line,) = repro_lines(out)
    assert len(line) > 160  # longer than the non-terminal console width
    assert shlex.split(line)[2] == f"{layer}:BorderBug"  # quoted: the space survives


def test_repro_commands_is_a_pure_function() -> None:
    from gradcheck_cli.load import import_file

    layers = import_file(BORDER)
    report = check(layers.ScaledBorderBug, ["3x4"], seed=5)
    commands = repro_commands(report, "my file.py:ScaledBorderBug", ["--input", input_arg(InputSpec(shape=(3, 4)))])
    assert list(commands) == ["x"]
    argv = shlex.split(commands["x"])
    assert argv[:6] == ["gradcheck", "run", "my file.py:ScaledBorderBug", "--only", "x", "--input"]
    assert argv[argv.index("--seed") + 1] == "5"
    assert float(argv[argv.index("--eps") + 1]) == report.config["eps"]  # exact round trip


@pytest.mark.parametrize(
    "spec, text",
    [(InputSpec(shape=(1, 100)), "1x100"), (InputSpec(shape=()), "scalar"), (InputSpec(value=4.5), "=4.5"),
     (InputSpec(value=[[1, 2], [3, 4]]), "=[[1,2],[3,4]]"), (InputSpec(value=-19.5), "=-19.5")],
)  # fmt: skip
def test_input_arg_round_trips(spec: InputSpec, text: str) -> None:
    from gradcheck_cli.inputs import parse_input

    assert input_arg(spec) == text
    assert parse_input(text) == spec

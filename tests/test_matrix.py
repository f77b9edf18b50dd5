"""One spec, many checks (issue 16, part 4): ``matrix:`` read strictly, expanded, named, picked, collapsed,
and each combination reported as a check of its own -- table, summary row, JSON entry, JUnit suite, rerun
line, pytest item.

The layer is a length-2, stride-2 sum pooling whose buggy twin's backward handles whole windows only: it
forgets the odd tail, so it is right at every even length and wrong at every odd one -- a bug that a spec
checking one shape misses, and a matrix over shapes finds at exactly the combinations that have it.
"""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gradcheck_cli.errors import SpecError, UsageError
from gradcheck_cli.matrix import MAX_COMBINATIONS, combinations, parse_selector, split_selector
from gradcheck_cli.spec import load_spec

pytest_plugins = ["pytester"]

POOL_SRC = '''\
import torch
import torch.nn.functional as F


class _Pool2(torch.autograd.Function):
    """y[..., i] = x[..., 2i] + x[..., 2i+1]; an odd tail is a window of its own."""

    whole_windows_only = False

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[-1]
        if ctx.n % 2:
            x = F.pad(x, (0, 1))
        return x.unflatten(-1, (-1, 2)).sum(-1)

    @classmethod
    def backward(cls, ctx, g):
        grad = g.repeat_interleave(2, dim=-1)
        if cls.whole_windows_only:  # the vectorised path: full windows, the tail "needs no gradient"
            grad = F.pad(grad[..., : 2 * (ctx.n // 2)], (0, ctx.n % 2))
        return grad[..., : ctx.n]


class _Pool2Bug(_Pool2):
    whole_windows_only = True


class Pool2(torch.nn.Module):
    def forward(self, x):
        return _Pool2.apply(x)


class Pool2Bug(torch.nn.Module):
    def forward(self, x):
        return _Pool2Bug.apply(x)
'''

MATRIX = """\
layer: pool.py:{layer}
matrix:
  dtype: [float64, float32]
  inputs:
    - [{{shape: [2, 8]}}]
    - [{{shape: [1, 7]}}]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    write(tmp_path / "pool.py", POOL_SRC)
    write(tmp_path / "pool.yaml", MATRIX.format(layer="Pool2"))
    write(tmp_path / "pool_bug.yaml", MATRIX.format(layer="Pool2Bug"))
    return tmp_path


def spec_error(tmp_path: Path, body: str) -> SpecError:
    write(tmp_path / "pool.py", POOL_SRC)
    path = write(tmp_path / "m.yaml", "layer: pool.py:Pool2\n" + body)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ("matrix: [seed]\n", "matrix", "expected a mapping"),
        ("matrix: {}\n", "matrix", "is empty"),
        ("matrix: {sed: [0, 1]}\n", "matrix.sed", "unknown key"),
        ("matrix: {seed: 3}\n", "matrix.seed", "expected a list of alternatives"),
        ("matrix: {seed: []}\n", "matrix.seed", "empty list"),
        ("matrix: {seed: [0, -1]}\n", "matrix.seed[1]", "whole number from 0"),
        ("matrix: {dtype: [float64, float33]}\n", "matrix.dtype[1]", "float33"),
        ("matrix: {eps: [1e-6, -1]}\n", "matrix.eps[1]", "greater than 0"),
        ("matrix: {seed: [0, 1, 0]}\n", "matrix.seed[2]", "repeats matrix.seed[0]"),
        ("seed: 1\nmatrix: {seed: [0, 1]}\n", "matrix.seed", "top level too"),
        ("matrix: {inputs: [[{shape: [3]}], [{shape: [0]}]]}\n", "matrix.inputs[1][0].shape[0]", "at least 1"),
        ("matrix: {inputs: [{shape: [3]}]}\n", "matrix.inputs[0]", "expected a list"),
        ("matrix: {params: [{w: [1.0]}, {w: [nan]}]}\n", "matrix.params[1].w", None),
        ("matrix: {layer: [a.py:X]}\n", "matrix.layer", "unknown key"),
    ],
)
def test_each_alternative_is_checked_as_the_same_key_at_the_top_level(tmp_path: Path, body: str, key: str, words: str | None) -> None:
    error = spec_error(tmp_path, body)
    assert error.key is not None and error.key.startswith(key), (error.key, error.message)
    if words:
        assert words in error.message, error.message


def test_unknown_keys_get_a_suggestion_and_the_cap_is_stated(tmp_path: Path) -> None:
    assert "did you mean 'seed'?" in str(spec_error(tmp_path, "matrix: {sed: [0, 1]}\n"))
    assert "did you mean 'float32'?" in str(spec_error(tmp_path, "matrix: {dtype: [float64, float33]}\n"))
    seeds = ", ".join(str(i) for i in range(17))
    error = spec_error(tmp_path, f"matrix: {{seed: [{seeds}], inputs: [{', '.join(['[{shape: [%d]}]' % (i + 1) for i in range(16)])}]}}\n")
    assert "(17 seed x 16 inputs)" in error.message and "272 combinations" in error.message and f"at most {MAX_COMBINATIONS}" in error.message


def test_combinations_are_named_by_their_values_first_axis_outermost(tmp_path: Path) -> None:
    write(tmp_path / "pool.py", POOL_SRC)
    path = write(
        tmp_path / "m.yaml",
        "layer: pool.py:Pool2\nmatrix:\n  eps: [1e-6, 1e-5]\n  weighted_loss: [true, false]\n  inputs: [[{shape: [2]}], [{shape: [3]}]]\n  seed: [4]\n",
    )
    spec = load_spec(path)
    names = [each.variant_name for each in combinations(spec)]
    assert names[:3] == ["eps=1e-06,weighted_loss=true,inputs=0", "eps=1e-06,weighted_loss=true,inputs=1", "eps=1e-06,weighted_loss=false,inputs=0"]
    assert len(names) == 8 and len(set(names)) == 8  # seed has one alternative: it names nothing
    first = combinations(spec)[1]
    assert first.options == {"eps": 1e-6, "weighted_loss": True, "seed": 4} and first.inputs[0].shape == (3,) and first.matrix == ()
    # a selector picks from the full matrix, by name or by value (1e-5 is 1e-05); fixed axes collapse after
    picked = combinations(spec, parse_selector("m.yaml[...]", "eps=1e-5,inputs=1"))
    assert [each.variant_name for each in picked] == ["eps=1e-05,weighted_loss=true,inputs=1", "eps=1e-05,weighted_loss=false,inputs=1"]
    collapsed = combinations(spec, fixed={"eps", "weighted_loss"})
    assert [each.variant_name for each in collapsed] == ["inputs=0", "inputs=1"]
    assert [each.variant_name for each in combinations(spec, fixed={"eps", "weighted_loss", "inputs"})] == [""]
    for bad, words in (("sed=1", "did you mean 'seed'?"), ("eps=3", "eps takes: 1e-06, 1e-05"), ("inputs=2", "inputs takes: 0, 1")):
        with pytest.raises(UsageError) as info:
            combinations(spec, parse_selector("m.yaml[...]", bad), target=f"m.yaml[{bad}]")
        assert words in str(info.value)


def test_selectors_are_told_from_globs_and_paths() -> None:
    assert split_selector("specs/g.yaml[seed=1,dtype=float32]") == ("specs/g.yaml", "seed=1,dtype=float32")
    assert split_selector("specs/[ab].yaml") == ("specs/[ab].yaml", None)
    assert split_selector("layers.py:Name") == ("layers.py:Name", None)
    for bad in ("seed", "seed=1,seed=2", "=1", ""):
        with pytest.raises(UsageError):
            parse_selector("g.yaml[...]", bad)


def test_check_spec_refuses_a_matrix_of_several_checks_instead_of_checking_its_top_level(specs: Path) -> None:
    from gradcheck_cli import check_spec

    with pytest.raises(UsageError, match="matrix of 4 combinations"):
        check_spec(load_spec(specs / "pool.yaml"))
    (one,) = combinations(load_spec(specs / "pool_bug.yaml"), {"dtype": "float64", "inputs": "1"})
    assert not check_spec(one).passed


# --------------------------------------------------------------------------- the command line


def test_a_bug_at_one_shape_fails_exactly_the_combinations_that_have_it(run_cli, specs: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("run", specs / "pool_bug.yaml", "--json", tmp_path / "r.json", "--junit-xml", tmp_path / "r.xml")
    assert code == 1, err
    summary = out[out.index("summary"):]
    for name, status in (("inputs=0", "PASS"), ("inputs=1", "FAIL")):
        for dtype in ("float64", "float32"):
            assert f"pool_bug.yaml[dtype={dtype},{name}]" in summary
            assert any(f"[dtype={dtype},{name}]" in line and status in line for line in summary.splitlines())
    assert "gradcheck pool.py:Pool2Bug[dtype=float32,inputs=1]" in out  # its own table, titled by its values
    assert "FAIL: 2 of 4 checks (from 1 spec) did not pass." in out
    data = json.loads((tmp_path / "r.json").read_text())
    entries = {e["spec"].rsplit("/", 1)[-1]: e for e in data["specs"]}
    assert entries["pool_bug.yaml[dtype=float32,inputs=1]"]["matrix"] == {"dtype": "float32", "inputs": 1}
    assert [e["status"] for e in data["specs"]] == ["PASS", "FAIL", "PASS", "FAIL"] and data["exit_code"] == 1
    suites = ET.parse(tmp_path / "r.xml").getroot().findall("testsuite")
    assert [s.get("name").rsplit("/", 1)[-1] for s in suites] == [f"pool_bug.yaml[dtype={d},inputs={i}]" for d in ("float64", "float32") for i in (0, 1)]
    assert len({case.get("classname") for s in suites for case in s.iter("testcase")}) == 4  # one classname per combination
    assert [s.get("failures") for s in suites] == ["0", "1", "0", "1"]
    # the rerun line re-runs that combination alone, and fails again
    rerun = next(line.strip() for line in out.splitlines() if line.strip().startswith("gradcheck run") and "float32,inputs=1]" in line)
    again = run_cli(*shlex.split(rerun)[1:], "-q")
    assert again[0] == 1 and again[1].count("FAIL") == 1 and "summary" not in again[1], again


def test_the_correct_twin_passes_every_combination(run_cli, specs: Path) -> None:
    code, out, err = run_cli("run", specs / "pool.yaml", "-q")
    assert code == 0, out + err
    assert out.count(": PASS: ") == 4 and "PASS: all 4 checks (from 1 spec) match." in out


def test_an_option_given_on_the_command_line_collapses_its_axis(run_cli, specs: Path) -> None:
    code, out, _ = run_cli("run", specs / "pool_bug.yaml", "--dtype", "float64", "-q")
    assert code == 1 and "pool_bug.yaml[inputs=0]: PASS" in out and "pool_bug.yaml[inputs=1]: FAIL" in out and "dtype=" not in out
    code, out, _ = run_cli("run", specs / "pool_bug.yaml", "--input", "3x6", "-q")  # --input replaces every alternative
    assert code == 0 and "pool_bug.yaml[dtype=float64]: PASS" in out and "inputs=" not in out
    code, out, _ = run_cli("run", specs / "pool_bug.yaml", "--dtype", "float32", "--input", "5", "-q")  # nothing left to vary
    assert code == 1 and "summary" not in out and out.startswith("FAIL: 1 of 1 tensor(s)")


def test_a_selector_picks_combinations_and_says_what_is_wrong(run_cli, specs: Path) -> None:
    code, out, _ = run_cli("run", f"{specs}/pool_bug.yaml[inputs=0]", "-q")
    assert code == 0 and out.count(": PASS: ") == 2
    code, _, err = run_cli("run", f"{specs}/pool_bug.yaml[inptus=0]")
    assert code == 2 and "'inptus' is not a key of the spec's matrix" in err and "did you mean 'inputs'?" in err
    code, _, err = run_cli("run", f"{specs}/pool_bug.yaml[dtype=float16]")
    assert code == 2 and "none of the matrix's alternatives" in err and "float64, float32" in err
    code, _, err = run_cli("run", f"{specs}/pool_bug.yaml[inputs=0]", "--json", specs / "pool_bug.yaml")
    assert code == 2 and "would overwrite it" in err  # a report over the spec is refused, selector or not


def test_a_single_combination_matrix_behaves_as_a_plain_spec(run_cli, specs: Path) -> None:
    write(specs / "one.yaml", "layer: pool.py:Pool2Bug\nmatrix:\n  seed: [3]\n  inputs: [[{shape: [1, 5]}]]\n")
    code, out, _ = run_cli("run", specs / "one.yaml")
    assert code == 1 and "summary" not in out and "gradcheck pool.py:Pool2Bug\n" in out
    assert f"gradcheck run {specs / 'one.yaml'} --only x" in out and "seed 3" in out


def test_validate_list_and_sweep_understand_a_matrix(run_cli, specs: Path) -> None:
    code, out, _ = run_cli("validate", specs / "pool_bug.yaml", f"{specs}/pool.yaml[dtype=float32]")
    assert code == 0 and "(4 checks: a matrix)" in out and "(2 checks: a matrix)" in out
    code, out, _ = run_cli("list", specs)
    assert code == 0 and "dtype float64|float32 × inputs [2x8]|[1x7]: 4 checks" in " ".join(out.split()).replace("│ ", "")
    code, _, err = run_cli("sweep", specs / "pool_bug.yaml")
    assert code == 2 and "matrix of 4 combinations" in err and "pool_bug.yaml[dtype=float64,inputs=0]" in err


def test_the_schema_describes_the_matrix() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from gradcheck_cli.schema import spec_schema

    validator = jsonschema.Draft202012Validator(spec_schema())
    good = {"layer": "pool.py:Pool2", "matrix": {"seed": [0, 1], "dtype": ["float32"], "inputs": [[{"shape": [1, 31]}]]}}
    assert not list(validator.iter_errors(good))
    for bad in ({"sed": [0]}, {"seed": []}, {"seed": 1}, {"dtype": ["float33"]}, {"seed": [0, 0]}, {}):
        assert list(validator.iter_errors({"layer": "pool.py:Pool2", "matrix": bad})), bad


def test_pytest_collects_one_item_per_combination_and_its_id_reruns_it(pytester: pytest.Pytester) -> None:
    write(pytester.path / "pool.py", POOL_SRC)
    write(pytester.path / "specs" / "pool_bug.yaml", MATRIX.format(layer="Pool2Bug").replace("pool.py", "../pool.py"))
    pytester.makeini("[pytest]\ngradcheck_specs = specs\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["PASSED specs/pool_bug.yaml::pool_bug[[]dtype=float64,inputs=0[]]", "FAILED specs/pool_bug.yaml::pool_bug[[]dtype=float32,inputs=1[]]*"])
    assert "gradcheck run 'specs/pool_bug.yaml[dtype=float32,inputs=1]' --only x" in result.stdout.str()
    pytester.runpytest("-p", "no:cacheprovider", "specs/pool_bug.yaml::pool_bug[dtype=float32,inputs=1]").assert_outcomes(failed=1)

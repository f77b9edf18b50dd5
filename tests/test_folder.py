"""CLI tests for YAML specs (issue 3): option precedence, --input, params, layer paths,
folder runs (mixed good/bad/broken specs, exit codes, JSON) and `gradcheck list`.

Specs are written into tmp_path.  Layers come from tests/layers/simple.py (by
absolute path) or from small layer files written next to the specs.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = ROOT / "tests" / "layers" / "simple.py"

# A tiny layer file: y = x * w (w broadcast over the last axis), hand-written backward.
# AbsScale's input gradient uses |w|: right while every weight is positive (the default),
# wrong wherever a weight is negative -- so a bug that only `params:` can reveal.
LAYER_SRC = '''\
import torch
from torch import nn


class _ScaleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, use_abs):
        ctx.save_for_backward(x, w)
        ctx.use_abs = use_abs
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        grad_x = g * (w.abs() if ctx.use_abs else w)
        grad_w = (g * x).reshape(-1, w.shape[-1]).sum(0)
        return grad_x, grad_w, None


class Scale(nn.Module):
    use_abs = False

    def __init__(self, n=3):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, n))

    def forward(self, x):
        return _ScaleFn.apply(x, self.weight, self.use_abs)


class AbsScale(Scale):
    use_abs = True
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def spec_text(layer: str, inputs: str = "[{shape: [2, 3]}]", extra: str = "") -> str:
    return f"layer: '{layer}'\nkwargs: {{n: 3}}\ninputs: {inputs}\n{extra}"


def good(folder: Path, name: str = "good.yaml") -> Path:
    return write(folder / name, spec_text(f"{SIMPLE}:Scale"))


def bad(folder: Path, name: str = "bad.yaml") -> Path:
    """A gradient bug: ScaleWeightBug's weight gradient is twice too large."""
    return write(folder / name, spec_text(f"{SIMPLE}:ScaleWeightBug"))


BROKEN = {
    "invalid_yaml": ("layer: [unclosed\ninputs: [{shape: [3]}]\n", ("YAML syntax error", "line")),
    "unknown_key": (f"layer: '{SIMPLE}:Scale'\ninptus: [{{shape: [2, 4]}}]\n", ("inptus", "did you mean 'inputs'")),
    "missing_layer_file": ("layer: no_such_layer.py:Scale\ninputs: [{shape: [3]}]\n", ("no_such_layer.py", "does not exist")),
}


def broken(folder: Path, kind: str = "unknown_key", name: str = "broken.yaml") -> Path:
    return write(folder / name, BROKEN[kind][0])


def run_json(run_cli, *args) -> tuple[int, dict, str]:
    """Run with --json - : stdout holds only the JSON report."""
    code, out, err = run_cli(*args, "--json", "-")
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not JSON (exit {code}):\n{out}\nstderr:\n{err}")
    return code, data, err


def tensors(data: dict) -> dict[str, dict]:
    return {t["name"]: t for t in data["tensors"]}


def summary_rows(out: str) -> dict[str, str]:
    """spec name -> result column of the folder run's summary table."""
    assert "summary" in out, out
    table = out[out.rindex("summary") :]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 5 and cells[0] not in ("target", ""):
            rows[cells[0]] = cells[1]
    return rows


# --------------------------------------------------------------------------- one spec: precedence, --input, params


OPTIONED = "seed: 1\neps: 1.0e-4\ndtype: float32\nrtol: 1.0e-2\n"


def test_spec_options_are_used_when_the_cli_is_silent(run_cli, tmp_path):
    spec = write(tmp_path / "s.yaml", spec_text(f"{SIMPLE}:Scale", extra=OPTIONED))
    code, data, err = run_json(run_cli, "run", spec)
    assert code == 0, err
    c = data["config"]
    assert (c["seed"], c["eps"], c["dtype"], c["rtol"]) == (1, 1e-4, "float32", 1e-2)


def test_cli_options_override_the_spec(run_cli, tmp_path):
    spec = write(tmp_path / "s.yaml", spec_text(f"{SIMPLE}:Scale", extra=OPTIONED))
    code, data, err = run_json(run_cli, "run", spec, "--seed", "3", "--eps", "1e-5", "--dtype", "float64", "--rtol", "1e-4")
    assert code == 0, err
    c = data["config"]
    assert (c["seed"], c["eps"], c["dtype"], c["rtol"]) == (3, 1e-5, "float64", 1e-4)


def test_one_cli_option_overrides_only_itself(run_cli, tmp_path):
    spec = write(tmp_path / "s.yaml", spec_text(f"{SIMPLE}:Scale", extra=OPTIONED))
    code, data, err = run_json(run_cli, "run", spec, "--seed", "3")
    assert code == 0, err
    c = data["config"]
    assert (c["seed"], c["eps"], c["dtype"]) == (3, 1e-4, "float32")


def test_seed_from_the_spec_and_from_the_cli_draw_the_same_inputs(run_cli, tmp_path):
    """The seed is really used, not only reported: spec seed 5 == no spec seed + --seed 5, != seed 0."""
    with_seed = write(tmp_path / "a.yaml", spec_text(f"{SIMPLE}:Scale", extra="seed: 5\n"))
    without = write(tmp_path / "b.yaml", spec_text(f"{SIMPLE}:Scale"))
    _, a, _ = run_json(run_cli, "run", with_seed)
    _, b, _ = run_json(run_cli, "run", without, "--seed", "5")
    _, c, _ = run_json(run_cli, "run", without)
    assert tensors(a)["weight"]["analytic"] == tensors(b)["weight"]["analytic"]
    assert tensors(a)["weight"]["analytic"] != tensors(c)["weight"]["analytic"]


def test_cli_input_replaces_the_spec_inputs(run_cli, tmp_path):
    spec = write(tmp_path / "s.yaml", spec_text(f"{SIMPLE}:Scale", inputs="[{shape: [2, 3]}]"))
    code, data, err = run_json(run_cli, "run", spec)
    assert code == 0, err
    assert tensors(data)["x"]["shape"] == [2, 3]
    code, data, err = run_json(run_cli, "run", spec, "--input", "5x3")
    assert code == 0, err
    assert tensors(data)["x"]["shape"] == [5, 3]
    assert set(tensors(data)) == {"x", "weight"}  # replaced, not appended


def test_cli_input_replaces_inputs_of_every_spec_in_a_folder(run_cli, tmp_path):
    good(tmp_path, "a.yaml")
    good(tmp_path, "b.yaml")
    code, data, err = run_json(run_cli, "run", tmp_path, "--input", "4x3")
    assert code == 0, err
    assert [tensors(s)["x"]["shape"] for s in data["specs"]] == [[4, 3], [4, 3]]


def test_params_set_a_parameter_before_the_check(run_cli, tmp_path):
    """AbsScale is only wrong where a weight is negative: the default passes, params reveal the bug."""
    write(tmp_path / "layer.py", LAYER_SRC)
    plain = write(tmp_path / "plain.yaml", spec_text("layer.py:AbsScale"))
    negative = write(tmp_path / "negative.yaml", spec_text("layer.py:AbsScale", extra="params:\n  weight: [1.0, -2.0, 0.5]\n"))
    code, data, err = run_json(run_cli, "run", plain)
    assert code == 0, err
    code, data, err = run_json(run_cli, "run", negative)
    assert code == 1, err
    t = tensors(data)
    assert (t["x"]["passed"], t["weight"]["passed"]) == (False, True)
    # Only column 1 (the negative weight) is wrong: analytic = -numeric there.
    assert t["x"]["worst_index"][-1] == 1
    assert t["x"]["analytic"] == pytest.approx(-t["x"]["numeric"], rel=1e-6)


def test_params_single_number_fills_the_parameter(run_cli, tmp_path):
    write(tmp_path / "layer.py", LAYER_SRC)
    spec = write(tmp_path / "s.yaml", spec_text("layer.py:AbsScale", extra="params: {weight: -1.5}\n"))
    code, data, err = run_json(run_cli, "run", spec)
    assert code == 1, err
    assert tensors(data)["x"]["n_failed"] == 6  # every element: every weight is negative


def test_params_value_reaches_the_analytic_gradient(run_cli, tmp_path):
    """Scale (correct): dL/dx = dL/dy * w, so with w = 0 every input gradient is 0."""
    spec = write(tmp_path / "s.yaml", spec_text(f"{SIMPLE}:Scale", extra="params: {weight: [0.0, 0.0, 0.0]}\n"))
    code, data, err = run_json(run_cli, "run", spec)
    t = tensors(data)["x"]
    assert t["analytic"] == 0.0 and t["numeric"] == pytest.approx(0.0, abs=1e-12), (code, err)


def test_unknown_param_name_is_exit_2_with_key_and_suggestion(run_cli, tmp_path):
    spec = write(tmp_path / "typo_params.yaml", spec_text(f"{SIMPLE}:Scale", extra="params: {wieght: [1.0, 2.0, 3.0]}\n"))
    code, out, err = run_cli("run", spec)
    assert code == 2, out + err
    assert "params.wieght" in err
    assert "did you mean 'weight'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("params", "key"), [("{wieght: [1.0, 2.0, 3.0]}", "params.wieght"), ("{weight: [1.0, 2.0]}", "params.weight")])
def test_params_error_message_names_the_spec_file(run_cli, tmp_path, params, key):
    spec = write(tmp_path / "typo_params.yaml", spec_text(f"{SIMPLE}:Scale", extra=f"params: {params}\n"))
    code, out, err = run_cli("run", spec)
    assert code == 2 and key in err, err
    assert "typo_params.yaml" in err


def test_params_of_the_wrong_shape_is_exit_2(run_cli, tmp_path):
    spec = write(tmp_path / "s.yaml", spec_text(f"{SIMPLE}:Scale", extra="params: {weight: [1.0, 2.0]}\n"))
    code, out, err = run_cli("run", spec)
    assert code == 2, out + err
    assert "params.weight" in err and "[2]" in err and "[3]" in err


def test_relative_layer_path_resolves_against_the_spec_folder_from_another_cwd(run_cli, tmp_path, monkeypatch):
    write(tmp_path / "project" / "layers" / "scale.py", LAYER_SRC)
    spec = write(tmp_path / "project" / "specs" / "s.yaml", spec_text("../layers/scale.py:Scale"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli("run", spec, "-q")
    assert code == 0, out + err
    # A relative spec path from yet another folder works too.
    monkeypatch.chdir(tmp_path / "project")
    code, out, err = run_cli("run", "specs/s.yaml", "-q")
    assert code == 0, out + err
    code, out, err = run_cli("run", "specs", "-q")
    assert code == 0, out + err


def test_missing_relative_layer_file_names_the_resolved_path(run_cli, tmp_path, monkeypatch):
    spec = write(tmp_path / "specs" / "s.yaml", spec_text("../layers/nope.py:Scale"))
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli("run", spec)
    assert code == 2
    assert str(tmp_path / "layers" / "nope.py") in err
    assert "s.yaml" in err and "layer" in err


@pytest.mark.parametrize("form", ["{pkg}.layers:Scale", "{pkg}.layers.Scale"])
def test_dotted_layer_path_in_a_spec(run_cli, tmp_path, monkeypatch, form):
    pkg = f"gc_folder_pkg_{abs(hash(str(tmp_path))) % 10**8}"  # unique: sys.modules outlives the test
    site = tmp_path / "site"
    write(site / pkg / "__init__.py", "")
    write(site / pkg / "layers.py", LAYER_SRC)
    monkeypatch.syspath_prepend(str(site))
    spec = write(tmp_path / "specs" / "dotted.yaml", spec_text(form.format(pkg=pkg)))
    code, data, err = run_json(run_cli, "run", spec)
    assert code == 0, err
    assert set(tensors(data)) == {"x", "weight"}
    bug = write(tmp_path / "specs" / "dotted_bug.yaml", spec_text(f"{pkg}.layers:AbsScale", extra="params: {weight: -1.0}\n"))
    code, data, err = run_json(run_cli, "run", bug)
    assert code == 1, err


# --------------------------------------------------------------------------- folders


def test_all_good_folder_exits_0(run_cli, tmp_path):
    good(tmp_path, "a.yaml")
    good(tmp_path, "b.yml")
    code, out, err = run_cli("run", tmp_path)
    assert code == 0, out + err
    assert summary_rows(out) == {"a.yaml": "PASS", "b.yml": "PASS"}


def test_good_and_bad_folder_exits_1(run_cli, tmp_path):
    good(tmp_path, "a_good.yaml")
    bad(tmp_path, "b_bad.yaml")
    code, out, err = run_cli("run", tmp_path)
    assert code == 1, out + err
    assert summary_rows(out) == {"a_good.yaml": "PASS", "b_bad.yaml": "FAIL"}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_good_bad_and_broken_folder_exits_2_and_reports_every_spec(run_cli, tmp_path, kind):
    # The broken spec sorts first: it must not stop the others, and a later exit 1 must not hide its 2.
    broken(tmp_path, kind, "a_broken.yaml")
    good(tmp_path, "b_good.yaml")
    bad(tmp_path, "c_bad.yaml")
    code, out, err = run_cli("run", tmp_path)
    assert code == 2, out + err
    assert summary_rows(out) == {"a_broken.yaml": "ERROR", "b_good.yaml": "PASS", "c_bad.yaml": "FAIL"}
    # Each checked spec's own table is printed too.
    assert "simple.py:Scale" in out and "simple.py:ScaleWeightBug" in out
    # The broken spec's error is reported, naming the file and what is wrong.
    assert "a_broken.yaml" in err
    for fragment in BROKEN[kind][1]:
        assert fragment in err, err
    assert "Traceback" not in err


def test_good_and_broken_folder_exits_2(run_cli, tmp_path):
    good(tmp_path, "a.yaml")
    broken(tmp_path, "invalid_yaml", "b.yaml")
    code, out, err = run_cli("run", tmp_path)
    assert code == 2, out + err
    assert summary_rows(out) == {"a.yaml": "PASS", "b.yaml": "ERROR"}


def test_layer_that_raises_in_a_folder_is_exit_1_and_the_others_run(run_cli, tmp_path):
    write(tmp_path / "a_raises.yaml", f"layer: '{SIMPLE}:Raises'\ninputs: [{{shape: [3]}}]\n")
    good(tmp_path, "b_good.yaml")
    code, out, err = run_cli("run", tmp_path)
    assert code == 1, out + err
    assert summary_rows(out) == {"a_raises.yaml": "ERROR", "b_good.yaml": "PASS"}
    assert "planted failure in forward" in err


def test_folder_json_shape(run_cli, tmp_path):
    good(tmp_path, "a_good.yaml")
    bad(tmp_path, "b_bad.yaml")
    broken(tmp_path, "unknown_key", "c_broken.yaml")
    report = tmp_path / "report.json"
    code, out, err = run_cli("run", tmp_path, "--json", report)
    assert code == 2, out + err
    data = json.loads(report.read_text())
    assert data["passed"] is False
    assert [Path(s["spec"]).name for s in data["specs"]] == ["a_good.yaml", "b_bad.yaml", "c_broken.yaml"]
    for s in data["specs"]:
        assert Path(s["spec"]).resolve().parent == tmp_path.resolve()
        assert isinstance(s["passed"], bool) and isinstance(s["tensors"], list)
    a, b, c = data["specs"]
    assert a["passed"] is True and {t["name"] for t in a["tensors"]} == {"x", "weight"}
    assert all(t["passed"] for t in a["tensors"])
    assert b["passed"] is False
    assert {t["name"]: t["passed"] for t in b["tensors"]} == {"x": True, "weight": False}
    assert c["passed"] is False and c["tensors"] == []
    assert isinstance(c.get("error"), str) and "c_broken.yaml" in c["error"] and "inptus" in c["error"]


def test_folder_json_to_stdout_is_pure_json(run_cli, tmp_path):
    good(tmp_path, "a.yaml")
    bad(tmp_path, "b.yaml")
    code, data, err = run_json(run_cli, "run", tmp_path)
    assert code == 1
    assert data["passed"] is False and [s["passed"] for s in data["specs"]] == [True, False]


def test_folder_json_all_good_passes(run_cli, tmp_path):
    good(tmp_path, "a.yaml")
    code, data, err = run_json(run_cli, "run", tmp_path)
    assert code == 0, err
    assert data["passed"] is True and len(data["specs"]) == 1


def test_folder_json_for_unknown_param_has_an_error_entry(run_cli, tmp_path):
    write(tmp_path / "p.yaml", spec_text(f"{SIMPLE}:Scale", extra="params: {wieght: 1.0}\n"))
    good(tmp_path, "q.yaml")
    code, data, err = run_json(run_cli, "run", tmp_path)
    assert code == 2
    p, q = data["specs"]
    assert p["passed"] is False and "params.wieght" in p["error"] and "'weight'" in p["error"]
    assert q["passed"] is True
    assert "p.yaml" in err and "params.wieght" in err  # the folder run names the spec on stderr


def test_empty_folder_is_exit_2_with_a_clear_message(run_cli, tmp_path):
    code, out, err = run_cli("run", tmp_path)
    assert code == 2
    assert str(tmp_path) in err and "*.yaml" in err and "spec" in err


def test_folder_with_only_non_specs_is_exit_2(run_cli, tmp_path):
    write(tmp_path / "layer.py", LAYER_SRC)
    write(tmp_path / "notes.txt", "not a spec\n")
    write(tmp_path / ".hidden.yaml", spec_text(f"{SIMPLE}:Scale"))
    (tmp_path / "sub.yaml").mkdir()  # a folder named like a spec is not a spec
    code, out, err = run_cli("run", tmp_path)
    assert code == 2
    assert "holds no" in err


def test_yml_is_picked_up_in_sorted_order(run_cli, tmp_path):
    good(tmp_path, "c.yaml")
    good(tmp_path, "a.yml")
    bad(tmp_path, "b.yaml")
    write(tmp_path / "z.txt", "ignored")
    code, data, err = run_json(run_cli, "run", tmp_path)
    assert code == 1
    assert [Path(s["spec"]).name for s in data["specs"]] == ["a.yml", "b.yaml", "c.yaml"]
    code, out, err = run_cli("run", tmp_path)
    assert list(summary_rows(out)) == ["a.yml", "b.yaml", "c.yaml"]


def test_folder_summary_shows_worst_tensor_and_error(run_cli, tmp_path):
    bad(tmp_path, "bad.yaml")
    code, out, err = run_cli("run", tmp_path)
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("│ bad.yaml"))
    assert "FAIL" in line and "weight" in line and "0.5" in line  # analytic = 2 x numeric: rel error 0.5


# --------------------------------------------------------------------------- gradcheck list


def test_list_default_folder_shows_every_bundled_spec(run_cli, monkeypatch):
    import yaml

    monkeypatch.chdir(ROOT)
    code, out, err = run_cli("list")
    assert code == 0, out + err
    assert "layer_specs" in out
    names = sorted(p.name for p in (ROOT / "layer_specs").glob("*.yaml"))
    assert names, "no bundled specs?"
    for name in names:
        doc = yaml.safe_load((ROOT / "layer_specs" / name).read_text())
        row = next((line for line in out.splitlines() if f" {name} " in line), None)
        assert row is not None, f"{name} not listed:\n{out}"
        assert doc["layer"] in row, row
        for item in doc["inputs"]:
            if "shape" in item:
                assert "x".join(map(str, item["shape"])) in row, row
    assert "broken" not in {line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")}


def test_list_broken_folder(run_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli("list", "layer_specs/broken")
    assert code == 0, out + err
    for path in sorted((ROOT / "layer_specs" / "broken").glob("*.yaml")):
        row = next((line for line in out.splitlines() if f" {path.name} " in line), None)
        assert row is not None, f"{path.name} not listed:\n{out}"
        assert "invalid" not in row
    assert "../gauss_filter.py:GaussFilterConvBug" in out
    assert "2x64" in out


def test_list_shows_an_invalid_spec_without_crashing(run_cli, tmp_path):
    good(tmp_path, "a_good.yaml")
    broken(tmp_path, "unknown_key", "b_typo.yaml")
    broken(tmp_path, "invalid_yaml", "c_yaml.yml")
    broken(tmp_path, "missing_layer_file", "d_missing.yaml")
    code, out, err = run_cli("list", tmp_path)
    assert code == 2, out + err  # an invalid spec makes the listing fail, as validate does
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│ ") and line.split("│")[1].strip()}
    assert "invalid" not in rows["a_good.yaml"] and "2x3" in rows["a_good.yaml"]
    for name in ("b_typo.yaml", "c_yaml.yml", "d_missing.yaml"):
        assert "invalid" in rows[name], out
    assert "inptus" in rows["b_typo.yaml"]
    assert "Traceback" not in err


def test_list_does_not_import_the_layers(run_cli, tmp_path):
    write(tmp_path / "boom.py", "raise SystemExit('imported!')\n")
    write(tmp_path / "s.yaml", "layer: boom.py:X\ninputs: [{shape: [3]}]\n")
    code, out, err = run_cli("list", tmp_path)
    assert code == 0, out + err
    assert "boom.py:X" in out and "imported!" not in out + err


def test_list_missing_folder_is_exit_2(run_cli, tmp_path):
    code, out, err = run_cli("list", tmp_path / "no_such_folder")
    assert code == 2
    assert "no_such_folder" in err and "does not exist" in err


def test_list_empty_folder_is_exit_2(run_cli, tmp_path):
    code, out, err = run_cli("list", tmp_path)
    assert code == 2
    assert "holds no" in err


def test_ctrl_c_in_a_folder_run_reports_the_finished_specs_and_exits_130(run_cli, tmp_path):
    write(tmp_path / "layers.py", "import signal\n\ndef interrupt(x):\n    signal.raise_signal(signal.SIGINT)  # Ctrl-C\n")
    good(tmp_path, "a_good.yaml")
    write(tmp_path / "b_interrupt.yaml", "layer: layers.py:interrupt\ninputs: [{shape: [2, 3]}]\n")
    good(tmp_path, "c_never_run.yaml")
    report = tmp_path / "r.json"
    code, out, err = run_cli("run", str(tmp_path), "--json", str(report))
    assert code == 130, (out, err)
    assert "a_good.yaml" in out and "c_never_run.yaml" not in out
    assert "INTERRUPTED" in out.strip().splitlines()[-1]
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["interrupted"] is True
    assert [e["spec"].rsplit("/", 1)[-1] for e in data["specs"]] == ["a_good.yaml", "b_interrupt.yaml"]
    assert [e["status"] for e in data["specs"]] == ["PASS", "INTERRUPTED"]

"""JUnit as CI servers read it: file and line of the layer, dotted classnames, per-tensor time, <skipped> for --only."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from gradcheck_cli.junit import dotted_name

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"
ELEMENTWISE = "import torch\n\ndef ew(x):\n    return torch.sin(x) * x\n"


def cases(path: Path) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in ET.parse(path).getroot().iter("testcase")}


def test_dotted_classnames_jenkins_can_split() -> None:
    assert dotted_name("specs/bad_swish.yaml") == "specs.bad_swish"
    assert dotted_name("layers/swish.py:Swish") == "layers.swish.Swish"
    assert dotted_name("mypkg.layers:Swish") == "mypkg.layers.Swish"
    assert dotted_name("specs/v1.2/a.yml") == "specs.v1_2.a"


def test_each_case_carries_the_layers_file_line_and_its_own_time(run_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    xml = tmp_path / "j.xml"
    code, _, _ = run_cli("run", "layer_specs/broken/gauss_filter_conv_bug.yaml", "--junit-xml", xml, "--json", tmp_path / "r.json")
    assert code == 1
    found = cases(xml)
    assert set(found) == {"x", "sigma", "mu"}
    source = (ROOT / "layer_specs" / "gauss_filter.py").read_text().splitlines()
    for case in found.values():
        assert case.get("classname") == "layer_specs.broken.gauss_filter_conv_bug"
        assert case.get("file") == "layer_specs/gauss_filter.py"
        assert source[int(case.get("line")) - 1].strip().startswith("def backward")
    # each tensor's own time, as measured -- not the suite's split by element count
    tensors = {t["name"]: t for t in json.loads((tmp_path / "r.json").read_text())["tensors"]}
    for name, case in found.items():
        assert float(case.get("time")) == round(tensors[name]["time_s"], 3)
    suite_time = float(ET.parse(xml).getroot().find("testsuite").get("time"))
    assert sum(float(c.get("time")) for c in found.values()) <= suite_time + 0.003


def test_tensors_left_out_by_only_are_skipped_not_missing(run_cli, tmp_path) -> None:
    xml = tmp_path / "j.xml"
    code, _, _ = run_cli("run", f"{SIMPLE}:ScaleWeightBug", "--input", "3x4", "--only", "weight", "--junit-xml", xml)
    assert code == 1
    found = cases(xml)
    assert set(found) == {"weight", "x"}
    assert found["weight"].find("failure") is not None
    skipped = found["x"].find("skipped")
    assert skipped is not None and "--only" in skipped.get("message")
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("skipped") == "1" and ET.parse(xml).getroot().get("skipped") == "1"


def test_notes_that_say_nothing_is_wrong_stay_out_of_system_out_unless_verbose(run_cli, tmp_path) -> None:
    layer = tmp_path / "ew.py"
    layer.write_text(ELEMENTWISE)
    quiet, loud = tmp_path / "q.xml", tmp_path / "v.xml"
    assert run_cli("run", f"{layer}:ew", "--input", "256", "--junit-xml", quiet)[0] == 0
    assert run_cli("run", f"{layer}:ew", "--input", "256", "--junit-xml", loud, "-v")[0] == 0
    assert ET.parse(quiet).getroot().find("testsuite/system-out") is None
    assert "moved in groups" in ET.parse(loud).getroot().find("testsuite/system-out").text


COUNTER = (
    "import torch\n\nclass Counts(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    "        self.register_buffer('calls', torch.zeros(()))\n\n    def forward(self, x):\n        self.calls += 1\n"
    "        return x * x\n"
)


def test_a_note_worth_reading_still_reaches_system_out(run_cli, tmp_path) -> None:
    layer = tmp_path / "counts.py"
    layer.write_text(COUNTER)
    xml = tmp_path / "j.xml"
    assert run_cli("run", f"{layer}:Counts", "--input", "3", "--junit-xml", xml)[0] == 0
    text = ET.parse(xml).getroot().find("testsuite/system-out").text
    assert "updates buffer(s) calls in place" in text

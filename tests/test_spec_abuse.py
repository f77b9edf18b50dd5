"""Abusive or careless input to the spec reader and the --input parser.

Every case must end in a one-paragraph SpecError / UsageError that names the file (or the
--input value), the key path and the line where that helps -- never a traceback, a hang, a
MemoryError or a crash.  The DoS cases also assert that they return quickly; the bound is only
a guard against hangs (the protection itself is structural: caps checked before any walk).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import gradcheck_cli.yamlfile as yaml_module
from gradcheck_cli import inputs as inputs_module
from gradcheck_cli.errors import SpecError, UsageError
from gradcheck_cli.inputs import build_inputs, check_literal, parse_input
from gradcheck_cli.spec import MAX_DIMS, MAX_LITERAL_ELEMENTS, InputSpec, find_specs, load_spec
from gradcheck_cli.yamlfile import MAX_NESTING, MAX_SPEC_BYTES, MAX_SPEC_VALUES

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = ROOT / "tests" / "layers" / "simple.py"
LAYER = "layer: pkg.mod:Layer\n"
QUICK = 5.0  # seconds: a generous guard against hangs, not the protection itself
CPU = torch.device("cpu")


@contextlib.contextmanager
def quick(limit: float = QUICK):
    start = time.monotonic()
    yield
    elapsed = time.monotonic() - start
    assert elapsed < limit, f"took {elapsed:.1f} s"


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def spec_error(path: Path, key: str | None, *fragments: str) -> SpecError:
    """load_spec(path) must raise a SpecError naming the file, ``key`` and every fragment, quickly."""
    with quick(), pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert path.name in err.message and err.path == str(path)
    assert err.key == key, err.message
    if key:
        assert f": {key}: " in err.message
    for fragment in fragments:
        assert fragment in str(err), str(err)
    assert "\n" not in err.message and "Traceback" not in str(err)
    assert err.exit_code == 2
    return err


def text_error(tmp_path: Path, text: str, key: str | None, *fragments: str, name: str = "spec.yaml") -> SpecError:
    return spec_error(write(tmp_path, text, name), key, *fragments)


def input_error(text: str, *fragments: str) -> UsageError:
    with quick(), pytest.raises(UsageError) as info:
        parse_input(text)
    err = info.value
    assert err.message.startswith("--input ") and err.hint
    assert len(err.message) < 400, err.message  # the --input value is quoted, but cut short
    for fragment in fragments:
        assert fragment in str(err), str(err)
    return err


@pytest.fixture(params=["libyaml", "python"])
def loader(request, monkeypatch):
    """Run a test with libyaml's loader (when PyYAML has it) and with the pure-Python one."""
    import yaml

    if request.param == "python":
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    elif not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML is built without libyaml")
    yaml_module._loader.cache_clear()
    yield request.param
    yaml_module._loader.cache_clear()


# --------------------------------------------------------------------------- 1. duplicate keys


def test_duplicate_top_level_key_names_both_lines(tmp_path: Path, loader: str) -> None:
    text = LAYER + "rtol: 1.0e-5\nseed: 0\natol: 0\nrtol: 10.0\n"
    text_error(tmp_path, text, "rtol", "duplicate key 'rtol' on lines 2 and 5", "Remove one")


def test_duplicate_key_in_an_input(tmp_path: Path, loader: str) -> None:
    text = LAYER + "inputs:\n  - shape: [2]\n  - shape: [3]\n    dtype: float32\n    dtype: float64\n"
    text_error(tmp_path, text, "inputs[1].dtype", "duplicate key 'dtype' on lines 5 and 6")


def test_duplicate_key_in_flow_kwargs(tmp_path: Path, loader: str) -> None:
    text_error(tmp_path, LAYER + "kwargs: {mu: 0.5,\n  mu: 0.7}\n", "kwargs.mu", "duplicate key 'mu' on lines 2 and 3")


def test_duplicate_key_deep_inside_args(tmp_path: Path) -> None:
    text_error(tmp_path, LAYER + "args:\n  - [1, {a: 1, b: 2, a: 3}]\n", "args[0][1].a", "duplicate key 'a' on lines 3 and 3")


def test_keys_that_yaml_reads_as_the_same_are_duplicates(tmp_path: Path) -> None:
    # YAML 1.1 reads 'on' as true; a dict would silently merge the two.
    err = text_error(tmp_path, LAYER + "args: [{on: 1, true: 2}]\n", "args[0].true", "duplicate key 'true' on lines 2 and 2")
    assert "'on' and 'true' are the same key" in err.message


def test_duplicate_key_is_reported_before_other_key_errors(tmp_path: Path) -> None:
    text_error(tmp_path, "layer: a.b:C\nlayer: a.b:D\nbogus: 1\n", "layer", "duplicate key 'layer' on lines 1 and 2")


BASE = "args: [&base {mu: 0.5, learn: true}]\n"


def test_merge_key_override_is_legitimate(tmp_path: Path, loader: str) -> None:
    # A key of the mapping itself overrides the one merged in with '<<': that is what merging is for.
    spec = load_spec(write(tmp_path, LAYER + BASE + "kwargs: {<<: *base, mu: 0.7}\n"))
    assert spec.kwargs == {"mu": 0.7, "learn": True}
    assert spec.args == ({"mu": 0.5, "learn": True},)


def test_merging_two_bases_that_share_a_key_is_legitimate(tmp_path: Path) -> None:
    text = LAYER + "args: [&a {x: 1}, &b {x: 2, y: 3}]\nkwargs: {<<: [*a, *b]}\n"
    assert load_spec(write(tmp_path, text)).kwargs == {"x": 1, "y": 3}  # the first merged mapping wins


def test_duplicate_beside_a_merge_key_is_refused(tmp_path: Path, loader: str) -> None:
    text = LAYER + BASE + "kwargs:\n  <<: *base\n  mu: 0.7\n  mu: 0.8\n"
    text_error(tmp_path, text, "kwargs.mu", "duplicate key 'mu' on lines 5 and 6")


def test_merge_key_written_twice_is_refused(tmp_path: Path) -> None:
    text = LAYER + "args: [&a {x: 1}, &b {y: 2}]\nkwargs:\n  <<: *a\n  <<: *b\n"
    text_error(tmp_path, text, "kwargs.<<", "duplicate key '<<' on lines 4 and 5")


def test_duplicate_inside_a_merged_base_is_refused(tmp_path: Path) -> None:
    text = LAYER + "args: [&a {x: 1, x: 2}]\nkwargs: {<<: *a}\n"
    text_error(tmp_path, text, "args[0].x", "duplicate key 'x' on lines 2 and 2")


def test_a_list_as_a_key_is_a_clear_error(tmp_path: Path) -> None:
    text_error(tmp_path, LAYER + "kwargs:\n  ? [1, 2]\n  : 3\n", "kwargs", "has a list as a key on line 3")


# --------------------------------------------------------------------------- 2. alias bombs


def laughs(levels: int = 9, width: int = 10) -> str:
    """A flow list of 'billion laughs' levels: the last one stands for width**levels values."""
    names = [chr(ord("a") + i) for i in range(levels)]
    parts = ["&a [" + ", ".join(["1.0"] * width) + "]"]
    for prev, name in zip(names, names[1:]):
        parts.append(f"&{name} [" + ", ".join([f"*{prev}"] * width) + "]")
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"description: {laughs()}\n", "description"),
        (f"inputs:\n  - value: {laughs()}\n", "inputs[0].value"),
        (f"params:\n  w: {laughs()}\n", "params.w"),
        (f"kwargs:\n  x: {laughs()}\n", "kwargs.x"),
        (f"args: {laughs()}\n", "args"),
        (f"args: [{laughs()}]\n", "args[0]"),
    ],
)
def test_alias_bomb_fails_fast(tmp_path: Path, loader: str, text: str, key: str) -> None:
    path = write(tmp_path, LAYER + text)
    with quick(), pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert f"expands, through YAML aliases, to more than {MAX_SPEC_VALUES:,} values" in err.message
    assert err.key.startswith(key), err.key  # the deepest value that crosses the cap, e.g. description[6]
    assert "line 2" in err.message or "line 3" in err.message
    assert "aliases" in err.hint


def test_alias_bomb_of_mappings_and_merge_keys_fails_fast(tmp_path: Path) -> None:
    lines = ["args:", "  - &a {" + ", ".join(f"k{i}: 1" for i in range(10)) + "}"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"  - &{name} {{" + ", ".join(f"k{i}: *{prev}" for i in range(10)) + "}")
    lines.append("kwargs: {<<: *i}")
    # k-th level: about 2.2 * 10**k values; the sixth (line 8) crosses 2 million
    err = text_error(tmp_path, LAYER + "\n".join(lines) + "\n", "args[5]", "through YAML aliases")
    assert "line 8" in err.message


def test_aliases_below_the_cap_are_fine(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "inputs:\n  - value: [&row [0.5, 1.5], *row, *row]\n"))
    assert spec.inputs[0].value == [[0.5, 1.5]] * 3


def test_literal_cap_through_aliases(tmp_path: Path) -> None:
    # 1001 x 1000 numbers: under the document's cap, over the literal's.
    row = "&r [" + ", ".join(["0.5"] * 1000) + "]"
    text = LAYER + f"inputs:\n  - value: [{row}" + ", *r" * 1000 + "]\n"
    text_error(tmp_path, text, "inputs[0].value", f"more than {MAX_LITERAL_ELEMENTS:,} numbers (shape 1001x1000)", "shape: [")


def test_literal_cap_in_params(tmp_path: Path) -> None:
    row = "&r [" + ", ".join(["0.5"] * 2000) + "]"
    text = LAYER + f"params:\n  w: [{row}" + ", *r" * 600 + "]\n"
    text_error(tmp_path, text, "params.w", f"more than {MAX_LITERAL_ELEMENTS:,} numbers")


def test_large_shared_value_in_an_error_message_is_cut_short(tmp_path: Path) -> None:
    # About a million values (under the cap) reach _found() through 'description'.
    row = "&r [" + ", ".join(["1"] * 1000) + "]"
    text = LAYER + f"description: [{row}" + ", *r" * 999 + "]\n"
    err = text_error(tmp_path, text, "description", "expected text, found list [[1, 1, 1, 1, ...],")
    assert len(err.message) < len(str(tmp_path)) + 200


def test_found_never_reprs_a_value_in_full() -> None:
    value: list = [1.0] * 10
    for _ in range(9):
        value = [value] * 10  # 10**10 numbers, shared
    with quick(1.0):
        text = yaml_module.found(value)
    assert text.startswith("list [[[") and len(text) < 60
    cyclic: list = [1]
    cyclic.append(cyclic)
    assert yaml_module.found(cyclic).startswith("list [1, [")


@pytest.mark.parametrize(
    ("text", "line"),
    [("params:\n  w: &a [1, *a]\n", 3), ("kwargs: &k {self: *k}\n", 2), ("args: [&m {<<: *m}]\n", 2)],
)
def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path, loader: str, text: str, line: int) -> None:
    text_error(tmp_path, LAYER + text, None, "nested too deeply", f"the alias on line {line}", "refers to a value that holds it")


def test_nesting_through_aliases_is_capped(tmp_path: Path) -> None:
    # Each anchor is shallow enough on its own; through the alias, the second is 110 levels deep.
    text = LAYER + f"args: [&a {nested(60)}, &b {'[' * 50}*a{']' * 50}]\n"
    with quick(), pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    assert f"nested too deeply through YAML aliases: more than {MAX_NESTING} levels" in info.value.message
    assert info.value.key.startswith("args[1][0]"), info.value.key


# --------------------------------------------------------------------------- 3. huge and special files


def no_hang(call, unblock=None, limit: float = QUICK):
    """Run ``call()`` in a thread; if it has not returned within ``limit``, unblock it and fail."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        if unblock:
            unblock()
        thread.join(limit)
        pytest.fail(f"still blocked after {limit} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def release_fifo(path: Path):
    def unblock() -> None:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    return unblock


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError) as info:
        no_hang(lambda: load_spec(fifo), release_fifo(fifo))
    assert info.value.message == f"{fifo}: is not a regular file (it is a named pipe (FIFO))."
    assert info.value.hint


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_swapped_in_after_the_check_cannot_block(tmp_path: Path, monkeypatch) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    monkeypatch.setattr(yaml_module, "_check_file", lambda path: None)  # as if it was a file when checked
    with pytest.raises(SpecError, match="is not a regular file"):
        no_hang(lambda: load_spec(fifo), release_fifo(fifo))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    err = spec_error(link, None, "is not a regular file (it is a character device)")
    assert "ordinary .yaml file" in err.hint
    spec_error(Path("/dev/zero"), None, "specs are .yaml/.yml files")  # given directly: wrong suffix, never read


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_socket_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a short relative name: socket paths are limited to ~100 bytes
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("s.yaml")
        spec_error(Path("s.yaml"), None, "is not a regular file (it is a socket)")


def test_huge_file_is_refused_by_its_size_without_reading(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.truncate(50 * 1024**2)  # sparse: 50 MB that take no disk space
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    err = spec_error(path, None, "is 52,428,800 bytes; a spec file may be at most 1 MiB (1,048,576 bytes)")
    assert "1 MiB" in err.hint and "shape" in err.hint
    assert reads == []


def test_spec_at_the_size_cap_loads_and_one_byte_more_does_not(tmp_path: Path) -> None:
    head = LAYER + "# "
    text = head + "x" * (MAX_SPEC_BYTES - len(head) - 1) + "\n"
    assert len(text.encode()) == MAX_SPEC_BYTES
    assert load_spec(write(tmp_path, text)).layer == "pkg.mod:Layer"
    text_error(tmp_path, text + "\n", None, f"is {MAX_SPEC_BYTES + 1:,} bytes", name="over.yaml")


def test_a_file_that_grows_after_the_check_is_read_only_up_to_the_cap(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, LAYER + "#" * (3 * MAX_SPEC_BYTES))
    real_fstat = os.fstat

    def small_fstat(fd: int):  # the file was small when checked, and grows while it is read
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, *info[1:6], 10, *info[7:]))

    read: list[int] = []
    real_read = os.read
    monkeypatch.setattr(yaml_module, "_check_file", lambda path: None)
    monkeypatch.setattr(os, "fstat", small_fstat)
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    spec_error(path, None, f"is {MAX_SPEC_BYTES + 1:,} bytes")
    assert sum(read) <= MAX_SPEC_BYTES + 1


# --------------------------------------------------------------------------- 4. literal caps (--input)


def test_input_literal_over_the_cap_is_refused_before_torch(monkeypatch) -> None:
    def no_tensor(*args, **kwargs):
        raise AssertionError("torch.tensor was called")

    text = "=[" + "0," * MAX_LITERAL_ELEMENTS + "0]"
    monkeypatch.setattr(inputs_module.torch, "tensor", no_tensor)
    input_error(text, f"more than {MAX_LITERAL_ELEMENTS:,} numbers", "characters)")


def test_ragged_literal_over_the_cap_is_refused(monkeypatch) -> None:
    value = [[0.5] * 10, [0.5] * MAX_LITERAL_ELEMENTS]
    with quick(), pytest.raises(UsageError, match=f"more than {MAX_LITERAL_ELEMENTS:,} numbers"):
        check_literal(value, "input0")


def test_python_literal_over_the_cap_is_refused_when_building_inputs() -> None:
    row = [0.5] * 1000
    value = [row] * 1001  # shared rows: cheap to make, 1,001,000 numbers
    with quick(), pytest.raises(UsageError, match=r"input0: the literal holds more than 1,000,000 numbers \(shape 1001x1000\)"):
        build_inputs([InputSpec(value=value)], torch.float64, CPU, 0)


def test_literal_at_the_cap_is_accepted() -> None:
    spec = parse_input("=[" + "0.5," * (1000 - 1) + "0.5]")
    assert build_inputs([spec], torch.float64, CPU, 0)[0].shape == (1000,)
    check_literal([[0.5] * 1000] * 1000, "input0")  # exactly MAX_LITERAL_ELEMENTS


# --------------------------------------------------------------------------- 5. more than 64 dimensions


def nested(depth: int, leaf: str = "1.0") -> str:
    return "[" * depth + leaf + "]" * depth


def test_spec_shape_with_65_dimensions(tmp_path: Path) -> None:
    text = LAYER + f"inputs:\n  - shape: [{', '.join(['1'] * 65)}]\n"
    text_error(tmp_path, text, "inputs[0].shape", "has 65 dimensions, but torch supports at most 64")
    assert load_spec(write(tmp_path, LAYER + f"inputs: [{{shape: [{', '.join(['1'] * 64)}]}}]\n", "ok.yaml"))


@pytest.mark.parametrize(
    ("where", "key"),
    [("inputs:\n  - value: {v}\n", "inputs[0].value"), ("params:\n  w: {v}\n", "params.w")],
    ids=["value", "params"],
)
def test_spec_literal_nested_65_deep(tmp_path: Path, where: str, key: str) -> None:
    text_error(tmp_path, LAYER + where.format(v=nested(65)), key, f"torch supports at most {MAX_DIMS} dimensions")
    spec = load_spec(write(tmp_path, LAYER + where.format(v=nested(64)), "ok.yaml"))
    assert spec.inputs or spec.params


def test_spec_ragged_literal_deeper_than_64_is_refused(tmp_path: Path) -> None:
    text = LAYER + f"inputs:\n  - value: [{nested(20)}, {nested(70)}]\n"  # its first element is shallow
    text_error(tmp_path, text, "inputs[0].value", f"torch supports at most {MAX_DIMS} dimensions")


def test_input_shape_with_65_dimensions() -> None:
    input_error("1" + "x1" * 64, "65 dimensions, but torch supports at most 64")
    assert parse_input("1" + "x1" * 63).shape == (1,) * 64


def test_input_literal_nested_65_deep() -> None:
    input_error("=" + nested(65), "nested too deeply (65 levels of brackets)", "at most 64 dimensions")
    assert build_inputs([parse_input("=" + nested(64))], torch.float64, CPU, 0)[0].dim() == 64


def test_python_input_spec_with_65_dimensions() -> None:
    with pytest.raises(UsageError, match="input0: 65 dimensions, but torch supports at most 64"):
        build_inputs([InputSpec(shape=(1,) * 65)], torch.float64, CPU, 0)


# --------------------------------------------------------------------------- 6. nested too deeply


@pytest.mark.parametrize("opener", ["[", '{"a":'], ids=["lists", "objects"])
def test_30000_deep_json_literal(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    input_error("=" + opener * 30000 + closer * 30000, "nested too deeply (30,000 levels of brackets)")


def test_json_brackets_inside_strings_do_not_count() -> None:
    input_error('=["' + "[" * 100 + '"]', "is not a number or a rectangular list")


def test_self_containing_python_literal_is_refused() -> None:
    value: list = [1.0]
    value.append(value)
    with quick(), pytest.raises(UsageError, match="nested too deeply"):
        build_inputs([InputSpec(value=value)], torch.float64, CPU, 0)


@pytest.mark.parametrize(
    "text",
    [
        "inputs:\n  - value: " + nested(30000) + "\n",
        "inputs:\n  - value: " + "{a: " * 150 + "1" + "}" * 150 + "\n",
        "args:\n" + "- " * 200 + "1\n",  # block style: a list in a list on one line
    ],
    ids=["flow-lists", "flow-mappings", "block-lists"],
)
def test_deeply_nested_yaml_value(tmp_path: Path, loader: str, text: str) -> None:
    text_error(tmp_path, LAYER + text, None, f"is nested too deeply: more than {MAX_NESTING} levels", "at line 3")


def test_half_a_million_levels_do_not_crash_libyaml(tmp_path: Path) -> None:
    # libyaml's composer recurses in C: without the check on the parser's events first, this
    # kills the interpreter with a segmentation fault.  Run apart, so a crash cannot take pytest.
    path = write(tmp_path, LAYER + "args: " + nested(500_000, "1") + "\n")
    assert path.stat().st_size < MAX_SPEC_BYTES
    code = f"from gradcheck_cli.spec import load_spec\ntry:\n    load_spec({str(path)!r})\nexcept Exception as e:\n    print(e)\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with quick(20):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "nested too deeply" in done.stdout


# --------------------------------------------------------------------------- 7. numbers out of range


@pytest.mark.parametrize("text", ["=[99999999999999999999]", "=-9223372036854775809", "=[[1, 2], [3, 9223372036854775808]]"])
def test_int64_overflow_in_input_literal(text: str) -> None:
    err = input_error(text, "is out of range for int64")
    assert "1.0e20" in err.hint


def test_big_whole_number_beside_a_float_is_a_float() -> None:
    (t,) = build_inputs([parse_input("=[1.5, 99999999999999999999]")], torch.float64, CPU, 0)
    assert t.dtype == torch.float64 and t[1].item() == 1e20


@pytest.mark.parametrize("text", ["=1e999", "=[1.0, -1e999]"])
def test_float64_overflow_in_input_literal(text: str) -> None:
    # json reads 1e999 as infinity; say what happened instead.
    input_error(text, "1e999 is not a finite number: it is out of range for float64", "infinity")


def test_whole_number_too_big_even_for_float64() -> None:
    input_error("=[1.5, 1" + "0" * 400 + "]", "out of range for float64")


def test_integer_with_thousands_of_digits() -> None:
    input_error("=" + "1" * 5000, "too long")
    input_error("1" * 5000, "a dimension is too large")


def test_int64_overflow_in_spec_value(tmp_path: Path) -> None:
    text = LAYER + "inputs:\n  - value: [1, 99999999999999999999]\n"
    err = text_error(tmp_path, text, "inputs[0].value[1]", "99999999999999999999 is out of range for int64")
    assert "dtype: float64" in err.hint


def test_big_whole_number_with_a_float_dtype_is_fine(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "inputs:\n  - {value: [99999999999999999999], dtype: float64}\n"))
    (t,) = build_inputs(list(spec.inputs), torch.float32, CPU, 0)
    assert t.dtype == torch.float64 and t.item() == 1e20


@pytest.mark.parametrize(
    ("value", "dtype", "fragment"),
    [
        ("[1.0e+39]", "float32", "out of range for float32"),
        ("[70000]", "float16", "out of range for float16"),
        ("[1" + "0" * 400 + "]", "float64", "out of range for float64"),
    ],
    ids=["float32", "float16", "float64"],
)
def test_value_beyond_a_float_dtype(tmp_path: Path, value: str, dtype: str, fragment: str) -> None:
    text_error(tmp_path, LAYER + f"inputs:\n  - value: {value}\n    dtype: {dtype}\n", "inputs[0].value[0]", fragment)


def test_literal_that_overflows_the_check_dtype_when_built(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "inputs:\n  - value: [1.0, 1.0e+39]\n"))
    assert build_inputs(list(spec.inputs), torch.float64, CPU, 0)[0][1].item() == 1e39
    with pytest.raises(UsageError, match=r"input0 \(=\[1.0, 1e\+39\]\): the literal does not fit float32"):
        build_inputs(list(spec.inputs), torch.float32, CPU, 0)


@pytest.mark.parametrize(
    ("text", "line"), [("description: 2001-02-30\n", 2), ("seed: " + "1" * 5000 + "\n", 2), ("args:\n  - !!int 'x'\n", 3)]
)
def test_values_yaml_cannot_construct(tmp_path: Path, loader: str, text: str, line: int) -> None:
    text_error(tmp_path, LAYER + text, None, f"cannot read the value on line {line}")


def test_binary_that_does_not_decode(tmp_path: Path) -> None:
    text_error(tmp_path, LAYER + "args: [!!binary 'x']\n", None, "cannot read the value at line 2", "base64")


# --------------------------------------------------------------------------- 8. random ranges


def test_uniform_range_overflow(tmp_path: Path) -> None:
    text = LAYER + "inputs:\n  - shape: [3]\n    dist: uniform\n    low: -1.0e+308\n    high: 1.0e+308\n"
    text_error(tmp_path, text, "inputs[0].high", "the range is too wide: high - low overflows")


def test_exponent_without_a_sign_is_a_number_and_reaches_the_range_check(tmp_path: Path) -> None:
    # YAML 1.1 reads 1.0e308 (no sign in the exponent) as a string; specs read it as the number it is.
    text = LAYER + "inputs:\n  - shape: [3]\n    dist: uniform\n    low: -1.0e308\n    high: 1.0e308\n"
    text_error(tmp_path, text, "inputs[0].high", "the range is too wide")


def test_uniform_wide_but_finite_range_is_fine(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "inputs: [{shape: [3], dist: uniform, low: -8.0e+307, high: 8.0e+307}]\n"))
    assert torch.isfinite(build_inputs(list(spec.inputs), torch.float64, CPU, 0)[0]).all()


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("std: 1.0e+308", "inputs[0].std"),
        ("mean: 1.79e+308\n    std: 1.0e+307", "inputs[0].mean"),
        ("mean: -1.7e+308\n    std: 1.0e+307", "inputs[0].mean"),
    ],
    ids=["std", "mean", "negative-mean"],
)
def test_normal_draws_that_overflow(tmp_path: Path, extra: str, key: str) -> None:
    text_error(tmp_path, LAYER + f"inputs:\n  - shape: [3]\n    {extra}\n", key, "draws can overflow", "10·std")


def test_normal_within_float64_but_not_the_check_dtype(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "inputs: [{shape: [3], mean: 1.0e+300}]\n"))
    assert torch.isfinite(build_inputs(list(spec.inputs), torch.float64, CPU, 0)[0]).all()
    with pytest.raises(UsageError, match=r"input0 \(3 normal\(1e\+300,1\)\): its random values would overflow float32"):
        build_inputs(list(spec.inputs), torch.float32, CPU, 0)


def test_uniform_beyond_float16(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, LAYER + "inputs: [{shape: [3], dist: uniform, low: 0, high: 1.0e+5, dtype: float16}]\n"))
    with pytest.raises(UsageError, match="would overflow float16"):
        build_inputs(list(spec.inputs), torch.float64, CPU, 0)


def test_python_input_spec_with_an_overflowing_range() -> None:
    with pytest.raises(UsageError, match="would overflow float64"):
        build_inputs([InputSpec(shape=(2,), dist="uniform", low=-1e308, high=1e308)], torch.float64, CPU, 0)


# --------------------------------------------------------------------------- 9. wrong suffix


@pytest.mark.parametrize(
    ("name", "fragment"), [("spec.json", "not '.json'"), ("spec.yaml.bak", "not '.bak'"), ("spec", "has no suffix")]
)
def test_load_spec_refuses_other_suffixes(tmp_path: Path, name: str, fragment: str) -> None:
    err = text_error(tmp_path, LAYER, None, "specs are .yaml/.yml files", fragment, name=name)
    assert ".yaml" in err.hint


def test_missing_file_with_a_wrong_suffix(tmp_path: Path) -> None:
    spec_error(tmp_path / "nope.json", None, "specs are .yaml/.yml files")


def test_folder_without_a_suffix_is_still_called_a_folder(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    spec_error(tmp_path / "specs", None, "is a folder, not a spec file")


# --------------------------------------------------------------------------- 10. broken folder entries


@pytest.fixture
def broken_folder(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(f"layer: '{SIMPLE}:Scale'\ninputs: [{{shape: [2, 4]}}]\n")
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "missing.yaml")
    (tmp_path / "loop_a.yaml").symlink_to(tmp_path / "loop_b.yaml")
    (tmp_path / "loop_b.yaml").symlink_to(tmp_path / "loop_a.yaml")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.yml")
    (tmp_path / "sub.yaml").mkdir()
    (tmp_path / "linked_dir.yaml").symlink_to(tmp_path / "sub.yaml")
    (tmp_path / ".hidden.yaml").symlink_to(tmp_path / "missing.yaml")
    return tmp_path


def test_find_specs_returns_broken_entries(broken_folder: Path) -> None:
    names = [p.name for p in find_specs(broken_folder)]
    expected = ["dangling.yaml", "good.yaml", "loop_a.yaml", "loop_b.yaml"] + (["pipe.yml"] if hasattr(os, "mkfifo") else [])
    assert names == expected  # folders named like specs (and a link to one) are still left out


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("dangling.yaml", "is a dangling symbolic link: it points to"),
        ("loop_a.yaml", "is a symbolic link loop"),
        ("pipe.yml", "is not a regular file (it is a named pipe (FIFO))"),
        ("sub.yaml", "is a folder, not a spec file"),
        ("linked_dir.yaml", "is a folder, not a spec file"),
    ],
)
def test_each_broken_entry_is_a_clear_error(broken_folder: Path, name: str, fragment: str) -> None:
    path = broken_folder / name
    if not os.path.lexists(path):
        pytest.skip("no FIFOs here")
    err = no_hang(lambda: pytest.raises(SpecError, load_spec, path).value, release_fifo(path))
    assert err.message.startswith(f"{path}: {fragment}"), err.message
    assert err.hint


def test_dangling_link_names_its_target(broken_folder: Path) -> None:
    err = spec_error(broken_folder / "dangling.yaml", None, "dangling")
    assert str(broken_folder / "missing.yaml") in err.message


def test_folder_run_reports_broken_entries(run_cli, broken_folder: Path) -> None:
    code, data_text, err = run_cli("run", broken_folder, "-q", "--json", "-")
    assert code == 2, err  # an ERROR entry is exit 2: the folder does not pass without them
    data = json.loads(data_text[data_text.index("{"):])
    status = {Path(s["spec"]).name: s["status"] for s in data["specs"]}
    assert status.pop("good.yaml") == "PASS"
    assert set(status.values()) == {"ERROR"} and "dangling.yaml" in status and "loop_b.yaml" in status
    assert "dangling symbolic link" in err and "symbolic link loop" in err
    assert "Traceback" not in err


def test_list_command_shows_broken_entries_as_invalid(run_cli, broken_folder: Path) -> None:
    code, out, err = run_cli("list", broken_folder)
    assert code == 2, err  # listed, and the listing fails
    assert "dangling.yaml" in out and "loop_a.yaml" in out and "invalid" in out


def test_a_folder_that_is_a_link_loop_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "x").symlink_to(tmp_path / "y")
    (tmp_path / "y").symlink_to(tmp_path / "x")
    with pytest.raises(UsageError, match="does not exist"):
        find_specs(tmp_path / "x")


def test_module_still_imports_neither_torch_nor_click() -> None:
    # (also in test_spec.py) the new reader code must not pull torch in either.
    code = "import sys, gradcheck_cli.spec; print('torch' in sys.modules, 'click' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_file_kinds_cover_every_non_regular_mode() -> None:
    for mode in (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK):
        assert yaml_module._kind(mode).startswith("a ")

"""Reading a spec file safely: from a path to the one YAML mapping it holds.

A spec is parsed with PyYAML's safe loader only (libyaml's where available), so it can
never run code. Careless or hostile files are refused before they can cost much: the
file's kind and size are checked before it is read, nesting is checked on the parser's
events before anything is built, and duplicate keys, alias cycles and alias expansion
("billion laughs") on the node graph before any value is walked (see the caps below).
Problems are :class:`Invalid` (key path, message, hint); :mod:`.spec` adds the file.
Nothing here imports torch.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import reprlib
import stat
from pathlib import Path
from typing import Any, Callable

# Caps that keep a careless or hostile spec from hanging the reader or exhausting memory.  Each is
# checked structurally, before the data is walked, so no timer is needed.
#
# A spec file is a small text file: 1 MiB is hundreds of times the size of any real one, and
# still holds about half a million numbers written out.
MAX_SPEC_BYTES = 1024**2
# Lists and mappings inside each other: a real spec needs 3 levels plus one per dimension of a
# literal (at most MAX_DIMS), so 100 leaves room; it keeps every later walk (validation, repr,
# json.dumps, torch.tensor) far below Python's recursion limit, and libyaml's composer, which
# recurses in C and crashes the interpreter on deep input, never sees more.
MAX_NESTING = 100
# Values (scalars, lists, mappings) counted as if every YAML alias were expanded.  YAML shares an
# aliased value, so nine lines of aliases ("billion laughs") build 10**9 values that any walk of
# the data would visit one by one.  Written out without aliases, YAML spends at least about a byte
# on a value (the densest form, '{a,b,c}', gives each key a null value), so a file within
# MAX_SPEC_BYTES holds fewer than 1.1 million values and only aliases can pass this cap; walking
# 2 million values takes a second or two, so anything under it is still quick.
MAX_SPEC_VALUES = 2_000_000

MINIMAL_SPEC = "A minimal spec: 'layer: layers/my_layer.py:MyLayer' and, below it, 'inputs: [{shape: [4, 3]}]'."


class Invalid(Exception):
    """A validation failure before the spec file's name is attached."""

    def __init__(self, key: str | None, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.key, self.message, self.hint = key, message, hint


def _bounded_repr() -> reprlib.Repr:
    """A ``repr`` that looks at a few items of a few levels only, so its cost never grows with the value."""
    short = reprlib.Repr()
    short.maxlevel = 3
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 4
    short.maxstring = short.maxlong = short.maxother = 40
    return short


_REPR = _bounded_repr()


def bounded_repr(value: Any) -> str:
    """``repr(value)`` cut short, at a cost that does not grow with the value (for error messages)."""
    return _REPR.repr(value)


def found(value: Any) -> str:
    """Describe a YAML value for an error message: type name and (short) value.

    The value may be huge or shared through aliases, so it is never repr'd in full.
    """
    if value is None:
        return "null (nothing)"
    text = _REPR.repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def key_name(key: Any) -> str:
    """A mapping key as it appears in a key path, cut short when it is long."""
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- reading files

_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_NOT_REGULAR_HINT = "A spec must be an ordinary .yaml file."
_LINK_HINT = "Fix the link so that it points at a spec file, or remove it."


def _kind(mode: int) -> str:
    return _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")


def _too_big(size: int) -> Invalid:
    return Invalid(
        None,
        f"is {size:,} bytes; a spec file may be at most {MAX_SPEC_BYTES // 1024**2} MiB ({MAX_SPEC_BYTES:,} bytes).",
        f"A spec is a small text file (limit: {MAX_SPEC_BYTES // 1024**2} MiB); for a large tensor use a random input "
        "('shape: [...]') instead of writing the numbers out.",
    )


def _unreadable(exc: OSError) -> Invalid:
    if exc.errno == errno.ELOOP:
        return Invalid(None, "is a symbolic link loop: the links point at each other and never reach a file.", _LINK_HINT)
    if isinstance(exc, FileNotFoundError):
        return Invalid(None, "spec file does not exist.", "Check the path.")
    if isinstance(exc, IsADirectoryError):
        return Invalid(None, "is a folder, not a spec file.", "Give a .yaml file, or a folder of them.")
    return Invalid(None, f"cannot be read ({exc.strerror or exc}).", "Check the file's permissions.")


def _check_file(path: Path) -> None:
    """Refuse, before opening it, anything that is not a regular file of at most MAX_SPEC_BYTES.

    Opening a FIFO blocks until a writer comes and /dev/zero never ends, so the kind of file is
    checked with ``os.stat`` first; a symbolic link is followed, and a dangling one or a loop
    says so.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise Invalid(
                None, f"is a dangling symbolic link: it points to {_link_target(path)!r}, which does not exist.", _LINK_HINT
            ) from None
        raise Invalid(None, "spec file does not exist.", "Check the path.") from None
    except OSError as exc:  # a link loop, a permission problem, a name too long...
        raise _unreadable(exc) from None
    except ValueError as exc:  # a NUL byte in the name
        raise Invalid(None, f"is not a valid path ({exc}).", "Check the path.") from None
    if stat.S_ISDIR(info.st_mode):
        raise Invalid(None, "is a folder, not a spec file.", "Give a .yaml file, or a folder of them.")
    if not stat.S_ISREG(info.st_mode):
        raise Invalid(None, f"is not a regular file (it is {_kind(info.st_mode)}).", _NOT_REGULAR_HINT)
    if info.st_size > MAX_SPEC_BYTES:
        raise _too_big(info.st_size)


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _read_bytes(path: Path) -> bytes:
    """At most MAX_SPEC_BYTES + 1 bytes of ``path``, which :func:`_check_file` has passed.

    The file is opened non-blocking and checked again through its descriptor, so a FIFO or a
    device swapped in after the check can never block or stream forever.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _unreadable(exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Invalid(None, f"is not a regular file (it is {_kind(info.st_mode)}).", _NOT_REGULAR_HINT)
        if info.st_size > MAX_SPEC_BYTES:
            raise _too_big(info.st_size)
        chunks, total = [], 0
        while total <= MAX_SPEC_BYTES:
            chunk = os.read(fd, MAX_SPEC_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _unreadable(exc) from None
    finally:
        os.close(fd)
    if total > MAX_SPEC_BYTES:  # it grew after the size check
        raise _too_big(total)
    return b"".join(chunks)


def _read_text(path: Path) -> str:
    """The file's text as UTF-8; unreadable, special, huge files and non-UTF-8 bytes are errors."""
    _check_file(path)
    data = _read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise Invalid(
            None, f"is not UTF-8 text (undecodable byte on line {line}).", "Save the spec as UTF-8 YAML text."
        ) from None


@functools.lru_cache(maxsize=None)
def _loader() -> type:
    """The YAML loader for specs: libyaml's safe loader where PyYAML has it, else the pure-Python one.

    Only the safe constructors exist, so tags that would build Python objects are refused as
    before.  A value that YAML cannot turn into data (an invalid date, an integer with thousands
    of digits) is an error naming its line instead of a ValueError traceback.
    """
    import yaml

    class SpecLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def construct_object(self, node, deep=False):  # noqa: ANN001, ANN202
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, OverflowError) as exc:
                raise Invalid(
                    None,
                    f"cannot read the value on line {node.start_mark.line + 1} ({_short_text(str(exc))}).",
                    "Write plain values (numbers, strings, lists, mappings).",
                ) from None

    # YAML 1.1 (PyYAML) reads 1e-6, 1E5 and 1.0e39 as text: its floats need a dot and a signed
    # exponent. Read them as numbers, as YAML 1.2, JSON and Python do ('1e-6' quoted stays text).
    SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789."))
    return SpecLoader


# A YAML 1.2 (JSON-compatible) float with an exponent: what YAML 1.1 misses.
YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


def _short_text(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _scan(text: str, loader: type) -> tuple[int, int]:
    """(documents, values) in ``text``, from the parser's events alone.

    The parser keeps its own stack, but the composer that builds nodes recurses, in C for
    libyaml (thousands of levels crash the interpreter), so nesting deeper than MAX_NESTING is
    refused here, before anything is composed.
    """
    import yaml

    documents = values = depth = 0
    kinds = {
        yaml.SequenceStartEvent: 1,
        yaml.MappingStartEvent: 1,
        yaml.SequenceEndEvent: -1,
        yaml.MappingEndEvent: -1,
        yaml.ScalarEvent: 0,
        yaml.DocumentStartEvent: 2,
    }
    for event in yaml.parse(text, Loader=loader):
        kind = kinds.get(type(event))
        if kind == 0:
            values += 1
        elif kind == 1:
            depth += 1
            values += 1
            if depth > MAX_NESTING:
                raise Invalid(
                    None,
                    f"is nested too deeply: more than {MAX_NESTING} levels of lists and mappings at line "
                    f"{event.start_mark.line + 1}.",
                    "A spec needs a few levels, plus one per dimension of a literal (at most 64).",
                )
        elif kind == -1:
            depth -= 1
        elif kind == 2:
            documents += 1
    return documents, values


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(root: Any, loader: Any, written: int) -> None:
    """Walk the composed node graph once, before anything is constructed from it.

    Each distinct node is visited once (memoised by ``id()``; an alias is the same node object as
    its anchor), in an explicit stack, so that

    * a cycle (an alias inside its own anchor) is refused;
    * the values each node stands for, counted as if every alias were expanded, and the nesting
      it reaches through aliases, are summed from its children's counts -- the document may hold
      10**9 values and is refused after a few hundred steps, before any walk of the data;
    * each mapping's keys are checked for duplicates.

    Duplicates are checked here rather than in ``construct_mapping`` because SafeConstructor
    applies merge keys by rewriting ``node.value`` in place (``flatten_mapping``), so a mapping
    met through ``<<: *base`` and again on its own would look duplicated there.  Merge keys keep
    their YAML meaning: a key of the mapping itself overrides one merged in from ``<<`` (that is
    what merging is for), but a key written twice in one mapping -- ``<<`` included -- is an
    error, since YAML would silently keep only the last.
    """
    if _kind_of(root) == "scalar":
        return
    counts: dict[int, tuple[int, int]] = {}  # id -> (expanded values, expanded nesting) of a list or mapping
    parents: dict[int, tuple[Any, int]] = {}  # id -> (parent, index in it) on its first path from the root
    open_nodes: set[int] = set()  # the lists and mappings on the path from the root to the current one

    def step(parent: Any, index: int) -> str:
        if _kind_of(parent) == "sequence":
            return f"[{index}]"
        key = parent.value[index][0]
        return "." + key_name(key.value if _kind_of(key) == "scalar" else "?")

    def path(node: Any, child: int | None = None) -> str | None:  # of node (or of its child); only for a message
        steps = [step(node, child)] if child is not None else []
        while id(node) in parents:
            node, index = parents[id(node)]
            steps.append(step(node, index))
        return "".join(reversed(steps)).lstrip(".") or None

    # Entries: (True, node, parent, index) visits a node; (False, node, kids, scalars) sums up its children.
    stack: list[tuple] = [(True, root, None, 0)]
    while stack:
        visit, node, other, number = stack.pop()
        ident = id(node)
        if not visit:  # every child is counted: sum them up
            values = 1 + number + sum(counts[id(kid)][0] for kid in other)
            nesting = 1 + max((counts[id(kid)][1] for kid in other), default=0)
            open_nodes.discard(ident)
            if values > MAX_SPEC_VALUES:
                how = "holds" if written > MAX_SPEC_VALUES else "expands, through YAML aliases, to"
                raise Invalid(
                    path(node),
                    f"{how} more than {MAX_SPEC_VALUES:,} values (the value starting on line {node.start_mark.line + 1}).",
                    "Write the data out once instead of repeating it with aliases (*name); for a large tensor "
                    "use a random input ('shape: [...]').",
                )
            if nesting > MAX_NESTING:
                raise Invalid(
                    path(node),
                    f"is nested too deeply through YAML aliases: more than {MAX_NESTING} levels of lists and mappings "
                    f"(the value starting on line {node.start_mark.line + 1}).",
                    "Write the value out instead of nesting aliases (*name) inside each other.",
                )
            counts[ident] = (values, nesting)
            continue
        if ident in counts:  # met before, through an alias: counted already
            continue
        if ident in open_nodes:
            at = path(other, number)
            raise Invalid(
                None,
                f"is nested too deeply: the alias on line {node.start_mark.line + 1}{f' ({at})' if at else ''} refers "
                "to a value that holds it, so the value would hold itself without end.",
                "An alias (*name) may only repeat a value defined before it, outside it.",
            )
        if other is not None:
            parents[ident] = (other, number)
        if _kind_of(node) == "mapping":
            if node.value:
                _check_unique_keys(node, loader, lambda node=node: path(node))
            size = 2 * len(node.value)
            nested = [(kid, i) for i, pair in enumerate(node.value) for kid in pair if _kind_of(kid) != "scalar"]
        else:
            size = len(node.value)
            nested = [(kid, i) for i, kid in enumerate(node.value) if _kind_of(kid) != "scalar"]
        if not nested:  # scalars only (within the file's size, so within the cap): done at once
            counts[ident] = (1 + size, 1)
            continue
        open_nodes.add(ident)
        stack.append((False, node, [kid for kid, _ in nested], size - len(nested)))
        stack.extend((True, kid, node, i) for kid, i in reversed(nested))  # reversed: visited in file order


def _kind_of(node: Any) -> str:
    """'scalar', 'sequence' or 'mapping': from the node's own ``id``, not isinstance -- libyaml's C
    parser keeps making nodes of the classes it first imported, even where ``yaml`` is imported
    afresh later (pytest's pytester restores sys.modules between runs)."""
    return node.id


def _check_unique_keys(node: Any, loader: Any, where: Callable[[], str | None]) -> None:
    """Refuse a key written twice in one mapping (and keys that are not plain scalars).

    Keys are compared as the values YAML makes of them, as a dict would: 'on' and 'true' are one key.
    """
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if _kind_of(key_node) != "scalar":
            what = "list" if _kind_of(key_node) == "sequence" else "mapping"
            raise Invalid(where(), f"has a {what} as a key on line {line}; keys must be names.", "Write name: value.")
        key = "<<" if key_node.tag == _MERGE_TAG else loader.construct_object(key_node)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:  # an unhashable scalar (none of the safe constructors makes one)
            raise Invalid(where(), f"has a key on line {line} that cannot be a key.", "Write name: value.") from None
        if first is not key_node:
            text, at = key_name(key_node.value), where()
            same = "" if first.value == key_node.value else f" ({key_name(first.value)!r} and {text!r} are the same key)"
            raise Invalid(
                f"{at}.{text}" if at else text,
                f"duplicate key {text!r} on lines {first.start_mark.line + 1} and {line}{same}; "
                "YAML would silently keep only the last one.",
                "Remove one of them.",
            )


def _parse(text: str) -> dict:
    """The single YAML document in ``text``, which must be a mapping."""
    import yaml  # here, not at import time: runs on plain layer targets never pay for it

    loader_class = _loader()
    try:
        documents, written = _scan(text, loader_class)
        if documents > 1:
            raise Invalid(
                None,
                f"holds {documents} YAML documents (separated by '---'); a spec file holds exactly one.",
                "Split it into one file per spec.",
            )
        loader = loader_class(text)
        try:
            node = loader.get_single_node()
            doc = None
            if node is not None:
                _check_nodes(node, loader, written)
                doc = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}" if mark else ""
        if "constructor for the tag" not in str(exc.problem):
            raise Invalid(
                None, f"cannot read the value{where} ({exc.problem}).", "Write plain values (numbers, strings, lists, mappings)."
            ) from None
        raise Invalid(
            None,
            f"uses a YAML tag that is refused{where} ({exc.problem}): specs are read with yaml.safe_load, "
            "so they can hold only plain data, never Python objects.",
            "Write plain values (numbers, strings, lists, mappings).",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        if "maximum nesting depth" in problem:  # libyaml >= 0.2.6 (PyYAML 6.0.4 wheels) stops deep flow nesting itself
            raise Invalid(
                None,
                f"is nested too deeply: more than {MAX_NESTING} levels of lists and mappings at line {mark.line + 1 if mark else '?'}.",
                "A spec needs a few levels, plus one per dimension of a literal (at most 64).",
            ) from None
        if exc.problem and exc.context and exc.context_mark and exc.context_mark is not mark:
            problem += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise Invalid(None, f"YAML syntax error{where}: {problem}.", "Check indentation and quoting there.") from None
    except yaml.YAMLError as exc:
        raise Invalid(None, f"is not valid YAML ({exc}).") from None
    if doc is None:
        raise Invalid(None, "is empty.", MINIMAL_SPEC)
    if not isinstance(doc, dict):
        raise Invalid(None, f"must be a mapping (layer: ..., inputs: ...), but it is a {found(doc)}.", MINIMAL_SPEC)
    return doc



def read_document(path: Path) -> dict:
    """The YAML mapping of the spec file at ``path``; raises :class:`Invalid`."""
    return _parse(_read_text(path))

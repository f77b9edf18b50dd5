"""How to check: every option declared once, and the per-dtype step and tolerance table.

Each field of :class:`CheckOptions` carries its :class:`Option` (kind, help, where it
may be given). The Python API takes the fields as keywords, a YAML spec takes them as
keys, the command line as ``--flags``, and a rerun line is written from them: all of
it derived from this one declaration, so the four cannot drift apart. A kind checks a
value the same way wherever it comes from, and its messages name the option
(``eps: must be greater than 0, got -1``); the caller adds where it was given.

Nothing here imports torch or click.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import UsageError, suggest

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8", "bool")
DTYPES = FLOAT_DTYPES + INT_DTYPES

# dtype: (eps, rtol, atol).  Central differences have truncation error ~eps^2 and
# rounding error ~u/eps, so eps is near the cube root of the unit roundoff u.
TOLERANCES = {
    "float64": (1e-6, 1e-5, 1e-10),
    "float32": (1e-3, 2e-3, 1e-6),
    "float16": (1e-2, 5e-3, 1e-5),
    "bfloat16": (3e-2, 2e-2, 1e-4),
}
# Below float32 the rtol is a few units of the dtype's rounding (float16: 10 u, bfloat16: 5 u),
# not tens of them: the backward's own rounding in its reductions is measured per element
# (analytic.py) and allowed for on top, so a correct layer passes and a 5% wrong one does not.
assert set(TOLERANCES) == set(FLOAT_DTYPES)


# --------------------------------------------------------------------------- kinds of value


class Kind:
    """What values an option takes: ``check`` accepts or refuses one (from Python, YAML or TOML);
    ``parse`` turns command-line text into one."""

    metavar = "VALUE"
    example = ""

    def check(self, value: Any, name: str) -> Any:
        return value

    def parse(self, text: str, name: str) -> Any:
        return self.check(text, name)

    def refuse(self, name: str, what: str, value: Any) -> UsageError:
        hint = f"Example: {name} {self.example}." if self.example else None
        return UsageError(f"must be {what}, got {_shown(value)}.", hint, key=name)


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...]

    @property
    def metavar(self) -> str:  # type: ignore[override]
        return "|".join(self.choices)

    def check(self, value: Any, name: str) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        hint = suggest(value, self.choices, "choose one of") if isinstance(value, str) else f"choose one of: {', '.join(self.choices)}."
        raise UsageError(f"must be one of {', '.join(self.choices)}, got {_shown(value)}.", hint, key=name)


@dataclass(frozen=True)
class Switch(Choice):
    """A Choice among whose values are 'on' and 'off': YAML 1.1 reads a bare on/off as true/false,
    so true means 'on' and false 'off' (``sets: on`` in a spec is what it looks like)."""

    def check(self, value: Any, name: str) -> str:
        if isinstance(value, bool):
            value = "on" if value else "off"
        return super().check(value, name)


@dataclass(frozen=True)
class Number(Kind):
    """A finite real number, given as a number or as text in any form people write ('1e-6')."""

    positive: bool = False  # > 0; else >= 0
    maximum: float | None = None
    example: str = "1e-6"
    metavar = "NUMBER"

    def check(self, value: Any, name: str) -> float:
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise self.refuse(name, "a finite number", value)
        if (self.positive and number <= 0) or number < 0:
            raise self.refuse(name, "greater than 0" if self.positive else "0 or more", value)
        if self.maximum is not None and number > self.maximum:
            raise self.refuse(name, f"at most {self.maximum:g}", value)
        return float(number)


@dataclass(frozen=True)
class Whole(Kind):
    minimum: int = 0
    maximum: int | None = None
    example: str = "0"
    metavar = "N"

    def check(self, value: Any, name: str) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.refuse(name, "a whole number", value)
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            top = f" to {self.maximum}" if self.maximum is not None else " or more"
            raise self.refuse(name, f"a whole number from {self.minimum}{top}", value)
        return value


@dataclass(frozen=True)
class Flag(Kind):
    metavar = "BOOL"

    def check(self, value: Any, name: str) -> bool:
        if isinstance(value, bool):
            return value
        raise self.refuse(name, "true or false", value)


@dataclass(frozen=True)
class Names(Kind):
    """One or more tensor names: ``only``."""

    metavar = "NAME"
    example = "x"

    def check(self, value: Any, name: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in items):
            raise self.refuse(name, "a tensor name or a list of them", value)
        return tuple(items)

    def parse(self, text: str, name: str) -> str:  # one name a flag: --only a --only b
        return self.check(text, name)[0]


@dataclass(frozen=True)
class Target(Kind):
    """A layer target: 'file.py:Name', 'pkg.mod:Name' or 'pkg.mod.Name' (where it is, is checked when it is loaded)."""

    metavar = "TARGET"
    example = "reference.py:PlainGaussFilter"

    def check(self, value: Any, name: str) -> str:
        if isinstance(value, str) and value.strip() and "\n" not in value:
            return value.strip()
        raise self.refuse(name, "a layer target such as 'file.py:Name' or 'pkg.mod:Name'", value)


# cpu, cuda, cuda:1, mps, xpu:0, meta (refused when it is used: it holds no data), ...
_DEVICE = re.compile(r"[a-z][a-z0-9_]*(:\d+)?")


@dataclass(frozen=True)
class Device(Kind):
    """A torch device string; whether the device exists here is checked when the check starts."""

    metavar = "DEVICE"
    example = "cuda"

    def check(self, value: Any, name: str) -> str:
        if isinstance(value, str) and _DEVICE.fullmatch(value.strip()):
            return value.strip()
        raise UsageError(f"{_shown(value)} is not a torch device.", "Use cpu, cuda, cuda:N or mps.", key=name)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- the options


@dataclass(frozen=True)
class Option:
    """One check option: its kind and help, and where it may be given."""

    kind: Kind
    help: str
    cli: bool = True  # a --flag of `gradcheck run` (and `sweep`)
    spec: bool = True  # a key of a YAML spec (and of [tool.gradcheck])
    rerun: str = ""  # in a rerun line: "always", "changed" (when not the default), "" never
    old_names: tuple[str, ...] = ()  # earlier names, still accepted everywhere (deprecated)


def option(default: Any, kind: Kind, help: str, **where: Any) -> Any:
    """A field of :class:`CheckOptions` with its :class:`Option`."""
    return dataclasses.field(default=default, metadata={"option": Option(kind, help, **where)})


@dataclass(frozen=True)
class CheckOptions:
    """How to check. Built from keywords (the API), a spec or the command line; refuses invalid values.

    ``None`` for eps/rtol/atol means the dtype's default (:data:`TOLERANCES`).
    """

    dtype: str = option("float64", Choice(FLOAT_DTYPES), "dtype the layer runs in.", rerun="always")
    numeric_dtype: str | None = option(
        None,
        Choice(FLOAT_DTYPES),
        "dtype of the numeric (finite-difference) side [default: float64 when the layer runs faithfully there, "
        "else the layer's dtype]. The analytic side always stays in the layer's dtype.",
        rerun="changed",
        old_names=("reference_dtype",),  # until 0.2: 'reference' is --reference, the implementation compared with
    )
    device: str = option("cpu", Device(), "cpu, cuda, cuda:N, mps, ...", rerun="changed")
    seed: int = option(0, Whole(0, 2**63 - 2), "Seed of the random inputs.", rerun="always")
    eps: float | None = option(None, Number(positive=True), "Finite-difference step [default: per dtype].", rerun="always")
    rtol: float | None = option(None, Number(example="1e-5"), "Relative tolerance [default: per dtype].", rerun="always")
    atol: float | None = option(None, Number(example="1e-10"), "Absolute tolerance [default: per dtype].", rerun="always")
    kinks: str = option("pass", Choice(("pass", "fail")), "Whether elements at a non-differentiable point fail the check.", rerun="changed")
    weighted_loss: bool = option(
        True, Flag(), "Also check the loss sum(w*y) with random weights, which 1/2 sum(y^2) misses where y~0.", rerun="changed"
    )
    grouping: bool = option(
        True,
        Flag(),
        "Move many elements per forward where every output depends on at most one of them (elementwise layers, "
        "filters), each credit verified; off: one element per forward pair.",
    )
    sets: str = option(
        "auto",
        Switch(("auto", "on", "off")),
        "Test sets of elements along random directions and bisect down to the wrong ones (every element covered; "
        "see the README): auto where element by element would take long, on for every tensor not grouped, "
        "off: element by element.",
        rerun="changed",
    )
    batch: bool = option(True, Flag(), "Batch perturbed forwards with torch.func.vmap where the layer allows it.", cli=False, spec=False)
    max_elements: int | None = option(None, Whole(1, example="1000"), "Check at most this many elements per tensor (sampled with coverage).", rerun="changed")
    only: tuple[str, ...] = option((), Names(), "Check only this tensor (an input by its name, or a parameter); repeatable.")
    constant: tuple[str, ...] = option(
        (), Names(), "Pass this input as given, never perturbed nor checked (a fixed filter, boxes, a mask); repeatable.", rerun="changed"
    )
    order: int = option(
        1,
        Whole(1, 2, example="2"),
        "2: also check the backward's own derivative (double backward: gradient penalties, MAML, Hessian-vector "
        "products), the backward as a function of the inputs, parameters and output gradient.",
        rerun="changed",
    )
    forward_ad: bool = option(
        False, Flag(), "Also check forward-mode AD (a Function's jvp): each element's tangent against finite differences.", rerun="changed"
    )
    reference: str | None = option(
        None,
        Target(),
        "Compare with this plain-autograd implementation of the same layer (same constructor arguments, parameters "
        "copied by name) instead of finite differences: outputs first, then gradients, element by element.",
        rerun="changed",
    )
    budget: float | None = option(None, Number(positive=True, maximum=1e7, example="60"), "Sample elements so the check takes about this many seconds.")
    timeout: float | None = option(None, Number(positive=True, maximum=1e7, example="60"), "Stop a check that runs longer than this many seconds (exit 1).")

    def __post_init__(self) -> None:
        for name, opt in options():
            value = getattr(self, name)
            if value is not None and value != default_of(name):
                object.__setattr__(self, name, opt.kind.check(value, name))

    def resolved(self, numeric_dtype: str | None = None) -> "Steps":
        """The step and tolerances: given values, else the table's for the dtype of each side."""
        eps, rtol, atol = TOLERANCES[numeric_dtype or self.numeric_dtype or self.dtype]
        _, rtol_own, atol_own = TOLERANCES[self.dtype]
        # The analytic side stays in the layer's dtype: its rounding sets the tolerance.
        rtol, atol = max(rtol, rtol_own), max(atol, atol_own)
        return Steps(
            self.eps if self.eps is not None else eps,
            self.rtol if self.rtol is not None else rtol,
            self.atol if self.atol is not None else atol,
        )

    def replace(self, **changes: Any) -> "CheckOptions":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Steps:
    """The finite-difference step and the tolerances a check uses."""

    eps: float
    rtol: float
    atol: float


def options() -> Iterator[tuple[str, Option]]:
    """Every check option, in declaration order: (name, Option)."""
    for f in dataclasses.fields(CheckOptions):
        yield f.name, f.metadata["option"]


def default_of(name: str) -> Any:
    (found,) = [f for f in dataclasses.fields(CheckOptions) if f.name == name]
    return found.default


def cli_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


SPEC_KEYS = tuple(name for name, opt in options() if opt.spec)
CLI_OPTIONS = tuple(name for name, opt in options() if opt.cli)
# Earlier names of options -> their names now (accepted as keywords, spec keys, [tool.gradcheck] keys and flags).
RENAMED = {old: name for name, opt in options() for old in opt.old_names}


def current_names(values: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``values`` with every option under its current name, and the old names that were used.

    An option given under both names is refused: which one was meant cannot be known."""
    out: dict[str, Any] = {}
    used: list[str] = []
    for key, value in values.items():
        name = RENAMED.get(key)
        if name is None:
            out[key] = value
            continue
        if name in values:
            raise UsageError(f"{key!r} and {name!r} are one option ({key} is its old name), given twice.", f"Give {name} only.", key=key)
        out[name] = value
        used.append(key)
    return out, tuple(used)


def check_option(name: str, value: Any) -> Any:
    """One option's value, checked (a spec key, a pyproject key); raises UsageError with ``key=name``."""
    for known, opt in options():
        if known == name or name in opt.old_names:
            return value if value is None else opt.kind.check(value, name)
    raise UsageError(f"unknown option {name!r}.", key=name)


def _rerun_values(config: dict[str, Any], skip: Callable[[str], bool]) -> Iterator[tuple[str, Option, Any]]:
    """The options a rerun repeats, with this report config's (resolved) values."""
    for name, opt in options():
        if not opt.rerun or skip(name) or name not in config:
            continue
        value = config[name]
        if isinstance(value, list):  # a report's config holds lists (JSON); the defaults are tuples
            value = tuple(value)
        default = default_of(name)
        if name == "numeric_dtype":
            # A float64 layer is always differenced in float64; below it the automatic choice depends on the
            # layer (float64 where it runs faithfully there), so the dtype that ran is always repeated.
            default = "float64" if config.get("dtype") == "float64" else None
            if config.get("reference") is not None:  # against a reference no finite differences are taken
                continue
        if value is None or (opt.rerun == "changed" and value == default):
            continue
        yield name, opt, value


def rerun_arguments(config: dict[str, Any], *, skip: Callable[[str], bool] = lambda name: False) -> list[str]:
    """The command-line flags that repeat a check with this report config (the resolved values)."""
    args: list[str] = []
    for name, opt, value in _rerun_values(config, skip):
        if isinstance(opt.kind, Flag):
            args.append(cli_flag(name) if value else "--no-" + name.replace("_", "-"))
        elif isinstance(opt.kind, Names):
            args += [arg for item in value for arg in (cli_flag(name), item)]
        else:
            args += [cli_flag(name), repr(float(value)) if isinstance(opt.kind, Number) else str(value)]
    return args


def rerun_keywords(config: dict[str, Any], *, skip: Callable[[str], bool] = lambda name: False) -> dict[str, Any]:
    """The keywords of :func:`gradcheck_cli.check` that repeat a check with this report config."""
    return {name: float(value) if isinstance(opt.kind, Number) else value for name, opt, value in _rerun_values(config, skip)}

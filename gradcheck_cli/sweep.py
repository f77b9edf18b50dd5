"""Choosing eps: the worst relative error of a check over a range of step sizes.

Central differences trade truncation error (~eps^2, large steps) against
rounding error (~u/eps, small steps), so the error against eps is U-shaped.
:func:`sweep` runs the core :func:`~gradcheck_cli.check.check` once per step
size (sampling at most ``max_elements`` per tensor to stay fast) and returns a
frozen :class:`SweepResult`; :func:`plot_sweep` draws it.  Nothing here prints.

A step at which the layer's code raises (a forward that leaves its domain at a large
step) is that step's failure, shown with its error and never recommended; where it
raises at every step, the sweep raises that error (exit 1): there is no step to choose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .checker import check, spec_arguments
from .environment import Placement, preserved_state
from .errors import LayerError, TimedOut, UsageError
from .load import load_target, spec_imports
from .matrix import only_combination
from .options import CheckOptions
from .spec import LayerSpec

# Step sizes swept by default, per dtype of the numeric side: (low, high).
EPS_RANGES = {"float64": (1e-10, 1e-1), "float32": (1e-6, 1.0), "float16": (1e-4, 1.0), "bfloat16": (1e-3, 1.0)}
POINTS = 10
MAX_ELEMENTS = 256

# progress(point_index, n_points, eps), called before each check
SweepProgress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class SweepPoint:
    """The check at one step size."""

    eps: float
    worst: float  # largest relative error over all tensors
    errors: tuple[float, ...]  # largest relative error per tensor, in SweepResult.tensors order
    n_failed: int  # failing elements, all tensors
    n_noise: int  # elements lost in finite-difference noise
    conclusive: bool = True  # no tensor lost in noise (inconclusive): only such a step can be recommended
    error: str | None = None  # what the layer raised at this step (then nothing was checked)


@dataclass(frozen=True)
class SweepResult:
    """Worst relative errors of one layer's check at each step size; ``best`` is the one to use."""

    target: str
    tensors: tuple[str, ...]
    points: tuple[SweepPoint, ...]
    default_eps: float  # what `gradcheck run` uses here (the spec's eps, else the dtype's default)
    default_source: str  # "default" or "spec"
    config: dict[str, Any]  # the config of the check at the best eps, less eps

    @property
    def best(self) -> SweepPoint | None:
        """The step to use; None where every step's check was lost in noise."""
        return best_point(self.points, self.default_eps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "tensors": list(self.tensors),
            "points": [
                {"eps": p.eps, "worst": None if p.error else p.worst, "errors": {} if p.error else dict(zip(self.tensors, p.errors)), "n_failed": p.n_failed, "n_noise": p.n_noise, "error": p.error}
                for p in self.points
            ],
            "best_eps": self.best.eps if self.best is not None else None,
            "default_eps": self.default_eps,
            "config": dict(self.config),
        }


def best_point(points: Sequence[SweepPoint], default_eps: float) -> SweepPoint | None:
    """The conclusive step size with the smallest worst error (ties: the one closest to the default).

    A step at which some tensor was lost in noise is never recommended: its small
    "error" says nothing (a step below the rounding resolution changes nothing at all).
    """
    usable = [p for p in points if p.conclusive]
    if not usable:
        return None
    low = min(p.worst for p in usable)
    ties = [p for p in usable if p.worst <= low * (1 + 1e-9)]
    return min(ties, key=lambda p: abs(math.log(p.eps / default_eps)))


def eps_grid(low: float, high: float, points: int) -> tuple[float, ...]:
    """``points`` step sizes evenly spaced in log from ``low`` to ``high`` (both included)."""
    if not (0 < low < high) or points < 2:
        raise UsageError(f"--eps-range {low:g} {high:g} --points {points}: need 0 < LOW < HIGH and at least 2 points.", "Example: --eps-range 1e-10 1e-1 --points 10.")
    step = (math.log10(high) - math.log10(low)) / (points - 1)
    return tuple(float(f"{10 ** (math.log10(low) + i * step):.3g}") for i in range(points))


def sweep(
    layer: Any,
    inputs: Sequence = (),
    *,
    eps_range: tuple[float, float] | None = None,
    points: int = POINTS,
    max_elements: int | None = MAX_ELEMENTS,
    args: Sequence = (),
    kwargs: dict | None = None,
    params: dict | None = None,
    name: str | None = None,
    progress: SweepProgress | None = None,
    spec_eps: float | None = None,
    **options: Any,
) -> SweepResult:
    """Check ``layer`` (as :func:`check` takes it) at each step size in ``eps_range`` (default: per dtype).

    ``options`` are those of :func:`check`, less ``eps``; at most ``max_elements``
    elements per tensor are checked.  ``spec_eps`` is the eps a spec sets, shown
    as the reference point instead of the dtype's default.
    """
    if "eps" in options:
        raise UsageError("sweep chooses eps itself; give --eps-range LOW HIGH instead of --eps.", None)
    opts = CheckOptions(**options)
    if opts.reference:
        raise UsageError(
            "sweep finds a finite-difference step, and a check against --reference takes none.",
            "Run 'gradcheck run ... --reference REF' to compare with the reference; sweep without --reference.",
        )
    numeric_dtype = opts.numeric_dtype or opts.dtype
    grid = eps_grid(*(eps_range or EPS_RANGES[numeric_dtype]), points)
    source = "default" if spec_eps is None else "spec"
    default_eps = opts.resolved().eps if spec_eps is None else spec_eps
    name = name or (layer if isinstance(layer, str) else None)
    result_points, reports, raised = [], [], []
    # Loading the layer file puts its folder on sys.path and runs its code: both are undone, as in check().
    with preserved_state(Placement.of(opts.device).device):
        obj = load_target(layer) if isinstance(layer, str) else layer
        for i, eps in enumerate(grid):
            if progress:
                progress(i, len(grid), eps)
            try:
                report = check(obj, list(inputs), args=args, kwargs=kwargs, params=params, name=name, eps=eps, max_elements=max_elements, **options)
            except TimedOut:
                raise  # as slow at any step: stop here
            except LayerError as exc:  # the layer raised at this step: its failure, not the sweep's end
                raised.append(exc)
                result_points.append(SweepPoint(eps=eps, worst=math.nan, errors=(), n_failed=0, n_noise=0, conclusive=False, error=exc.message))
                continue
            reports.append(report)
            errors = tuple(t.max_rel_error for t in report.tensors)
            result_points.append(
                SweepPoint(
                    eps=eps,
                    worst=max(errors, default=0.0),
                    errors=errors,
                    n_failed=sum(t.n_failed for t in report.tensors),
                    n_noise=sum(t.counts.get("NOISE", 0) for t in report.tensors),
                    conclusive=not any(t.inconclusive for t in report.tensors),
                )
            )
    if not reports:
        first = raised[0]
        same = all(exc.message == first.message for exc in raised)
        raise LayerError(
            f"The layer raised at every step size from {grid[0]:g} to {grid[-1]:g}, so no step can be chosen. "
            + (first.message if same else f"At {grid[0]:g}: {first.message}"),
            first.hint or "Run 'gradcheck run' on it to see the error; fix it, then sweep again.",
        ) from first
    chosen = best_point(result_points, default_eps)
    checked = [p for p in result_points if p.error is None]  # in the order of reports
    best = reports[checked.index(chosen)] if chosen is not None else reports[-1]
    tensors = tuple(t.name for t in best.tensors)
    result_points = [p if p.error is None else replace(p, errors=(math.nan,) * len(tensors)) for p in result_points]
    return SweepResult(
        target=best.target,
        tensors=tensors,
        points=tuple(result_points),
        default_eps=default_eps,
        default_source=source,
        config={k: v for k, v in best.config.items() if k != "eps"},
    )


def sweep_spec(spec: LayerSpec, progress: SweepProgress | None = None, **overrides: Any) -> SweepResult:
    """Sweep what a YAML spec describes (one combination of a matrix); keyword ``overrides`` win over the spec's options."""
    spec = only_combination(spec)
    options = {"max_elements": MAX_ELEMENTS, **spec.options_with(overrides)}
    spec_eps = options.pop("eps", None)
    with spec_imports(spec.path):  # a dotted layer resolves as the spec means it, wherever gradcheck runs
        return sweep(spec.layer, list(spec.inputs), progress=progress, spec_eps=spec_eps, **spec_arguments(spec), **options)


def plot_sweep(result: SweepResult, path: str | Path) -> None:
    """Write a PNG of worst relative error against eps (log-log), per tensor and overall."""
    from .errormap import require_matplotlib, save_png

    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    eps = [p.eps for p in result.points]
    floor = 1e-17  # an exact zero error cannot go on a log axis
    for k, tname in enumerate(result.tensors):
        ax.loglog(eps, [max(p.errors[k], floor) for p in result.points], marker=".", linewidth=1, label=tname)
    ax.loglog(eps, [max(p.worst, floor) for p in result.points], color="black", linewidth=2, label="worst")
    ax.axvline(result.default_eps, color="gray", linestyle="--", label=f"{result.default_source} eps {result.default_eps:g}")
    if result.best is not None:
        ax.axvline(result.best.eps, color="red", linestyle=":", label=f"best eps {result.best.eps:g}")
    ax.set_xlabel("eps (finite-difference step)")
    ax.set_ylabel("max relative error")
    ax.set_title(f"gradcheck sweep {result.target}", fontsize=10, loc="left")
    ax.legend(fontsize=8)
    save_png(fig, path)

"""Error maps: where in a tensor the checked elements failed, in its own layout.

:func:`error_map` turns per-element verdict codes (see :mod:`gradcheck_cli.fd`)
into plain text lines: a 1-D tensor is one strip of characters, a 2-D tensor a
grid with row and column indices, a higher-dimensional tensor one grid (its
last two dims) per leading index.  Large tensors are binned; a bin shows the
worst verdict inside it.  Grid rows are framed by ``|`` so a renderer can
colour the cells.  :func:`plot_error_maps` writes the same as a PNG heat map
of relative errors (needs matplotlib).  Nothing here prints.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .errors import UsageError
from .rules import relative_error
from .verdicts import FAIL, SEVERITY

if TYPE_CHECKING:
    from .report import Report, TensorReport

# Verdicts, mildest first: a bin shows the character of the most severe verdict inside it.
RANKED = tuple(int(v) for v in SEVERITY)
CHARS = {int(v): v.char for v in SEVERITY}
LEGEND = "legend: . pass  X fail  k kink  ? noise  (blank) not checked"
FRAME = "|"

MAX_COLS, MAX_ROWS, MAX_SLICES = 64, 32, 8
PLOT_HINT = "--plot needs matplotlib, which is not installed"
PLOT_INSTALL = "pip install matplotlib (from a checkout of gradcheck: pip install -e '.[plot]')"


def error_map(verdicts: np.ndarray, max_cols: int = MAX_COLS, max_rows: int = MAX_ROWS, max_slices: int = MAX_SLICES) -> list[str]:
    """Text lines mapping each element's verdict, in the tensor's own layout (see the module doc)."""
    ranks = _ranks(np.asarray(verdicts))
    if ranks.ndim <= 2:
        grid = ranks.reshape((1, -1) if ranks.ndim < 2 else ranks.shape)
        return [*_grid(grid, max_rows, max_cols, row_labels=ranks.ndim == 2), LEGEND]
    lead_shape = ranks.shape[:-2]
    slices = [(idx, ranks[idx]) for idx in np.ndindex(*lead_shape)]
    shown = slices
    lines: list[str] = []
    if len(slices) > max_slices:
        worst = ranks.reshape(*lead_shape, -1).max(-1)
        lines += [f"worst verdict per {_slice_name(lead_shape, None)}:"]
        lines += _grid(worst.reshape(-1, lead_shape[-1]), max_rows, max_cols, row_labels=len(lead_shape) > 1)
        failing = [(idx, s) for idx, s in slices if s.max() == _rank(FAIL)]
        shown = (failing or slices)[:max_slices]
        lines.append(f"{len(shown)} of {len(slices)} slices shown" + (" (those with failures)" if failing else ""))
    for idx, grid in shown:
        lines.append(_slice_name(lead_shape, idx) + ":")
        lines += _grid(grid, max_rows, max_cols, row_labels=True)
    return [*lines, LEGEND]


def _rank(code: int) -> int:
    return RANKED.index(code)


def _ranks(verdicts: np.ndarray) -> np.ndarray:
    ranks = np.zeros(verdicts.shape, dtype=np.int8)
    for code in RANKED:
        ranks[verdicts == code] = _rank(code)
    return ranks


def _slice_name(lead_shape: tuple[int, ...], idx: tuple[int, ...] | None) -> str:
    """'[2, :, :]' for one slice, '[i, j, :, :]' for the overview."""
    head = [str(i) for i in idx] if idx is not None else list("ijklmn"[: len(lead_shape)])
    return "[" + ", ".join(head + [":", ":"]) + "]"


def _grid(ranks: np.ndarray, max_rows: int, max_cols: int, row_labels: bool) -> list[str]:
    """Rows of cell characters framed by '|', with a column ruler, binned to fit."""
    rows, cols = ranks.shape
    rb, cb = math.ceil(rows / max_rows), math.ceil(cols / max_cols)
    binned = _bin(ranks, rb, cb)
    label_w = len(str((binned.shape[0] - 1) * rb)) if row_labels else 0
    pad = " " * (label_w + 1 if row_labels else 0)
    lines = []
    if rb > 1 or cb > 1:
        size = f"{rb}x{cb}" if row_labels else f"{cb}"
        lines.append(f"binned: each cell = {size} elements, showing the worst verdict in it")
    lines.append(pad + " " + _ruler(binned.shape[1], cb))
    for r, row in enumerate(binned):
        label = f"{r * rb:>{label_w}} " if row_labels else ""
        lines.append(label + FRAME + "".join(CHARS[RANKED[v]] for v in row) + FRAME)
    return lines


def _bin(ranks: np.ndarray, rb: int, cb: int) -> np.ndarray:
    """Max over rb x cb blocks (edge blocks padded with 'unchecked')."""
    rows, cols = ranks.shape
    padded = np.zeros((math.ceil(rows / rb) * rb, math.ceil(cols / cb) * cb), dtype=ranks.dtype)
    padded[:rows, :cols] = ranks
    return padded.reshape(padded.shape[0] // rb, rb, padded.shape[1] // cb, cb).max(axis=(1, 3))


def _ruler(n_cells: int, cb: int) -> str:
    """Column indices (first element of the cell) every 10 cells, left-aligned over their cell."""
    ruler = [" "] * n_cells
    for c in range(0, n_cells, 10):
        label = str(c * cb)
        if c + len(label) <= n_cells or c == 0:
            ruler[c : c + len(label)] = label
    return "".join(ruler).rstrip()


def relative_errors(t: TensorReport) -> np.ndarray:
    """|a - n| / max(|a|, |n|, floor) per element as the check measures it; NaN where not checked."""
    a = np.asarray(t.analytic_grad, dtype=np.float64).reshape(t.shape)
    n = np.asarray(t.numeric_grad, dtype=np.float64).reshape(t.shape)
    checked = ~np.isnan(n)
    scale = float(np.maximum(np.abs(a[checked]), np.abs(n[checked])).max()) if checked.any() else 0.0
    rel = relative_error(torch.from_numpy(a), torch.from_numpy(np.where(checked, n, a)), scale).numpy()
    return np.where(checked, rel, np.nan)


def require_matplotlib() -> None:
    """Raise the --plot usage error unless matplotlib can be imported."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"{PLOT_HINT}.", f"{PLOT_INSTALL}, or run without --plot.")


def as_2d(array: np.ndarray) -> np.ndarray:
    """A tensor laid out for one image: leading dims stacked as rows, the last dim as columns."""
    return array.reshape(1, -1) if array.ndim < 2 else array.reshape(-1, array.shape[-1])


SMALL = 16  # tensors up to this many elements are drawn as bars (one per element), not as an image


def plot_error_maps(report: Report, path: str | Path, tensors: Sequence[TensorReport] | None = None) -> None:
    """Write a PNG of :func:`error_map_figure` (default: the failing tensors, else every tensor)."""
    save_png(error_map_figure(report, tensors), path)


def error_map_figure(report: Report, tensors: Sequence[TensorReport] | None = None) -> Any:
    """Where does it fail, and by how much: per tensor, each element's relative error on one shared scale.

    Every panel uses the same colour scale (log10 relative error), centred on the tolerance (rtol):
    green within it, red beyond it, the tolerance marked on the one colour bar; failing elements
    are crossed. Tensors of at most SMALL elements (a bias, sigma) are bars against a dashed
    tolerance line instead of an image. Row and column ticks are whole indices.
    """
    require_matplotlib()
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    failing = [t for t in report.tensors if not t.passed]
    chosen = list(tensors) if tensors is not None else failing or list(report.tensors)
    chosen = [t for t in chosen if t.verdicts is not None and t.numeric_grad is not None]
    rtol = float(report.config.get("rtol") or 1e-5)
    errors = {t.name: relative_errors(t) for t in chosen}
    logs = {name: np.log10(np.maximum(rel, 1e-17)) for name, rel in errors.items()}
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in logs.values()] or [np.zeros(1)])
    centre = math.log10(rtol)
    low, high = min(float(finite.min(initial=centre)), centre - 1), max(float(finite.max(initial=centre)), centre + 1)
    norm = TwoSlopeNorm(vcenter=centre, vmin=low, vmax=high)
    heights = [1.3 if t.n_elements <= SMALL else 2.6 for t in chosen] or [1.0]
    fig = Figure(figsize=(8, 1.2 + sum(heights)), layout="constrained")
    if failing:
        names = ", ".join(f"{t.name} ({t.n_failed} of {t.n_checked})" for t in failing)
        fig.suptitle(f"gradcheck {report.target}: FAIL in {names}; x = failing element", fontsize=10)
    else:
        fig.suptitle(f"gradcheck {report.target}: PASS, every element within tolerance", fontsize=10)
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    image = None
    axes = []
    for k, t in enumerate(chosen):
        ax = fig.add_subplot(grid[k])
        axes.append(ax)
        log = logs[t.name]
        verdicts = np.asarray(t.verdicts)
        worst = f", worst {t.max_rel_error:.3g} at {list(t.worst_index)}" if t.worst_index is not None else ""
        ax.set_title(f"{t.name} {list(t.shape)}: {t.status}, {t.n_failed} of {t.n_checked} elements fail{worst}", fontsize=9, loc="left")
        if t.n_elements <= SMALL:
            values, marks = log.reshape(-1), verdicts.reshape(-1) == FAIL
            colours = ["tab:red" if m else "tab:green" for m in marks]
            ax.bar(range(len(values)), np.where(np.isfinite(values), values - low, 0), bottom=low, color=colours, width=0.6)
            ax.set_xticks(range(len(values)))
            ax.set_xlim(-0.6, max(len(values), 8) - 0.4)  # one element is one thin bar, not the whole panel
            ax.axhline(centre, color="black", linestyle="--", linewidth=1, label=f"rtol {rtol:g}")
            ax.set_ylim(low, high)
            ax.set_ylabel("log10 rel. error", fontsize=8)
            ax.set_xlabel("element", fontsize=8)
            ax.legend(loc="upper right", fontsize=7)
        else:
            image = ax.imshow(as_2d(log), aspect="auto", interpolation="nearest", cmap="RdYlGn_r", norm=norm)
            fails = np.argwhere(as_2d(verdicts) == FAIL)
            if len(fails):
                ax.scatter(fails[:, 1], fails[:, 0], marker="x", color="black", s=10, linewidths=0.8)
            rows = "x".join(map(str, t.shape[:-1])) if len(t.shape) > 1 else ""
            ax.set_xlabel(f"index along dim {max(len(t.shape) - 1, 0)}", fontsize=8)
            ax.set_ylabel(f"rows ({rows} flattened)" if len(t.shape) > 2 else "row" if rows else "", fontsize=8)
            if not rows:
                ax.set_yticks([])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if rows:
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if image is not None:
        bar = fig.colorbar(image, ax=axes, label=f"log10 relative error, one scale for all; line: rtol {rtol:g}")
        bar.ax.axhline(centre, color="black", linewidth=2)
    return fig


def save_png(fig: Any, path: str | Path) -> None:
    """Render to memory, then write atomically (outputs.atomic_write): never a half-written plot."""
    import io

    from .outputs import atomic_write

    data = io.BytesIO()
    fig.savefig(data, format="png", dpi=120)
    atomic_write(Path(path), data.getvalue(), "plot")

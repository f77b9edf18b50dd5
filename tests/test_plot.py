"""--plot answers "where does it fail, and by how much" at a glance (needs matplotlib: in the test extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import gradcheck_cli  # noqa: E402
from gradcheck_cli.errormap import error_map_figure  # noqa: E402

BORDER = Path(__file__).resolve().parent / "layers" / "border.py"
SIMPLE = Path(__file__).resolve().parent / "layers" / "simple.py"


def panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_a_failing_check_plots_only_the_failing_tensors_on_one_scale_with_the_tolerance() -> None:
    report = gradcheck_cli.check(f"{SIMPLE}:ScaleWeightBug", ["3x4"])
    fig = error_map_figure(report)
    assert "FAIL in weight" in fig._suptitle.get_text()
    (ax,) = panels(fig)
    assert ax.get_title(loc="left").startswith("weight [4]: FAIL, 4 of 4 elements fail")
    (line,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]  # the tolerance, at log10(rtol)
    assert line.get_ydata()[0] == pytest.approx(-5)


def test_a_one_element_tensor_is_a_bar_not_an_image_with_a_colour_bar() -> None:
    report = gradcheck_cli.check(f"{SIMPLE}:Square", ["=[2.0]"])
    fig = error_map_figure(report)
    (ax,) = panels(fig)
    assert not ax.images and len(ax.patches) == 1
    assert len(fig.axes) == 1  # no colour bar for it
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0"]


def test_a_passing_check_says_pass_not_x_is_fail() -> None:
    report = gradcheck_cli.check(f"{SIMPLE}:Scale", ["3x4"])
    fig = error_map_figure(report)
    title = fig._suptitle.get_text()
    assert "PASS" in title and "x =" not in title
    assert [ax.get_title(loc="left").split(" ")[0] for ax in panels(fig)] == ["x", "weight"]


def test_images_share_one_scale_and_rows_are_whole_indices() -> None:
    report = gradcheck_cli.check(f"{BORDER}:ScaledBorderBug", ["3x4x5"])
    fig = error_map_figure(report, report.tensors)
    images = [im for ax in panels(fig) for im in ax.images]
    assert images and len({(im.norm.vmin, im.norm.vmax, im.norm.vcenter) for im in images}) == 1
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert "rtol" in bar.get_ylabel()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # tick labels are made when drawn
    for ax in panels(fig):
        if ax.images:
            labels = [t.get_text().replace("\u2212", "-") for t in ax.get_yticklabels() if t.get_text()]
            assert labels and all(label.lstrip("-").isdigit() for label in labels), labels

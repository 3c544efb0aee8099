"""The helpers every line-per-model figure shares (plots.common), and that plot modules share no private names."""
from __future__ import annotations

import ast
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgba

from vitscope.plots import common

PLOTS_DIR = Path(common.__file__).parent


def test_model_colours_are_distinct_tab10_in_order_and_repeat_after_ten():
    names = [f"m{i}" for i in range(12)]
    colours = common.model_colours(names)
    tab10 = plt.get_cmap("tab10")
    assert [colours[n] for n in names[:10]] == [tab10(i) for i in range(10)]
    assert len({colours[n] for n in names[:10]}) == 10
    assert colours["m10"] == colours["m0"] and colours["m11"] == colours["m1"]


def test_the_baseline_is_grey_and_a_trained_model_keeps_its_colour():
    assert common.model_line_style("random-a", "random-a", "red") == common.BASELINE_STYLE
    assert common.model_line_style("random-a", "random-a", "red") is not common.BASELINE_STYLE   # callers may edit
    style = common.model_line_style("zoo-dino", "random-a", "red")
    assert to_rgba(style["color"]) == to_rgba("red") and style["marker"] == "o"
    assert to_rgba(common.BASELINE_STYLE["color"])[:3] == pytest.approx((0.55, 0.55, 0.55))


def test_legend_below_lists_every_line_once_under_the_panels():
    fig, axes = common.new_figure(ncols=2, sharey=True)
    for ax in axes:
        for name in ("a", "b", "c"):
            ax.plot([0, 1], [0, 1], label=name)
    legend = common.legend_below(fig, axes[-1], ncols=2)
    fig.canvas.draw()
    assert fig.legends == [legend] and [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"]
    assert legend.get_window_extent().y1 <= min(ax.get_window_extent().y0 for ax in axes) + 1
    plt.close(fig)


def _private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.name}: from .{node.module} import {alias.name}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level >= 1 for alias in node.names
            if alias.name.startswith("_")]


def test_no_plot_module_imports_a_private_name_of_another():
    found = [line for path in sorted(PLOTS_DIR.glob("*.py")) for line in _private_imports(path)]
    assert found == [], "move a shared helper to plots/common.py as a public function: " + "; ".join(found)

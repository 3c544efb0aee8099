"""Figures: house style (column width, dpi, tick size), legends for colours, shared y-axes, reference levels; the
numbered-figure Markdown of the book; tables formatted once."""
from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitscope import plots
from vitscope.book import figures, tables
from vitscope.plots.attention import DISTANCE_TOP_FACTOR, UNIFORM_LABEL
from vitscope.plots.common import FIGURE_DPI, MAX_FIGURE_WIDTH_IN, TICK_LABEL_PT

UNIFORM = {"unit_square": 0.5214, "pixels": 26.7}


def attention_table(models=("flat", "steep"), blocks=4, heads=3) -> pd.DataFrame:
    """'flat' sits within 0.0005 of the uniform level (an untrained model); 'steep' rises from local to global."""
    rows = []
    for m, method, b, h in itertools.product(models, UNIFORM, range(1, blocks + 1), range(heads)):
        u = UNIFORM[method]
        d = u + 0.0005 * ((b + h) % 2) if m == "flat" else u * (0.3 + 0.2 * b) * (1 + 0.05 * h)
        rows.append({"model": m, "method": method, "block": b, "head": h, "distance": d, "uniform": u})
    return pd.DataFrame(rows)


def cka_table(models=("a", "b", "c"), sites=("block", "norm1", "qkv"), depth=4) -> pd.DataFrame:
    rows = []
    for a, b in itertools.combinations_with_replacement(models, 2):
        for s, i, j in itertools.product(sites, range(1, depth + 1), range(1, depth + 1)):
            value = 1.0 if (a == b and i == j) else 0.5 + 0.1 * np.cos(i + j + len(s))
            rows.append({"model_a": a, "model_b": b, "site_a": s, "site_b": s, "index_a": i, "index_b": j,
                         "cka": value})
    return pd.DataFrame(rows)


def reference_lines(ax, label):
    return [ln for ln in ax.get_lines() if ln.get_label() == label]


def check_house_style(fig, tmp_path):
    """No wider than the content column, saved at FIGURE_DPI to exactly its size, tick labels at TICK_LABEL_PT."""
    width, height = fig.get_size_inches()
    assert width <= MAX_FIGURE_WIDTH_IN + 1e-9
    path = plots.save_figure(fig, tmp_path / "f.png")
    with Image.open(path) as img:
        assert img.size == (round(width * FIGURE_DPI), round(height * FIGURE_DPI))
    fig.canvas.draw()
    inside = fig.bbox.padded(1)
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]:
        box = legend.get_window_extent()
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0, "legend cut off at the edge"
    for ax in fig.axes:
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            if label.get_text():
                assert label.get_fontsize() >= TICK_LABEL_PT, (ax.get_title(), label.get_text())
    # the browser test's criterion at 100 % display: tick labels of at least 10 px
    assert TICK_LABEL_PT * FIGURE_DPI / 72 >= 10
    plt.close(fig)


def test_heads_have_a_legend_and_every_model_page_shares_the_y_range(tmp_path):
    table = attention_table()
    figs = {m: plots.attention_distance_by_layer(table, m) for m in ("flat", "steep")}
    limits = {m: f.axes[0].get_ylim() for m, f in figs.items()}
    assert limits["flat"] == limits["steep"]
    # zero-based, and tall enough that the flat model's 0.0005 wobble is a flat line at the uniform level
    assert limits["flat"][0] == 0 and limits["flat"][1] >= DISTANCE_TOP_FACTOR * UNIFORM["unit_square"]
    ax = figs["flat"].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["head 0", "head 1", "head 2", UNIFORM_LABEL]
    (line,) = reference_lines(ax, UNIFORM_LABEL)
    assert line.get_ydata()[0] == pytest.approx(UNIFORM["unit_square"])
    for fig in figs.values():
        check_house_style(fig, tmp_path)


def test_small_multiples_share_one_y_axis_and_show_the_references(tmp_path):
    table = attention_table(models=("steep", "flat", "random-a"))
    fig = plots.attention_distance_small_multiples(table, "pixels", baseline="random-a")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["steep", "flat", "random-a"]
    assert len({ax.get_ylim() for ax in panels}) == 1 and panels[0].get_ylim()[0] == 0
    assert all(len(reference_lines(ax, UNIFORM_LABEL)) == 1 for ax in panels)
    # the untrained baseline is drawn in the other models' panels, not in its own
    assert [len(reference_lines(ax, "random-a (untrained)")) for ax in panels] == [1, 1, 0]
    (legend,) = fig.legends
    assert {"mean over heads", UNIFORM_LABEL, "random-a (untrained)"} <= {t.get_text() for t in legend.get_texts()}
    check_house_style(fig, tmp_path)
    with pytest.raises(ValueError, match="baseline 'random-b' is not in the table"):
        plots.attention_distance_small_multiples(table, baseline="random-b")


def test_conventions_figure_has_both_units_with_their_uniform_level(tmp_path):
    table = attention_table()
    fig = plots.attention_distance_conventions(table, "steep")
    for ax, method in zip(fig.axes, UNIFORM):
        (line,) = reference_lines(ax, UNIFORM_LABEL)
        assert line.get_ydata()[0] == pytest.approx(UNIFORM[method]) and ax.get_ylim()[0] == 0
    assert len(fig.legends) == 1
    check_house_style(fig, tmp_path)


def test_layer_types_are_small_multiples_per_pair_on_zero_to_one(tmp_path):
    from vitscope.plots.cka import SITE_NAMES

    table = cka_table()
    same = table[(table.model_a != table.model_b) & (table.index_a == table.index_b)].rename(
        columns={"site_a": "site", "index_a": "index"})[["model_a", "model_b", "site", "index", "cka"]]
    fig = plots.cka_by_layer_type(same)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 3                                   # a-b, a-c, b-c
    assert all(ax.get_ylim() == (0.0, 1.02) for ax in panels)
    assert all(len(ax.get_lines()) == 3 for ax in panels)     # one line per layer type, not 3 x 3 overlaid
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [SITE_NAMES[s] for s in ("block", "norm1", "qkv")]
    check_house_style(fig, tmp_path)


def test_cka_grid_fits_the_column_with_one_colour_scale(tmp_path):
    fig = plots.cka_grid(cka_table(models=("a", "b", "c", "d")), ["a", "b", "c", "d"])
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 10 and {im.get_clim() for im in images} == {(0.0, 1.0)}
    check_house_style(fig, tmp_path)


def test_zoo_figures_draw_chance_and_trivial_loss(tmp_path):
    summary = pd.DataFrame({"readout": ["cls", "gap"], "k-NN": [0.185, 0.07], "k-NN random init": [0.042, 0.032],
                            "probe": [0.2, 0.1], "probe random init": [0.046, 0.044]}, index=["zoo-a", "zoo-b"])
    fig = plots.accuracy_vs_random(summary, chance=0.02)
    (line,) = reference_lines(fig.axes[0], "chance")
    assert line.get_ydata()[0] == pytest.approx(2.0) and fig.axes[0].get_ylim()[0] == 0
    check_house_style(fig, tmp_path)
    loss = pd.DataFrame({"model": ["zoo-a"] * 3 + ["zoo-b"] * 3, "step": [10, 20, 30] * 2,
                         "value": [5.6, 5.55, 5.54, 3.0, 2.0, 1.5]})
    knn = pd.DataFrame({"model": ["zoo-a", "zoo-b"], "step": [30, 30], "value": [0.05, 0.2]})
    fig = plots.training_curves(loss, knn, trivial={"zoo-a": np.log(256), "zoo-b": np.log(50)})
    left = [ax for ax in fig.axes if ax.get_title()]
    for ax, level in zip(left, (np.log(256), np.log(50))):
        (line,) = reference_lines(ax, "trivial loss level")
        assert line.get_ydata()[0] == pytest.approx(level) and ax.get_ylim()[0] == 0
    check_house_style(fig, tmp_path)


def test_a_figure_wider_than_the_column_is_refused():
    with pytest.raises(ValueError, match="MAX_FIGURE_WIDTH_IN"):
        plots.new_figure(width=MAX_FIGURE_WIDTH_IN + 1)


def test_show_figure_numbers_captions_and_saves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figures.reset_numbering()
    first = figures.show_figure(plots.new_figure()[0], "figures/one.png", "The first one.", "A line chart of x.")
    second = figures.show_figure(plots.new_figure()[0], "figures/two.png", "The second.", "Bars of y.")
    assert first.data.startswith("````{figure} figures/one.png\n:alt: A line chart of x.\n")
    assert "**Figure 1.** The first one." in first.data and "**Figure 2.** The second." in second.data
    assert ":name:" not in first.data                   # no label unless asked: per-model copies would clash
    assert (tmp_path / "figures" / "one.png").stat().st_size > 0 and not plt.get_fignums()
    with pytest.raises(ValueError, match="is a file name"):
        figures.show_figure(plots.new_figure()[0], "figures/x.png", "Caption.", "figures/x.png")
    with pytest.raises(ValueError, match="non-empty alt text"):
        figures.figure_markdown("x.png", "Caption.", "  ", 1)
    plt.close("all")


def test_tables_keep_their_formats_and_never_show_nan():
    frame = pd.DataFrame({"k-NN": [0.185, np.nan], "probe": [0.2, 0.1], "lr": [1e-4, 3e-4], "steps": [400, 900],
                          "note": ["x" * 120, None]}, index=["zoo-a", "zoo-b"])
    html = tables.format_table(frame, {"k-NN": "percent", "probe": "percent", "lr": "{:.0e}"}, wrap=["note"]).to_html()
    for text in ("18.5%", "20.0%", "10.0%", "1e-04", ">400<", "x" * 120, tables.MISSING):
        assert text in html, text
    assert "nan" not in html.lower().replace("nanoseconds", "") and "None" not in html and "0.185000" not in html
    assert "overflow-wrap: anywhere" in html and f'class="{tables.TABLE_CLASS}"' in html
    signed = tables.format_table(pd.DataFrame({"d": [-1e-6, -0.5], "p": [-1e-7, 0.1]}), {"p": "percent"}).to_html()
    assert ">0.000<" in signed and ">-0.500<" in signed and ">0.0%<" in signed and "-0.0" not in signed
    with pytest.raises(KeyError, match="no column"):
        tables.format_table(frame, {"missing": "percent"})

"""Teaching Matters Figure 4: average attention distance per head (left) and per layer (right).

Every figure draws the distance of uniform attention (the table's ``uniform`` column) as its reference, and puts the
y-axis on ``[0, DISTANCE_TOP_FACTOR x uniform]``: the same range on every model's page and every panel of one
unit, so a model whose heads all sit at the uniform level reads as flat, not as a rise and fall.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt

from .common import MAX_FIGURE_WIDTH_IN, finish, new_figure, reference_line, zero_based_limits

UNITS = {"unit_square": "distance (unit square)", "pixels": "distance (pixels)"}
#: The y-axis tops out at this multiple of the uniform level (data above it widens the axis on that page only).
DISTANCE_TOP_FACTOR = 1.3
UNIFORM_LABEL = "uniform attention"


def _rows(table, method: str, model: str | None = None):
    if method not in UNITS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(UNITS)}")
    sel = table[table.method == method]
    if model is not None:
        sel = sel[sel.model == model]
    if sel.empty:
        raise ValueError(f"No attention-distance rows for method={method!r}" + (f", model={model!r}" if model else "")
                         + f"; the table has models {sorted(set(table.model))}.")
    return sel


def uniform_level(rows) -> float:
    """The uniform-attention distance of ``rows`` (one model grid and one unit); several values are an error."""
    levels = rows["uniform"].unique()
    if len(levels) != 1:
        raise ValueError(f"rows mix {len(levels)} uniform levels {levels}: plot one grid size and one unit at a time")
    return float(levels[0])


def distance_limits(rows) -> tuple[float, float]:
    """``(0, DISTANCE_TOP_FACTOR x uniform)``, or up to the largest distance when a head exceeds that."""
    return zero_based_limits(max(DISTANCE_TOP_FACTOR * uniform_level(rows), float(rows["distance"].max())))


def head_palette(n_heads: int) -> list:
    """Distinct, named colours for ``n_heads`` heads (tab10 up to 10 heads, tab20 up to 20)."""
    cmap = plt.get_cmap("tab10" if n_heads <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n_heads)]


def attention_distance_by_layer(table, model: str, method: str = "unit_square", ax=None):
    """Every head's mean distance against its block, one colour per head with a legend (Fig. 4, left)."""
    sel = _rows(table, method, model)
    if ax is None:
        _, ax = new_figure(height=3.2)
    heads = sorted(sel["head"].unique())
    colours = head_palette(len(heads))
    jitter = 0.3 / max(len(heads) - 1, 1)
    for i, head in enumerate(heads):       # a deterministic offset per head instead of random jitter
        rows = sel[sel["head"] == head]
        ax.plot(rows.block + (i - (len(heads) - 1) / 2) * jitter, rows.distance, "o", ms=5, color=colours[i],
                label=f"head {head}")
    reference_line(ax, uniform_level(sel), UNIFORM_LABEL)
    ax.set(xlabel="block (layer)", ylabel=f"avg. attention {UNITS[method]}", ylim=distance_limits(sel),
           xticks=sorted(sel.block.unique()), title=f"{model}: every head")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=1 if len(heads) <= 8 else 2, frameon=False)
    return finish(ax.figure)


def _layer_means(rows):
    return rows.groupby("block")["distance"].agg(["mean", "min", "max"])


def attention_distance_layer_means(table, method: str = "unit_square", ax=None, model: str | None = None):
    """Per-layer mean over heads with the min-max band of the heads, for one model (or each model of the table
    as its own line when ``model`` is None and the table holds one model), and the uniform level."""
    sel = _rows(table, method, model)
    models = list(dict.fromkeys(sel.model))
    if len(models) > 1:
        raise ValueError(f"attention_distance_layer_means draws one model; the table holds {models}. "
                         "Use attention_distance_small_multiples for several models.")
    if ax is None:
        _, ax = new_figure(width=MAX_FIGURE_WIDTH_IN / 2, height=2.8)
    stats = _layer_means(sel)
    ax.fill_between(stats.index, stats["min"], stats["max"], color="C0", alpha=0.2, lw=0, label="range over heads")
    ax.plot(stats.index, stats["mean"], "o-", color="C0", label="mean over heads")
    reference_line(ax, uniform_level(sel), UNIFORM_LABEL)
    ax.set(xlabel="block (layer)", ylabel=UNITS[method], ylim=distance_limits(sel), xticks=list(stats.index))
    return finish(ax.figure)


def attention_distance_conventions(table, model: str):
    """Two panels for one model: the Teaching Matters convention (unit square) and the pixel convention, each with
    its uniform level; one legend for both."""
    fig, axes = new_figure(height=2.9, ncols=2)
    for ax, method, title in zip(axes, ("unit_square", "pixels"),
                                  ("Teaching Matters (unit square)", "Raghu et al. (pixels)")):
        attention_distance_layer_means(table, method, ax=ax, model=model)
        ax.set_title(title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    return finish(fig)


def attention_distance_small_multiples(table, method: str = "unit_square", baseline: str | None = None,
                                       ncols: int | None = None):
    """One panel per model (the per-layer mean over heads and the heads' min-max band), all on one y-range with
    the uniform level; ``baseline`` (e.g. ``"random-a"``) is drawn in grey in every other panel as the untrained
    reference. Replaces Fig. 4 (right)'s overlay of every model in one axis."""
    sel = _rows(table, method)
    models = list(dict.fromkeys(sel.model))
    if baseline is not None and baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not in the table (models: {models})")
    ncols = ncols or (4 if len(models) > 6 else min(3, len(models)))
    nrows = math.ceil(len(models) / ncols)
    fig, axes = new_figure(height=1.9 * nrows + 0.7, nrows=nrows, ncols=ncols, sharex=True, sharey=True,
                           squeeze=False)
    limits = distance_limits(sel)
    base = _layer_means(sel[sel.model == baseline]) if baseline else None
    for ax, model in zip(axes.flat, models):
        rows = sel[sel.model == model]
        stats = _layer_means(rows)
        if base is not None and model != baseline:
            ax.plot(base.index, base["mean"], "-", color="0.7", lw=3, zorder=1.5, label=f"{baseline} (untrained)")
        ax.fill_between(stats.index, stats["min"], stats["max"], color="C0", alpha=0.2, lw=0, label="range over heads")
        ax.plot(stats.index, stats["mean"], "o-", color="C0", ms=3.5, label="mean over heads")
        reference_line(ax, uniform_level(rows), UNIFORM_LABEL)
        ax.set(title=model, ylim=limits, xticks=list(stats.index))
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("block")
    for ax in axes[:, 0]:
        ax.set_ylabel(UNITS[method])
    handles = {}
    for ax in axes.flat[:len(models)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2, frameon=False)
    return finish(fig)

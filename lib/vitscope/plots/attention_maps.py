"""Teaching Matters Figures 2 and 3: attention maps as pictures (CLS maps, spatial-query maps, AAAMs) and head types.

Maps are drawn as multiples of uniform attention where comparable across models (1 = every patch alike), on one
colour scale per figure that the caller may share across pages (``vmax``), with one colour bar. AAAMs use a
square-root colour scale (a strict local head puts most of its mass on one cell) and a cross marks the query.
"""
from __future__ import annotations

import math

import matplotlib.colors as mcolors
import numpy as np
from matplotlib.patches import Patch

from .common import MAX_FIGURE_WIDTH_IN, finish, new_figure

MAP_CMAP = "viridis"
#: Head types in a fixed order with fixed colours (the same on every page).
TYPE_COLOURS = {"strict local": "#1b9e77", "soft local": "#66a61e", "axial local": "#e6ab02",
                "offset local": "#d95f02", "global": "#7570b3"}
TYPE_ABBREV = {"strict local": "strict", "soft local": "soft", "axial local": "axial", "offset local": "offset",
               "global": "global"}


def shared_vmax(arrays, quantile: float = 0.99) -> float:
    """A colour-scale top shared by several maps: the ``quantile`` of all their values (so one hot pixel does not
    wash every other map out)."""
    values = np.concatenate([np.asarray(a, dtype=float).reshape(-1) for a in arrays])
    return float(np.quantile(values, quantile))


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def map_grid(maps: np.ndarray, *, vmax: float, label: str, row_name: str = "block", col_name: str = "head",
             norm: str = "linear", titles=None, marks=None, cell: float | None = None, title: str | None = None):
    """A compact grid of maps ``[rows, cols, h, w]`` (e.g. blocks x heads) on one colour scale ``[0, vmax]`` with one
    colour bar labelled ``label``. ``norm``: ``"linear"`` or ``"sqrt"``. ``titles``: per-cell text ``[rows][cols]``
    (e.g. head types). ``marks``: ``(row, col)`` in map pixels to mark with a cross in every cell (the query)."""
    maps = np.asarray(maps, dtype=float)
    rows, cols = maps.shape[:2]
    width = min(MAX_FIGURE_WIDTH_IN, (cell or 0.85) * cols + 1.2)
    cell_w = (width - 1.2) / cols
    fig, axes = new_figure(width=width, height=cell_w * rows * (1.25 if titles else 1.0) + 0.6, nrows=rows,
                           ncols=cols, squeeze=False)
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)
    colour_norm = (mcolors.PowerNorm(0.5, vmin=0, vmax=vmax) if norm == "sqrt"
                   else mcolors.Normalize(vmin=0, vmax=vmax))
    image = None
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            image = ax.imshow(maps[i, j], cmap=MAP_CMAP, norm=colour_norm, interpolation="nearest")
            _bare(ax)
            if marks is not None:
                ax.plot(marks[1], marks[0], "+", color="red", ms=5, mew=1.0)
            if titles is not None:
                ax.set_title(titles[i][j], fontsize=7, pad=1.5)
            if j == 0:
                ax.set_ylabel(f"{row_name} {i + 1}", fontsize=8)
            if i == rows - 1:
                ax.set_xlabel(f"{col_name} {j}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label=label, pad=0.01)
    if title:
        fig.suptitle(title)
    return fig


def models_by_block(maps: dict, heads, *, vmax: float, label: str, title: str | None = None):
    """Teaching Matters Fig. 2's layout: one row per block, a group of columns per model showing ``heads`` of it.
    ``maps``: ``{model: [L, H, G, G]}`` (same depth for every model)."""
    models = list(maps)
    depth = next(iter(maps.values())).shape[0]
    n_cols = len(models) * len(heads)
    width = min(MAX_FIGURE_WIDTH_IN, 0.34 * n_cols + 1.2)
    cell = (width - 1.2) / n_cols
    fig, axes = new_figure(width=width, height=cell * depth + 1.3, nrows=depth, ncols=n_cols, squeeze=False)
    fig.get_layout_engine().set(w_pad=0.005, h_pad=0.005, wspace=0.01, hspace=0.01)
    image = None
    for m_i, model in enumerate(models):
        for h_i, head in enumerate(heads):
            col = m_i * len(heads) + h_i
            for b in range(depth):
                ax = axes[b, col]
                image = ax.imshow(np.asarray(maps[model][b, head], dtype=float), cmap=MAP_CMAP, vmin=0, vmax=vmax,
                                  interpolation="nearest")
                _bare(ax)
                if col == 0:
                    ax.set_ylabel(f"{b + 1}", fontsize=8, rotation=0, labelpad=6)
            axes[0, col].set_title(f"h{head}", fontsize=7, pad=1.5)
            if h_i == len(heads) // 2:
                axes[-1, col].set_xlabel(model.replace("zoo-", ""), fontsize=8)
    fig.supylabel("block", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label=label, pad=0.01)
    if title:
        fig.suptitle(title)
    return finish(fig)


def examples_row(images, maps: np.ndarray, *, vmax: float, label: str):
    """Single-image examples: per image (row) the image, then its CLS map per block (mean over heads).
    ``maps``: ``[E, L, G, G]``."""
    E, L = maps.shape[:2]
    fig, axes = new_figure(width=min(MAX_FIGURE_WIDTH_IN, 0.95 * (L + 1) + 1.2), height=0.95 * E + 0.6, nrows=E,
                           ncols=L + 1, squeeze=False)
    image = None
    for e in range(E):
        axes[e, 0].imshow(images[e])
        _bare(axes[e, 0])
        for b in range(L):
            image = axes[e, b + 1].imshow(maps[e, b], cmap=MAP_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
            _bare(axes[e, b + 1])
            if e == 0:
                axes[e, b + 1].set_title(f"block {b + 1}", fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label=label, pad=0.01)
    return fig


def type_counts_by_block(counts, models, depth: int):
    """Small multiples, one panel per model: heads of each type per block as stacked bars, one legend.
    ``counts``: a table indexed by (model, block) with one column per head type."""
    ncols = min(4, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig, axes = new_figure(height=1.7 * nrows + 0.8, nrows=nrows, ncols=ncols, sharex=True, sharey=True,
                           squeeze=False)
    for ax, model in zip(axes.flat, models):
        sel = counts.loc[model].reindex(range(1, depth + 1), fill_value=0)
        bottom = np.zeros(depth)
        for kind, colour in TYPE_COLOURS.items():
            values = sel[kind].to_numpy() if kind in sel else np.zeros(depth)
            ax.bar(sel.index, values, bottom=bottom, color=colour, width=0.8, label=kind)
            bottom += values
        ax.set(title=model, xticks=list(sel.index))
        ax.grid(axis="x", visible=False)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("block")
    for ax in axes[:, 0]:
        ax.set_ylabel("heads")
    fig.legend(handles=[Patch(color=c, label=k) for k, c in TYPE_COLOURS.items()], loc="outside lower center",
               ncols=5, frameon=False)
    return finish(fig)


#: Colour-scale tops shared by every page (maps as multiples of uniform attention; higher values saturate).
CLS_VMAX = 4.0
AAAM_VMAX = 8.0

"""Objectives Matter Figure 1: layer-by-layer CKA heatmaps between model pairs (1a) and same-depth CKA by layer
type (1b). CKA lies in [0, 1]: every heatmap shares one colour scale and every line panel the y-range [0, 1]."""
from __future__ import annotations

import itertools
import math

from .common import MAX_FIGURE_WIDTH_IN, finish, new_figure

CKA_LIMITS = (0.0, 1.02)


def pair_matrix(table, model_a: str, model_b: str, site: str = "block"):
    """One model pair of a tidy CKA table as a [blocks_a x blocks_b] frame for one site type.

    Either order of the pair is accepted (the table stores each unordered pair once).
    """
    table = table[(table.site_a == site) & (table.site_b == site)]
    sel = table[(table.model_a == model_a) & (table.model_b == model_b)]
    if sel.empty:
        sel = table[(table.model_a == model_b) & (table.model_b == model_a)].rename(
            columns={"index_a": "index_b", "index_b": "index_a"})
    if sel.empty:
        raise KeyError(f"No CKA rows for the pair ({model_a}, {model_b}) at site {site!r}.")
    return sel.pivot(index="index_a", columns="index_b", values="cka")


def _layer_ticks(labels) -> tuple[list[int], list]:
    """Tick positions and labels: every layer up to 8 layers, else every other one (readable in a small panel)."""
    step = 1 if len(labels) <= 8 else 2
    pos = list(range(0, len(labels), step))
    return pos, [labels[i] for i in pos]


def cka_heatmap(matrix, label_a: str, label_b: str, ax=None, vmin: float = 0.0, vmax: float = 1.0):
    """Heatmap of a [layers_a x layers_b] CKA frame (index and columns are 1-based layer numbers)."""
    if ax is None:
        _, ax = new_figure(width=3.6, height=3.2)
    im = ax.imshow(matrix.values, origin="lower", cmap="magma", vmin=vmin, vmax=vmax)
    ax.set_xticks(*_layer_ticks(list(matrix.columns)))
    ax.set_yticks(*_layer_ticks(list(matrix.index)))
    ax.grid(False)
    ax.set(xlabel=f"{label_b} layer", ylabel=f"{label_a} layer")
    return im


def cka_grid(table, models: list[str], site: str = "block"):
    """Upper-triangular grid of heatmaps for every pair of ``models``, sharing one colour bar: column ``j`` is
    titled with its model (layers on x), the first panel of row ``i`` names its model (layers on y)."""
    n = len(models)
    if n == 0:
        raise ValueError("cka_grid needs at least one model")
    side = min(MAX_FIGURE_WIDTH_IN, 1.65 * n + 0.9)
    fig, axes = new_figure(width=side, height=side - 0.5, nrows=n, ncols=n, squeeze=False)
    im = None
    for (i, a), (j, b) in itertools.product(enumerate(models), repeat=2):
        ax = axes[i, j]
        if j < i:
            ax.axis("off")
            continue
        im = cka_heatmap(pair_matrix(table, a, b, site), a, b, ax=ax)
        ax.set(xlabel="", ylabel=f"{a}\nlayer" if j == i else "")
        if i == 0:
            ax.set_title(f"{b}\nlayer")
        if j != i:
            ax.tick_params(labelleft=False)
    fig.colorbar(im, ax=axes, shrink=0.6, label="minibatch CKA")
    return finish(fig)


SITE_NAMES = {"block": "block output", "norm1": "LayerNorm (pre-attention)", "qkv": "MHSA qkv",
              "fc1": "MLP fc1", "norm2": "LayerNorm (pre-MLP)"}


def cka_by_layer_type(same_depth, ncols: int = 3):
    """Same-depth CKA between two different models, one panel per model pair and one coloured line per layer type
    (OM Fig. 1b as small multiples), all panels on the y-range [0, 1] with one legend.

    ``same_depth``: the table of ``vitscope.sections.cka.same_depth(table, site=None)``
    (``model_a, model_b, site, index, cka``)."""
    if same_depth.empty:
        raise ValueError("cka_by_layer_type: the same-depth table is empty (needs two distinct models)")
    pairs = list(dict.fromkeys(zip(same_depth.model_a, same_depth.model_b)))
    sites = list(dict.fromkeys(same_depth.site))
    ncols = min(ncols, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = new_figure(height=2.0 * nrows + 0.8, nrows=nrows, ncols=ncols, sharex=True, sharey=True,
                           squeeze=False)
    markers = "os^Dv<>p"
    for ax, (a, b) in zip(axes.flat, pairs):
        rows = same_depth[(same_depth.model_a == a) & (same_depth.model_b == b)]
        for k, site in enumerate(sites):
            r = rows[rows.site == site].sort_values("index")
            ax.plot(r["index"], r["cka"], marker=markers[k % len(markers)], ms=4, color=f"C{k}",
                    label=SITE_NAMES.get(site, site))
        ax.set(title=f"{a} vs\n{b}", ylim=CKA_LIMITS, xticks=sorted(rows["index"].unique()))
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("block")
    for ax in axes[:, 0]:
        ax.set_ylabel("CKA, same block")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(2, len(labels)), frameon=False)
    return finish(fig)

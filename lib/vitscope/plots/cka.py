"""Objectives Matter Figure 1a: layer-by-layer CKA heatmaps between model pairs."""
from __future__ import annotations

import itertools

import matplotlib.pyplot as plt


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
        raise KeyError(f"No CKA rows for the pair ({model_a}, {model_b}).")
    return sel.pivot(index="index_a", columns="index_b", values="cka")


def cka_heatmap(matrix, label_a: str, label_b: str, ax=None, vmin: float = 0.0, vmax: float = 1.0):
    """Heatmap of a [layers_a x layers_b] CKA frame (index and columns are 1-based layer numbers)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.2))
    im = ax.imshow(matrix.values, origin="lower", cmap="magma", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(matrix.shape[1]), matrix.columns)
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    ax.set(xlabel=f"{label_b} layer", ylabel=f"{label_a} layer")
    return im


def cka_grid(table, models: list[str], site: str = "block"):
    """Upper-triangular grid of heatmaps for every pair of ``models``, sharing one colour bar."""
    n = len(models)
    fig, axes = plt.subplots(n, n, figsize=(2.9 * n + 0.8, 2.7 * n), squeeze=False, layout="constrained")
    im = None
    for (i, a), (j, b) in itertools.product(enumerate(models), repeat=2):
        ax = axes[i, j]
        if j < i:
            ax.axis("off")
            continue
        im = cka_heatmap(pair_matrix(table, a, b, site), a, b, ax=ax)
    fig.colorbar(im, ax=axes, shrink=0.6, label="minibatch CKA")
    return fig


SITE_NAMES = {"block": "block output", "norm1": "LayerNorm (pre-attention)", "qkv": "MHSA qkv",
              "fc1": "MLP fc1", "norm2": "LayerNorm (pre-MLP)"}


def cka_by_layer_type(same_depth, ax=None):
    """Same-depth CKA between two different models, one line per layer type and model pair (OM Fig. 1b).

    ``same_depth``: the table of ``vitscope.sections.cka.same_depth(table, site=None)``
    (``model_a, model_b, site, index, cka``)."""
    import seaborn as sns

    sel = same_depth.assign(**{"layer type": same_depth.site.map(lambda s: SITE_NAMES.get(s, s)),
                               "pair": same_depth.model_a + " vs " + same_depth.model_b})
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    sns.lineplot(data=sel, x="index", y="cka", hue="layer type", style="pair", marker="o", ax=ax)
    ax.set(xlabel="block", ylabel="CKA (same block of both models)", ylim=(0, 1.02))
    ax.legend(fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.grid(alpha=0.3)
    return ax.figure

"""Objectives Matter Figure 1a: layer-by-layer CKA heatmaps between model pairs."""
from __future__ import annotations

import itertools

import matplotlib.pyplot as plt


def pair_matrix(table, model_a: str, model_b: str):
    """One model pair of a tidy CKA table as a [layers_a x layers_b] frame (either pair order is accepted)."""
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


def cka_grid(table, models: list[str]):
    """Upper-triangular grid of heatmaps for every pair of ``models``, sharing one colour bar."""
    n = len(models)
    fig, axes = plt.subplots(n, n, figsize=(2.9 * n + 0.8, 2.7 * n), squeeze=False, layout="constrained")
    im = None
    for (i, a), (j, b) in itertools.product(enumerate(models), repeat=2):
        ax = axes[i, j]
        if j < i:
            ax.axis("off")
            continue
        im = cka_heatmap(pair_matrix(table, a, b), a, b, ax=ax)
    fig.colorbar(im, ax=axes, shrink=0.6, label="minibatch CKA")
    return fig

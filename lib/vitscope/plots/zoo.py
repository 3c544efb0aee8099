"""Mini-zoo figures: training curves, held-out accuracy against the random init, and sample training scenes."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np


def training_curves(loss, knn=None, ncols: int = 3):
    """One panel per model: training loss (left axis, solid) and, if given, the k-NN monitor (right axis,
    dashed). ``loss`` / ``knn``: long tables (model, step, value) from ``vitscope.zoo.cards.curves_table``."""
    models = list(dict.fromkeys(loss.model))
    if not models:
        raise ValueError("the loss table is empty")
    nrows = math.ceil(len(models) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.6 * nrows), layout="constrained", squeeze=False)
    for ax, model in zip(axes.flat, models):
        sel = loss[loss.model == model]
        ax.plot(sel.step, sel.value, color="C0", lw=1.2)
        ax.set(title=model, xlabel="step")
        ax.set_ylabel("loss", color="C0")
        ax.grid(alpha=0.3)
        if knn is not None and (knn.model == model).any():
            k = knn[knn.model == model]
            twin = ax.twinx()
            twin.plot(k.step, k.value, color="C3", ls="--", marker="o", ms=3)
            twin.set_ylabel("monitor k-NN", color="C3")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    return fig


def accuracy_vs_random(summary, chance: float | None = None, ax=None):
    """Grouped bars per model: held-out k-NN and linear-probe top-1 of the trained model and of its random init
    (columns of ``vitscope.zoo.cards.summary_table``), with the chance level as a dashed line."""
    cols = [("k-NN", "C0", None), ("k-NN random init", "C0", "//"), ("probe", "C2", None),
            ("probe random init", "C2", "//")]
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.4), layout="constrained")
    x, width = np.arange(len(summary)), 0.2
    for i, (col, colour, hatch) in enumerate(cols):
        ax.bar(x + (i - 1.5) * width, 100 * summary[col], width, label=col, color=colour,
               alpha=0.45 if hatch else 0.9, hatch=hatch, edgecolor="white" if hatch is None else colour)
    if chance is not None:
        ax.axhline(100 * chance, color="0.3", ls="--", lw=1, label="chance")
    ax.set_xticks(x, [f"{m}\n({r})" for m, r in zip(summary.index, summary.readout)], fontsize="small")
    ax.set(ylabel="held-out top-1 (%)")
    ax.legend(fontsize="small", ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return ax.figure


def scene_grid(images_u8, titles=None, ncols: int = 10, scale: float = 1.1):
    """uint8 images [N, 3, H, W] (torch or NumPy) in a grid, optionally titled."""
    images = np.asarray(images_u8).transpose(0, 2, 3, 1)
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows * (1.25 if titles else 1)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            if titles:
                ax.set_title(titles[i], fontsize=6)
    return fig

"""Objectives Matter Fig. 11: CKA against the distance between relative depths, ViT-CNN vs ViT-ViT pairs.

Reads the binned table of :func:`vitscope.sections.architecture.by_distance` (columns ``kind, pair, family, low,
high, centre, cka, count``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from .cka import CKA_LIMITS
from .common import MAX_FIGURE_WIDTH_IN, finish, new_figure

#: Line style per kind of pair (the section's SAME / DIFFERENT labels): solid for one objective on two
#: architectures, dashed for two objectives on one architecture.
KIND_STYLES = {"same objective, ViT vs CNN": "-", "different objectives, ViT vs ViT": "--"}


def cka_vs_depth_distance(binned):
    """One panel per family of the same-objective pairs (Fig. 11a: joint-embedding, 11b: reconstruction, and any
    other the profile lists), each with its ViT-CNN pairs (solid) and every different-objective ViT-ViT pair
    (dashed): mean CKA per bin of relative-depth distance, bins at their centres. One y-range, CKA's [0, 1]."""
    if binned.empty:
        raise ValueError("no pairs to plot: every pair lacks a model (see the section's missing models)")
    kinds = list(KIND_STYLES)
    same = binned[binned.kind == kinds[0]]
    different = binned[binned.kind == kinds[1]]
    panels = list(dict.fromkeys(same.family)) or ["ViT vs ViT only"]
    colours = dict(zip(dict.fromkeys(binned.pair), plt.get_cmap("tab10").colors))
    fig, axes = new_figure(width=MAX_FIGURE_WIDTH_IN, height=3.0, ncols=len(panels), squeeze=False, sharey=True)
    for ax, family in zip(axes[0], panels):
        shown = [same[same.family == family], different]
        for sel in shown:
            for pair, rows in sel.groupby("pair", sort=False):
                rows = rows.dropna(subset=["cka"])
                ax.plot(rows.centre, rows.cka, KIND_STYLES[rows.kind.iloc[0]], marker="o", ms=3,
                        color=colours[pair], label=pair)
        ax.set_title(family if family in set(same.family) else family)
        ax.set_xlabel("distance between relative depths")
        ax.set_xlim(0, 1)
        ax.set_ylim(*CKA_LIMITS)
        ax.legend(fontsize="x-small", loc="lower left")
    axes[0, 0].set_ylabel("minibatch CKA (bin mean)")
    return finish(fig)

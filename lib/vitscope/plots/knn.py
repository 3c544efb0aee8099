"""k-NN per block (TM Fig. 9 left, OM Fig. 12), flip invariance per block (OM Fig. 3) and prediction agreement
(OM Fig. 13). Tables come from :mod:`vitscope.sections.knn`, ``.invariance`` and ``.agreement``.

Every k-NN figure draws the Gaussian-noise baseline (the table's ``noise``) as its reference, panels share one
y-axis from 0, and invariance figures draw 0 (no closer than another image) and 1 (invariant).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import (
    NOISE_FEATURES_LABEL,
    finish,
    legend_below,
    model_colours,
    model_line_style,
    new_figure,
    reference_line,
    zero_based_limits,
)

POOLING_TITLES = {"cls": "CLS token", "gap": "GAP without CLS"}


def knn_by_block(table, model: str, k: int = 20):
    """One model: k-NN accuracy per block on CLS and on GAP (one panel each, shared y); the reported ``k`` bold,
    the other k thin; the noise baseline dashed."""
    sel = table[table.model == model]
    if sel.empty:
        raise ValueError(f"no k-NN rows for model {model!r}; the table has {sorted(set(table.model))}")
    fig, axes = new_figure(height=3.5, ncols=2, sharey=True)
    ks = sorted(sel.k.unique())
    shades = plt.get_cmap("viridis")(np.linspace(0.1, 0.8, len(ks)))
    for ax, pooling in zip(axes, POOLING_TITLES):
        rows = sel[sel.pooling == pooling]
        for kk, shade in zip(ks, shades):
            r = rows[rows.k == kk].sort_values("block")
            ax.plot(r.block, r.accuracy, color=shade, lw=2.2 if kk == k else 1.0, marker="o" if kk == k else None,
                    ms=3, label=f"k = {kk}")
        reference_line(ax, float(rows[rows.k == k].noise.iloc[0]), f"{NOISE_FEATURES_LABEL} (k = {k})")
        ax.set_title(POOLING_TITLES[pooling])
        ax.set_xlabel("block")
        ax.set_xticks(sorted(rows.block.unique()))
    axes[0].set_ylabel("k-NN top-1 accuracy")
    axes[0].set_ylim(*zero_based_limits(max(float(sel.accuracy.max()), float(sel.noise.max()))))
    legend_below(fig, axes[1], ncols=3)
    return finish(fig)


def knn_models(table, k: int = 20, poolings=("cls", "gap"), baseline: str | None = None):
    """Every model: k-NN accuracy at ``k`` per block, one panel per pooling on a shared y-axis, one line per model
    (the untrained ``baseline`` grey), the noise baseline dashed."""
    sel = table[table.k == k]
    models = list(dict.fromkeys(sel.model))
    colours = model_colours([m for m in models if m != baseline])
    fig, axes = new_figure(height=3.8, ncols=len(poolings), sharey=True, squeeze=False)
    for ax, pooling in zip(axes[0], poolings):
        rows = sel[sel.pooling == pooling]
        for m in models:
            r = rows[rows.model == m].sort_values("block")
            ax.plot(r.block, r.accuracy, label=m, **model_line_style(m, baseline, colours.get(m)))
        reference_line(ax, float(rows.noise.max()), NOISE_FEATURES_LABEL)
        ax.set_title(f"{POOLING_TITLES[pooling]}, k = {k}")
        ax.set_xlabel("block")
        ax.set_xticks(sorted(rows.block.unique()))
    axes[0][0].set_ylabel("k-NN top-1 accuracy")
    axes[0][0].set_ylim(*zero_based_limits(max(float(sel.accuracy.max()), float(sel.noise.max()))))
    legend_below(fig, axes[0][-1])
    return finish(fig)


def invariance_by_block(table, pooling: str = "cls", baseline: str | None = None):
    """Invariance index per block, one panel per augmentation (shared y), one line per model; dashed: 0 (the
    augmented copy no closer than another image) and 1 (invariant)."""
    sel = table[table.pooling == pooling]
    augs = list(dict.fromkeys(sel.augmentation))
    models = list(dict.fromkeys(sel.model))
    colours = model_colours([m for m in models if m != baseline])
    height = 3.8
    fig, axes = new_figure(height=height, ncols=len(augs), sharey=True, squeeze=False)
    for ax, aug in zip(axes[0], augs):
        rows = sel[sel.augmentation == aug]
        for m in models:
            r = rows[rows.model == m].sort_values("block")
            ax.plot(r.block, r["index"], label=m, **model_line_style(m, baseline, colours.get(m)))
        reference_line(ax, 0.0, "no closer than another image")
        ax.axhline(1.0, color="0.25", ls=":", lw=1.0)
        ax.set_title(aug)
        ax.set_xlabel("block")
        ax.set_xticks(sorted(rows.block.unique()))
    axes[0][0].set_ylabel(f"invariance index ({POOLING_TITLES[pooling]})")
    low = min(0.0, float(sel["index"].min()))
    axes[0][0].set_ylim(low - 0.05, 1.05)
    legend_below(fig, axes[0][-1])
    return finish(fig)


def agreement_bars(tau_table):
    """Mean Kendall tau per pair of models, grouped by subset (all / both correct / both wrong), one panel per
    top-k (shared y from -1 to 1), as OM Fig. 13."""
    ks = sorted(tau_table.k.unique())
    fig, axes = new_figure(height=3.8, ncols=len(ks), sharey=True, squeeze=False)
    pairs = list(dict.fromkeys(tau_table.model_a + " – " + tau_table.model_b))
    colours = model_colours(pairs)
    for ax, k in zip(axes[0], ks):
        rows = tau_table[tau_table.k == k].assign(pair=lambda d: d.model_a + " – " + d.model_b)
        subsets = list(dict.fromkeys(rows.subset))
        width = 0.8 / len(pairs)
        for i, pair in enumerate(pairs):
            r = rows[rows.pair == pair].set_index("subset").reindex(subsets)
            ax.bar(np.arange(len(subsets)) + (i - (len(pairs) - 1) / 2) * width, r.tau.fillna(0), width,
                   color=colours[pair], label=pair)
        ax.axhline(0.0, color="0.25", lw=0.8)
        ax.set_xticks(np.arange(len(subsets)), subsets)
        ax.set_title(f"top-{k} rankings")
    axes[0][0].set_ylabel("mean Kendall tau")
    axes[0][0].set_ylim(-1.0, 1.0)
    legend_below(fig, axes[0][-1], ncols=3)
    return finish(fig)

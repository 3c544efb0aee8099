"""Retrieval mAP per block (TM Fig. 9 right, App. E.2). Tables come from :func:`vitscope.sections.retrieval.compute`
(columns ``model, dataset, setup, block, map, noise``).

Panels share one y-axis from 0 (mAP is in [0, 1]), one panel per benchmark, and every figure draws the
Gaussian-noise baseline (the table's ``noise``) as its reference.
"""
from __future__ import annotations

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

SETUP_COLOURS = {"easy": "tab:green", "medium": "tab:blue", "hard": "tab:red"}
DATASET_TITLES = {"roxford5k": "ROxford5k", "rparis6k": "RParis6k"}


def _top(sel) -> float:
    return max(float(sel["map"].max()), float(sel.noise.max()))


def map_by_block(table, model: str):
    """One model: mAP per block, one panel per benchmark, one line per setup (Easy, Medium, Hard); each setup's
    noise level dashed in its colour."""
    sel = table[table.model == model]
    if sel.empty:
        raise ValueError(f"no retrieval rows for model {model!r}; the table has {sorted(set(table.model))}")
    datasets = list(dict.fromkeys(sel.dataset))
    fig, axes = new_figure(height=3.5, ncols=len(datasets), sharey=True, squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = sel[sel.dataset == dataset]
        for setup in dict.fromkeys(rows.setup):
            r = rows[rows.setup == setup].sort_values("block")
            colour = SETUP_COLOURS.get(setup, "0.3")
            ax.plot(r.block, r["map"], color=colour, lw=1.8, marker="o", ms=3, label=setup)
            ax.axhline(float(r.noise.iloc[0]), color=colour, ls="--", lw=0.9, alpha=0.8,
                       label=f"noise, {setup}")             # short: six entries share one legend row pair
        ax.set_title(DATASET_TITLES.get(dataset, dataset))
        ax.set_xlabel("block")
        ax.set_xticks(sorted(rows.block.unique()))
    axes[0][0].set_ylabel("mAP (CLS token)")
    axes[0][0].set_ylim(*zero_based_limits(_top(sel)))
    legend_below(fig, axes[0][-1], ncols=3)
    return finish(fig)


def map_models(table, setup: str = "medium", baseline: str | None = None):
    """Every model: mAP at ``setup`` per block, one panel per benchmark (shared y), one line per model (the
    untrained ``baseline`` grey), the noise level dashed: the paper's Fig. 9 (right) with RParis6k beside it."""
    sel = table[table.setup == setup]
    if sel.empty:
        raise ValueError(f"no retrieval rows at setup {setup!r}; the table has {sorted(set(table.setup))}")
    models = list(dict.fromkeys(sel.model))
    colours = model_colours([m for m in models if m != baseline])
    datasets = list(dict.fromkeys(sel.dataset))
    fig, axes = new_figure(height=3.8, ncols=len(datasets), sharey=True, squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = sel[sel.dataset == dataset]
        for m in models:
            r = rows[rows.model == m].sort_values("block")
            ax.plot(r.block, r["map"], label=m, **model_line_style(m, baseline, colours.get(m)))
        reference_line(ax, float(rows.noise.max()), NOISE_FEATURES_LABEL)
        ax.set_title(f"{DATASET_TITLES.get(dataset, dataset)}, {setup}")
        ax.set_xlabel("block")
        ax.set_xticks(sorted(rows.block.unique()))
    axes[0][0].set_ylabel("mAP (CLS token)")
    axes[0][0].set_ylim(*zero_based_limits(_top(sel)))
    legend_below(fig, axes[0][-1])
    return finish(fig)


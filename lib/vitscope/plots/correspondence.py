"""SPair-71k keypoint correspondence per block (TM Fig. 10 right). Tables come from
:mod:`vitscope.sections.correspondence` (``compute``: ``model, block, alpha, pck, noise``).

Every figure draws the Gaussian-noise reference dashed, and the y-axis starts at 0.
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


def _at(table, alpha: float):
    sel = table[np.isclose(table.alpha, alpha)]
    if sel.empty:
        raise ValueError(f"no PCK rows at alpha={alpha}; the table has alphas {sorted(set(table.alpha))}")
    return sel


def pck_by_block(table, model: str, alpha: float = 0.1):
    """One model: PCK per block, one line per α (the reported ``alpha`` bold), each α's noise reference dashed."""
    sel = table[table.model == model]
    if sel.empty:
        raise ValueError(f"no PCK rows for model {model!r}; the table has {sorted(set(table.model))}")
    fig, ax = new_figure(height=3.4)
    alphas = sorted(sel.alpha.unique(), reverse=True)
    shades = plt.get_cmap("viridis")(np.linspace(0.1, 0.8, len(alphas)))
    for a, shade in zip(alphas, shades):
        r = sel[np.isclose(sel.alpha, a)].sort_values("block")
        bold = np.isclose(a, alpha)
        ax.plot(r.block, r.pck, color=shade, lw=2.2 if bold else 1.0, marker="o" if bold else None, ms=3,
                label=f"PCK@{a:g}")
    reference_line(ax, float(_at(sel, alpha).noise.iloc[0]), f"{NOISE_FEATURES_LABEL} (PCK@{alpha:g})")
    ax.set_xlabel("block")
    ax.set_ylabel("PCK (mean over categories)")
    ax.set_xticks(sorted(sel.block.unique()))
    ax.set_ylim(*zero_based_limits(max(float(sel.pck.max()), float(sel.noise.max()))))
    legend_below(fig, ax, ncols=4)
    return finish(fig)


def pck_models(table, alpha: float = 0.1, baseline: str | None = None):
    """Every model: PCK@``alpha`` per block, one line per model (the untrained ``baseline`` grey), noise dashed;
    the paper's Fig. 10 (right)."""
    sel = _at(table, alpha)
    models = list(dict.fromkeys(sel.model))
    colours = model_colours([m for m in models if m != baseline])
    fig, ax = new_figure(height=3.8)
    for m in models:
        r = sel[sel.model == m].sort_values("block")
        ax.plot(r.block, r.pck, label=m, **model_line_style(m, baseline, colours.get(m)))
    reference_line(ax, float(sel.noise.max()), NOISE_FEATURES_LABEL)
    ax.set_xlabel("block")
    ax.set_ylabel(f"PCK@{alpha:g} (mean over categories)")
    ax.set_xticks(sorted(sel.block.unique()))
    ax.set_ylim(*zero_based_limits(max(float(sel.pck.max()), float(sel.noise.max()))))
    legend_below(fig, ax)
    return finish(fig)

"""Teaching Matters §5 feature analyses: last-block CKA between models (Fig. 6) and k-means cluster purity, NMI
and ARI per block (Fig. 7, App. D.5).

All three clustering scores and CKA lie in [0, 1] (ARI can dip just below 0): every panel of one quantity shares
one y-range, the noise reference is drawn dashed, and the untrained model, where given, in grey.
"""
from __future__ import annotations

import math

import numpy as np

from .common import finish, new_figure, reference_line

METRIC_NAMES = {"purity": "cluster purity", "nmi": "NMI", "ari": "ARI"}
TOKEN_NAMES = {"cls": "CLS token", "mean": "mean of spatial tokens", "spatial": "spatial tokens"}
SCORE_LIMITS = (-0.05, 1.02)
NOISE_LABEL = "noise features (chance)"


def _noise_level(table, metric: str) -> float | None:
    rows = table[table.model == "noise"]
    return float(rows[metric].iloc[0]) if not rows.empty else None


def _limits(table, metrics) -> tuple[float, float]:
    # Scores live in [0, 1] (ARI may dip below 0 by chance): one fixed range, so every page reads alike.
    low = min(SCORE_LIMITS[0], min(float(table[m].min()) for m in metrics) - 0.02)
    return low, SCORE_LIMITS[1]


def purity_by_layer(table, model: str, baseline: str | None = None, metrics=("purity", "nmi", "ari")):
    """One model's scores per block, one panel per metric, a line per token readout (purity with its bootstrap
    band over images), the noise reference dashed and ``baseline`` (the untrained model) in grey. All panels share
    the y-range [0, 1]. ``table``: :func:`vitscope.sections.purity.compute` rows for ``model`` (and ``baseline``)."""
    sel = table[table.model == model]
    if sel.empty:
        raise ValueError(f"no purity rows for {model!r}; the table has {sorted(set(table.model))}")
    fig, axes = new_figure(height=2.9, ncols=len(metrics), sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, tokens in enumerate(TOKEN_NAMES):
            rows = sel[sel.tokens == tokens].sort_values("block")
            if rows.empty:
                continue
            if baseline is not None:
                base = table[(table.model == baseline) & (table.tokens == tokens)].sort_values("block")
                ax.plot(base.block, base[metric], ":" if i else "-", color="0.6", lw=2, zorder=1.5,
                        label=f"{baseline} (untrained), {TOKEN_NAMES[tokens]}")
            if metric == "purity":
                ax.fill_between(rows.block, rows.purity_low, rows.purity_high, color=f"C{i}", alpha=0.2, lw=0)
            ax.plot(rows.block, rows[metric], "o-", ms=3.5, color=f"C{i}", label=TOKEN_NAMES[tokens])
        noise = _noise_level(table, metric)
        if noise is not None:
            reference_line(ax, noise, NOISE_LABEL)
        ax.set(title=METRIC_NAMES[metric], xlabel="block", xticks=sorted(sel.block.unique().astype(int)),
               ylim=_limits(table, metrics))
    axes[0, 0].set_ylabel("score")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    return finish(fig)


def purity_overview(table, baseline: str | None = None, metrics=("purity", "nmi", "ari"), tokens=("cls", "mean")):
    """Fig. 7 with App. D.5: one row per metric, one column per token readout (CLS left, pooled spatial right),
    one coloured line per model, the untrained ``baseline`` in grey and the noise reference dashed; rows share
    the y-range [0, 1]."""
    models = [m for m in dict.fromkeys(table.model) if m != "noise"]
    if not models:
        raise ValueError("purity_overview: the table holds no model rows")
    fig, axes = new_figure(height=2.1 * len(metrics) + 0.9, nrows=len(metrics), ncols=len(tokens), sharex=True,
                           sharey=True, squeeze=False)
    trained = [m for m in models if m != baseline]
    markers = "os^Dv<>p"
    for r, metric in enumerate(metrics):
        for c, tok in enumerate(tokens):
            ax = axes[r, c]
            if baseline is not None:
                base = table[(table.model == baseline) & (table.tokens == tok)].sort_values("block")
                ax.plot(base.block, base[metric], "-", color="0.6", lw=3, zorder=1.5, label=f"{baseline} (untrained)")
            for i, m in enumerate(trained):
                rows = table[(table.model == m) & (table.tokens == tok)].sort_values("block")
                ax.plot(rows.block, rows[metric], marker=markers[i % len(markers)], ms=3.5, color=f"C{i}", label=m)
            noise = _noise_level(table, metric)
            if noise is not None:
                reference_line(ax, noise, NOISE_LABEL)
            ax.set(ylim=_limits(table, metrics))
            if r == 0:
                ax.set_title(TOKEN_NAMES[tok])
            if c == 0:
                ax.set_ylabel(METRIC_NAMES[metric])
            if r == len(metrics) - 1:
                blocks = sorted(table[table.model != "noise"].block.unique().astype(int))
                ax.set(xlabel="block", xticks=blocks)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=4, frameon=False)
    return finish(fig)


def cka_model_matrices(matrices: dict, vmin: float = 0.0, vmax: float = 1.0, annotate: bool = True):
    """Fig. 6: one [models x models] CKA heatmap per panel, panels laid out two per row and sharing one colour
    scale. ``matrices``: ``{panel title: square DataFrame}`` (e.g. ``vitscope.sections.last_layer_cka.matrix``).
    ``annotate`` prints each value in its cell."""
    if not matrices:
        raise ValueError("cka_model_matrices needs at least one matrix")
    ncols = min(2, len(matrices))
    nrows = math.ceil(len(matrices) / ncols)
    n = max(len(m) for m in matrices.values())
    fig, axes = new_figure(height=nrows * (0.32 * n + 1.4), nrows=nrows, ncols=ncols, squeeze=False)
    im = None
    for ax, (title, frame) in zip(axes.flat, matrices.items()):
        im = ax.imshow(frame.values, cmap="magma", vmin=vmin, vmax=vmax)
        ax.set_xticks(range(len(frame.columns)), list(frame.columns), rotation=60, ha="right")
        # Panels of one row share their models: only the first names them on the y-axis.
        ax.set_yticks(range(len(frame.index)), list(frame.index) if ax in axes[:, 0] else [])
        ax.grid(False)
        ax.set_title(title)
        if annotate:
            for (i, j), v in np.ndenumerate(frame.values):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                        color="black" if v > 0.6 * vmax else "white")
    for ax in list(axes.flat)[len(matrices):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes, shrink=0.7, label="minibatch CKA")
    return finish(fig)

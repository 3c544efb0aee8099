"""Objectives Matter Fig. 6 (App. B.1): minibatch CKA against the batch size and the number of examples.

Both functions read the summary table of :func:`vitscope.sections.cka_convergence.summarise` (columns ``pair,
model_a, model_b, estimator, sweep, batch_size, examples, block, mean, low, high, full, deviation``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from .cka import CKA_LIMITS
from .common import MAX_FIGURE_WIDTH_IN, finish, new_figure, reference_line

#: The x axis of each sweep: the column it varies and its label.
SWEEP_AXES = {"batch_size": ("batch_size", "minibatch size"), "examples": ("examples", "examples")}
ESTIMATOR_LABELS = {"reference": "unbiased HSIC$_1$ (eq. 3)", "biased": "biased HSIC$_0$"}
BLOCK_STYLES = ("-", "--", ":", "-.")


def _log2_axis(ax, values) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()


def convergence_panels(summary, estimator: str = "reference"):
    """One row per sweep (batch size, then examples), one column per model pair: the mean estimate over repeats per
    block (a colour each), the min-max band over repeats, and the full-batch value (all examples in one minibatch)
    as a dotted line of the block's colour. One y-range, CKA's [0, 1], for every panel."""
    sel = summary[summary.estimator == estimator]
    if sel.empty:
        raise ValueError(f"no rows for estimator {estimator!r}; the summary has {sorted(summary.estimator.unique())}")
    pairs = list(dict.fromkeys(sel.pair))
    blocks = sorted(sel.block.unique())
    colours = dict(zip(blocks, plt.get_cmap("viridis")([i / max(1, len(blocks) - 1) * 0.85 for i in
                                                        range(len(blocks))])))
    fig, axes = new_figure(width=MAX_FIGURE_WIDTH_IN, height=5.0, nrows=2, ncols=len(pairs), squeeze=False,
                           sharey=True)
    for row, (sweep, (column, label)) in enumerate(SWEEP_AXES.items()):
        for col, pair in enumerate(pairs):
            ax = axes[row, col]
            part = sel[(sel.sweep == sweep) & (sel.pair == pair)]
            for blk in blocks:
                line = part[part.block == blk].sort_values(column)
                ax.fill_between(line[column], line["low"], line["high"], color=colours[blk], alpha=0.25, lw=0)
                ax.plot(line[column], line["mean"], marker="o", ms=3, color=colours[blk], label=f"block {blk}")
                ax.axhline(line["full"].iloc[0], color=colours[blk], ls=":", lw=1)
            _log2_axis(ax, sorted(part[column].unique()))
            ax.set_ylim(*CKA_LIMITS)
            ax.set_xlabel(label)
            if row == 0:
                ax.set_title(pair.replace(" vs ", "\nvs "))
            if col == 0:
                ax.set_ylabel("minibatch CKA")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(blocks))
    return finish(fig)


def deviation_by_estimator(summary, sweep: str = "batch_size"):
    """Mean estimate minus the full-batch value against the ``sweep``'s setting, one panel per pair of distinct
    models: one colour per estimator, one line style per block; 0 (no bias) as the reference line."""
    sel = summary[(summary.sweep == sweep) & (summary.model_a != summary.model_b)]
    if sel.empty:
        raise ValueError(f"no rows for sweep {sweep!r} between distinct models")
    column, label = SWEEP_AXES[sweep]
    pairs = list(dict.fromkeys(sel.pair))
    blocks = sorted(sel.block.unique())
    estimators = list(dict.fromkeys(sel.estimator))
    colours = dict(zip(estimators, plt.get_cmap("tab10").colors))
    fig, axes = new_figure(width=MAX_FIGURE_WIDTH_IN, height=3.2, ncols=len(pairs), squeeze=False, sharey=True)
    for col, pair in enumerate(pairs):
        ax = axes[0, col]
        for est in estimators:
            for i, blk in enumerate(blocks):
                line = sel[(sel.pair == pair) & (sel.estimator == est) & (sel.block == blk)].sort_values(column)
                ax.plot(line[column], line["deviation"], marker="o", ms=3, color=colours[est],
                        ls=BLOCK_STYLES[i % len(BLOCK_STYLES)],
                        label=f"{ESTIMATOR_LABELS.get(est, est)}, block {blk}")
        reference_line(ax, 0.0, "full-batch unbiased CKA")
        _log2_axis(ax, sorted(sel[column].unique()))
        ax.set(title=pair.replace(" vs ", "\nvs "), xlabel=label)
        if col == 0:
            ax.set_ylabel("mean minus full-batch CKA")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2)
    return finish(fig)

"""Teaching Matters 4.4 (Fig. 5): IoU of attention masks with object masks, per block.

The figures read :func:`vitscope.sections.attention_iou.layer_table` / ``head_table`` / ``attribution_iou`` rows
and never compute an IoU. IoU lies in [0, 1]: every panel shares that range so pages read alike.
"""
from __future__ import annotations

import numpy as np

from .common import finish, new_figure, reference_line

MAP_NAMES = {"cls": "CLS token", "spatial": "mean of spatial tokens"}
RULE_STYLES = {"held_out": ("-", "o", "held-out best head"), "per_image_max": (":", None, "per-image best head"),
               "mean_head": ("--", None, "mean over heads")}
METHOD_NAMES = {"integrated_gradients": "Integrated Gradients", "saliency": "Saliency"}
IOU_LIMITS = (0.0, 1.0)


def _check(table, column, allowed):
    unknown = sorted(set(table[column]) - set(allowed))
    if unknown:
        raise ValueError(f"{column} values {unknown} are not drawn; known: {sorted(allowed)}")


def iou_by_layer(table, models=None, rules=("held_out", "per_image_max"), baseline: str | None = None,
                 object_share: float | None = None):
    """Fig. 5's layout: two panels (CLS token, mean of spatial tokens), IoU per block, a colour per model and a
    line style per best-head rule (the held-out rule with its bootstrap band over images). ``baseline`` (the
    untrained model) is drawn in grey; ``object_share``, when given, as a dashed reference: the IoU a mask
    covering every token would score on average, roughly."""
    models = list(models or dict.fromkeys(table.model))
    missing = [m for m in models if m not in set(table.model)]
    if missing:
        raise ValueError(f"no IoU rows for {missing}; the table has {sorted(set(table.model))}")
    fig, axes = new_figure(height=3.4, ncols=2, sharey=True, squeeze=False)
    for ax, (maps, title) in zip(axes[0], MAP_NAMES.items()):
        for i, m in enumerate(models):
            colour = "0.55" if m == baseline else f"C{i}"
            for rule in rules:
                rows = table[(table.model == m) & (table.tokens == maps) & (table.rule == rule)].sort_values("block")
                if rows.empty:
                    continue
                ls, marker, name = RULE_STYLES[rule]
                if rule == "held_out":
                    ax.fill_between(rows.block, rows.low, rows.high, color=colour, alpha=0.15, lw=0)
                label = f"{m}{' (untrained)' if m == baseline else ''}" if rule == rules[0] else None
                ax.plot(rows.block, rows.iou, ls=ls, marker=marker, ms=3.5, color=colour, label=label)
        if object_share is not None:
            reference_line(ax, object_share, "IoU of a mask of every token")
        ax.set(title=title, xlabel="block", ylim=IOU_LIMITS, xticks=sorted(table.block.unique().astype(int)))
    axes[0, 0].set_ylabel("IoU with object masks")
    for rule in rules:               # the rule legend: one black line per style
        ls, marker, name = RULE_STYLES[rule]
        axes[0, 1].plot([], [], ls=ls, marker=marker, color="k", label=name)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), frameon=False)
    return finish(fig)


def head_heatmaps(heads, model: str):
    """Mean IoU of every head (columns) in every block (rows), one panel per map, on the shared [0, 1] scale.
    ``heads``: :func:`vitscope.sections.attention_iou.head_table` rows."""
    sel = heads[heads.model == model]
    if sel.empty:
        raise ValueError(f"no head rows for {model!r}")
    fig, axes = new_figure(height=2.9, ncols=2, squeeze=False)
    for ax, (maps, title) in zip(axes[0], MAP_NAMES.items()):
        grid = sel[sel.tokens == maps].pivot(index="block", columns="head", values="iou")
        im = ax.imshow(grid.to_numpy(), vmin=IOU_LIMITS[0], vmax=IOU_LIMITS[1], cmap="viridis", aspect="auto")
        ax.set(title=title, xlabel="head", ylabel="block", xticks=range(grid.shape[1]),
               yticks=range(grid.shape[0]), yticklabels=grid.index.astype(int))
        ax.grid(False)
    fig.colorbar(im, ax=axes[0].tolist(), label="mean IoU", shrink=0.9)
    return finish(fig)


def attribution_bars(attributions, layer_rows=None):
    """Mean IoU of each attribution method's masks (bars, with the spread over images as the interquartile range),
    and, when ``layer_rows`` (``layer_table`` rows of the same model, held-out rule) are given, the best and the
    last block's attention IoU as horizontal references."""
    _check(attributions, "method", METHOD_NAMES)
    fig, axes = new_figure(width=4.5, height=2.8)
    ax = axes
    methods = list(dict.fromkeys(attributions.method))
    for i, method in enumerate(methods):
        v = attributions[attributions.method == method].iou.to_numpy()
        q1, q3 = np.percentile(v, [25, 75])
        ax.bar(i, v.mean(), color=f"C{i}", width=0.6)
        # the interquartile range as a bar from q1 to q3 (the mean of a skewed sample can lie outside it)
        ax.errorbar(i, (q1 + q3) / 2, yerr=(q3 - q1) / 2, fmt="none", color="k", capsize=4)
    if layer_rows is not None and not layer_rows.empty:
        for maps, ls in (("cls", "--"), ("spatial", ":")):
            rows = layer_rows[layer_rows.tokens == maps]
            if not rows.empty:
                ax.axhline(float(rows.iou.max()), color="0.3", ls=ls, lw=1.2,
                           label=f"attention, {MAP_NAMES[maps]} (best block)")
        ax.legend(loc="upper right", frameon=False)
    ax.set(xticks=range(len(methods)), xticklabels=[METHOD_NAMES[m] for m in methods], ylim=IOU_LIMITS,
           ylabel="IoU with object masks")
    return finish(fig)


__all__ = ["attribution_bars", "head_heatmaps", "iou_by_layer"]

"""Table 1 at a glance (TM §6.3): per task, each model's best value with its best block, and its last block's value.
Reads :func:`vitscope.sections.downstream_summary.side_by_side`'s long table (values in the paper's units).

Where a row is in the paper's setting (the paper's own model on real data), the paper's value stands beside ours as a
hatched bar with its layer; elsewhere the paper's numbers stay in the table, not on the axes, since a different
setting puts them on another scale.
"""
from __future__ import annotations

import numpy as np

from .common import NOISE_FEATURES_LABEL, finish, legend_below, model_colours, new_figure, reference_line

UNTRAINED_COLOUR = "0.6"


def best_values(long, baseline: str | None = None, noise_row: str = "Gaussian noise"):
    """A 2 x 2 grid, one panel per task (in the table's order): a bar per model at its best value, the best block
    written on the bar, a black tick at the last block's value, the noise reference dashed; the untrained
    ``baseline`` grey. A task not computed on the profile gets a panel that says so."""
    from ..sections.downstream_summary import TASKS
    tasks = list(dict.fromkeys(long.task))
    models = [m for m in dict.fromkeys(long.model) if m != noise_row]
    colours = model_colours([m for m in models if m != baseline])
    nrows = int(np.ceil(len(tasks) / 2))
    fig, axes = new_figure(height=2.6 * nrows + 0.6, nrows=nrows, ncols=2, squeeze=False)
    x = np.arange(len(models))
    for ax, key in zip(axes.flat, tasks):
        task, sel = TASKS[key], long[long.task == key].set_index("model")
        ax.set_title(task.header)
        ax.set_xticks(x, [m.removeprefix("zoo-") for m in models], rotation=35, ha="right")
        if not (sel.status == "computed").all():
            ax.text(0.5, 0.5, "not computed\non this profile", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
            continue
        rows = sel.loc[models]
        paper = rows.setting.eq("paper's").to_numpy()
        width = np.where(paper, 0.4, 0.8)
        offset = np.where(paper, -0.2, 0.0)
        bars = ax.bar(x + offset, rows.best, width=width,
                      color=[UNTRAINED_COLOUR if m == baseline else colours[m] for m in models])
        for bar, block in zip(bars, rows.best_block):
            if not np.isnan(block):
                ax.annotate(f"{int(block)}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8, xytext=(0, 1), textcoords="offset points")
        ax.scatter(x + offset, rows["last"], marker="_", s=160, color="black", zorder=3, label="last block")
        if paper.any():
            theirs = ax.bar(x[paper] + 0.2, rows.paper[paper], width=0.4, color="white", edgecolor="0.3",
                            hatch="///", label="paper (layer)")
            for bar, layer in zip(theirs, rows.paper_layer[paper]):
                ax.annotate(f"{int(layer)}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8, xytext=(0, 1), textcoords="offset points")
        noise = float(sel.loc[noise_row].best) if noise_row in sel.index else float("nan")
        if not np.isnan(noise):
            reference_line(ax, noise, NOISE_FEATURES_LABEL)
        top = np.nanmax([rows.best.max(), rows["last"].max(), rows.paper[paper].max() if paper.any() else 0, noise])
        ax.set_ylim(0, top * 1.15)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    source = next((ax for ax in axes.flat if ax.get_legend_handles_labels()[1]), None)
    if source is not None:
        legend_below(fig, source, ncols=3)
    return finish(fig)

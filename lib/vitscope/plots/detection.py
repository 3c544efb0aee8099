"""Objectives Matter App. C (Tables 6-7): COCO AP of frozen and fine-tuned backbones. Reads the tables of
:mod:`vitscope.sections.detection`."""
from __future__ import annotations

import numpy as np

from .common import finish, new_figure

MODE_LABELS = {"frozen": "frozen", "finetuned": "fine-tuned", "frozen-multi": "frozen, last 4 blocks"}
TASK_LABELS = {"box": "detection (box AP)", "mask": "segmentation (mask AP)"}


def _bars(ax, table, metric: str, models, modes):
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(models))
    for k, mode in enumerate(modes):
        vals = [float(table[(table.model == m) & (table["mode"] == mode)][metric].iloc[0])
                if ((table.model == m) & (table["mode"] == mode)).any() else np.nan for m in models]
        ax.bar(x + (k - (len(modes) - 1) / 2) * width, vals, width, color=f"C{k}", label=MODE_LABELS.get(mode, mode))
    ax.set_xticks(x, models, rotation=20, ha="right")


def ap_panels(table, paper=None, metric: str = "AP", profile_label: str = "this profile",
              paper_label: str = "paper, COCO val2017 (another setting)"):
    """One panel per task (box, mask) of ``metric`` per model and mode (``table``:
    :func:`vitscope.sections.detection.compute`); with ``paper`` (:func:`~vitscope.sections.detection.paper_table`)
    a second row shows the paper's Tables 6-7, titled as a different setting."""
    tasks = list(TASK_LABELS)
    rows = [(table, profile_label)] + ([(paper, paper_label)] if paper is not None else [])
    fig, axes = new_figure(height=2.6 * len(rows), nrows=len(rows), ncols=len(tasks), squeeze=False)
    for r, (data, label) in enumerate(rows):
        models = list(dict.fromkeys(data.model))
        modes = list(dict.fromkeys(data["mode"]))
        for c, task in enumerate(tasks):
            ax = axes[r, c]
            _bars(ax, data[data.task == task], metric, models, modes)
            ax.set(title=f"{label}: {TASK_LABELS[task]}", ylabel=f"{metric} (%)")
            ax.set_ylim(bottom=0)
        axes[r, 0].legend(frameon=False, loc="upper left")
    return finish(fig)


__all__ = ["ap_panels"]

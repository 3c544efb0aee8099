"""DAVIS label propagation per block (TM Fig. 10 left): J&F curves and a strip of propagated masks. Tables and
strips come from :mod:`vitscope.sections.propagation`; nothing is computed here but colours and overlays.

J&F, J and F are fractions in [0, 1]: every panel's y-axis runs from 0 to 1, so pages and models compare by eye.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import MAX_FIGURE_WIDTH_IN, finish, new_figure

METRIC_LABELS = {"jf": "J&F", "j": "J (region IoU)", "f": "F (boundary)"}
#: Opacity of a mask drawn over its frame.
OVERLAY_ALPHA = 0.55


def jf_by_block(table, model: str):
    """One model: J&F (bold), J and F per block on one axis from 0 to 1."""
    sel = table[table.model == model].sort_values("block")
    if sel.empty:
        raise ValueError(f"no DAVIS rows for model {model!r}; the table has {sorted(set(table.model))}")
    fig, ax = new_figure(height=3.2)
    styles = {"jf": {"lw": 2.2, "marker": "o", "ms": 4, "color": "C0"}, "j": {"lw": 1.2, "ls": "--", "color": "C1"},
              "f": {"lw": 1.2, "ls": ":", "color": "C2"}}
    for metric, style in styles.items():
        ax.plot(sel.block, sel[metric], label=METRIC_LABELS[metric], **style)
    ax.set_xlabel("block")
    ax.set_xticks(sorted(sel.block.unique()))
    ax.set_ylabel("DAVIS score")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    return finish(fig)


def jf_models(table, baseline: str | None = None, metric: str = "jf"):
    """Every model: ``metric`` (default J&F) per block, one line per model (the untrained ``baseline`` grey), y from
    0 to 1, as TM Fig. 10 (left)."""
    models = list(dict.fromkeys(table.model))
    cmap = plt.get_cmap("tab10")
    colours = {m: cmap(i % 10) for i, m in enumerate(m for m in models if m != baseline)}
    fig, ax = new_figure(height=3.8)
    for m in models:
        r = table[table.model == m].sort_values("block")
        style = ({"color": "0.55", "lw": 1.6, "marker": "."} if m == baseline
                 else {"color": colours[m], "lw": 1.8, "marker": "o", "ms": 3})
        ax.plot(r.block, r[metric], label=m, **style)
    ax.set_xlabel("block")
    ax.set_xticks(sorted(table.block.unique()))
    ax.set_ylabel(f"DAVIS {METRIC_LABELS[metric]}")
    ax.set_ylim(0, 1)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
    return finish(fig)


def overlay(image, mask, palette, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """float ``[H, W, 3]``: ``image`` ([3, H, W] in [0, 1]) with each object id of ``mask`` ([H, W]) blended in its
    ``palette`` colour (uint8 [n, 3]); background (0) left as is."""
    img = np.asarray(image, dtype=np.float64).transpose(1, 2, 0)
    mask = np.asarray(mask)
    colours = np.asarray(palette, dtype=np.float64)[np.clip(mask, 0, len(palette) - 1)] / 255.0
    on = (mask > 0)[..., None]
    return np.where(on, (1 - alpha) * img + alpha * colours, img)


def propagation_strip(strip: dict):
    """Frames of one video (columns) with the annotation (top row) and the propagated masks (bottom row), each
    object in the colour of the video's own palette. ``strip``: :func:`vitscope.sections.propagation.strip`."""
    n = len(strip["frames"])
    width = MAX_FIGURE_WIDTH_IN
    h, w = strip["images"].shape[2:]
    fig, axes = new_figure(width=width, height=width / n * 2 * h / w + 0.6, nrows=2, ncols=n, squeeze=False)
    for col, t in enumerate(strip["frames"]):
        for row, (key, title) in enumerate((("annotations", "annotation"), ("predictions", "propagated"))):
            ax = axes[row][col]
            ax.imshow(overlay(strip["images"][col], strip[key][col], strip["palette"]))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.set_title(f"frame {t}" if row == 0 else "")
            if col == 0:
                ax.set_ylabel(title)
    return finish(fig)


__all__ = ["jf_by_block", "jf_models", "overlay", "propagation_strip"]

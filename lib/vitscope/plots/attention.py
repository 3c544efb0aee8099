"""Teaching Matters Figure 4: average attention distance per head (left) and per layer (right)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

UNITS = {"unit_square": "distance (unit square)", "pixels": "distance (pixels)"}


def _uniform_line(ax, rows):
    """Dashed reference: the distance of uniform attention on the model's grid (if the table carries it)."""
    if "uniform" in rows and rows["uniform"].nunique() == 1:
        ax.axhline(rows["uniform"].iloc[0], color="0.4", ls="--", lw=1, label="uniform attention")
        ax.legend(loc="best", fontsize="small")


def attention_distance_by_layer(table, model: str, variant: str = "unit_square", ax=None):
    """Scatter of every head's mean distance against its block, for one model (Fig. 4, left)."""
    sel = table[(table.model == model) & (table.variant == variant)]
    if sel.empty:
        raise ValueError(f"No rows for model={model!r}, variant={variant!r}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    sns.stripplot(data=sel, x="block", y="distance", hue="head", palette="viridis", size=6, jitter=0.15,
                  ax=ax, legend=False)
    _uniform_line(ax, sel)
    ax.set(xlabel="block (layer)", ylabel=f"avg. attention {UNITS[variant]}", title=f"{model}: every head")
    ax.grid(axis="y", alpha=0.3)
    return ax.figure


def attention_distance_layer_means(table, variant: str = "unit_square", ax=None):
    """Per-layer mean over heads, one line per model (Fig. 4, right)."""
    sel = table[table.variant == variant].groupby(["model", "block"], as_index=False)["distance"].mean()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    sns.lineplot(data=sel, x="block", y="distance", hue="model", marker="o", ax=ax)
    _uniform_line(ax, table[table.variant == variant])
    ax.set(xlabel="block (layer)", ylabel=f"mean over heads, {UNITS[variant]}", title="per-layer average")
    ax.grid(alpha=0.3)
    return ax.figure

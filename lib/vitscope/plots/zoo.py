"""Mini-zoo figures: training curves, held-out accuracy against the random init, and sample training scenes."""
from __future__ import annotations

import math

import numpy as np

from .common import MAX_FIGURE_WIDTH_IN, finish, new_figure, reference_line, zero_based_limits


def training_curves(loss, knn=None, trivial: dict | None = None, ncols: int = 3):
    """One panel per model: training loss (left axis, solid), its objective's trivial level (dashed: the loss of a
    network that outputs a constant) and, if given, the k-NN monitor (right axis, dotted, on one [0, max] range for
    every panel). ``loss`` / ``knn``: long tables (model, step, value) from ``vitscope.zoo.cards.curves_table``;
    ``trivial``: ``{model: level}`` (``vitscope.zoo.cards.trivial_loss``). Loss axes start at zero."""
    models = list(dict.fromkeys(loss.model))
    if not models:
        raise ValueError("the loss table is empty")
    ncols = min(ncols, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig, axes = new_figure(height=2.1 * nrows + 0.6, nrows=nrows, ncols=ncols, squeeze=False)
    knn_top = zero_based_limits(float(knn.value.max()))[1] if knn is not None and len(knn) else None
    handles = {}
    for ax, model in zip(axes.flat, models):
        sel = loss[loss.model == model]
        top = max(float(sel.value.max()), (trivial or {}).get(model, 0.0))
        handles["training loss"], = ax.plot(sel.step, sel.value, color="C0", lw=1.2)
        if trivial and model in trivial:
            handles["trivial loss level"] = reference_line(ax, trivial[model], "trivial loss level")
        ax.set(title=model, ylim=zero_based_limits(top))
        if knn is not None and (knn.model == model).any():
            k = knn[knn.model == model]
            twin = ax.twinx()
            handles["k-NN monitor (right axis)"], = twin.plot(k.step, k.value, color="C3", ls=":", marker="o", ms=3)
            twin.set_ylim(0, knn_top)
            twin.grid(False)
            twin.tick_params(axis="y", colors="C3")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss", color="C0")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3, frameon=False)
    return finish(fig)


def accuracy_vs_random(summary, chance: float | None = None, ax=None):
    """Grouped bars per model: held-out k-NN and linear-probe top-1 of the trained model and of its random init
    (columns of ``vitscope.zoo.cards.summary_table``), with the chance level as a dashed line."""
    cols = [("k-NN", "C0", None), ("k-NN random init", "C0", "//"), ("probe", "C2", None),
            ("probe random init", "C2", "//")]
    if ax is None:
        _, ax = new_figure(height=3.3)
    x, width = np.arange(len(summary)), 0.2
    for i, (col, colour, hatch) in enumerate(cols):
        ax.bar(x + (i - 1.5) * width, 100 * summary[col], width, label=col, color=colour,
               alpha=0.45 if hatch else 0.9, hatch=hatch, edgecolor="white" if hatch is None else colour)
    if chance is not None:
        reference_line(ax, 100 * chance, "chance")
    prefix = "zoo-" if all(str(m).startswith("zoo-") for m in summary.index) else ""
    ax.set_xticks(x, [f"{str(m).removeprefix(prefix)}\n({r})" for m, r in zip(summary.index, summary.readout)])
    top = 100 * float(summary[[c for c, _, _ in cols]].to_numpy().max())
    ax.set(ylabel="held-out top-1 (%)", xlabel=f"{prefix}model (readout)", ylim=zero_based_limits(top, 0.1))
    ax.grid(axis="x", visible=False)
    ax.legend(ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.32), frameon=False)
    return finish(ax.figure)


def scene_grid(images_u8, col_labels=None, row_labels=None, ncols: int = 10):
    """uint8 images [N, 3, H, W] (torch or NumPy) in a grid at most the column wide, with optional column titles
    (``col_labels``, one per column) and row labels (``row_labels``, one per row)."""
    images = np.asarray(images_u8).transpose(0, 2, 3, 1)
    nrows = math.ceil(len(images) / ncols)
    if col_labels is not None and len(col_labels) != ncols:
        raise ValueError(f"col_labels has {len(col_labels)} entries for {ncols} columns")
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"row_labels has {len(row_labels)} entries for {nrows} rows")
    cell = (MAX_FIGURE_WIDTH_IN - (0.6 if row_labels is not None else 0.0)) / ncols
    fig, axes = new_figure(height=cell * nrows + (0.35 if col_labels is not None else 0.0), nrows=nrows,
                           ncols=ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < len(images):
            ax.imshow(images[i])
    for j, label in enumerate(col_labels or []):
        axes[0, j].set_title(label, rotation=30 if len(str(label)) > 9 else 0)
    for i, label in enumerate(row_labels or []):
        axes[i, 0].set_ylabel(label)
    return finish(fig)



def structure_panels(table):
    """Three panels against the block (1-based), one line per zoo model: attention distance, attention entropy
    (nats) and CKA between the model and its own initialisation. Dashed: the uniform-attention levels; grey
    dotted: the untrained initialisations' mean. ``table``: ``vitscope.zoo.cards.structure_table``."""
    if table.empty:
        raise ValueError("no card records a structure block; run `vitscope zoo card --all`")
    fig, axes = new_figure(height=2.9, ncols=3)
    panels = (("attention distance", "uniform distance", "init distance"),
              ("attention entropy", "uniform entropy", "init entropy"), ("CKA to init", None, None))
    for ax, (col, uniform, init) in zip(axes, panels):
        for i, (model, sel) in enumerate(table.groupby("model", sort=False)):
            ax.plot(sel.block, sel[col], marker="o", ms=3, lw=1.2, color=f"C{i}", label=model)
        if uniform:
            reference_line(ax, float(table[uniform].iloc[0]), "uniform attention")
            init_mean = table.groupby("block")[init].mean()
            ax.plot(init_mean.index, init_mean.values, color="0.5", ls=":", lw=1.2, label="untrained (mean)")
        top = max(float(table[col].max()), float(table[uniform].max()) if uniform else 1.0)
        ax.set(title=col, xlabel="block", ylim=zero_based_limits(top))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, frameon=False)
    return finish(fig)

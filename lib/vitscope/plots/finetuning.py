"""Objectives Matter §2.3: CKA before and after fine-tuning (Figs. 4, 8-10), path efficiency (Fig. 14) and the
marginal information of intermediate CLS tokens (Fig. 5). Reads the tables of :mod:`vitscope.sections.finetuning`."""
from __future__ import annotations

import numpy as np

from .cka import CKA_LIMITS, SITE_NAMES
from .common import finish, new_figure, reference_line

STATES = ("PT/PT", "FT/PT", "PT/FT", "FT/FT")


def before_after(table, label_a: str, label_b: str, sites=None):
    """Same-depth CKA of two models in four states (both pre-trained, one or the other fine-tuned, both fine-tuned),
    one panel per layer type, y on [0, 1]. ``table``: :func:`vitscope.sections.finetuning.before_after`."""
    sites = list(sites or dict.fromkeys(table.site))
    fig, axes = new_figure(height=2.6, ncols=len(sites), sharey=True, squeeze=False)
    styles = {"PT/PT": ("C0", "-"), "FT/PT": ("C1", "--"), "PT/FT": ("C2", ":"), "FT/FT": ("C3", "-")}
    for ax, site in zip(axes[0], sites):
        rows = table[table.site == site].sort_values("index")
        for state in STATES:
            colour, ls = styles[state]
            a, b = state.split("/")
            ax.plot(rows["index"], rows[state], color=colour, ls=ls, marker="o", ms=3,
                    label=f"{label_a} {a} vs {label_b} {b}")
        ax.set(title=SITE_NAMES.get(site, site), ylim=CKA_LIMITS, xticks=sorted(rows["index"].unique()),
               xlabel="block")
    axes[0, 0].set_ylabel("CKA, same block")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    return finish(fig)


def path_efficiency(table, types=None):
    """Path efficiency per layer type (all blocks together), one bar per model (OM Fig. 14b), y on [0, 1]."""
    whole = table[table.block == 0]
    types = list(types or dict.fromkeys(whole.type))
    models = list(dict.fromkeys(whole.model))
    fig, ax = new_figure(height=2.8)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(types))
    for k, m in enumerate(models):
        vals = [float(whole[(whole.model == m) & (whole.type == t)].efficiency.iloc[0]) for t in types]
        ax.bar(x + (k - (len(models) - 1) / 2) * width, vals, width, label=m, color=f"C{k}")
    ax.set(xticks=x, xticklabels=types, ylim=(0, 1.02), ylabel="path efficiency", xlabel="layer type")
    ax.legend(frameon=False, ncols=min(4, len(models)), loc="upper left")
    return finish(fig)


def path_efficiency_by_block(table, layer_type: str = "qkv"):
    """Path efficiency of one layer type in every block, one line per model, y on [0, 1]."""
    rows = table[(table.type == layer_type) & (table.block > 0)]
    fig, ax = new_figure(height=2.6)
    for k, m in enumerate(dict.fromkeys(rows.model)):
        r = rows[rows.model == m].sort_values("block")
        ax.plot(r.block, r.efficiency, marker="o", ms=3, color=f"C{k}", label=m)
    ax.set(ylim=(0, 1.02), xlabel="block", ylabel=f"path efficiency ({layer_type})",
           xticks=sorted(rows.block.unique()))
    ax.legend(frameon=False, fontsize="small")
    return finish(fig)


def marginal_information(table):
    """Accuracy gain of final + intermediate CLS over the final CLS, per intermediate block (OM Fig. 5): solid the
    pre-trained models, dashed their fine-tuned versions (same colour)."""
    fig, ax = new_figure(height=2.8)
    bases = [m for m in dict.fromkeys(table.model) if "+ft" not in m]
    for k, m in enumerate(bases):
        for name, ls in ((m, "-"), (m + "+ft", "--")):
            r = table[table.model == name].sort_values("layer")
            if not r.empty:
                ax.plot(r.layer, 100 * r.gain, ls=ls, marker="o", ms=3, color=f"C{k}", label=name)
    reference_line(ax, 0.0, "no gain")
    ax.set(xlabel="intermediate block concatenated with the final CLS", ylabel="gain over final CLS (points)",
           xticks=sorted(table.layer.unique()))
    ax.legend(frameon=False, fontsize="small", ncols=2)
    return finish(fig)


def training_curves(cards: dict):
    """Held-out top-1 accuracy after each fine-tuning epoch, one line per model (``cards``: name -> run card)."""
    fig, ax = new_figure(height=2.6)
    for k, (name, card) in enumerate(cards.items()):
        h = card["history"]
        ax.plot([e["epoch"] for e in h], [e["heldout_top1"] for e in h], marker="o", ms=3, color=f"C{k}", label=name)
    ax.set(xlabel="epoch", ylabel="held-out top-1", ylim=(0, 1.02))
    ax.legend(frameon=False, fontsize="small")
    return finish(fig)

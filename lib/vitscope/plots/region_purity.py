"""Teaching Matters §5.3 (Fig. 8): k-means purity of object- and part-level features, per block.

One panel per (dataset, level), as Fig. 8 (objects left, parts right), one line per model, the untrained model in
grey and the noise reference dashed; every panel shares the y-range of the §5.2 figures.
"""
from __future__ import annotations

from .common import finish, new_figure, reference_line
from .purity import METRIC_NAMES, NOISE_LABEL, SCORE_LIMITS

LEVEL_NAMES = {"object": "objects", "part": "parts"}


def _panels(table) -> list[tuple[str, str]]:
    rows = table[table.model != "noise"]
    keys = list(dict.fromkeys(zip(rows.dataset, rows.level)))
    return sorted(keys, key=lambda k: (k[1] != "object", k[0]))      # objects first (Fig. 8 left)


def region_purity_overview(table, baseline: str | None = None, metric: str = "purity", models=None):
    """Fig. 8: ``metric`` per block, one panel per (dataset, level) of ``table``
    (:func:`vitscope.sections.region_purity.compute`), one line per model (``models``: which; default all)."""
    panels = _panels(table)
    if not panels:
        raise ValueError("region_purity_overview: the table holds no model rows")
    names = [m for m in dict.fromkeys(table.model) if m != "noise" and (models is None or m in models)]
    fig, axes = new_figure(height=3.0, ncols=len(panels), sharey=True, squeeze=False)
    markers = "os^Dv<>p"
    trained = [m for m in names if m != baseline]
    for ax, (ds, level) in zip(axes[0], panels):
        sel = table[(table.dataset == ds) & (table.level == level)]
        if baseline is not None and baseline in names:
            base = sel[sel.model == baseline].sort_values("block")
            ax.plot(base.block, base[metric], "-", color="0.6", lw=3, zorder=1.5, label=f"{baseline} (untrained)")
        for i, m in enumerate(trained):
            rows = sel[sel.model == m].sort_values("block")
            if len(names) == 1 + (baseline in names) and metric == "purity":
                ax.fill_between(rows.block, rows.purity_low, rows.purity_high, color=f"C{i}", alpha=0.2, lw=0)
            ax.plot(rows.block, rows[metric], marker=markers[i % len(markers)], ms=3.5, color=f"C{i}", label=m)
        noise = sel[sel.model == "noise"]
        if not noise.empty:
            reference_line(ax, float(noise[metric].iloc[0]), NOISE_LABEL)
        blocks = sorted(sel[sel.model != "noise"].block.unique().astype(int))
        k = int(sel.k.iloc[0])
        ax.set(title=f"{ds}\n{LEVEL_NAMES[level]}, k = {k}", xlabel="block", xticks=blocks,
               ylim=(min(SCORE_LIMITS[0], float(table[metric].min()) - 0.02), SCORE_LIMITS[1]))
    axes[0, 0].set_ylabel(METRIC_NAMES[metric])
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=4, frameon=False)
    return finish(fig)

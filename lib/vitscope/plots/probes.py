"""OM Fig. 2: probe accuracy by probe depth (a) and by the intermediate block added to the final CLS (c).

Reads the ``summary`` table of :func:`vitscope.sections.probes.compute` (``model, probe, depth, layer, mean, std``).
"""
from __future__ import annotations

import pandas as pd

from .common import finish, new_figure, reference_line


def probe_accuracy_panels(summary: pd.DataFrame, chance: float | None = None):
    """Two panels sharing the y-axis: (a) best-5 mean ± std accuracy against non-linear depth (0 = linear), one
    line per model; (b) the multi-layer probe against the intermediate block, with each model's linear probe as a
    dotted level. ``chance``: a dashed reference level (1 / classes)."""
    fig, (a, b) = new_figure(height=3.4, ncols=2, sharey=True)
    for i, (model, g) in enumerate(summary.groupby("model", sort=False)):
        colour = f"C{i}"
        depth = g[g.probe.isin(["linear", "non-linear"])].sort_values("depth")
        a.errorbar(depth.depth, depth["mean"], yerr=depth["std"], marker="o", capsize=3, color=colour, label=model)
        multi = g[g.probe == "multi-layer"].sort_values("layer")
        b.errorbar(multi.layer, multi["mean"], yerr=multi["std"], marker="o", capsize=3, color=colour, label=model)
        b.axhline(float(depth[depth.probe == "linear"]["mean"].iloc[0]), color=colour, linestyle=":", linewidth=1)
    a.set(xlabel="non-linear blocks (0 = linear probe)", ylabel="top-1 accuracy (best-5 mean ± std)",
          title="(a) probe depth, final CLS")
    b.set(xlabel="intermediate block added to the final CLS", title="(c) final + intermediate CLS")
    a.set_xticks(sorted(summary.depth.unique()))
    b.set_xticks(sorted(summary[summary.probe == "multi-layer"].layer.unique()))
    if chance is not None:
        reference_line(a, chance, "chance")
        reference_line(b, chance, "chance")
    a.set_ylim(0, 1)
    a.legend(fontsize="small")
    return finish(fig)

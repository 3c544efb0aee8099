"""The house style of every figure, and helpers shared by the plot families.

A figure is drawn at its final size: at most ``MAX_FIGURE_WIDTH_IN`` wide at ``FIGURE_DPI``, so the PNG is no
wider than the book's content column and the browser shows it at 100 %; tick labels are ``TICK_LABEL_PT`` points,
i.e. ``TICK_LABEL_PT * FIGURE_DPI / 72`` pixels on the page (the browser test reads these two constants).
Figures use matplotlib's constrained layout and are saved without ``bbox_inches="tight"``, which could grow a PNG
past its figure size (a legend outside the axes) and get it shrunk on the page.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import matplotlib.pyplot as plt

#: Pixels per inch of every saved figure (and of the inline backend inside :func:`house_style`).
FIGURE_DPI = 100
#: Tick-label size in points: 9 pt at 100 dpi is 12.5 px, readable even if a browser shrinks the image to 80 %.
TICK_LABEL_PT = 9
#: Axis labels, titles and legends are one point larger than tick labels.
LABEL_PT = TICK_LABEL_PT + 1
#: The widest figure shown at 100 % in the book's content column: a figure gets 672 px of the 688 px column in a
#: 1280 px window (sphinx-book-theme 1.x); wider PNGs are scaled down.
MAX_FIGURE_WIDTH_IN = 6.7
#: Colour and style of a reference level (uniform attention, chance, a random init's value).
REFERENCE_STYLE = {"color": "0.25", "ls": "--", "lw": 1.2, "zorder": 2.5}
#: Legend label of the Gaussian-noise-features reference (k-NN, retrieval, correspondence: TM §6's random baseline).
NOISE_FEATURES_LABEL = "Gaussian noise features"

HOUSE_RC = {
    "figure.dpi": FIGURE_DPI, "savefig.dpi": FIGURE_DPI, "figure.constrained_layout.use": True,
    "font.size": LABEL_PT, "axes.labelsize": LABEL_PT, "axes.titlesize": LABEL_PT, "legend.fontsize": TICK_LABEL_PT,
    "legend.title_fontsize": TICK_LABEL_PT, "xtick.labelsize": TICK_LABEL_PT, "ytick.labelsize": TICK_LABEL_PT,
    "figure.titlesize": LABEL_PT + 1, "axes.grid": True, "grid.alpha": 0.3,
}


@contextlib.contextmanager
def house_style():
    """rcParams of the house style for the figures created inside the ``with`` block."""
    with plt.rc_context(HOUSE_RC):
        yield


def new_figure(width: float = MAX_FIGURE_WIDTH_IN, height: float = 3.2, nrows: int = 1, ncols: int = 1, **kwargs):
    """``plt.subplots`` in the house style (constrained layout, ``FIGURE_DPI``), never wider than the column.

    ``kwargs`` go to ``plt.subplots`` (``sharey``, ``squeeze``...). Raises ``ValueError`` if ``width`` exceeds
    ``MAX_FIGURE_WIDTH_IN``: make the figure taller (more rows) instead."""
    if width > MAX_FIGURE_WIDTH_IN + 1e-9:
        raise ValueError(f"figure width {width} in exceeds MAX_FIGURE_WIDTH_IN={MAX_FIGURE_WIDTH_IN} in (the book's "
                         "content column); use more rows of panels instead of a wider figure")
    with house_style():
        return plt.subplots(nrows, ncols, figsize=(width, height), dpi=FIGURE_DPI, layout="constrained", **kwargs)


def finish(fig):
    """Apply the house fonts to every axis of ``fig`` (seaborn and twin axes included) and return it."""
    for ax in fig.axes:
        ax.tick_params(labelsize=TICK_LABEL_PT)
        ax.xaxis.label.set_fontsize(LABEL_PT)
        ax.yaxis.label.set_fontsize(LABEL_PT)
        ax.title.set_fontsize(LABEL_PT)
        if ax.get_legend() is not None:
            for text in ax.get_legend().get_texts():
                text.set_fontsize(TICK_LABEL_PT)
    for legend in fig.legends:
        for text in legend.get_texts():
            text.set_fontsize(TICK_LABEL_PT)
    return fig


def reference_line(ax, value: float, label: str):
    """A dashed horizontal reference level (uniform attention, chance, the random init) with a legend label."""
    return ax.axhline(value, label=label, **REFERENCE_STYLE)


def zero_based_limits(top: float, headroom: float = 0.05) -> tuple[float, float]:
    """Y-limits ``(0, top * (1 + headroom))``: an axis that starts at zero cannot draw a 0.0005 wobble as a rise
    and fall. Pass the same ``top`` on every page that shows the quantity (e.g. a multiple of the reference)."""
    if not top > 0:
        raise ValueError(f"zero_based_limits: top must be a positive number, got {top!r}")
    return 0.0, top * (1 + headroom)


def save_figure(fig, path, dpi: int = FIGURE_DPI) -> Path:
    """Save ``fig`` as PNG at its figure size (the book references saved files, so figures survive without a
    kernel). No ``bbox_inches="tight"``: the PNG is exactly figure size x ``dpi`` pixels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


#: Line style of the untrained baseline model: grey and thinner, so trained models stand out against it.
BASELINE_STYLE = {"color": "0.55", "lw": 1.6, "ls": "-", "marker": "."}


def model_colours(models) -> dict:
    """``{name: colour}``: one tab10 colour per name, in the order given (the cycle repeats past ten names). Pass
    the trained models only, so the colours do not shift when an untrained baseline joins a figure."""
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def model_line_style(model: str, baseline: str | None, colour) -> dict:
    """``ax.plot`` keywords for one model's line: :data:`BASELINE_STYLE` for the untrained ``baseline``, otherwise
    ``colour`` (from :func:`model_colours`) with dots on the points."""
    if model == baseline:
        return dict(BASELINE_STYLE)
    return {"color": colour, "lw": 1.8, "marker": "o", "ms": 3}


def legend_below(fig, ax, ncols: int = 4):
    """One legend for the whole figure, built from ``ax``'s lines and placed under the panels, so it never hides a
    line; at most ``ncols`` entries per row."""
    handles, labels = ax.get_legend_handles_labels()
    return fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, len(labels)))

"""Numbered figures with captions and alt text, shown on a page as a MyST ``{figure}`` directive.

:func:`show_figure` saves the figure as a PNG beside the executed notebook, closes it (so the inline backend does
not show it a second time) and returns Markdown that MyST-NB renders (``nb_render_markdown_format: myst``):

.. code-block:: markdown

    ```{figure} figures/cka_grid.png
    :alt: Heatmaps of ...

    **Figure 2.** Minibatch CKA between ...
    ```

Sphinx copies an image referenced by a path relative to the executed notebook (``book/generated/...``) into the
site. Numbers count within one page (one kernel); no ``:name:`` label is written unless asked for, because a
label in a per-model template would repeat on every model's page and fail the ``-W`` build ("duplicate label").
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown

from ..plots.common import save_figure

_counter = {"n": 0}


def reset_numbering(start: int = 0) -> None:
    """Restart the page's figure numbers (the next figure is ``start + 1``)."""
    _counter["n"] = start


def next_number() -> int:
    """The number the next :func:`show_figure` call will give (for prose that announces it)."""
    return _counter["n"] + 1


def _one_line(text: str, what: str) -> str:
    text = " ".join(str(text).split())
    if not text:
        raise ValueError(f"a figure needs a non-empty {what}: say what the figure shows")
    return text


def figure_markdown(path: str | Path, caption: str, alt: str, number: int, name: str | None = None) -> str:
    """The MyST ``{figure}`` directive for an image file ``path`` (relative to the page), captioned
    ``**Figure <number>.** <caption>`` with ``alt`` as the image's alternative text."""
    alt, caption = _one_line(alt, "alt text"), _one_line(caption, "caption")
    if alt == str(path) or alt.endswith((".png", ".svg")):
        raise ValueError(f"alt text {alt!r} is a file name; describe what the figure shows to a reader who cannot "
                         "see it")
    options = [f":alt: {alt}"]
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
            raise ValueError(f"figure name {name!r} must be a label of letters, digits, '-', '_', '.' or ':'")
        options.append(f":name: {name}")
    fence = "````"        # longer than any ``` the caption might quote
    return (f"{fence}{{figure}} {Path(path).as_posix()}\n" + "\n".join(options)
            + f"\n\n**Figure {number}.** {caption}\n{fence}\n")


def show_figure(fig, path: str | Path, caption: str, alt: str, name: str | None = None) -> Markdown:
    """Save ``fig`` to ``path`` (a PNG relative to the notebook's folder), close it, and return the numbered,
    captioned figure as Markdown for the page (the cell's last expression, or ``display(...)``).

    ``alt``: what the figure shows, for a reader who cannot see it (not a file name). ``name``: an optional
    ``:name:`` label; in a per-model template make it model-specific."""
    path = Path(path)
    if path.is_absolute():
        raise ValueError(f"figure path {path} must be relative to the notebook's folder, so the book finds it")
    markdown = figure_markdown(path, caption, alt, next_number(), name)
    save_figure(fig, path)
    plt.close(fig)
    _counter["n"] += 1
    return Markdown(markdown)

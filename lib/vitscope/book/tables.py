"""Tables formatted once: one formatter per column, no raw ``nan``, long text wrapped inside the content column.

``format_table`` returns a pandas ``Styler`` built with a single ``.format`` call (chained ``Styler.format`` calls
replace each other's formatters: the Mini-zoo page lost its percent format that way). The Styler renders the full
text of every cell (a plain DataFrame's HTML cuts strings at ``display.max_colwidth``), and its CSS lets the
``wrap`` columns break anywhere (URLs, file names, notes) while numbers never break, so the table fits the column.
"""
from __future__ import annotations

import math
import numbers
import re

import pandas as pd

#: What a missing value shows (never ``nan`` or ``None``).
MISSING = "–"
#: Table class, so the book's CSS (or a browser test) can find the tables formatted here.
TABLE_CLASS = "vitscope-table"


def _signed_zero_free(format_cell):
    """Wrap a cell formatter so a tiny negative value never shows as ``-0.000`` (or ``-0.0%``)."""
    def cell(value):
        text = format_cell(value) if callable(format_cell) else format_cell.format(value)
        return text[1:] if re.fullmatch(r"-0(\.0*)?(e[+-]?0+)?%?", text) else text
    return cell


def _formatter(kind):
    """A cell formatter from ``"percent"``, ``"percent:<digits>"``, an int (fixed decimals), a format string
    (``"{:.0e}"``) or a callable."""
    if callable(kind):
        return kind
    if isinstance(kind, bool) or not isinstance(kind, (int, str)):
        raise TypeError(f"column format {kind!r}: expected 'percent', 'percent:<digits>', an int, a format string "
                        "or a callable")
    if isinstance(kind, int):
        return f"{{:.{kind}f}}"
    if kind == "percent" or kind.startswith("percent:"):
        digits = int(kind.split(":")[1]) if ":" in kind else 1
        return f"{{:.{digits}%}}"
    if "{" not in kind:
        raise ValueError(f"column format {kind!r} is not 'percent', 'percent:<digits>' or a format string like "
                         "'{:.3f}'")
    return kind


def _default(value, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{value:d}"
    if isinstance(value, numbers.Real):
        return f"{value:.{decimals}f}"
    return str(value)


def format_table(frame: pd.DataFrame, formats: dict | None = None, *, decimals: int = 3, wrap=(),
                 caption: str | None = None, hide_index: bool = False):
    """A ``Styler`` of ``frame`` with every column formatted once.

    ``formats``: ``{column: "percent" | "percent:<digits>" | <decimals int> | "{...}" | callable}``; other
    columns: integers as integers, reals with ``decimals`` places, booleans as yes/no, text as is. Missing values
    show as ``MISSING``. Text wraps at spaces and hyphens; ``wrap`` columns may also break inside a long token
    (URLs, file names, identifiers); numeric and formatted columns never break."""
    formats = dict(formats or {})
    unknown = sorted(set(formats) - set(frame.columns), key=str)
    if unknown or set(wrap) - set(frame.columns):
        missing = unknown + sorted(set(wrap) - set(frame.columns), key=str)
        raise KeyError(f"format_table: no column(s) {missing} in the table (columns: {list(frame.columns)})")
    cell = {c: _signed_zero_free(_formatter(formats[c]) if c in formats else (lambda v: _default(v, decimals)))
            for c in frame.columns}
    styler = frame.style.format(cell, na_rep=MISSING)
    if hide_index:
        styler = styler.hide(axis="index")
    styles = [{"selector": "", "props": "border-collapse: collapse; font-size: 0.85em; max-width: 100%;"},
              {"selector": "td, th", "props": "padding: 0.2em 0.5em; vertical-align: top;"},
              {"selector": "th.col_heading", "props": "text-align: left;"}]
    for j, c in enumerate(frame.columns):
        if pd.api.types.is_numeric_dtype(frame[c]) or c in formats:     # numbers never break
            styles.append({"selector": f"td.col{j}", "props": "white-space: nowrap;"})
        elif c in wrap:                                                 # long tokens (URLs, file names) may break
            styles.append({"selector": f"td.col{j}", "props": "overflow-wrap: anywhere; min-width: 9em;"})
    styler = styler.set_table_styles(styles).set_table_attributes(f'class="{TABLE_CLASS}"')
    if caption:
        styler = styler.set_caption(caption)
    return styler

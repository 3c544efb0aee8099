"""Completion stamps of written folders (the synthetic twins): ``<folder>/synthetic.json`` records the arguments a
folder was written with, and is written last, atomically. A folder whose stamp records the same arguments is
complete and is not written again; a writer killed half-way leaves no stamp (or the old one, for other arguments),
so the next call writes it again. The writers also hold ``locks.one_writer_at_a_time``: one process writes while
the others wait and then find the stamp."""
from __future__ import annotations

import json
from pathlib import Path

STAMP_NAME = "synthetic.json"


def _canonical(meta: dict) -> dict:
    """``meta`` as JSON reads it back (tuples become lists), so a stamp compares equal to the arguments it records."""
    return json.loads(json.dumps(meta))


def is_complete(folder: str | Path, meta: dict) -> bool:
    """Whether ``folder`` holds a stamp recording exactly ``meta``."""
    stamp = Path(folder) / STAMP_NAME
    if not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()) == _canonical(meta)
    except json.JSONDecodeError:     # a damaged stamp: write the folder again
        return False


def mark_complete(folder: str | Path, meta: dict) -> None:
    """Write ``folder``'s stamp for ``meta`` (atomically: a reader sees the old stamp or the new one, never half)."""
    stamp = Path(folder) / STAMP_NAME
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps(_canonical(meta), indent=1))
    tmp.replace(stamp)


__all__ = ["STAMP_NAME", "is_complete", "mark_complete"]

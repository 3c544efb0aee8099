"""Shared wording for errors about unknown names (models, profiles, manifests)."""
from __future__ import annotations

import difflib


def did_you_mean(name, known, cutoff: float = 0.6) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``known`` to ``name``, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=cutoff)
    return f" Did you mean {close[0]!r}?" if close else ""

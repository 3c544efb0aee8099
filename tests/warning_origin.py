"""Where a warning points, read so that it holds under mutmut too (not a test module: pytest collects ``test_*.py``
only). mutmut calls every library function through its trampoline, which is then the library's caller."""
from __future__ import annotations

import linecache
from pathlib import Path


def warned_at_the_call(w, caller_file: str) -> bool:
    """The warning ``w`` names the line that called the library (``stacklevel=2``): ``caller_file`` (the test's
    ``__file__``), or, under mutmut, the trampoline's line that calls the library function. A deeper stacklevel
    lands on the trampoline's own caller and a missing one on the library's file: both fail."""
    if w.filename == caller_file:
        return True
    line = linecache.getline(w.filename, w.lineno)
    return "mutmut" in Path(w.filename).parts and ("orig_func(" in line or "mutated_func(" in line)

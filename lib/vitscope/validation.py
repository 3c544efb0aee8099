"""Checks of scalar arguments shared by every layer (data writers, extraction, kernels, sections).

Each raises ``ValueError`` whose message names the argument, what was expected and what was given. They live at the
bottom of the package (no torch, no other vitscope module) so that the data layer can use them without importing
the kernels above it; :mod:`vitscope.kernels.validation` re-exports them beside its tensor checks.
"""
from __future__ import annotations

import numbers


def check_int(x, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer (not a bool) in ``[minimum, maximum]``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < minimum \
            or (maximum is not None and x > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be an int {bound}; got {x!r}")
    return int(x)


def check_positive(x, name: str) -> float:
    """A real number > 0."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not x > 0:
        raise ValueError(f"{name} must be a number > 0; got {x!r}")
    return float(x)


def check_choice(x, name: str, choices) -> str:
    """One of ``choices``."""
    if x not in choices:
        raise ValueError(f"{name}={x!r} is unknown; choose from {tuple(choices)}")
    return x


__all__ = ["check_choice", "check_int", "check_positive"]

"""Where vitscope keeps things on disk: one place resolves the project root, the cache and the data.

Every other module asks here, so a notebook executed from ``book/generated/...`` (papermill's working
directory) reads and writes the same cache as the command line. Three environment variables override:

=====================  ===========================================  ====================================
variable               what                                         default
=====================  ===========================================  ====================================
``VITSCOPE_HOME``      the project root (profiles/, notebooks/)     the checkout vitscope is installed from
``VITSCOPE_CACHE``     extraction products, derived results          ``<project root>/cache``
``VITSCOPE_DATA``      synthetic twins and relative dataset roots   ``<cache>/data``
=====================  ===========================================  ====================================

Relative values are resolved against the project root, never against the current working directory.
"""
from __future__ import annotations

import os
from pathlib import Path

#: The checkout this package was installed from (editable install: ``lib/vitscope`` -> the repository root).
_CHECKOUT = Path(__file__).resolve().parents[2]


def _from_env(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    if not value:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else _CHECKOUT / path


def project_root() -> Path:
    """The repository root: ``$VITSCOPE_HOME`` if set, else the checkout this package was installed from."""
    return _from_env("VITSCOPE_HOME", _CHECKOUT)


def cache_root() -> Path:
    """Extraction products and derived results: ``$VITSCOPE_CACHE``, else ``<project root>/cache``."""
    return _from_env("VITSCOPE_CACHE", project_root() / "cache")


def data_root() -> Path:
    """Synthetic twins and relative dataset roots of profiles: ``$VITSCOPE_DATA``, else ``<cache>/data``."""
    return _from_env("VITSCOPE_DATA", cache_root() / "data")

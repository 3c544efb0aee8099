"""Shared steps of the section pipelines: loading a model with its cache identity."""
from __future__ import annotations

from .. import models
from ..models.registry import file_digest  # noqa: F401 (kept importable from here)


def model_identity(name: str, weights=None) -> dict:
    """Everything about a model that changes its features, for cache keys (``ModelCfg.identity``)."""
    return models.get_cfg(name).identity(weights)


def load_for_analysis(name: str, weights=None, device="cpu"):
    """``(model, cfg, identity)`` for a registry model, in eval mode on ``device``."""
    cfg = models.get_cfg(name)
    model = models.load_model(name, weights=weights, device=device)
    return model, cfg, model_identity(name, weights)

"""Shared steps of the section pipelines: loading a model with its cache identity."""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

from .. import models


def file_digest(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_identity(name: str, weights=None) -> dict:
    """Everything about a model that changes its features, for cache keys."""
    cfg = models.get_cfg(name)
    ident = {"name": name, "arch": cfg.arch, "arch_kwargs": dict(cfg.arch_kwargs), "converter": cfg.converter}
    if weights is not None:
        ident["weights"] = "sha256:" + file_digest(Path(weights))
    elif cfg.source == "package":
        ident["weights"] = "sha256:" + file_digest(models.packaged_path(cfg))
    elif cfg.source == "random":
        ident["weights"] = f"random:seed={cfg.seed}"
    elif cfg.source == "timm":
        ident["weights"] = f"timm:{cfg.arch}.{cfg.timm_tag}"
    else:
        ident["weights"] = f"url:{cfg.url}"
    ident["preprocess"] = asdict(cfg.preprocess)
    return ident


def load_for_analysis(name: str, weights=None, device="cpu"):
    """``(model, cfg, identity)`` for a registry model, in eval mode on ``device``."""
    cfg = models.get_cfg(name)
    model = models.load_model(name, weights=weights, device=device)
    return model, cfg, model_identity(name, weights)

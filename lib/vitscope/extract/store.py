"""The feature store: one safetensors file per (extraction key, product), with a JSON sidecar holding the key.

A key includes everything that changes a result (model and weights identity, dataset selection, transform,
order, batch size, the product's parameters and version). The file name is a hash of the key, so a changed
key simply misses; the sidecar is compared in full on every hit, so a hash collision or a hand-edited file
can never serve a stale result.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def key_hash(key: dict) -> str:
    """A stable 16-hex-digit digest of a JSON-serialisable key."""
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def default_root() -> Path:
    """``$VITSCOPE_CACHE`` if set, else ``<cwd>/cache``."""
    return Path(os.environ.get("VITSCOPE_CACHE", "cache"))


class FeatureStore:
    """A directory of cached extraction products: ``<root>/<model>/<product>-<hash>.safetensors``."""

    def __init__(self, root=None):
        self.root = Path(root) if root is not None else default_root()

    def _paths(self, model: str, product: str, key: dict) -> tuple[Path, Path]:
        stem = self.root / model / f"{product}-{key_hash(key)}"
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    def get(self, model: str, product: str, key: dict) -> dict[str, torch.Tensor] | None:
        """The stored tensors for ``key``, or ``None`` if absent or stored under a different key."""
        data, meta = self._paths(model, product, key)
        if not (data.is_file() and meta.is_file()):
            return None
        stored = json.loads(meta.read_text())
        if stored.get("key") != json.loads(json.dumps(key, sort_keys=True, default=str)):
            return None
        return load_file(data)

    def put(self, model: str, product: str, key: dict, tensors: dict[str, torch.Tensor], info: dict | None = None):
        """Write tensors and their key; the sidecar is written last so a crash never leaves a valid-looking entry."""
        data, meta = self._paths(model, product, key)
        data.parent.mkdir(parents=True, exist_ok=True)
        meta.unlink(missing_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(data))
        meta.write_text(json.dumps({"key": key, "info": info or {}}, indent=1, sort_keys=True, default=str))
        return data

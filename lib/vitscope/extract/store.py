"""The feature store: one safetensors file per (extraction key, product), with a JSON sidecar holding the key.

A key includes everything that changes a result (model and weights identity, dataset selection, transform,
order, batch size, the product's parameters and version). The file name is a hash of the key, so a changed
key simply misses; the sidecar is compared in full on every hit, so a hash collision or a hand-edited file
can never serve a stale result. The sidecar also holds the data file's sha256: a truncated or corrupted file
is detected on read, reported as a miss, and recomputed, never read as data.

Writes are atomic (temporary file, then rename; the sidecar last), so a killed process never leaves a
valid-looking entry. The root is :func:`vitscope.paths.cache_root` unless given.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..paths import cache_root

#: Environment variable: when set, every entry read is appended to this file (the book's dependency tracking).
READ_LOG_ENV = "VITSCOPE_READ_LOG"


def key_hash(key: dict) -> str:
    """A stable 16-hex-digit digest of a JSON-serialisable key."""
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A 16-hex-digit digest of tensors' dtypes, shapes and bytes: the identity of a derived result's input."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def default_root() -> Path:
    """The project's cache (:func:`vitscope.paths.cache_root`), whatever the working directory."""
    return cache_root()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _normalised(key: dict) -> dict:
    return json.loads(json.dumps(key, sort_keys=True, default=str))


class FeatureStore:
    """A directory of cached extraction products: ``<root>/<model>/<product>-<hash>.safetensors``."""

    def __init__(self, root=None):
        self.root = Path(root) if root is not None else default_root()

    def _paths(self, model: str, product: str, key: dict) -> tuple[Path, Path]:
        stem = self.root / model / f"{product}-{key_hash(key)}"
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    def get(self, model: str, product: str, key: dict) -> dict[str, torch.Tensor] | None:
        """The stored tensors for ``key``, or ``None`` if absent, stored under a different key, or corrupt."""
        data, meta = self._paths(model, product, key)
        if not (data.is_file() and meta.is_file()):
            return None
        try:
            stored = json.loads(meta.read_text())
        except json.JSONDecodeError:
            warnings.warn(f"Unreadable cache sidecar {meta}: recomputing the entry.", stacklevel=2)
            return None
        if stored.get("key") != _normalised(key):
            return None
        if stored.get("sha256") not in (None, _sha256(data)):
            warnings.warn(f"Cache file {data} does not match its recorded checksum (truncated or corrupted): "
                          "recomputing the entry.", stacklevel=2)
            return None
        log = os.environ.get(READ_LOG_ENV)
        if log:
            with open(log, "a") as f:
                f.write(f"{meta}\n")
        return load_file(data)

    def memo(self, model: str, product: str, key: dict, compute) -> dict[str, torch.Tensor]:
        """The entry for ``key``, computing and storing ``compute()`` (a dict of tensors) on a miss.

        For derived results (k-means assignments, re-evaluations): put the digest of their inputs
        (:func:`tensor_digest`) and every setting that changes them in ``key``."""
        hit = self.get(model, product, key)
        if hit is not None:
            return hit
        tensors = compute()
        self.put(model, product, key, tensors)
        return tensors

    def put(self, model: str, product: str, key: dict, tensors: dict[str, torch.Tensor], info: dict | None = None):
        """Write tensors and their key atomically; the sidecar (with the data's checksum) is written last."""
        data, meta = self._paths(model, product, key)
        data.parent.mkdir(parents=True, exist_ok=True)
        meta.unlink(missing_ok=True)
        tmp = data.with_name(f".{data.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        tmp.replace(data)
        sidecar = {"key": key, "info": info or {}, "sha256": _sha256(data)}
        tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sidecar, indent=1, sort_keys=True, default=str))
        tmp.replace(meta)
        log = os.environ.get(READ_LOG_ENV)
        if log:   # a page that computed an entry depends on it as much as one that read it
            with open(log, "a") as f:
                f.write(f"{meta}\n")
        return data

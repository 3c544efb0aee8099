"""The feature store: one safetensors file per (extraction key, product), with a JSON sidecar holding the key.

A key includes everything that changes a result (model and weights identity, dataset selection, transform,
order, batch size, the product's parameters and version). The file name is a hash of the key, so a changed
key simply misses; the sidecar is compared in full on every hit, so a hash collision or a hand-edited file
can never serve a stale result. The sidecar also holds the data file's sha256: a truncated or corrupted file
is detected on read, reported as a miss, and recomputed, never read as data.

Writes are atomic (temporary file, then rename; the sidecar last), so a killed process never leaves a
valid-looking entry. The root is :func:`vitscope.paths.cache_root` unless given.

**One computation per entry.** Get-or-compute paths (:meth:`FeatureStore.memo`, and :func:`vitscope.extract.extract`
through :meth:`FeatureStore.locked`) hold an exclusive lock on ``<entry>.lock`` while they compute: a second process
asking for the same missing entry waits, then reads what the first stored. The lock is ``fcntl.flock``: advisory
(only vitscope's own get-or-compute paths take it; a plain :meth:`~FeatureStore.put` does not) and reliable on local
filesystems only (NFS and other network filesystems may not honour it). The kernel releases it when its holder
dies, so a lock file left behind by a killed process blocks nobody; lock files are left in place on purpose
(deleting one while another process waits on it would let a third lock a new file). Where ``flock`` is unavailable
(Windows, or a filesystem that refuses it) both processes compute and the atomic renames keep the entry whole.

**Shards.** A long extraction saves its products' partial state now and then (:meth:`FeatureStore.put_shard`:
``<model>/shard-<hash>.safetensors``, written atomically, keyed and checksummed like an entry) so a killed run
resumes from the last shard (:meth:`FeatureStore.get_shard`) instead of from the start.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..locks import LOCK_TIMEOUT_S, file_lock  # noqa: F401  (file_lock: part of this module's API)
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


def _flatten(obj, tensors: dict[str, torch.Tensor]):
    # A nested state (dicts with str keys, lists, tuples, tensors, numbers, str, None) as a JSON skeleton whose
    # tensors are references into ``tensors``: safetensors then stores the state without pickle.
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()                 # a view into a larger buffer: safetensors refuses shared storage
        tensors[f"t{len(tensors)}"] = t
        return {"$t": f"t{len(tensors) - 1}"}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) and not k.startswith("$") for k in obj):
            raise TypeError(f"state dicts need str keys not starting with '$'; got {sorted(map(repr, obj))[:5]}")
        return {k: _flatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {"$tuple": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a shard; a product's state holds tensors, numbers, "
                    "str, None and dicts/lists/tuples of them")


def _unflatten(skeleton, tensors: dict[str, torch.Tensor]):
    if isinstance(skeleton, dict):
        if "$t" in skeleton:
            return tensors[skeleton["$t"]]
        if "$tuple" in skeleton:
            return tuple(_unflatten(v, tensors) for v in skeleton["$tuple"])
        return {k: _unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_unflatten(v, tensors) for v in skeleton]
    return skeleton


class FeatureStore:
    """A directory of cached extraction products: ``<root>/<model>/<product>-<hash>.safetensors``.

    ``lock_timeout``: seconds to wait for another process computing the same entry (:data:`LOCK_TIMEOUT_S`).
    """

    def __init__(self, root=None, lock_timeout: float = LOCK_TIMEOUT_S):
        self.root = Path(root) if root is not None else default_root()
        self.lock_timeout = float(lock_timeout)

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
        (:func:`tensor_digest`) and every setting that changes them in ``key``. Two processes missing the same
        entry compute it once: the second waits for the entry's lock, then reads it (module docstring)."""
        hit = self.get(model, product, key)
        if hit is not None:
            return hit
        with self.locked([(model, product, key)]):
            hit = self.get(model, product, key)        # computed by another process while this one waited
            if hit is not None:
                return hit
            tensors = compute()
            self.put(model, product, key, tensors)
        return tensors

    def lock_path(self, model: str, product: str, key: dict) -> Path:
        """The lock file of an entry: ``<root>/<model>/<product>-<hash>.lock``."""
        return self._paths(model, product, key)[0].with_suffix(".lock")

    @contextmanager
    def locked(self, entries):
        """Hold the locks of ``entries`` ``[(model, product, key)]`` (module docstring) for the ``with`` block.

        Locks are taken in path order, so two processes locking overlapping sets cannot deadlock. Check the store
        again inside the block: another process may have computed an entry while this one waited."""
        paths = sorted({self.lock_path(*entry) for entry in entries})
        with ExitStack() as stack:
            for path in paths:
                stack.enter_context(file_lock(path, self.lock_timeout))
            yield

    # ------------------------------------------------------------------------------------------------ shards
    def shard_path(self, model: str, key: dict) -> Path:
        return self.root / model / f"shard-{key_hash(key)}.safetensors"

    def put_shard(self, model: str, key: dict, state, next_batch: int) -> Path:
        """Save an extraction's partial ``state`` (nested dicts/lists of tensors and numbers) and the index of the
        next batch to process, atomically, under ``key`` (compared in full by :meth:`get_shard`)."""
        path = self.shard_path(model, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        skeleton = _flatten(state, tensors)
        meta = {"key": json.dumps(_normalised(key), sort_keys=True), "skeleton": json.dumps(skeleton),
                "next_batch": str(int(next_batch)), "digest": tensor_digest(*tensors.values())}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    def get_shard(self, model: str, key: dict):
        """``(state, next_batch)`` saved by :meth:`put_shard` under ``key``, or ``None`` if absent, saved under
        another key, or damaged (checked against its digest; reported, never used)."""
        path = self.shard_path(model, key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if json.loads(meta["key"]) != _normalised(key):
                return None
            if meta["digest"] != tensor_digest(*(tensors[f"t{i}"] for i in range(len(tensors)))):
                raise ValueError("digest mismatch")
            return _unflatten(json.loads(meta["skeleton"]), tensors), int(meta["next_batch"])
        except Exception as err:        # noqa: BLE001 -- whatever is wrong with a shard, starting over is safe
            warnings.warn(f"Ignoring the damaged extraction shard {path} ({type(err).__name__}: {err}): the "
                          "extraction starts from its first batch.", stacklevel=2)
            return None

    def drop_shard(self, model: str, key: dict) -> None:
        """Remove the shard of ``key`` (its extraction is complete)."""
        self.shard_path(model, key).unlink(missing_ok=True)

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

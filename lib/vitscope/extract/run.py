"""Run one forward pass per (model, dataset, transform) and feed every requested product from it."""
from __future__ import annotations

import hashlib
import importlib
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .. import __version__
from ..validation import check_int
from .capture import has_cls_token
from .cnn_capture import capture_for
from .products import Product
from .store import FeatureStore

#: Consecutive examples per forward pass; also the minibatch of minibatch CKA (OM App. B.1: 32).
DEFAULT_BATCH_SIZE = 32

#: Packages whose version can change an extracted number; each one's version is part of every cache key
#: (with vitscope's own and the product's). Packages that cannot change a number (tqdm, ...) stay out.
KEY_PACKAGES = ("torch", "timm")

#: Opt-in reduced-precision forward passes (``autocast=``); the name is part of the cache key.
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}

#: Default seconds between two shards of an extraction (``shard_seconds=``): a killed run loses at most about this.
SHARD_SECONDS = 60.0
#: A shard is never written sooner than this many times the last write took: shards cost under 5 % of a run.
_SHARD_COST_RATIO = 20


def library_versions() -> dict[str, str]:
    """Versions that enter every cache key: :data:`KEY_PACKAGES` and vitscope."""
    return {**{name: str(importlib.import_module(name).__version__) for name in KEY_PACKAGES},
            "vitscope": __version__}


def dataset_identity(dataset) -> dict:
    """What identifies a selected subset on disk: manifest, selection, and a digest of the selected files."""
    digest = hashlib.sha256()
    root = Path(dataset.root)
    for path, label in dataset.samples:
        st = path.stat()
        digest.update(f"{path.relative_to(root)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return {"manifest": dataset.manifest.name, "per_class": dataset.per_class, "classes": len(dataset.classes),
            "n": len(dataset), "files": digest.hexdigest()[:16]}


def example_order(n: int, order: str, seed: int) -> torch.Tensor:
    """Dataset indices in extraction order.

    ``"shuffled"`` (default): a fixed random permutation, so each CKA minibatch mixes classes as OM's sampling
    without replacement does. ``"sorted"``: dataset (class-major) order, as the Teaching Matters CKA code did.
    """
    if order == "sorted":
        return torch.arange(n)
    if order == "shuffled":
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"order={order!r}; choose 'shuffled' or 'sorted'.")


def _check_last_batch(n: int, batch_size: int, products: dict[str, Product]) -> None:
    # Each product owns its batch-size rule (GramMatrices: HSIC_1's minimum n); a general layer only asks.
    tail = n % batch_size
    for label, product in products.items():
        if 0 < tail < product.min_batch:
            raise ValueError(f"{n} images in batches of {batch_size} leave a last batch of {tail}, but product "
                             f"{label!r} ({type(product).__name__}) needs at least {product.min_batch} images per "
                             "batch. Change per_class, limit or batch_size.")


def extract(model, model_id: dict, dataset, products: dict[str, Product], *, transform_id: dict,
            store: FeatureStore | None = None, device="cpu", batch_size: int = DEFAULT_BATCH_SIZE,
            order: str = "shuffled", seed: int = 0, limit: int | None = None, progress: bool = True,
            num_workers: int = 0, pin_memory: bool | None = None, autocast: str | None = None,
            shard_seconds: float | None = SHARD_SECONDS, shard_batches: int | None = None,
            ) -> dict[str, dict[str, torch.Tensor]]:
    """Extract ``products`` for ``model`` on ``dataset``, reusing the store where the keys match.

    Args:
        model: a timm ViT, or a timm CNN (ResNet, ConvNeXt; :mod:`.cnn_capture`), in eval mode (moved to
            ``device`` here).
        model_id: identity of the model and its weights for the cache key, e.g.
            ``{"name": "dino", "weights": "<sha256>"}`` (see :func:`vitscope.sections.common.model_identity`).
        dataset: an :class:`~vitscope.data.ImageFolderSubset` with the model's eval transform.
        transform_id: what describes that transform in the cache key (:func:`vitscope.data.transform_key`).
        products: ``{label: Product}``; all missing ones are computed in ONE forward pass.
        batch_size: images per forward pass (and per CKA minibatch).
        order, seed: see :func:`example_order`.
        limit: keep only the first ``limit`` examples of that order (e.g. OM's 1024 sampled without
            replacement); ``None`` keeps all.
        num_workers: DataLoader worker processes decoding images (0: in this process; the products do not
            depend on it). On a GPU, use enough that JPEG decoding does not bound the forward pass.
        pin_memory: page-locked host batches for asynchronous copies; ``None``: on when ``device`` is CUDA.
        autocast: ``None`` (default: the model's own precision) or ``"bfloat16"`` / ``"float16"``: an opt-in
            reduced-precision forward (torch.autocast); its name is part of the cache key, never silently applied.
        shard_seconds, shard_batches: save the products' partial state (a shard, :meth:`FeatureStore.put_shard`)
            after a batch once ``shard_seconds`` have passed, or ``shard_batches`` batches, since the last shard
            (``None``: never by that rule). A killed extraction asked again for the same products resumes from its
            last shard, with the same result as an uninterrupted run; the shard is removed once the entries are
            stored. Products without ``state_fields`` are not resumable: their extractions write no shard.

    Missing entries are computed under their store locks (:meth:`FeatureStore.locked`): a second process asking
    for the same entries waits, then reads them.

    Returns ``{label: {tensor name: tensor}}`` plus ``"_meta": {"order": [N], "labels": [N]}``.
    """
    store = store or FeatureStore()
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast={autocast!r}; choose None (full precision) or one of {sorted(AUTOCAST_DTYPES)}")
    check_int(num_workers, "num_workers", 0)
    idx = example_order(len(dataset), order, seed)
    if limit is not None:
        if not 0 < limit <= len(idx):
            raise ValueError(f"limit={limit} but the dataset holds {len(idx)} images.")
        idx = idx[:limit]
    _check_last_batch(len(idx), batch_size, products)
    base = {"model": model_id, "dataset": dataset_identity(dataset), "batch_size": batch_size, "order": order,
            "seed": seed, "limit": limit, "transform": transform_id, "autocast": autocast,
            "versions": library_versions()}
    labels = dataset.labels[idx]
    name = model_id["name"]
    results, missing = {}, {}
    for label, product in products.items():
        key = {**base, **product.key()}
        hit = store.get(name, product.name, key)
        if hit is None:
            missing[label] = (product, key)
        else:
            results[label] = hit
    if missing:
        with store.locked([(name, product.name, key) for product, key in missing.values()]):
            for label, (product, key) in list(missing.items()):   # stored by another process while this one waited
                hit = store.get(name, product.name, key)
                if hit is not None:
                    results[label] = hit
                    del missing[label]
            if missing:
                shards = _Shards(store, name, missing, -(-len(idx) // batch_size), shard_batches, shard_seconds)
                loader = _loader(dataset, idx[shards.next_batch * batch_size:], batch_size, device, num_workers,
                                 pin_memory)
                results.update(_forward(model, loader, len(idx), missing, store, name, device, autocast, progress,
                                        shards))
    results["_meta"] = {"order": idx, "labels": labels}
    return results


def _loader(dataset, idx, batch_size, device, num_workers, pin_memory) -> DataLoader:
    on_cuda = str(device).startswith("cuda")
    return DataLoader(Subset(dataset, idx.tolist()), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=on_cuda if pin_memory is None else pin_memory,
                      persistent_workers=False, prefetch_factor=2 if num_workers else None)


class _Shards:
    """When an extraction saves its products' partial state, and its resumption (see :func:`extract`).

    The shard is keyed by every missing product's cache key (they share one forward pass), so only the same request
    resumes from it; the batches before ``next_batch`` are then neither loaded nor run."""

    def __init__(self, store: FeatureStore, model: str, missing: dict, n_batches: int, every_batches, every_seconds):
        for value, what in ((every_batches, "shard_batches"), (every_seconds, "shard_seconds")):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{what} must be > 0 or None (no shards by that rule); got {value!r}")
        self.store, self.model = store, model
        self.products = {label: product for label, (product, _) in missing.items()}
        self.key = {"shard_of": {label: key for label, (_, key) in missing.items()}}
        self.every_batches, self.every_seconds = every_batches, every_seconds
        self.enabled = (every_batches is not None or every_seconds is not None) and all(
            p.state_fields is not None for p in self.products.values())
        saved = store.get_shard(model, self.key) if self.enabled else None
        self.state, self.next_batch = saved if saved and 0 < saved[1] <= n_batches else (None, 0)
        self.resumed_from = self.next_batch

    def resume(self) -> None:
        """Load the saved states into the products (right after their ``start``)."""
        if self.state is not None:
            for label, product in self.products.items():
                product.load_state_dict(self.state[label])
            self.state = None
        self._last, self._due = self.next_batch, time.monotonic() + (self.every_seconds or 0)

    def after_batch(self) -> None:
        self.next_batch += 1
        if not self.enabled or not (
                (self.every_batches is not None and self.next_batch - self._last >= self.every_batches)
                or (self.every_seconds is not None and time.monotonic() >= self._due)):
            return
        t0 = time.monotonic()
        self.store.put_shard(self.model, self.key, {label: p.state_dict() for label, p in self.products.items()},
                             self.next_batch)
        now = time.monotonic()
        self._last, self._due = self.next_batch, now + max(self.every_seconds or 0, _SHARD_COST_RATIO * (now - t0))

    def done(self) -> None:
        if self.enabled:
            self.store.drop_shard(self.model, self.key)


def _check_cls(model, name: str, geometry: dict, missing: dict) -> None:
    if geometry.get("kind") == "cnn" or has_cls_token(model):          # a CNN's capture checks its own products
        return
    for label, (product, _) in missing.items():
        if product.reads_cls:
            raise ValueError(
                f"model {name!r} ({type(model).__name__}) has no CLS token (class_token=False, global_pool="
                f"{getattr(model, 'global_pool', '?')!r}, {geometry['n_prefix']} prefix token(s)), but product "
                f"{label!r} ({type(product).__name__}) reads the CLS token; drop it, or use a spatial reduction "
                "(e.g. GramMatrices(tokens='mean') or 'spatial')")


def _forward(model, loader, n_images, missing, store, name, device, autocast, progress, shards=None):
    products = [p for p, _ in missing.values()]
    capture_cls, geometry = capture_for(model, products)     # a timm ViT, or a timm CNN's blocks as tokens
    _check_cls(model, name, geometry, missing)
    model = model.to(device).eval()
    sites = set().union(*(p.sites for p in products))
    for product in products:
        product.start(geometry, n_images)
    if shards is not None:
        shards.resume()                             # the saved states of a killed run, if any
    consumers = {site: [p for p in products if site in p.sites] for site in sites}

    def sink(site, block, x):                       # called by each hook as its block runs
        for product in consumers[site]:
            product.consume(site, block, x)

    device_type = torch.device(device).type
    precision = (torch.autocast(device_type, dtype=AUTOCAST_DTYPES[autocast]) if autocast else nullcontext())
    t0 = time.perf_counter()
    with torch.inference_mode(), capture_cls(model, sites, sink=sink) as capture, precision:
        resumed = shards.resumed_from if shards is not None else 0
        for images, _, *extra in tqdm(loader, desc=f"extract {name}", disable=not progress, unit="batch",
                                      initial=resumed, total=resumed + len(loader)):
            # A dataset may return a third item, {name: [B, ...] tensor} per example (e.g. object masks); products
            # that need it read ``product.extras`` (an empty dict for datasets that return none).
            extras = {k: v.to(device, non_blocking=True) for k, v in (extra[0] if extra else {}).items()}
            for product in products:
                product.extras = extras
                product.begin_batch(images.shape[0])
            model.forward_features(images.to(device, non_blocking=True))
            capture.collect()                       # checks every site fired once per block
            for product in products:
                product.end_batch()
            if shards is not None:
                shards.after_batch()
    info = {"seconds": round(time.perf_counter() - t0, 2), "device": str(device), "geometry": geometry,
            "num_workers": loader.num_workers, "resumed_from_batch": resumed}
    out = {}
    for label, (product, key) in missing.items():
        out[label] = product.finish()
        store.put(name, product.name, key, out[label], info)
    if shards is not None:
        shards.done()
    return out

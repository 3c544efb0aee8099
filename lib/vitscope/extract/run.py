"""Run one forward pass per (model, dataset, transform) and feed every requested product from it."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .. import __version__
from .capture import Capture, vit_geometry
from .products import Product
from .store import FeatureStore

#: Consecutive examples per forward pass; also the minibatch of minibatch CKA (OM App. B.1: 32).
DEFAULT_BATCH_SIZE = 32


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


def extract(model, model_id: dict, dataset, products: dict[str, Product], *, transform_id: dict,
            store: FeatureStore | None = None, device="cpu", batch_size: int = DEFAULT_BATCH_SIZE, order: str = "shuffled", seed: int = 0,
            limit: int | None = None, progress: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """Extract ``products`` for ``model`` on ``dataset``, reusing the store where the keys match.

    Args:
        model: a timm ViT in eval mode (moved to ``device`` here).
        model_id: identity of the model and its weights for the cache key, e.g.
            ``{"name": "dino", "weights": "<sha256>"}`` (see :func:`vitscope.sections.common.model_identity`).
        dataset: an :class:`~vitscope.data.ImageFolderSubset` with the model's eval transform.
        transform_id: what describes that transform in the cache key (:func:`vitscope.data.transform_key`).
        products: ``{label: Product}``; all missing ones are computed in ONE forward pass.
        batch_size: images per forward pass (and per CKA minibatch).
        order, seed: see :func:`example_order`.
        limit: keep only the first ``limit`` examples of that order (e.g. OM's 1024 sampled without
            replacement); ``None`` keeps all.

    Returns ``{label: {tensor name: tensor}}`` plus ``"_meta": {"order": [N], "labels": [N]}``.
    """
    store = store or FeatureStore()
    idx = example_order(len(dataset), order, seed)
    if limit is not None:
        if not 0 < limit <= len(idx):
            raise ValueError(f"limit={limit} but the dataset holds {len(idx)} images.")
        idx = idx[:limit]
    n = len(idx)
    tail = n % batch_size
    if 0 < tail < 4:
        raise ValueError(f"{n} images in batches of {batch_size} leave a last batch of {tail}: minibatch CKA "
                         "needs at least 4 examples per batch. Change per_class or batch_size.")
    base = {"model": model_id, "dataset": dataset_identity(dataset), "batch_size": batch_size, "order": order,
            "seed": seed, "limit": limit, "transform": transform_id}
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
        results.update(_forward(model, dataset, idx, missing, store, name, device, batch_size, progress))
    results["_meta"] = {"order": idx, "labels": labels}
    return results


def _forward(model, dataset, idx, missing, store, name, device, batch_size, progress):
    geometry = vit_geometry(model)
    model = model.to(device).eval()
    sites = set().union(*(p.sites for p, _ in missing.values()))
    for product, _ in missing.values():
        product.start(geometry, len(idx))
    loader = DataLoader(Subset(dataset, idx.tolist()), batch_size=batch_size, shuffle=False, num_workers=0)
    t0 = time.perf_counter()
    with torch.inference_mode(), Capture(model, sites) as capture:
        for images, _ in tqdm(loader, desc=f"extract {name}", disable=not progress, unit="batch"):
            model.forward_features(images.to(device))
            captured = capture.collect()
            for product, _ in missing.values():
                product.update(captured)
    info = {"seconds": round(time.perf_counter() - t0, 2), "device": str(device), "vitscope": __version__,
            "geometry": geometry}
    out = {}
    for label, (product, key) in missing.items():
        out[label] = product.finish()
        store.put(name, product.name, key, out[label], info)
    return out

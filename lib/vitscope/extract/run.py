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
from .capture import Capture, vit_geometry
from .products import Product
from .store import FeatureStore

#: Consecutive examples per forward pass; also the minibatch of minibatch CKA (OM App. B.1: 32).
DEFAULT_BATCH_SIZE = 32

#: Packages whose version can change an extracted number; each one's version is part of every cache key
#: (with vitscope's own and the product's). Packages that cannot change a number (tqdm, ...) stay out.
KEY_PACKAGES = ("torch", "timm")

#: Opt-in reduced-precision forward passes (``autocast=``); the name is part of the cache key.
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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
            ) -> dict[str, dict[str, torch.Tensor]]:
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
        num_workers: DataLoader worker processes decoding images (0: in this process; the products do not
            depend on it). On a GPU, use enough that JPEG decoding does not bound the forward pass.
        pin_memory: page-locked host batches for asynchronous copies; ``None``: on when ``device`` is CUDA.
        autocast: ``None`` (default: the model's own precision) or ``"bfloat16"`` / ``"float16"``: an opt-in
            reduced-precision forward (torch.autocast); its name is part of the cache key, never silently applied.

    Returns ``{label: {tensor name: tensor}}`` plus ``"_meta": {"order": [N], "labels": [N]}``.
    """
    store = store or FeatureStore()
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast={autocast!r}; choose None (full precision) or one of {sorted(AUTOCAST_DTYPES)}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0; got {num_workers!r}")
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
        loader = _loader(dataset, idx, batch_size, device, num_workers, pin_memory)
        results.update(_forward(model, loader, len(idx), missing, store, name, device, autocast, progress))
    results["_meta"] = {"order": idx, "labels": labels}
    return results


def _loader(dataset, idx, batch_size, device, num_workers, pin_memory) -> DataLoader:
    on_cuda = str(device).startswith("cuda")
    return DataLoader(Subset(dataset, idx.tolist()), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=on_cuda if pin_memory is None else pin_memory,
                      persistent_workers=False, prefetch_factor=2 if num_workers else None)


def _forward(model, loader, n_images, missing, store, name, device, autocast, progress):
    geometry = vit_geometry(model)
    model = model.to(device).eval()
    products = [p for p, _ in missing.values()]
    sites = set().union(*(p.sites for p in products))
    for product in products:
        product.start(geometry, n_images)
    consumers = {site: [p for p in products if site in p.sites] for site in sites}

    def sink(site, block, x):                       # called by each hook as its block runs
        for product in consumers[site]:
            product.consume(site, block, x)

    device_type = torch.device(device).type
    precision = (torch.autocast(device_type, dtype=AUTOCAST_DTYPES[autocast]) if autocast else nullcontext())
    t0 = time.perf_counter()
    with torch.inference_mode(), Capture(model, sites, sink=sink) as capture, precision:
        for images, _ in tqdm(loader, desc=f"extract {name}", disable=not progress, unit="batch"):
            for product in products:
                product.begin_batch(images.shape[0])
            model.forward_features(images.to(device, non_blocking=True))
            capture.collect()                       # checks every site fired once per block
            for product in products:
                product.end_batch()
    info = {"seconds": round(time.perf_counter() - t0, 2), "device": str(device), "geometry": geometry,
            "num_workers": loader.num_workers}
    out = {}
    for label, (product, key) in missing.items():
        out[label] = product.finish()
        store.put(name, product.name, key, out[label], info)
    return out

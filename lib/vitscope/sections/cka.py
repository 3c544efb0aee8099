"""Objectives Matter §2.1 — layer-wise minibatch CKA between models."""
from __future__ import annotations

import itertools

import pandas as pd
import torch

from ..data import transform_key
from ..extract import FeatureStore, GramMatrices, extract, layer_labels, stack_batches
from ..kernels import cka as cka_k
from ..profiles import Profile
from ..devices import resolve_device
from .common import load_for_analysis


def model_grams(model: str, profile: Profile, *, weights=None, device=None, store=None, progress=True):
    """Per-batch Gram stacks of ``model`` (list over batches of [layers, b, b]) and their layer labels."""
    device = resolve_device(device or profile.device)
    spec = profile.section("cka")
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = profile.dataset(spec["dataset"], cfg.preprocess)
    product = GramMatrices(capture_sites=tuple(spec.get("sites", ["block"])), tokens=spec.get("tokens", "all"))
    out = extract(net, ident, dataset, {"grams": product}, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, batch_size=spec.get("batch_size", 32),
                  order=spec.get("order", "shuffled"), limit=spec.get("max_examples"), progress=progress)
    return stack_batches(out["grams"]), layer_labels(product, len(net.blocks))


def compute(models: list[str], profile: Profile, *, weights: dict | None = None, device=None, store=None,
            mode: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Minibatch CKA (OM eq. 2-3) between every layer of every pair of ``models`` (self-pairs included).

    Each model is run once; its per-batch Gram matrices are cached, so adding a model to the list costs one
    forward pass. Returns a tidy table ``model_a, model_b, site_a, site_b, index_a, index_b, cka, mode``:
    ``site`` is the captured output (``block``, ``norm1``, ``qkv``, ``fc1``; see :mod:`vitscope.extract.capture`)
    and ``index`` its block, 1-based.
    """
    spec = profile.section("cka")
    mode = mode or spec.get("mode", "reference")
    weights = weights or {}
    grams = {m: model_grams(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
             for m in models}
    rows = []
    for a, b in itertools.combinations_with_replacement(models, 2):
        (ga, la), (gb, lb) = grams[a], grams[b]
        matrix = cka_k.minibatch_cka_from_grams(ga, gb, mode=mode)
        rows += _rows(a, b, la, lb, matrix, mode)
    return pd.DataFrame(rows)


def _rows(a, b, la, lb, matrix: torch.Tensor, mode: str) -> list[dict]:
    return [{"model_a": a, "model_b": b, "site_a": sa, "site_b": sb, "index_a": ia, "index_b": ib,
             "cka": float(matrix[i, j]), "mode": mode}
            for i, (sa, ia) in enumerate(la) for j, (sb, ib) in enumerate(lb)]


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


#: OM's grouping of the objectives it compares (Sec. 2): joint-embedding (DINO, MoCo-v3) vs reconstruction (MAE).
JOINT_EMBEDDING = ("self-distillation", "contrastive")
RECONSTRUCTION = ("masked-reconstruction", "masked-token-prediction")


def same_depth(table: pd.DataFrame, site: str | None = "block") -> pd.DataFrame:
    """CKA between layer ``i`` of one model and the same layer type at depth ``i`` of another (distinct models):
    columns ``model_a, model_b, site, index, cka``, for one ``site`` or, with ``site=None``, every site."""
    sel = table[(table.site_a == table.site_b) & (table.model_a != table.model_b) & (table.index_a == table.index_b)]
    if site is not None:
        sel = sel[sel.site_a == site]
    return (sel.rename(columns={"site_a": "site", "index_a": "index"})[["model_a", "model_b", "site", "index", "cka"]]
            .reset_index(drop=True))


def joint_embedding_claim(table: pd.DataFrame, site: str = "block") -> dict | None:
    """OM 2.1's claim: two joint-embedding models are more alike, layer for layer, than either is to a
    reconstruction model.

    Compares the mean same-depth CKA (over layers) of every joint-embedding pair with that of every
    joint-embedding/reconstruction pair. Returns both means, the pairs, and whether the ordering holds; ``None``
    when ``table`` lacks two joint-embedding models or a reconstruction model (families from the registry).
    """
    from ..models import get_cfg

    pairs = same_depth(table, site).groupby(["model_a", "model_b"], sort=False)["cka"].mean()
    family = {m: get_cfg(m).family for m in set(table.model_a) | set(table.model_b)}
    within, across = {}, {}
    for (a, b), value in pairs.items():
        fa, fb = family[a], family[b]
        if fa in JOINT_EMBEDDING and fb in JOINT_EMBEDDING:
            within[f"{a} vs {b}"] = float(value)
        elif {fa, fb} & set(JOINT_EMBEDDING) and {fa, fb} & set(RECONSTRUCTION):
            across[f"{a} vs {b}"] = float(value)
    if not within or not across:
        return None
    w, x = sum(within.values()) / len(within), sum(across.values()) / len(across)
    return {"joint_embedding_pairs": within, "mixed_pairs": across, "joint_embedding_mean": w, "mixed_mean": x,
            "holds": bool(w > x)}

"""Teaching Matters §4.3 — average attention distance per head, layer and model."""
from __future__ import annotations

import pandas as pd

from ..data import transform_key
from ..extract import AttentionDistance, FeatureStore, extract, vit_geometry
from ..kernels.attention import uniform_attention_distance
from ..profiles import Profile
from .common import load_for_analysis, resolve_device

VARIANTS = {"unit_square": "teaching-matters (unit square, CLS removed, renormalised)",
            "pixels": "pixels (Raghu et al.; CLS removed, not renormalised)"}


def compute(model: str, profile: Profile, *, weights=None, device=None, store=None,
            progress: bool = True) -> pd.DataFrame:
    """Average attention distance of every head of ``model`` on the profile's dataset.

    Returns a tidy table with one row per (variant, block, head): ``model, variant, block, head,
    distance`` (mean over images) ``, distance_std`` (std over images) ``, n_images, uniform`` (the distance
    of a head attending uniformly to every token of this model's grid, a reference level). Blocks are
    1-based (layer 1 is the first transformer block, as in the paper's figures).
    """
    device = resolve_device(device or profile.device)
    spec = profile.section("attention_distance")
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = profile.dataset(spec["dataset"], cfg.preprocess)
    out = extract(net, ident, dataset, {"ad": AttentionDistance()}, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, progress=progress)
    g = vit_geometry(net)
    uniform = {"unit_square": uniform_attention_distance(g["grid"][0]),
               "pixels": uniform_attention_distance(g["grid"][0], "pixels", g["patch_size"])}
    return distance_table(model, out["ad"], uniform)


def distance_table(model: str, result, uniform: dict) -> pd.DataFrame:
    """Reduce per-image distances ``{variant: [N, L, H]}`` to the tidy per-head table."""
    rows = []
    for variant in VARIANTS:
        d = result[variant].double()
        mean, std = d.mean(0), d.std(0) if d.shape[0] > 1 else d.mean(0) * 0
        for block in range(d.shape[1]):
            for head in range(d.shape[2]):
                rows.append({"model": model, "variant": variant, "block": block + 1, "head": head,
                             "distance": float(mean[block, head]), "distance_std": float(std[block, head]),
                             "n_images": d.shape[0], "uniform": uniform[variant]})
    return pd.DataFrame(rows)

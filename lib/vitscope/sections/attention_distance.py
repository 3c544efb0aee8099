"""Teaching Matters §4.3 — average attention distance per head, layer and model."""
from __future__ import annotations

import pandas as pd

from ..data import transform_key
from ..extract import AttentionDistance, FeatureStore, extract, vit_geometry
from ..kernels.attention import uniform_attention_distance
from ..profiles import Profile
from ..devices import resolve_device
from .common import load_for_analysis

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


#: Teaching Matters groups its six models by the kind of supervision (Sec. 4.3, Fig. 4).
GLOBAL_LATE = ("supervised", "image-text", "self-distillation", "contrastive")      # FS, CLIP, DINO, MoCo
LOCAL_LATE = ("masked-reconstruction", "masked-token-prediction")                  # MAE, BEiT


def layer_summary(table: pd.DataFrame, variant: str = "unit_square") -> pd.DataFrame:
    """Per model: the per-layer mean distance (over heads) at the first block, its minimum, and the last block.

    Columns: ``model, family, depth, first, dip_block, dip, last, late_rise`` (``last - dip``), ``uniform``.
    """
    from ..models import get_cfg

    rows = []
    for model, sel in table[table.variant == variant].groupby("model", sort=False):
        per_layer = sel.groupby("block")["distance"].mean()
        rows.append({"model": model, "family": get_cfg(model).family, "depth": int(per_layer.index.max()),
                     "first": per_layer.iloc[0], "dip_block": int(per_layer.idxmin()), "dip": per_layer.min(),
                     "last": per_layer.iloc[-1], "late_rise": per_layer.iloc[-1] - per_layer.min(),
                     "uniform": sel["uniform"].iloc[0]})
    return pd.DataFrame(rows)


def late_layer_claim(summary: pd.DataFrame) -> dict | None:
    """TM 4.3's claim: explicitly/contrastively supervised models end more global than reconstruction models.

    Returns the mean last-block distance of each group and whether the paper's ordering holds in ``summary``,
    or ``None`` when the profile lacks a model of either group (e.g. only random models).
    """
    a = summary[summary.family.isin(GLOBAL_LATE)]
    b = summary[summary.family.isin(LOCAL_LATE)]
    if a.empty or b.empty:
        return None
    return {"global_late_models": list(a.model), "global_late_last": float(a["last"].mean()),
            "reconstruction_models": list(b.model), "reconstruction_last": float(b["last"].mean()),
            "holds": bool(a["last"].mean() > b["last"].mean())}

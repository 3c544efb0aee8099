"""Teaching Matters §4.3 — average attention distance per head, layer and model.

Product: :class:`vitscope.extract.AttentionDistance` (per image, block and head); kernels:
:func:`vitscope.kernels.attention.attention_distance` and, for the claims,
:func:`vitscope.kernels.stats.bootstrap_contrast`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, judge, paired_contrast
from ..data import transform_key
from ..devices import resolve_device
from ..extract import AttentionDistance, FeatureStore, extract, vit_geometry
from ..kernels.attention import uniform_attention_distance
from ..kernels.stats import seed_floor
from ..profiles import Profile
from .common import load_for_analysis

METHODS = {"unit_square": "teaching-matters (unit square, CLS removed, renormalised)",
            "pixels": "pixels (Raghu et al.; CLS removed, not renormalised)"}


def _extract(model: str, profile: Profile, weights, device, store, progress: bool):
    """The cached :class:`~vitscope.extract.AttentionDistance` product of ``model`` ({method: [N, L, H]}) and the
    uniform-attention reference level of its token grid per method."""
    device = resolve_device(device or profile.device)
    spec = profile.section("attention_distance")
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = profile.dataset(spec["dataset"], cfg.preprocess)
    out = extract(net, ident, dataset, {"ad": AttentionDistance()}, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, progress=progress)
    g = vit_geometry(net)
    uniform = {"unit_square": uniform_attention_distance(g["grid"][0]),
               "pixels": uniform_attention_distance(g["grid"][0], "pixels", g["patch_size"])}
    return out["ad"], uniform


def compute(model: str, profile: Profile, *, weights=None, device=None, store=None,
            progress: bool = True) -> pd.DataFrame:
    """Average attention distance of every head of ``model`` on the profile's dataset.

    Returns a tidy table with one row per (method, block, head): ``model, method, block, head,
    distance`` (mean over images) ``, distance_std`` (std over images) ``, n_images, uniform`` (the distance
    of a head attending uniformly to every token of this model's grid, a reference level). Blocks are
    1-based (layer 1 is the first transformer block, as in the paper's figures).
    """
    result, uniform = _extract(model, profile, weights, device, store, progress)
    return distance_table(model, result, uniform)


def per_image(model: str, profile: Profile, *, method: str = "unit_square", weights=None, device=None, store=None,
              progress: bool = False) -> pd.DataFrame:
    """Per image and block, the mean attention distance over heads (the same cached extraction as :func:`compute`).

    Columns ``model, image, block, distance``; ``image`` is the dataset index, ``block`` 1-based.
    """
    result, _ = _extract(model, profile, weights, device, store, progress)
    return per_image_table(model, result, method)


def per_image_table(model: str, result: dict, method: str = "unit_square") -> pd.DataFrame:
    """Reduce per-image distances ``{method: [N, L, H]}`` to ``model, image, block, distance`` (mean over heads)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose from {tuple(METHODS)}")
    d = result[method].double().mean(-1)                                      # [N, L]
    n, depth = d.shape
    return pd.DataFrame({"model": model, "image": np.repeat(np.arange(n), depth),
                         "block": np.tile(np.arange(1, depth + 1), n), "distance": d.reshape(-1).numpy()})


def distance_table(model: str, result, uniform: dict) -> pd.DataFrame:
    """Reduce per-image distances ``{method: [N, L, H]}`` to the tidy per-head table."""
    rows = []
    for method in METHODS:
        d = result[method].double()
        mean, std = d.mean(0), d.std(0) if d.shape[0] > 1 else d.mean(0) * 0
        for block in range(d.shape[1]):
            for head in range(d.shape[2]):
                rows.append({"model": model, "method": method, "block": block + 1, "head": head,
                             "distance": float(mean[block, head]), "distance_std": float(std[block, head]),
                             "n_images": d.shape[0], "uniform": uniform[method]})
    return pd.DataFrame(rows)


#: Teaching Matters groups its six models by the kind of supervision (Sec. 4.3, Fig. 4).
GLOBAL_LATE = ("supervised", "image-text", "self-distillation", "contrastive")      # FS, CLIP, DINO, MoCo
LOCAL_LATE = ("masked-reconstruction", "masked-token-prediction")                  # MAE, BEiT


def layer_summary(table: pd.DataFrame, method: str = "unit_square") -> pd.DataFrame:
    """Per model: the per-layer mean distance (over heads) at the first block, its minimum, and the last block.

    Columns: ``model, family, depth, first, dip_block, dip, last, late_rise`` (``last - dip``), ``uniform``.
    """
    from ..models import get_cfg

    rows = []
    for model, sel in table[table.method == method].groupby("model", sort=False):
        per_layer = sel.groupby("block")["distance"].mean()
        rows.append({"model": model, "family": get_cfg(model).family, "depth": int(per_layer.index.max()),
                     "first": per_layer.iloc[0], "dip_block": int(per_layer.idxmin()), "dip": per_layer.min(),
                     "last": per_layer.iloc[-1], "late_rise": per_layer.iloc[-1] - per_layer.min(),
                     "uniform": sel["uniform"].iloc[0]})
    return pd.DataFrame(rows)


CLAIM_ID = "TM-4.3c"


def _last_block(per_image_df: pd.DataFrame, model: str) -> torch.Tensor:
    sel = per_image_df[per_image_df.model == model]
    last = sel[sel.block == sel.block.max()].sort_values("image")
    return torch.tensor(last.distance.to_numpy(), dtype=torch.float64)


def late_layer_check(per_image_df: pd.DataFrame, seeds=()) -> list[ClaimResult]:
    """TM 4.3 (claim ``TM-4.3c``) judged on per-image last-block distances (a :func:`per_image_table` of several
    models, the same images for each).

    First row, the paper's ordering: mean last-block distance of the global-late group (supervised, image-text,
    self-distillation, contrastive) minus that of the reconstruction group (expected > 0), bootstrapped over images;
    beyond the baseline: the global-late group minus the untrained model (does the "global" end differ from an
    untrained ViT's?). Then one row per trained model: its last block minus the untrained model's (expected > 0 for
    the global-late group, < 0 for reconstruction), where the effect is its own baseline contrast.

    ``seeds``: untrained models of the table (at least two) whose last-block distances set each contrast's seed
    floor (:func:`vitscope.kernels.stats.seed_floor`): the most the contrast reaches with untrained seeds in place
    of its models. Every contrast here puts total weight 1 on each side, so its floor is the largest |difference|
    between two seeds, which is also how far a baseline contrast moves when the baseline is swapped for another
    seed. Empty: no seed floor, the bootstrap is the only noise measure.
    """
    from ..models import get_cfg

    names = list(dict.fromkeys(per_image_df.model))
    seeds = tuple(seeds)
    missing = [s for s in seeds if s not in names]
    if missing:
        raise ValueError(f"seeds {missing} are not in the per-image table (models {names}); extract them on the same "
                         "profile (check_claims adds the profile's baselines)")
    family = {m: get_cfg(m).family for m in names}
    a = [m for m in names if family[m] in GLOBAL_LATE]
    b = [m for m in names if family[m] in LOCAL_LATE]
    base = untrained_baseline(names)
    last = {m: _last_block(per_image_df, m) for m in names}
    seed_last = torch.stack([last[s].mean() for s in seeds]) if seeds else None

    def floor(weights: dict[str, float]) -> float | None:
        return None if seed_last is None else seed_floor(seed_last, list(weights.values()))

    subject = "global-late minus reconstruction group"
    measure = "last-block mean distance"
    if not a or not b:
        lacking = "explicitly or contrastively supervised" if not a else "reconstruction-based"
        out = [cannot_check(CLAIM_ID, subject, f"the profile has no {lacking} model")]
    else:
        ordering = {**{m: 1 / len(a) for m in a}, **{m: -1 / len(b) for m in b}}
        against_base = {**{m: 1 / len(a) for m in a}, base: -1.0} if base else None
        effect = paired_contrast(last, ordering)
        beyond = paired_contrast(last, against_base) if base else None
        out = [judge(CLAIM_ID, subject, f"{measure} ({', '.join(a)} minus {', '.join(b)})", effect, beyond, 1, base,
                     floor(ordering), floor(against_base) if base else None, seeds)]
    for m in a + b:
        if base is None:
            out.append(cannot_check(CLAIM_ID, m, "no untrained baseline of the same architecture in this profile"))
            continue
        weights = {m: 1.0, base: -1.0}
        effect = paired_contrast(last, weights)
        out.append(judge(CLAIM_ID, m, f"{measure} minus `{base}`'s", effect, effect, 1 if m in a else -1, base,
                         floor(weights), floor(weights), seeds))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, method: str = "unit_square", weights=None,
                 device=None, store=None, progress: bool = False) -> list[ClaimResult]:
    """The claims of TM 4.3 on ``models`` (default: the profile's), from the cached extraction; see
    :func:`late_layer_check`. The profile's untrained seeds (``baselines``) are extracted too and set the seed
    floor. Show them with ``vitscope.claims.show(...)``."""
    models = list(models or profile.models)
    seeds = noise_seeds(profile)
    weights = weights or {}
    table = pd.concat([per_image(m, profile, method=method, weights=weights.get(m), device=device, store=store,
                                 progress=progress) for m in dict.fromkeys(models + seeds)])
    return late_layer_check(table, seeds)

"""Objectives Matter §2.2, Fig. 3: how invariant each block's pooled features are to a horizontal flip (and to other
augmentations), per model.

OM reads it off RCDM samples: joint-embedding features forget an image's horizontal orientation, reconstruction
features keep it. Here it is measured directly. Product: :class:`vitscope.extract.PooledTokens` of the original and of
each augmented copy of the profile's images (one extraction each, cached; the original is the k-NN pages' extraction);
kernel: :func:`vitscope.kernels.invariance.augmentation_similarity` (per image and block: similarity to the own
augmented copy, to other images' copies as the reference, and the invariance index, 1 = invariant, 0 = no closer
than another image).
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import functional as TF

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, group_weights, judge_contrast
from ..kernels.invariance import augmentation_similarity
from ..profiles import Profile
from .knn import JOINT_EMBEDDING, POOLINGS, RECONSTRUCTION, pooled_features

#: Deterministic augmentations on the [3, H, W] image in [0, 1] (after resize and crop, before normalisation).
AUGMENTATIONS = {"hflip": TF.hflip, "vflip": TF.vflip,
                 "grayscale": partial(TF.rgb_to_grayscale, num_output_channels=3)}
DESCRIPTIONS = {"hflip": "horizontal flip (OM Fig. 3)", "vflip": "vertical flip (a control: in no model's training)",
                "grayscale": "grayscale (in the joint-embedding models' colour augmentations)"}


def protocol(profile: Profile) -> dict:
    """The profile's ``invariance`` section: ``dataset`` and ``augmentations`` (default: hflip only)."""
    spec = profile.section("invariance")
    augs = list(spec.get("augmentations", ["hflip"]))
    unknown = [a for a in augs if a not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Profile {profile.name!r}: invariance.augmentations {unknown} unknown; choose from "
                         f"{sorted(AUGMENTATIONS)}")
    return {"dataset": spec["dataset"], "augmentations": augs}


def similarities(model: str, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> dict:
    """``{(augmentation, pooling): {"own", "others", "index"}}``, each float64 [N, L] (images in data-set order)."""
    p = protocol(profile)
    kw = {"weights": weights, "device": device, "store": store, "progress": progress}
    original = pooled_features(model, profile, p["dataset"], **kw)
    out = {}
    for aug in p["augmentations"]:
        copy = pooled_features(model, profile, p["dataset"], augment=(aug, AUGMENTATIONS[aug]), **kw)
        for pooling in POOLINGS:
            out[(aug, pooling)] = augmentation_similarity(original[pooling], copy[pooling])
    return out


def compute(model: str, profile: Profile, **kwargs) -> pd.DataFrame:
    """Per augmentation, pooling and block (1-based): mean over images of ``own``, ``others`` and ``index``, and the
    index's standard deviation. Columns ``model, augmentation, pooling, block, own, others, index, index_std,
    n_images``."""
    rows = []
    for (aug, pooling), s in similarities(model, profile, **kwargs).items():
        for block in range(s["index"].shape[1]):
            rows.append({"model": model, "augmentation": aug, "pooling": pooling, "block": block + 1,
                         "own": float(s["own"][:, block].mean()), "others": float(s["others"][:, block].mean()),
                         "index": float(s["index"][:, block].mean()), "index_std": float(s["index"][:, block].std()),
                         "n_images": s["index"].shape[0]})
    return pd.DataFrame(rows)


def per_image(model: str, profile: Profile, **kwargs) -> pd.DataFrame:
    """Per image: the invariance index. Columns ``model, augmentation, pooling, block, image, index``."""
    frames = []
    for (aug, pooling), s in similarities(model, profile, **kwargs).items():
        n, depth = s["index"].shape
        frames.append(pd.DataFrame({"model": model, "augmentation": aug, "pooling": pooling,
                                    "block": np.tile(np.arange(1, depth + 1), n),
                                    "image": np.repeat(np.arange(n), depth),
                                    "index": s["index"].reshape(-1).numpy()}))
    return pd.concat(frames, ignore_index=True)


CLAIM_ID = "OM-2.2d"


def _last(df: pd.DataFrame, model: str, pooling: str) -> torch.Tensor:
    sel = df[(df.model == model) & (df.augmentation == "hflip") & (df.pooling == pooling)]
    sel = sel[sel.block == sel.block.max()].sort_values("image")
    return torch.tensor(sel["index"].to_numpy(), dtype=torch.float64)


def flip_check(per_image_df: pd.DataFrame, seeds=()) -> list[ClaimResult]:
    """OM Fig. 3 (``OM-2.2d``): the last block's horizontal-flip invariance index (CLS, the paper's representation),
    joint-embedding group minus reconstruction group (expected > 0), beyond the untrained model; then per model its
    index minus the untrained model's (expected > 0 for joint-embedding models, < 0 for reconstruction ones)."""
    from ..models import get_cfg

    if "hflip" not in set(per_image_df.augmentation):
        return [cannot_check(CLAIM_ID, "joint-embedding minus reconstruction", "the profile's invariance section "
                             "does not list hflip")]
    names = list(dict.fromkeys(per_image_df.model))
    family = {m: get_cfg(m).family for m in names}
    je = [m for m in names if family[m] in JOINT_EMBEDDING]
    rec = [m for m in names if family[m] in RECONSTRUCTION]
    base = untrained_baseline(names)
    last = {m: _last(per_image_df, m, "cls") for m in names}
    seed_stats = torch.stack([last[s].mean() for s in seeds]) if seeds else None
    measure = "last-block flip-invariance index (CLS)"
    subject = "joint-embedding minus reconstruction"
    if not je or not rec:
        out = [cannot_check(CLAIM_ID, subject, "the profile lacks a joint-embedding or a reconstruction model")]
    else:
        w, beyond = group_weights(je, rec, base)
        out = [judge_contrast(CLAIM_ID, subject, f"{measure} ({', '.join(je)} minus {', '.join(rec)})", last, w,
                              beyond, 1, base, seed_stats, seeds)]
    for m in je + rec:
        if base is None:
            out.append(cannot_check(CLAIM_ID, m, "no untrained baseline of the same architecture in this profile"))
            continue
        w = {m: 1.0, base: -1.0}
        out.append(judge_contrast(CLAIM_ID, m, f"{measure} minus `{base}`'s", last, w, w, 1 if m in je else -1, base,
                                  seed_stats, seeds))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """OM Fig. 3's claim on ``models`` (default: the profile's) and the profile's untrained seeds; see
    :func:`flip_check`."""
    seeds = noise_seeds(profile)
    weights = weights or {}
    names = dict.fromkeys(list(models or profile.models) + seeds)
    table = pd.concat([per_image(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
                       for m in names], ignore_index=True)
    return flip_check(table, seeds)

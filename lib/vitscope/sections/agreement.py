"""Objectives Matter App. F (Fig. 13): do models rank and predict classes alike?

OM compares linear-probe rankings on ImageNet val. Here the class scores are the k-NN votes of the k-NN pages
(:mod:`vitscope.sections.knn`: last block, CLS token, the reported k, the same cross-validation folds, so every image
is a query once): no extra training, and the same predictions whose accuracy those pages report. Product:
:class:`vitscope.extract.PooledTokens`; kernels: :func:`vitscope.kernels.agreement.knn_class_votes`,
:func:`~vitscope.kernels.agreement.topk_kendall_tau`, :func:`~vitscope.kernels.agreement.prediction_f1`.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, judge_contrast
from ..kernels.agreement import knn_class_votes, prediction_f1, topk_kendall_tau
from ..profiles import Profile
from . import knn
from .knn import JOINT_EMBEDDING, RECONSTRUCTION

#: Which images a Kendall tau is averaged over (OM Fig. 13's three panels).
SUBSETS = {"all": "all images", "both correct": "both models right", "both wrong": "both models wrong"}
TOP_KS = (5, 10)


def protocol(profile: Profile) -> dict:
    """``models`` (default: the profile's) and the ranking depths ``ks`` of the ``agreement`` section."""
    spec = profile.raw.get("agreement") or {}
    return {"models": list(spec.get("models") or profile.models), "ks": tuple(spec.get("ks", TOP_KS))}


def votes(model: str, profile: Profile, *, weights=None, device=None, store=None, progress: bool = False) -> dict:
    """Cross-validated k-NN class votes of ``model``'s last-block CLS token: ``{"scores": [N, C], "pred": [N],
    "labels": [N]}`` (data-set order)."""
    p = knn.protocol(profile)
    feats = knn.pooled_features(model, profile, p["dataset"], weights=weights, device=device, store=store,
                                progress=progress)
    x, labels, C = feats["cls"][:, -1], feats["labels"], feats["num_classes"]
    folds = knn.fold_assignment(labels, p["folds"])
    scores = torch.zeros(len(labels), C, dtype=torch.float64)
    for f in folds.unique():
        q, r = folds == f, folds != f
        scores[q] = knn_class_votes(x[r], labels[r], x[q], k=p["k"], temperature=p["temperature"],
                                    num_classes=C).cpu()
    return {"scores": scores, "pred": scores.argmax(1), "labels": labels}


def per_image(all_votes: dict[str, dict], ks=TOP_KS) -> pd.DataFrame:
    """Per pair of models and image: Kendall tau of the top-k rankings for each k, whether the top-1 predictions
    agree, and whether each model is right. Columns ``model_a, model_b, image, tau@<k>..., agree, correct_a,
    correct_b``."""
    frames = []
    for a, b in combinations(all_votes, 2):
        va, vb = all_votes[a], all_votes[b]
        cols = {"model_a": a, "model_b": b, "image": np.arange(len(va["pred"]))}
        cols |= {f"tau@{k}": topk_kendall_tau(va["scores"], vb["scores"], k).numpy() for k in ks}
        cols |= {"agree": (va["pred"] == vb["pred"]).numpy().astype(float),
                 "correct_a": (va["pred"] == va["labels"]).numpy(), "correct_b": (vb["pred"] == vb["labels"]).numpy()}
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def compute(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
            progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tables for every pair of ``models`` (default: the ``agreement`` section's):

    ``tau``: ``model_a, model_b, k, subset, tau`` (mean over the subset's images, NaN taus left out), ``n_images``;
    ``f1``: ``model_a, model_b, f1_macro, agreement`` (micro F1: the fraction of images with the same top-1).
    """
    p = protocol(profile)
    models = list(models or p["models"])
    weights = weights or {}
    v = {m: votes(m, profile, weights=weights.get(m), device=device, store=store, progress=progress) for m in models}
    img = per_image(v, p["ks"])
    rows = []
    for (a, b), g in img.groupby(["model_a", "model_b"], sort=False):
        masks = {"all": np.ones(len(g), bool), "both correct": g.correct_a & g.correct_b,
                 "both wrong": ~g.correct_a & ~g.correct_b}
        for k in p["ks"]:
            for subset, mask in masks.items():
                t = g.loc[np.asarray(mask), f"tau@{k}"].dropna()
                rows.append({"model_a": a, "model_b": b, "k": k, "subset": subset,
                             "tau": t.mean() if len(t) else float("nan"), "n_images": len(t)})
    f1 = [{"model_a": a, "model_b": b, "f1_macro": prediction_f1(v[a]["pred"], v[b]["pred"]),
           "agreement": prediction_f1(v[a]["pred"], v[b]["pred"], average="micro")}
          for a, b in combinations(models, 2)]
    return pd.DataFrame(rows), pd.DataFrame(f1)


def _pair_values(img: pd.DataFrame, column: str) -> dict[tuple[str, str], torch.Tensor]:
    return {(a, b): torch.tensor(g.sort_values("image")[column].to_numpy(), dtype=torch.float64)
            for (a, b), g in img.groupby(["model_a", "model_b"], sort=False)}


def _key(values, a, b):
    return (a, b) if (a, b) in values else (b, a)


def agreement_check(img: pd.DataFrame, ks=TOP_KS, seeds=()) -> list[ClaimResult]:
    """OM App. F: the joint-embedding pair agrees more than joint-embedding/reconstruction pairs.

    ``OM-F.a`` per k: mean Kendall tau of the JE pair minus the mean over JE-REC pairs, on all images (the paired
    bootstrap needs the same images in every pair; images where a tau is undefined are left out of that contrast);
    ``OM-F.b``: the same contrast of top-1 agreement (micro F1). Beyond the baseline: the JE pair minus the pairs of
    each JE model with the untrained model. Expected > 0.
    """
    from ..models import get_cfg

    names = list(dict.fromkeys(list(img.model_a) + list(img.model_b)))
    family = {m: get_cfg(m).family for m in names}
    je = [m for m in names if family[m] in JOINT_EMBEDDING]
    rec = [m for m in names if family[m] in RECONSTRUCTION]
    base = untrained_baseline(names)
    out = []
    for claim, column, what in [("OM-F.a", f"tau@{k}", f"top-{k} Kendall tau") for k in ks] + [
            ("OM-F.b", "agree", "top-1 agreement (micro F1)")]:
        subject = "joint-embedding pair minus joint-embedding/reconstruction pairs"
        if len(je) < 2 or not rec:
            out.append(cannot_check(claim, subject, "the profile lacks two joint-embedding models or a "
                                    "reconstruction model"))
            continue
        values = _pair_values(img, column)
        je_pair = _key(values, je[0], je[1])
        mixed = [_key(values, j, r) for j in je[:2] for r in rec]
        w = {je_pair: 1.0, **{p: -1 / len(mixed) for p in mixed}}
        with_base = [_key(values, j, base) for j in je[:2]] if base else []
        beyond = {je_pair: 1.0, **{p: -1 / len(with_base) for p in with_base}} if base else None
        seed_pairs = [_key(values, s, t) for s, t in combinations(seeds, 2) if _key(values, s, t) in values]
        used = set(w) | set(beyond or {}) | set(seed_pairs)
        keep = torch.stack([values[p] for p in used]).isfinite().all(0)      # images with every tau defined
        values = {p: v[keep] for p, v in values.items()}
        seed_stats = torch.stack([values[p].mean() for p in seed_pairs]) if len(seed_pairs) >= 2 else None
        label = lambda p: f"{p[0]}–{p[1]}"
        out.append(judge_contrast(claim, subject, f"{what}: {label(je_pair)} minus "
                                  f"{', '.join(label(p) for p in mixed)}", values, w, beyond, 1, base, seed_stats,
                                  seeds if seed_stats is not None else ()))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """OM App. F's claims on ``models`` (default: the ``agreement`` section's) plus the profile's untrained seeds."""
    p = protocol(profile)
    seeds = noise_seeds(profile)
    weights = weights or {}
    names = list(dict.fromkeys(list(models or p["models"]) + seeds))
    v = {m: votes(m, profile, weights=weights.get(m), device=device, store=store, progress=progress) for m in names}
    return agreement_check(per_image(v, p["ks"]), p["ks"], seeds)

"""k-NN classification after every block: Teaching Matters §6.1 (Fig. 9, left) and Objectives Matter Fig. 12.

Product: :class:`vitscope.extract.PooledTokens` (per image and block, the CLS token and the mean of the spatial
tokens, i.e. GAP without CLS); kernels: :func:`vitscope.kernels.knn.weighted_knn` (DINO's vote, T = 0.07),
:func:`vitscope.kernels.clustering.noise_features` (the paper's Gaussian-noise random baseline) and, for the claims,
:func:`vitscope.kernels.stats.bootstrap_contrast`.

Split (the profile's ``knn`` section): stratified **k-fold cross-validation** of the profile's data set. Within each
class, in the data set's fixed order (files sorted lexically), the r-th image goes to fold ``r % folds``; each fold in
turn is the query set and the other folds are the references. Every image is queried exactly once, against
references that never include it, so the protocol works for any number of images (the demo's 10 per class, the
paper profile's 100) with one extraction per model. DINO's protocol queries ImageNet val against ImageNet train;
a profile with a separate query set is not supported yet.

Features are block outputs, before the final LayerNorm that timm applies after the last block.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, group_weights, judge_contrast, judge_depth_contrast
from ..data import transform_key
from ..devices import resolve_device
from ..extract import FeatureStore, PooledTokens, extract
from ..kernels.clustering import noise_features
from ..kernels.knn import weighted_knn
from ..profiles import Profile
from ..validation import check_int
from .common import load_for_analysis

#: DINO's k values; the papers report k = 20.
KS = (10, 20, 100, 200)
K_REPORTED = 20
TEMPERATURE = 0.07
DEFAULT_FOLDS = 5
#: The two pooled features of OM Fig. 12, and the PooledTokens tensor each one is.
POOLINGS = {"cls": "CLS token", "gap": "GAP without CLS"}
_PRODUCT_TENSOR = {"cls": "cls", "gap": "mean"}
#: Seed of the Gaussian noise features (the random-chance baseline).
NOISE_SEED = 0


def protocol(profile: Profile) -> dict:
    """The profile's ``knn`` section with defaults: ``dataset, folds, ks, k, temperature``."""
    spec = profile.section("knn")
    out = {"dataset": spec["dataset"], "folds": int(spec.get("folds", DEFAULT_FOLDS)),
           "ks": tuple(spec.get("ks", KS)), "k": int(spec.get("k", K_REPORTED)),
           "temperature": float(spec.get("temperature", TEMPERATURE))}
    if out["k"] not in out["ks"]:
        raise ValueError(f"Profile {profile.name!r}: knn.k={out['k']} (the reported k) is not in knn.ks={out['ks']}")
    return out


def pooled_features(model: str, profile: Profile, dataset: str, *, augment=None, weights=None, device=None,
                    store=None, progress: bool = False) -> dict[str, torch.Tensor]:
    """The cached :class:`~vitscope.extract.PooledTokens` of ``model`` on the profile's ``dataset``, in data-set order.

    ``augment``: ``None`` or ``(name, fn)``, a deterministic augmentation applied to the [3, H, W] image in [0, 1]
    after resize and crop and before normalisation; its name enters the cache key. Returns ``{"cls", "gap"}``
    float32 [N, L, D] and ``"labels"`` [N].
    """
    from torchvision import transforms as T

    device = resolve_device(device or profile.device)
    net, cfg, ident = load_for_analysis(model, weights, device)
    data = profile.dataset(dataset, cfg.preprocess)
    transform_id = transform_key(cfg.preprocess)
    if augment is not None:
        name, fn = augment
        steps = list(data.transform.transforms)             # Resize, CenterCrop, ToTensor, Normalize
        data.transform = T.Compose(steps[:-1] + [fn, steps[-1]])
        transform_id = {**transform_id, "augment": name}
    out = extract(net, ident, data, {"pooled": PooledTokens()}, transform_id=transform_id,
                  store=store or FeatureStore(), device=device, progress=progress)
    back = torch.argsort(out["_meta"]["order"])             # extraction order -> data-set order
    return {"cls": out["pooled"]["cls"][back], "gap": out["pooled"]["mean"][back],
            "labels": out["_meta"]["labels"][back], "num_classes": len(data.classes)}


def fold_assignment(labels: torch.Tensor, folds: int) -> torch.Tensor:
    """[N] fold of each image: within each class, in the given order, the r-th image goes to fold ``r % folds``."""
    check_int(folds, "folds (at most the number of images)", 2, len(labels))
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        where = torch.nonzero(labels == c).squeeze(1)
        rank[where] = torch.arange(len(where))
    return rank % folds


def cross_validated(features: torch.Tensor, labels: torch.Tensor, folds: torch.Tensor, ks, num_classes: int,
                    temperature: float = TEMPERATURE) -> dict[int, torch.Tensor]:
    """``{k: [N] predicted labels}`` for [N, D] ``features``: each fold queried against the other folds.

    A k larger than the smallest reference set is left out (say so on the page)."""
    n_refs = min(int((folds != f).sum()) for f in folds.unique())
    preds = {k: torch.empty_like(labels) for k in ks if k <= n_refs}
    for f in folds.unique():
        query, ref = folds == f, folds != f
        for k, pred in preds.items():
            pred[query] = weighted_knn(features[ref], labels[ref], features[query], k=k,
                                       temperature=temperature, num_classes=num_classes).cpu()
    return preds


def _correct(model: str, profile: Profile, weights, device, store, progress) -> tuple[dict, dict, int]:
    """``{(pooling, block, k): [N] bool}`` for ``model``, the data (labels, folds) and the feature dimension."""
    p = protocol(profile)
    feats = pooled_features(model, profile, p["dataset"], weights=weights, device=device, store=store,
                            progress=progress)
    labels, C = feats["labels"], feats["num_classes"]
    folds = fold_assignment(labels, p["folds"])
    out = {}
    for pooling in POOLINGS:
        x = feats[pooling]
        for block in range(x.shape[1]):
            for k, pred in cross_validated(x[:, block], labels, folds, p["ks"], C, p["temperature"]).items():
                out[(pooling, block + 1, k)] = pred == labels
    return out, {"labels": labels, "folds": folds, "num_classes": C}, feats["cls"].shape[-1]


def noise_accuracy(labels: torch.Tensor, folds: torch.Tensor, dim: int, ks, num_classes: int,
                   temperature: float = TEMPERATURE, seed: int = NOISE_SEED) -> dict[int, float]:
    """``{k: accuracy}`` of the same k-NN protocol on Gaussian noise features [N, dim] (TM §6: random chance)."""
    noise = noise_features(len(labels), dim, seed=seed)
    return {k: float((pred == labels).double().mean())
            for k, pred in cross_validated(noise, labels, folds, ks, num_classes, temperature).items()}


def compute(model: str, profile: Profile, *, weights=None, device=None, store=None,
            progress: bool = False) -> pd.DataFrame:
    """k-NN accuracy of ``model`` after every block, CLS and GAP without CLS, for every k of the protocol.

    Columns ``model, pooling, block, k, accuracy, n_queries, noise`` (the same protocol on Gaussian noise of the
    same dimension) ``, chance`` (1 / classes). Blocks are 1-based.
    """
    correct, data, dim = _correct(model, profile, weights, device, store, progress)
    p = protocol(profile)
    noise = noise_accuracy(data["labels"], data["folds"], dim, p["ks"], data["num_classes"], p["temperature"])
    rows = [{"model": model, "pooling": pooling, "block": block, "k": k, "accuracy": float(c.double().mean()),
             "n_queries": len(c), "noise": noise[k], "chance": 1 / data["num_classes"]}
            for (pooling, block, k), c in correct.items()]
    return pd.DataFrame(rows)


def per_query(model: str, profile: Profile, *, k: int | None = None, weights=None, device=None, store=None,
              progress: bool = False) -> pd.DataFrame:
    """Per query image (data-set index), pooling and block: whether the k-NN vote (default: the reported k) was right.

    Columns ``model, pooling, block, image, correct`` (0 or 1)."""
    k = k or protocol(profile)["k"]
    correct, _, _ = _correct(model, profile, weights, device, store, progress)
    frames = [pd.DataFrame({"model": model, "pooling": pooling, "block": block, "image": np.arange(len(c)),
                            "correct": c.numpy().astype(float)})
              for (pooling, block, kk), c in correct.items() if kk == k]
    return pd.concat(frames, ignore_index=True)


def best_blocks(table: pd.DataFrame, k: int = K_REPORTED) -> pd.DataFrame:
    """Per model and pooling at ``k``: the best block, its accuracy, the last block's accuracy and the noise level."""
    sel = table[table.k == k]
    rows = []
    for (model, pooling), g in sel.groupby(["model", "pooling"], sort=False):
        g = g.sort_values("block")
        best = g.loc[g.accuracy.idxmax()]
        rows.append({"model": model, "pooling": pooling, "best_block": int(best.block), "best": best.accuracy,
                     "last_block": int(g.block.max()), "last": g.accuracy.iloc[-1], "noise": g.noise.iloc[0]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- claims

#: Objectives Matter's two families of self-supervised objectives.
JOINT_EMBEDDING = ("self-distillation", "contrastive")          # DINO, MSN, MoCo-v3
RECONSTRUCTION = ("masked-reconstruction", "masked-token-prediction")   # MAE, BEiT


def _values(per_query_df: pd.DataFrame, model: str, pooling: str, block: int) -> torch.Tensor:
    sel = per_query_df[(per_query_df.model == model) & (per_query_df.pooling == pooling)]
    sel = sel[sel.block == (sel.block.max() if block == -1 else block)].sort_values("image")
    return torch.tensor(sel.correct.to_numpy(), dtype=torch.float64)


def _families(names):
    from ..models import get_cfg
    return {m: get_cfg(m).family for m in names}


def tm_check(per_query_df: pd.DataFrame, seeds=()) -> list[ClaimResult]:
    """TM 6.1 (``TM-6.1a``) and the k-NN half of Table 1's ``TM-T1a`` on per-query correctness (CLS, reported k).

    TM-6.1a: the supervised model's last block minus the other trained models' mean (expected > 0); MAE minus BEiT
    (expected > 0); each reconstruction model minus the untrained one ("better than chance", expected > 0).
    TM-T1a: per trained model, the last block minus its best earlier block (expected >= 0; *holds* needs > 0),
    beyond the untrained model's same contrast.
    """
    names = list(dict.fromkeys(per_query_df.model))
    family = _families(names)
    trained = [m for m in names if family[m] != "random"]
    base = untrained_baseline(names)
    last = {m: _values(per_query_df, m, "cls", -1) for m in names}
    seed_last = torch.stack([last[s].mean() for s in seeds]) if seeds else None
    measure = "last-block k-NN accuracy (CLS)"
    out = []
    sup = [m for m in trained if family[m] == "supervised"]
    others = [m for m in trained if family[m] != "supervised"]
    if not sup or not others:
        out.append(cannot_check("TM-6.1a", "supervised minus the other models", "the profile lacks a supervised "
                                "model or any other trained model"))
    else:
        w, beyond = group_weights(sup, others, base)
        out.append(judge_contrast("TM-6.1a", "supervised minus the other trained models", measure, last, w, beyond,
                                  1, base, seed_last, seeds))
    mae = [m for m in trained if family[m] == "masked-reconstruction"]
    beit = [m for m in trained if family[m] == "masked-token-prediction"]
    if mae and beit:
        w = {mae[0]: 1.0, beit[0]: -1.0}
        beyond = {mae[0]: 1.0, base: -1.0} if base else None
        out.append(judge_contrast("TM-6.1a", f"{mae[0]} minus {beit[0]}", measure, last, w, beyond, 1, base,
                                  seed_last, seeds))
    for m in mae + beit:
        if base is None:
            out.append(cannot_check("TM-6.1a", m, "no untrained baseline of the same architecture in this profile"))
            continue
        w = {m: 1.0, base: -1.0}
        out.append(judge_contrast("TM-6.1a", f"{m} above chance", f"{measure} minus `{base}`'s", last, w, w, 1, base,
                                  seed_last, seeds))
    def last_and_best_earlier(m):
        acc = per_query_df[(per_query_df.model == m) & (per_query_df.pooling == "cls")].groupby("block").correct.mean()
        return int(acc.index.max()), int(acc.drop(acc.index.max()).idxmax())

    for m in trained:
        out.append(judge_depth_contrast(
            "TM-T1a", f"k-NN, {m}", f"last block minus its best earlier block ({last_and_best_earlier(m)[1]})",
            lambda model, block: _values(per_query_df, model, "cls", block), last_and_best_earlier, m, base, seeds))
    return out


def om_check(per_query_df: pd.DataFrame, seeds=()) -> list[ClaimResult]:
    """OM Fig. 12 (``OM-2.1e``) on per-query correctness at the reported k.

    Joint-embedding group minus reconstruction group at the last block (CLS, expected > 0) and at the block a
    quarter of the way through (OM: "by block 3" of 12; expected > 0); per reconstruction model, GAP minus CLS at the
    last block (expected > 0: their CLS token has no training signal of its own). The linear-probe half of the claim
    is not checked here.
    """
    names = list(dict.fromkeys(per_query_df.model))
    family = _families(names)
    je = [m for m in names if family[m] in JOINT_EMBEDDING]
    rec = [m for m in names if family[m] in RECONSTRUCTION]
    base = untrained_baseline(names)
    depth = int(per_query_df.block.max())
    early = max(1, round(depth / 4))
    out = []
    for block, label in ((depth, "last block"), (early, f"block {early} of {depth}")):
        vals = {m: _values(per_query_df, m, "cls", block) for m in names}
        seed_stats = torch.stack([vals[s].mean() for s in seeds]) if seeds else None
        subject = f"joint-embedding minus reconstruction, {label}"
        if not je or not rec:
            out.append(cannot_check("OM-2.1e", subject, "the profile lacks a joint-embedding or a reconstruction "
                                    "model"))
            continue
        w, beyond = group_weights(je, rec, base)
        out.append(judge_contrast("OM-2.1e", subject, f"k-NN accuracy (CLS; {', '.join(je)} minus {', '.join(rec)})",
                                  vals, w, beyond, 1, base, seed_stats, seeds))
    for m in rec:
        vals = {"gap": _values(per_query_df, m, "gap", -1), "cls": _values(per_query_df, m, "cls", -1)}
        w = {"gap": 1.0, "cls": -1.0}
        beyond = None
        if base is not None:
            vals |= {"base_gap": _values(per_query_df, base, "gap", -1),
                     "base_cls": _values(per_query_df, base, "cls", -1)}
            beyond = {"gap": 1.0, "cls": -1.0, "base_gap": -1.0, "base_cls": 1.0}
        out.append(judge_contrast("OM-2.1e", f"{m}: GAP minus CLS", "last-block k-NN accuracy", vals, w, beyond, 1,
                                  base, None, ()))
    out.append(cannot_check("OM-2.1e", "last CLS k-NN vs linear probe", "the linear probe is on the probes page"))
    return out


def _per_query_all(models, profile, weights, device, store, progress) -> tuple[pd.DataFrame, list[str]]:
    seeds = noise_seeds(profile)
    weights = weights or {}
    frames = [per_query(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
              for m in dict.fromkeys(list(models) + seeds)]
    return pd.concat(frames, ignore_index=True), seeds


def check_tm_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                    progress: bool = False) -> list[ClaimResult]:
    """TM 6.1's claims on ``models`` (default: the profile's); see :func:`tm_check`."""
    table, seeds = _per_query_all(list(models or profile.models), profile, weights, device, store, progress)
    return tm_check(table, seeds)


def check_om_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                    progress: bool = False) -> list[ClaimResult]:
    """OM Fig. 12's claims on ``models`` (default: the profile's); see :func:`om_check`."""
    table, seeds = _per_query_all(list(models or profile.models), profile, weights, device, store, progress)
    return om_check(table, seeds)

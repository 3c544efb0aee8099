"""Teaching Matters §5.3 (Fig. 8, App. B.4) — k-means purity, NMI and ARI of object- and part-level features.

Per image: dense spatial tokens of every block by the paper's tiling (:func:`vitscope.extract.dense.dense_tokens`),
then, per object or part mask, the tokens overlapping it averaged into one feature
(:func:`vitscope.kernels.region_pooling.pool_regions`, rule from the profile). The region features of a
(model, dataset, protocol) are cached with ``FeatureStore.memo``. Then, as §5.2: k-means per block
(:func:`vitscope.kernels.clustering.kmeans`, the ``purity`` section's fixed settings) scored against the region
categories, and the same clustering of noise features as the chance reference.

Levels: ``part`` (PartImageNet's part categories) and ``object``: PartImageNet's objects (the union of an image's
parts, labelled by super-category) and, where the profile names one, a COCO-format dataset's instances (the
paper's object-level data). Intervals resample regions (with the clustering fixed); regions of one image are not
independent, so they are somewhat narrow. Where the profile names untrained seeds (``baselines``), each verdict must
also clear their seed floor (:mod:`vitscope.claims.verdict`), from the same statistic on the seeds.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline, usable_seeds
from ..claims.verdict import CONFIDENCE, N_RESAMPLES, SEED, ClaimResult, cannot_check, judge_contrast
from ..data.coco import CocoInstances
from ..data.manifest import load_fetch_spec
from ..data.partimagenet import PartImageNet, annotation_path
from ..data.synthetic import GENERATOR_VERSION
from ..data.twins import partimagenet as pin_twin
from ..devices import resolve_device
from ..extract import FeatureStore
from ..extract.dense import SHORT_SIDE_FACTOR, dense_tokens, model_geometry, resize_mask
from ..extract.store import tensor_digest
from ..kernels import clustering as clustering_k
from ..kernels.region_pooling import pool_regions
from ..kernels.stats import bootstrap_contrast
from ..profiles import Profile
from . import purity
from .common import load_for_analysis

SECTION = "region_purity"
LEVELS = {"object": "object-level", "part": "part-level"}
NOISE = "noise"
#: Bump when the region features change for the same inputs (pooling, tiling or region reading).
FEATURES_VERSION = 1


def protocol(profile: Profile) -> dict:
    """The section's settings with their defaults: overlap rule, min_fraction, k, per_supercategory, noise."""
    spec = profile.section(SECTION)
    return {"parts_dataset": spec.get("parts_dataset"), "objects_dataset": spec.get("objects_dataset"),
            "overlap": spec.get("overlap") or "any", "min_fraction": spec.get("min_fraction"), "k": spec.get("k"),
            "per_supercategory": spec.get("per_supercategory"), "object_images": spec.get("object_images"),
            "noise": spec.get("noise") or "gaussian"}


# ----------------------------------------------------------------------------------------------- the data
def open_dataset(profile: Profile, name: str):
    """``(dataset, levels, identity)``: a :class:`PartImageNet` (levels part and object) or a
    :class:`CocoInstances` (level object) for the profile's dataset ``name``, writing a synthetic twin if due."""
    spec, p = profile.dataset_spec(name, named_by="region_purity"), protocol(profile)
    fmt = load_fetch_spec(spec["manifest"]).format
    root = profile.dataset_root(name)
    syn = spec.get("synthetic")
    ident = {"name": name, "manifest": spec["manifest"], "synthetic": syn, "generator": GENERATOR_VERSION}
    if fmt == "partimagenet-coco":
        if syn is not None:
            pin_twin.write_partimagenet_twin(root, int(syn.get("per_class", 6)), int(syn.get("size", 96)),
                                             int(syn.get("seed", 0)))
            ident["twin"] = pin_twin.TWIN_VERSION
        data = PartImageNet(root, per_supercategory=p["per_supercategory"])
        ident["annotations"] = _digest(*(annotation_path(root, s) for s in data.cocos))
        ident["per_supercategory"] = p["per_supercategory"]
        return data, ("part", "object"), ident
    if fmt == "coco":
        if syn is not None:
            from ..data.twins.coco import TWIN_VERSION, write_coco_twin

            write_coco_twin(root, int(syn.get("n_images", 200)), int(syn.get("size", 96)), int(syn.get("seed", 0)))
            ident["twin"] = TWIN_VERSION
        data = CocoInstances(root, limit=p["object_images"], name=spec["manifest"])
        ident.update(annotations=data.manifest.annotations, limit=p["object_images"])
        return data, ("object",), ident
    raise ValueError(f"Dataset {name!r} (manifest {spec['manifest']!r}) is in format {fmt!r}; region purity reads "
                     "PartImageNet (partimagenet-coco) or COCO instances (coco)")


def _digest(*paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def category_names(data, level: str) -> list[str]:
    if isinstance(data, PartImageNet):
        return [n for _, n, _ in data.part_categories] if level == "part" else list(data.supercategories)
    return [n for _, n in data.classes]


def _regions(data, i: int) -> tuple[torch.Tensor, dict]:
    """``(image float [3, h, w] in [0, 1], {level: (masks bool [R, h, w], labels int64 [R])})``."""
    if isinstance(data, PartImageNet):
        item = data[i]
        return item["image"].float() / 255, {"part": (item["part_masks"], item["part_labels"]),
                                             "object": (item["object_masks"], item["object_labels"])}
    image = torch.from_numpy(np.asarray(data[i][0]).copy()).permute(2, 0, 1).float() / 255
    inst = data.instances(i)
    masks = torch.stack([torch.from_numpy(x["mask"]) for x in inst])
    return image, {"object": (masks, torch.tensor([x["label"] for x in inst], dtype=torch.int64))}


# ------------------------------------------------------------------------------------------ the features
def region_features(model: str, profile: Profile, dataset: str, *, weights=None, device=None, store=None) -> dict:
    """Per level ``L`` of ``dataset``: ``{L_features: float32 [R, blocks, C], L_labels: int64 [R], L_image: int64
    [R], L_skipped: int64 [1]}`` (regions in image order; skipped: regions no token overlaps), cached."""
    p = protocol(profile)
    device = resolve_device(device or profile.device)
    net, cfg, ident = load_for_analysis(model, weights, device)
    data, levels, data_ident = open_dataset(profile, dataset)
    key = {"model": ident, "data": data_ident, "overlap": p["overlap"], "min_fraction": p["min_fraction"],
           "tiling": {"short_side_factor": SHORT_SIDE_FACTOR}, "version": FEATURES_VERSION}

    def compute():
        _, patch = model_geometry(net)
        blocks = list(range(len(net.blocks)))
        out = {lv: {"features": [], "labels": [], "image": [], "skipped": 0} for lv in levels}
        for i in range(len(data)):
            image, regions = _regions(data, i)
            tokens = dense_tokens(net, image, blocks, mean=cfg.preprocess.mean, std=cfg.preprocess.std,
                                  device=device)                                   # [L, G_h, G_w, C]
            size = (tokens.shape[1] * patch, tokens.shape[2] * patch)
            for lv, (masks, labels) in regions.items():
                if not len(masks):
                    continue
                resized = torch.stack([resize_mask(m.to(torch.uint8), size) for m in masks]).bool()
                feats, kept = pool_regions(tokens, resized, patch, p["overlap"], p["min_fraction"])
                o = out[lv]
                o["features"].append(feats.transpose(0, 1))
                o["labels"].append(labels[kept])
                o["image"].append(torch.full((int(kept.sum()),), i, dtype=torch.int64))
                o["skipped"] += int((~kept).sum())
        result = {}
        for lv, o in out.items():
            if not o["features"]:
                raise ValueError(f"dataset {dataset!r} yielded no {lv} region that a token overlaps")
            result.update({f"{lv}_features": torch.cat(o["features"]).float().contiguous(),
                           f"{lv}_labels": torch.cat(o["labels"]), f"{lv}_image": torch.cat(o["image"]),
                           f"{lv}_skipped": torch.tensor([o["skipped"]])})
        return result

    return (store or FeatureStore()).memo(model, f"regions-{dataset}", key, compute)


# ----------------------------------------------------------------------------------------- clustering
def _kmeans_blocks(model: str, features: torch.Tensor, k: int, km, store) -> torch.Tensor:
    """Cluster ids int64 [L, R] of each block of ``features`` [R, L, C], cached by the features' digest."""
    key = {"features": tensor_digest(features), "k": k, "settings": km.record(), "version": purity.CLUSTERING_VERSION}
    return (store or FeatureStore()).memo(model, "kmeans-regions", key, lambda: {"assignments": torch.stack(
        [clustering_k.kmeans(features[:, b], k, km) for b in range(features.shape[1])])})["assignments"]


def datasets(profile: Profile) -> list[str]:
    """The section's datasets: the parts dataset, then the objects dataset (each where named)."""
    p = protocol(profile)
    return [d for d in (p["parts_dataset"], p["objects_dataset"]) if d]


def cluster_model(model: str, profile: Profile, *, weights=None, device=None, store=None) -> list[dict]:
    """Per (dataset, level): ``{"dataset", "level", "labels" [R], "k", "dim", "skipped", "n_images",
    "assignments" int64 [L, R]}``."""
    km, p = purity.settings(profile), protocol(profile)
    out = []
    for ds in datasets(profile):
        feats = region_features(model, profile, ds, weights=weights, device=device, store=store)
        data, levels, _ = open_dataset(profile, ds)
        for lv in levels:
            x, labels = feats[f"{lv}_features"], feats[f"{lv}_labels"]
            k = min(p["k"] or len(category_names(data, lv)), len(labels))
            out.append({"dataset": ds, "level": lv, "labels": labels, "k": k, "dim": x.shape[-1],
                        "skipped": int(feats[f"{lv}_skipped"][0]), "n_images": int(feats[f"{lv}_image"].max()) + 1,
                        "assignments": _kmeans_blocks(model, x, k, km, store)})
    return out


def _noise(c: dict, profile: Profile, store=None) -> torch.Tensor:
    km, dist = purity.settings(profile), protocol(profile)["noise"]
    n = len(c["labels"])
    key = {"n": n, "dim": c["dim"], "k": c["k"], "distribution": dist, "settings": km.record(),
           "version": purity.CLUSTERING_VERSION}
    return (store or FeatureStore()).memo(NOISE, "kmeans", key, lambda: {"assignment": clustering_k.kmeans(
        clustering_k.noise_features(n, c["dim"], 0, dist), c["k"], km)})["assignment"]


def _row(model, c, block, assignment) -> dict:
    per = clustering_k.purity_per_example(c["labels"], assignment)
    res = bootstrap_contrast(per[None], torch.ones(1), n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
    return {"model": model, "dataset": c["dataset"], "level": c["level"], "block": block,
            **clustering_k.scores(c["labels"], assignment), "purity_low": res["low"], "purity_high": res["high"],
            "k": c["k"], "n_regions": len(c["labels"]), "n_images": c["n_images"], "skipped": c["skipped"]}


def compute(models, profile: Profile, *, weights: dict | None = None, device=None, store=None) -> pd.DataFrame:
    """Purity, NMI, ARI per (model, dataset, level, block), then the noise rows (``model="noise"``, block NaN).

    Columns ``model, dataset, level, block, purity, nmi, ari, purity_low, purity_high, k, n_regions, n_images,
    skipped`` (blocks 1-based; ``purity_low/high``: the bootstrap interval over regions)."""
    models = [models] if isinstance(models, str) else list(models)
    weights = weights or {}
    rows, noise = [], {}
    for m in models:
        for c in cluster_model(m, profile, weights=weights.get(m), device=device, store=store):
            rows += [_row(m, c, b + 1, a) for b, a in enumerate(c["assignments"])]
            noise.setdefault((c["dataset"], c["level"], c["dim"]), c)
    for c in noise.values():
        rows.append({**_row(NOISE, c, float("nan"), _noise(c, profile, store)), "dim": c["dim"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- claims
OBJECT_CLAIM, PART_CLAIM, PEAK_CLAIM = "TM-5.3a", "TM-5.3b", "TM-5.3c"
LABEL_SUPERVISED = ("supervised", "image-text")
JOINT_EMBEDDING = ("self-distillation", "contrastive")
RECONSTRUCTION = ("masked-reconstruction", "masked-token-prediction")


def correct_per_region(models, profile: Profile, *, weights=None, device=None, store=None) -> dict:
    """``{(dataset, level): {model: float64 [L, R]}}``: 1 where a region's category is its cluster's majority."""
    weights = weights or {}
    out: dict = {}
    first: dict = {}
    for m in models:
        for c in cluster_model(m, profile, weights=weights.get(m), device=device, store=store):
            key = (c["dataset"], c["level"])
            if key in first and not torch.equal(first[key], c["labels"]):
                raise ValueError(f"{m!r} pooled other regions than {models[0]!r} on {key}; the paired bootstrap "
                                 "needs the same regions for every model (same patch and input size)")
            first.setdefault(key, c["labels"])
            out.setdefault(key, {})[m] = torch.stack(
                [clustering_k.purity_per_example(c["labels"], a) for a in c["assignments"]])
    return out


def _mean(group):
    return {m: 1 / len(group) for m in group}


def _seed_stats(values: dict, seeds) -> torch.Tensor | None:
    """[S] the mean over regions of each seed's per-region ``values``: the statistic whose spread is the seed floor
    (:func:`vitscope.claims.verdict.judge_contrast`); ``None`` without seeds."""
    return torch.stack([values[s].mean() for s in seeds]) if seeds else None


def _order(claim: str, correct: dict, hi: list, lo: list, what: str, base, seeds=()) -> ClaimResult:
    """Last-block purity: mean of ``hi`` minus mean of ``lo`` (expected > 0); beyond: ``base`` in place of ``lo``.
    Seed floors from the ``seeds``' last-block purity: the largest gap between two seeds."""
    if not hi or not lo:
        return cannot_check(claim, what, "the profile lacks a model of one of the two groups")
    last = {m: v[-1] for m, v in correct.items()}
    w = {**_mean(hi), **{m: -x for m, x in _mean(lo).items()}}
    beyond = {**_mean(hi), base: -1.0} if base else None
    return judge_contrast(claim, what, "last-block purity", last, w, beyond, 1, base, _seed_stats(last, seeds), seeds,
                          unit="regions")


def order_check(correct: dict, level: str, family: dict, seeds=()) -> list[ClaimResult]:
    """TM-5.3a (objects) / TM-5.3b (parts): the paper's ordering of Fig. 8 at the last block, on one level's
    ``{model: [L, R]}`` indicators. ``seeds``: untrained models of ``correct`` (at least two; fewer: no seed
    floor) whose last-block purity sets the seed floors."""
    seeds = usable_seeds(correct, seeds)
    base = untrained_baseline(list(correct))
    fam = {m: family[m] for m in correct if family[m] != "random"}
    sup = [m for m, f in fam.items() if f in LABEL_SUPERVISED]
    joint = [m for m, f in fam.items() if f in JOINT_EMBEDDING]
    rec = [m for m, f in fam.items() if f in RECONSTRUCTION]
    if level == "object":
        return [_order(OBJECT_CLAIM, correct, sup, joint, "label-supervised minus joint-embedding", base, seeds),
                _order(OBJECT_CLAIM, correct, joint, rec, "joint-embedding minus reconstruction", base, seeds)]
    fs = [m for m, f in fam.items() if f == "supervised"]
    clip = [m for m, f in fam.items() if f == "image-text"]
    others = [m for m in fam if m not in fs]
    return [_order(PART_CLAIM, correct, fs, others, "FS minus the other trained models", base, seeds),
            _order(PART_CLAIM, correct, joint, clip, "joint-embedding minus CLIP", base, seeds),
            _order(PART_CLAIM, correct, [m for m in fam if m not in rec], rec,
                   "non-reconstruction minus reconstruction", base, seeds)]


def peak_check(correct: dict, level: str, family: dict, seeds=()) -> list[ClaimResult]:
    """TM-5.3c: purity peaks before the last block: the block before the last minus the last (expected > 0), per
    trained model and pooled; beyond: minus the same difference of the untrained model.

    ``seeds``: untrained models of ``correct`` (at least two; fewer: no seed floor) whose same drop sets the floors:
    an effect must clear the largest |drop| a seed shows, its baseline contrast the largest gap between two seeds'
    drops (:func:`vitscope.kernels.stats.seed_floor`)."""
    seeds = usable_seeds(correct, seeds)
    base = untrained_baseline(list(correct))
    trained = [m for m in correct if family[m] != "random"]
    if not trained:
        return [cannot_check(PEAK_CLAIM, f"{level}s", "the profile has no trained model")]
    if next(iter(correct.values())).shape[0] < 2:
        return [cannot_check(PEAK_CLAIM, f"{level}s", "the models have one block")]
    drop = {m: v[-2] - v[-1] for m, v in correct.items()}
    measure = f"{LEVELS[level]} purity, block before the last minus the last"
    out = []
    for group, what in [(trained, f"mean of {', '.join(trained)} ({level}s)")] + [([m], f"{m} ({level}s)")
                                                                                 for m in trained]:
        beyond = {**_mean(group), base: -1.0} if base else None
        out.append(judge_contrast(PEAK_CLAIM, what, measure, drop, _mean(group), beyond, 1, base,
                                  _seed_stats(drop, seeds), seeds, unit="regions"))
    return out


def check_claims(models, profile: Profile, *, weights=None, device=None, store=None) -> list[ClaimResult]:
    """The claims of TM 5.3 (Fig. 8) on ``models`` (default: the section's ``models`` or the profile's). Object
    claims are judged on the objects dataset when the profile names one (the paper's COCO), else on PartImageNet's
    objects. The profile's untrained seeds (``baselines``) are clustered too and set the seed floors."""
    from ..models import get_cfg

    seeds = noise_seeds(profile)
    models = list(dict.fromkeys(list(models or profile.section(SECTION).get("models") or profile.models) + seeds))
    family = {m: get_cfg(m).family for m in models}
    correct = correct_per_region(models, profile, weights=weights, device=device, store=store)
    p = protocol(profile)
    objects = (p["objects_dataset"] or p["parts_dataset"], "object")
    parts = (p["parts_dataset"], "part")
    out = []
    if objects in correct:
        out += order_check(correct[objects], "object", family, seeds)
    else:
        out.append(cannot_check(OBJECT_CLAIM, "objects", "the profile names no object-level dataset"))
    if parts in correct:
        out += order_check(correct[parts], "part", family, seeds)
    else:
        out.append(cannot_check(PART_CLAIM, "parts", "the profile names no part-level dataset"))
    for key in (objects, parts):
        if key in correct:
            out += peak_check(correct[key], key[1], family, seeds)
    return out


__all__ = ["LEVELS", "NOISE", "SECTION", "check_claims", "cluster_model", "compute", "correct_per_region",
           "datasets", "open_dataset", "order_check", "peak_check", "protocol", "region_features"]

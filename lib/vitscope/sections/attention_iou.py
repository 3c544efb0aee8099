"""Teaching Matters §4.4 (Fig. 5) — IoU of 60 %-mass attention masks with object masks, per block and head; and,
beyond the paper, the same IoU for captum attributions (Integrated Gradients, Saliency).

Product: :class:`vitscope.extract.iou_products.AttentionIoU` (per image, block and head, the IoU of the CLS-row and
spatial-mean masks, streamed from the one forward pass); kernels: :mod:`vitscope.kernels.attention_iou`
(:func:`~vitscope.kernels.attention_iou.mass_mask`, :func:`~vitscope.kernels.attention_iou.iou`, the two best-head
rules) and, for the claims, :func:`vitscope.kernels.stats.bootstrap_contrast` and
:func:`~vitscope.kernels.stats.seed_floor`. Data: a COCO-format dataset (:class:`vitscope.data.coco.CocoInstances`;
the demo writes its synthetic twin with :func:`vitscope.data.twins.coco.write_coco_twin`).

Best head per block (the paper plots "the single best head per layer" without saying how it was chosen): the
original code's per-image maximum over heads is optimistic (each image picks its head after seeing its score);
the held-out rule picks one head per block on one half of the images (``split_seed``) and scores the other half.
Claims use the held-out rule.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, judge, paired_contrast
from ..data import eval_transform, transform_key
from ..data.coco import CocoInstances, mask_transform
from ..data.manifest import load_fetch_spec
from ..data.twins.coco import write_coco_twin
from ..devices import resolve_device
from ..extract import FeatureStore, extract
from ..extract.iou_products import AttentionIoU
from ..extract.run import dataset_identity
from ..kernels import attention_iou as iou_k
from ..kernels.stats import bootstrap_contrast, seed_floor
from ..profiles import Profile
from .common import load_for_analysis

SECTION = "attention_iou"
#: Fig. 5's two panels: the CLS row (left) and the mean of the spatial rows (right).
MAPS = {"cls": "CLS token", "spatial": "mean of spatial tokens"}
RULES = {"held_out": "one head per block, chosen on the other half", "per_image_max": "per-image best head"}
#: Attribution methods of the captum part (captum.attr class names).
ATTRIBUTIONS = {"integrated_gradients": "IntegratedGradients", "saliency": "Saliency"}
#: Defaults of the profile's ``attention_iou`` keys.
DEFAULTS = {"mass": iou_k.MASS, "split_seed": 0, "n_images": None, "captum_images": 16, "captum_steps": 16,
            "captum_target": "feature_norm"}


def settings(profile: Profile) -> dict:
    """The section's settings, the profile's values over :data:`DEFAULTS`."""
    spec = profile.section(SECTION)
    return {**DEFAULTS, **{k: v for k, v in spec.items() if v is not None}}


# ------------------------------------------------------------------------------------------------------- data
def coco_dataset(profile: Profile, name: str, preprocess, limit: int | None = None) -> CocoInstances:
    """The profile's COCO-format dataset ``name`` with a model's eval transforms (image and mask), writing its
    synthetic twin first where the entry has a ``synthetic: {n_images, size, seed}`` block."""
    spec = profile.dataset_spec(name, named_by="attention_iou.dataset")
    fetch = load_fetch_spec(spec["manifest"])
    if fetch.format != "coco":
        raise ValueError(f"Dataset {name!r} (manifest {fetch.name!r}) is in format {fetch.format!r}; the attention "
                         "IoU reads COCO-format instance masks (e.g. manifest coco_val2017)")
    root = profile.dataset_root(name)
    if "synthetic" in spec:
        syn = spec["synthetic"]
        write_coco_twin(root, int(syn.get("n_images", 200)), int(syn.get("size", 96)), int(syn.get("seed", 0)))
    return CocoInstances(root, transform=eval_transform(preprocess), mask_transform=mask_transform(preprocess),
                         limit=limit, name=fetch.name, fetch=f"vitscope data fetch {fetch.name} --root {{root}}")


# ------------------------------------------------------------------------------------------------- extraction
def compute(model: str, profile: Profile, *, weights=None, device=None, store=None, progress: bool = False) -> dict:
    """The cached per-image IoUs of ``model`` on the section's dataset: ``{"cls", "spatial", "cls_pixel",
    "spatial_pixel": float32 [N, L, H], "object_share": [N], "order": [N]}`` (images in extraction order)."""
    cfg_s = settings(profile)
    device = resolve_device(device or profile.device)
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = coco_dataset(profile, cfg_s["dataset"], cfg.preprocess, cfg_s["n_images"])
    product = AttentionIoU(mass=float(cfg_s["mass"]), masks=dataset.manifest.annotations)
    out = extract(net, ident, dataset, {"iou": product}, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, progress=progress)
    return {**out["iou"], "order": out["_meta"]["order"]}


def best_head_values(result: dict, maps: str, rule: str, split_seed: int) -> torch.Tensor:
    """Per image and block, the best head's IoU by ``rule``: float64 [n, L] (``held_out``: the scoring half's
    images only, in index order of the extraction)."""
    scores = result[maps]
    if rule == "per_image_max":
        return iou_k.best_head_per_image(scores)
    if rule == "held_out":
        return iou_k.held_out_best_head(scores, split_seed)["iou"]
    raise ValueError(f"rule={rule!r}; choose from {sorted(RULES)}")


def _interval(values: torch.Tensor) -> tuple[float, float]:
    from ..claims.verdict import CONFIDENCE, N_RESAMPLES, SEED

    res = bootstrap_contrast(values[None], torch.ones(1), n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
    return res["low"], res["high"]


def layer_table(model: str, result: dict, split_seed: int = 0) -> pd.DataFrame:
    """Per map, rule and block (1-based): ``model, tokens, rule, block, iou, low, high, best_head, n_images``: the
    mean IoU with its bootstrap interval over images. Rules: ``held_out`` (``best_head``: the head chosen on the
    other half), ``per_image_max`` (all images), ``mean_head`` (IoU averaged over heads) and ``held_out_pixel`` (the
    held-out rule on pixel-level IoU); ``best_head`` is -1 for the rules that choose no single head."""
    rows = []
    for m in MAPS:
        held = iou_k.held_out_best_head(result[m], split_seed)
        held_pixel = iou_k.held_out_best_head(result[f"{m}_pixel"], split_seed)
        per_rule = {"held_out": (held["iou"], held["head"]),
                    "per_image_max": (iou_k.best_head_per_image(result[m]), None),
                    "mean_head": (result[m].double().mean(-1), None),
                    "held_out_pixel": (held_pixel["iou"], held_pixel["head"])}
        for rule, (values, heads) in per_rule.items():
            for b in range(values.shape[1]):
                low, high = _interval(values[:, b])
                rows.append({"model": model, "tokens": m, "rule": rule, "block": b + 1,
                             "iou": float(values[:, b].mean()), "low": low, "high": high,
                             "best_head": -1 if heads is None else int(heads[b]), "n_images": values.shape[0]})
    return pd.DataFrame(rows)


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, map and rule of a :func:`layer_table`: the best block, its IoU, the last block's IoU and their
    difference (``last - best``, <= 0). Columns ``model, tokens, rule, best_block, best, last, last_minus_best``."""
    rows = []
    for (model, maps, rule), g in table.groupby(["model", "tokens", "rule"], sort=False):
        best = g.loc[g.iou.idxmax()]
        last = g.loc[g.block.idxmax()]
        rows.append({"model": model, "tokens": maps, "rule": rule, "best_block": int(best.block), "best": best.iou,
                     "last": last.iou, "last_minus_best": last.iou - best.iou})
    return pd.DataFrame(rows)


def rule_gap(results: dict[str, dict], split_seed: int = 0) -> pd.DataFrame:
    """How optimistic the per-image maximum is, on the same images: per model and map, the mean IoU over the
    scoring half's images and all blocks of the per-image best head and of the held-out best head, and their gap
    (>= 0). ``results``: ``{model: compute(...)}``. Columns ``model, tokens, per_image_max, held_out, gap``."""
    rows = []
    for model, result in results.items():
        for m in MAPS:
            held = iou_k.held_out_best_head(result[m], split_seed)
            best = float(iou_k.best_head_per_image(result[m])[held["score"]].mean())
            fixed = float(held["iou"].mean())
            rows.append({"model": model, "tokens": m, "per_image_max": best, "held_out": fixed, "gap": best - fixed})
    return pd.DataFrame(rows)


def head_table(model: str, result: dict) -> pd.DataFrame:
    """Mean IoU over all images per map, block (1-based) and head: ``model, tokens, block, head, iou``."""
    rows = []
    for m in MAPS:
        mean = result[m].double().mean(0)                                          # [L, H]
        L, H = mean.shape
        rows.append(pd.DataFrame({"model": model, "tokens": m, "block": np.repeat(np.arange(1, L + 1), H),
                                  "head": np.tile(np.arange(H), L), "iou": mean.reshape(-1).numpy()}))
    return pd.concat(rows, ignore_index=True)


# --------------------------------------------------------------------------------------------------- captum
def _target_fn(net, target: str):
    """The scalar per image that the attributions explain."""
    if target == "feature_norm":
        return lambda x: net.forward_features(x)[:, 0].norm(dim=-1)       # the CLS token after the final norm
    if target == "class_score":
        if not getattr(net, "num_classes", 0):
            raise ValueError("captum_target='class_score' needs a model with a classification head; this one has "
                             "none (num_classes=0): use 'feature_norm'")
        return lambda x: net(x).max(-1).values                              # the predicted class's logit
    raise ValueError(f"captum_target={target!r}; choose 'feature_norm' or 'class_score'")


#: Bump when the attribution IoUs would change for the same inputs and settings.
ATTRIBUTION_VERSION = 1


def attribution_iou(model: str, profile: Profile, *, weights=None, device=None, store=None) -> pd.DataFrame:
    """IoU of the 60 %-mass masks of captum attributions with the object masks, on the first ``captum_images``
    images of the section's dataset: ``model, method, image, iou``. Attributions are reduced to the token grid by
    summing |attribution| over channels and each patch's pixels; Integrated Gradients integrates from the all-zero
    input (the mean image after normalisation) in ``captum_steps`` steps. Cached by the feature store."""
    from captum.attr import IntegratedGradients, Saliency

    s = settings(profile)
    device = resolve_device(device or profile.device)
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = coco_dataset(profile, s["dataset"], cfg.preprocess, s["n_images"])
    n = min(int(s["captum_images"]), len(dataset))
    key = {"model": ident, "dataset": dataset_identity(dataset), "masks": dataset.manifest.annotations, "n": n,
           "steps": int(s["captum_steps"]), "target": s["captum_target"], "mass": float(s["mass"]),
           "transform": transform_key(cfg.preprocess), "version": ATTRIBUTION_VERSION}

    def run() -> dict[str, torch.Tensor]:
        items = [dataset[i] for i in range(n)]
        x = torch.stack([im for im, _, _ in items]).to(device).requires_grad_()
        masks = torch.stack([e["object_mask"] for _, _, e in items])
        grid = tuple(int(g) for g in (x.shape[-2] // net.patch_embed.patch_size[0],
                                      x.shape[-1] // net.patch_embed.patch_size[1]))
        target = iou_k.mask_to_grid(masks, grid)
        fn = _target_fn(net.eval(), s["captum_target"])
        attributions = {"integrated_gradients": IntegratedGradients(fn).attribute(
                            x, baselines=torch.zeros_like(x), n_steps=int(s["captum_steps"])),
                        "saliency": Saliency(fn).attribute(x, abs=True)}
        return {k: iou_k.iou(iou_k.mass_mask(iou_k.patch_sums(a.detach().cpu(), grid), float(s["mass"])),
                             target).float() for k, a in attributions.items()}

    out = (store or FeatureStore()).memo(model, "captum_iou", key, run)
    return pd.concat([pd.DataFrame({"model": model, "method": k, "image": np.arange(len(v)),
                                    "iou": v.double().numpy()}) for k, v in out.items()], ignore_index=True)


# ------------------------------------------------------------------------------------------------------ claims
EXPLICIT = ("supervised", "image-text")            # FS, CLIP
IMAGE_TEXT = "image-text"                          # CLIP
DROP_CLAIM, SPATIAL_CLAIM = "TM-4.4a", "TM-4.4d"


def halves(depth: int) -> tuple[list[int], list[int]]:
    """0-based blocks of the first and the second half (the "middle of the network" separates them)."""
    return list(range(depth // 2)), list(range(depth // 2, depth))


def drop_per_image(values: torch.Tensor) -> torch.Tensor:
    """Per image, mean IoU over the first half of the blocks minus over the second half: [n] (``values`` [n, L])."""
    first, second = halves(values.shape[1])
    return values[:, first].mean(1) - values[:, second].mean(1)


def last_rise_per_image(values: torch.Tensor) -> torch.Tensor:
    """Per image, the last block's IoU minus the block before: [n]."""
    return values[:, -1] - values[:, -2]


def _floor(seed_stats: dict[str, float], weights) -> float | None:
    return seed_floor(torch.tensor(list(seed_stats.values())), list(weights)) if len(seed_stats) >= 2 else None


def _model_rows(claim, models, stat, family, base, measure, expected, seeds) -> list[ClaimResult]:
    """One row per model in ``models``: its statistic minus the untrained baseline's (effect and baseline contrast
    alike), with the seed floor of that difference."""
    seed_means = {s: float(stat[s].mean()) for s in seeds}
    out = []
    for m in models:
        if base is None:
            out.append(cannot_check(claim, m, "no untrained baseline of the same architecture in this profile"))
            continue
        effect = paired_contrast(stat, {m: 1.0, base: -1.0}, unit="images")
        f = _floor(seed_means, [1.0, -1.0])
        out.append(judge(claim, m, f"{measure} minus `{base}`'s", effect, effect, expected, base, f, f, seeds))
    return out


def claims_from_results(results: dict[str, dict], split_seed: int = 0, seeds=()) -> list[ClaimResult]:
    """TM-4.4a (FS's and CLIP's CLS-mask IoU drops around the middle: first-half minus second-half mean IoU > 0)
    and TM-4.4d's second part (CLIP's spatial-mean IoU rises in the last block: last minus the one before > 0),
    on the held-out best head, from :func:`compute` results of several models on the same images. The first
    TM-4.4a row pools FS and CLIP; beyond the baseline: minus the untrained model's drop. ``seeds``: untrained
    models among ``results`` whose statistics set the seed floors."""
    from ..models import get_cfg

    names = list(results)
    family = {m: get_cfg(m).family for m in names}
    base = untrained_baseline(names)
    seeds = tuple(seeds)

    def stat(maps, fn):
        return {m: fn(best_head_values(r, maps, "held_out", split_seed)) for m, r in results.items()}

    drop = stat("cls", drop_per_image)
    explicit = [m for m in names if family[m] in EXPLICIT]
    measure = "CLS-mask IoU of the held-out best head, first-half minus second-half blocks"
    out: list[ClaimResult] = []
    if not explicit:
        out.append(cannot_check(DROP_CLAIM, "FS and CLIP", "the profile has no explicitly supervised model"))
    else:
        w = {m: 1 / len(explicit) for m in explicit}
        seed_means = {s: float(drop[s].mean()) for s in seeds}
        beyond = paired_contrast(drop, {**w, base: -1.0}, unit="images") if base else None
        effect = paired_contrast(drop, w, unit="images")
        out.append(judge(DROP_CLAIM, f"mean of {', '.join(explicit)}", measure, effect, beyond, 1,
                         base, _floor(seed_means, list(w.values())),
                         _floor(seed_means, [*w.values(), -1.0]) if base else None, seeds))
        out += _model_rows(DROP_CLAIM, explicit, drop, family, base, measure, 1, seeds)
    clip = [m for m in names if family[m] == IMAGE_TEXT]
    if not clip:
        out.append(cannot_check(SPATIAL_CLAIM, "CLIP", "the profile has no image-text model"))
    else:
        rise = stat("spatial", last_rise_per_image)
        out += _model_rows(SPATIAL_CLAIM, clip, rise, family, base,
                           "spatial-mean-mask IoU of the held-out best head, last block minus the one before", 1,
                           seeds)
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """The checked claims of TM 4.4 (:func:`claims_from_results`) on ``models`` (default: the profile's), with the
    profile's untrained seeds (``baselines``) extracted too for the seed floor."""
    models = list(models or profile.models)
    seeds = noise_seeds(profile)
    weights = weights or {}
    results = {m: compute(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
               for m in dict.fromkeys(models + seeds)}
    return claims_from_results(results, int(settings(profile)["split_seed"]), seeds)


__all__ = ["ATTRIBUTIONS", "MAPS", "RULES", "attribution_iou", "best_head_values", "check_claims",
           "claims_from_results", "coco_dataset", "compute", "drop_per_image", "head_table", "last_rise_per_image",
           "layer_table", "rule_gap", "settings", "summary_table"]

"""Objectives Matter App. C (Tables 6-7) — frozen vs fine-tuned ViT backbones for COCO detection and instance
segmentation.

Pipeline: :func:`vitscope.detection.run` trains a ViTDet Mask R-CNN (:mod:`vitscope.detection.vitdet`) per
(model, mode) with the profile's recipe (:mod:`vitscope.detection.recipes`) and caches its predictions; this module
scores them with pycocotools (:func:`vitscope.detection.evaluate.summary`) and checks the paper's reading with AP
recomputed on paired bootstrap resamples of the evaluation images (:func:`~vitscope.detection.evaluate.resampled_ap`).

Profile section ``detection``: ``models``, ``modes`` (frozen / finetuned / frozen-multi), ``train_dataset`` +
``train_split`` and ``val_dataset`` + ``val_split`` (COCO-format data; a ``synthetic`` entry writes the twin in
that split), ``recipe`` (demo / vitdet-b-100ep) and ``areas`` (``coco`` size ranges or ``terciles`` of the
evaluated objects). The intervals cover which images are evaluated, not the training seed: one detector is trained
per (model, mode), and the untrained baseline is the check that a difference needs pre-training.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..claims.baseline import untrained_baseline
from ..claims.verdict import CONFIDENCE, N_RESAMPLES, SEED, ClaimResult, Interval, cannot_check, judge
from ..devices import resolve_device
from ..profiles import Profile

SECTION = "detection"
DEFAULTS = {"modes": ["frozen", "finetuned"], "train_split": "train2017", "val_split": "val2017",
            "recipe": "demo", "areas": "coco"}
TASKS = {"box": "detection (box AP)", "mask": "segmentation (mask AP)"}
RECONSTRUCTION, JOINT_EMBEDDING = ("masked-reconstruction",), ("contrastive", "self-distillation")

#: OM Tables 6 (frozen) and 7 (fine-tuned), COCO val2017, ViT-B/16 backbones, as printed. Table 7's DINO mask AP
#: (30.04) repeats Table 6's and is below its own AP_small and AP_large: likely a typo in the paper, kept as printed.
PAPER_TABLES = {
    ("frozen", "MAE"): {"box": (30.25, 39.93, 18.69), "mask": (28.56, 41.73, 14.37)},
    ("frozen", "MoCo-v3"): {"box": (28.75, 40.21, 15.49), "mask": (26.67, 41.92, 10.89)},
    ("frozen", "DINO"): {"box": (32.57, 44.14, 19.89), "mask": (30.04, 45.77, 14.37)},
    ("frozen", "DINO (w/o multi-crop)"): {"box": (29.97, 40.82, 17.55), "mask": (28.16, 42.53, 12.99)},
    ("finetuned", "MAE"): {"box": (51.57, 66.36, 35.27), "mask": (45.84, 63.84, 27.27)},
    ("finetuned", "MoCo-v3"): {"box": (48.81, 64.83, 32.79), "mask": (43.18, 62.86, 23.78)},
    ("finetuned", "DINO"): {"box": (47.73, 62.49, 32.17), "mask": (30.04, 60.03, 24.28)},
}


def settings(profile: Profile) -> dict:
    spec = profile.section(SECTION)
    return {**DEFAULTS, **{k: v for k, v in spec.items() if v is not None}}


def models_of(profile: Profile) -> list[str]:
    return list(settings(profile).get("models") or profile.models)


def paper_table() -> pd.DataFrame:
    """Tables 6-7 as rows ``mode, model, task, AP, AP_large, AP_small`` (percent, COCO val2017, the paper's)."""
    return pd.DataFrame([{"mode": mode, "model": model, "task": task, "AP": v[0], "AP_large": v[1], "AP_small": v[2]}
                         for (mode, model), tasks in PAPER_TABLES.items() for task, v in tasks.items()])


def open_split(profile: Profile, name: str, split: str):
    """The profile's COCO-format dataset ``name``, split ``split``, as :class:`~vitscope.data.coco.CocoInstances`
    (a ``synthetic: {n_images, size, seed}`` entry writes its twin in that split first)."""
    from ..data.coco import CocoInstances
    from ..data.twins.coco import write_coco_twin

    spec = (profile.raw.get("datasets") or {}).get(name)
    if spec is None:
        raise KeyError(f"Profile {profile.name!r} defines no dataset {name!r} (its detection section names it); it "
                       f"has {sorted(profile.raw.get('datasets') or {})}.")
    root = profile.dataset_root(name)
    if "synthetic" in spec:
        syn = spec["synthetic"]
        write_coco_twin(root, int(syn.get("n_images", 200)), int(syn.get("size", 96)), int(syn.get("seed", 0)),
                        split=split)
    return CocoInstances(root, split, name=f"{spec['manifest']}:{name}")


def runs(profile: Profile, *, models=None, device=None, progress: bool = False) -> dict:
    """Train (or find) every (model, mode) of the profile: ``{(model, mode): card}``, plus ``"val"``: the
    evaluation data."""
    from ..detection import run

    s = settings(profile)
    train = open_split(profile, s["train_dataset"], s["train_split"])
    val = open_split(profile, s["val_dataset"], s["val_split"])
    out = {"val": val}
    for m in models or models_of(profile):
        for mode in s["modes"]:
            out[(m, mode)] = run(m, mode, s["recipe"], train, val, device=resolve_device(device or profile.device),
                                 progress=progress)
    return out


def compute(profile: Profile, *, models=None, device=None, progress: bool = False) -> pd.DataFrame:
    """COCO AP per (model, mode, task): ``model, mode, task, AP, AP50, AP75, AP_small, AP_medium, AP_large,
    train_time_s, train_images, val_images`` (percent; NaN where no object has that size)."""
    from ..detection.evaluate import summary
    from ..detection.train import predictions

    s, done = settings(profile), runs(profile, models=models, device=device, progress=progress)
    val = done.pop("val")
    rows = []
    for (m, mode), card in done.items():
        for task, stats in summary(val.coco, predictions(card), img_ids=val.image_ids, areas=s["areas"]).items():
            rows.append({"model": m, "mode": mode, "task": task, **stats, "train_time_s": card["train_time_s"],
                         "train_images": card["train_images"], "val_images": card["val_images"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the claims
def resampled(profile: Profile, *, models=None, device=None) -> dict:
    """``{(model, mode, task, area): float [B + 1]}``: AP on the full evaluation set (index 0) and on the shared
    bootstrap resamples of its images (1..B), ``area`` in all / small / large."""
    from ..detection.evaluate import area_ranges, bootstrap_counts, evaluate, match_tables, resampled_ap
    from ..detection.train import predictions

    s, done = settings(profile), runs(profile, models=models, device=device)
    val = done.pop("val")
    ids = sorted(val.image_ids)
    ranges = area_ranges(val.coco, ids, s["areas"])
    counts = np.vstack([np.ones((1, len(ids))), bootstrap_counts(len(ids), N_RESAMPLES, SEED)])
    out = {}
    for (m, mode), card in done.items():
        for iou_type, task in (("bbox", "box"), ("segm", "mask")):
            ev = evaluate(val.coco, predictions(card), iou_type, img_ids=ids, areas=ranges)
            for area in ("all", "small", "large"):
                out[(m, mode, task, area)] = (np.zeros(len(counts)) if ev is None
                                              else resampled_ap(match_tables(ev, area), counts))
    return out


def _interval(values: np.ndarray) -> Interval:
    lo, hi = np.nanquantile(values[1:], [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Interval(float(values[0]), float(lo), float(hi), len(values) - 1, "image resamples")


def _families(models) -> dict[str, str]:
    from ..models import get_cfg

    return {m: get_cfg(m).family for m in models}


def _contrast(claim, ap, mode, task, area, side, others, expected, base, what) -> ClaimResult:
    """``side`` minus the mean of ``others`` (AP in ``mode``, ``task``, ``area``); beyond the baseline: the same
    with the untrained ``base`` in place of ``side``."""
    key = lambda m: (m, mode, task, area)  # noqa: E731
    if any(key(m) not in ap for m in [side, *others]):
        return cannot_check(claim, f"{side} vs {', '.join(others)}", f"no {mode} run of these models")
    rest = np.mean([ap[key(m)] for m in others], axis=0)
    effect = _interval(ap[key(side)] - rest)
    beyond = _interval(ap[key(side)] - ap[key(base)]) if base and key(base) in ap else None
    return judge(claim, f"{side} minus {' and '.join(others) if len(others) > 1 else others[0]} ({mode})",
                 f"{TASKS[task]}{'' if area == 'all' else f', {area} objects'}: {what}", effect, beyond, expected,
                 base)


def check_claims(models, profile: Profile, *, device=None, store=None) -> list[ClaimResult]:
    """OM App. C on the profile's runs: ``OM-C.a`` frozen MAE beats frozen MoCo-v3 (box and mask AP); ``OM-C.b``
    frozen reconstruction below joint-embedding on large objects and above on small ones; ``OM-C.c`` frozen with
    intermediate blocks beats the last block alone (needs mode frozen-multi); ``OM-C.d`` fine-tuned MAE beats
    MoCo-v3 and DINO on large and small objects. Differences in AP (fraction), paired over image resamples.
    ``store`` is accepted for the ledger's common call (detection keeps its own cache)."""
    models = list(models or models_of(profile))
    ap = resampled(profile, models=models, device=device)
    fam = _families(models)
    rec = [m for m in models if fam[m] in RECONSTRUCTION]
    moco = [m for m in models if fam[m] == "contrastive"]
    je = [m for m in models if fam[m] in JOINT_EMBEDDING]
    base = untrained_baseline(models)
    modes = settings(profile)["modes"]
    out = []
    if not rec or not moco:
        out.append(cannot_check("OM-C.a", "MAE vs MoCo-v3", "the profile lacks a reconstruction or a contrastive "
                                                            "model"))
    else:
        out += [_contrast("OM-C.a", ap, "frozen", t, "all", rec[0], [moco[0]], 1, base, "AP difference")
                for t in TASKS]
    if not rec or not je:
        out.append(cannot_check("OM-C.b", "reconstruction vs joint-embedding", "the profile lacks one of them"))
    else:
        for area, sign in (("large", -1), ("small", 1)):
            out += [_contrast("OM-C.b", ap, "frozen", t, area, rec[0], je, sign, base, "AP difference")
                    for t in TASKS]
    if "frozen-multi" not in modes:
        out.append(cannot_check("OM-C.c", "intermediate blocks", "the profile's detection modes lack frozen-multi "
                                                                 "(the last four blocks into the pyramid)"))
    else:
        for m in [x for x in models if fam[x] != "random"]:
            for t in TASKS:
                gain = ap[(m, "frozen-multi", t, "all")] - ap[(m, "frozen", t, "all")]
                base_gain = (ap[(base, "frozen-multi", t, "all")] - ap[(base, "frozen", t, "all")]) if base else None
                effect = _interval(gain)
                beyond = _interval(gain - base_gain) if base else None
                out.append(judge("OM-C.c", f"{m}: last four blocks minus last block (frozen)",
                                 f"{TASKS[t]}: AP difference", effect, beyond, 1, base))
    if not rec or not je or "finetuned" not in modes:
        out.append(cannot_check("OM-C.d", "fine-tuned MAE vs joint-embedding", "the profile lacks a reconstruction "
                                                                               "or joint-embedding model, or the "
                                                                               "finetuned mode"))
    else:
        for area in ("large", "small"):
            out += [_contrast("OM-C.d", ap, "finetuned", t, area, rec[0], [m], 1, base, "AP difference")
                    for t in TASKS for m in je]
    return out


__all__ = ["PAPER_TABLES", "SECTION", "TASKS", "check_claims", "compute", "models_of", "open_split", "paper_table",
           "resampled", "runs", "settings"]

"""COCO AP of a detector (box and mask: AP, AP50, AP75, AP by object size) with pycocotools' ``COCOeval``, and the
same AP recomputed on bootstrap resamples of the images, for the claims' intervals.

Predictions become COCO's results format (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score``,
``segmentation``: the mask thresholded at 0.5, as an RLE from ``pycocotools.mask.encode``). Object sizes: COCO's
``area`` ranges (small < 32², large > 96² px²) or, for data whose objects are all of one COCO size (the synthetic
twin's fill half the image or more), the terciles of the evaluated ground-truth areas ("smaller", "middle",
"larger" third), named so on the page.

:func:`resampled_ap` repeats ``COCOeval.accumulate`` for AP (101-point interpolated precision, mean over IoU
thresholds 0.50:0.95 and categories) with each image counted as often as a bootstrap resample draws it. With every
image drawn once it equals ``COCOeval``'s AP (tested), so the intervals are intervals of the page's numbers.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from tqdm.auto import tqdm

IOU_TYPES = {"bbox": "box", "segm": "mask"}
#: COCOeval's summary, in the order of ``COCOeval.stats[:6]``.
STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
AREA_LABELS = ("all", "small", "medium", "large")


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


@torch.no_grad()
def predict(detector, data, *, device="cpu", batch_size: int = 8, progress: bool = False,
            mask_threshold: float = 0.5) -> list[dict]:
    """COCO results of ``detector`` (eval mode) on ``data`` (:class:`~vitscope.detection.train.InstanceTargets`)."""
    from pycocotools import mask as mask_utils

    detector.eval().to(device)
    out = []
    for start in tqdm(range(0, len(data), batch_size), desc="predict", disable=not progress, mininterval=2.0):
        idx = range(start, min(start + batch_size, len(data)))
        preds = detector([data[i][0].to(device) for i in idx])
        for i, p in zip(idx, preds):
            masks = (p["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
            for box, score, label, m in zip(p["boxes"].cpu().tolist(), p["scores"].cpu().tolist(),
                                            p["labels"].cpu().tolist(), masks):
                rle = mask_utils.encode(np.asfortranarray(m))
                out.append({"image_id": data.image_id(i), "category_id": data.cat_ids[label - 1],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": float(score),
                            "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}})
    return out


def area_ranges(coco_gt, img_ids, mode: str = "coco") -> list[list[float]]:
    """COCOeval's ``areaRng`` for labels all/small/medium/large: COCO's (``"coco"``: 32², 96² px²) or the terciles
    of the non-crowd ground-truth areas of ``img_ids`` (``"terciles"``)."""
    if mode == "coco":
        return [[0, 1e10], [0, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e10]]
    if mode != "terciles":
        raise ValueError(f"area ranges {mode!r}: choose 'coco' (COCO's 32² and 96² px²) or 'terciles' (of the "
                         "evaluated objects' areas)")
    areas = [a["area"] for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=list(img_ids))) if not a.get("iscrowd")]
    if not areas:
        raise ValueError("no ground-truth objects among the evaluated images; nothing to split into terciles")
    q1, q2 = np.quantile(areas, [1 / 3, 2 / 3])
    return [[0, 1e10], [0, float(q1)], [float(q1), float(q2)], [float(q2), 1e10]]


def evaluate(coco_gt, results: list[dict], iou_type: str, *, img_ids=None, areas=None):
    """A ``COCOeval`` of ``results`` on ``coco_gt`` restricted to ``img_ids`` (default: every image), evaluated,
    accumulated and summarised (its ``stats``); ``areas``: :func:`area_ranges`' list (default COCO's).
    ``None`` when there are no results (AP 0 by definition)."""
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type {iou_type!r}: choose from {sorted(IOU_TYPES)}")
    ids = sorted(coco_gt.getImgIds() if img_ids is None else img_ids)
    results = [r for r in results if r["image_id"] in set(ids)]
    if not results:
        return None
    dt = _quiet(coco_gt.loadRes, [dict(r) for r in results])   # loadRes writes into its inputs
    ev = COCOeval(coco_gt, dt, iou_type)
    ev.params.imgIds = ids
    ev.params.areaRng = areas or area_ranges(coco_gt, ids)
    ev.params.areaRngLbl = list(AREA_LABELS)
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _quiet(ev.summarize)
    return ev


def summary(coco_gt, results, *, img_ids=None, areas: str = "coco") -> dict:
    """``{"box": {AP, AP50, AP75, AP_small, AP_medium, AP_large}, "mask": {...}}`` in percent (COCO's convention
    and the paper's tables); NaN where COCOeval has no object of that size (its -1)."""
    ids = sorted(coco_gt.getImgIds() if img_ids is None else img_ids)
    ranges = area_ranges(coco_gt, ids, areas)
    out = {}
    for iou_type, name in IOU_TYPES.items():
        ev = evaluate(coco_gt, results, iou_type, img_ids=ids, areas=ranges)
        stats = np.zeros(len(STATS)) if ev is None else np.asarray(ev.stats[:len(STATS)], dtype=float)
        out[name] = {k: (float("nan") if v < 0 else 100 * float(v)) for k, v in zip(STATS, stats)}
    return out


# ---------------------------------------------------------------- AP on bootstrap resamples of the images
def match_tables(ev, area: str = "all") -> dict:
    """What ``COCOeval.accumulate`` reads, per category, for one area range and the largest ``maxDets``:
    ``{"img_ids": [I], "categories": [{"image": int [D], "tp": bool [T, D], "fp": bool [T, D], "gt": int [I]}]}``
    with detections in COCOeval's order (score descending, stable)."""
    p = ev.params
    a = list(p.areaRngLbl).index(area)
    n_a, n_i, max_det = len(p.areaRng), len(p.imgIds), p.maxDets[-1]
    cats = []
    for k in range(len(p.catIds)):
        entries = [(i, ev.evalImgs[k * n_a * n_i + a * n_i + i]) for i in range(n_i)]
        entries = [(i, e) for i, e in entries if e is not None]
        gt = np.zeros(n_i, dtype=np.int64)
        for i, e in entries:
            gt[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        if not entries:
            cats.append({"image": np.zeros(0, np.int64), "tp": np.zeros((len(p.iouThrs), 0), bool),
                         "fp": np.zeros((len(p.iouThrs), 0), bool), "gt": gt})
            continue
        scores = np.concatenate([e["dtScores"][:max_det] for _, e in entries])
        order = np.argsort(-scores, kind="mergesort")
        image = np.concatenate([np.full(len(e["dtScores"][:max_det]), i) for i, e in entries])[order]
        matched = np.concatenate([e["dtMatches"][:, :max_det] for _, e in entries], axis=1)[:, order] > 0
        ignored = np.concatenate([e["dtIgnore"][:, :max_det] for _, e in entries], axis=1)[:, order] > 0
        cats.append({"image": image, "tp": matched & ~ignored, "fp": ~matched & ~ignored, "gt": gt})
    return {"img_ids": list(p.imgIds), "categories": cats, "rec_thrs": np.asarray(p.recThrs)}


def resampled_ap(tables: dict, counts: np.ndarray) -> np.ndarray:
    """AP (fraction, not percent) of :func:`match_tables` with image ``i`` counted ``counts[b, i]`` times, for each
    row ``b`` of ``counts`` (int [B, I]); NaN where no category has a ground-truth object in the resample."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != len(tables["img_ids"]):
        raise ValueError(f"counts must be [B, {len(tables['img_ids'])}] (one column per evaluated image); got "
                         f"{counts.shape}")
    rec = tables["rec_thrs"]
    n_b = len(counts)
    total, terms = np.zeros(n_b), np.zeros(n_b)
    for cat in tables["categories"]:
        npig = counts @ cat["gt"]                                   # [B]
        has = npig > 0
        n_t, n_d = cat["tp"].shape
        terms += has * n_t * len(rec)
        if n_d == 0:
            continue                                                # precision 0 at every recall: adds nothing
        w = counts[:, cat["image"]]                                 # [B, D]
        for t in range(n_t):
            tp = np.cumsum(w * cat["tp"][t], axis=1)
            fp = np.cumsum(w * cat["fp"][t], axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                rc = np.where(has[:, None], tp / np.where(has, npig, 1)[:, None], 0.0)
            pr = tp / (tp + fp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            # one searchsorted for all rows: row b's recalls (in [0, 1]) shifted by 2b stay sorted
            shift = 2.0 * np.arange(n_b)[:, None]
            idx = np.searchsorted((rc + shift).ravel(), (rec[None] + shift).ravel(), side="left").reshape(n_b, -1)
            idx -= np.arange(n_b)[:, None] * n_d
            inside = idx < n_d
            q = np.where(inside, np.take_along_axis(pr, np.minimum(idx, n_d - 1), axis=1), 0.0)
            total += has * q.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(terms > 0, total / np.maximum(terms, 1), np.nan)


def bootstrap_counts(n_images: int, n_resamples: int, seed: int) -> np.ndarray:
    """int [n_resamples, n_images]: how often each image is drawn, from
    :func:`vitscope.kernels.stats.bootstrap_indices` (one draw shared by every model: paired)."""
    from ..kernels.stats import bootstrap_indices

    idx = bootstrap_indices(n_images, n_resamples, seed).numpy()
    return np.stack([np.bincount(row, minlength=n_images) for row in idx])


__all__ = ["AREA_LABELS", "IOU_TYPES", "STATS", "area_ranges", "bootstrap_counts", "evaluate", "match_tables",
           "predict", "resampled_ap", "summary"]

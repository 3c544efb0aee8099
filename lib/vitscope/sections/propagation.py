"""DAVIS-2017 video label propagation after every block: Teaching Matters §6.2 (Fig. 10, left; Table 1).

Per video, every frame's dense token grid comes from the paper's tiling (:func:`vitscope.extract.dense.dense_tokens`,
TM App. B.4); the first frame's annotation is propagated through the video by DINO's protocol
(:func:`vitscope.kernels.propagation.propagate_video`: the first frame and the previous ``n_last_frames`` frames as
context, affinity softmax at ``temperature`` over the ``topk`` best sources within ``neighbourhood`` tokens), once per
block; each predicted frame is scored against its annotation with J and F as ``davis2017-evaluation`` defines them
(:mod:`vitscope.kernels.segmentation_metrics`; first and last frames skipped). Features are block outputs, before the
final LayerNorm.

The profile's ``davis`` section holds the protocol (``dataset, n_last_frames, neighbourhood, topk, temperature,
blocks``); its dataset is a DAVIS root (``manifest: davis2017``), or the synthetic twin
(:func:`vitscope.data.twins.davis.write_davis_twin`) when the dataset has a ``synthetic`` entry
(``{n_videos, n_frames, size, seed}``).

Results are cached per (model, video, protocol) in the feature store: per object and frame, J and F at every block.
"""
from __future__ import annotations

import contextlib
from itertools import chain

import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import (
    ClaimResult,
    cannot_check,
    depth_seed_floor,
    group_weights,
    judge,
    judge_contrast,
    judge_depth_contrast,
    paired_contrast,
)
from ..data.davis import DavisVideos, read_frame
from ..data.twins.davis import write_davis_twin
from ..devices import one_cpu_thread, resolve_device
from ..extract import FeatureStore
from ..extract.dense import SHORT_SIDE_FACTOR, dense_tokens, model_geometry, resize_mask
from ..kernels import propagation as prop
from ..kernels import segmentation_metrics as seg
from ..profiles import Profile
from .common import load_for_analysis

SECTION = "davis"
#: DINO's ``eval_video_segmentation.py`` defaults (TM follows them).
DEFAULTS = {"n_last_frames": prop.N_LAST_FRAMES, "neighbourhood": prop.RADIUS, "topk": prop.TOPK,
            "temperature": prop.TEMPERATURE, "blocks": None}
#: Bump when the scores of cached inputs would change for the same protocol.
SCORES_VERSION = 1
METRICS = {"jf": "J&F", "j": "J (region IoU)", "f": "F (boundary)"}
_TWIN_KEYS = ("n_videos", "n_frames", "size", "seed")


def protocol(profile: Profile) -> dict:
    """The profile's ``davis`` section with DINO's defaults: ``dataset, n_last_frames, neighbourhood, topk,
    temperature, blocks`` (``blocks``: 1-based, ``None`` for every block; ``neighbourhood``: radius in tokens,
    ``None`` for the whole frame), plus the benchmark's boundary tolerance ``bound_th`` (fraction of the diagonal)."""
    spec = profile.section(SECTION)
    out = {"dataset": spec["dataset"], **{k: spec.get(k, v) for k, v in DEFAULTS.items()}}
    for key in ("n_last_frames", "topk"):
        out[key] = int(out[key])
    out["temperature"] = float(out["temperature"])
    if out["blocks"] is not None:
        out["blocks"] = [int(b) for b in out["blocks"]]
    out["bound_th"] = seg.BOUND_TH          # the benchmark's, not a setting: stated on the page
    return out


def videos(profile: Profile) -> DavisVideos:
    """The profile's DAVIS videos (writing the synthetic twin first when the dataset is synthetic)."""
    name = protocol(profile)["dataset"]
    spec = profile.dataset_spec(name, named_by="davis.dataset")
    root = profile.dataset_root(name)
    synthetic = spec.get("synthetic")
    if synthetic is not None:
        unknown = sorted(set(synthetic) - set(_TWIN_KEYS))
        if unknown:
            raise ValueError(f"Profile {profile.name!r}: dataset {name!r} synthetic keys {unknown} are unknown; "
                             f"known: {_TWIN_KEYS}")
        write_davis_twin(root, **synthetic)
    return DavisVideos(root)


def _blocks(net, p: dict) -> list[int]:
    depth = len(net.blocks)
    blocks = p["blocks"] or list(range(1, depth + 1))
    bad = [b for b in blocks if not 1 <= b <= depth]
    if bad:
        raise ValueError(f"davis.blocks {bad} outside 1..{depth} (the model's blocks, 1-based)")
    return blocks


def propagate(net, cfg, data: DavisVideos, video: str, p: dict, blocks: list[int], device) -> torch.Tensor:
    """int64 ``[L, T, H, W]``: the predicted object ids of every frame of ``video`` at each of ``blocks`` (frame 0:
    its annotation, which the task gives)."""
    annotations = data.annotations(video)
    num_labels = max(data.object_ids(video)) + 1
    _, patch = model_geometry(net)
    mean, std = cfg.preprocess.mean, cfg.preprocess.std
    feats = (dense_tokens(net, f, [b - 1 for b in blocks], mean=mean, std=std, device=device).to(device)
             for f in data.frames(video))
    first = next(feats)
    first_labels = prop.one_hot_labels(resize_mask(annotations[0], tuple(first.shape[1:3])), num_labels)
    size = tuple(annotations.shape[1:])
    out = torch.empty(len(blocks), *annotations.shape, dtype=torch.int64)
    out[:, 0] = annotations[0]
    soft = prop.propagate_video(chain([first], feats), first_labels, n_last_frames=p["n_last_frames"],
                                temperature=p["temperature"], topk=p["topk"], radius=p["neighbourhood"])
    next(soft)                  # frame 0: the given annotation
    # Frame by frame, many small ops: on a CPU one thread avoids idle-spinning threads (see one_cpu_thread).
    with one_cpu_thread() if torch.device(device).type == "cpu" else contextlib.nullcontext():
        for t, labels in enumerate(soft, 1):
            for i in range(len(blocks)):
                out[i, t] = prop.labels_to_mask(labels[i], patch, size).cpu()
    return out


def _protocol_key(p: dict) -> dict:
    return {k: p[k] for k in ("n_last_frames", "neighbourhood", "topk", "temperature")}


def _video_scores(model: str, net, cfg, ident, data: DavisVideos, video: str, p: dict, blocks, device, store):
    """Cached ``{"j", "f"}`` float64 ``[L, K, T]`` of one video (every frame; the summary skips the first and last)."""
    key = {"model": ident, "video": video, "files": data.video_digest(video), "protocol": _protocol_key(p),
           "blocks": blocks, "short_side_factor": SHORT_SIDE_FACTOR, "bound_th": seg.BOUND_TH,
           "version": SCORES_VERSION}

    def compute():
        predicted = propagate(net, cfg, data, video, p, blocks, device)
        annotations, ids = data.annotations(video), data.object_ids(video)
        scores = [seg.video_scores(annotations, predicted[i], ids) for i in range(len(blocks))]
        return {"j": torch.stack([s[0] for s in scores]), "f": torch.stack([s[1] for s in scores])}
    return store.memo(model, "davis-scores", key, compute)


def per_object(model: str, profile: Profile, *, weights=None, device=None, store=None) -> pd.DataFrame:
    """Per block, video and object: J, F (means over the scored frames) and their mean.

    Columns ``model, block, video, object, j, f, jf`` (blocks 1-based, objects as their ids)."""
    p = protocol(profile)
    device = resolve_device(device or profile.device)
    net, cfg, ident = load_for_analysis(model, weights, device)
    data, store = videos(profile), store or FeatureStore()
    blocks = _blocks(net, p)
    frames = []
    for video in data.names:
        s = _video_scores(model, net, cfg, ident, data, video, p, blocks, device, store)
        ids = data.object_ids(video)
        for i, block in enumerate(blocks):
            j, f = seg.object_means(s["j"][i]), seg.object_means(s["f"][i])
            frames.append(pd.DataFrame({"model": model, "block": block, "video": video, "object": ids,
                                        "j": j.numpy(), "f": f.numpy(), "jf": ((j + f) / 2).numpy()}))
    return pd.concat(frames, ignore_index=True)


def summarise(objects: pd.DataFrame) -> pd.DataFrame:
    """Per model and block from a :func:`per_object` table: ``jf, j, f`` (means over every object of every video,
    as the benchmark's J-mean and F-mean), ``n_objects, n_videos``."""
    g = objects.groupby(["model", "block"], sort=False)
    out = g[["jf", "j", "f"]].mean()
    out["n_objects"] = g.size()
    out["n_videos"] = g.video.nunique()
    return out.reset_index()


def compute(model: str, profile: Profile, *, weights=None, device=None, store=None) -> pd.DataFrame:
    """J&F, J and F of ``model`` after every block: ``model, block, jf, j, f, n_objects, n_videos``."""
    return summarise(per_object(model, profile, weights=weights, device=device, store=store))


def best_per_model(table: pd.DataFrame) -> pd.DataFrame:
    """Per model (for the Table 1 page): ``model, best_block, jf`` (the best J&F), ``j, f`` (at that block),
    ``last_block, last_jf``. ``table``: :func:`compute`'s rows of one or more models."""
    rows = []
    for model, g in table.groupby("model", sort=False):
        g = g.sort_values("block")
        best = g.loc[g.jf.idxmax()]
        rows.append({"model": model, "best_block": int(best.block), "jf": float(best.jf), "j": float(best.j),
                     "f": float(best.f), "last_block": int(g.block.iloc[-1]), "last_jf": float(g.jf.iloc[-1])})
    return pd.DataFrame(rows)


def strip(model: str, profile: Profile, *, video: str | None = None, block: int | None = None, n_frames: int = 4,
          weights=None, device=None) -> dict:
    """What the strip figure shows: ``n_frames`` frames of ``video`` (default: the first) evenly spaced from the
    first to the last, with their annotations and the masks propagated at ``block`` (default: the last).

    Returns ``{"video", "block", "frames": [t], "images": [n, 3, H, W], "annotations", "predictions": [n, H, W],
    "palette": uint8 [256, 3]}`` (the palette of the video's first annotation)."""
    p = protocol(profile)
    device = resolve_device(device or profile.device)
    net, cfg, _ = load_for_analysis(model, weights, device)
    data = videos(profile)
    video = video or data.names[0]
    block = block or _blocks(net, p)[-1]
    predicted = propagate(net, cfg, data, video, p, [block], device)[0]
    T = predicted.shape[0]
    picks = sorted({round(i * (T - 1) / max(1, n_frames - 1)) for i in range(n_frames)})
    images = torch.stack([read_frame(data.video(video).frames[t]) for t in picks])
    return {"video": video, "block": block, "frames": picks, "images": images,
            "annotations": data.annotations(video)[picks], "predictions": predicted[picks],
            "palette": data.palette(video)}


# ---------------------------------------------------------------------------------------------------- claims
CLAIM, LOCAL_CLAIM = "TM-6.2a", "TM-T1b"
#: The bootstrap resamples the videos' objects (J and F are per object).
UNIT = "objects"
JOINT_EMBEDDING = ("self-distillation", "contrastive")        # DINO, MoCo-v3
IMAGE_LEVEL = ("supervised", "image-text")                    # FS, CLIP
RECONSTRUCTION = ("masked-reconstruction", "masked-token-prediction")    # MAE, BEiT


def _families(names):
    from ..models import get_cfg
    return {m: get_cfg(m).family for m in names}


def _jf(objects: pd.DataFrame, model: str, block: int) -> torch.Tensor:
    sel = objects[(objects.model == model) & (objects.block == block)].sort_values(["video", "object"])
    return torch.tensor(sel.jf.to_numpy(), dtype=torch.float64)


def _best_and_last(objects: pd.DataFrame, model: str) -> tuple[int, int, int]:
    """``(best block, best block before the last, last block)`` of ``model`` by mean J&F."""
    means = objects[objects.model == model].groupby("block").jf.mean()
    last = int(means.index.max())
    earlier = means.drop(last)
    return int(means.idxmax()), int(earlier.idxmax()) if len(earlier) else last, last


def tm_check(objects: pd.DataFrame, seeds=()) -> list[ClaimResult]:
    """TM 6.2 (``TM-6.2a``) and the DAVIS half of Table 1's ``TM-T1b`` on per-object J&F (:func:`per_object`).

    Each model is read at its best block (chosen on the same objects, as Table 1 does). TM-6.2a: the joint-embedding
    models' (DINO, MoCo) mean best J&F minus the other trained models' (expected > 0); per image-level model (FS,
    CLIP), its last block minus its best block (expected < 0: "a drop towards the later layers"); per reconstruction
    model (MAE, BEiT), its best J&F minus the untrained model's (expected > 0: the checkable part of
    "competitive"). TM-T1b: the trained models' mean of (best block before the last minus the last block), then
    per model (expected > 0: "a few layers before the last"), beyond the untrained model's same contrast.
    Bootstrap over objects (paired); seed floors from the untrained ``seeds`` for the between-model contrasts.
    """
    names = list(dict.fromkeys(objects.model))
    family = _families(names)
    trained = [m for m in names if family[m] != "random"]
    base = untrained_baseline(names)
    blocks = {m: _best_and_last(objects, m) for m in names}
    best = {m: _jf(objects, m, blocks[m][0]) for m in names}
    seed_best = torch.stack([best[s].mean() for s in seeds]) if len(seeds) >= 2 else None
    measure = "J&F at each model's best block"
    out = []
    je = [m for m in trained if family[m] in JOINT_EMBEDDING]
    others = [m for m in trained if family[m] not in JOINT_EMBEDDING]
    if not je or not others:
        out.append(cannot_check(CLAIM, "DINO and MoCo minus the others", "the profile lacks a joint-embedding "
                                "model or another trained model"))
    else:
        w, beyond = group_weights(je, others, base)
        out.append(judge_contrast(CLAIM, f"mean of {', '.join(je)} minus mean of {', '.join(others)}", measure,
                                  best, w, beyond, 1, base, seed_best, seeds, unit=UNIT))
    for m in [m for m in trained if family[m] in IMAGE_LEVEL]:
        out.append(judge_depth_contrast(
            CLAIM, f"{m}: drop in the later layers", f"J&F, last block minus best ({blocks[m][0]})",
            lambda model, block: _jf(objects, model, block), lambda model: (blocks[model][2], blocks[model][0]),
            m, base, [s for s in seeds if s in blocks], expected=-1, unit=UNIT))
    for m in [m for m in trained if family[m] in RECONSTRUCTION]:
        if base is None:
            out.append(cannot_check(CLAIM, f"{m} competitive", "no untrained baseline of the same architecture"))
            continue
        w = {m: 1.0, base: -1.0}
        out.append(judge_contrast(CLAIM, f"{m} above the untrained model", f"{measure}, minus `{base}`'s", best, w,
                                  w, 1, base, seed_best, seeds, unit=UNIT))
    out += local_check(objects, trained, blocks, base, seeds)
    return out


def local_check(objects: pd.DataFrame, trained: list[str], blocks: dict, base: str | None,
                seeds=()) -> list[ClaimResult]:
    """``TM-T1b`` on DAVIS: best block before the last minus the last block, pooled over ``trained`` and per model.
    Seed floor (two or more untrained ``seeds``): the spread over seeds of the same contrast, blocks chosen the same
    way (as :func:`vitscope.claims.verdict.judge_depth_contrast`)."""
    if not trained:
        return [cannot_check(LOCAL_CLAIM, "DAVIS, trained models", "the profile has no trained model")]

    def parts(m, w=1.0, prefix=""):
        _, early, last = blocks[m]
        return ({f"{prefix}{m}@early": _jf(objects, m, early), f"{prefix}{m}@last": _jf(objects, m, last)},
                {f"{prefix}{m}@early": w, f"{prefix}{m}@last": -w})

    seeds = [x for x in seeds if x in blocks]
    floor = depth_seed_floor(lambda m, b: _jf(objects, m, b), lambda m: (blocks[m][2], blocks[m][1]), seeds,
                             sign=-1.0)

    def row(subject, models):
        values, w = {}, {}
        for m in models:
            v, ww = parts(m, 1 / len(models))
            values, w = values | v, w | ww
        beyond = None
        if base is not None:
            v, ww = parts(base, -1.0, "base:")
            values, beyond = values | v, w | ww
        measure = "J&F, best block before the last minus the last block" + (
            f" ({blocks[models[0]][1]} vs {blocks[models[0]][2]})" if len(models) == 1 else "")
        return judge(LOCAL_CLAIM, subject, measure, paired_contrast(values, w, UNIT),
                     paired_contrast(values, beyond, UNIT) if beyond else None, 1, base, floor,
                     floor if beyond else None, tuple(seeds) if floor is not None else ())
    return [row(f"DAVIS, mean of {', '.join(trained)}", trained)] + [row(f"DAVIS, {m}", [m]) for m in trained]


def per_object_all(models, profile: Profile, *, weights=None, device=None, store=None) -> tuple[pd.DataFrame, list]:
    """:func:`per_object` of ``models`` and the profile's untrained seeds, in one table; and the seeds."""
    seeds = noise_seeds(profile)
    weights = weights or {}
    frames = [per_object(m, profile, weights=weights.get(m), device=device, store=store)
              for m in dict.fromkeys(list(models) + seeds)]
    return pd.concat(frames, ignore_index=True), seeds


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """TM 6.2's DAVIS claims on ``models`` (default: the profile's); see :func:`tm_check`."""
    table, seeds = per_object_all(list(models or profile.models), profile, weights=weights, device=device,
                                  store=store)
    return tm_check(table, seeds)


__all__ = ["DEFAULTS", "METRICS", "SECTION", "best_per_model", "check_claims", "compute", "local_check",
           "per_object", "per_object_all", "propagate", "protocol", "strip", "summarise", "tm_check", "videos"]

"""Teaching Matters §5.2 (Fig. 7, App. D.5) — k-means cluster purity, NMI and ARI of every block's features.

Product: :class:`vitscope.extract.PooledTokens` (per image and block: the CLS token and the mean of the spatial
tokens; one forward pass serves every block); kernels: :func:`vitscope.kernels.clustering.kmeans` with
:class:`~vitscope.kernels.clustering.KMeansSettings` read from the profile's ``purity`` section,
:func:`~vitscope.kernels.clustering.scores`, :func:`~vitscope.kernels.clustering.noise_features` (the random-chance
reference) and, for the claims, :func:`vitscope.kernels.stats.bootstrap_contrast`.

Intervals hold the clustering fixed: k-means runs once per (model, tokens, block) on all images, each cluster votes
its majority class, and the bootstrap resamples which images are scored (paired across models, which see the same
images in the same order). They do not include the spread over k-means restarts, which ``n_init`` restarts keep
small; :func:`seed_spread` measures it. Where the profile names untrained seeds (``baselines``), each verdict must
also clear their seed floor (:mod:`vitscope.claims.verdict`), from the same statistic on the seeds.
"""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline, usable_seeds
from ..claims.verdict import CONFIDENCE, N_RESAMPLES, SEED, ClaimResult, Interval, cannot_check, judge, paired_contrast
from ..data import transform_key
from ..devices import resolve_device
from ..extract import FeatureStore, PooledTokens, extract
from ..extract.store import tensor_digest
from ..kernels import clustering as clustering_k
from ..kernels.stats import bootstrap_contrast, seed_floor
from ..profiles import Profile
from .common import load_for_analysis

SECTION = "purity"
#: The two token readouts of Fig. 7: left panel (CLS) and right panel (spatial tokens averaged over positions).
TOKENS = {"cls": "CLS token", "mean": "mean of spatial tokens"}
METRICS = {"purity": "cluster purity", "nmi": "NMI", "ari": "ARI"}
NOISE = "noise"

#: In-process memo of clusterings: the overview page draws the figure and then checks the claims on the same
#: k-means runs. Keyed by everything that changes an assignment.
_MEMO: dict[str, dict] = {}


def settings(profile: Profile) -> clustering_k.KMeansSettings:
    """The profile's k-means settings (section ``purity``); unspecified ones take the fixed defaults."""
    spec = profile.section(SECTION)
    fields = ("n_init", "max_iter", "seed", "algorithm")
    return clustering_k.KMeansSettings(**{f: spec[f] for f in fields if spec.get(f) is not None})


def _pooled(model: str, profile: Profile, weights, device, store, progress: bool):
    """``({"cls", "mean"}: float32 [N, L, D], labels int64 [N], number of classes)`` from the cached product."""
    device = resolve_device(device or profile.device)
    spec = profile.section(SECTION)
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = profile.dataset(spec["dataset"], cfg.preprocess)
    out = extract(net, ident, dataset, {"pooled": PooledTokens(site="block")},
                  transform_id=transform_key(cfg.preprocess), store=store or FeatureStore(), device=device,
                  progress=progress)
    return out["pooled"], out["_meta"]["labels"].to(torch.int64), len(dataset.classes)


def _memo_key(*parts) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def cluster_model(model: str, profile: Profile, *, weights=None, device=None, store=None,
                  progress: bool = False) -> dict:
    """k-means on every block of ``model``, both token readouts: ``{"labels": [N], "k", "dim", "n_images",
    "assignments": {tokens: int64 [L, N]}}`` (cluster ids per block, in the extraction's image order)."""
    spec, km = profile.section(SECTION), settings(profile)
    key = _memo_key(model, weights, profile.name, profile.raw.get("datasets"), spec, km.record())
    if key not in _MEMO:
        pooled, labels, n_classes = _pooled(model, profile, weights, device, store, progress)
        k = spec.get("k") or n_classes
        assignments = {t: _kmeans_blocks(model, pooled[t], k, km, store) for t in TOKENS}
        _MEMO[key] = {"labels": labels, "k": k, "dim": pooled["cls"].shape[-1], "n_images": len(labels),
                      "assignments": assignments}
    return _MEMO[key]


#: Bump when the clustering of cached features would change for the same inputs and settings.
CLUSTERING_VERSION = 1


def _kmeans_blocks(model: str, features: torch.Tensor, k: int, km, store) -> torch.Tensor:
    """Cluster ids int64 [L, N] of every block of ``features`` [N, L, D], cached on disk by the features' digest
    and the k-means settings, so the per-model, overview and claims pages cluster each model once."""
    key = {"features": tensor_digest(features), "k": k, "settings": km.record(), "version": CLUSTERING_VERSION}
    store = store or FeatureStore()
    return store.memo(model, "kmeans", key, lambda: {"assignments": torch.stack(
        [clustering_k.kmeans(features[:, b], k, km) for b in range(features.shape[1])])})["assignments"]


def noise_assignment(labels: torch.Tensor, k: int, dim: int, profile: Profile) -> torch.Tensor:
    """Cluster ids [N] of k-means on noise features [N, dim] (the profile's ``noise`` distribution, seed 0)."""
    spec, km = profile.section(SECTION), settings(profile)
    distribution = spec.get("noise", "gaussian")
    key = _memo_key(NOISE, len(labels), dim, k, distribution, km.record())
    if key not in _MEMO:
        disk_key = {"n": len(labels), "dim": dim, "k": k, "distribution": distribution, "settings": km.record(),
                    "version": CLUSTERING_VERSION}
        _MEMO[key] = FeatureStore().memo(NOISE, "kmeans", disk_key, lambda: {"assignment": clustering_k.kmeans(
            clustering_k.noise_features(len(labels), dim, 0, distribution), k, km)})["assignment"]
    return _MEMO[key]


def _interval(values: torch.Tensor) -> tuple[float, float]:
    res = bootstrap_contrast(values[None], torch.ones(1), n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
    return res["low"], res["high"]


def score_rows(model: str, tokens: str, block, labels: torch.Tensor, assignment: torch.Tensor, k: int) -> dict:
    """One row of the scores table: purity (with its bootstrap interval over images), NMI and ARI."""
    low, high = _interval(clustering_k.purity_per_example(labels, assignment))
    return {"model": model, "tokens": tokens, "block": block, **clustering_k.scores(labels, assignment),
            "purity_low": low, "purity_high": high, "k": k, "n_images": len(labels)}


def compute(models, profile: Profile, *, weights: dict | None = None, device=None, store=None,
            progress: bool = False) -> pd.DataFrame:
    """Purity, NMI and ARI of k-means (k = the profile's ``k``, default the number of classes) on every block of
    every model of ``models`` (a name or a list), for the CLS token and the mean of the spatial tokens.

    Returns ``model, tokens, block, purity, nmi, ari, purity_low, purity_high, k, n_images`` (blocks 1-based;
    ``purity_low/high``: the bootstrap interval over images), then the noise reference: rows with
    ``model="noise"``, ``tokens="noise"`` and ``block`` NaN, one per feature width among the models.
    """
    models = [models] if isinstance(models, str) else list(models)
    weights = weights or {}
    rows, noise = [], {}
    for m in models:
        c = cluster_model(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
        for t, per_block in c["assignments"].items():
            rows += [score_rows(m, t, b + 1, c["labels"], a, c["k"]) for b, a in enumerate(per_block)]
        noise.setdefault(c["dim"], c)
    for dim, c in noise.items():
        rows.append({**score_rows(NOISE, NOISE, float("nan"), c["labels"],
                                  noise_assignment(c["labels"], c["k"], dim, profile), c["k"]), "dim": dim})
    return pd.DataFrame(rows)


def seed_spread(model: str, profile: Profile, seeds=(0, 1, 2, 3, 4), *, tokens: str = "cls", weights=None,
                device=None, store=None) -> pd.DataFrame:
    """Purity of the last block under different k-means seeds (everything else as the profile): how much of a
    difference between models the choice of seed alone could make. Columns ``model, tokens, seed, purity``."""
    pooled, labels, n_classes = _pooled(model, profile, weights, device, store, False)
    k = profile.section(SECTION).get("k") or n_classes
    base = settings(profile)
    rows = []
    for s in seeds:
        km = dataclasses.replace(base, seed=s)
        assignment = _kmeans_blocks(model, pooled[tokens][:, -1:], k, km, store)[0]
        rows.append({"model": model, "tokens": tokens, "seed": s, "purity": clustering_k.purity(labels, assignment)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the claims, with bootstrap intervals over images
DEPTH_CLAIM, ORDER_CLAIM = "TM-5.2a", "TM-5.2b"
SUPERVISED = "supervised"
RECONSTRUCTION = ("masked-reconstruction", "masked-token-prediction")
#: BEiT's last layers act as its decoder, so the paper expects its CLS purity to fall there (Sec. 5.2).
DECODER_IN_ENCODER = "masked-token-prediction"


def correct_per_image(models: list[str], profile: Profile, tokens: str = "cls", *, weights: dict | None = None,
                      device=None, store=None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per model, float64 [L, N]: 1 where image ``i``'s class is its cluster's majority class at block ``l``; and
    the same [N] for the noise features. Models must share images and labels (same profile)."""
    weights = weights or {}
    out, first = {}, None
    for m in models:
        c = cluster_model(m, profile, weights=weights.get(m), device=device, store=store)
        if first is None:
            first = c
        elif not torch.equal(c["labels"], first["labels"]):
            raise ValueError(f"{m!r} was scored on other images or labels than {models[0]!r}; the paired bootstrap "
                             "needs the same images for every model (extract them on the same profile)")
        out[m] = torch.stack([clustering_k.purity_per_example(c["labels"], a) for a in c["assignments"][tokens]])
    noise = clustering_k.purity_per_example(first["labels"],
                                            noise_assignment(first["labels"], first["k"], first["dim"], profile))
    return out, noise


def _contrast(parts: list[tuple[torch.Tensor, float]]) -> Interval:
    """``sum(weight * mean over images of values)`` over ``parts`` of ``(values [N], weight)``, bootstrapped over
    images with one draw shared by every part (paired): :func:`vitscope.claims.verdict.paired_contrast` on parts
    that may repeat a model (hence keyed by position)."""
    return paired_contrast({i: v for i, (v, _) in enumerate(parts)}, {i: w for i, (_, w) in enumerate(parts)})


def _families(names) -> dict[str, str]:
    from ..models import get_cfg

    return {m: get_cfg(m).family for m in names}


def _floor(seed_stats: torch.Tensor | None, parts) -> float | None:
    """The seed floor of a contrast whose slots weigh ``parts`` (``(values, weight)`` pairs, or weights), from
    ``seed_stats`` [S] (the contrast's per-model statistic on each seed); ``None`` without seeds."""
    if seed_stats is None:
        return None
    return seed_floor(seed_stats, [p[1] if isinstance(p, tuple) else p for p in parts])


def depth_check(correct: dict[str, torch.Tensor], seeds=()) -> list[ClaimResult]:
    """TM 5.2, Fig. 7 left (``TM-5.2a``): CLS purity rises with depth, except in BEiT's last layers.

    ``correct``: ``{model: [L, N]}`` per-image purity indicators (:func:`correct_per_image`). Effect per trained
    model: purity at the last block minus at block 1 (expected > 0); for the masked-token-prediction family (BEiT)
    the last block minus the one before (expected < 0). Beyond the baseline: the same difference minus the untrained
    model's. First row pools the models expected to rise.

    ``seeds``: untrained models of ``correct`` (at least two; fewer: no seed floor) whose same difference (last
    block minus block 1, or minus the one before for BEiT's row) sets the floors
    (:func:`vitscope.kernels.stats.seed_floor`): one model's effect must clear the largest |difference| a seed shows,
    its baseline contrast the largest gap between two seeds' differences.
    """
    seeds = usable_seeds(correct, seeds)
    family = _families(correct)
    base = untrained_baseline(list(correct))
    trained = [m for m in correct if family[m] != "random"]
    rising = [m for m in trained if family[m] != DECODER_IN_ENCODER]
    if not trained:
        return [cannot_check(DEPTH_CLAIM, "trained models", "the profile has no trained model")]

    def rise(m, w=1.0, late=False):
        v = correct[m]
        return [(v[-1], w), (v[-2] if late else v[0], -w)]

    def seed_rise(late=False):
        """[S] each seed's difference: the per-model statistic of these contrasts (one slot per model)."""
        if not seeds:
            return None
        return torch.stack([sum(v.mean() * w for v, w in rise(s, late=late)) for s in seeds])

    out = []
    if rising:
        model_w = [1 / len(rising)] * len(rising)
        parts = [p for m in rising for p in rise(m, 1 / len(rising))]
        beyond = _contrast(parts + rise(base, -1.0)) if base else None
        out.append(judge(DEPTH_CLAIM, f"mean of {', '.join(rising)}", "CLS purity, last block minus block 1",
                         _contrast(parts), beyond, 1, base, _floor(seed_rise(), model_w),
                         _floor(seed_rise(), model_w + [-1.0]) if base else None, seeds))
    for m in trained:
        late = family[m] == DECODER_IN_ENCODER
        measure = f"CLS purity, last block minus {'the one before' if late else 'block 1'}"
        beyond = _contrast(rise(m, late=late) + rise(base, -1.0, late)) if base else None
        out.append(judge(DEPTH_CLAIM, m, measure, _contrast(rise(m, late=late)), beyond, -1 if late else 1, base,
                         _floor(seed_rise(late), [1.0]), _floor(seed_rise(late), [1.0, -1.0]) if base else None,
                         seeds))
    return out


def order_check(correct: dict[str, torch.Tensor], noise: torch.Tensor, seeds=()) -> list[ClaimResult]:
    """TM 5.2, Fig. 7 left (``TM-5.2b``) at the last block: FS has the purest CLS clusters; the reconstruction
    models (MAE, BEiT) are lowest, but above the noise reference.

    Rows: FS minus the mean of the other trained models, then minus each (expected > 0; beyond the baseline:
    FS minus the untrained model); the reconstruction models' mean minus the others' (expected < 0; beyond: the
    untrained model in place of the others, i.e. untrained minus the others); each reconstruction model minus
    noise (expected > 0; beyond: that model minus the untrained model).

    ``seeds``: untrained models of ``correct`` (at least two; fewer: no seed floor) whose last-block purity sets the
    floors (:func:`vitscope.kernels.stats.seed_floor`): for a contrast between models, the largest purity gap
    between two seeds; for "minus noise" (the noise reference is no model and stays in its slot), the largest
    |seed minus noise|, the most the same contrast reaches with a seed in the model's place.
    """
    seeds = usable_seeds(correct, seeds)
    family = _families(correct)
    base = untrained_baseline(list(correct))
    trained = [m for m in correct if family[m] != "random"]
    sup = [m for m in trained if family[m] == SUPERVISED]
    rec = [m for m in trained if family[m] in RECONSTRUCTION]
    others = [m for m in trained if m not in sup]
    high = [m for m in trained if m not in rec]
    last = {m: v[-1] for m, v in correct.items()}
    measure = "last-block CLS purity"
    minus_base = [(last[base], -1.0)] if base else None
    seed_last = torch.stack([last[s].mean() for s in seeds]) if seeds else None

    def floor(parts):
        return _floor(seed_last, parts) if parts is not None else None

    out = []
    if not sup or not others:
        out.append(cannot_check(ORDER_CLAIM, "FS minus the others", "the profile lacks a supervised model or "
                                                                   "another trained model"))
    else:
        fs = sup[0]
        beyond_parts = [(last[fs], 1.0)] + minus_base if base else None
        beyond = _contrast(beyond_parts) if base else None
        parts = [(last[fs], 1.0)] + [(last[m], -1 / len(others)) for m in others]
        out.append(judge(ORDER_CLAIM, f"{fs} minus the mean of {', '.join(others)}", measure, _contrast(parts), beyond,
                         1, base, floor(parts), floor(beyond_parts), seeds))
        out += [judge(ORDER_CLAIM, f"{fs} minus {m}", measure, _contrast([(last[fs], 1.0), (last[m], -1.0)]), beyond,
                      1, base, floor([1.0, -1.0]), floor(beyond_parts), seeds) for m in others]
    if not rec or not high:
        out.append(cannot_check(ORDER_CLAIM, "reconstruction minus the others", "the profile lacks a reconstruction "
                                                                               "model or another trained model"))
        return out
    high_parts = [(last[m], -1 / len(high)) for m in high]
    beyond_parts = [(last[base], 1.0)] + high_parts if base else None
    beyond = _contrast(beyond_parts) if base else None
    parts = [(last[m], 1 / len(rec)) for m in rec] + high_parts
    out.append(judge(ORDER_CLAIM, f"mean of {', '.join(rec)} minus mean of {', '.join(high)}", measure,
                     _contrast(parts), beyond, -1, base, floor(parts), floor(beyond_parts), seeds))
    # "minus noise": the noise slot is no model, so only the model's slot takes a seed: the statistic is seed - noise.
    above_noise = None if seed_last is None else seed_last - noise.double().mean()
    for m in rec:
        beyond_parts = [(last[m], 1.0)] + minus_base if base else None
        beyond = _contrast(beyond_parts) if base else None
        out.append(judge(ORDER_CLAIM, f"{m} minus noise", measure, _contrast([(last[m], 1.0), (noise, -1.0)]),
                         beyond, 1, base, _floor(above_noise, [1.0]), floor(beyond_parts), seeds))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """The claims of TM 5.2 (Fig. 7, CLS tokens) on ``models`` (default: the profile's ``purity.models`` or its
    models), from the cached pooled tokens; see :func:`depth_check` and :func:`order_check`. The profile's untrained
    seeds (``baselines``) are clustered too and set the seed floors."""
    models = list(models or profile.section(SECTION).get("models") or profile.models)
    seeds = noise_seeds(profile)
    correct, noise = correct_per_image(list(dict.fromkeys(models + seeds)), profile, "cls", weights=weights,
                                       device=device, store=store)
    return depth_check(correct, seeds) + order_check(correct, noise, seeds)


def layer_table(table: pd.DataFrame, metric: str = "purity") -> pd.DataFrame:
    """``table`` (of :func:`compute`) as one row per block and one column per (tokens, model), noise dropped."""
    rows = table[table.model != NOISE]
    wide = rows.pivot_table(index="block", columns=["tokens", "model"], values=metric, sort=False)
    wide.index = wide.index.astype(int)
    return wide


__all__ = ["METRICS", "NOISE", "TOKENS", "check_claims", "cluster_model", "compute", "correct_per_image",
           "depth_check", "layer_table", "order_check", "seed_spread", "settings"]

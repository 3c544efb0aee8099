"""Objectives Matter §2.1, Fig. 11, App. B.6 and E — objective or architecture?

A ViT and a CNN trained with the same objective are compared with two ViTs trained with different objectives, by
minibatch CKA between every layer of one and every layer of the other, as a function of the distance between the
two layers' relative depths (block ``i`` of ``L`` sits at ``i / L``).

Products: :class:`vitscope.extract.GramMatrices` of block outputs (ViT blocks through
:mod:`vitscope.extract.capture`, CNN residual blocks as tokens through :mod:`vitscope.extract.cnn_capture`);
kernels: :func:`vitscope.kernels.cka.minibatch_cka_from_grams`, :func:`vitscope.kernels.cka.hsic1_cross` (per-batch
terms for the claims), :func:`vitscope.kernels.relative_depth.cka_by_depth` and
:func:`vitscope.kernels.stats.bootstrap_cka_contrast`.

The profile's ``architecture`` section names the pairs: ``same_objective`` ([ViT, CNN] with one objective) and
``different_objective`` ([ViT, ViT]), and ``baseline``, an untrained CNN of the zoo CNN's architecture. A model
whose weights are absent (a zoo CNN not trained yet, an offline paper checkpoint) is reported, and the pairs and
claims that need it say "cannot be checked".
"""
from __future__ import annotations

import pandas as pd
import torch

from ..claims.verdict import CONFIDENCE, N_RESAMPLES, SEED, ClaimResult, Interval, cannot_check, judge
from ..data import transform_key
from ..devices import resolve_device
from ..extract import FeatureStore, GramMatrices, extract, stack_batches
from ..extract.cnn_capture import is_cnn
from ..kernels import cka as cka_k
from ..kernels.relative_depth import cka_by_depth, distance_bins, distance_mask, relative_depths
from ..kernels.stats import bootstrap_cka_contrast
from ..models import get_cfg
from ..models.loading import CheckpointError, CheckpointMismatchError, WeightsUnavailableError
from ..profiles import Profile
from .cka import JOINT_EMBEDDING, RECONSTRUCTION
from .common import load_for_analysis

SECTION = "architecture"
SAME, DIFFERENT = "same objective, ViT vs CNN", "different objectives, ViT vs ViT"
ARCH_CLAIM, FAR_CLAIM = "OM-2.1c", "OM-2.1d"
#: Why a model can be absent from a profile run without stopping the page.
_UNAVAILABLE = (FileNotFoundError, WeightsUnavailableError, CheckpointError, CheckpointMismatchError)


def pairs(profile: Profile) -> dict[str, list[tuple[str, str]]]:
    """``{SAME: [(vit, cnn), ...], DIFFERENT: [(vit, vit), ...]}`` from the profile's section, checked: a
    same-objective pair is a ViT and a CNN of one family, a different-objective pair two ViTs of two families."""
    spec = profile.section(SECTION)
    out = {SAME: [tuple(p) for p in spec.get("same_objective") or []],
           DIFFERENT: [tuple(p) for p in spec.get("different_objective") or []]}
    for kind, listed in out.items():
        for p in listed:
            if len(p) != 2:
                raise ValueError(f"Profile {profile.name!r}: {SECTION}: each pair is [model, model]; got {list(p)}")
            fa, fb = (get_cfg(m).family for m in p)
            if (kind == SAME) != (fa == fb):
                raise ValueError(f"Profile {profile.name!r}: {SECTION}: {list(p)} is listed as '{kind}' but the "
                                 f"families are {fa!r} and {fb!r}; same_objective pairs share a family, "
                                 "different_objective pairs do not")
    return out


def model_grams(model: str, profile: Profile, *, device=None, store=None, progress=True):
    """``(per-batch Gram stacks [L, b, b] of every block output, L)`` of ``model``, a ViT or a CNN."""
    device = resolve_device(device or profile.device)
    spec = profile.section(SECTION)
    net, cfg, ident = load_for_analysis(model, None, device)
    dataset = profile.dataset(spec["dataset"], cfg.preprocess)
    product = GramMatrices(capture_sites=("block",), tokens=spec.get("tokens", "all"))
    out = extract(net, ident, dataset, {"grams": product}, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, batch_size=spec.get("batch_size", 32),
                  order=spec.get("order", "shuffled"), limit=spec.get("max_examples"), progress=progress)
    grams = stack_batches(out["grams"])
    return grams, int(grams[0].shape[0])


def gather(profile: Profile, *, device=None, store=None, progress=False) -> tuple[dict, dict]:
    """``(grams, missing)``: ``{model: (grams, L)}`` for every model of the section's pairs and its baseline that
    loads, and ``{model: reason}`` for those whose weights are absent."""
    spec = profile.section(SECTION)
    names = [m for listed in pairs(profile).values() for p in listed for m in p]
    names += [spec["baseline"]] if spec.get("baseline") else []
    grams, missing = {}, {}
    for m in dict.fromkeys(names):
        try:
            grams[m] = model_grams(m, profile, device=device, store=store, progress=progress)
        except _UNAVAILABLE as err:
            missing[m] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return grams, missing


def architecture(model: str) -> str:
    """``"CNN"`` or ``"ViT"`` for a registry model (built without weights: no download)."""
    from ..models import create_model

    return "CNN" if is_cnn(create_model(model)) else "ViT"


def compute(profile: Profile, grams: dict) -> pd.DataFrame:
    """Minibatch CKA (reference estimator) between every block of each pair's two models whose Grams exist.

    Columns: ``kind, pair, model_a, model_b, family, index_a, index_b, depth_a, depth_b, distance, cka``
    (``index``: 1-based block, ``depth``: relative depth, ``distance``: ``|depth_a - depth_b|``)."""
    rows = []
    for kind, listed in pairs(profile).items():
        for a, b in listed:
            if a not in grams or b not in grams:
                continue
            (ga, la), (gb, lb) = grams[a], grams[b]
            matrix = cka_k.minibatch_cka_from_grams(ga, gb)
            da, db = relative_depths(la), relative_depths(lb)
            family = get_cfg(a).family if kind == SAME else f"{get_cfg(a).family} / {get_cfg(b).family}"
            for i in range(la):
                for j in range(lb):
                    rows.append({"kind": kind, "pair": f"{a} vs {b}", "model_a": a, "model_b": b, "family": family,
                                 "index_a": i + 1, "index_b": j + 1, "depth_a": float(da[i]), "depth_b": float(db[j]),
                                 "distance": abs(float(da[i]) - float(db[j])), "cka": float(matrix[i, j])})
    return pd.DataFrame(rows)


def by_distance(table: pd.DataFrame, bins=5) -> pd.DataFrame:
    """Mean CKA per pair and bin of relative-depth distance (:func:`vitscope.kernels.relative_depth.cka_by_depth`):
    ``kind, pair, family, low, high, centre, cka, count``."""
    rows = []
    for pair, sel in table.groupby("pair", sort=False):
        m = sel.pivot(index="index_a", columns="index_b", values="cka")
        out = cka_by_depth(torch.tensor(m.to_numpy()), relative_depths(m.shape[0]), relative_depths(m.shape[1]), bins)
        for k in range(len(out["mean"])):
            rows.append({"kind": sel.kind.iloc[0], "pair": pair, "family": sel.family.iloc[0],
                         "low": float(out["low"][k]), "high": float(out["high"][k]),
                         "centre": float(out["low"][k] + out["high"][k]) / 2, "cka": float(out["mean"][k]),
                         "count": int(out["count"][k])})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the claims, with bootstrap intervals

def _terms(grams: dict, a: str, b: str) -> dict[str, torch.Tensor]:
    """Per-batch HSIC_1 terms of every block pair of ``a`` and ``b``: ``ab``, ``aa``, ``bb`` as [k, La, Lb]."""
    (ga, la), (gb, lb) = grams[a], grams[b]
    ab = torch.stack([cka_k.hsic1_cross(x, y) for x, y in zip(ga, gb, strict=True)])
    aa = torch.stack([cka_k.hsic1(x, x) for x in ga])[:, :, None].expand(-1, la, lb)
    bb = torch.stack([cka_k.hsic1(y, y) for y in gb])[:, None, :].expand(-1, la, lb)
    return {"ab": ab, "aa": aa, "bb": bb}


def _pair_weights(la: int, lb: int, bins, far: float | None) -> torch.Tensor:
    """[La, Lb] weights summing to 1 that average CKA over distance bins, each non-empty bin counting once (the
    mean of the Fig. 11 curve); with ``far``, only over layer pairs at distance >= ``far``."""
    da, db = relative_depths(la), relative_depths(lb)
    which = distance_bins(da, db, bins)
    keep = distance_mask(da, db, far) if far is not None else torch.ones(la, lb, dtype=torch.bool)
    w = torch.zeros(la, lb, dtype=torch.float64)
    present = [int(b) for b in which[keep].unique()]
    for b in present:
        cell = keep & (which == b)
        w[cell] = 1.0 / (len(present) * int(cell.sum()))
    return w


def _contrast(grams: dict, parts, bins, far=None) -> Interval:
    """``sum(weight * binned mean CKA of the pair)`` over ``parts`` of ``(model_a, model_b, weight)``, bootstrapped
    over minibatches (one draw shared by every pair)."""
    cols = {"ab": [], "aa": [], "bb": []}
    weights = []
    for a, b, weight in parts:
        terms = _terms(grams, a, b)
        w = _pair_weights(grams[a][1], grams[b][1], bins, far)
        sel = w > 0
        for t in cols:
            cols[t].append(terms[t][:, sel])
        weights.append(weight * w[sel])
    res = bootstrap_cka_contrast(*(torch.cat(cols[t], dim=1) for t in ("ab", "aa", "bb")), torch.cat(weights),
                                 n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
    return Interval.from_bootstrap(res, "minibatches")


def _judged(claim, subject, measure, grams, same, different, baseline, bins, far):
    """One verdict: the same-objective pairs' mean minus the different-objective pairs' mean (expected > 0); beyond
    the baseline: the same-objective pairs minus the ViT of each against the untrained CNN ``baseline``."""
    effect = [(a, b, 1 / len(same)) for a, b in same] + [(a, b, -1 / len(different)) for a, b in different]
    beyond = None
    if baseline is not None:
        vits = list(dict.fromkeys(a for a, _ in same))
        beyond = _contrast(grams, [(a, b, 1 / len(same)) for a, b in same]
                           + [(v, baseline, -1 / len(vits)) for v in vits], bins, far)
    return judge(claim, subject, measure, _contrast(grams, effect, bins, far), beyond, 1, baseline)


def judge_pairs(profile: Profile, grams: dict, missing: dict) -> list[ClaimResult]:
    """OM-2.1c (Fig. 11a) and OM-2.1d (Fig. 11b) on this profile's pairs.

    OM-2.1c: a joint-embedding ViT-CNN pair with one objective minus a joint-embedding/reconstruction ViT-ViT pair,
    in CKA averaged over the bins of relative-depth distance (expected > 0). OM-2.1d: the same contrast for a
    reconstruction ViT-CNN pair, over the layer pairs at least ``far_distance`` apart only (expected > 0: the
    ViT-CNN pair "stays high" where the ViT-ViT pair "falls off"). Beyond the baseline: each same-objective pair
    minus its ViT against the profile's untrained CNN. No seed floor: the profile has no untrained CNN seeds, so the
    bootstrap over minibatches is the only noise measure. Pairs with a missing model cannot be checked.
    """
    spec = profile.section(SECTION)
    bins, far = spec.get("bins", 5), spec.get("far_distance", 0.5)
    listed = pairs(profile)
    baseline = spec.get("baseline") if spec.get("baseline") in grams else None

    def ready(p):
        return all(m in grams for m in p)

    def absent(ps):
        return ", ".join(sorted({m for p in ps for m in p if m in missing}))

    mixed = [p for p in listed[DIFFERENT] if {get_cfg(m).family in JOINT_EMBEDDING for m in p} == {True, False}
             and any(get_cfg(m).family in RECONSTRUCTION for m in p)]
    out = []
    for claim, families, far_ in ((ARCH_CLAIM, JOINT_EMBEDDING, None), (FAR_CLAIM, RECONSTRUCTION, far)):
        same = [p for p in listed[SAME] if get_cfg(p[0]).family in families]
        what = "joint-embedding" if claim == ARCH_CLAIM else "reconstruction"
        subject = f"{what} ViT vs CNN minus joint-embedding vs reconstruction ViTs"
        if not same or not mixed:
            out.append(cannot_check(claim, subject, f"the profile lists no {what} ViT-CNN pair with one objective "
                                                    "or no joint-embedding/reconstruction ViT pair"))
            continue
        if not [p for p in same if ready(p)] or not [p for p in mixed if ready(p)]:
            out.append(cannot_check(claim, subject, f"weights absent for {absent(same + mixed)}"))
            continue
        measure = ("CKA averaged over relative-depth distance bins" if far_ is None
                   else f"CKA over layer pairs at relative-depth distance >= {far_:g}")
        good_same, good_mixed = [p for p in same if ready(p)], [p for p in mixed if ready(p)]
        out.append(_judged(claim, subject, measure, grams, good_same, good_mixed, baseline, bins, far_))
        for s in same:
            for d in mixed:
                sub = f"{s[0]} vs {s[1]} minus {d[0]} vs {d[1]}"
                if not (ready(s) and ready(d)):
                    out.append(cannot_check(claim, sub, f"weights absent for {absent([s, d])}"))
                else:
                    out.append(_judged(claim, sub, measure, grams, [s], [d], baseline, bins, far_))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """The catalogue's entry point: OM-2.1c and OM-2.1d (:func:`judge_pairs`) on the profile's ``architecture``
    pairs (``models`` and ``weights`` are not used: the pairs name the models). A profile without the section cannot
    check either claim."""
    if SECTION not in profile.raw:
        return [cannot_check(c, "ViT vs CNN pairs", f"the profile has no {SECTION!r} section")
                for c in (ARCH_CLAIM, FAR_CLAIM)]
    grams, missing = gather(profile, device=device, store=store, progress=progress)
    return judge_pairs(profile, grams, missing)


def summary(binned: pd.DataFrame) -> pd.DataFrame:
    """Mean over distance bins of each pair's binned CKA (the quantity OM-2.1c compares), with its kind."""
    return (binned.dropna(subset=["cka"]).groupby(["kind", "pair"], sort=False)["cka"].mean()
            .rename("mean CKA over distance bins").reset_index())


def missing_table(missing: dict) -> pd.DataFrame:
    """The models this profile run could not load, and why."""
    return pd.DataFrame([{"model": m, "reason": r} for m, r in missing.items()], columns=["model", "reason"])


def layers_of(grams: dict) -> pd.DataFrame:
    """Per loaded model: its architecture and the number of block outputs compared."""
    return pd.DataFrame([{"model": m, "architecture": architecture(m), "blocks": L} for m, (_, L) in grams.items()])


__all__ = ["SAME", "DIFFERENT", "pairs", "model_grams", "gather", "compute", "by_distance", "judge_pairs",
           "check_claims", "summary", "missing_table", "layers_of"]

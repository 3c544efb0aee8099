"""Objectives Matter §2.1 — layer-wise minibatch CKA between models.

Product: :class:`vitscope.extract.GramMatrices` (per-batch Gram stacks); kernels:
:func:`vitscope.kernels.cka.minibatch_cka_from_grams`, :func:`vitscope.kernels.cka.hsic1` (per-batch terms for the
claims) and :func:`vitscope.kernels.stats.bootstrap_cka_contrast`.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import CONFIDENCE, N_RESAMPLES, SEED, ClaimResult, Interval, cannot_check, judge
from ..data import transform_key
from ..devices import resolve_device
from ..extract import FeatureStore, GramMatrices, extract, layer_labels, stack_batches
from ..kernels import cka as cka_k
from ..kernels.stats import bootstrap_cka_contrast, cka_from_batch_terms, seed_floor
from ..profiles import Profile
from .common import load_for_analysis


def model_grams(model: str, profile: Profile, *, weights=None, device=None, store=None, progress=True):
    """Per-batch Gram stacks of ``model`` (list over batches of [layers, b, b]) and their layer labels."""
    device = resolve_device(device or profile.device)
    spec = profile.section("cka")
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = profile.dataset(spec["dataset"], cfg.preprocess)
    product = GramMatrices(capture_sites=tuple(spec.get("sites", ["block"])), tokens=spec.get("tokens", "all"))
    out = extract(net, ident, dataset, {"grams": product}, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, batch_size=spec.get("batch_size", 32),
                  order=spec.get("order", "shuffled"), limit=spec.get("max_examples"), progress=progress)
    return stack_batches(out["grams"]), layer_labels(product, len(net.blocks))


def compute(models: list[str], profile: Profile, *, weights: dict | None = None, device=None, store=None,
            mode: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Minibatch CKA (OM eq. 2-3) between every layer of every pair of ``models`` (self-pairs included).

    Each model is run once; its per-batch Gram matrices are cached, so adding a model to the list costs one
    forward pass. Returns a tidy table ``model_a, model_b, site_a, site_b, index_a, index_b, cka, mode``:
    ``site`` is the captured output (``block``, ``norm1``, ``qkv``, ``fc1``; see :mod:`vitscope.extract.capture`)
    and ``index`` its block, 1-based.
    """
    spec = profile.section("cka")
    mode = mode or spec.get("mode", "reference")
    weights = weights or {}
    grams = {m: model_grams(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
             for m in models}
    return table_from_grams(grams, mode)


def table_from_grams(grams: dict, mode: str = "reference") -> pd.DataFrame:
    """The tidy CKA table of :func:`compute` from ``{model: (per-batch Gram stacks, layer labels)}``.

    Row ``(model_a, model_b, i, j)`` compares layer ``i`` of ``model_a`` with layer ``j`` of ``model_b``; pairs
    follow the dict's order (``model_a`` first), self-pairs included.
    """
    models = list(grams)
    rows = []
    for a, b in itertools.combinations_with_replacement(models, 2):
        (ga, la), (gb, lb) = grams[a], grams[b]
        matrix = cka_k.minibatch_cka_from_grams(ga, gb, mode=mode)
        rows += _rows(a, b, la, lb, matrix, mode)
    return pd.DataFrame(rows)


def _rows(a, b, la, lb, matrix: torch.Tensor, mode: str) -> list[dict]:
    return [{"model_a": a, "model_b": b, "site_a": sa, "site_b": sb, "index_a": ia, "index_b": ib,
             "cka": float(matrix[i, j]), "mode": mode}
            for i, (sa, ia) in enumerate(la) for j, (sb, ib) in enumerate(lb)]


#: OM's grouping of the objectives it compares (Sec. 2): joint-embedding (DINO, MoCo-v3) vs reconstruction (MAE).
JOINT_EMBEDDING = ("self-distillation", "contrastive")
RECONSTRUCTION = ("masked-reconstruction", "masked-token-prediction")


def pair_kind(family_a: str, family_b: str) -> str | None:
    """``"joint-embedding"`` when both families are joint-embedding, ``"mixed"`` when one is joint-embedding and the
    other reconstruction, else ``None`` (e.g. anything paired with an untrained or supervised model)."""
    je = (family_a in JOINT_EMBEDDING) + (family_b in JOINT_EMBEDDING)
    rec = (family_a in RECONSTRUCTION) + (family_b in RECONSTRUCTION)
    if je == 2:
        return "joint-embedding"
    if je == 1 and rec == 1:
        return "mixed"
    return None


def same_depth(table: pd.DataFrame, site: str | None = "block") -> pd.DataFrame:
    """CKA between layer ``i`` of one model and the same layer type at depth ``i`` of another (distinct models):
    columns ``model_a, model_b, site, index, cka``, for one ``site`` or, with ``site=None``, every site."""
    sel = table[(table.site_a == table.site_b) & (table.model_a != table.model_b) & (table.index_a == table.index_b)]
    if site is not None:
        sel = sel[sel.site_a == site]
    return (sel.rename(columns={"site_a": "site", "index_a": "index"})[["model_a", "model_b", "site", "index", "cka"]]
            .reset_index(drop=True))


# ---------------------------------------------------------------- the claims, with bootstrap intervals
JE_CLAIM, LAYER_TYPE_CLAIM = "OM-2.1a", "OM-2.1b"
#: OM Fig. 1b's layer types: LayerNorm before attention and attention qkv (the "attention and normalisation
#: layers") against the MLP's first fully-connected layer.
ATTENTION_SITES, MLP_SITE = ("norm1", "qkv"), "fc1"


def batch_terms(grams: dict) -> pd.DataFrame:
    """Per-batch HSIC_1 terms of every same-depth layer pair of every pair of distinct models (reference estimator).

    ``grams``: ``{model: (per-batch Gram stacks [S*L, b, b], layer labels)}`` as :func:`model_grams` returns;
    every model must have the same layer labels. Returns ``model_a, model_b, site, index, batch, ab, aa, bb`` with
    ``ab = HSIC_1(K_i, L_i)`` and the self terms ``aa``, ``bb`` of batch ``i``: eq. (2) over all batches of one
    (pair, site, index) is ``mean(ab) / sqrt(mean(aa) mean(bb))``, i.e. the CKA table's same-depth value.
    """
    models = list(grams)
    labels = grams[models[0]][1]
    for m in models:
        if list(grams[m][1]) != list(labels):
            raise ValueError(f"{m!r} has layers {grams[m][1][:3]}... but {models[0]!r} has {labels[:3]}...; "
                             "same-depth CKA needs models of the same depth and capture sites")
    # Self terms once per model: [k, S*L] each.
    selfs = {m: torch.stack([cka_k.hsic1(g, g) for g in grams[m][0]]) for m in models}
    frames = []
    for a, b in itertools.combinations(models, 2):
        ab = torch.stack([cka_k.hsic1(ga, gb) for ga, gb in zip(grams[a][0], grams[b][0], strict=True)])
        k, p = ab.shape
        frames.append(pd.DataFrame({
            "model_a": a, "model_b": b, "site": [labels[j][0] for j in range(p)] * k,
            "index": [labels[j][1] for j in range(p)] * k, "batch": np.repeat(np.arange(k), p),
            "ab": ab.reshape(-1).numpy(), "aa": selfs[a].reshape(-1).numpy(), "bb": selfs[b].reshape(-1).numpy()}))
    return pd.concat(frames, ignore_index=True)


def _pair(terms: pd.DataFrame, a: str, b: str, sites) -> pd.DataFrame:
    sel = terms[(((terms.model_a == a) & (terms.model_b == b)) | ((terms.model_a == b) & (terms.model_b == a)))
                & terms.site.isin(list(sites))]
    if sel.empty:
        raise KeyError(f"no HSIC terms for {a} vs {b} at sites {list(sites)}")
    return sel


def _wide(terms: pd.DataFrame, a: str, b: str, sites) -> dict[str, np.ndarray]:
    """The pair's ``ab``, ``aa``, ``bb`` terms as [batches, layers at ``sites``] arrays."""
    sel = _pair(terms, a, b, sites)
    return {t: sel.pivot_table(index="batch", columns=["site", "index"], values=t).to_numpy()
            for t in ("ab", "aa", "bb")}


def _cka_contrast(terms: pd.DataFrame, parts: list[tuple[str, str, tuple, float]]) -> Interval:
    """Contrast ``sum(weight * mean over the pair's layers at ``sites`` of CKA)`` over ``parts`` of
    ``(model_a, model_b, sites, weight)``, bootstrapped over minibatches (one draw shared by every pair)."""
    cols, weights = [], []
    for a, b, sites, w in parts:
        wide = _wide(terms, a, b, sites)
        cols.append(wide)
        weights += [w / wide["ab"].shape[1]] * wide["ab"].shape[1]
    ab, aa, bb = (torch.tensor(np.concatenate([c[t] for c in cols], axis=1)) for t in ("ab", "aa", "bb"))
    res = bootstrap_cka_contrast(ab, aa, bb, torch.tensor(weights, dtype=torch.float64), n_resamples=N_RESAMPLES,
                                 seed=SEED, confidence=CONFIDENCE)
    return Interval.from_bootstrap(res, "minibatches")


def pair_cka(terms: pd.DataFrame, a: str, b: str, sites) -> float:
    """Minibatch CKA (eq. 2, all batches) of models ``a`` and ``b``, averaged over their same-depth layers at
    ``sites``: the quantity each part of :func:`_cka_contrast` weighs."""
    wide = _wide(terms, a, b, sites)
    return float(cka_from_batch_terms(*(torch.tensor(wide[t]) for t in ("ab", "aa", "bb"))).mean())


def _swap_floor(terms: pd.DataFrame, parts_with, seeds) -> float | None:
    """The seed floor of a baseline contrast: the largest change of its estimate when the untrained baseline is
    swapped for another of ``seeds``. ``parts_with(seed)``: the contrast's parts with ``seed`` as the baseline."""
    if not seeds:
        return None
    values = [sum(w * pair_cka(terms, a, b, sites) for a, b, sites, w in parts_with(s)) for s in seeds]
    return seed_floor(values, [1.0, -1.0])


def _seed_pairs(terms: pd.DataFrame, seeds) -> list[tuple[str, str]]:
    """Every pair of distinct untrained ``seeds``: the pairs whose spread is a CKA statistic's seed floor."""
    present = set(terms.model_a) | set(terms.model_b)
    missing = [s for s in seeds if s not in present]
    if missing:
        raise ValueError(f"seeds {missing} have no HSIC terms; pass their Gram matrices to batch_terms "
                         "(check_claims adds the profile's baselines)")
    if seeds and len(seeds) < 3:
        raise ValueError(f"seeds {list(seeds)}: a CKA seed floor compares pairs of seeds, so it needs at least three "
                         "seeds (two pairs)")
    return list(itertools.combinations(seeds, 2))


def _families(terms: pd.DataFrame) -> dict[str, str]:
    from ..models import get_cfg

    return {m: get_cfg(m).family for m in dict.fromkeys([*terms.model_a, *terms.model_b])}


def joint_embedding_check(terms: pd.DataFrame, site: str = "block", seeds=()) -> list[ClaimResult]:
    """OM 2.1, Fig. 1a (``OM-2.1a``) on a :func:`batch_terms` table.

    Effect: mean same-depth CKA (over layers at ``site``) of the joint-embedding pairs minus that of the
    joint-embedding/reconstruction pairs (expected > 0). Beyond the baseline: the joint-embedding pairs minus each
    joint-embedding model vs the untrained model, i.e. the same effect with the untrained ViT in place of one of the
    pair. First row pools the pairs; then one row per (joint-embedding pair, mixed pair).

    ``seeds`` (at least three untrained models of ``terms``, or none) set the seed floors: the effect's is the most it
    could reach if every pair in it were a pair of untrained seeds (:func:`vitscope.kernels.stats.seed_floor` of the
    seed pairs' same-depth CKA: the largest difference in how alike two pairs of untrained seeds are); the baseline
    contrast's is its largest change when the untrained baseline is swapped for another seed. Empty: no seed floor.
    """
    family = _families(terms)
    names = list(family)
    pairs = list(dict.fromkeys(zip(terms.model_a, terms.model_b)))
    je = [p for p in pairs if pair_kind(family[p[0]], family[p[1]]) == "joint-embedding"]
    mixed = [p for p in pairs if pair_kind(family[p[0]], family[p[1]]) == "mixed"]
    subject = "joint-embedding minus mixed pairs"
    if not je or not mixed:
        return [cannot_check(JE_CLAIM, subject, "the profile lacks two joint-embedding models or a reconstruction "
                                                "model")]
    base = untrained_baseline(names)
    sites = (site,)
    seeds = tuple(seeds)
    seed_cka = [pair_cka(terms, s, t, sites) for s, t in _seed_pairs(terms, seeds)]

    def floor(parts) -> float | None:
        return seed_floor(seed_cka, [w for *_, w in parts]) if seeds else None

    def against(je_pairs, untrained):
        members = list(dict.fromkeys(m for p in je_pairs for m in p))
        return ([(a, b, sites, 1 / len(je_pairs)) for a, b in je_pairs]
                + [(m, untrained, sites, -1 / len(members)) for m in members])

    def row(subject_, effect_parts, je_pairs):
        beyond = _cka_contrast(terms, against(je_pairs, base)) if base else None
        beyond_floor = _swap_floor(terms, lambda s: against(je_pairs, s), seeds) if base else None
        return judge(JE_CLAIM, subject_, measure, _cka_contrast(terms, effect_parts), beyond, 1, base,
                     floor(effect_parts), beyond_floor, seeds)

    measure = f"mean same-depth CKA ({site})"
    pooled = [(a, b, sites, 1 / len(je)) for a, b in je] + [(a, b, sites, -1 / len(mixed)) for a, b in mixed]
    out = [row(subject, pooled, je)]
    for j in je:
        for m in mixed:
            out.append(row(f"{j[0]} vs {j[1]} minus {m[0]} vs {m[1]}", [(*j, sites, 1.0), (*m, sites, -1.0)], [j]))
    return out


def layer_type_check(terms: pd.DataFrame, seeds=()) -> list[ClaimResult]:
    """OM 2.1, Fig. 1b (``OM-2.1b``) on a :func:`batch_terms` table: between a joint-embedding and a reconstruction
    model, same-depth CKA of the MLP's fc1 minus the mean of LayerNorm-before-attention and attention qkv (expected
    > 0: attention and normalisation differ more). Beyond the baseline: the same difference minus that of the
    joint-embedding model vs the untrained model. One row per mixed pair, contrastive (MoCo-v3, the paper's pair)
    first.

    ``seeds`` (at least three untrained models of ``terms``, or none) set the seed floors: the effect must exceed the
    largest layer-type gap two untrained seeds show (:func:`vitscope.kernels.stats.seed_floor`), the baseline
    contrast its largest change when the untrained baseline is swapped for another seed.
    """
    family = _families(terms)
    pairs = list(dict.fromkeys(zip(terms.model_a, terms.model_b)))
    mixed = [p if family[p[0]] in JOINT_EMBEDDING else p[::-1]
             for p in pairs if pair_kind(family[p[0]], family[p[1]]) == "mixed"]
    mixed.sort(key=lambda p: family[p[0]] != "contrastive")
    subject = "joint-embedding vs reconstruction"
    if not mixed:
        return [cannot_check(LAYER_TYPE_CLAIM, subject, "the profile lacks a joint-embedding/reconstruction pair")]
    if not {MLP_SITE, *ATTENTION_SITES} <= set(terms.site):
        return [cannot_check(LAYER_TYPE_CLAIM, subject, f"the profile's CKA sites lack one of {MLP_SITE}, "
                                                        f"{', '.join(ATTENTION_SITES)}")]
    base = untrained_baseline(list(family))
    seeds = tuple(seeds)
    seed_gap = [pair_cka(terms, s, t, (MLP_SITE,)) - pair_cka(terms, s, t, ATTENTION_SITES)
                for s, t in _seed_pairs(terms, seeds)]
    # The effect is one pair's gap: slot weight 1, so its floor is the largest |gap| between two untrained seeds.
    floor = seed_floor(seed_gap, [1.0]) if seeds else None
    measure = f"same-depth CKA of {MLP_SITE} minus mean of {' and '.join(ATTENTION_SITES)}"
    out = []
    for je, rec in mixed:
        parts = [(je, rec, (MLP_SITE,), 1.0), (je, rec, ATTENTION_SITES, -1.0)]

        def against(untrained, parts=parts, je=je):
            return parts + [(je, untrained, (MLP_SITE,), -1.0), (je, untrained, ATTENTION_SITES, 1.0)]

        effect = _cka_contrast(terms, parts)
        beyond = None if base is None else _cka_contrast(terms, against(base))
        beyond_floor = None if base is None else _swap_floor(terms, against, seeds)
        out.append(judge(LAYER_TYPE_CLAIM, f"{je} vs {rec}", measure, effect, beyond, 1, base, floor, beyond_floor,
                         seeds))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights: dict | None = None, device=None,
                 store=None, progress: bool = False) -> list[ClaimResult]:
    """The claims of OM 2.1 (Fig. 1a and 1b) on ``models`` (default: the profile's ``cka.models``), from the
    cached Gram matrices. Uses the reference estimator (OM eq. 2-3) whatever the profile's ``mode``. The
    profile's untrained seeds (``baselines``) are extracted too and set the seed floors."""
    models = list(models or profile.section("cka").get("models") or profile.models)
    seeds = noise_seeds(profile)
    weights = weights or {}
    grams = {m: model_grams(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
             for m in dict.fromkeys(models + seeds)}
    terms = batch_terms(grams)
    return joint_embedding_check(terms, seeds=seeds) + layer_type_check(terms, seeds=seeds)


def estimator_comparison(reference: pd.DataFrame, compat: pd.DataFrame) -> pd.DataFrame:
    """Mean same-type CKA per model pair and layer type under both estimators, and their difference.

    ``reference`` and ``compat``: tables of :func:`compute` with ``mode="reference"`` and
    ``mode="teaching-matters"`` on the same models. Rows are matched on their keys, never on position.
    Columns: ``cka`` (reference), ``tm_compat``, ``difference`` (compat minus reference), indexed by
    ``model_a, model_b, site``."""
    keys = ["model_a", "model_b", "site_a", "site_b", "index_a", "index_b"]
    both = reference.merge(compat[keys + ["cka"]].rename(columns={"cka": "tm_compat"}), on=keys, how="inner",
                           validate="one_to_one")
    if len(both) != len(reference):
        raise ValueError("The two CKA tables do not cover the same model pairs and layers.")
    both = both[(both.model_a != both.model_b) & (both.site_a == both.site_b)].rename(columns={"site_a": "site"})
    both["difference"] = both.tm_compat - both.cka
    return both.groupby(["model_a", "model_b", "site"], sort=False)[["cka", "tm_compat", "difference"]].mean()

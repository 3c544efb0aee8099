"""Teaching Matters §5.1 (Fig. 6) — minibatch CKA between the last blocks of every pair of models.

Product: :class:`vitscope.extract.GramMatrices` twice from ONE forward pass per model: ``tokens="cls"`` (the CLS
token) and ``tokens="spatial"`` (every spatial token of an image flattened into one vector, CLS dropped: the
Teaching Matters code's ``spat`` mode), at the block outputs; only the last block is compared. Kernels:
:func:`vitscope.kernels.cka.minibatch_cka_from_grams` (both estimators: the reference and ``teaching-matters``)
and, for the claims, :func:`vitscope.sections.cka.batch_terms` with a bootstrap over minibatches
(:func:`vitscope.kernels.stats.bootstrap_cka_contrast`). Where the profile names untrained seeds (``baselines``, at
least three: CKA compares pairs of seeds), each verdict must also clear their seed floor
(:mod:`vitscope.claims.verdict`): an effect, the largest value it reaches with every pair in it replaced by a pair
of seeds (:func:`vitscope.kernels.stats.seed_floor` of the seed pairs' CKA); a baseline contrast, its largest change
when the untrained baseline is swapped for another seed.
"""
from __future__ import annotations

import itertools

import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, judge
from ..data import transform_key
from ..devices import resolve_device
from ..extract import FeatureStore, GramMatrices, extract, stack_batches
from ..kernels import cka as cka_k
from ..kernels.stats import seed_floor
from ..profiles import Profile
from .cka import _cka_contrast, _seed_pairs, _swap_floor, batch_terms, pair_cka
from .common import load_for_analysis

SECTION = "last_layer_cka"
#: Fig. 6 left (CLS) and right (spatial tokens), as Gram-product token reductions.
TOKENS = {"cls": "CLS token", "spatial": "spatial tokens (flattened)"}


def last_block_grams(model: str, profile: Profile, *, weights=None, device=None, store=None,
                     progress: bool = False) -> dict[str, list]:
    """``{tokens: [per-batch Gram [b, b] of the last block]}`` for ``cls`` and ``spatial``, from one forward pass
    (cached; the products keep every block, which costs a few KB per batch)."""
    device = resolve_device(device or profile.device)
    spec = profile.section(SECTION)
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = profile.dataset(spec["dataset"], cfg.preprocess)
    products = {t: GramMatrices(capture_sites=("block",), tokens=t) for t in TOKENS}
    out = extract(net, ident, dataset, products, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, batch_size=spec.get("batch_size", 32),
                  order=spec.get("order", "shuffled"), limit=spec.get("max_examples"), progress=progress)
    return {t: [g[-1] for g in stack_batches(out[t])] for t in TOKENS}


def grams_of(models: list[str], profile: Profile, *, weights: dict | None = None, device=None, store=None,
             progress: bool = False) -> dict[str, dict[str, list]]:
    """:func:`last_block_grams` of every model: ``{model: {tokens: [per-batch [b, b]]}}``."""
    weights = weights or {}
    return {m: last_block_grams(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
            for m in models}


def table_from_grams(grams: dict[str, dict[str, list]]) -> pd.DataFrame:
    """Tidy table ``model_a, model_b, tokens, mode, cka`` for every pair of models (self-pairs and both orders,
    so it pivots into a full symmetric matrix), both token readouts and both estimators of
    :data:`vitscope.kernels.cka.MODES`."""
    rows = []
    models = list(grams)
    for a, b in itertools.combinations_with_replacement(models, 2):
        for tokens, mode in itertools.product(TOKENS, cka_k.MODES):
            value = float(cka_k.minibatch_cka_from_grams([g[None] for g in grams[a][tokens]],
                                                         [g[None] for g in grams[b][tokens]], mode=mode)[0, 0])
            rows += [{"model_a": x, "model_b": y, "tokens": tokens, "mode": mode, "cka": value}
                     for x, y in dict.fromkeys([(a, b), (b, a)])]
    return pd.DataFrame(rows)


def compute(models: list[str] | None, profile: Profile, *, weights: dict | None = None, device=None, store=None,
            progress: bool = False) -> pd.DataFrame:
    """Last-block minibatch CKA between every pair of ``models`` (default: the section's ``models`` or the profile's):
    see :func:`table_from_grams`."""
    models = list(models or profile.section(SECTION).get("models") or profile.models)
    return table_from_grams(grams_of(models, profile, weights=weights, device=device, store=store,
                                     progress=progress))


def matrix(table: pd.DataFrame, tokens: str, mode: str = "reference") -> pd.DataFrame:
    """One [models x models] CKA frame of ``table``, models in the table's order."""
    sel = table[(table.tokens == tokens) & (table["mode"] == mode)]
    if sel.empty:
        raise KeyError(f"no CKA rows for tokens={tokens!r}, mode={mode!r}; the table has tokens "
                       f"{sorted(set(table.tokens))} and modes {sorted(set(table['mode']))}")
    order = list(dict.fromkeys(sel.model_a))
    return sel.pivot(index="model_a", columns="model_b", values="cka").loc[order, order]


# ---------------------------------------------------------------- the claims, with bootstrap intervals
PAIR_CLAIM, MAE_CLAIM, SPATIAL_CLAIM = "TM-5.1a", "TM-5.1b", "TM-5.1c"
CONTRASTIVE = ("self-distillation", "contrastive")          # DINO, MoCo-v3
MAE, BEIT = "masked-reconstruction", "masked-token-prediction"
SELF_SUPERVISED_SPATIAL = ("self-distillation", "contrastive", "masked-reconstruction")   # DINO, MoCo, MAE


def terms_from_grams(grams: dict[str, dict[str, list]]):
    """Per-batch HSIC_1 terms of every pair of distinct models, the token readouts standing as ``site``
    (:func:`vitscope.sections.cka.batch_terms` on the last block): columns ``model_a, model_b, site, index, batch,
    ab, aa, bb``."""
    stacked = {m: ([torch.stack([g[t][i] for t in TOKENS]) for i in range(len(g["cls"]))], [(t, 1) for t in TOKENS])
               for m, g in grams.items()}
    return batch_terms(stacked)


def _by_family(models) -> dict[str, list[str]]:
    from ..models import get_cfg

    out: dict[str, list[str]] = {}
    for m in models:
        out.setdefault(get_cfg(m).family, []).append(m)
    return out


def _pairs(terms) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(terms.model_a, terms.model_b)))


def _effect_floor(terms, seeds, parts) -> float | None:
    """The seed floor of a contrast whose ``parts`` ``(model_a, model_b, sites, weight)`` all read one token
    readout: :func:`vitscope.kernels.stats.seed_floor` of the seed pairs' CKA there; ``None`` without seeds."""
    if not seeds:
        return None
    sites = {tuple(p[2]) for p in parts}
    if len(sites) != 1:
        raise ValueError(f"the contrast's parts read several token readouts {sorted(sites)}; its seed floor needs "
                         "one statistic per seed pair (write the floor of a mixed contrast by hand)")
    (site,) = sites
    seed_cka = [pair_cka(terms, a, b, site) for a, b in _seed_pairs(terms, seeds)]
    return seed_floor(seed_cka, [p[3] for p in parts])


def pair_check(terms, seeds=()) -> list[ClaimResult]:
    """``TM-5.1a``: the contrastive pair (DINO, MoCo-v3) has the most similar last-block CLS tokens of all pairs.

    Effects: its CKA minus that of the next most similar pair of trained models, and minus the mean of all other
    such pairs (expected > 0). Beyond the baseline: its CKA minus the mean CKA of each of the two with the
    untrained model. ``seeds``: untrained models of ``terms`` (three or more, or none: no seed floor)."""
    fam = _by_family(dict.fromkeys([*terms.model_a, *terms.model_b]))
    dino, moco = fam.get("self-distillation", [None])[0], fam.get("contrastive", [None])[0]
    subject = "DINO vs MoCo-v3 minus other pairs"
    if dino is None or moco is None:
        return [cannot_check(PAIR_CLAIM, subject, "the profile lacks a self-distillation (DINO) or a contrastive "
                                                  "(MoCo-v3) model")]
    base = untrained_baseline([m for ms in fam.values() for m in ms])
    trained = [m for f, ms in fam.items() if f != "random" for m in ms]
    others = [p for p in itertools.combinations(trained, 2) if set(p) != {dino, moco}]
    if not others:
        return [cannot_check(PAIR_CLAIM, subject, "the profile has no other pair of trained models")]
    sites = ("cls",)
    pair = (dino, moco, sites, 1.0)
    seeds = tuple(seeds)

    def against(untrained):
        return [pair, (dino, untrained, sites, -0.5), (moco, untrained, sites, -0.5)]

    beyond = None if base is None else _cka_contrast(terms, against(base))
    beyond_floor = None if base is None else _swap_floor(terms, against, seeds)
    single = {p: _cka_contrast(terms, [(*p, sites, 1.0)]).estimate for p in others}
    runner_up = max(single, key=single.get)
    measure = "last-block CLS CKA"
    to_runner_up = [pair, (*runner_up, sites, -1.0)]
    to_others = [pair] + [(*p, sites, -1 / len(others)) for p in others]
    return [judge(PAIR_CLAIM, f"{dino} vs {moco} minus the next most similar pair, {runner_up[0]} vs {runner_up[1]}",
                  measure, _cka_contrast(terms, to_runner_up), beyond, 1, base,
                  _effect_floor(terms, seeds, to_runner_up), beyond_floor, seeds),
            judge(PAIR_CLAIM, f"{dino} vs {moco} minus the mean of the other {len(others)} pairs", measure,
                  _cka_contrast(terms, to_others), beyond, 1, base, _effect_floor(terms, seeds, to_others),
                  beyond_floor, seeds)]


def mae_check(terms, seeds=()) -> list[ClaimResult]:
    """``TM-5.1b``: MAE's last-block CLS is as similar to DINO's and MoCo-v3's as to BEiT's.

    Effect: mean CKA of MAE with the contrastive models minus CKA of MAE with BEiT, expected >= 0 (*as similar*:
    an interval wholly below 0 contradicts the paper; the rule calls an interval around 0 inconclusive, it cannot
    confirm an equality). Beyond the baseline: the same difference with the untrained model in place of MAE.
    ``seeds``: untrained models of ``terms`` (three or more, or none: no seed floor)."""
    fam = _by_family(dict.fromkeys([*terms.model_a, *terms.model_b]))
    con = [m for f in CONTRASTIVE for m in fam.get(f, [])]
    mae, beit = fam.get(MAE, [None])[0], fam.get(BEIT, [None])[0]
    subject = "MAE vs DINO/MoCo-v3 minus MAE vs BEiT"
    if mae is None or beit is None or not con:
        return [cannot_check(MAE_CLAIM, subject, "the profile lacks MAE, BEiT or a contrastive model")]
    base = untrained_baseline([m for ms in fam.values() for m in ms])
    sites = ("cls",)

    def diff(x, w=1.0):
        return [(x, m, sites, w / len(con)) for m in con] + [(x, beit, sites, -w)]

    seeds = tuple(seeds)
    beyond = None if base is None else _cka_contrast(terms, diff(mae) + diff(base, -1.0))
    beyond_floor = None if base is None else _swap_floor(terms, lambda s: diff(mae) + diff(s, -1.0), seeds)
    return [judge(MAE_CLAIM, f"{mae} vs {', '.join(con)} minus {mae} vs {beit}", "last-block CLS CKA",
                  _cka_contrast(terms, diff(mae)), beyond, 1, base, _effect_floor(terms, seeds, diff(mae)),
                  beyond_floor, seeds)]


def spatial_check(terms, seeds=()) -> list[ClaimResult]:
    """``TM-5.1c`` (spatial tokens): DINO, MAE and MoCo-v3 are more similar to each other than to BEiT (expected
    > 0; beyond: each of them vs the untrained model in place of BEiT), and FS and CLIP are less similar in their
    spatial tokens than in their CLS tokens (expected < 0; beyond: CLIP vs the untrained model in place of FS).
    ``seeds``: untrained models of ``terms`` (three or more, or none: no seed floor); the FS/CLIP effect is one
    pair's spatial-minus-CLS gap, so its floor is the largest |gap| of a pair of seeds."""
    fam = _by_family(dict.fromkeys([*terms.model_a, *terms.model_b]))
    ssl = [m for f in SELF_SUPERVISED_SPATIAL for m in fam.get(f, [])]
    beit = fam.get(BEIT, [None])[0]
    base = untrained_baseline([m for ms in fam.values() for m in ms])
    measure = "last-block spatial-token CKA"
    sp = ("spatial",)
    seeds = tuple(seeds)
    out = []
    if len(ssl) < 2 or beit is None:
        out.append(cannot_check(SPATIAL_CLAIM, "DINO, MAE, MoCo-v3 among themselves minus vs BEiT",
                                "the profile lacks two of DINO, MAE, MoCo-v3, or BEiT"))
    else:
        within = list(itertools.combinations(ssl, 2))
        parts = [(a, b, sp, 1 / len(within)) for a, b in within]

        def against(other, parts=parts):
            return parts + [(m, other, sp, -1 / len(ssl)) for m in ssl]

        effect = _cka_contrast(terms, against(beit))
        beyond = None if base is None else _cka_contrast(terms, against(base))
        beyond_floor = None if base is None else _swap_floor(terms, against, seeds)
        out.append(judge(SPATIAL_CLAIM, f"mean over pairs of {', '.join(ssl)} minus their mean vs {beit}", measure,
                         effect, beyond, 1, base, _effect_floor(terms, seeds, against(beit)), beyond_floor, seeds))
    fs, clip = fam.get("supervised", [None])[0], fam.get("image-text", [None])[0]
    if fs is None or clip is None:
        out.append(cannot_check(SPATIAL_CLAIM, "FS vs CLIP", "the profile lacks a supervised or an image-text model"))
        return out
    parts = [(fs, clip, sp, 1.0), (fs, clip, ("cls",), -1.0)]

    def minus(untrained):
        return parts + [(untrained, clip, sp, -1.0), (untrained, clip, ("cls",), 1.0)]

    beyond = None if base is None else _cka_contrast(terms, minus(base))
    beyond_floor = None if base is None else _swap_floor(terms, minus, seeds)
    # One pair's gap (slot weight 1): its floor is the largest |spatial minus CLS CKA| of a pair of seeds.
    seed_gap = [pair_cka(terms, s, t, sp) - pair_cka(terms, s, t, ("cls",)) for s, t in _seed_pairs(terms, seeds)]
    floor = seed_floor(seed_gap, [1.0]) if seeds else None
    out.append(judge(SPATIAL_CLAIM, f"{fs} vs {clip}", "spatial-token CKA minus CLS CKA (last block)",
                     _cka_contrast(terms, parts), beyond, -1, base, floor, beyond_floor, seeds))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """The claims of TM 5.1 (Fig. 6) on ``models`` (default: the section's or the profile's), reference estimator,
    bootstrap over CKA minibatches. The profile's untrained seeds (``baselines``) are extracted too and set the seed
    floors."""
    models = list(models or profile.section(SECTION).get("models") or profile.models)
    seeds = noise_seeds(profile)
    terms = terms_from_grams(grams_of(list(dict.fromkeys(models + seeds)), profile, weights=weights, device=device,
                                      store=store, progress=progress))
    return pair_check(terms, seeds) + mae_check(terms, seeds) + spatial_check(terms, seeds)

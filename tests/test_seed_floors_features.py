"""Seed floors in the TM 5.1 (last-block CKA), 5.2 (purity) and 5.3 (region purity) claim checks.

Each test plants an effect that the image (or minibatch) bootstrap alone calls clear, and untrained seeds whose
spread is larger (the verdict must be *inconclusive*) or smaller (it must *hold*); the floors are checked against
hand-computed values (largest |difference| between seeds, largest |seed statistic|).
"""
from __future__ import annotations

import pytest
import torch

from fake_tables import indicators
from vitscope.claims import HOLDS, INCONCLUSIVE
from vitscope.kernels import cka as cka_k
from vitscope.sections import last_layer_cka as llc
from vitscope.sections import purity, region_purity

SEEDS = ("random-a", "random-b", "random-c")
N = 2000


def _indicators(rates, n=N, seed=0):
    return indicators(rates, n, seed)


def _row(rows, subject):
    return next(r for r in rows if r.subject == subject)


# ---------------------------------------------------------------- TM 5.2: purity
def _order_rates(spread: float) -> dict[str, list[float]]:
    # FS beats CLIP by 0.15 at the last block; the seeds' last-block purity spans ``spread``.
    return {"zoo-supervised": [0.2, 0.70], "zoo-clip": [0.2, 0.55], "zoo-mae": [0.2, 0.40], "random-a": [0.2, 0.30],
            "random-b": [0.2, 0.30 + spread], "random-c": [0.2, 0.30 + spread / 2]}


def test_purity_order_effect_inside_the_seed_spread_is_inconclusive():
    noise = _indicators({"noise": [0.1]})["noise"][0]
    wide = purity.order_check(_indicators(_order_rates(0.25)), noise, SEEDS)
    row = _row(wide, "zoo-supervised minus zoo-clip")
    assert row.effect.estimate == pytest.approx(0.15) and row.effect.low > 0     # the bootstrap alone: clear
    assert row.floor == pytest.approx(0.25) and row.baseline_floor == pytest.approx(0.25)
    assert row.verdict == INCONCLUSIVE and "seed noise" in row.reason and row.seeds == SEEDS
    # minus noise: the statistic is seed minus noise, its floor the largest |seed - noise| = 0.55 - 0.1
    mae = _row(wide, "zoo-mae minus noise")
    assert mae.floor == pytest.approx(0.55 - 0.1) and mae.verdict == INCONCLUSIVE
    narrow = purity.order_check(_indicators(_order_rates(0.05)), noise, SEEDS)
    row = _row(narrow, "zoo-supervised minus zoo-clip")
    assert row.floor == pytest.approx(0.05) and row.verdict == HOLDS


def test_purity_without_seeds_is_unchanged():
    noise = _indicators({"noise": [0.1]})["noise"][0]
    correct = _indicators(_order_rates(0.25))
    plain, one_seed, seeded = (purity.order_check(correct, noise, s) for s in ((), ("random-a",), SEEDS))
    for a, b, c in zip(plain, one_seed, seeded, strict=True):
        assert a == b and a.floor is None and a.seeds == ()
        assert (a.effect, a.baseline) == (c.effect, c.baseline)        # floors never move an interval
    assert _row(plain, "zoo-supervised minus zoo-clip").verdict == HOLDS
    with pytest.raises(ValueError, match="random-z"):
        purity.order_check(correct, noise, ("random-a", "random-z"))


def test_purity_depth_floor_is_the_largest_seed_rise():
    def rates(b_rise, c_rise):
        return {"zoo-supervised": [0.2, 0.4, 0.45], "zoo-beit": [0.2, 0.5, 0.35], "random-a": [0.3, 0.3, 0.3],
                "random-b": [0.3, 0.3, 0.3 + b_rise], "random-c": [0.3, 0.3 - c_rise, 0.3]}
    wide = purity.depth_check(_indicators(rates(0.3, 0.2)), SEEDS)
    fs, beit = _row(wide, "zoo-supervised"), _row(wide, "zoo-beit")
    assert fs.effect.estimate == pytest.approx(0.25) and fs.effect.low > 0
    assert fs.floor == pytest.approx(0.3) and fs.baseline_floor == pytest.approx(0.3)    # rises 0, 0.3, 0
    assert fs.verdict == INCONCLUSIVE
    assert _row(purity.depth_check(_indicators(rates(0.3, 0.2))), "zoo-supervised").verdict == HOLDS    # no floor
    # BEiT's row reads the last block minus the one before: seeds 0, +0.3, +0.2 -> floor 0.3 > its drop 0.15
    assert beit.floor == pytest.approx(0.3) and beit.baseline_floor == pytest.approx(0.3)
    assert beit.verdict == INCONCLUSIVE
    narrow = purity.depth_check(_indicators(rates(0.03, 0.02)), SEEDS)
    fs, beit = _row(narrow, "zoo-supervised"), _row(narrow, "zoo-beit")
    assert fs.floor == pytest.approx(0.03) and fs.verdict == HOLDS
    assert beit.floor == pytest.approx(0.03) and beit.baseline_floor == pytest.approx(0.03) and beit.verdict == HOLDS


# ---------------------------------------------------------------- TM 5.3: region purity
FAMILY = {"zoo-supervised": "supervised", "zoo-clip": "image-text", "zoo-dino": "self-distillation",
          "zoo-mocov3": "contrastive", "zoo-mae": "masked-reconstruction", "zoo-beit": "masked-token-prediction",
          **{s: "random" for s in SEEDS}}


def _region_rates(spread: float) -> dict[str, list[float]]:
    # last block: supervised 0.15 above DINO; peak: DINO drops 0.1 after the block before the last
    return {"zoo-supervised": [0.3, 0.6, 0.65], "zoo-dino": [0.3, 0.6, 0.5], "zoo-mae": [0.2, 0.3, 0.25],
            "random-a": [0.2, 0.2, 0.2], "random-b": [0.2, 0.2 + spread, 0.2 + spread],
            "random-c": [0.2, 0.2 + spread, 0.2]}


def test_region_order_and_peak_inside_the_seed_spread_are_inconclusive():
    correct = _indicators(_region_rates(0.2))
    order = _row(region_purity.order_check(correct, "object", FAMILY, SEEDS), "label-supervised minus joint-embedding")
    assert order.effect.estimate == pytest.approx(0.15) and order.effect.low > 0
    assert order.floor == pytest.approx(0.2) and order.verdict == INCONCLUSIVE      # last blocks 0.2, 0.4, 0.2
    peak = _row(region_purity.peak_check(correct, "part", FAMILY, SEEDS), "zoo-dino (parts)")
    assert peak.effect.estimate == pytest.approx(0.1) and peak.effect.low > 0
    # drops 0, 0, 0.2: the effect's floor is the largest |drop|, the baseline's the largest gap between two
    assert peak.floor == pytest.approx(0.2) and peak.baseline_floor == pytest.approx(0.2)
    assert peak.verdict == INCONCLUSIVE
    assert _row(region_purity.peak_check(correct, "part", FAMILY), "zoo-dino (parts)").verdict == HOLDS    # no floor
    correct = _indicators(_region_rates(0.02))
    order = _row(region_purity.order_check(correct, "object", FAMILY, SEEDS), "label-supervised minus joint-embedding")
    peak = _row(region_purity.peak_check(correct, "part", FAMILY, SEEDS), "zoo-dino (parts)")
    assert (order.verdict, peak.verdict) == (HOLDS, HOLDS)
    assert order.floor == pytest.approx(0.02) and peak.floor == pytest.approx(0.02)


def test_region_checks_without_seeds_keep_their_intervals():
    correct = _indicators(_region_rates(0.2))
    for check, level in ((region_purity.order_check, "object"), (region_purity.peak_check, "part")):
        plain, seeded = check(correct, level, FAMILY), check(correct, level, FAMILY, SEEDS)
        assert all(r.floor is None and r.seeds == () for r in plain)
        assert [(r.effect, r.baseline) for r in plain] == [(r.effect, r.baseline) for r in seeded]


# ---------------------------------------------------------------- TM 5.1: last-block CKA
M, B = 240, 24          # 10 minibatches of 24
MODELS = ["zoo-supervised", "zoo-clip", "zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-beit", *SEEDS]


def _grams(shared: dict[str, tuple[str, float]], seed=0, dim=8):
    """Per model, the last block's CLS and spatial Gram matrices per minibatch; ``shared[m] = (key, r)``: the model's
    features mix a latent signal ``key`` (weight ``r``) with its own noise (weight ``1 - r``)."""
    gen = torch.Generator().manual_seed(seed)
    latents = {key: torch.randn(M, dim, generator=gen, dtype=torch.float64) for key, _ in shared.values()}
    out = {}
    for m in MODELS:
        own = torch.randn(M, dim, generator=gen, dtype=torch.float64)
        key, r = shared.get(m, (None, 0.0))
        cls = (r * latents[key] if key else 0) + (1 - r) * own
        spatial = cls[:, None, :] + 0.5 * torch.randn(M, 4, dim, generator=gen, dtype=torch.float64)
        out[m] = {t: [cka_k.gram(x[s:s + B]) for s in range(0, M, B)] for t, x in (("cls", cls), ("spatial", spatial))}
    return out


def _seed_cka_spread(grams, tokens="cls") -> float:
    """Independent reference: the largest gap between the seed pairs' CKA, read from the CKA table."""
    table = llc.matrix(llc.table_from_grams({s: grams[s] for s in SEEDS}), tokens)
    values = [table.loc[a, b] for a, b in (SEEDS[:2], SEEDS[::2], SEEDS[1:])]
    return max(values) - min(values)


def test_pair_claim_inside_the_seed_spread_is_inconclusive():
    planted = {"zoo-dino": ("c", 0.5), "zoo-mocov3": ("c", 0.5)}
    alike = _grams({**planted, "random-a": ("s", 1.0), "random-b": ("s", 1.0)})     # two seeds identical
    rows = llc.pair_check(llc.terms_from_grams(alike), SEEDS)
    floor = _seed_cka_spread(alike)
    assert floor > 0.8
    for row in rows:
        assert row.effect.low > 0 and row.effect.high < floor
        assert row.floor == pytest.approx(floor) and row.verdict == INCONCLUSIVE
    assert [r.verdict for r in llc.pair_check(llc.terms_from_grams(alike))] == [HOLDS, HOLDS]    # without the floor
    apart = _grams(planted)                                                       # independent seeds
    rows = llc.pair_check(llc.terms_from_grams(apart), SEEDS)
    assert rows[0].floor == pytest.approx(_seed_cka_spread(apart)) and rows[0].floor < 0.3
    assert [r.verdict for r in rows] == [HOLDS, HOLDS]
    plain = llc.pair_check(llc.terms_from_grams(apart))
    assert [(r.effect, r.baseline, r.floor) for r in plain] == [(r.effect, r.baseline, None) for r in rows]


def test_mae_and_spatial_claims_get_seed_floors():
    grams = _grams({"zoo-mae": ("c", 0.6), "zoo-dino": ("c", 0.6), "zoo-mocov3": ("c", 0.6)})
    terms = llc.terms_from_grams(grams)
    mae = llc.mae_check(terms, SEEDS)[0]
    assert mae.floor == pytest.approx(_seed_cka_spread(grams)) and mae.verdict == HOLDS
    spatial = llc.spatial_check(terms, SEEDS)
    assert spatial[0].floor == pytest.approx(_seed_cka_spread(grams, "spatial"))
    # FS vs CLIP: one pair's spatial-minus-CLS gap, floor the largest |gap| of a seed pair
    sp = llc.matrix(llc.table_from_grams({s: grams[s] for s in SEEDS}), "spatial")
    cl = llc.matrix(llc.table_from_grams({s: grams[s] for s in SEEDS}), "cls")
    gaps = [abs(sp.loc[a, b] - cl.loc[a, b]) for a, b in (SEEDS[:2], SEEDS[::2], SEEDS[1:])]
    assert spatial[1].floor == pytest.approx(max(gaps)) and spatial[1].baseline_floor is not None
    with pytest.raises(ValueError, match="three"):
        llc.mae_check(terms, SEEDS[:2])

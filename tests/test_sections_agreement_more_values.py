"""sections.agreement: OM App. F's check on a constructed per-image table: the exact measure text, the contrast's
estimate against a hand computation (images with an undefined tau in any used pair left out), the baseline
contrast, the seed floors from three seed pairs, and the whole cannot-check message."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from vitscope.claims.verdict import CANNOT_CHECK, HOLDS
from vitscope.sections import agreement

N = 40
NAMES = ["zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-beit", "random-a", "random-b", "random-c"]
LEVEL = {("zoo-dino", "zoo-mocov3"): 0.8, ("random-a", "random-b"): 0.05, ("random-a", "random-c"): 0.15,
         ("random-b", "random-c"): 0.1}


def _level(a, b):
    if (a, b) in LEVEL:
        return LEVEL[(a, b)]
    if "random" in a or "random" in b:
        return 0.1 if {a, b} & {"zoo-dino", "zoo-mocov3"} else 0.0
    return 0.3


def _img(names=NAMES):
    rng = np.random.default_rng(5)
    frames = []
    for a, b in combinations(names, 2):
        tau = _level(a, b) + 0.02 * rng.standard_normal(N)
        if (a, b) == ("zoo-mocov3", "zoo-mae"):
            tau[[3, 7]] = np.nan                              # undefined taus: images 3 and 7 leave every contrast
        if (a, b) == ("zoo-mae", "zoo-beit"):
            tau[11] = np.nan                                  # a pair no contrast uses: image 11 stays
        frames.append(pd.DataFrame({"model_a": a, "model_b": b, "image": np.arange(N), "tau@5": tau,
                                    "agree": (rng.random(N) < _level(a, b) + 0.1).astype(float)}))
    return pd.concat(frames, ignore_index=True)


def _pair(img, a, b, col):
    g = img[(img.model_a == a) & (img.model_b == b)].sort_values("image")
    return g[col].to_numpy()


def test_agreement_check_measure_estimate_baseline_and_seed_floors():
    img = _img()
    rows = agreement.agreement_check(img, ks=(5,), seeds=["random-a", "random-b", "random-c"])
    assert [(r.claim, r.subject) for r in rows] == [
        ("OM-F.a", "joint-embedding pair minus joint-embedding/reconstruction pairs"),
        ("OM-F.b", "joint-embedding pair minus joint-embedding/reconstruction pairs")]
    mixed = "zoo-dino–zoo-mae, zoo-dino–zoo-beit, zoo-mocov3–zoo-mae, zoo-mocov3–zoo-beit"
    assert rows[0].measure == f"top-5 Kendall tau: zoo-dino–zoo-mocov3 minus {mixed}"
    assert rows[1].measure == f"top-1 agreement (micro F1): zoo-dino–zoo-mocov3 minus {mixed}"
    tau_keep = np.ones(N, bool)
    tau_keep[[3, 7]] = False
    for r, col, keep in zip(rows, ("tau@5", "agree"), (tau_keep, np.ones(N, bool))):   # agree: never undefined
        v = {(a, b): _pair(img, a, b, col)[keep] for a, b in combinations(NAMES, 2)}
        je = v[("zoo-dino", "zoo-mocov3")].mean()
        mix = np.mean([v[p].mean() for p in [("zoo-dino", "zoo-mae"), ("zoo-dino", "zoo-beit"),
                                             ("zoo-mocov3", "zoo-mae"), ("zoo-mocov3", "zoo-beit")]])
        base = np.mean([v[("zoo-dino", "random-a")].mean(), v[("zoo-mocov3", "random-a")].mean()])
        seeds = [v[p].mean() for p in [("random-a", "random-b"), ("random-a", "random-c"),
                                       ("random-b", "random-c")]]
        assert r.effect.estimate == pytest.approx(je - mix) and r.effect.n == keep.sum()
        assert r.baseline.estimate == pytest.approx(je - base) and r.baseline_model == "random-a"
        assert r.floor == pytest.approx(max(seeds) - min(seeds))
        assert r.baseline_floor == pytest.approx(max(seeds) - min(seeds))
        assert r.seeds == ("random-a", "random-b", "random-c") and r.expected == 1
    assert rows[0].verdict == HOLDS and rows[0].effect.low > 0.4


def test_agreement_check_one_seed_pair_sets_no_floor_and_without_base_no_baseline():
    names = ["zoo-dino", "zoo-mocov3", "zoo-mae", "random-a", "random-b"]
    rows = agreement.agreement_check(_img(names), ks=(5,), seeds=["random-a", "random-b"])
    assert rows[0].floor is None and rows[0].seeds == ()
    assert rows[0].measure == ("top-5 Kendall tau: zoo-dino–zoo-mocov3 minus zoo-dino–zoo-mae, "
                               "zoo-mocov3–zoo-mae")
    rows = agreement.agreement_check(_img(names[:3]), ks=(5,))
    assert rows[0].baseline is None and rows[0].baseline_model is None and rows[0].effect.n == N - 2


def test_agreement_check_cannot_check_without_the_groups():
    reason = "the profile lacks two joint-embedding models or a reconstruction model"
    subject = "joint-embedding pair minus joint-embedding/reconstruction pairs"
    for names in (["zoo-dino", "zoo-mae", "random-a"], ["zoo-dino", "zoo-mocov3", "random-a"]):
        rows = agreement.agreement_check(_img(names), ks=(5, 10))
        assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows] == [
            ("OM-F.a", subject, CANNOT_CHECK, reason), ("OM-F.a", subject, CANNOT_CHECK, reason),
            ("OM-F.b", subject, CANNOT_CHECK, reason)]


def test_agreement_check_two_seed_pairs_are_enough_for_a_floor():
    img = _img()
    img = img[~((img.model_a == "random-b") & (img.model_b == "random-c"))]   # that seed pair not in the table
    row = agreement.agreement_check(img, ks=(5,), seeds=["random-a", "random-b", "random-c"])[1]    # agreement
    ab, ac = _pair(img, "random-a", "random-b", "agree").mean(), _pair(img, "random-a", "random-c", "agree").mean()
    assert row.floor == pytest.approx(abs(ab - ac)) and row.seeds == ("random-a", "random-b", "random-c")

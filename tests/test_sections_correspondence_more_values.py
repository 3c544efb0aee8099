"""TM 6.2 keypoints (sections.correspondence), values: ``compute`` and ``check_claims`` with ``per_pair`` (model
loading, matching) replaced by recorded hand-made rows; the claim rows' estimates (category-mean PCK by hand) and
measure strings; and the exact messages."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitscope.claims.verdict import CANNOT_CHECK
from vitscope.profiles import Profile
from vitscope.sections import correspondence as sec

SEEDS = ("random-a", "random-b")
CATS = ["cat", "cat", "dog", "dog", "dog", "bus"]
TOTALS = [4, 6, 5, 5, 2, 8]


def _rows(model: str, per_block: list[float], alphas=(0.1, 0.05), seed=0, first=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for b, p in enumerate(per_block, first):
        for alpha in alphas:
            correct = np.minimum(rng.binomial(TOTALS, min(p * (1 + alpha), 1.0)), TOTALS)
            frames.append(pd.DataFrame({"model": model, "block": b, "alpha": alpha, "pair": np.arange(6),
                                        "category": CATS, "correct": correct, "total": TOTALS}))
    return pd.concat(frames, ignore_index=True)


def _pck(pp, model, block, alpha=0.1) -> float:
    """Category-mean PCK by hand: per category, pooled correct / pooled keypoints; then the mean."""
    g = pp[(pp.model == model) & (pp.block == block) & np.isclose(pp.alpha, alpha)]
    per_cat = g.groupby("category")[["correct", "total"]].sum()
    return float((per_cat.correct / per_cat.total).mean())


def test_compute_adds_the_noise_column(monkeypatch):
    run = Profile("t", {"models": ["zoo-dino"], "keypoints": {"dataset": "s"}})
    pp = pd.concat([_rows("zoo-dino", [0.3, 0.6, 0.5]), _rows("noise", [0.05], seed=9, first=0)], ignore_index=True)
    calls = []
    monkeypatch.setattr(sec, "per_pair", lambda m, p, **kw: calls.append((m, p, kw)) or pp)
    out = sec.compute("zoo-dino", run, weights="w", device="d", store="s", progress=True)
    assert calls == [("zoo-dino", run, {"weights": "w", "device": "d", "store": "s", "progress": True})]
    assert out.model.tolist() == ["zoo-dino"] * 6 and out.block.tolist() == [1, 1, 2, 2, 3, 3]
    assert out.alpha.tolist() == [0.1, 0.05] * 3
    assert out.pck.tolist() == pytest.approx([_pck(pp, "zoo-dino", b, a) for b in (1, 2, 3) for a in (0.1, 0.05)])
    assert out.noise.tolist() == pytest.approx([_pck(pp, "noise", 0, a) for a in (0.1, 0.05)] * 3)
    assert _pck(pp, "noise", 0, 0.1) != _pck(pp, "noise", 0, 0.05)
    assert (out.n_pairs == 6).all() and (out.n_keypoints == 30).all() and (out.n_categories == 3).all()


def test_check_claims_adds_seeds_drops_noise_and_uses_the_profiles_alpha(monkeypatch):
    run = Profile("t", {"models": ["zoo-clip", "zoo-dino"], "baselines": list(SEEDS),
                        "keypoints": {"dataset": "s", "alphas": [0.1, 0.05], "alpha": 0.05}})
    calls = []

    def fake(m, profile, *, weights=None, device=None, store=None, progress=False):
        calls.append((m, weights, device, store, progress))
        return pd.concat([_rows(m, [0.3, 0.5], seed=len(calls)), _rows("noise", [0.0], first=0)], ignore_index=True)

    got = {}
    monkeypatch.setattr(sec, "per_pair", fake)
    monkeypatch.setattr(sec, "check", lambda pp, seeds, alpha: got.update(
        models=list(dict.fromkeys(pp.model)), seeds=seeds, alpha=alpha, n=len(pp)) or ["rows"])
    assert sec.check_claims(None, run, weights={"zoo-dino": "w"}, device="d", store="s", progress=True) == ["rows"]
    assert calls == [("zoo-clip", None, "d", "s", True), ("zoo-dino", "w", "d", "s", True),
                     ("random-a", None, "d", "s", True), ("random-b", None, "d", "s", True)]
    assert got == {"models": ["zoo-clip", "zoo-dino", *SEEDS], "seeds": list(SEEDS), "alpha": 0.05, "n": 4 * 24}
    calls.clear()
    sec.check_claims(["random-a", "zoo-mae"], run)
    assert [c[0] for c in calls] == ["random-a", "zoo-mae", "random-b"] and calls[0][1:] == (None, None, None, False)


def test_check_rows_estimates_and_measures():
    curves = {"zoo-clip": [0.3, 0.8, 0.6], "zoo-dino": [0.3, 0.5, 0.45], "zoo-mae": [0.2, 0.4, 0.3],
              "random-a": [0.2, 0.25, 0.1], "random-b": [0.3, 0.2, 0.1]}
    pp = pd.concat([_rows(m, c, seed=i) for i, (m, c) in enumerate(curves.items())], ignore_index=True)
    rows = sec.check(pp, SEEDS, 0.1)
    best = {m: max((1, 2, 3), key=lambda b, m=m: _pck(pp, m, b)) for m in curves}
    at = {m: _pck(pp, m, best[m]) for m in curves}
    assert [(r.claim, r.subject) for r in rows] == [
        ("TM-6.2b", "zoo-clip minus the other trained models"), ("TM-T1b", "SPair keypoints, zoo-clip"),
        ("TM-T1b", "SPair keypoints, zoo-dino"), ("TM-T1b", "SPair keypoints, zoo-mae")]
    r = rows[0]
    assert r.measure == "PCK@0.1 at each model's best block" and r.effect.unit == "pairs" and r.effect.n == 6
    assert r.effect.estimate == pytest.approx(at["zoo-clip"] - (at["zoo-dino"] + at["zoo-mae"]) / 2)
    assert r.baseline.estimate == pytest.approx(at["zoo-clip"] - at["random-a"]) and r.baseline_model == "random-a"
    assert r.floor == pytest.approx(abs(at["random-a"] - at["random-b"])) and r.seeds == SEEDS
    for row, m in zip(rows[1:], ("zoo-clip", "zoo-dino", "zoo-mae"), strict=True):
        earlier = max((1, 2), key=lambda b, m=m: _pck(pp, m, b))
        assert row.measure == f"best block before the last ({earlier}) minus the last (3), PCK@0.1"
        assert row.effect.estimate == pytest.approx(_pck(pp, m, earlier) - _pck(pp, m, 3))
    at05 = sec.check(pp, (), 0.05)[0]
    assert at05.measure == "PCK@0.05 at each model's best block" and at05.floor is None
    best05 = {m: max((1, 2, 3), key=lambda b, m=m: _pck(pp, m, b, 0.05)) for m in curves}
    assert at05.effect.estimate == pytest.approx(
        _pck(pp, "zoo-clip", best05["zoo-clip"], 0.05)
        - (_pck(pp, "zoo-dino", best05["zoo-dino"], 0.05) + _pck(pp, "zoo-mae", best05["zoo-mae"], 0.05)) / 2)


def test_check_cannot_check_reason():
    pp = pd.concat([_rows("zoo-dino", [0.3, 0.5]), _rows("noise", [0.1], first=0)], ignore_index=True)
    rows = sec.check(pp)
    assert (rows[0].claim, rows[0].subject, rows[0].verdict, rows[0].reason) == (
        "TM-6.2b", "CLIP minus the other trained models", CANNOT_CHECK,
        "the profile lacks an image-text (CLIP) model or any other trained model")
    assert [r.subject for r in rows] == ["CLIP minus the other trained models", "SPair keypoints, zoo-dino"]
    only_clip = sec.check(_rows("zoo-clip", [0.3, 0.5]))
    assert only_clip[0].verdict == CANNOT_CHECK and len(only_clip) == 2


def test_best_per_model_values_and_message():
    t = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 2, "block": [3, 1, 2, 1, 2], "alpha": 0.1,
                      "pck": [0.4, 0.3, 0.5, 0.2, 0.1], "noise": [0.05] * 3 + [0.07] * 2})
    out = sec.best_per_model(t, 0.1)
    assert out.to_dict("records") == [
        {"model": "a", "best_block": 2, "best": 0.5, "last_block": 3, "last": 0.4, "noise": 0.05},
        {"model": "b", "best_block": 1, "best": 0.2, "last_block": 2, "last": 0.1, "noise": 0.07}]
    assert np.isnan(sec.best_per_model(t.drop(columns="noise")).noise).all()
    with pytest.raises(ValueError) as err:
        sec.best_per_model(t.assign(alpha=[0.05, 0.05, 0.01, 0.05, 0.05]), 0.1)
    assert str(err.value) == "no rows at alpha=0.1; the table has alphas [0.01, 0.05]"


def test_protocol_messages_and_defaults():
    p = sec.protocol(Profile("t", {"keypoints": {"dataset": "s"}}))
    assert p == {"split": "test", "pairs_per_category": 20, "seed": 42, "alphas": [0.1, 0.05, 0.01], "alpha": 0.1,
                 "similarity": "cosine", "dataset": "s"}
    with pytest.raises(ValueError) as err:
        sec.protocol(Profile("t", {"keypoints": {"dataset": "s", "alphas": [0.05], "alpha": 0.1}}))
    assert str(err.value) == "Profile 't': keypoints.alpha=0.1 (the reported α) is not in keypoints.alphas=[0.05]"
    with pytest.raises(ValueError) as err:
        sec.protocol(Profile("t", {"keypoints": {"dataset": "s", "similarity": "dot"}}))
    assert str(err.value) == ("Profile 't': keypoints.similarity='dot'; choose from ('cosine', "
                              "'teaching-matters')")
    with pytest.raises(ValueError) as err:
        sec.letterbox_image(Image.new("RGB", (4, 2)), 8, "cubic")
    assert str(err.value) == "Unknown interpolation 'cubic'; choose from ['bicubic', 'bilinear', 'nearest']"

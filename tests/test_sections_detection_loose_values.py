"""OM App. C (sections.detection) claims pinned down further (issue 17): every row's effect and baseline interval
from check_claims against NumPy on the constructed resampled-AP table (which model is the side, which the others,
which mode/task/area), and the whole cannot-check rows."""
from __future__ import annotations

import numpy as np
import pytest

from vitscope.claims import CANNOT_CHECK, INCONCLUSIVE
from vitscope.profiles import Profile
from vitscope.sections import detection

MODELS = ["zoo-mae", "zoo-mocov3", "zoo-dino", "random-a"]
MODES = ("frozen", "finetuned", "frozen-multi")
AREAS = ("all", "small", "large")


def _table(seed=0, B=40):
    """Every (model, mode, task, area) its own AP vector [B + 1]: distinct levels and resample noise."""
    rng = np.random.default_rng(seed)
    return {(m, mode, t, a): 0.1 + 0.3 * rng.random() + 0.02 * rng.normal(size=B + 1)
            for m in MODELS for mode in MODES for t in detection.TASKS for a in AREAS}


def _iv(v):
    lo, hi = np.nanquantile(v[1:], [0.025, 0.975])
    return pytest.approx((float(v[0]), float(lo), float(hi), len(v) - 1, "image resamples"), abs=1e-12)


def _tuple(i):
    return (i.estimate, i.low, i.high, i.n, i.unit)


def test_every_rows_interval_is_its_contrast(monkeypatch):
    ap = _table()
    seen = []
    monkeypatch.setattr(detection, "resampled", lambda profile, *, models=None, device=None: seen.append(
        (profile, models, device)) or ap)
    profile = Profile("t", {"models": ["zoo-dino"], "detection": {"modes": list(MODES)}})
    rows = detection.check_claims(MODELS, profile, device="d")
    assert seen == [(profile, MODELS, "d")]
    expect = [("OM-C.a", "frozen", t, "all", ["zoo-mocov3"]) for t in detection.TASKS]
    expect += [("OM-C.b", "frozen", t, area, ["zoo-mocov3", "zoo-dino"]) for area in ("large", "small")
               for t in detection.TASKS]
    expect += [("OM-C.c", None, t, "all", m) for m in ("zoo-mae", "zoo-mocov3", "zoo-dino") for t in detection.TASKS]
    expect += [("OM-C.d", "finetuned", t, area, [m]) for area in ("large", "small") for t in detection.TASKS
               for m in ("zoo-mocov3", "zoo-dino")]
    assert [r.claim for r in rows] == [e[0] for e in expect]
    for r, (claim, mode, t, area, others) in zip(rows, expect):
        assert r.baseline_model == "random-a"
        if claim == "OM-C.c":
            gain = ap[(others, "frozen-multi", t, "all")] - ap[(others, "frozen", t, "all")]
            base = ap[("random-a", "frozen-multi", t, "all")] - ap[("random-a", "frozen", t, "all")]
            assert _tuple(r.effect) == _iv(gain) and _tuple(r.baseline) == _iv(gain - base)
            continue
        side = ap[("zoo-mae", mode, t, area)]
        rest = np.mean([ap[(m, mode, t, area)] for m in others], axis=0)
        assert _tuple(r.effect) == _iv(side - rest)
        assert _tuple(r.baseline) == _iv(side - ap[("random-a", mode, t, area)])
        assert r.expected == (-1 if (claim, area) == ("OM-C.b", "large") else 1)


def test_contrast_averages_every_other_model_and_names_them_when_missing():
    ap = _table(1)
    r = detection._contrast("X", ap, "finetuned", "mask", "large", "zoo-mae", ["zoo-mocov3", "zoo-dino", "random-a"],
                            -1, None, "w")
    rest = (ap[("zoo-mocov3", "finetuned", "mask", "large")] + ap[("zoo-dino", "finetuned", "mask", "large")]
            + ap[("random-a", "finetuned", "mask", "large")]) / 3
    assert _tuple(r.effect) == _iv(ap[("zoo-mae", "finetuned", "mask", "large")] - rest)
    assert (r.claim, r.subject, r.measure, r.expected, r.baseline, r.verdict) == (
        "X", "zoo-mae minus zoo-mocov3 and zoo-dino and random-a (finetuned)",
        "segmentation (mask AP), large objects: w", -1, None, INCONCLUSIVE)
    gone = {k: v for k, v in ap.items() if k[0] != "zoo-dino"}
    r = detection._contrast("Y", gone, "frozen", "box", "all", "zoo-mae", ["zoo-mocov3", "zoo-dino"], 1, "random-a",
                            "w")
    assert (r.claim, r.subject, r.verdict, r.reason) == ("Y", "zoo-mae vs zoo-mocov3, zoo-dino", CANNOT_CHECK,
                                                         "no frozen run of these models")
    r = detection._contrast("Y", gone, "frozen", "box", "all", "zoo-dino", ["zoo-mae"], 1, "random-a", "w")
    assert (r.subject, r.reason) == ("zoo-dino vs zoo-mae", "no frozen run of these models")


def test_cannot_check_rows_in_full(monkeypatch):
    ap = _table(2)
    monkeypatch.setattr(detection, "resampled", lambda profile, *, models=None, device=None: ap)
    profile = Profile("t", {"models": MODELS, "detection": {"modes": ["frozen"]}})
    rows = detection.check_claims(["zoo-dino", "random-a"], profile)
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows] == [
        ("OM-C.a", "MAE vs MoCo-v3", CANNOT_CHECK, "the profile lacks a reconstruction or a contrastive model"),
        ("OM-C.b", "reconstruction vs joint-embedding", CANNOT_CHECK, "the profile lacks one of them"),
        ("OM-C.c", "intermediate blocks", CANNOT_CHECK,
         "the profile's detection modes lack frozen-multi (the last four blocks into the pyramid)"),
        ("OM-C.d", "fine-tuned MAE vs joint-embedding", CANNOT_CHECK,
         "the profile lacks a reconstruction or joint-embedding model, or the finetuned mode")]
    rows = detection.check_claims(["zoo-mocov3", "random-a"], profile)     # MoCo without MAE: OM-C.a cannot check
    assert [(r.claim, r.verdict) for r in rows][:2] == [("OM-C.a", CANNOT_CHECK), ("OM-C.b", CANNOT_CHECK)]
    rows = detection.check_claims(None, profile)                           # the profile's models
    assert [r.claim for r in rows] == ["OM-C.a"] * 2 + ["OM-C.b"] * 4 + ["OM-C.c", "OM-C.d"]

"""OM App. C (detection section): the claim checks on hand-made resampled-AP tables, the interval, the paper's
tables and the settings. ``resampled`` (which trains detectors) is replaced by a constructed table; no model runs."""
from __future__ import annotations

import numpy as np
import pytest

from vitscope.claims import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.profiles import Profile
from vitscope.sections import detection

MODELS = ["zoo-mae", "zoo-mocov3", "zoo-dino", "random-a"]
#: Resample offsets per model (index 0 is the full evaluation set): distinct patterns, so differences vary.
OFFSETS = {"zoo-mae": [0, 0.004, -0.002, 0.001, -0.003], "zoo-mocov3": [0, -0.001, 0.003, -0.004, 0.002],
           "zoo-dino": [0, 0.002, 0.001, -0.002, -0.001], "random-a": [0, 0.001, -0.001, 0.002, -0.002]}


def _profile(modes=("frozen", "finetuned"), **extra) -> Profile:
    return Profile("t", {"models": MODELS, "detection": {"modes": list(modes), **extra}})


def _ap(levels: dict, models=MODELS, modes=("frozen", "finetuned")) -> dict:
    """``{(model, mode, task, area): [5]}``: ``levels[(model, mode, area)]`` (default 0.2) plus the model's offsets."""
    return {(m, mode, t, a): levels.get((m, mode, a), 0.2) + np.array(OFFSETS[m])
            for m in models for mode in modes for t in detection.TASKS for a in ("all", "small", "large")}


def _interval_of(diff):
    lo, hi = np.quantile(np.asarray(diff)[1:], [0.025, 0.975])
    return float(diff[0]), float(lo), float(hi)


def test_interval_reads_the_estimate_from_index_0_and_quantiles_from_the_resamples():
    iv = detection._interval(np.array([0.5, 1.0, 2.0, 3.0, 4.0]))
    # linear interpolation at 0.025 * 3 = 0.075 and 0.975 * 3 = 2.925 of the sorted resamples
    assert (iv.estimate, iv.low, iv.high, iv.n, iv.unit) == (0.5, pytest.approx(1.075), pytest.approx(3.925), 4,
                                                             "image resamples")
    nan = detection._interval(np.array([0.1, np.nan, 1.0, 2.0, 3.0, 4.0]))   # NaN resamples are left out
    assert (nan.low, nan.high, nan.n) == (pytest.approx(1.075), pytest.approx(3.925), 5)


def test_contrast_holds_does_not_hold_and_is_inconclusive():
    ap = _ap({("zoo-mae", "frozen", "all"): 0.30, ("zoo-mocov3", "frozen", "all"): 0.25,
              ("random-a", "frozen", "all"): 0.10})
    r = detection._contrast("OM-C.a", ap, "frozen", "box", "all", "zoo-mae", ["zoo-mocov3"], 1, "random-a", "AP diff")
    assert (r.claim, r.subject, r.measure, r.verdict) == ("OM-C.a", "zoo-mae minus zoo-mocov3 (frozen)",
                                                          "detection (box AP): AP diff", HOLDS)
    diff = np.array(OFFSETS["zoo-mae"]) - np.array(OFFSETS["zoo-mocov3"]) + 0.05
    assert (r.effect.estimate, r.effect.low, r.effect.high) == tuple(pytest.approx(v) for v in _interval_of(diff))
    beyond = np.array(OFFSETS["zoo-mae"]) - np.array(OFFSETS["random-a"]) + 0.20
    assert (r.baseline.estimate, r.baseline.low, r.baseline.high) == tuple(pytest.approx(v)
                                                                          for v in _interval_of(beyond))
    assert r.baseline_model == "random-a" and r.expected == 1
    assert r.reason == "the 95 % interval clears 0, and the effect exceeds `random-a`'s"
    # the paper predicts the other sign: does not hold
    wrong = detection._contrast("OM-C.a", ap, "frozen", "mask", "all", "zoo-mae", ["zoo-mocov3"], -1, "random-a", "d")
    assert wrong.verdict == DOES_NOT_HOLD and wrong.measure == "segmentation (mask AP): d"
    # equal levels: the resample offsets straddle 0
    tie = detection._contrast("OM-C.a", _ap({}), "frozen", "box", "small", "zoo-mae", ["zoo-mocov3", "zoo-dino"], 1,
                              "random-a", "d")
    assert tie.subject == "zoo-mae minus zoo-mocov3 and zoo-dino (frozen)"
    assert tie.measure == "detection (box AP), small objects: d"
    assert tie.effect.low < 0 < tie.effect.high and tie.verdict == INCONCLUSIVE
    rest = (np.array(OFFSETS["zoo-mocov3"]) + np.array(OFFSETS["zoo-dino"])) / 2
    assert tie.effect.low == pytest.approx(_interval_of(np.array(OFFSETS["zoo-mae"]) - rest)[1])
    # the untrained model as good as the trained one: explained by the baseline
    explained = detection._contrast("OM-C.a", {**ap, **{k: v + 0.2 for k, v in ap.items() if k[0] == "random-a"}},
                                    "frozen", "box", "all", "zoo-mae", ["zoo-mocov3"], 1, "random-a", "d")
    assert explained.verdict == INCONCLUSIVE and explained.reason.startswith("the untrained baseline explains it")


def test_contrast_without_a_run_or_a_baseline():
    ap = _ap({("zoo-mae", "frozen", "all"): 0.30}, modes=("frozen",))
    missing = detection._contrast("OM-C.d", ap, "finetuned", "box", "all", "zoo-mae", ["zoo-dino"], 1, "random-a",
                                  "d")
    assert (missing.verdict, missing.subject, missing.reason) == (CANNOT_CHECK, "zoo-mae vs zoo-dino",
                                                                  "no finetuned run of these models")
    no_base = detection._contrast("OM-C.a", ap, "frozen", "box", "all", "zoo-mae", ["zoo-dino"], 1, None, "d")
    assert no_base.baseline is None and no_base.verdict == INCONCLUSIVE
    assert no_base.reason == "no untrained baseline of the same architecture in this profile"
    unrun = {k: v for k, v in ap.items() if k[0] != "random-a"}
    assert detection._contrast("OM-C.a", unrun, "frozen", "box", "all", "zoo-mae", ["zoo-dino"], 1, "random-a",
                               "d").baseline is None


def test_check_claims_rows_on_a_constructed_table(monkeypatch):
    levels = {("zoo-mae", "frozen", "all"): 0.30, ("zoo-mocov3", "frozen", "all"): 0.25,
              ("zoo-mae", "frozen", "large"): 0.10, ("zoo-mae", "frozen", "small"): 0.30,
              ("zoo-mae", "finetuned", "large"): 0.40, ("zoo-mae", "finetuned", "small"): 0.10,
              ("random-a", "frozen", "all"): 0.0}
    seen = {}

    def fake(profile, *, models=None, device=None):
        seen.update(models=models, device=device)
        return _ap(levels)

    monkeypatch.setattr(detection, "resampled", fake)
    rows = detection.check_claims(None, _profile(), device="cpu")
    assert seen == {"models": MODELS, "device": "cpu"}
    got = [(r.claim, r.subject, r.measure, r.verdict) for r in rows]
    both = "zoo-mae minus zoo-mocov3 and zoo-dino (frozen)"
    assert got[:6] == [
        ("OM-C.a", "zoo-mae minus zoo-mocov3 (frozen)", "detection (box AP): AP difference", HOLDS),
        ("OM-C.a", "zoo-mae minus zoo-mocov3 (frozen)", "segmentation (mask AP): AP difference", HOLDS),
        ("OM-C.b", both, "detection (box AP), large objects: AP difference", HOLDS),
        ("OM-C.b", both, "segmentation (mask AP), large objects: AP difference", HOLDS),
        ("OM-C.b", both, "detection (box AP), small objects: AP difference", HOLDS),
        ("OM-C.b", both, "segmentation (mask AP), small objects: AP difference", HOLDS)]
    assert [r.expected for r in rows[:6]] == [1, 1, -1, -1, 1, 1]
    assert got[6] == ("OM-C.c", "intermediate blocks", "", CANNOT_CHECK)
    assert rows[6].reason == ("the profile's detection modes lack frozen-multi (the last four blocks into the "
                              "pyramid)")
    d = got[7:]
    assert [(s, m) for _, s, m, _ in d] == [
        (f"zoo-mae minus {o} (finetuned)", f"{TASKS}, {area} objects: AP difference")
        for area in ("large", "small") for TASKS in ("detection (box AP)", "segmentation (mask AP)")
        for o in ("zoo-mocov3", "zoo-dino")]
    # fine-tuned MAE above both on large objects (holds), below on small ones (does not hold)
    assert [v for *_, v in d] == [HOLDS] * 4 + [DOES_NOT_HOLD] * 4
    assert all(r.baseline_model == "random-a" for r in rows if r.verdict != CANNOT_CHECK)


def test_check_claims_intermediate_blocks_and_missing_groups(monkeypatch):
    modes = ("frozen", "frozen-multi")
    levels = {("zoo-mae", "frozen-multi", "all"): 0.30, ("zoo-mae", "frozen", "all"): 0.20,
              ("zoo-dino", "frozen-multi", "all"): 0.20, ("zoo-dino", "frozen", "all"): 0.25,
              ("random-a", "frozen-multi", "all"): 0.12, ("random-a", "frozen", "all"): 0.10}
    models = ["zoo-mae", "zoo-dino", "random-a"]
    monkeypatch.setattr(detection, "resampled", lambda profile, models=None, device=None: _ap(levels, models, modes))
    rows = detection.check_claims(models, _profile(modes))
    assert [(r.claim, r.verdict) for r in rows[:3]] == [("OM-C.a", CANNOT_CHECK), ("OM-C.b", INCONCLUSIVE),
                                                       ("OM-C.b", INCONCLUSIVE)]
    assert (rows[0].subject, rows[0].reason) == ("MAE vs MoCo-v3", "the profile lacks a reconstruction or a "
                                                                   "contrastive model")
    c = [r for r in rows if r.claim == "OM-C.c"]
    assert [(r.subject, r.measure, r.verdict) for r in c] == [
        ("zoo-mae: last four blocks minus last block (frozen)", "detection (box AP): AP difference", HOLDS),
        ("zoo-mae: last four blocks minus last block (frozen)", "segmentation (mask AP): AP difference", HOLDS),
        ("zoo-dino: last four blocks minus last block (frozen)", "detection (box AP): AP difference", DOES_NOT_HOLD),
        ("zoo-dino: last four blocks minus last block (frozen)", "segmentation (mask AP): AP difference",
         DOES_NOT_HOLD)]
    gain = np.full(5, 0.10)                          # same model in both modes: the offsets cancel
    assert (c[0].effect.estimate, c[0].effect.low, c[0].effect.high) == tuple(pytest.approx(v)
                                                                             for v in _interval_of(gain))
    assert c[0].baseline.estimate == pytest.approx(0.08) and c[0].baseline_model == "random-a"   # minus 0.02
    assert (rows[-1].claim, rows[-1].verdict, rows[-1].subject) == ("OM-C.d", CANNOT_CHECK,
                                                                   "fine-tuned MAE vs joint-embedding")
    assert rows[-1].reason == ("the profile lacks a reconstruction or joint-embedding model, or the finetuned mode")
    only_je = detection.check_claims(["zoo-dino", "zoo-mocov3"], _profile(modes))
    assert only_je[1].claim == "OM-C.b" and only_je[1].reason == "the profile lacks one of them"
    # no untrained model: no baseline contrast for the intermediate blocks
    trained = detection.check_claims(["zoo-mae", "zoo-dino"], _profile(modes))
    c = [r for r in trained if r.claim == "OM-C.c"]
    assert c[0].baseline is None and c[0].verdict == INCONCLUSIVE and c[0].baseline_model is None


def test_paper_table_rows():
    t = detection.paper_table()
    assert len(t) == 14 and list(t.columns) == ["mode", "model", "task", "AP", "AP_large", "AP_small"]
    row = t[(t["mode"] == "finetuned") & (t.model == "MoCo-v3") & (t.task == "mask")].iloc[0]
    assert (row.AP, row.AP_large, row.AP_small) == (43.18, 62.86, 23.78)
    first = t.iloc[0]
    assert (first["mode"], first.model, first.task, first.AP) == ("frozen", "MAE", "box", 30.25)


def test_settings_fill_defaults_and_models_of():
    p = Profile("t", {"models": ["zoo-mae"], "detection": {"recipe": "vitdet-b-100ep", "val_split": None,
                                                          "models": ["zoo-dino"]}})
    assert detection.settings(p) == {"modes": ["frozen", "finetuned"], "train_split": "train2017",
                                     "val_split": "val2017", "recipe": "vitdet-b-100ep", "areas": "coco",
                                     "models": ["zoo-dino"]}
    assert detection.models_of(p) == ["zoo-dino"]
    assert detection.models_of(Profile("t", {"models": ["zoo-mae"], "detection": {}})) == ["zoo-mae"]


def test_open_split_names_the_missing_dataset():
    p = Profile("t", {"models": [], "datasets": {"b": {}, "a": {}}, "detection": {}})
    with pytest.raises(KeyError) as err:
        detection.open_split(p, "coco", "val2017")
    assert err.value.args[0] == ("Profile 't' defines no dataset 'coco' (its detection section names it); it has "
                                 "['a', 'b'].")

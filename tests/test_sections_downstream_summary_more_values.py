"""Table 1 (downstream_summary): the per-image adapters of retrieval, keypoints and DAVIS, units_tables,
table, check_claims and protocol_differences, with the sections' per-image functions replaced by recorders that
return hand-made rows (no model runs); checks the rows kept, the columns built and what each section is given."""
from __future__ import annotations

import numpy as np
import pandas as pd

from vitscope.profiles import Profile
from vitscope.sections import correspondence, knn, propagation, retrieval
from vitscope.sections import downstream_summary as ds


def _profile(drop=(), **extra):
    twin = {"manifest": "x", "root": "x", "synthetic": {}}
    raw = {"models": ["zoo-supervised", "random-a"], "datasets": {k: twin for k in ("in", "roxford5k", "dv", "sp")},
           "knn": {"dataset": "in", "k": 20, "ks": [20]}, "retrieval": {"datasets": ["roxford5k", "rparis6k"]},
           "davis": {"dataset": "dv"}, "keypoints": {"dataset": "sp"}, **extra}
    return Profile("t", {k: v for k, v in raw.items() if k not in drop})


# ------------------------------------------------------------------------------------------------- adapters
def test_retrieval_units_keep_the_tables_dataset_and_setup(monkeypatch):
    seen = []
    pq = pd.DataFrame({"model": "m", "dataset": ["roxford5k", "roxford5k", "rparis6k", "roxford5k"],
                       "setup": ["medium", "hard", "medium", "medium"], "block": [1, 1, 1, 2], "query": [0, 0, 0, 1],
                       "ap": [0.1, 0.2, 0.3, 0.4]})
    monkeypatch.setattr(retrieval, "per_query", lambda m, profile, **kw: seen.append((m, profile, kw)) or pq)
    profile = _profile()
    got = ds._retrieval_units("m", profile, ds.protocol(profile), weights="w", device="cpu")
    assert seen == [("m", profile, {"weights": "w", "device": "cpu"})]
    assert got.ap.tolist() == [0.1, 0.4]
    got = ds._retrieval_units("m", profile, {**ds.protocol(profile), "retrieval_dataset": "rparis6k"})
    assert got.ap.tolist() == [0.3]
    got = ds._retrieval_units("m", profile, {**ds.protocol(profile), "retrieval_setup": "hard"})
    assert got.ap.tolist() == [0.2]


def test_retrieval_values_name_query_and_ap():
    units = pd.DataFrame({"model": ["a", "b"], "block": [3, 4], "query": [7, 8], "ap": [0.25, 0.5],
                          "dataset": "roxford5k"})
    got = ds._retrieval_values(units)
    assert list(got.columns) == ["model", "block", "unit", "value"]
    assert got.values.tolist() == [["a", 3, 7, 0.25], ["b", 4, 8, 0.5]]


def test_keypoint_units_drop_noise_and_other_alphas(monkeypatch):
    seen = []
    pp = pd.DataFrame({"model": ["m", "noise", "m", "m"], "alpha": [0.1, 0.1, 0.05, 0.1 + 1e-12],
                       "pair": [0, 1, 2, 3]})
    monkeypatch.setattr(correspondence, "per_pair", lambda m, profile, **kw: seen.append((m, kw)) or pp)
    profile = _profile()
    got = ds._keypoint_units("m", profile, ds.protocol(profile), store="s")
    assert seen == [("m", {"store": "s"})] and got.pair.tolist() == [0, 3]
    got = ds._keypoint_units("m", profile, {**ds.protocol(profile), "alpha": 0.05})
    assert got.pair.tolist() == [2]


def test_davis_values_unit_is_video_slash_object():
    units = pd.DataFrame({"model": ["a", "a"], "block": [1, 2], "video": ["bear", "cows"], "object": [1, 2],
                          "jf": [0.5, 0.75]})
    got = ds._davis_values(units)
    assert list(got.columns) == ["model", "block", "unit", "value"]
    assert got.values.tolist() == [["a", 1, "bear/1", 0.5], ["a", 2, "cows/2", 0.75]]


# ------------------------------------------------------------------------------------------- units_tables
def _recorder(monkeypatch):
    """The four sections' per-image functions replaced: each returns one row naming its model and the call."""
    calls = []

    def fake(section):
        def per(m, profile, **kw):
            calls.append((section, m, kw))
            base = {"model": m, "block": 1, "from": section}
            if section == "retrieval":
                return pd.DataFrame([{**base, "dataset": "roxford5k", "setup": "medium"},
                                     {**base, "dataset": "rparis6k", "setup": "medium"}])
            if section == "correspondence":
                return pd.DataFrame([{**base, "alpha": 0.1}, {**base, "alpha": 0.2}])
            return pd.DataFrame([base])
        return per

    monkeypatch.setattr(knn, "per_query", fake("knn"))
    monkeypatch.setattr(retrieval, "per_query", fake("retrieval"))
    monkeypatch.setattr(propagation, "per_object", fake("propagation"))
    monkeypatch.setattr(correspondence, "per_pair", fake("correspondence"))
    return calls


def test_units_tables_per_computed_task_of_the_models_and_seeds(monkeypatch):
    calls = _recorder(monkeypatch)
    profile = _profile(drop=("davis",), baselines=["random-b", "random-c"])
    got = ds.units_tables(profile, ["zoo-dino", "random-b"], weights={"zoo-dino": "d.pt"}, device="cpu", store="s")
    assert list(got) == ["knn", "retrieval", "keypoints"]                     # davis: no section in the profile
    for key, section in (("knn", "knn"), ("retrieval", "retrieval"), ("keypoints", "correspondence")):
        assert got[key].model.tolist() == ["zoo-dino", "random-b", "random-c"]
        assert set(got[key]["from"]) == {section} and got[key].index.tolist() == [0, 1, 2]
    assert [c[:2] for c in calls] == [(s, m) for s in ("knn", "retrieval", "correspondence")
                                      for m in ("zoo-dino", "random-b", "random-c")]
    assert calls[0][2] == {"weights": "d.pt", "device": "cpu", "store": "s"}
    assert calls[1][2] == {"weights": None, "device": "cpu", "store": "s"}
    # the profile's table1 models when none are given, no seeds without baselines
    calls.clear()
    got = ds.units_tables(_profile(drop=("retrieval", "keypoints", "knn"), table1={"models": ["zoo-mae"]}))
    assert list(got) == ["davis"] and got["davis"].model.tolist() == ["zoo-mae"]
    assert calls == [("propagation", "zoo-mae", {"weights": None, "device": None, "store": None})]


def test_check_claims_judges_the_units_with_the_seeds_and_protocol(monkeypatch):
    seen = {}
    monkeypatch.setattr(ds, "units_tables", lambda profile, models, **kw: seen.setdefault("units", (models, kw))
                        and {"knn": "U"})
    monkeypatch.setattr(ds, "check", lambda units, seeds, p: seen.setdefault("check", (units, seeds, p)) and ["R"])
    profile = _profile(baselines=["random-b", "random-c"], table1={"alpha": 0.05})
    assert ds.check_claims(["zoo-dino"], profile, weights={"a": 1}, device="cpu", store="s") == ["R"]
    assert seen["units"] == (["zoo-dino"], {"weights": {"a": 1}, "device": "cpu", "store": "s"})
    assert seen["check"] == ({"knn": "U"}, ["random-b", "random-c"], ds.protocol(profile))
    assert seen["check"][2]["alpha"] == 0.05


def test_table_resolves_the_models_and_sets_the_best_tables_side_by_side(monkeypatch):
    seen = {}

    def best(profile, models, **kw):
        seen["best"] = (models, kw)
        return {"knn": "B"}

    monkeypatch.setattr(ds, "best_tables", best)
    monkeypatch.setattr(ds, "side_by_side", lambda bests, profile, models: seen.setdefault("sbs", (bests, models))
                        and "T")
    profile = _profile(table1={"models": ["zoo-mae", "zoo-dino"]})
    assert ds.table(profile, weights={"zoo-mae": "w"}, device="cpu", store="s") == "T"
    assert seen["best"] == (["zoo-mae", "zoo-dino"], {"weights": {"zoo-mae": "w"}, "device": "cpu", "store": "s"})
    assert seen["sbs"] == ({"knn": "B"}, ["zoo-mae", "zoo-dino"])
    seen.clear()
    ds.table(_profile(), ["zoo-beit"])
    assert seen["best"][0] == ["zoo-beit"] and seen["sbs"][1] == ["zoo-beit"]
    seen.clear()
    ds.table(_profile())
    assert seen["best"] == (["zoo-supervised", "random-a"], {"weights": None, "device": None, "store": None})


def test_protocol_differences_name_the_computed_tasks_that_differ():
    knn_why = ("k-fold cross-validation on the profile's ImageNet subset, not ImageNet-1k val against train (the "
               "k-NN section has no separate query set yet)")
    crop_why = "queries cropped to their box (the official protocol; Teaching Matters does not crop)"
    assert ds.protocol_differences(_profile()) == {"ImageNet k-NN": knn_why, "ROxford5k (M)": crop_why}
    uncropped = _profile(retrieval={"datasets": ["roxford5k"], "crop_queries": False})
    assert ds.protocol_differences(uncropped) == {"ImageNet k-NN": knn_why}
    assert ds.protocol_differences(_profile(drop=("knn",))) == {"ROxford5k (M)": crop_why}
    assert ds.protocol_differences(_profile(drop=("knn", "retrieval"))) == {}


def test_keypoint_and_davis_adapters_inside_units_tables(monkeypatch):
    _recorder(monkeypatch)
    got = ds.units_tables(_profile(drop=("knn", "davis")), ["zoo-dino"])
    assert got["retrieval"].dataset.tolist() == ["roxford5k"]                    # the table's slice only
    assert got["keypoints"].alpha.tolist() == [0.1]
    assert np.isclose(got["keypoints"].alpha, 0.1).all()

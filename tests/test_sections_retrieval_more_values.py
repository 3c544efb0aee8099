"""sections.retrieval (TM 6.1, Fig. 9 right): the wiring of ``benchmark``, ``cls_features``, ``per_query``,
``check_claims`` and ``benchmarks_table`` with the model, images and extraction replaced, and the claim check's exact
subjects, measures, estimates and messages on hand-made per-query tables (issue 17)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims import CANNOT_CHECK, HOLDS
from vitscope.claims.verdict import paired_contrast
from vitscope.data.revisitop import GroundTruth
from vitscope.kernels.clustering import noise_features
from vitscope.kernels.retrieval import query_average_precisions
from vitscope.kernels.stats import seed_floor
from vitscope.profiles import Profile
from vitscope.sections import retrieval as R


def _profile(tmp_path, section=None, synthetic=True, **top) -> Profile:
    datasets = {"roxford5k": {"manifest": "revisitop", "root": str(tmp_path / "ox")},
                "rparis6k": {"manifest": "revisitop", "root": str(tmp_path / "pa")}}
    if synthetic:
        datasets["roxford5k"]["synthetic"] = {"landmarks": 2}
    raw = {"models": ["zoo-dino", "zoo-mae"], "device": "cpu", "datasets": datasets,
           "retrieval": section or {"datasets": ["roxford5k", "rparis6k"]}, **top}
    return Profile("t", raw)


def _truth(name="roxford5k", bbx=(1, 2, 3, 4)):
    gnd = ({"bbx": bbx, "easy": (0, 1), "hard": (2,), "junk": (3,)},
           {"bbx": None, "easy": (4,), "hard": (5, 6), "junk": ()},
           {"bbx": None, "easy": (), "hard": (), "junk": (7,)})
    return GroundTruth(name, None, tuple(f"d{i}" for i in range(9)), ("q0", "q1", "q2"), gnd)


# ---------------------------------------------------------------------------------------------------- protocol
def test_protocol_messages_whole(tmp_path):
    for section, message in (
            ({"datasets": "roxford5k"}, "Profile 't': retrieval.datasets must list dataset keys (e.g. [roxford5k, "
                                        "rparis6k]); got 'roxford5k'"),
            ({"datasets": []}, "Profile 't': retrieval.datasets must list dataset keys (e.g. [roxford5k, rparis6k]); "
                               "got []"),
            ({"datasets": ["a"], "setups": ["easy", "xx"]}, "Profile 't': retrieval.setups ['easy', 'xx'] must be "
                                                            "among ['easy', 'medium', 'hard']"),
            ({"datasets": ["a"], "setups": []}, "Profile 't': retrieval.setups [] must be among ['easy', 'medium', "
                                                "'hard']"),
            ({"datasets": ["a"], "crop_queries": 1}, "Profile 't': retrieval.crop_queries must be true or false; "
                                                     "got 1")):
        with pytest.raises(ValueError) as err:
            R.protocol(_profile(tmp_path, section))
        assert str(err.value) == message
    assert R.protocol(_profile(tmp_path, {"datasets": ["a"], "setups": ["hard"], "crop_queries": False})) == {
        "datasets": ("a",), "crop_queries": False, "setups": ("hard",)}


def test_benchmark_writes_the_twin_then_reads_the_ground_truth(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(R, "write_revisitop_twin", lambda root, name, **kw: calls.append(("write", root, name, kw)))
    monkeypatch.setattr(R, "load_ground_truth", lambda root, name: calls.append(("read", root, name)) or "truth")
    profile = _profile(tmp_path)
    assert R.benchmark(profile, "roxford5k") == (tmp_path / "ox", "truth")
    assert calls == [("write", tmp_path / "ox", "roxford5k", {"landmarks": 2}), ("read", tmp_path / "ox", "roxford5k")]
    calls.clear()
    assert R.benchmark(profile, "rparis6k") == (tmp_path / "pa", "truth")
    assert calls == [("read", tmp_path / "pa", "rparis6k")]                 # real data: no twin written
    bad = Profile("t", {"models": [], "datasets": {"roxford5k": {"manifest": "imagenet50", "root": "x"}}})
    with pytest.raises(ValueError) as err:
        R.benchmark(bad, "roxford5k")
    assert str(err.value) == ("Profile 't': dataset 'roxford5k' uses manifest 'imagenet50' (format 'imagefolder'); "
                              "retrieval needs a revisitop dataset (manifest: revisitop).")


def test_benchmarks_table_counts_positives_and_junk_per_setup(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "benchmark", lambda profile, d: ("root", _truth(d)))
    table = R.benchmarks_table(_profile(tmp_path))
    assert table.to_dict("records") == [
        {"dataset": "roxford5k", "data": "synthetic twin", "database": 9, "queries": 3,
         "easy +": 1.0, "easy junk": 5 / 3, "medium +": 2.0, "medium junk": 2 / 3,
         "hard +": 1.0, "hard junk": 5 / 3},
        {"dataset": "rparis6k", "data": "real", "database": 9, "queries": 3,
         "easy +": 1.0, "easy junk": 5 / 3, "medium +": 2.0, "medium junk": 2 / 3,
         "hard +": 1.0, "hard junk": 5 / 3}]
    one = R.benchmarks_table(_profile(tmp_path, {"datasets": ["rparis6k"], "setups": ["medium"]}))
    assert list(one.columns) == ["dataset", "data", "database", "queries", "medium +", "medium junk"]


# ---------------------------------------------------------------------------------------------------- extraction
def _fake_edges(monkeypatch, truth):
    calls = {"device": [], "extract": []}
    cfg = type("Cfg", (), {"preprocess": "prep"})()
    gen = torch.Generator().manual_seed(0)
    feats = {"database": torch.randn(9, 2, 4, generator=gen), "queries": torch.randn(3, 2, 4, generator=gen)}
    orders = {"database": torch.tensor([4, 0, 8, 2, 6, 1, 3, 7, 5]), "queries": torch.tensor([2, 0, 1])}

    def load(model, weights, device):
        calls["load"] = (model, weights, device)
        return "net", cfg, {"id": model}

    def database(root, name, transform, ground_truth):
        calls["database"] = (root, name, transform, ground_truth)
        return "database"

    def queries(root, name, transform, crop, ground_truth):
        calls["queries"] = (root, name, transform, crop, ground_truth)
        return "queries"

    def extract(net, ident, data, products, **kw):
        calls["extract"].append((net, ident, data, products, kw))
        return {"pooled": {"cls": feats[data][orders[data]]}, "_meta": {"order": orders[data]}}

    monkeypatch.setattr(R, "resolve_device", lambda d: calls["device"].append(d) or f"dev({d})")
    monkeypatch.setattr(R, "load_for_analysis", load)
    monkeypatch.setattr(R, "benchmark", lambda profile, d: calls.setdefault("benchmark", []).append(d)
                        or (f"root/{d}", truth))
    monkeypatch.setattr(R, "eval_transform", lambda p: f"transform({p})")
    monkeypatch.setattr(R, "transform_key", lambda p: {"transform": p})
    monkeypatch.setattr(R, "revisitop_database", database)
    monkeypatch.setattr(R, "revisitop_queries", queries)
    monkeypatch.setattr(R, "extract", extract)
    monkeypatch.setattr(R, "FeatureStore", lambda: "default store")
    return calls, feats


def test_cls_features_two_extractions_in_ground_truth_order(tmp_path, monkeypatch):
    truth = _truth()
    calls, feats = _fake_edges(monkeypatch, truth)
    out = R.cls_features("zoo-dino", _profile(tmp_path), "roxford5k", weights="w", store="st", progress=True)
    assert calls["device"] == ["cpu"] and calls["load"] == ("zoo-dino", "w", "dev(cpu)")
    assert calls["benchmark"] == ["roxford5k"]
    assert calls["database"] == ("root/roxford5k", "roxford5k", "transform(prep)", truth)
    assert calls["queries"] == ("root/roxford5k", "roxford5k", "transform(prep)", True, truth)
    (n1, i1, d1, p1, kw1), (n2, i2, d2, p2, kw2) = calls["extract"]
    assert (n1, i1, d1, n2, i2, d2) == ("net", {"id": "zoo-dino"}, "database", "net", {"id": "zoo-dino"}, "queries")
    assert list(p1) == ["pooled"] and isinstance(p1["pooled"], R.PooledTokens) and isinstance(p2["pooled"],
                                                                                              R.PooledTokens)
    assert kw1 == {"transform_id": {"transform": "prep"}, "store": "st", "device": "dev(cpu)", "progress": True}
    assert kw2 == {"transform_id": {"transform": "prep", "query_crop": f"bbx {truth.digest()}"}, "store": "st",
                   "device": "dev(cpu)", "progress": True}
    assert torch.equal(out["database"], feats["database"]) and torch.equal(out["queries"], feats["queries"])
    assert out["truth"] is truth
    calls["extract"].clear()
    uncropped = _profile(tmp_path, {"datasets": ["roxford5k"], "crop_queries": False})
    R.cls_features("zoo-dino", uncropped, "roxford5k", device="cpu")
    assert calls["queries"][3] is False
    assert calls["extract"][1][4] == {"transform_id": {"transform": "prep", "query_crop": "none"},
                                      "store": "default store", "device": "dev(cpu)", "progress": False}


def test_per_query_and_compute_from_planted_features(tmp_path, monkeypatch):
    truth = _truth()
    gen = torch.Generator().manual_seed(1)
    feats = {"database": torch.randn(9, 2, 4, generator=gen), "queries": torch.randn(3, 2, 4, generator=gen),
             "truth": truth}
    seen = []

    def fake(model, profile, dataset, **kw):
        seen.append((model, dataset, kw))
        return feats
    monkeypatch.setattr(R, "cls_features", fake)
    profile = _profile(tmp_path, {"datasets": ["roxford5k", "rparis6k"], "setups": ["medium", "hard"]})
    pq = R.per_query("zoo-dino", profile, weights="w", device="dev", store="st", progress=True)
    assert seen == [("zoo-dino", d, {"weights": "w", "device": "dev", "store": "st", "progress": True})
                    for d in ("roxford5k", "rparis6k")]
    assert list(pq.columns) == ["model", "dataset", "setup", "block", "query", "ap", "noise"]
    noise = {s: query_average_precisions(
        torch.nn.functional.normalize(noise_features(12, 4, seed=0)[9:].double(), dim=1)
        @ torch.nn.functional.normalize(noise_features(12, 4, seed=0)[:9].double(), dim=1).T, truth.gnd, s)
        for s in ("medium", "hard")}
    for setup in ("medium", "hard"):
        for block in (1, 2):
            sel = pq[(pq.dataset == "rparis6k") & (pq.setup == setup) & (pq.block == block)]
            q = torch.nn.functional.normalize(feats["queries"][:, block - 1].double(), dim=1)
            d = torch.nn.functional.normalize(feats["database"][:, block - 1].double(), dim=1)
            aps = query_average_precisions(q @ d.T, truth.gnd, setup).numpy()
            keep = ~np.isnan(aps)                                # query 2 has no positive: left out
            assert sel["query"].tolist() == list(np.arange(3)[keep])
            np.testing.assert_allclose(sel.ap, aps[keep], rtol=0, atol=1e-9)
            np.testing.assert_allclose(sel.noise, noise[setup].numpy()[keep], rtol=0, atol=1e-9)
            assert set(sel.model) == {"zoo-dino"}
    assert len(pq) == 2 * 2 * 2 * 2                           # datasets x setups x blocks x queries with a positive
    seen.clear()
    table = R.compute("zoo-mae", profile, weights="w2", device="dev")
    assert seen[0] == ("zoo-mae", "roxford5k", {"weights": "w2", "device": "dev", "store": None, "progress": False})
    assert table.equals(R.summarise(R.per_query("zoo-mae", profile, weights="w2", device="dev")))


def test_check_claims_adds_the_seeds_once(tmp_path, monkeypatch):
    table = _per_query({"zoo-supervised": [0.2, 0.6], "zoo-dino": [0.3, 0.4], "random-a": [0.1, 0.1],
                        "random-b": [0.1, 0.2]})
    seen = []
    monkeypatch.setattr(R, "per_query", lambda m, profile, **kw: seen.append((m, kw)) or table[table.model == m])
    profile = _profile(tmp_path, models=["zoo-supervised", "random-a"], baselines=["random-a", "random-b"])
    rows = R.check_claims(None, profile, weights={"random-a": "w"}, device="dev", store="st", progress=True)
    assert [m for m, _ in seen] == ["zoo-supervised", "random-a", "random-b"]
    assert seen[1][1] == {"weights": "w", "device": "dev", "store": "st", "progress": True}
    assert seen[0][1]["weights"] is None
    assert rows == R.tm_check(table[table.model.isin(["zoo-supervised", "random-a", "random-b"])],
                              ["random-a", "random-b"])
    seen.clear()
    R.check_claims(["zoo-dino"], profile)
    assert [m for m, _ in seen] == ["zoo-dino", "random-a", "random-b"]


# ---------------------------------------------------------------------------------------------------- claims
N = 30


def _per_query(planted: dict, dataset="roxford5k", setup="medium", seed=0) -> pd.DataFrame:
    """Per-query APs with exact per-block means ``{model: [mAP per block]}``, queries shuffled."""
    rng = np.random.default_rng(seed)
    frames = []
    for model, per_block in planted.items():
        for block, m in enumerate(per_block, 1):
            ap = m + rng.normal(0, 0.05, size=N)
            ap += m - ap.mean()
            order = rng.permutation(N)
            frames.append(pd.DataFrame({"model": model, "dataset": dataset, "setup": setup, "block": block,
                                        "query": order, "ap": ap[order], "noise": 0.01}))
    return pd.concat(frames, ignore_index=True)


PLANTED = {"zoo-supervised": [0.2, 0.4, 0.9], "zoo-clip": [0.2, 0.5, 0.7], "zoo-dino": [0.3, 0.5, 0.5],
           "zoo-mocov3": [0.3, 0.6, 0.4], "zoo-mae": [0.1, 0.3, 0.2], "zoo-beit": [0.1, 0.2, 0.1],
           "random-a": [0.05, 0.1, 0.05], "random-b": [0.05, 0.05, 0.1]}


def test_tm_check_subjects_measures_estimates_and_floors():
    table = pd.concat([_per_query(PLANTED, "rparis6k"), _per_query(PLANTED), _per_query(PLANTED, setup="hard"),
                       _per_query({m: [0.0] * 3 for m in PLANTED}, "rparis6k", "medium")], ignore_index=True)
    rows = R.tm_check(table, ["random-a", "random-b", "random-z"])
    trained = ["zoo-supervised", "zoo-clip", "zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-beit"]
    assert [(r.claim, r.subject) for r in rows] == [
        ("TM-6.1b", "supervised minus the other trained models"), ("TM-6.1b", "image-text minus joint-embedding"),
        ("TM-6.1b", "joint-embedding minus reconstruction")] + [
        ("TM-T1a", f"retrieval (roxford5k, medium), {m}") for m in trained]
    measure = "last-block AP (roxford5k, medium, CLS)"
    assert [r.measure for r in rows[:3]] == [measure] * 3
    assert [r.measure for r in rows[3:]] == [f"last block minus its best earlier block ({b})"
                                             for b in (2, 2, 2, 2, 2, 2)]
    assert all(r.effect.unit == "queries" and r.effect.n == N and r.baseline_model == "random-a"
               and r.seeds == ("random-a", "random-b") for r in rows)
    last = {m: v[-1] for m, v in PLANTED.items()}
    assert rows[0].effect.estimate == pytest.approx(last["zoo-supervised"] - np.mean([last[m] for m in trained[1:]]))
    assert rows[0].baseline.estimate == pytest.approx(0.9 - 0.05)
    assert rows[1].effect.estimate == pytest.approx(0.7 - 0.45) and rows[1].baseline.estimate == pytest.approx(0.65)
    assert rows[2].effect.estimate == pytest.approx(0.45 - 0.15) and rows[2].baseline.estimate == pytest.approx(0.4)
    seeds_last = torch.tensor([0.05, 0.1], dtype=torch.float64)
    assert rows[1].floor == pytest.approx(seed_floor(seeds_last, torch.tensor([1.0, -0.5, -0.5],
                                                                              dtype=torch.float64)), abs=1e-9)
    assert rows[1].baseline_floor == pytest.approx(0.05, abs=1e-9)
    sel = table[(table.dataset == "roxford5k") & (table.setup == "medium")]

    def col(m):
        s = sel[(sel.model == m) & (sel.block == 3)].sort_values("query")
        return torch.tensor(s.ap.to_numpy(), dtype=torch.float64)
    ref = paired_contrast({m: col(m) for m in ("zoo-clip", "zoo-dino", "zoo-mocov3")},
                          {"zoo-clip": 1.0, "zoo-dino": -0.5, "zoo-mocov3": -0.5}, "queries")
    assert (rows[1].effect.low, rows[1].effect.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    depth = rows[3:]
    assert [r.effect.estimate for r in depth] == pytest.approx([0.5, 0.2, 0.0, -0.2, -0.1, -0.1], abs=1e-9)
    assert [r.baseline.estimate for r in depth] == pytest.approx([0.55, 0.25, 0.05, -0.15, -0.05, -0.05], abs=1e-9)
    assert rows[0].verdict == HOLDS


def test_tm_check_first_benchmark_one_seed_and_missing_groups():
    table = _per_query({"zoo-dino": [0.2, 0.3], "zoo-mae": [0.1, 0.2], "random-a": [0.1, 0.1]}, "rparis6k")
    rows = R.tm_check(table, ["random-a"])                      # one seed: no floor
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows[:2]] == [
        ("TM-6.1b", "supervised minus the other trained models", CANNOT_CHECK,
         "the profile lacks a supervised model or any other trained model"),
        ("TM-6.1b", "image-text minus joint-embedding", CANNOT_CHECK,
         "the profile lacks an image-text model or a joint-embedding model")]
    assert rows[2].subject == "joint-embedding minus reconstruction"
    assert rows[2].measure == "last-block AP (rparis6k, medium, CLS)"
    assert rows[2].floor is None and rows[2].seeds == ("random-a",)
    assert rows[2].effect.estimate == pytest.approx(0.1)
    assert [r.subject for r in rows[3:]] == ["retrieval (rparis6k, medium), zoo-dino",
                                             "retrieval (rparis6k, medium), zoo-mae"]
    assert [r.floor for r in rows[3:]] == [None, None]
    empty = R.tm_check(_per_query({"zoo-dino": [0.2, 0.3]}, setup="hard"))
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in empty] == [
        ("TM-6.1b", "retrieval", CANNOT_CHECK, "no 'medium' rows in the retrieval table")]
    sel, name = R.claim_slice(pd.concat([table, _per_query({"zoo-dino": [0.5]})], ignore_index=True))
    assert name == "roxford5k" and set(sel.dataset) == {"roxford5k"} and len(sel) == N

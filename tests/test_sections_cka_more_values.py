"""OM 2.1 (sections.cka), values: ``model_grams``, ``compute`` and ``check_claims`` with model loading and extraction
replaced by recorded fakes; the CKA table against a float64 NumPy minibatch CKA; the claim rows' effects, floors
and measure strings on hand-made HSIC terms; and the exact messages."""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch

from numpy_reference import hsic1 as _hsic1
from vitscope.claims.verdict import CANNOT_CHECK, HOLDS
from vitscope.data import transform_key
from vitscope.models import Preprocess
from vitscope.profiles import Profile
from vitscope.sections import cka as sec

PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)
SEEDS = ("random-a", "random-b", "random-c")


class _Profile(Profile):
    """A profile whose ``dataset`` is recorded and faked (no files)."""

    def dataset(self, dataset, preprocess):
        self.raw.setdefault("_calls", []).append((dataset, preprocess))
        return f"dataset:{dataset}"


def _fake_edge(monkeypatch, depth=2, batches=None):
    calls = {}
    net = types.SimpleNamespace(blocks=[None] * depth)

    def load(model, weights, device):
        calls.setdefault("load", []).append((model, weights, str(device)))
        return net, types.SimpleNamespace(preprocess=PRE), {"name": model}

    def fake_extract(model, ident, dataset, products, **kw):
        calls.setdefault("extract", []).append((model, ident, dataset, products, kw))
        return {"grams": batches or {"batch_00001": torch.ones(1), "batch_00000": torch.zeros(1), "n": 3}}

    monkeypatch.setattr(sec, "load_for_analysis", load)
    monkeypatch.setattr(sec, "extract", fake_extract)
    return net, calls


def test_model_grams_passes_the_section_settings(monkeypatch):
    run = _Profile("t", {"models": ["zoo-dino"], "device": "cpu",
                         "cka": {"dataset": "d", "sites": ["norm1", "fc1"], "tokens": "cls", "batch_size": 4,
                                 "order": "sequential", "max_examples": 6}})
    net, calls = _fake_edge(monkeypatch)
    store = object()
    stacks, labels = sec.model_grams("zoo-dino", run, weights="w", device="cpu", store=store, progress=False)
    assert [float(s) for s in stacks] == [0.0, 1.0]                 # batch order, other keys dropped
    assert labels == [("norm1", 1), ("norm1", 2), ("fc1", 1), ("fc1", 2)]
    assert calls["load"] == [("zoo-dino", "w", "cpu")] and run.raw["_calls"] == [("d", PRE)]
    [(model, ident, dataset, products, kw)] = calls["extract"]
    assert model is net and ident == {"name": "zoo-dino"} and dataset == "dataset:d"
    assert list(products) == ["grams"]
    assert products["grams"].capture_sites == ("norm1", "fc1") and products["grams"].tokens == "cls"
    assert {kk: kw[kk] for kk in ("batch_size", "order", "limit", "progress")} == {
        "batch_size": 4, "order": "sequential", "limit": 6, "progress": False}
    assert kw["transform_id"] == transform_key(PRE) and kw["store"] is store and str(kw["device"]) == "cpu"


def test_model_grams_defaults(monkeypatch):
    run = _Profile("t", {"models": ["zoo-dino"], "cka": {"dataset": "d"}})
    _, calls = _fake_edge(monkeypatch, depth=3)
    _, labels = sec.model_grams("zoo-dino", run)
    assert labels == [("block", 1), ("block", 2), ("block", 3)]
    [(*_, products, kw)] = calls["extract"]
    assert products["grams"].capture_sites == ("block",) and products["grams"].tokens == "all"
    assert {kk: kw[kk] for kk in ("batch_size", "order", "limit", "progress")} == {
        "batch_size": 32, "order": "shuffled", "limit": None, "progress": True}
    assert type(kw["store"]).__name__ == "FeatureStore" and str(kw["device"]) == "cpu"
    assert calls["load"][0][2] == "cpu"


# ---------------------------------------------------------------------------------------- the CKA table
def _gram(x: np.ndarray) -> np.ndarray:
    return x @ x.T


def _grams(models, layers=2, batches=3, b=6, seed=0):
    rng = np.random.default_rng(seed)
    out, raw = {}, {}
    for m in models:
        feats = [[rng.standard_normal((b, 4)) for _ in range(layers)] for _ in range(batches)]
        raw[m] = feats
        out[m] = ([torch.tensor(np.stack([_gram(f) for f in fb])) for fb in feats],
                  [("block", i + 1) for i in range(layers)])
    return out, raw


def _cka_np(fa, fb, i, j):
    ab = np.mean([_hsic1(_gram(x[i]), _gram(y[j])) for x, y in zip(fa, fb, strict=True)])
    aa = np.mean([_hsic1(_gram(x[i]), _gram(x[i])) for x in fa])
    bb = np.mean([_hsic1(_gram(y[j]), _gram(y[j])) for y in fb])
    return ab / np.sqrt(aa * bb)


def test_table_from_grams_against_numpy_and_labels():
    grams, raw = _grams(["zoo-dino", "zoo-mae"])
    t = sec.table_from_grams(grams)
    assert list(t.columns) == ["model_a", "model_b", "site_a", "site_b", "index_a", "index_b", "cka", "mode"]
    assert list(dict.fromkeys(zip(t.model_a, t.model_b))) == [("zoo-dino", "zoo-dino"), ("zoo-dino", "zoo-mae"),
                                                              ("zoo-mae", "zoo-mae")]
    assert set(t["mode"]) == {"reference"}
    pair = t[(t.model_a == "zoo-dino") & (t.model_b == "zoo-mae")]
    assert list(zip(pair.index_a, pair.index_b)) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    want = [_cka_np(raw["zoo-dino"], raw["zoo-mae"], i, j) for i in range(2) for j in range(2)]
    np.testing.assert_allclose(pair.cka, want, rtol=1e-9)
    assert not np.isclose(want[1], want[2])                     # i, j not symmetric: a swap would show
    self_pair = t[(t.model_a == "zoo-dino") & (t.model_b == "zoo-dino")]
    np.testing.assert_allclose(self_pair.cka.to_numpy()[[0, 3]], 1.0)


def test_compute_runs_each_model_once_with_its_weights(monkeypatch):
    run = Profile("t", {"models": ["zoo-dino"], "cka": {"dataset": "d", "mode": "teaching-matters"}})
    grams, _ = _grams(["zoo-dino", "zoo-mae"])
    calls = []

    def fake(m, profile, *, weights=None, device=None, store=None, progress=True):
        calls.append((m, profile, weights, device, store, progress))
        return grams[m]

    monkeypatch.setattr(sec, "model_grams", fake)
    store = object()
    t = sec.compute(["zoo-dino", "zoo-mae"], run, weights={"zoo-mae": "w"}, device="dev", store=store,
                    progress=False)
    assert calls == [("zoo-dino", run, None, "dev", store, False), ("zoo-mae", run, "w", "dev", store, False)]
    pd.testing.assert_frame_equal(t, sec.table_from_grams(grams, "teaching-matters"))
    calls.clear()
    t = sec.compute(["zoo-dino"], run, mode="reference")
    assert set(t["mode"]) == {"reference"} and calls[0][2:] == (None, None, None, True)
    run.raw["cka"].pop("mode")
    assert set(sec.compute(["zoo-dino"], run)["mode"]) == {"reference"}


def test_batch_terms_values():
    grams, raw = _grams(["zoo-dino", "zoo-mae", "random-a"], batches=2)
    terms = sec.batch_terms(grams)
    assert list(dict.fromkeys(zip(terms.model_a, terms.model_b))) == [
        ("zoo-dino", "zoo-mae"), ("zoo-dino", "random-a"), ("zoo-mae", "random-a")]
    sel = terms[(terms.model_a == "zoo-dino") & (terms.model_b == "random-a")]
    assert sel.batch.tolist() == [0, 0, 1, 1] and sel["index"].tolist() == [1, 2, 1, 2]
    for _, r in sel.iterrows():
        x, y = raw["zoo-dino"][r.batch][r["index"] - 1], raw["random-a"][r.batch][r["index"] - 1]
        assert r.ab == pytest.approx(_hsic1(_gram(x), _gram(y)))
        assert r.aa == pytest.approx(_hsic1(_gram(x), _gram(x))) and r.bb == pytest.approx(_hsic1(_gram(y), _gram(y)))
    assert sec.pair_cka(terms, "random-a", "zoo-dino", ("block",)) == pytest.approx(
        np.mean([_cka_np(raw["zoo-dino"], raw["random-a"], i, i) for i in range(2)]))


# ------------------------------------------------------------------------------------------------- claims
def _terms(cka: dict, sites=("block",), depth=2, k=8) -> pd.DataFrame:
    """Unit self terms: each (pair, site) CKA is the mean of ``ab`` over batches and layers."""
    rng = np.random.default_rng(1)
    rows = []
    for (a, b), v in cka.items():
        for site in sites:
            value = v[site] if isinstance(v, dict) else v
            for i in range(1, depth + 1):
                for batch in range(k):
                    rows.append({"model_a": a, "model_b": b, "site": site, "index": i, "batch": batch,
                                 "ab": value + 0.01 * rng.standard_normal(), "aa": 1.0, "bb": 1.0})
    return pd.DataFrame(rows)


def _mean(terms, a, b, sites):
    sel = terms[(terms.model_a == a) & (terms.model_b == b) & terms.site.isin(sites)]
    return sel.groupby(["site", "index"]).ab.mean().mean()


def test_joint_embedding_rows_estimates_floors_and_subjects():
    cka = {("zoo-dino", "zoo-mocov3"): 0.8, ("zoo-dino", "zoo-mae"): 0.4, ("zoo-mocov3", "zoo-mae"): 0.5,
           ("zoo-dino", "random-a"): 0.3, ("zoo-mocov3", "random-a"): 0.2, ("zoo-mae", "random-a"): 0.25,
           ("zoo-dino", "random-b"): 0.32, ("zoo-mocov3", "random-b"): 0.25,
           ("zoo-dino", "random-c"): 0.29, ("zoo-mocov3", "random-c"): 0.22,
           ("random-a", "random-b"): 0.6, ("random-a", "random-c"): 0.64, ("random-b", "random-c"): 0.61}
    terms = _terms(cka)
    rows = sec.joint_embedding_check(terms, seeds=SEEDS)
    c = {p: _mean(terms, *p, ["block"]) for p in cka}
    assert [r.subject for r in rows] == ["joint-embedding minus mixed pairs",
                                         "zoo-dino vs zoo-mocov3 minus zoo-dino vs zoo-mae",
                                         "zoo-dino vs zoo-mocov3 minus zoo-mocov3 vs zoo-mae"]
    je = c[("zoo-dino", "zoo-mocov3")]
    pooled = rows[0]
    assert (pooled.claim, pooled.measure, pooled.baseline_model, pooled.seeds) == (
        "OM-2.1a", "mean same-depth CKA (block)", "random-a", SEEDS)
    assert pooled.effect.estimate == pytest.approx(je - (c[("zoo-dino", "zoo-mae")] + c[("zoo-mocov3", "zoo-mae")]) / 2)
    assert pooled.effect.unit == "minibatches" and pooled.effect.n == 8
    beyond = {s: je - (c[("zoo-dino", s)] + c[("zoo-mocov3", s)]) / 2 for s in SEEDS}
    assert pooled.baseline.estimate == pytest.approx(beyond["random-a"])
    seed_pairs = [c[("random-a", "random-b")], c[("random-a", "random-c")], c[("random-b", "random-c")]]
    assert pooled.floor == pytest.approx(max(seed_pairs) - min(seed_pairs))
    assert pooled.baseline_floor == pytest.approx(max(beyond.values()) - min(beyond.values()))
    assert pooled.verdict == HOLDS
    assert rows[2].effect.estimate == pytest.approx(je - c[("zoo-mocov3", "zoo-mae")])
    assert rows[2].baseline.estimate == pytest.approx(
        je - (c[("zoo-dino", "random-a")] + c[("zoo-mocov3", "random-a")]) / 2)
    assert rows[2].floor == pytest.approx(2 * (max(seed_pairs) - min(seed_pairs)) / 2)
    no_seed = sec.joint_embedding_check(terms)
    assert no_seed[0].floor is None and no_seed[0].baseline_floor is None and no_seed[0].seeds == ()


def test_layer_type_rows_estimates_and_order():
    sites = ("norm1", "qkv", "fc1")
    v = {"norm1": 0.3, "qkv": 0.4, "fc1": 0.8}
    flat = {"norm1": 0.5, "qkv": 0.5, "fc1": 0.55}
    cka = {("zoo-mae", "zoo-dino"): v, ("zoo-mae", "zoo-mocov3"): v, ("zoo-dino", "random-a"): flat,
           ("zoo-mocov3", "random-a"): flat, ("zoo-mae", "random-a"): flat}
    terms = _terms(cka, sites)
    rows = sec.layer_type_check(terms)
    assert [r.subject for r in rows] == ["zoo-mocov3 vs zoo-mae", "zoo-dino vs zoo-mae"]   # contrastive first
    r = rows[0]
    assert r.measure == "same-depth CKA of fc1 minus mean of norm1 and qkv" and r.claim == "OM-2.1b"
    gap = _mean(terms, "zoo-mae", "zoo-mocov3", ["fc1"]) - _mean(terms, "zoo-mae", "zoo-mocov3", ["norm1", "qkv"])
    base_gap = _mean(terms, "zoo-mocov3", "random-a", ["fc1"]) - _mean(terms, "zoo-mocov3", "random-a",
                                                                        ["norm1", "qkv"])
    assert r.effect.estimate == pytest.approx(gap)
    assert r.baseline.estimate == pytest.approx(gap - base_gap) and r.baseline_model == "random-a"
    assert r.floor is None and r.baseline_floor is None and r.verdict == HOLDS


def test_layer_type_floors_with_seeds():
    sites = ("norm1", "qkv", "fc1")
    cka = {("zoo-dino", "zoo-mae"): {"norm1": 0.3, "qkv": 0.4, "fc1": 0.8},
           ("zoo-dino", "random-a"): {"norm1": 0.5, "qkv": 0.5, "fc1": 0.55},
           ("zoo-dino", "random-b"): {"norm1": 0.5, "qkv": 0.52, "fc1": 0.6},
           ("zoo-dino", "random-c"): {"norm1": 0.5, "qkv": 0.48, "fc1": 0.5},
           ("random-a", "random-b"): {"norm1": 0.6, "qkv": 0.6, "fc1": 0.7},
           ("random-a", "random-c"): {"norm1": 0.6, "qkv": 0.6, "fc1": 0.62},
           ("random-b", "random-c"): {"norm1": 0.6, "qkv": 0.6, "fc1": 0.58}}
    terms = _terms(cka, sites)
    (r,) = sec.layer_type_check(terms, seeds=SEEDS)

    def gap(a, b):
        return _mean(terms, a, b, ["fc1"]) - _mean(terms, a, b, ["norm1", "qkv"])

    seed_gaps = [gap("random-a", "random-b"), gap("random-a", "random-c"), gap("random-b", "random-c")]
    assert r.floor == pytest.approx(max(abs(g) for g in seed_gaps))
    beyond = [gap("zoo-dino", "zoo-mae") - gap("zoo-dino", s) for s in SEEDS]
    assert r.baseline_floor == pytest.approx(max(beyond) - min(beyond)) and r.seeds == SEEDS


def test_check_claims_adds_the_seeds_and_uses_the_section_models(monkeypatch):
    names = ["zoo-dino", "zoo-mocov3", "zoo-mae"]
    grams, _ = _grams([*names, *SEEDS], batches=3, b=5)
    run = Profile("t", {"models": ["zoo-beit"], "baselines": list(SEEDS), "cka": {"dataset": "d", "models": names}})
    calls = []

    def fake(m, profile, *, weights=None, device=None, store=None, progress=True):
        calls.append((m, weights, device, store, progress))
        return grams[m]

    monkeypatch.setattr(sec, "model_grams", fake)
    got = {}
    monkeypatch.setattr(sec, "joint_embedding_check", lambda terms, seeds=(): got.update(je=(terms, seeds)) or ["je"])
    monkeypatch.setattr(sec, "layer_type_check", lambda terms, seeds=(): got.update(lt=(terms, seeds)) or ["lt"])
    assert sec.check_claims(None, run, weights={"zoo-mae": "w"}, device="dev") == ["je", "lt"]
    assert calls == [("zoo-dino", None, "dev", None, False), ("zoo-mocov3", None, "dev", None, False),
                     ("zoo-mae", "w", "dev", None, False), *((s, None, "dev", None, False) for s in SEEDS)]
    pd.testing.assert_frame_equal(got["je"][0], sec.batch_terms(grams))
    assert got["je"][0] is got["lt"][0] and got["je"][1] == got["lt"][1] == list(SEEDS)
    calls.clear()
    store = object()
    sec.check_claims(["zoo-dino", "random-a", "zoo-mae"], run, store=store, progress=True)
    assert calls == [(m, None, None, store, True) for m in ("zoo-dino", "random-a", "zoo-mae", "random-b",
                                                            "random-c")]
    calls.clear()
    sec.check_claims(None, Profile("t", {"models": ["zoo-mae", "zoo-dino"], "cka": {"dataset": "d"}}))
    assert [c[0] for c in calls] == ["zoo-mae", "zoo-dino"] and got["je"][1] == []


# ---------------------------------------------------------------------------------------------- messages
def test_cannot_check_reasons():
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in sec.joint_embedding_check(_terms(
        {("zoo-dino", "zoo-mae"): 0.5}))] == [
        ("OM-2.1a", "joint-embedding minus mixed pairs", CANNOT_CHECK,
         "the profile lacks two joint-embedding models or a reconstruction model")]
    assert [(r.claim, r.subject, r.reason) for r in sec.joint_embedding_check(_terms(
        {("zoo-dino", "zoo-mocov3"): 0.5}))] == [
        ("OM-2.1a", "joint-embedding minus mixed pairs",
         "the profile lacks two joint-embedding models or a reconstruction model")]
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in sec.layer_type_check(_terms(
        {("zoo-dino", "zoo-mocov3"): 0.5}))] == [
        ("OM-2.1b", "joint-embedding vs reconstruction", CANNOT_CHECK,
         "the profile lacks a joint-embedding/reconstruction pair")]
    assert [(r.subject, r.reason) for r in sec.layer_type_check(_terms(
        {("zoo-dino", "zoo-mae"): 0.5}, ("block", "norm1", "qkv")))] == [
        ("joint-embedding vs reconstruction", "the profile's CKA sites lack one of fc1, norm1, qkv")]


def test_raised_messages():
    grams, _ = _grams(["zoo-dino", "zoo-mae"], layers=2)
    grams["zoo-mae"] = (grams["zoo-mae"][0], [("fc1", 1), ("fc1", 2)])
    with pytest.raises(ValueError) as err:
        sec.batch_terms(grams)
    assert str(err.value) == ("'zoo-mae' has layers [('fc1', 1), ('fc1', 2)]... but 'zoo-dino' has [('block', 1), "
                              "('block', 2)]...; same-depth CKA needs models of the same depth and capture sites")
    terms = _terms({("zoo-dino", "zoo-mae"): 0.5, ("random-a", "random-b"): 0.5})
    with pytest.raises(KeyError) as err:
        sec._pair(terms, "zoo-dino", "random-a", ("block",))
    assert err.value.args[0] == "no HSIC terms for zoo-dino vs random-a at sites ['block']"
    assert len(sec._pair(terms, "zoo-mae", "zoo-dino", ("block",))) == len(sec._pair(terms, "zoo-dino", "zoo-mae",
                                                                                       ("block",)))
    with pytest.raises(ValueError) as err:
        sec._seed_pairs(terms, ("random-a", "random-z", "random-c"))
    assert str(err.value) == ("seeds ['random-z', 'random-c'] have no HSIC terms; pass their Gram matrices to "
                              "batch_terms (check_claims adds the profile's baselines)")
    with pytest.raises(ValueError) as err:
        sec._seed_pairs(terms, ("random-a", "random-b"))
    assert str(err.value) == ("seeds ['random-a', 'random-b']: a CKA seed floor compares pairs of seeds, so it "
                              "needs at least three seeds (two pairs)")
    assert sec._seed_pairs(terms, ()) == []
    ref = pd.DataFrame({"model_a": ["a", "a"], "model_b": ["b", "b"], "site_a": "block", "site_b": "block",
                        "index_a": [1, 2], "index_b": [1, 2], "cka": [0.5, 0.7]})
    with pytest.raises(ValueError) as err:
        sec.estimator_comparison(ref, ref.iloc[:1])
    assert str(err.value) == "The two CKA tables do not cover the same model pairs and layers."
    out = sec.estimator_comparison(ref, ref.assign(cka=[0.6, 0.6]))
    assert out.loc[("a", "b", "block")].to_dict() == pytest.approx({"cka": 0.6, "tm_compat": 0.6, "difference": 0.0})

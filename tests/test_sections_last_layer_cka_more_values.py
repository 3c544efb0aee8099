"""sections.last_layer_cka (TM 5.1, Fig. 6): the extraction wiring of ``last_block_grams`` with the model, data and
extraction replaced, and the three claim checks' exact subjects, measures, estimates and seed floors against an
independent float64 NumPy minibatch CKA (issue 17: fast tests that check values, not verdict words)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from numpy_reference import hsic1 as _hsic1
from vitscope.claims import CANNOT_CHECK, HOLDS
from vitscope.kernels.stats import seed_floor
from vitscope.profiles import Profile, load_profile
from vitscope.sections import last_layer_cka as llc


# ---------------------------------------------------------------------------------------------------- extraction
class _DataProfile(Profile):
    def dataset(self, dataset, preprocess):
        self.raw["_opened"].append((dataset, preprocess))
        return f"data:{dataset}"


def _fake_edges(monkeypatch):
    calls = {"device": []}
    cfg = type("Cfg", (), {"preprocess": "prep"})()
    gen = torch.Generator().manual_seed(0)
    batches = {t: {f"batch{k:04d}": torch.randn(3, 4, 4, generator=gen) for k in (2, 0, 1)} for t in llc.TOKENS}

    def load(model, weights, device):
        calls["load"] = (model, weights, device)
        return "net", cfg, {"id": model}

    def extract(net, ident, data, products, **kw):
        calls["extract"] = (net, ident, data, products, kw)
        return {t: {**batches[t], "meta": torch.zeros(1)} for t in products}

    monkeypatch.setattr(llc, "resolve_device", lambda d: calls["device"].append(d) or f"dev({d})")
    monkeypatch.setattr(llc, "load_for_analysis", load)
    monkeypatch.setattr(llc, "extract", extract)
    monkeypatch.setattr(llc, "transform_key", lambda p: {"transform": p})
    monkeypatch.setattr(llc, "FeatureStore", lambda: "default store")
    return calls, batches


def test_last_block_grams_keeps_the_last_block_of_each_batch_in_batch_order(monkeypatch):
    calls, batches = _fake_edges(monkeypatch)
    profile = _DataProfile("demo", {**load_profile("demo").raw, "_opened": []})
    out = llc.last_block_grams("zoo-dino", profile, weights="w.pt", store="st", progress=True)
    assert calls["device"] == ["cpu"] and calls["load"] == ("zoo-dino", "w.pt", "dev(cpu)")
    assert profile.raw["_opened"] == [("imagenet50", "prep")]
    net, ident, data, products, kw = calls["extract"]
    assert (net, ident, data) == ("net", {"id": "zoo-dino"}, "data:imagenet50")
    assert list(products) == ["cls", "spatial"]
    for t, product in products.items():
        assert isinstance(product, llc.GramMatrices)
        assert tuple(product.capture_sites) == ("block",) and product.tokens == t
    assert kw == {"transform_id": {"transform": "prep"}, "store": "st", "device": "dev(cpu)", "batch_size": 32,
                  "order": "shuffled", "limit": 480, "progress": True}
    assert list(out) == ["cls", "spatial"]
    for t in llc.TOKENS:
        assert len(out[t]) == 3
        for k in range(3):
            assert torch.equal(out[t][k], batches[t][f"batch{k:04d}"][-1])


def test_last_block_grams_section_defaults(monkeypatch):
    calls, _ = _fake_edges(monkeypatch)
    profile = _DataProfile("bare", {"device": "cuda", "_opened": [], "last_layer_cka": {"dataset": "d"}})
    llc.last_block_grams("zoo-mae", profile, device="cpu")
    assert calls["device"] == ["cpu"] and calls["load"] == ("zoo-mae", None, "dev(cpu)")
    assert calls["extract"][4] == {"transform_id": {"transform": "prep"}, "store": "default store",
                                   "device": "dev(cpu)", "batch_size": 32, "order": "shuffled", "limit": None,
                                   "progress": False}
    custom = _DataProfile("c", {"_opened": [], "last_layer_cka": {"dataset": "d", "batch_size": 8, "order": "fixed",
                                                                  "max_examples": 16}})
    llc.last_block_grams("zoo-mae", custom)
    assert {k: calls["extract"][4][k] for k in ("batch_size", "order", "limit")} == {
        "batch_size": 8, "order": "fixed", "limit": 16}


def test_grams_of_and_compute_pass_weights_device_store_and_progress(monkeypatch):
    seen = []

    def fake(model, profile, *, weights, device, store, progress):
        seen.append((model, weights, device, store, progress))
        gen = torch.Generator().manual_seed(len(seen))
        return {t: [(lambda x: x @ x.T)(torch.randn(6, 3, generator=gen, dtype=torch.float64)) for _ in range(2)]
                for t in llc.TOKENS}
    monkeypatch.setattr(llc, "last_block_grams", fake)
    got = llc.grams_of(["zoo-dino", "zoo-mae"], load_profile("demo"), weights={"zoo-dino": "w"}, device="dev",
                       store="st", progress=True)
    assert list(got) == ["zoo-dino", "zoo-mae"]
    assert seen == [("zoo-dino", "w", "dev", "st", True), ("zoo-mae", None, "dev", "st", True)]
    seen.clear()
    section = Profile("s", {"models": ["zoo-beit"], "last_layer_cka": {"dataset": "d", "models": ["zoo-clip",
                                                                                                  "zoo-dino"]}})
    table = llc.compute(None, section, device="dev")
    assert [s[0] for s in seen] == ["zoo-clip", "zoo-dino"] and seen[0][1:] == (None, "dev", None, False)
    assert list(dict.fromkeys(table.model_a)) == ["zoo-clip", "zoo-dino"]
    seen.clear()
    llc.compute(None, Profile("p", {"models": ["zoo-beit"], "last_layer_cka": {"dataset": "d"}}))
    assert [s[0] for s in seen] == ["zoo-beit"]


# ---------------------------------------------------------------------------------------------------- claims
BATCHES, B = 6, 10
MODELS = ["zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-beit", "zoo-supervised", "zoo-clip", "random-a", "random-b",
          "random-c"]


@pytest.fixture(scope="module")
def grams():
    """dino and mocov3 share their CLS; mae leans to them; supervised and clip share CLS but not spatial tokens."""
    g = torch.Generator().manual_seed(1)
    n = BATCHES * B

    def r(scale=1.0):
        return scale * torch.randn(n, 5, generator=g, dtype=torch.float64)
    c_shared, s_shared, fc_shared = r(), r(), r()
    feats = {"zoo-dino": (c_shared + r(0.3), s_shared + r(0.5)), "zoo-mocov3": (c_shared + r(0.3), s_shared + r(0.5)),
             "zoo-mae": (c_shared + r(1.0), s_shared + r(0.5)), "zoo-beit": (r(), r()),
             "zoo-supervised": (fc_shared + r(0.2), r()), "zoo-clip": (fc_shared + r(0.2), r()),
             "random-a": (r(), r()), "random-b": (r(), r()), "random-c": (r(), r())}
    out = {}
    for m, (c, s) in feats.items():
        out[m] = {t: [x[k * B:(k + 1) * B] @ x[k * B:(k + 1) * B].T for k in range(BATCHES)]
                  for t, x in (("cls", c), ("spatial", s))}
    return out


@pytest.fixture(scope="module")
def terms(grams):
    return llc.terms_from_grams(grams)


def _cka(grams, a, b, t) -> float:
    ab = sum(_hsic1(x.numpy(), y.numpy()) for x, y in zip(grams[a][t], grams[b][t]))
    aa = sum(_hsic1(x.numpy(), x.numpy()) for x in grams[a][t])
    bb = sum(_hsic1(y.numpy(), y.numpy()) for y in grams[b][t])
    return ab / np.sqrt(aa * bb)


SEEDS = ("random-a", "random-b", "random-c")


def test_pair_check_subjects_estimates_baseline_and_floors(grams):
    trained = ["zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-supervised", "zoo-clip"]     # 9 other pairs
    terms = llc.terms_from_grams({m: grams[m] for m in trained + list(SEEDS)})
    rows = llc.pair_check(terms, SEEDS)
    others = [p for p in itertools.combinations(trained, 2) if set(p) != {"zoo-dino", "zoo-mocov3"}]
    single = {p: _cka(grams, *p, "cls") for p in others}
    runner = max(single, key=single.get)
    assert runner == ("zoo-supervised", "zoo-clip")
    assert [(r.claim, r.subject, r.measure) for r in rows] == [
        ("TM-5.1a", "zoo-dino vs zoo-mocov3 minus the next most similar pair, zoo-supervised vs zoo-clip",
         "last-block CLS CKA"),
        ("TM-5.1a", f"zoo-dino vs zoo-mocov3 minus the mean of the other {len(others)} pairs", "last-block CLS CKA")]
    pair = _cka(grams, "zoo-dino", "zoo-mocov3", "cls")
    assert rows[0].effect.estimate == pytest.approx(pair - single[runner], abs=1e-9)
    assert rows[1].effect.estimate == pytest.approx(pair - np.mean(list(single.values())), abs=1e-9)

    def beyond(u):
        return pair - 0.5 * _cka(grams, "zoo-dino", u, "cls") - 0.5 * _cka(grams, "zoo-mocov3", u, "cls")
    assert rows[0].baseline.estimate == rows[1].baseline.estimate == pytest.approx(beyond("random-a"), abs=1e-9)
    swaps = [beyond(s) for s in SEEDS]
    assert rows[0].baseline_floor == pytest.approx(max(swaps) - min(swaps), abs=1e-9)
    seed_cka = [_cka(grams, a, b, "cls") for a, b in itertools.combinations(SEEDS, 2)]
    assert rows[0].floor == pytest.approx(seed_floor(seed_cka, [1.0, -1.0]), abs=1e-9)
    assert rows[1].floor == pytest.approx(seed_floor(seed_cka, [1.0] + [-1 / len(others)] * len(others)), abs=1e-9)
    assert all(r.baseline_model == "random-a" and r.seeds == SEEDS and r.expected == 1 for r in rows)
    assert all(r.effect.unit == "minibatches" and r.effect.n == BATCHES for r in rows)


def test_pair_check_without_an_untrained_model(grams):
    terms = llc.terms_from_grams({m: grams[m] for m in ("zoo-dino", "zoo-mocov3", "zoo-mae")})
    rows = llc.pair_check(terms)
    runner = max((("zoo-dino", "zoo-mae"), ("zoo-mocov3", "zoo-mae")), key=lambda p: _cka(grams, *p, "cls"))
    assert [r.subject for r in rows] == [
        f"zoo-dino vs zoo-mocov3 minus the next most similar pair, {runner[0]} vs {runner[1]}",
        "zoo-dino vs zoo-mocov3 minus the mean of the other 2 pairs"]
    assert all(r.baseline is None and r.baseline_model is None and r.baseline_floor is None for r in rows)


def test_mae_check_subject_estimate_and_baseline(grams, terms):
    (row,) = llc.mae_check(terms, SEEDS)
    assert (row.claim, row.subject, row.measure, row.expected) == (
        "TM-5.1b", "zoo-mae vs zoo-dino, zoo-mocov3 minus zoo-mae vs zoo-beit", "last-block CLS CKA", 1)

    def diff(x):
        return (_cka(grams, x, "zoo-dino", "cls") + _cka(grams, x, "zoo-mocov3", "cls")) / 2 \
            - _cka(grams, x, "zoo-beit", "cls")
    assert row.effect.estimate == pytest.approx(diff("zoo-mae"), abs=1e-9)
    assert row.baseline.estimate == pytest.approx(diff("zoo-mae") - diff("random-a"), abs=1e-9)
    swaps = [diff("zoo-mae") - diff(s) for s in SEEDS]
    assert row.baseline_floor == pytest.approx(max(swaps) - min(swaps), abs=1e-9)
    seed_cka = [_cka(grams, a, b, "cls") for a, b in itertools.combinations(SEEDS, 2)]
    assert row.floor == pytest.approx(seed_floor(seed_cka, [0.5, 0.5, -1.0]), abs=1e-9)
    assert row.baseline_model == "random-a" and row.seeds == SEEDS and row.verdict == HOLDS
    no_base = llc.mae_check(llc.terms_from_grams({m: grams[m] for m in MODELS[:4]}))[0]
    assert no_base.baseline is None and no_base.baseline_model is None and no_base.floor is None


def test_spatial_check_subjects_estimates_and_the_fs_clip_floor(grams, terms):
    rows = llc.spatial_check(terms, SEEDS)
    assert [(r.claim, r.subject, r.measure, r.expected) for r in rows] == [
        ("TM-5.1c", "mean over pairs of zoo-dino, zoo-mocov3, zoo-mae minus their mean vs zoo-beit",
         "last-block spatial-token CKA", 1),
        ("TM-5.1c", "zoo-supervised vs zoo-clip", "spatial-token CKA minus CLS CKA (last block)", -1)]
    ssl = ["zoo-dino", "zoo-mocov3", "zoo-mae"]
    within = np.mean([_cka(grams, a, b, "spatial") for a, b in itertools.combinations(ssl, 2)])

    def against(o):
        return within - np.mean([_cka(grams, m, o, "spatial") for m in ssl])
    assert rows[0].effect.estimate == pytest.approx(against("zoo-beit"), abs=1e-9)
    assert rows[0].baseline.estimate == pytest.approx(against("random-a"), abs=1e-9)
    swaps = [against(s) for s in SEEDS]
    assert rows[0].baseline_floor == pytest.approx(max(swaps) - min(swaps), abs=1e-9)
    seed_sp = [_cka(grams, a, b, "spatial") for a, b in itertools.combinations(SEEDS, 2)]
    assert rows[0].floor == pytest.approx(seed_floor(seed_sp, [1 / 3] * 3 + [-1 / 3] * 3), abs=1e-9)
    assert rows[0].verdict == HOLDS

    def gap(a, b):
        return _cka(grams, a, b, "spatial") - _cka(grams, a, b, "cls")
    fs = rows[1]
    assert fs.effect.estimate == pytest.approx(gap("zoo-supervised", "zoo-clip"), abs=1e-9)
    assert fs.baseline.estimate == pytest.approx(gap("zoo-supervised", "zoo-clip") - gap("random-a", "zoo-clip"),
                                                 abs=1e-9)
    swaps = [gap("zoo-supervised", "zoo-clip") - gap(s, "zoo-clip") for s in SEEDS]
    assert fs.baseline_floor == pytest.approx(max(swaps) - min(swaps), abs=1e-9)
    seed_gaps = [gap(a, b) for a, b in itertools.combinations(SEEDS, 2)]
    assert fs.floor == pytest.approx(max(abs(x) for x in seed_gaps), abs=1e-9)
    assert fs.verdict == HOLDS and fs.effect.high < 0
    assert all(r.baseline_model == "random-a" and r.seeds == SEEDS for r in rows)


def test_spatial_check_needs_two_ssl_models_and_beit(grams):
    terms = llc.terms_from_grams({m: grams[m] for m in ("zoo-dino", "zoo-beit", "zoo-supervised", "zoo-clip")})
    rows = llc.spatial_check(terms)
    assert [(r.subject, r.verdict, r.reason) for r in rows[:1]] == [
        ("DINO, MAE, MoCo-v3 among themselves minus vs BEiT", CANNOT_CHECK,
         "the profile lacks two of DINO, MAE, MoCo-v3, or BEiT")]
    assert rows[1].subject == "zoo-supervised vs zoo-clip" and rows[1].baseline is None
    no_beit = llc.spatial_check(llc.terms_from_grams({m: grams[m] for m in ("zoo-dino", "zoo-mae", "zoo-clip")}))
    assert [r.verdict for r in no_beit] == [CANNOT_CHECK, CANNOT_CHECK]
    assert no_beit[1].reason == "the profile lacks a supervised or an image-text model"

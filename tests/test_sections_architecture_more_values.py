"""sections.architecture (OM Fig. 11): exact values and messages of every helper, the extraction replaced by
hand-made Gram matrices (issue 17: fast tests that reach model_grams, gather, check_claims and the tables).

The reference CKA here is an independent float64 NumPy HSIC_1 (Nguyen et al.'s unbiased estimator), not the kernel.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from numpy_reference import hsic1 as _hsic1
from vitscope.claims.verdict import CANNOT_CHECK, HOLDS, INCONCLUSIVE
from vitscope.models.loading import CheckpointError, CheckpointMismatchError, WeightsUnavailableError
from vitscope.profiles import Profile, load_profile
from vitscope.sections import architecture as A

N_BATCHES, B = 5, 8


def _np_cka(ga, gb) -> np.ndarray:
    """[La, Lb] minibatch CKA (sum of HSIC_1 over batches) of per-batch Gram stacks."""
    la, lb = ga[0].shape[0], gb[0].shape[0]
    out = np.zeros((la, lb))
    for i in range(la):
        for j in range(lb):
            ab = sum(_hsic1(x[i].numpy(), y[j].numpy()) for x, y in zip(ga, gb))
            aa = sum(_hsic1(x[i].numpy(), x[i].numpy()) for x in ga)
            bb = sum(_hsic1(y[j].numpy(), y[j].numpy()) for y in gb)
            out[i, j] = ab / np.sqrt(aa * bb)
    return out


def _grams(layers: int, gen, shared=None, noise=0.3) -> tuple[list[torch.Tensor], int]:
    feats = [(shared[min(len(shared) - 1, i * len(shared) // layers)] if shared is not None else 0)
             + noise * torch.randn(N_BATCHES * B, 6, generator=gen, dtype=torch.float64) for i in range(layers)]
    out = []
    for k in range(N_BATCHES):
        rows = slice(k * B, (k + 1) * B)
        out.append(torch.stack([f[rows] @ f[rows].T for f in feats]))
    return out, layers


@pytest.fixture(scope="module")
def fake():
    g = torch.Generator().manual_seed(3)
    shared = [torch.randn(N_BATCHES * B, 6, generator=g, dtype=torch.float64)]     # one signal at every depth
    mae_like = [torch.randn(N_BATCHES * B, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    return {"zoo-mocov3": _grams(3, g, shared), "zoo-cnn-mocov3": _grams(4, g, shared),
            "zoo-mae": _grams(3, g, None, 1.0), "zoo-dino": _grams(3, g, None, 1.0),
            "mae": _grams(3, g, mae_like), "convnextv2-fcmae": _grams(2, g, mae_like),
            "dino": _grams(3, g, None, 1.0), "random-cnn-a": _grams(4, g, None, 1.0)}


def _profile(**section) -> Profile:
    raw = load_profile("demo").raw
    return Profile("demo", {**raw, "architecture": {**raw["architecture"], **section}})


# ---------------------------------------------------------------------------------------------------- pairs
def test_pairs_reads_both_lists_and_names_each_error_whole():
    got = A.pairs(_profile())
    assert got == {A.SAME: [("zoo-mocov3", "zoo-cnn-mocov3"), ("zoo-supervised", "zoo-cnn-supervised")],
                   A.DIFFERENT: [("zoo-mocov3", "zoo-mae"), ("zoo-dino", "zoo-mae")]}
    assert A.pairs(_profile(same_objective=None, different_objective=[])) == {A.SAME: [], A.DIFFERENT: []}
    with pytest.raises(ValueError) as err:
        A.pairs(_profile(different_objective=[["zoo-dino", "zoo-mae", "zoo-beit"]]))
    assert str(err.value) == ("Profile 'demo': architecture: each pair is [model, model]; got "
                              "['zoo-dino', 'zoo-mae', 'zoo-beit']")
    with pytest.raises(ValueError) as err:
        A.pairs(_profile(same_objective=[["zoo-mocov3", "zoo-cnn-supervised"]]))
    assert str(err.value) == ("Profile 'demo': architecture: ['zoo-mocov3', 'zoo-cnn-supervised'] is listed as "
                              "'same objective, ViT vs CNN' but the families are 'contrastive' and 'supervised'; "
                              "same_objective pairs share a family, different_objective pairs do not")
    with pytest.raises(ValueError) as err:
        A.pairs(_profile(different_objective=[["zoo-mocov3", "zoo-cnn-mocov3"]]))
    assert str(err.value) == ("Profile 'demo': architecture: ['zoo-mocov3', 'zoo-cnn-mocov3'] is listed as "
                              "'different objectives, ViT vs ViT' but the families are 'contrastive' and "
                              "'contrastive'; same_objective pairs share a family, different_objective pairs do not")


# ---------------------------------------------------------------------------------------------------- extraction
class _DataProfile(Profile):
    """A profile whose datasets are a sentinel (no images are read)."""

    def dataset(self, dataset, preprocess):
        self.raw["_opened"].append((dataset, preprocess))
        return f"data:{dataset}"


def _fake_edges(monkeypatch, L=3):
    calls = {}
    cfg = type("Cfg", (), {"preprocess": "prep"})()

    def load(model, weights, device):
        calls["load"] = (model, weights, device)
        return "net", cfg, {"id": model}

    def extract(net, ident, data, products, **kw):
        calls["extract"] = (net, ident, data, products, kw)
        gen = torch.Generator().manual_seed(0)
        batches = {f"batch{k:04d}": torch.randn(L, 4, 4, generator=gen) for k in (1, 0, 2)}
        calls["batches"] = batches
        return {"grams": {**batches, "meta": torch.zeros(1)}}

    monkeypatch.setattr(A, "resolve_device", lambda d: calls.setdefault("device", []).append(d) or f"dev({d})")
    monkeypatch.setattr(A, "load_for_analysis", load)
    monkeypatch.setattr(A, "extract", extract)
    monkeypatch.setattr(A, "transform_key", lambda p: {"transform": p})
    monkeypatch.setattr(A, "FeatureStore", lambda: "default store")
    return calls


def test_model_grams_passes_the_section_to_one_extraction_and_stacks_batches_in_order(monkeypatch):
    calls = _fake_edges(monkeypatch, L=3)
    raw = {**load_profile("demo").raw, "_opened": []}
    profile = _DataProfile("demo", raw)
    grams, L = A.model_grams("zoo-mocov3", profile, store="my store", progress=False)
    assert calls["device"] == ["cpu"]                                    # the profile's device when none is given
    assert calls["load"] == ("zoo-mocov3", None, "dev(cpu)")
    assert raw["_opened"] == [("imagenet50", "prep")]
    net, ident, data, products, kw = calls["extract"]
    assert (net, ident, data, list(products)) == ("net", {"id": "zoo-mocov3"}, "data:imagenet50", ["grams"])
    product = products["grams"]
    assert isinstance(product, A.GramMatrices)
    assert tuple(product.capture_sites) == ("block",) and product.tokens == "all"
    assert kw == {"transform_id": {"transform": "prep"}, "store": "my store", "device": "dev(cpu)", "batch_size": 32,
                  "order": "shuffled", "limit": 480, "progress": False}
    assert L == 3 and len(grams) == 3
    for k, g in enumerate(grams):
        assert torch.equal(g, calls["batches"][f"batch{k:04d}"])

    # the section's defaults, an explicit device and the default store and progress
    bare = _DataProfile("bare", {"device": "cuda", "_opened": [], "architecture": {"dataset": "d", "tokens": "cls"}})
    grams, L = A.model_grams("zoo-dino", bare, device="cpu")
    assert calls["device"][-1] == "cpu"
    product = calls["extract"][3]["grams"]
    assert product.tokens == "cls"
    assert calls["extract"][4] == {"transform_id": {"transform": "prep"}, "store": "default store",
                                   "device": "dev(cpu)", "batch_size": 32, "order": "shuffled", "limit": None,
                                   "progress": True}
    bare2 = _DataProfile("bare", {"_opened": [], "architecture": {"dataset": "d"}})
    A.model_grams("zoo-dino", bare2)
    assert calls["extract"][3]["grams"].tokens == "all" and calls["device"][-1] == "cpu"


def test_gather_loads_each_model_once_and_reports_absent_weights(monkeypatch):
    seen = []
    errors = {"zoo-cnn-mocov3": WeightsUnavailableError("not trained yet\nsecond line"),
              "zoo-cnn-supervised": CheckpointError("corrupt file"),
              "zoo-mae": CheckpointMismatchError("keys differ\nmore"),
              "random-cnn-a": FileNotFoundError("no such file")}

    def fake(m, profile, *, device, store, progress):
        seen.append((m, device, store, progress))
        if m in errors:
            raise errors[m]
        return (f"grams of {m}", 7)
    monkeypatch.setattr(A, "model_grams", fake)
    grams, missing = A.gather(_profile(), device="dev", store="st", progress=True)
    assert [s[0] for s in seen] == ["zoo-mocov3", "zoo-cnn-mocov3", "zoo-supervised", "zoo-cnn-supervised",
                                    "zoo-mae", "zoo-dino", "random-cnn-a"]
    assert all(s[1:] == ("dev", "st", True) for s in seen)
    assert grams == {m: (f"grams of {m}", 7) for m in ("zoo-mocov3", "zoo-supervised", "zoo-dino")}
    assert missing == {"zoo-cnn-mocov3": "WeightsUnavailableError: not trained yet",
                       "zoo-cnn-supervised": "CheckpointError: corrupt file",
                       "zoo-mae": "CheckpointMismatchError: keys differ",
                       "random-cnn-a": "FileNotFoundError: no such file"}
    seen.clear()
    grams, missing = A.gather(_profile(baseline=None))
    assert [s[0] for s in seen] == ["zoo-mocov3", "zoo-cnn-mocov3", "zoo-supervised", "zoo-cnn-supervised",
                                    "zoo-mae", "zoo-dino"]
    assert seen[0][1:] == (None, None, False)
    errors["zoo-dino"] = RuntimeError("a real bug")                 # not a missing-weights error: it propagates
    with pytest.raises(RuntimeError, match="a real bug"):
        A.gather(_profile())


def test_check_claims_without_the_section_and_with_it(monkeypatch, fake):
    raw = {k: v for k, v in load_profile("demo").raw.items() if k != "architecture"}
    rows = A.check_claims(None, Profile("demo", raw))
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows] == [
        ("OM-2.1c", "ViT vs CNN pairs", CANNOT_CHECK, "the profile has no 'architecture' section"),
        ("OM-2.1d", "ViT vs CNN pairs", CANNOT_CHECK, "the profile has no 'architecture' section")]
    seen = []
    grams = {k: v for k, v in fake.items() if k in ("zoo-mocov3", "zoo-cnn-mocov3", "zoo-mae", "zoo-dino")}
    missing = {"zoo-cnn-supervised": "FileNotFoundError: x"}

    def gather(profile, *, device, store, progress):
        seen.append((device, store, progress))
        return grams, missing
    monkeypatch.setattr(A, "gather", gather)
    got = A.check_claims(["ignored"], _profile(), weights={"x": 1}, device="dev", store="st", progress=True)
    assert seen == [("dev", "st", True)]
    assert got == A.judge_pairs(_profile(), grams, missing)
    assert (got[0].verdict, got[0].baseline_model) == (INCONCLUSIVE, None)    # random-cnn-a not loaded: no baseline
    A.check_claims(None, _profile())
    assert seen[-1] == (None, None, False)


# ---------------------------------------------------------------------------------------------------- tables
def test_architecture_layers_of_and_missing_table(monkeypatch):
    import vitscope.models

    built = []
    monkeypatch.setattr(vitscope.models, "create_model", lambda m: built.append(m) or f"net of {m}")
    monkeypatch.setattr(A, "is_cnn", lambda net: net == "net of zoo-cnn-mocov3")
    assert A.architecture("zoo-cnn-mocov3") == "CNN" and A.architecture("random-a") == "ViT"
    assert built == ["zoo-cnn-mocov3", "random-a"]
    got = A.layers_of({"random-a": ("g", 12), "zoo-cnn-mocov3": ("g", 8)})
    assert got.to_dict("records") == [{"model": "random-a", "architecture": "ViT", "blocks": 12},
                                      {"model": "zoo-cnn-mocov3", "architecture": "CNN", "blocks": 8}]
    table = A.missing_table({"a": "why a", "b": "why b"})
    assert table.to_dict("records") == [{"model": "a", "reason": "why a"}, {"model": "b", "reason": "why b"}]
    empty = A.missing_table({})
    assert list(empty.columns) == ["model", "reason"] and len(empty) == 0


def test_compute_rows_match_numpy_cka_and_a_missing_first_pair_skips_only_itself(fake):
    profile = _profile(same_objective=[["zoo-supervised", "zoo-cnn-supervised"], ["zoo-mocov3", "zoo-cnn-mocov3"]],
                       different_objective=[["zoo-mocov3", "zoo-mae"]])
    table = A.compute(profile, fake)
    assert list(dict.fromkeys(table.pair)) == ["zoo-mocov3 vs zoo-cnn-mocov3", "zoo-mocov3 vs zoo-mae"]
    same = table[table.pair == "zoo-mocov3 vs zoo-cnn-mocov3"]
    assert len(same) == 3 * 4 and set(same.kind) == {A.SAME} and set(same.family) == {"contrastive"}
    assert set(same.model_a) == {"zoo-mocov3"} and set(same.model_b) == {"zoo-cnn-mocov3"}
    assert same.index_a.tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    assert same.index_b.tolist() == [1, 2, 3, 4] * 3
    np.testing.assert_allclose(same.depth_a, np.repeat([1 / 3, 2 / 3, 1.0], 4), rtol=0, atol=1e-12)
    np.testing.assert_allclose(same.depth_b, np.tile([0.25, 0.5, 0.75, 1.0], 3), rtol=0, atol=1e-12)
    np.testing.assert_allclose(same.distance, np.abs(same.depth_a - same.depth_b), rtol=0, atol=1e-12)
    ref = _np_cka(fake["zoo-mocov3"][0], fake["zoo-cnn-mocov3"][0])
    np.testing.assert_allclose(same.cka.to_numpy().reshape(3, 4), ref, rtol=1e-9, atol=1e-12)
    diff = table[table.pair == "zoo-mocov3 vs zoo-mae"]
    assert set(diff.kind) == {A.DIFFERENT} and set(diff.family) == {"contrastive / masked-reconstruction"}
    np.testing.assert_allclose(diff.cka.to_numpy().reshape(3, 3), _np_cka(fake["zoo-mocov3"][0], fake["zoo-mae"][0]),
                               rtol=1e-9, atol=1e-12)
    assert list(table.columns) == ["kind", "pair", "model_a", "model_b", "family", "index_a", "index_b", "depth_a",
                                   "depth_b", "distance", "cka"]


def test_by_distance_and_summary_against_numpy_bins():
    rows = []
    rng = np.random.default_rng(0)
    for pair, kind, fam, (la, lb) in (("p vs q", A.SAME, "f", (2, 4)), ("r vs s", A.DIFFERENT, "f / g", (3, 3))):
        for i in range(la):
            for j in range(lb):
                rows.append({"kind": kind, "pair": pair, "family": fam, "index_a": i + 1, "index_b": j + 1,
                             "cka": float(rng.random())})
    table = pd.DataFrame(rows)
    binned = A.by_distance(table, bins=4)
    assert list(binned.columns) == ["kind", "pair", "family", "low", "high", "centre", "cka", "count"]
    first = binned[binned.pair == "p vs q"]
    assert first.low.tolist() == [0.0, 0.25, 0.5, 0.75] and first.high.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert first.centre.tolist() == [0.125, 0.375, 0.625, 0.875]
    assert set(first.kind) == {A.SAME} and set(first.family) == {"f"}
    sel = table[table.pair == "p vs q"]
    dist = np.abs((sel.index_a / 2).to_numpy() - (sel.index_b / 4).to_numpy())
    which = np.minimum((dist / 0.25 + 1e-12).astype(int), 3)
    for k in range(4):
        assert first["count"].iloc[k] == int((which == k).sum())
        if (which == k).any():
            assert first.cka.iloc[k] == pytest.approx(sel.cka.to_numpy()[which == k].mean(), abs=1e-12)
        else:
            assert np.isnan(first.cka.iloc[k])
    summ = A.summary(binned)
    assert summ.columns.tolist() == ["kind", "pair", "mean CKA over distance bins"]
    assert summ.pair.tolist() == ["p vs q", "r vs s"] and summ.kind.tolist() == [A.SAME, A.DIFFERENT]
    expect = [binned[binned.pair == p].cka.dropna().mean() for p in ("p vs q", "r vs s")]
    assert summ.iloc[:, -1].tolist() == pytest.approx(expect, abs=1e-12)


# ---------------------------------------------------------------------------------------------------- claims
def test_pair_weights_average_the_non_empty_bins():
    # 2 x 4 layers: depths [1/2, 1] x [1/4, 1/2, 3/4, 1]; distances [[1/4, 0, 1/4, 1/2], [3/4, 1/2, 1/4, 0]]
    w = A._pair_weights(2, 4, 2, None)           # bins [0, 0.5) and [0.5, 1]: 5 and 3 pairs
    expected = np.array([[1 / 10, 1 / 10, 1 / 10, 1 / 6], [1 / 6, 1 / 6, 1 / 10, 1 / 10]])
    np.testing.assert_allclose(w.numpy(), expected, rtol=0, atol=1e-15)
    assert w.dtype == torch.float64 and float(w.sum()) == pytest.approx(1.0)
    far = A._pair_weights(2, 4, 2, 0.5)          # only distance >= 0.5: the three pairs of bin 2
    np.testing.assert_allclose(far.numpy(), np.array([[0, 0, 0, 1 / 3], [1 / 3, 1 / 3, 0, 0]]), rtol=0, atol=1e-15)
    four = A._pair_weights(2, 4, 4, None)        # bins of 1/4: {0: 2 pairs, 1: 3, 2: 2, 3: 1}
    np.testing.assert_allclose(four.numpy(), np.array([[1 / 12, 1 / 8, 1 / 12, 1 / 8], [1 / 4, 1 / 8, 1 / 12, 1 / 8]]),
                               rtol=0, atol=1e-15)


def _binned_mean(ga, gb, bins, far=None) -> float:
    """The Fig. 11 curve's mean over non-empty bins (of the pairs at distance >= far), from NumPy CKA."""
    c = _np_cka(ga[0], gb[0])
    da, db = np.arange(1, ga[1] + 1) / ga[1], np.arange(1, gb[1] + 1) / gb[1]
    dist = np.abs(da[:, None] - db[None, :])
    which = np.minimum(np.floor(dist * bins + 1e-9).astype(int), bins - 1)
    keep = dist >= far - 1e-12 if far is not None else np.ones_like(dist, bool)
    return float(np.mean([c[keep & (which == b)].mean() for b in np.unique(which[keep])]))


def test_judge_pairs_both_claims_exact_subjects_measures_and_estimates(fake):
    profile = _profile(same_objective=[["zoo-mocov3", "zoo-cnn-mocov3"], ["mae", "convnextv2-fcmae"]],
                       different_objective=[["dino", "mae"], ["zoo-mocov3", "zoo-dino"]], bins=3, far_distance=0.4)
    rows = A.judge_pairs(profile, fake, {})
    assert [(r.claim, r.subject) for r in rows] == [
        ("OM-2.1c", "joint-embedding ViT vs CNN minus joint-embedding vs reconstruction ViTs"),
        ("OM-2.1c", "zoo-mocov3 vs zoo-cnn-mocov3 minus dino vs mae"),
        ("OM-2.1d", "reconstruction ViT vs CNN minus joint-embedding vs reconstruction ViTs"),
        ("OM-2.1d", "mae vs convnextv2-fcmae minus dino vs mae")]
    assert [r.measure for r in rows] == ["CKA averaged over relative-depth distance bins"] * 2 + [
        "CKA over layer pairs at relative-depth distance >= 0.4"] * 2
    assert all(r.baseline_model == "random-cnn-a" and r.expected == 1 and r.floor is None and r.seeds == ()
               for r in rows)
    assert all(r.effect.unit == "minibatches" and r.effect.n == N_BATCHES for r in rows)
    assert all(r.baseline.unit == "minibatches" and r.baseline.n == N_BATCHES for r in rows)
    g = fake
    same = _binned_mean(g["zoo-mocov3"], g["zoo-cnn-mocov3"], 3)
    mixed = _binned_mean(g["dino"], g["mae"], 3)
    assert rows[0].effect.estimate == pytest.approx(same - mixed, abs=1e-9)
    assert rows[1].effect.estimate == pytest.approx(same - mixed, abs=1e-9)
    base = _binned_mean(g["zoo-mocov3"], g["random-cnn-a"], 3)
    assert rows[0].baseline.estimate == pytest.approx(same - base, abs=1e-9)
    assert rows[0].verdict == HOLDS and rows[0].effect.low > 0
    far_same = _binned_mean(g["mae"], g["convnextv2-fcmae"], 3, 0.4)
    far_mixed = _binned_mean(g["dino"], g["mae"], 3, 0.4)
    assert rows[2].effect.estimate == pytest.approx(far_same - far_mixed, abs=1e-9)
    assert rows[2].baseline.estimate == pytest.approx(far_same - _binned_mean(g["mae"], g["random-cnn-a"], 3, 0.4),
                                                      abs=1e-9)
    assert rows[2].effect.low <= rows[2].effect.estimate <= rows[2].effect.high
    # the default bins (5) and far distance (0.5), and no baseline when it is not loaded
    plain = _profile(same_objective=[["mae", "convnextv2-fcmae"]], different_objective=[["dino", "mae"]],
                     bins=None, far_distance=None)
    plain.raw["architecture"].pop("bins")
    plain.raw["architecture"].pop("far_distance")
    without = {k: v for k, v in g.items() if k != "random-cnn-a"}
    rows = A.judge_pairs(plain, without, {})
    far_row = next(r for r in rows if r.claim == "OM-2.1d")
    assert far_row.measure == "CKA over layer pairs at relative-depth distance >= 0.5"
    assert far_row.effect.estimate == pytest.approx(_binned_mean(g["mae"], g["convnextv2-fcmae"], 5, 0.5)
                                                    - _binned_mean(g["dino"], g["mae"], 5, 0.5), abs=1e-9)
    assert far_row.baseline is None and far_row.baseline_model is None


def test_judge_pairs_messages_when_pairs_or_weights_are_absent(fake):
    rows = A.judge_pairs(_profile(), {}, {"zoo-cnn-mocov3": "x", "zoo-mae": "y"})
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows] == [
        ("OM-2.1c", "joint-embedding ViT vs CNN minus joint-embedding vs reconstruction ViTs", CANNOT_CHECK,
         "weights absent for zoo-cnn-mocov3, zoo-mae"),
        ("OM-2.1d", "reconstruction ViT vs CNN minus joint-embedding vs reconstruction ViTs", CANNOT_CHECK,
         "the profile lists no reconstruction ViT-CNN pair with one objective or no joint-embedding/reconstruction "
         "ViT pair")]
    none_mixed = A.judge_pairs(_profile(different_objective=[["zoo-supervised", "zoo-mae"]]), fake, {})
    assert none_mixed[0].reason == ("the profile lists no joint-embedding ViT-CNN pair with one objective or no "
                                    "joint-embedding/reconstruction ViT pair")
    assert none_mixed[0].claim == "OM-2.1c" and none_mixed[1].claim == "OM-2.1d"
    # one same pair ready, one not: the pooled verdict uses the ready one, the other says what is absent
    profile = _profile(same_objective=[["zoo-mocov3", "zoo-cnn-mocov3"], ["zoo-dino", "dino"]],
                       different_objective=[["zoo-mocov3", "zoo-mae"]])
    grams = {k: v for k, v in fake.items() if k != "dino"}
    rows = A.judge_pairs(profile, grams, {"dino": "gone"})
    arch = [r for r in rows if r.claim == "OM-2.1c"]
    assert [r.subject for r in arch] == [
        "joint-embedding ViT vs CNN minus joint-embedding vs reconstruction ViTs",
        "zoo-mocov3 vs zoo-cnn-mocov3 minus zoo-mocov3 vs zoo-mae", "zoo-dino vs dino minus zoo-mocov3 vs zoo-mae"]
    assert arch[0].effect.estimate == pytest.approx(arch[1].effect.estimate, abs=1e-12)
    assert (arch[2].verdict, arch[2].reason) == (CANNOT_CHECK, "weights absent for dino")

"""sections.knn (TM 6.1, OM Fig. 12): the extraction wiring of ``pooled_features`` with the model, data and
extraction replaced, and the claim checks' exact subjects, measures, estimates and messages on hand-made per-query
tables (issue 17: fast tests that check values, not verdict words)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision import transforms as T

from vitscope.claims import CANNOT_CHECK, HOLDS
from vitscope.claims.verdict import paired_contrast
from vitscope.kernels.stats import seed_floor
from vitscope.profiles import Profile
from vitscope.sections import knn


# ---------------------------------------------------------------------------------------------------- extraction
class _Data:
    def __init__(self):
        self.steps = [lambda x: x, lambda x: x, lambda x: x, lambda x: x]     # Resize, CenterCrop, ToTensor, Normalize
        self.transform = T.Compose(list(self.steps))
        self.classes = ["a", "b", "c"]


class _DataProfile(Profile):
    def dataset(self, dataset, preprocess):
        data = _Data()
        self.raw["_opened"].append((dataset, preprocess, data))
        return data


def _fake_edges(monkeypatch):
    calls = {"device": []}
    cfg = type("Cfg", (), {"preprocess": "prep"})()
    gen = torch.Generator().manual_seed(0)
    n, L, D = 7, 3, 4
    truth = {"cls": torch.randn(n, L, D, generator=gen), "mean": torch.randn(n, L, D, generator=gen),
             "labels": torch.tensor([0, 0, 1, 1, 2, 2, 2])}
    order = torch.tensor([3, 6, 0, 5, 1, 4, 2])              # data-set index of each extracted image

    def load(model, weights, device):
        calls["load"] = (model, weights, device)
        return "net", cfg, {"id": model}

    def extract(net, ident, data, products, **kw):
        calls["extract"] = (net, ident, data, products, kw)
        return {"pooled": {"cls": truth["cls"][order], "mean": truth["mean"][order]},
                "_meta": {"order": order, "labels": truth["labels"][order]}}

    monkeypatch.setattr(knn, "resolve_device", lambda d: calls["device"].append(d) or f"dev({d})")
    monkeypatch.setattr(knn, "load_for_analysis", load)
    monkeypatch.setattr(knn, "extract", extract)
    monkeypatch.setattr(knn, "transform_key", lambda p: {"transform": p})
    monkeypatch.setattr(knn, "FeatureStore", lambda: "default store")
    return calls, truth


def test_pooled_features_returns_data_set_order_and_passes_the_extraction_its_inputs(monkeypatch):
    calls, truth = _fake_edges(monkeypatch)
    profile = _DataProfile("t", {"models": [], "device": "cpu", "_opened": []})
    out = knn.pooled_features("zoo-dino", profile, "imagenet50", weights="w.pt", store="st", progress=True)
    assert calls["device"] == ["cpu"] and calls["load"] == ("zoo-dino", "w.pt", "dev(cpu)")
    (name, prep, data), = profile.raw["_opened"]
    assert (name, prep) == ("imagenet50", "prep")
    net, ident, got_data, products, kw = calls["extract"]
    assert (net, ident, got_data) == ("net", {"id": "zoo-dino"}, data)
    assert list(products) == ["pooled"] and isinstance(products["pooled"], knn.PooledTokens)
    assert kw == {"transform_id": {"transform": "prep"}, "store": "st", "device": "dev(cpu)", "progress": True}
    assert data.transform.transforms == data.steps                       # no augmentation: the transform untouched
    assert set(out) == {"cls", "gap", "labels", "num_classes"} and out["num_classes"] == 3
    assert torch.equal(out["cls"], truth["cls"]) and torch.equal(out["gap"], truth["mean"])
    assert out["labels"].tolist() == [0, 0, 1, 1, 2, 2, 2]


def test_pooled_features_inserts_the_augmentation_before_normalisation_and_keys_it(monkeypatch):
    calls, truth = _fake_edges(monkeypatch)
    profile = _DataProfile("t", {"models": [], "device": "cuda", "_opened": []})

    def flip(x):
        return x
    knn.pooled_features("zoo-mae", profile, "d", augment=("hflip", flip), device="cpu")
    data = profile.raw["_opened"][0][2]
    assert data.transform.transforms == data.steps[:3] + [flip, data.steps[3]]
    kw = calls["extract"][4]
    assert kw == {"transform_id": {"transform": "prep", "augment": "hflip"}, "store": "default store",
                  "device": "dev(cpu)", "progress": False}
    assert calls["device"] == ["cpu"] and calls["load"] == ("zoo-mae", None, "dev(cpu)")


def test_compute_and_per_query_pass_device_store_and_progress(monkeypatch):
    seen = []
    labels = torch.arange(3).repeat_interleave(10)
    gen = torch.Generator().manual_seed(2)
    feats = {"cls": torch.randn(30, 1, 3, generator=gen), "gap": torch.randn(30, 1, 3, generator=gen), "labels": labels,
             "num_classes": 3}

    def fake(model, profile, dataset, **kw):
        seen.append((model, dataset, kw))
        return feats
    monkeypatch.setattr(knn, "pooled_features", fake)
    profile = Profile("t", {"models": [], "knn": {"dataset": "dd", "folds": 2, "ks": [4, 7], "k": 7,
                                                  "temperature": 0.5}})
    table = knn.compute("zoo-dino", profile, weights="w", device="dev", store="st", progress=True)
    assert seen == [("zoo-dino", "dd", {"weights": "w", "device": "dev", "store": "st", "progress": True})]
    folds = knn.fold_assignment(labels, 2)
    noise = knn.noise_accuracy(labels, folds, 3, (4, 7), 3, 0.5)
    assert noise != knn.noise_accuracy(labels, folds, 3, (4, 7), 3)          # the profile's temperature matters
    assert table.noise.tolist() == [noise[4], noise[7], noise[4], noise[7]]
    for row in table.itertuples():
        pred = knn.cross_validated(feats[row.pooling][:, 0], labels, folds, (row.k,), 3, 0.5)[row.k]
        assert row.accuracy == float((pred == labels).double().mean())
    assert table.chance.tolist() == [1 / 3] * 4 and table.n_queries.tolist() == [30] * 4
    seen.clear()
    q = knn.per_query("zoo-dino", profile, device="dev", store="st", progress=True)
    assert seen[0][2] == {"weights": None, "device": "dev", "store": "st", "progress": True}
    assert len(q) == 2 * 30                                               # the reported k only: cls and gap
    pred = knn.cross_validated(feats["cls"][:, 0], labels, folds, (7,), 3, 0.5)[7]
    assert q[q.pooling == "cls"].correct.tolist() == (pred == labels).double().tolist()


def test_noise_accuracy_uses_its_seed_and_temperature():
    labels = torch.arange(3).repeat_interleave(10)
    folds = knn.fold_assignment(labels, 5)
    from vitscope.kernels.clustering import noise_features
    noise = noise_features(30, 8, seed=4)
    pred = knn.cross_validated(noise, labels, folds, (5,), 3, 0.5)[5]
    assert knn.noise_accuracy(labels, folds, 8, (5,), 3, temperature=0.5, seed=4) == {
        5: float((pred == labels).double().mean())}
    default = knn.cross_validated(noise_features(30, 8, seed=0), labels, folds, (5,), 3, 0.07)[5]
    assert knn.noise_accuracy(labels, folds, 8, (5,), 3)[5] == float((default == labels).double().mean())


# ---------------------------------------------------------------------------------------------------- claims
N = 40


def _table(planted: dict, seed=0) -> pd.DataFrame:
    """Per-query rows (images shuffled) with exact accuracies ``{(model, pooling): [per block]}``."""
    rng = np.random.default_rng(seed)
    frames = []
    for (model, pooling), per_block in planted.items():
        for block, a in enumerate(per_block, 1):
            correct = rng.permutation((np.arange(N) < round(a * N)).astype(float))
            order = rng.permutation(N)
            frames.append(pd.DataFrame({"model": model, "pooling": pooling, "block": block, "image": order,
                                        "correct": correct[order]}))
    return pd.concat(frames, ignore_index=True)


def _col(table, model, pooling, block) -> torch.Tensor:
    sel = table[(table.model == model) & (table.pooling == pooling) & (table.block == block)].sort_values("image")
    return torch.tensor(sel.correct.to_numpy(), dtype=torch.float64)


TM = {("zoo-supervised", "cls"): [0.3, 0.5, 0.9], ("zoo-dino", "cls"): [0.2, 0.6, 0.5],
      ("zoo-mae", "cls"): [0.1, 0.3, 0.4], ("zoo-beit", "cls"): [0.1, 0.2, 0.15],
      ("random-a", "cls"): [0.05, 0.1, 0.05], ("random-b", "cls"): [0.1, 0.05, 0.075]}


def test_tm_check_subjects_measures_estimates_and_seed_floors():
    table = _table(TM)
    rows = knn.tm_check(table, ["random-a", "random-b"])
    assert [(r.claim, r.subject) for r in rows] == [
        ("TM-6.1a", "supervised minus the other trained models"), ("TM-6.1a", "zoo-mae minus zoo-beit"),
        ("TM-6.1a", "zoo-mae above chance"), ("TM-6.1a", "zoo-beit above chance"),
        ("TM-T1a", "k-NN, zoo-supervised"), ("TM-T1a", "k-NN, zoo-dino"), ("TM-T1a", "k-NN, zoo-mae"),
        ("TM-T1a", "k-NN, zoo-beit")]
    m = "last-block k-NN accuracy (CLS)"
    assert [r.measure for r in rows] == [m, m, f"{m} minus `random-a`'s", f"{m} minus `random-a`'s",
                                         "last block minus its best earlier block (2)",
                                         "last block minus its best earlier block (2)",
                                         "last block minus its best earlier block (2)",
                                         "last block minus its best earlier block (2)"]
    assert all(r.baseline_model == "random-a" and r.expected == 1 and r.seeds == ("random-a", "random-b")
               and r.effect.unit == "images" and r.effect.n == N for r in rows)
    sup = rows[0]
    assert sup.effect.estimate == pytest.approx(0.9 - (0.5 + 0.4 + 0.15) / 3, abs=1e-12)
    assert sup.baseline.estimate == pytest.approx(0.9 - 0.05, abs=1e-12)
    last = {mm: _col(table, mm, "cls", 3) for mm in ("zoo-supervised", "zoo-dino", "zoo-mae", "zoo-beit", "random-a")}
    ref = paired_contrast(last, {"zoo-supervised": 1.0, "zoo-dino": -1 / 3, "zoo-mae": -1 / 3, "zoo-beit": -1 / 3})
    assert (sup.effect.low, sup.effect.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    seed_means = torch.tensor([0.05, 0.075], dtype=torch.float64)
    assert sup.floor == pytest.approx(seed_floor(seed_means, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3],
                                                                          dtype=torch.float64)), abs=1e-12)
    assert sup.baseline_floor == pytest.approx(seed_floor(seed_means, torch.tensor([1.0, -1.0], dtype=torch.float64)),
                                               abs=1e-12)
    pair = rows[1]
    assert pair.effect.estimate == pytest.approx(0.4 - 0.15, abs=1e-12)
    assert pair.baseline.estimate == pytest.approx(0.4 - 0.05, abs=1e-12)
    assert rows[2].effect.estimate == pytest.approx(0.4 - 0.05) and rows[2].baseline.estimate == pytest.approx(0.35)
    assert rows[3].effect.estimate == pytest.approx(0.15 - 0.05, abs=1e-12)
    depth = rows[4:]
    assert [r.effect.estimate for r in depth] == pytest.approx([0.9 - 0.5, 0.5 - 0.6, 0.4 - 0.3, 0.15 - 0.2],
                                                               abs=1e-12)
    # beyond: minus the untrained model's own last-minus-best-earlier (random-a: 0.05 - 0.1)
    assert [r.baseline.estimate for r in depth] == pytest.approx([0.45, -0.05, 0.15, 0.0], abs=1e-12)
    assert sup.verdict == HOLDS


def test_tm_check_without_seeds_or_baseline_says_why():
    table = _table({k: v for k, v in TM.items() if k[0] not in ("random-a", "random-b")})
    rows = knn.tm_check(table)
    by = {(r.claim, r.subject): r for r in rows}
    assert by[("TM-6.1a", "zoo-mae")].reason == ("no untrained baseline of the same architecture in "
                                                              "this profile")
    assert by[("TM-6.1a", "zoo-beit")].verdict == CANNOT_CHECK
    assert by[("TM-6.1a", "zoo-mae minus zoo-beit")].baseline is None
    assert all(r.floor is None and r.seeds == () for r in rows)
    lone = knn.tm_check(_table({("zoo-dino", "cls"): [0.2, 0.3], ("random-a", "cls"): [0.1, 0.1]}))
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in lone[:1]] == [
        ("TM-6.1a", "supervised minus the other models", CANNOT_CHECK,
         "the profile lacks a supervised model or any other trained model")]
    assert [r.subject for r in lone] == ["supervised minus the other models", "k-NN, zoo-dino"]
    only_sup = knn.tm_check(_table({("zoo-supervised", "cls"): [0.2, 0.3]}))
    assert only_sup[0].verdict == CANNOT_CHECK and only_sup[0].claim == "TM-6.1a"


OM = {("zoo-dino", "cls"): [0.1, 0.5, 0.5, 0.6, 0.7, 0.8], ("zoo-mocov3", "cls"): [0.1, 0.4, 0.5, 0.6, 0.6, 0.7],
      ("zoo-mae", "cls"): [0.1, 0.2, 0.2, 0.2, 0.2, 0.25], ("zoo-beit", "cls"): [0.1, 0.1, 0.1, 0.1, 0.1, 0.15],
      ("random-a", "cls"): [0.05] * 6, ("random-b", "cls"): [0.1] * 6,
      ("zoo-mae", "gap"): [0.3] * 5 + [0.5], ("zoo-beit", "gap"): [0.3] * 5 + [0.2],
      ("random-a", "gap"): [0.1] * 5 + [0.125], ("zoo-dino", "gap"): [0.3] * 6, ("zoo-mocov3", "gap"): [0.3] * 6,
      ("random-b", "gap"): [0.1] * 6}


def test_om_check_blocks_subjects_measures_and_estimates():
    table = _table(OM)
    rows = knn.om_check(table, ["random-a", "random-b"])
    assert [(r.claim, r.subject) for r in rows] == [
        ("OM-2.1e", "joint-embedding minus reconstruction, last block"),
        ("OM-2.1e", "joint-embedding minus reconstruction, block 2 of 6"),      # round(6 / 4) = 2
        ("OM-2.1e", "zoo-mae: GAP minus CLS"), ("OM-2.1e", "zoo-beit: GAP minus CLS"),
        ("OM-2.1e", "last CLS k-NN vs linear probe")]
    measure = "k-NN accuracy (CLS; zoo-dino, zoo-mocov3 minus zoo-mae, zoo-beit)"
    assert [r.measure for r in rows[:4]] == [measure, measure, "last-block k-NN accuracy", "last-block k-NN accuracy"]
    assert rows[0].effect.estimate == pytest.approx((0.8 + 0.7) / 2 - (0.25 + 0.15) / 2, abs=1e-12)
    assert rows[0].baseline.estimate == pytest.approx(0.75 - 0.05, abs=1e-12)
    assert rows[1].effect.estimate == pytest.approx((0.5 + 0.4) / 2 - (0.2 + 0.1) / 2, abs=1e-12)
    assert rows[1].baseline.estimate == pytest.approx(0.45 - 0.05, abs=1e-12)
    assert rows[0].seeds == ("random-a", "random-b") and rows[0].baseline_model == "random-a"
    seeds_last = torch.tensor([0.05, 0.1], dtype=torch.float64)
    assert rows[0].floor == pytest.approx(seed_floor(seeds_last, torch.tensor([0.5, 0.5, -0.5, -0.5],
                                                                              dtype=torch.float64)), abs=1e-12)
    gap = rows[2]
    assert gap.effect.estimate == pytest.approx(0.5 - 0.25, abs=1e-12)
    assert gap.baseline.estimate == pytest.approx((0.5 - 0.25) - (0.125 - 0.05), abs=1e-12)
    assert (gap.floor, gap.seeds, gap.baseline_model, gap.expected) == (None, (), "random-a", 1)
    assert rows[3].effect.estimate == pytest.approx(0.2 - 0.15, abs=1e-12)
    assert (rows[4].verdict, rows[4].reason) == (CANNOT_CHECK, "the linear probe is on the probes page")
    assert rows[0].verdict == HOLDS


def test_om_check_early_block_and_missing_groups():
    four = _table({("zoo-dino", "cls"): [0.1, 0.2, 0.3, 0.4], ("zoo-supervised", "cls"): [0.1] * 4,
                   ("zoo-dino", "gap"): [0.1] * 4, ("zoo-supervised", "gap"): [0.1] * 4})
    rows = knn.om_check(four)
    assert [(r.subject, r.verdict, r.reason) for r in rows] == [
        ("joint-embedding minus reconstruction, last block", CANNOT_CHECK,
         "the profile lacks a joint-embedding or a reconstruction model"),
        ("joint-embedding minus reconstruction, block 1 of 4", CANNOT_CHECK,
         "the profile lacks a joint-embedding or a reconstruction model"),
        ("last CLS k-NN vs linear probe", CANNOT_CHECK, "the linear probe is on the probes page")]
    ten = {(m, p): [0.5] * 10 for m in ("zoo-dino", "zoo-mae") for p in ("cls", "gap")}
    ten[("zoo-dino", "cls")] = [0.1 * i for i in range(1, 11)]
    rows = knn.om_check(_table(ten))
    assert rows[1].subject == "joint-embedding minus reconstruction, block 2 of 10"          # round(2.5) = 2
    assert rows[1].effect.estimate == pytest.approx(0.2 - 0.5, abs=1e-12)
    assert rows[1].baseline is None and rows[2].baseline is None and rows[2].baseline_model is None
    one = _table({(m, p): [0.5] for m in ("zoo-dino", "zoo-mae") for p in ("cls", "gap")})
    assert knn.om_check(one)[1].subject == "joint-embedding minus reconstruction, block 1 of 1"   # at least block 1

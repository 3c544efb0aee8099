"""TM 5.2 / 5.3 purity sections: the clustering wiring (k, blocks, token readouts, seeds, caching), the noise
reference, the per-image indicators and the claim plumbing, on planted features. Extraction (``_pooled``,
``region_features``) is replaced by hand-made tensors; k-means runs on a few dozen points."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from fake_tables import indicators
from vitscope.claims.verdict import CONFIDENCE, N_RESAMPLES, SEED
from vitscope.extract import FeatureStore
from vitscope.kernels import clustering as clustering_k
from vitscope.kernels.stats import bootstrap_contrast
from vitscope.profiles import Profile
from vitscope.sections import purity, region_purity

N_CLASSES, PER_CLASS, DIM = 3, 8, 4
LABELS = torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)          # 24 images


def _planted(seed=0, blocks=3):
    """``{"cls", "mean"}``: float32 [24, blocks, DIM]; CLS separates the classes at the last block only, the mean
    readout at block 1 only (so a swapped readout or block shows)."""
    gen = torch.Generator().manual_seed(seed)
    centres = 10 * torch.eye(N_CLASSES, DIM)[LABELS]
    cls = torch.randn(len(LABELS), blocks, DIM, generator=gen)
    mean = torch.randn(len(LABELS), blocks, DIM, generator=gen)
    cls[:, -1] += centres
    mean[:, 0] += centres
    return {"cls": cls, "mean": mean}


def _profile(**spec) -> Profile:
    return Profile("t", {"models": ["zoo-dino"], "purity": {"dataset": "d", "n_init": 2, "max_iter": 50, **spec}})


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty in-process memo and a feature store under tmp_path (also for the store a function opens itself)."""
    monkeypatch.setattr(purity, "_MEMO", {})
    monkeypatch.setattr(purity, "FeatureStore", lambda root=None: FeatureStore(tmp_path))
    monkeypatch.setattr(region_purity, "FeatureStore", lambda root=None: FeatureStore(tmp_path))
    return FeatureStore(tmp_path)


def _fake_pooled(monkeypatch, pooled, calls):
    def fake(model, profile, weights, device, store, progress):
        calls.append(model)
        return pooled, LABELS, N_CLASSES
    monkeypatch.setattr(purity, "_pooled", fake)


# ------------------------------------------------------------------------------------------------ purity (5.2)
def test_cluster_model_clusters_every_block_of_both_readouts_once(monkeypatch, fresh):
    pooled, calls = _planted(), []
    _fake_pooled(monkeypatch, pooled, calls)
    profile = _profile()
    km = purity.settings(profile)
    c = purity.cluster_model("zoo-dino", profile, store=fresh)
    assert (c["k"], c["dim"], c["n_images"]) == (N_CLASSES, DIM, 24) and torch.equal(c["labels"], LABELS)
    assert set(c["assignments"]) == {"cls", "mean"}
    for t in ("cls", "mean"):
        assert c["assignments"][t].shape == (3, 24)
        for b in range(3):
            assert torch.equal(c["assignments"][t][b], clustering_k.kmeans(pooled[t][:, b], N_CLASSES, km))
    assert clustering_k.purity(LABELS, c["assignments"]["cls"][-1]) == 1.0       # planted: last block separates
    assert clustering_k.purity(LABELS, c["assignments"]["mean"][0]) == 1.0
    assert purity.cluster_model("zoo-dino", profile, store=fresh) is c and calls == ["zoo-dino"]   # memo
    two = purity.cluster_model("zoo-dino", _profile(k=2), store=fresh)                              # k from the spec
    assert two["k"] == 2 and int(two["assignments"]["cls"].max()) == 1 and calls == ["zoo-dino"] * 2


def test_kmeans_blocks_are_cached_by_features_and_settings(fresh):
    x = _planted()["cls"]
    km = clustering_k.KMeansSettings(n_init=2, max_iter=50)
    a = purity._kmeans_blocks("zoo-dino", x, 3, km, fresh)
    assert torch.equal(a, torch.stack([clustering_k.kmeans(x[:, b], 3, km) for b in range(3)]))
    key = {"features": purity.tensor_digest(x), "k": 3, "settings": km.record(), "version": 1}
    assert torch.equal(fresh.get("zoo-dino", "kmeans", key)["assignments"], a)
    assert int(purity._kmeans_blocks("zoo-dino", x, 2, km, fresh).max()) == 1     # another k: another entry


def test_noise_assignment_is_kmeans_on_the_profiles_noise(fresh):
    labels = torch.zeros(30, dtype=torch.int64)
    profile = _profile(noise="uniform")
    km = purity.settings(profile)
    got = purity.noise_assignment(labels, 4, 5, profile)
    want = clustering_k.kmeans(clustering_k.noise_features(30, 5, 0, "uniform"), 4, km)
    assert torch.equal(got, want)
    gauss = purity.noise_assignment(labels, 4, 5, _profile())
    assert torch.equal(gauss, clustering_k.kmeans(clustering_k.noise_features(30, 5, 0, "gaussian"), 4, km))
    assert not torch.equal(got, gauss)
    key = {"n": 30, "dim": 5, "k": 4, "distribution": "uniform", "settings": km.record(), "version": 1}
    assert torch.equal(fresh.get("noise", "kmeans", key)["assignment"], got)    # on disk under the noise model
    assert purity.noise_assignment(labels, 4, 5, profile) is got                 # and in the memo


def test_score_rows_values():
    labels, assignment = torch.tensor([0, 0, 1, 1, 1, 2]), torch.tensor([0, 0, 0, 1, 1, 1])
    row = purity.score_rows("m", "cls", 2, labels, assignment, 2)
    per = clustering_k.purity_per_example(labels, assignment)                   # [1, 1, 0, 1, 1, 0]
    ref = bootstrap_contrast(per[None], torch.ones(1), n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
    assert row == {"model": "m", "tokens": "cls", "block": 2, "purity": pytest.approx(4 / 6),
                   "nmi": clustering_k.nmi(labels, assignment), "ari": clustering_k.ari(labels, assignment),
                   "purity_low": ref["low"], "purity_high": ref["high"], "k": 2, "n_images": 6}
    assert row["purity_low"] < 4 / 6 < row["purity_high"]


def _clustered(assign_cls, assign_mean, labels=LABELS, dim=DIM):
    return {"labels": labels, "k": N_CLASSES, "dim": dim, "n_images": len(labels),
            "assignments": {"cls": assign_cls, "mean": assign_mean}}


def test_compute_rows_and_one_noise_row_per_width(monkeypatch):
    perfect, lumped = LABELS.clone(), torch.zeros(24, dtype=torch.int64)
    fake = {"zoo-dino": _clustered(torch.stack([lumped, perfect]), torch.stack([perfect, lumped])),
            "zoo-mae": {**_clustered(torch.stack([perfect, perfect]), torch.stack([lumped, lumped])), "k": 2},
            "zoo-wide": _clustered(torch.stack([lumped, lumped]), torch.stack([lumped, lumped]), dim=8)}
    seen = []
    monkeypatch.setattr(purity, "cluster_model", lambda m, profile, **kw: seen.append((m, kw["weights"])) or fake[m])
    monkeypatch.setattr(purity, "noise_assignment", lambda labels, k, dim, profile: (LABELS + dim) % 3)
    table = purity.compute(["zoo-dino", "zoo-mae", "zoo-wide"], _profile(), weights={"zoo-mae": "w.pt"})
    assert seen == [("zoo-dino", None), ("zoo-mae", "w.pt"), ("zoo-wide", None)]
    models = table[table.model != "noise"]
    assert list(zip(models.model, models.tokens, models.block, models.purity)) == [
        ("zoo-dino", "cls", 1, 1 / 3), ("zoo-dino", "cls", 2, 1.0), ("zoo-dino", "mean", 1, 1.0),
        ("zoo-dino", "mean", 2, 1 / 3), ("zoo-mae", "cls", 1, 1.0), ("zoo-mae", "cls", 2, 1.0),
        ("zoo-mae", "mean", 1, 1 / 3), ("zoo-mae", "mean", 2, 1 / 3), ("zoo-wide", "cls", 1, 1 / 3),
        ("zoo-wide", "cls", 2, 1 / 3), ("zoo-wide", "mean", 1, 1 / 3), ("zoo-wide", "mean", 2, 1 / 3)]
    noise = table[table.model == "noise"]
    assert list(noise.dim) == [DIM, 8] and list(noise.tokens) == ["noise"] * 2 and noise.block.isna().all()
    assert list(noise.purity) == [1.0, 1.0]                                    # relabelled classes: still pure
    assert list(noise.k) == [3, 3]            # the first model of each width (zoo-dino, not zoo-mae's k = 2)
    assert purity.compute("zoo-mae", _profile()).model.tolist()[:4] == ["zoo-mae"] * 4   # a single name


def test_seed_spread_reclusters_the_last_block_per_seed(monkeypatch, fresh):
    pooled, calls = _planted(), []
    pooled["mean"][:, -1] = torch.randn(24, DIM, generator=torch.Generator().manual_seed(3))  # no class signal
    _fake_pooled(monkeypatch, pooled, calls)
    profile = _profile()
    table = purity.seed_spread("zoo-dino", profile, seeds=(0, 5), tokens="mean", store=fresh)
    assert list(table.columns) == ["model", "tokens", "seed", "purity"]
    assert list(table.model) == ["zoo-dino"] * 2 and list(table.tokens) == ["mean"] * 2 and list(table.seed) == [0, 5]
    for s, p in zip(table.seed, table.purity):
        km = dataclasses.replace(purity.settings(profile), seed=int(s))
        assert p == clustering_k.purity(LABELS, clustering_k.kmeans(pooled["mean"][:, -1], N_CLASSES, km))
    assert table.purity.max() < 1.0
    cls = purity.seed_spread("zoo-dino", _profile(k=2), seeds=(1,), store=fresh)     # default tokens: CLS, k of spec
    assert cls.purity.tolist() == [pytest.approx(16 / 24)]                           # 2 clusters, 3 separated classes


def test_correct_per_image_stacks_indicators_and_refuses_other_images(monkeypatch):
    a = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]])
    labels = torch.tensor([0, 0, 1, 1])
    fake = {"m1": {**_clustered(a, a, labels), "k": 2, "dim": 7},
            "m2": {**_clustered(a, a.flip(0), labels), "k": 2, "dim": 7},
            "m3": _clustered(a, a, torch.tensor([0, 1, 1, 1]))}
    monkeypatch.setattr(purity, "cluster_model", lambda m, profile, **kw: fake[m])
    noise_args = []
    monkeypatch.setattr(purity, "noise_assignment",
                        lambda lab, k, dim, profile: noise_args.append((lab.tolist(), k, dim)) or torch.tensor(
                            [0, 1, 1, 1]))
    out, noise = purity.correct_per_image(["m1", "m2"], _profile(), "mean")
    assert list(out) == ["m1", "m2"]
    assert out["m1"].tolist() == [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]] and out["m1"].dtype == torch.float64
    assert out["m2"].tolist() == [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]   # the mean readout; ties: class 0
    assert noise.tolist() == [1.0, 0.0, 1.0, 1.0] and noise_args == [([0, 0, 1, 1], 2, 7)]
    with pytest.raises(ValueError) as err:
        purity.correct_per_image(["m1", "m3"], _profile())
    assert str(err.value) == ("'m3' was scored on other images or labels than 'm1'; the paired bootstrap needs the "
                              "same images for every model (extract them on the same profile)")


def test_check_claims_adds_the_seeds_and_judges_both_checks(monkeypatch):
    rates = {"zoo-supervised": [0.3, 0.5, 0.9], "zoo-dino": [0.3, 0.5, 0.7], "zoo-mae": [0.2, 0.3, 0.4],
             "random-a": [0.2, 0.2, 0.2], "random-b": [0.21, 0.2, 0.2]}
    correct, noise = indicators(rates), indicators({"n": [0.1]})["n"][0]
    seen = {}

    def fake(models, profile, tokens, **kw):
        seen.update(models=models, tokens=tokens, weights=kw["weights"])
        return correct, noise

    monkeypatch.setattr(purity, "correct_per_image", fake)
    profile = Profile("t", {"models": ["zoo-dino"], "baselines": ["random-a", "random-b"],
                            "purity": {"models": ["zoo-supervised", "zoo-dino", "zoo-mae", "random-a"]}})
    got = purity.check_claims(None, profile, weights={"zoo-mae": "w"})
    assert seen == {"models": ["zoo-supervised", "zoo-dino", "zoo-mae", "random-a", "random-b"], "tokens": "cls",
                    "weights": {"zoo-mae": "w"}}
    seeds = ["random-a", "random-b"]
    assert got == purity.depth_check(correct, seeds) + purity.order_check(correct, noise, seeds)
    assert {r.claim for r in got} == {"TM-5.2a", "TM-5.2b"} and all(r.seeds == tuple(seeds) for r in got
                                                                     if r.verdict != "cannot be checked")


def test_layer_table_pivots_blocks_and_drops_noise():
    t = pd.DataFrame({"model": ["a", "a", "b", "b", "noise"], "tokens": ["cls", "cls", "cls", "mean", "noise"],
                      "block": [1.0, 2.0, 1.0, 1.0, float("nan")], "purity": [0.1, 0.2, 0.3, 0.4, 0.9],
                      "nmi": [0.5, 0.6, 0.7, 0.8, 0.0]})
    wide = purity.layer_table(t)
    assert list(wide.index) == [1, 2] and wide.index.dtype == "int64"
    assert list(wide.columns) == [("cls", "a"), ("cls", "b"), ("mean", "b")]
    assert wide[("cls", "a")].tolist() == [0.1, 0.2] and wide.loc[1, ("mean", "b")] == 0.4
    assert purity.layer_table(t, "nmi").loc[2, ("cls", "a")] == 0.6


# ------------------------------------------------------------------------------------------ region purity (5.3)
def test_correct_per_region_keys_by_dataset_and_level_and_refuses_other_regions(monkeypatch):
    a, labels = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]]), torch.tensor([0, 0, 1, 1])
    fake = {"m1": [{"dataset": "pin", "level": "part", "labels": labels, "assignments": a},
                   {"dataset": "pin", "level": "object", "labels": labels, "assignments": a.flip(0)}],
            "m2": [{"dataset": "pin", "level": "part", "labels": labels, "assignments": a.flip(0)}],
            "m3": [{"dataset": "pin", "level": "part", "labels": torch.tensor([1, 0, 1, 1]), "assignments": a}]}
    monkeypatch.setattr(region_purity, "cluster_model", lambda m, profile, **kw: fake[m])
    out = region_purity.correct_per_region(["m1", "m2"], None)
    assert list(out) == [("pin", "part"), ("pin", "object")] and list(out[("pin", "part")]) == ["m1", "m2"]
    assert out[("pin", "part")]["m1"].tolist() == [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]   # ties: class 0
    assert out[("pin", "part")]["m2"].tolist() == [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    assert out[("pin", "object")]["m1"].tolist() == out[("pin", "part")]["m2"].tolist()
    with pytest.raises(ValueError) as err:
        region_purity.correct_per_region(["m1", "m3"], None)
    assert str(err.value) == ("'m3' pooled other regions than 'm1' on ('pin', 'part'); the paired bootstrap needs "
                              "the same regions for every model (same patch and input size)")


def test_region_check_claims_judges_objects_parts_and_peaks(monkeypatch):
    rates = {"zoo-supervised": [0.5, 0.9, 0.8], "zoo-dino": [0.4, 0.7, 0.6], "zoo-mae": [0.3, 0.4, 0.3],
             "random-a": [0.2, 0.2, 0.2], "random-b": [0.21, 0.2, 0.2]}
    objects, parts = indicators(rates, seed=1), indicators(rates, seed=2)
    seen = {}

    def fake(models, profile, **kw):
        seen["models"] = models
        keep = lambda table: {m: table[m] for m in models}        # noqa: E731  (the models asked for)
        return {("coco", "object"): keep(objects), ("pin", "part"): keep(parts), ("pin", "object"): keep(parts)}

    monkeypatch.setattr(region_purity, "correct_per_region", fake)
    family = {"zoo-supervised": "supervised", "zoo-dino": "self-distillation", "zoo-mae": "masked-reconstruction",
              "random-a": "random", "random-b": "random"}
    seeds = ["random-a", "random-b"]
    spec = {"parts_dataset": "pin", "objects_dataset": "coco", "models": ["zoo-supervised", "zoo-dino", "zoo-mae"]}
    profile = Profile("t", {"models": ["zoo-dino"], "baselines": seeds, "region_purity": spec})
    got = region_purity.check_claims(None, profile)
    assert seen["models"] == ["zoo-supervised", "zoo-dino", "zoo-mae", "random-a", "random-b"]
    assert got == (region_purity.order_check(objects, "object", family, seeds)
                   + region_purity.order_check(parts, "part", family, seeds)
                   + region_purity.peak_check(objects, "object", family, seeds)
                   + region_purity.peak_check(parts, "part", family, seeds))
    # no objects dataset: PartImageNet's objects; no parts dataset: the part claim cannot be checked
    only_objects = Profile("t", {"models": ["zoo-dino"], "region_purity": {"objects_dataset": "coco"}})
    got = region_purity.check_claims(["zoo-supervised", "zoo-dino", "zoo-mae", "random-a"], only_objects)
    part = [r for r in got if r.claim == "TM-5.3b"]
    assert [(r.verdict, r.subject, r.reason) for r in part] == [
        ("cannot be checked", "parts", "the profile names no part-level dataset")]
    pin_only = Profile("t", {"models": ["zoo-dino"], "region_purity": {"parts_dataset": "pin"}})
    monkeypatch.setattr(region_purity, "correct_per_region",
                        lambda models, profile, **kw: {("pin", "part"): {m: parts[m] for m in models}})
    got = region_purity.check_claims(["zoo-supervised", "zoo-dino", "zoo-mae", "random-a"], pin_only)
    assert [(r.verdict, r.subject, r.reason) for r in got if r.claim == "TM-5.3a"] == [
        ("cannot be checked", "objects", "the profile names no object-level dataset")]

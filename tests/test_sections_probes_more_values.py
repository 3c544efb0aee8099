"""Exact values of vitscope.sections.probes with the expensive edges replaced (issue 17): one model's grids with the
probe training faked (what each grid is trained on, how its best cells are chosen), compute's wiring with the
extraction faked, the extraction call itself, and OM 2.2's claims with exact intervals, texts and reasons."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims.verdict import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.data import transform_key
from vitscope.extract import PooledTokens
from vitscope.kernels import probes as probes_k
from vitscope.models import get_cfg
from vitscope.profiles import Profile
from vitscope.sections import probes

CLEAR = "the 95 % interval clears 0"
NO_BASE = "no untrained baseline of the same architecture in this profile"
SUBJECT = "joint-embedding vs reconstruction"


# ---------------------------------------------------------------- one model's grids, training faked
SPEC = {"test_fraction": 0.25, "lrs": (0.1, 0.2, 0.4), "weight_decays": (0.0,), "epochs": (3,), "warmup_epochs": (1,),
        "optimizer": "adamw", "batch_size": 4, "depths": (2,), "best_k": 2, "seed": 7}
#: Per fit (linear, non-linear depth 2, multi-layer), the cells' correctness on the 2 test images: [C, M] / [G*C, M].
CORRECT = [torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.bool),
           torch.tensor([[0, 0], [0, 1], [1, 1]], dtype=torch.bool),
           torch.tensor([[1, 1], [0, 0], [0, 1], [0, 0], [1, 0], [0, 0]], dtype=torch.bool)]


class _Fits:
    """A stand-in for probes_k.fit_probe_grid: records every call and returns CORRECT in order."""

    def __init__(self):
        self.fits, self.tests = [], []

    def __call__(self, train_x, train_y, configs, depth=0, **kw):
        self.fits.append((train_x.clone(), train_y.clone(), list(configs), depth, kw))
        answer = CORRECT[len(self.fits) - 1]
        tests = self.tests

        class Fit:
            def correct(self, x, y):
                tests.append((x.clone(), y.clone()))
                return answer
        return Fit()


def _cls_labels():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    cls = torch.arange(8 * 3 * 2, dtype=torch.float64).reshape(8, 3, 2)        # [N=8, L=3, D=2]
    return cls, labels


def test_probe_model_trains_each_grid_on_its_features_and_keeps_the_best_cells(monkeypatch):
    fits = _Fits()
    monkeypatch.setattr(probes_k, "fit_probe_grid", fits)
    cls, labels = _cls_labels()
    table, correct = probes.probe_model(cls, labels, SPEC)
    train, test = [0, 1, 2, 4, 5, 6], [3, 7]                  # the last quarter of each class
    configs = probes_k.probe_grid((0.1, 0.2, 0.4), (0.0,), (3,), (1,))
    kw = {"optimizer": "adamw", "batch_size": 4, "seed": 7, "num_classes": 2}
    assert [(f[2], f[3], f[4]) for f in fits.fits] == [(configs, 0, kw), (configs, 2, kw), (configs, 0, kw)]
    x = cls.float()
    final = x[:, -1]
    torch.testing.assert_close(fits.fits[0][0], final[train], rtol=0, atol=0)
    torch.testing.assert_close(fits.fits[1][0], final[train], rtol=0, atol=0)
    multi = torch.stack([torch.cat([final[train], x[train, i]], 1) for i in (0, 1)])      # [2, 6, 4]
    torch.testing.assert_close(fits.fits[2][0], multi, rtol=0, atol=0)
    for f in fits.fits:
        assert f[1].tolist() == labels[train].tolist()
    assert len(fits.tests) == 3 and all(y.tolist() == [0, 1] for _, y in fits.tests)
    torch.testing.assert_close(fits.tests[0][0], final[test], rtol=0, atol=0)
    torch.testing.assert_close(fits.tests[1][0], final[test], rtol=0, atol=0)
    torch.testing.assert_close(fits.tests[2][0], torch.stack([torch.cat([final[test], x[test, i]], 1) for i in (0, 1)]),
                               rtol=0, atol=0)
    # accuracies per cell; the best two (ties: the earlier cell) averaged per test image
    acc = {("linear", 0, 0): [0.5, 1.0, 0.0], ("non-linear", 2, 0): [0.0, 0.5, 1.0],
           ("multi-layer", 0, 1): [1.0, 0.0, 0.5], ("multi-layer", 0, 2): [0.0, 0.5, 0.0]}
    expected_rows = [{"probe": p, "depth": d, "layer": layer, "lr": lr, "weight_decay": 0.0, "epochs": 3,
                      "warmup_epochs": 1, "accuracy": a}
                     for (p, d, layer), accs in acc.items() for lr, a in zip((0.1, 0.2, 0.4), accs)]
    pd.testing.assert_frame_equal(table, pd.DataFrame(expected_rows))
    assert list(correct) == list(acc)
    assert {k: v.tolist() for k, v in correct.items()} == {
        ("linear", 0, 0): [1.0, 0.5], ("non-linear", 2, 0): [0.5, 1.0], ("multi-layer", 0, 1): [0.5, 1.0],
        ("multi-layer", 0, 2): [0.5, 0.0]}
    assert all(v.dtype == torch.float64 for v in correct.values())


def test_probe_model_sizes_the_classes_from_the_largest_label(monkeypatch):
    fits = _Fits()
    monkeypatch.setattr(probes_k, "fit_probe_grid", fits)
    cls, _ = _cls_labels()
    labels = torch.tensor([1, 1, 1, 1, 3, 3, 3, 3])            # classes 0 and 2 absent: the head still has 4 outputs
    probes.probe_model(cls, labels, {**SPEC, "depths": ()})
    assert [f[4]["num_classes"] for f in fits.fits] == [4, 4]


def test_split_messages():
    with pytest.raises(ValueError) as err:
        probes.split(torch.tensor([0, 0, 1, 1]), 0.0)
    assert str(err.value) == "test_fraction must lie in (0, 1); got 0.0"
    with pytest.raises(ValueError) as err:
        probes.split(torch.tensor([0, 0, 1, 1]), 1)
    assert str(err.value) == "test_fraction must lie in (0, 1); got 1"
    with pytest.raises(ValueError) as err:
        probes.split(torch.tensor([0, 0, 0, 1]), 0.5)
    assert str(err.value) == "class 1 has 1 images: too few to keep 1 for testing and train on the rest"
    train, test = probes.split(torch.tensor([2, 2, 2, 5, 5, 5, 5, 5]), 0.2)          # ceil(0.6) = 1, ceil(1.0) = 1
    assert (train.tolist(), test.tolist()) == ([0, 1, 3, 4, 5, 6], [2, 7])
    train, test = probes.split(torch.tensor([0, 0, 0, 0, 0]), 0.5)                   # ceil(2.5) = 3
    assert (train.tolist(), test.tolist()) == ([0, 1], [2, 3, 4])


def test_summarise_keeps_first_seen_order_and_the_best_k_by_hand():
    grid = pd.DataFrame({"model": ["zoo-mae"] * 4 + ["zoo-dino"] * 3,
                         "probe": ["non-linear"] * 4 + ["linear"] * 3, "depth": [2] * 4 + [0] * 3,
                         "layer": 0, "accuracy": [0.25, 0.75, 0.5, 0.625, 0.125, 0.875, 0.375]})
    s = probes.summarise(grid, k=3)
    assert list(s.columns) == ["model", "probe", "depth", "layer", "mean", "std"]
    assert s.model.tolist() == ["zoo-mae", "zoo-dino"] and s.probe.tolist() == ["non-linear", "linear"]
    assert s.depth.tolist() == [2, 0] and s.layer.tolist() == [0, 0]
    assert s["mean"].tolist() == pytest.approx([np.mean([0.75, 0.625, 0.5]), np.mean([0.875, 0.375, 0.125])])
    assert s["std"].tolist() == pytest.approx([np.std([0.75, 0.625, 0.5], ddof=1),
                                               np.std([0.875, 0.375, 0.125], ddof=1)])
    six = pd.DataFrame({"model": "a", "probe": "linear", "depth": 0, "layer": 0,
                        "accuracy": [0.5, 0.25, 0.75, 0.0, 1.0, 0.125]})
    assert probes.summarise(six)["mean"].tolist() == pytest.approx([2.625 / 5])    # default k=5: 0.0 left out


# ---------------------------------------------------------------- protocol, model_cls, compute
def _profile(section: dict | None, **top) -> Profile:
    raw = {"models": ["zoo-dino", "zoo-mae"], "device": "cpu", **top}
    if section is not None:
        raw["probes"] = {"dataset": "probe-set", **section}
    return Profile("t", raw)


def test_protocol_fills_table4_defaults_and_reads_every_key():
    spec = probes.protocol(_profile({}))
    assert spec == {"dataset": "probe-set", "models": None, "test_fraction": 0.2, "optimizer": "lars",
                    "batch_size": probes_k.TABLE4_BATCH_SIZE, **probes_k.TABLE4, "depths": (1, 2, 3), "best_k": 5,
                    "seed": 0}
    given = {"models": ["zoo-mae"], "test_fraction": 0.5, "optimizer": "adamw", "batch_size": 16, "lrs": [0.5],
             "weight_decays": [0.25], "epochs": [4], "warmup_epochs": [2], "depths": [3], "best_k": 1}
    assert probes.protocol(_profile(given)) == {
        "dataset": "probe-set", "models": ["zoo-mae"], "test_fraction": 0.5, "optimizer": "adamw", "batch_size": 16,
        "lrs": (0.5,), "weight_decays": (0.25,), "epochs": (4,), "warmup_epochs": (2,), "depths": (3,), "best_k": 1,
        "seed": 0}


class _RecordingProfile(Profile):
    def dataset(self, dataset, preprocess):
        self.raw["_calls"].append((dataset, preprocess))
        return f"dataset:{dataset}"


def test_model_cls_extracts_pooled_cls_in_sorted_order(monkeypatch):
    pre = get_cfg("zoo-dino").preprocess
    calls = []
    monkeypatch.setattr(probes, "resolve_device", lambda d: calls.append(("device", d)) or "dev")
    monkeypatch.setattr(probes, "load_for_analysis",
                        lambda m, w, d: calls.append(("load", m, w, d)) or ("net", SimpleNamespace(preprocess=pre),
                                                                            "ident"))
    monkeypatch.setattr(probes, "FeatureStore", lambda: "default-store")
    cls = torch.ones(3, 2, 4)

    def fake_extract(net, ident, dataset, products, **kw):
        calls.append(("extract", net, ident, dataset, list(products), type(products["pooled"]), kw))
        return {"pooled": {"cls": cls, "gap": None}, "_meta": {"labels": torch.tensor([0, 1, 1]), "order": None}}
    monkeypatch.setattr(probes, "extract", fake_extract)
    profile = _RecordingProfile("t", {"models": ["zoo-dino"], "device": "dev0", "probes": {"dataset": "probe-set"},
                                      "_calls": []})
    got, labels = probes.model_cls("zoo-dino", profile, weights="w", progress=True)
    assert got is cls and labels.tolist() == [0, 1, 1]
    assert profile.raw["_calls"] == [("probe-set", pre)]
    assert calls == [("device", "dev0"), ("load", "zoo-dino", "w", "dev"),
                     ("extract", "net", "ident", "dataset:probe-set", ["pooled"], PooledTokens,
                      {"transform_id": transform_key(pre), "store": "default-store", "device": "dev", "order": "sorted",
                       "progress": True})]
    calls.clear()
    probes.model_cls("zoo-dino", profile, device="dev1", store="mine")
    assert calls[0] == ("device", "dev1") and calls[2][6]["store"] == "mine" and calls[2][6]["progress"] is False


def _fake_cls(sign: dict):
    """model -> (cls, labels): the CLS stack of every image is +1 (model 'right') or -1 (model 'wrong')."""
    labels = torch.tensor([0] * 4 + [1] * 4)

    def fake(m, profile, *, weights, device, store, progress):
        fake.calls.append((m, weights, device, store, progress))
        return torch.full((8, 3, 2), float(sign[m])), labels
    fake.calls = []
    return fake


class _SignFit:
    """A fit whose cells are correct exactly where the first feature is positive (every cell alike)."""

    def __call__(self, train_x, train_y, configs, depth=0, **kw):
        n_cells = len(configs) * (train_x.shape[0] if train_x.ndim == 3 else 1)

        class Fit:
            def correct(self, x, y):
                return (x[..., 0] > 0).reshape(-1, x.shape[-2]).repeat_interleave(len(configs), 0)[:n_cells]
        return Fit()


SMALL = {"test_fraction": 0.25, "optimizer": "adamw", "batch_size": 4, "lrs": [0.1, 0.2], "weight_decays": [0.0],
         "epochs": [2], "warmup_epochs": [1], "depths": [1], "best_k": 2}


def test_compute_puts_each_models_grid_under_its_name_and_memoises(monkeypatch):
    monkeypatch.setattr(probes, "_MEMO", {})
    monkeypatch.setattr(probes_k, "fit_probe_grid", _SignFit())
    fake = _fake_cls({"zoo-dino": 1, "zoo-mae": -1, "random-a": 1})
    monkeypatch.setattr(probes, "model_cls", fake)
    devices = []
    monkeypatch.setattr(probes, "resolve_device", lambda d: devices.append(d) or "cpu")
    profile = _profile({**SMALL, "models": ["zoo-mae", "zoo-dino"]})
    res = probes.compute(None, profile, weights={"zoo-dino": "w"}, store="s", progress=True)
    assert fake.calls == [("zoo-mae", None, "cpu", "s", True), ("zoo-dino", "w", "cpu", "s", True)]
    assert devices == ["cpu"]
    grid = res["grid"]
    assert list(grid.columns) == ["probe", "depth", "layer", "lr", "weight_decay", "epochs", "warmup_epochs",
                                  "accuracy", "model"]
    assert grid.model.tolist() == ["zoo-mae"] * 8 + ["zoo-dino"] * 8       # 2 cells x (linear, depth 1, 2 blocks)
    assert grid.accuracy.tolist() == [0.0] * 8 + [1.0] * 8
    assert grid.probe.tolist()[:8] == ["linear"] * 2 + ["non-linear"] * 2 + ["multi-layer"] * 4
    assert grid.layer.tolist()[:8] == [0, 0, 0, 0, 1, 1, 2, 2] and grid.lr.tolist()[:2] == [0.1, 0.2]
    s = res["summary"]
    assert list(zip(s.model, s.probe, s.depth, s.layer, s["mean"], s["std"])) == [
        ("zoo-mae", "linear", 0, 0, 0.0, 0.0), ("zoo-mae", "non-linear", 1, 0, 0.0, 0.0),
        ("zoo-mae", "multi-layer", 0, 1, 0.0, 0.0), ("zoo-mae", "multi-layer", 0, 2, 0.0, 0.0),
        ("zoo-dino", "linear", 0, 0, 1.0, 0.0), ("zoo-dino", "non-linear", 1, 0, 1.0, 0.0),
        ("zoo-dino", "multi-layer", 0, 1, 1.0, 0.0), ("zoo-dino", "multi-layer", 0, 2, 1.0, 0.0)]
    assert list(res["correct"]) == ["zoo-mae", "zoo-dino"]
    assert res["correct"]["zoo-dino"][("linear", 0, 0)].tolist() == [1.0, 1.0]
    assert res["correct"]["zoo-mae"][("multi-layer", 0, 2)].tolist() == [0.0, 0.0]
    assert (res["n_train"], res["n_test"]) == (6, 2)
    # the same request again is the memo (no extraction); other weights or models are trained anew
    assert probes.compute(None, profile, weights={"zoo-dino": "w"}) is res and len(fake.calls) == 2
    again = probes.compute(None, profile, device="cuda:7")
    assert again is not res and fake.calls[2:] == [("zoo-mae", None, "cpu", None, False),
                                                   ("zoo-dino", None, "cpu", None, False)]
    assert devices == ["cpu", "cuda:7"]
    probes.compute(["random-a"], profile)
    assert fake.calls[-1][0] == "random-a" and len(fake.calls) == 5
    # a section without models: the profile's
    other = probes.compute(None, _profile(SMALL, models=["random-a", "zoo-mae"]))
    assert list(other["correct"]) == ["random-a", "zoo-mae"]


def test_compute_memo_key_includes_the_profile_and_its_probes_section(monkeypatch):
    monkeypatch.setattr(probes, "_MEMO", {})
    monkeypatch.setattr(probes_k, "fit_probe_grid", _SignFit())
    fake = _fake_cls({"zoo-dino": 1, "zoo-mae": -1})
    monkeypatch.setattr(probes, "model_cls", fake)
    a = probes.compute(["zoo-dino"], _profile(SMALL))
    b = probes.compute(["zoo-dino"], _profile({**SMALL, "best_k": 1}))
    c = probes.compute(["zoo-dino"], Profile("u", _profile(SMALL).raw))
    assert len(fake.calls) == 3 and a is not b and b is not c


# ---------------------------------------------------------------- the claims
FAMILIES = {"zoo-mocov3": "contrastive", "zoo-dino": "self-distillation", "zoo-mae": "masked-reconstruction",
            "zoo-beit": "masked-token-prediction", "random-a": "random"}
OFFSET = np.arange(8) / 8.0          # the same per-image offset for every probe: paired contrasts are exact


def _correct(levels: dict[str, tuple], depths=(3,)) -> dict:
    """model -> (linear, non-linear at each depth, multi-layer block 1, block 2) levels + the per-image offset."""
    def v(x):
        return torch.tensor(x + OFFSET, dtype=torch.float64)
    out = {}
    for m, (lin, nonlin, b1, b2) in levels.items():
        out[m] = {("linear", 0, 0): v(lin), **{("non-linear", d, 0): v(nonlin + d / 64) for d in depths},
                  ("multi-layer", 0, 1): v(b1), ("multi-layer", 0, 2): v(b2)}
    return {"correct": out}


def _iv(i):
    return (i.estimate, i.low, i.high, i.n, i.unit)


def test_claims_hold_with_exact_effects_measures_and_reasons():
    levels = {"zoo-mocov3": (0.75, 0.75, 0.75, 0.75), "zoo-dino": (0.625, 0.625, 0.75, 0.5),
              "zoo-mae": (0.25, 0.5, 0.5, 0.5), "random-a": (0.125, 0.125, 0.125, 0.125)}
    # the non-linear probe at depth 3 is 3/64 above the level given: the same for every model
    lin, nl, ml = probes.judge_results(_correct(levels), FAMILIES)
    assert (lin.claim, lin.subject, lin.verdict, lin.expected, lin.baseline_model) == (
        "OM-2.2b", SUBJECT, HOLDS, 1, "random-a")
    assert lin.measure == "linear-probe accuracy (best-5 mean), joint-embedding minus reconstruction"
    assert _iv(lin.effect) == ((0.75 + 0.625) / 2 - 0.25,) * 3 + (8, "test images")
    assert _iv(lin.baseline) == ((0.75 + 0.625) / 2 - 0.125,) * 3 + (8, "test images")
    assert lin.reason == f"{CLEAR}, and the effect exceeds `random-a`'s"
    # gains over the linear probe: mocov3 0 / 0, dino 0 / 0, mae 0.25 / 0.25, random-a 0 / 0
    assert (nl.claim, nl.subject, nl.verdict) == ("OM-2.2a", "reconstruction vs joint-embedding", HOLDS)
    assert nl.measure == ("gain of a 3-block non-linear probe over the linear probe, reconstruction minus "
                          "joint-embedding")
    assert _iv(nl.effect) == (0.25, 0.25, 0.25, 8, "test images") and _iv(nl.baseline)[:3] == (0.25, 0.25, 0.25)
    assert (ml.claim, ml.subject, ml.verdict) == ("OM-2.2c", "reconstruction vs joint-embedding", HOLDS)
    assert ml.measure == ("gain of final + intermediate CLS over the final CLS (mean over blocks), reconstruction "
                          "minus joint-embedding")
    assert _iv(ml.effect)[:3] == (0.25, 0.25, 0.25) and _iv(ml.baseline)[:3] == (0.25, 0.25, 0.25)
    assert (ml.floor, ml.baseline_floor, ml.seeds) == (None, None, ())


def test_claims_weigh_groups_equally_and_read_the_requested_depth():
    levels = {"zoo-mocov3": (0.5, 0.5, 0.5, 0.5), "zoo-dino": (0.75, 0.875, 0.75, 0.75),
              "zoo-mae": (0.5, 0.5, 0.75, 0.25), "zoo-beit": (0.25, 0.75, 0.25, 0.25),
              "random-a": (0.5, 0.5, 0.5, 0.5)}
    res = _correct(levels, depths=(1, 2))
    lin, nl, ml = probes.judge_results(res, FAMILIES, depth=2)
    assert lin.effect.estimate == (0.5 + 0.75) / 2 - (0.5 + 0.25) / 2 and lin.baseline.estimate == 0.125
    # depth-2 gains (the +d/64 cancels): mocov3 0, dino 0.125, mae 0, beit 0.5; rec minus je = 0.25 - 0.0625
    assert nl.effect.estimate == 0.1875 and nl.baseline.estimate == 0.25
    assert nl.measure.startswith("gain of a 2-block non-linear probe")
    # multi-layer gains (mean of two blocks): mocov3 0, dino 0, mae 0, beit 0; random-a 0
    assert _iv(ml.effect)[:3] == (0.0, 0.0, 0.0) and ml.verdict == INCONCLUSIVE
    assert ml.reason == "within noise: the 95 % interval of the effect includes 0"
    # the paper's default depth 3 is not among the probes' depths
    lin3, nl3, ml3 = probes.judge_results(res, FAMILIES)
    assert (nl3.claim, nl3.subject, nl3.verdict, nl3.reason) == (
        "OM-2.2a", SUBJECT, CANNOT_CHECK, "the profile's probes.depths [1, 2] lack depth 3")
    assert lin3 == lin and ml3 == ml


def test_claims_reversed_do_not_hold_and_without_a_baseline_are_inconclusive():
    # gains: dino 0.25, mae 0, random-a 0.25 (non-linear and multi-layer alike)
    levels = {"zoo-dino": (0.25, 0.5, 0.5, 0.5), "zoo-mae": (0.75, 0.75, 0.75, 0.75),
              "random-a": (0.5, 0.75, 0.75, 0.75)}
    lin, nl, ml = probes.judge_results(_correct(levels), FAMILIES)
    assert [r.verdict for r in (lin, nl, ml)] == [DOES_NOT_HOLD] * 3
    assert lin.reason == f"{CLEAR} on the side opposite to the paper's, beyond `random-a`'s"
    assert _iv(lin.effect)[:3] == (-0.5, -0.5, -0.5) and _iv(lin.baseline)[:3] == (-0.25, -0.25, -0.25)
    assert _iv(nl.effect)[:3] == (-0.25, -0.25, -0.25) and _iv(nl.baseline)[:3] == (-0.25, -0.25, -0.25)
    assert _iv(ml.effect)[:3] == (-0.25, -0.25, -0.25) and _iv(ml.baseline)[:3] == (-0.25, -0.25, -0.25)
    # the untrained model gains nothing: the reconstruction model's zero gain is no loss beyond it
    explained = probes.judge_results(_correct({**levels, "random-a": (0.5,) * 4}), FAMILIES)
    assert [r.verdict for r in explained] == [DOES_NOT_HOLD, INCONCLUSIVE, INCONCLUSIVE]
    assert explained[1].reason == explained[2].reason == (
        "the untrained baseline explains it: the effect beyond `random-a` is within noise of 0")
    no_base = probes.judge_results(_correct({m: levels[m] for m in ("zoo-dino", "zoo-mae")}), FAMILIES)
    assert [(r.verdict, r.reason, r.baseline, r.baseline_model) for r in no_base] == [
        (INCONCLUSIVE, NO_BASE, None, None)] * 3


def test_claims_cannot_be_checked_without_both_groups():
    why = "the profile lacks a joint-embedding or a reconstruction model"
    for kept in (("zoo-dino", "random-a"), ("zoo-mae", "random-a")):
        rows = probes.judge_results(_correct({m: (0.5,) * 4 for m in kept}), FAMILIES)
        assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows] == [
            ("OM-2.2b", SUBJECT, CANNOT_CHECK, why), ("OM-2.2a", SUBJECT, CANNOT_CHECK, why),
            ("OM-2.2c", SUBJECT, CANNOT_CHECK, why)]


def test_gain_by_hand():
    c = {"m": {("linear", 0, 0): torch.tensor([0.5, 1.0]), ("non-linear", 2, 0): torch.tensor([1.0, 1.0]),
               ("non-linear", 3, 0): torch.tensor([0.0, 0.5]), ("multi-layer", 0, 1): torch.tensor([1.0, 0.0]),
               ("multi-layer", 0, 2): torch.tensor([0.5, 0.5]), ("multi-layer", 0, 3): torch.tensor([0.0, 1.0])}}
    assert probes._gain(c, "m", "non-linear", 2).tolist() == [0.5, 0.0]
    assert probes._gain(c, "m", "non-linear", 3).tolist() == [-0.5, -0.5]
    assert probes._gain(c, "m", "multi-layer").tolist() == [0.0, -0.5]


def test_check_claims_without_a_section_and_with_one(monkeypatch):
    rows = probes.check_claims(None, _profile(None))
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows] == [
        (c, SUBJECT, CANNOT_CHECK, "the profile has no probes section") for c in ("OM-2.2b", "OM-2.2a", "OM-2.2c")]
    levels = {"zoo-dino": (0.75, 0.75, 0.75, 0.75), "zoo-mae": (0.25, 0.5, 0.5, 0.5), "random-a": (0.0,) * 4}
    seen = []

    def fake(models, profile, *, weights, device, store, progress):
        seen.append((models, profile.name, weights, device, store, progress))
        return _correct(levels)
    monkeypatch.setattr(probes, "compute", fake)
    rows = probes.check_claims(["zoo-dino"], _profile({}), weights={"zoo-dino": "w"}, device="cpu", store="s",
                               progress=True)
    assert seen == [(["zoo-dino"], "t", {"zoo-dino": "w"}, "cpu", "s", True)]
    assert rows == probes.judge_results(_correct(levels), FAMILIES)
    assert [r.verdict for r in rows] == [HOLDS] * 3


def test_interval_is_the_paired_bootstrap_over_test_images_with_the_verdict_settings():
    from vitscope.kernels.stats import bootstrap_contrast

    g = np.random.default_rng(1)
    values = [g.random(12), g.random(12), g.random(12)]
    got = probes._interval(values, [0.5, 0.5, -1.0])
    ref = bootstrap_contrast(torch.tensor(np.stack(values)), torch.tensor([0.5, 0.5, -1.0]), n_resamples=2000, seed=0,
                             confidence=0.95)
    assert _iv(got) == (ref["estimate"], ref["low"], ref["high"], 12, "test images")
    assert got.estimate == pytest.approx(0.5 * values[0].mean() + 0.5 * values[1].mean() - values[2].mean())
    assert got.low < got.estimate < got.high                         # not a degenerate interval: the settings matter
    other = bootstrap_contrast(torch.tensor(np.stack(values)), torch.tensor([0.5, 0.5, -1.0]), n_resamples=2000,
                               seed=1, confidence=0.95)
    assert (other["low"], other["high"]) != (got.low, got.high)

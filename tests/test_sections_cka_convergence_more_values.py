"""Exact values of vitscope.sections.cka_convergence (issue 17): compute() with the pooled-feature extraction faked
(which tokens and blocks it stacks, the pairs, the full-batch values against a float64 NumPy debiased CKA), the
protocol's defaults and whole error messages, and the small helpers at their boundaries."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from numpy_reference import debiased_cka as _np_debiased_cka
from numpy_reference import hsic1_terms as _hsic_pair
from vitscope.profiles import Profile
from vitscope.sections import cka_convergence as cc

WHERE = "Profile 't', section 'cka_convergence'"


def _pooled(seed: int, n=24, depth=4, dim=5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"cls": torch.randn(n, depth, dim, generator=g), "gap": torch.randn(n, depth, dim, generator=g) + 3.0}


POOLED = {"zoo-dino": _pooled(0), "zoo-mocov3": _pooled(1), "zoo-mae": _pooled(2)}


def _profile(section: dict, **top) -> Profile:
    raw = {"models": ["zoo-mae", "zoo-dino"], **top,
           "cka_convergence": {"dataset": "pooled-set", **section}}
    return Profile("t", raw)


def _fake_pooled(monkeypatch):
    calls = []

    def fake(model, profile, dataset, *, weights, device, store, progress):
        calls.append((model, dataset, weights, device, store, progress))
        return POOLED[model]
    monkeypatch.setattr(cc, "pooled_features", fake)
    return calls


SECTION = {"models": ["zoo-dino", "zoo-mocov3", "zoo-mae"], "batch_sizes": [8, 12], "examples": [16, 24],
           "layers": [2, 4], "tokens": "cls", "repeats": 2}


def test_compute_stacks_the_requested_tokens_and_blocks_and_pairs_the_first_model(monkeypatch):
    calls = _fake_pooled(monkeypatch)
    profile = _profile(SECTION)
    res = cc.compute(profile, weights={"zoo-mocov3": "w"}, device="dev", store="s", progress=True)
    assert calls == [("zoo-dino", "pooled-set", None, "dev", "s", True),
                     ("zoo-mocov3", "pooled-set", "w", "dev", "s", True),
                     ("zoo-mae", "pooled-set", None, "dev", "s", True)]
    assert res["n_images"] == 24 and res["protocol"] == cc.protocol(profile)
    pairs = [("zoo-dino", "zoo-mocov3"), ("zoo-dino", "zoo-mae"), ("zoo-dino", "zoo-dino")]
    stacks = {m: POOLED[m]["cls"][:, [1, 3]].transpose(0, 1).double() for m in POOLED}       # blocks 2 and 4
    full = res["full"]
    assert list(full.columns) == ["model_a", "model_b", "pair", "block", "cka"]
    assert list(zip(full.model_a, full.model_b, full.pair, full.block)) == [
        (a, b, f"{a} vs {b}", blk) for a, b in pairs for blk in (2, 4)]
    expected = [_np_debiased_cka(stacks[a][i].numpy(), stacks[b][i].numpy()) for a, b in pairs for i in (0, 1)]
    np.testing.assert_allclose(full.cka.to_numpy(), expected, rtol=1e-10)
    assert full.cka.iloc[-1] == pytest.approx(1.0, rel=1e-12)
    runs = res["runs"]
    assert list(runs.columns) == ["model_a", "model_b", "sweep", "estimator", "repeat", "batch_size", "examples",
                                  "cka", "pair", "block"]
    reference = cc.sweep(stacks, pairs, (8, 12), (16, 24), 2, estimators=cc.ESTIMATORS)
    np.testing.assert_allclose(runs.cka.to_numpy(), reference.cka.to_numpy(), rtol=0, atol=0)
    assert runs.block.tolist() == [(2, 4)[i] for i in reference.layer]
    assert (runs.pair == runs.model_a + " vs " + runs.model_b).all()
    assert set(runs.estimator) == {"reference", "biased"} and set(runs.repeat) == {0, 1}
    # one minibatch of every example is the full-batch value (batch 12 of 24 is not, 24 of 24 would be)
    one = runs[(runs.sweep == "examples") & (runs.examples == 24) & (runs.estimator == "reference")]
    assert sorted(one.batch_size.unique()) == [8]
    # a hand check of one run row: repeat 1 shuffles with seed 1, dino vs mae, block 4, batch 12 of 24 examples
    order = torch.randperm(24, generator=torch.Generator().manual_seed(1)).numpy()
    X, Y = stacks["zoo-dino"][1].numpy()[order], stacks["zoo-mae"][1].numpy()[order]
    row = runs[(runs.pair == "zoo-dino vs zoo-mae") & (runs.block == 4) & (runs.repeat == 1) & (runs.batch_size == 12)
               & (runs.estimator == "reference") & (runs.sweep == "batch_size")]
    terms = [[_hsic_pair(X[s:s + 12], Y[s:s + 12])] for s in (0, 12)]
    ab, aa, bb = np.array(terms)[:, 0].T
    assert row.cka.item() == pytest.approx(ab.mean() / np.sqrt(aa.mean() * bb.mean()), rel=1e-10)


def test_compute_models_override_mean_tokens_every_block_and_one_estimator(monkeypatch):
    calls = _fake_pooled(monkeypatch)
    profile = _profile({**SECTION, "tokens": "mean", "layers": None, "repeats": 1, "batch_sizes": [12],
                        "examples": [24]})
    res = cc.compute(profile, ["zoo-mae", "zoo-dino", "zoo-mae"], estimators=("biased",))
    assert [c[0] for c in calls] == ["zoo-mae", "zoo-dino"]           # each model extracted once
    assert calls[0][2:] == (None, None, None, False)
    assert res["protocol"]["models"] == ["zoo-mae", "zoo-dino", "zoo-mae"]
    assert res["protocol"]["pairs"] == [("zoo-mae", "zoo-dino"), ("zoo-mae", "zoo-mae"), ("zoo-mae", "zoo-mae")]
    full = res["full"]
    assert full.block.tolist() == [1, 2, 3, 4] * 3
    X, Y = POOLED["zoo-mae"]["gap"].double(), POOLED["zoo-dino"]["gap"].double()      # the mean tokens
    np.testing.assert_allclose(full.cka.to_numpy()[:4],
                               [_np_debiased_cka(X[:, i].numpy(), Y[:, i].numpy()) for i in range(4)], rtol=1e-10)
    runs = res["runs"]
    assert set(runs.estimator) == {"biased"} and set(runs.repeat) == {0}
    assert runs.block.tolist()[:4] == [1, 2, 3, 4]
    assert res["protocol"]["tokens"] == "mean"


def test_compute_without_models_in_the_section_falls_back_to_cka_then_the_profile(monkeypatch):
    _fake_pooled(monkeypatch)
    sec = {k: v for k, v in SECTION.items() if k != "models"}
    res = cc.compute(_profile(sec, cka={"models": ["zoo-mocov3", "zoo-dino"]}))
    assert res["protocol"]["pairs"] == [("zoo-mocov3", "zoo-dino"), ("zoo-mocov3", "zoo-mocov3")]
    assert cc.protocol(_profile(sec))["pairs"] == [("zoo-mae", "zoo-dino"), ("zoo-mae", "zoo-mae")]
    assert cc.protocol(_profile(sec, cka={"dataset": "x"}))["models"] == ["zoo-mae", "zoo-dino"]


def test_protocol_defaults_and_every_setting():
    spec = cc.protocol(_profile({}))
    assert spec == {"dataset": "pooled-set", "models": ["zoo-mae", "zoo-dino"],
                    "pairs": [("zoo-mae", "zoo-dino"), ("zoo-mae", "zoo-mae")],
                    "batch_sizes": (32, 64, 128, 256, 512, 1024), "examples": (1024,), "layers": None, "tokens": "cls",
                    "repeats": 10}
    spec = cc.protocol(_profile({"batch_sizes": [4, 8], "examples": [4], "layers": [1, 3], "tokens": "mean",
                                 "repeats": 1}))
    assert (spec["batch_sizes"], spec["examples"], spec["layers"], spec["tokens"], spec["repeats"]) == (
        (4, 8), (4,), (1, 3), "mean", 1)


@pytest.mark.parametrize("section, message", [
    ({"batch_sizes": [3, 32]}, "batch_sizes entry (HSIC_1 needs at least 4 examples) must be an int >= 4; got 3"),
    ({"examples": [3]}, "examples entry (HSIC_1 needs at least 4 examples) must be an int >= 4; got 3"),
    ({"examples": []}, "examples must be a non-empty increasing list; got []"),
    ({"batch_sizes": [64, 64]}, "batch_sizes must be a non-empty increasing list; got [64, 64]"),
    ({"examples": [64, 32]}, "examples must be a non-empty increasing list; got [64, 32]"),
    ({"layers": [1, 0]}, "layers entry (1-based block) must be an int >= 1; got 0"),
    ({"tokens": "spatial"}, "tokens='spatial' is unknown; choose from ('cls', 'mean')"),
    ({"repeats": 0}, "repeats must be an int >= 1; got 0"),
    ({"models": ["zoo-dino"]}, "models must list at least two model names (the first is compared with each, itself "
                               "included); got ['zoo-dino']"),
    ({"models": ["zoo-dino", 3]}, "models must list at least two model names (the first is compared with each, "
                                  "itself included); got ['zoo-dino', 3]"),
])
def test_protocol_messages(section, message):
    with pytest.raises(ValueError) as err:
        cc.protocol(_profile(section))
    assert str(err.value) == f"{WHERE}: {message}"


def test_protocol_accepts_the_boundaries():
    spec = cc.protocol(_profile({"batch_sizes": [4], "examples": [4], "layers": [1], "repeats": 1,
                                 "models": ["zoo-dino", "zoo-mae"]}))
    assert spec["batch_sizes"] == (4,) and spec["layers"] == (1,) and spec["repeats"] == 1


def test_sweep_messages():
    a = torch.zeros(2, 8, 3)
    with pytest.raises(ValueError) as err:
        cc.sweep({"a": torch.zeros(2, 3)}, [], (4,), (4,), 1)
    assert str(err.value) == "feats must be [L, N, D] stacks with one L and one N; got {'a': (2, 3)}"
    with pytest.raises(ValueError) as err:
        cc.sweep({"a": a, "b": torch.zeros(2, 9, 3)}, [("a", "b")], (4,), (8,), 1)
    assert str(err.value) == "feats must be [L, N, D] stacks with one L and one N; got {'a': (2, 8, 3), 'b': (2, 9, 3)}"
    with pytest.raises(ValueError) as err:
        cc.sweep({"a": a, "b": torch.zeros(3, 8, 3)}, [("a", "b")], (4,), (8,), 1)
    assert "{'a': (2, 8, 3), 'b': (3, 8, 3)}" in str(err.value)
    cc.sweep({"a": a, "b": torch.ones(2, 8, 5)}, [("a", "a")], (4,), (8,), 1)          # another D is fine
    with pytest.raises(ValueError) as err:
        cc.sweep({"a": a}, [("z", "a"), ("a", "y")], (4,), (8,), 1)
    assert str(err.value) == "pairs name ['y', 'z'] but feats holds only ['a']"
    with pytest.raises(ValueError) as err:
        cc.sweep({"a": a}, [("a", "a")], (4,), (4, 9), 1)
    assert str(err.value) == ("examples asks for 9 images but the features hold 8; lower the profile's "
                              "cka_convergence.examples to at most 8")
    with pytest.raises(ValueError) as err:
        cc.sweep({"a": a}, [("a", "a")], (4,), (8,), 1, estimators=("reference", "nope"))
    assert str(err.value) == "estimator='nope' is unknown; choose from ('reference', 'biased')"


def test_sweep_settings_and_examples_used():
    g = torch.Generator().manual_seed(0)
    feats = {"a": torch.randn(1, 21, 3, generator=g, dtype=torch.float64),
             "b": torch.randn(1, 21, 3, generator=g, dtype=torch.float64)}
    runs = cc.sweep(feats, [("a", "b")], (5, 8), (9, 21), 1, seed=5)
    # batch sweep at the largest examples (21): 5 -> 20 (a last batch of 1 dropped), 8 -> 21 (last batch of 5 kept);
    # examples sweep at the smallest batch (5): 9 -> 9 (last batch of 4 kept), 21 -> 20
    assert list(zip(runs.sweep, runs.batch_size, runs.examples)) == [
        ("batch_size", 5, 20), ("batch_size", 8, 21), ("examples", 5, 9), ("examples", 5, 20)]
    assert runs.repeat.tolist() == [0] * 4 and runs.estimator.tolist() == ["reference"] * 4
    order = torch.randperm(21, generator=torch.Generator().manual_seed(5)).numpy()
    X, Y = feats["a"][0].numpy()[order], feats["b"][0].numpy()[order]
    ab, aa, bb = np.array([_hsic_pair(X[s:min(s + 5, 9)], Y[s:min(s + 5, 9)]) for s in (0, 5)]).T
    assert runs.cka.iloc[2] == pytest.approx(ab.mean() / np.sqrt(aa.mean() * bb.mean()), rel=1e-10)


def test_usable_boundaries():
    assert [cc._usable(n, 8) for n in (16, 17, 19, 20, 21)] == [16, 16, 16, 20, 21]
    assert cc._usable(3, 8) == 0 and cc._usable(4, 8) == 4


def test_stack_blocks_and_message():
    feats = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)            # [N=2, L=3, D=2]
    stack, blocks = cc._stack(feats, [1, 3])
    assert blocks == [1, 3] and stack.dtype == torch.float64
    assert stack.tolist() == [[[0.0, 1.0], [6.0, 7.0]], [[4.0, 5.0], [10.0, 11.0]]]
    stack, blocks = cc._stack(feats, None)
    assert blocks == [1, 2, 3] and stack.shape == (3, 2, 2) and stack[1].tolist() == [[2.0, 3.0], [8.0, 9.0]]
    with pytest.raises(ValueError) as err:
        cc._stack(feats, [2, 4])
    assert str(err.value) == ("layers [2, 4] name block 4 but the model has 3 blocks; lower the profile's "
                              "cka_convergence.layers")


def test_summarise_and_settling_keep_first_seen_order():
    runs = pd.DataFrame({"model_a": "z", "model_b": ["y"] * 4 + ["x"] * 4, "pair": ["z vs y"] * 4 + ["z vs x"] * 4,
                         "estimator": ["reference", "reference", "biased", "biased"] * 2, "sweep": "batch_size",
                         "batch_size": [16, 16, 16, 16, 8, 8, 8, 8], "examples": 32, "block": 2,
                         "repeat": [0, 1] * 4, "cka": [0.5, 0.75, 0.25, 0.5, 0.875, 0.625, 0.125, 0.375]})
    full = pd.DataFrame({"model_a": "z", "model_b": ["y", "x"], "pair": ["z vs y", "z vs x"], "block": 2,
                         "cka": [0.5, 0.5]})
    s = cc.summarise(runs, full)
    assert list(s.columns) == ["model_a", "model_b", "pair", "estimator", "sweep", "batch_size", "examples", "block",
                               "mean", "std", "low", "high", "full", "deviation"]
    assert list(zip(s.pair, s.estimator)) == [("z vs y", "reference"), ("z vs y", "biased"), ("z vs x", "reference"),
                                              ("z vs x", "biased")]
    assert s["mean"].tolist() == [0.625, 0.375, 0.75, 0.25] and s.low.tolist() == [0.5, 0.25, 0.625, 0.125]
    assert s.high.tolist() == [0.75, 0.5, 0.875, 0.375] and s.full.tolist() == [0.5] * 4
    assert s.deviation.tolist() == [0.125, -0.125, 0.25, -0.25]
    np.testing.assert_allclose(s["std"].to_numpy(), np.std([0.5, 0.75], ddof=1))
    settle = cc.settling(s)
    assert list(settle.columns) == ["sweep", "batch_size", "examples", "max_abs_deviation", "max_spread"]
    assert settle.batch_size.tolist() == [16, 8]                     # first seen, not sorted
    assert settle.max_abs_deviation.tolist() == [0.125, 0.25] and settle.max_spread.tolist() == [0.25, 0.25]
    biased = cc.settling(s, "biased")
    assert biased.max_abs_deviation.tolist() == [0.125, 0.25]
    with pytest.raises(ValueError) as err:
        cc.settling(s, "unbiased")
    assert str(err.value) == "no rows for estimator 'unbiased' between distinct models"
    same = s.assign(model_b="z")
    with pytest.raises(ValueError) as err:
        cc.settling(same)
    assert str(err.value) == "no rows for estimator 'reference' between distinct models"


def test_summary_std_is_nan_for_one_repeat_and_full_is_matched_per_block():
    runs = pd.DataFrame({"model_a": "a", "model_b": "b", "pair": "a vs b", "estimator": "reference",
                         "sweep": "examples", "batch_size": 8, "examples": 16, "block": [1, 2], "repeat": 0,
                         "cka": [0.5, 0.25]})
    full = pd.DataFrame({"model_a": "a", "model_b": "b", "pair": "a vs b", "block": [2, 1], "cka": [0.125, 0.75]})
    s = cc.summarise(runs, full)
    assert s.full.tolist() == [0.75, 0.125] and s.deviation.tolist() == [-0.25, 0.125]
    assert s["std"].isna().all()


def test_summary_refuses_two_full_batch_values_for_one_block():
    runs = pd.DataFrame({"model_a": "a", "model_b": "b", "pair": "a vs b", "estimator": "reference",
                         "sweep": "examples", "batch_size": 8, "examples": 16, "block": 1, "repeat": 0, "cka": [0.5]})
    full = pd.DataFrame({"model_a": "a", "model_b": "b", "pair": "a vs b", "block": [1, 1], "cka": [0.125, 0.75]})
    with pytest.raises(pd.errors.MergeError):
        cc.summarise(runs, full)

"""Exact values of the last-layer CKA (TM 5.1) and fine-tuning (OM 2.3) sections' helpers and claim wiring on
hand-made tables and Gram matrices, the extraction replaced (issue 17: the fast unit tests that reach them)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from vitscope.claims import CANNOT_CHECK
from vitscope.kernels import cka as cka_k
from vitscope.profiles import Profile, load_profile
from vitscope.sections import finetuning, last_layer_cka

MODELS = ["zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-beit", "random-a", "random-b", "random-c"]


def _grams(models, batches=3, b=6, dim=4):
    """Per model, ``{tokens: [Gram [b, b] per batch]}`` of seeded random features (CLS and spatial differ)."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for m in models:
        out[m] = {}
        for t in last_layer_cka.TOKENS:
            feats = [torch.randn(b, dim, generator=gen, dtype=torch.float64) for _ in range(batches)]
            out[m][t] = [x @ x.T for x in feats]
    return out


def test_last_layer_table_matrix_and_its_error():
    grams = _grams(["zoo-dino", "zoo-mae"])
    table = last_layer_cka.table_from_grams(grams)
    m = last_layer_cka.matrix(table, "spatial")
    assert list(m.index) == ["zoo-dino", "zoo-mae"] and list(m.columns) == ["zoo-dino", "zoo-mae"]
    ref = float(cka_k.minibatch_cka_from_grams([g[None] for g in grams["zoo-dino"]["spatial"]],
                                               [g[None] for g in grams["zoo-mae"]["spatial"]])[0, 0])
    assert m.loc["zoo-dino", "zoo-mae"] == m.loc["zoo-mae", "zoo-dino"] == pytest.approx(ref, abs=1e-12)
    assert m.loc["zoo-dino", "zoo-dino"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(KeyError) as err:
        last_layer_cka.matrix(table, "patch")
    assert err.value.args[0] == ("no CKA rows for tokens='patch', mode='reference'; the table has tokens "
                                 "['cls', 'spatial'] and modes ['reference', 'teaching-matters']")


def test_last_layer_pairs_and_missing_groups():
    terms = last_layer_cka.terms_from_grams(_grams(["zoo-dino", "zoo-mae", "random-a"], batches=2))
    assert last_layer_cka._pairs(terms) == [("zoo-dino", "zoo-mae"), ("zoo-dino", "random-a"), ("zoo-mae", "random-a")]
    (pair,) = last_layer_cka.pair_check(terms)
    assert (pair.claim, pair.verdict, pair.subject) == ("TM-5.1a", CANNOT_CHECK, "DINO vs MoCo-v3 minus other pairs")
    assert pair.reason == "the profile lacks a self-distillation (DINO) or a contrastive (MoCo-v3) model"
    two = last_layer_cka.terms_from_grams(_grams(["zoo-dino", "zoo-mocov3", "random-a"], batches=2))
    assert [(r.verdict, r.reason) for r in last_layer_cka.pair_check(two)] == [
        (CANNOT_CHECK, "the profile has no other pair of trained models")]
    (mae,) = last_layer_cka.mae_check(terms)
    assert (mae.claim, mae.verdict, mae.reason) == ("TM-5.1b", CANNOT_CHECK,
                                                    "the profile lacks MAE, BEiT or a contrastive model")
    spatial = last_layer_cka.spatial_check(terms)
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in spatial] == [
        ("TM-5.1c", "DINO, MAE, MoCo-v3 among themselves minus vs BEiT", CANNOT_CHECK,
         "the profile lacks two of DINO, MAE, MoCo-v3, or BEiT"),
        ("TM-5.1c", "FS vs CLIP", CANNOT_CHECK, "the profile lacks a supervised or an image-text model")]
    with pytest.raises(ValueError) as err:
        last_layer_cka._effect_floor(terms, ("random-a",), [("a", "b", ("cls",), 1.0), ("a", "b", ("spatial",), -1.0)])
    assert str(err.value) == ("the contrast's parts read several token readouts [('cls',), ('spatial',)]; its seed "
                              "floor needs one statistic per seed pair (write the floor of a mixed contrast by hand)")
    assert last_layer_cka._effect_floor(terms, (), []) is None


def test_last_layer_entry_points_use_the_section_models_and_add_the_seeds(monkeypatch):
    grams = _grams(MODELS)
    seen = []

    def fake(model, profile, *, weights, device, store, progress):
        seen.append((model, weights))
        return grams[model]
    monkeypatch.setattr(last_layer_cka, "last_block_grams", fake)
    profile = load_profile("demo")
    table = last_layer_cka.compute(["zoo-dino", "zoo-mae"], profile, weights={"zoo-mae": "w"})
    assert seen == [("zoo-dino", None), ("zoo-mae", "w")]
    expected = last_layer_cka.table_from_grams({m: grams[m] for m in ("zoo-dino", "zoo-mae")})
    pd.testing.assert_frame_equal(table, expected)
    seen.clear()
    rows = last_layer_cka.check_claims(["zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-beit", "random-a"], profile)
    assert [m for m, _ in seen] == MODELS                       # the profile's three seeds join once each
    terms = last_layer_cka.terms_from_grams(grams)
    seeds = ("random-a", "random-b", "random-c")
    assert rows == (last_layer_cka.pair_check(terms, seeds) + last_layer_cka.mae_check(terms, seeds)
                    + last_layer_cka.spatial_check(terms, seeds))
    assert [r.claim for r in rows] == ["TM-5.1a", "TM-5.1a", "TM-5.1b", "TM-5.1c", "TM-5.1c"]
    assert all(r.seeds == seeds and r.floor is not None for r in rows[:4])


# ---------------------------------------------------------------- OM 2.3: fine-tuning
def _same_depth(values: dict[tuple[str, str], list[float]], site="block") -> pd.DataFrame:
    return pd.DataFrame([{"model_a": a, "model_b": b, "site": site, "index": i + 1, "cka": v}
                         for (a, b), vs in values.items() for i, v in enumerate(vs)])


def test_before_after_reads_either_order():
    sd = _same_depth({("zoo-dino", "zoo-mae"): [0.5, 0.25], ("zoo-mae+ft", "zoo-dino"): [0.75, 0.5],
                      ("zoo-dino+ft", "zoo-mae"): [0.125, 0.0], ("zoo-dino+ft", "zoo-mae+ft"): [1.0, 0.875],
                      ("zoo-dino", "zoo-beit"): [0.0, 0.0]})
    t = finetuning.before_after(sd, "zoo-dino", "zoo-mae")
    assert list(t.columns) == ["site", "index", "PT/PT", "FT/PT", "PT/FT", "FT/FT"]
    assert t["index"].tolist() == [1, 2] and t.site.tolist() == ["block", "block"]
    assert t["PT/PT"].tolist() == [0.5, 0.25] and t["FT/PT"].tolist() == [0.125, 0.0]
    assert t["PT/FT"].tolist() == [0.75, 0.5] and t["FT/FT"].tolist() == [1.0, 0.875]


def test_closeness_and_mean_same_depth():
    sd = pd.concat([_same_depth({("zoo-mae+ft", "zoo-dino"): [0.75, 0.25], ("zoo-mae", "zoo-mae+ft"): [0.5, 0.0],
                                 ("zoo-dino+ft", "zoo-mae+ft"): [1.0, 0.5], ("zoo-dino", "zoo-mae"): [0.125, 0.125]}),
                    _same_depth({("zoo-mae+ft", "zoo-dino"): [9.0, 9.0]}, site="fc1")])
    assert finetuning.mean_same_depth(sd, "zoo-dino", "zoo-mae+ft") == 0.5
    assert finetuning.mean_same_depth(sd, "zoo-mae+ft", "zoo-dino", site="fc1") == 9.0
    t = finetuning.closeness(sd, ["zoo-mae", "zoo-dino", "random-a"])
    assert t.to_dict("list") == {"model": ["zoo-mae+ft"] * 3 + ["zoo-mae"],
                                 "vs": ["zoo-dino", "zoo-mae", "zoo-dino+ft", "zoo-dino"],
                                 "cka": [0.5, 0.25, 0.75, 0.125]}


def test_finetuning_groups_protocol_and_tables():
    assert finetuning.groups(["zoo-mae", "zoo-dino", "random-a", "zoo-beit", "zoo-mocov3"]) == (
        ["zoo-dino", "zoo-mocov3"], ["zoo-mae", "zoo-beit"])
    assert finetuning.tuned_baseline(["zoo-dino", "random-b"]) == "random-b"
    assert finetuning.tuned_baseline(["zoo-dino"]) is None
    with pytest.raises(ValueError) as err:
        finetuning.protocol(Profile("x", {"finetune": {"models": []}}))
    assert str(err.value) == "Profile 'x': finetune.models is empty; list the models to fine-tune"
    p = finetuning.protocol(Profile("x", {"finetune": {"models": ["zoo-mae"], "dataset": "d"}}))
    assert p["models"] == ["zoo-mae"] and p["dataset"] == "d" and list(p["recipes"]) == ["zoo-mae"]
    summary = pd.DataFrame({"model": ["zoo-mae", "zoo-mae", "zoo-mae"], "probe": ["linear", "multi-layer",
                            "multi-layer"], "layer": [None, 2, 3], "mean": [0.5, 0.75, 0.375]})
    m = finetuning.marginal_table({"summary": summary})
    assert m.to_dict("list") == {"model": ["zoo-mae", "zoo-mae"], "layer": [2, 3], "gain": [0.25, -0.125],
                                 "linear": [0.5, 0.5], "multi": [0.75, 0.375]}
    per = pd.DataFrame({"model": ["a", "a", "a", "a", "a"], "block": [1, 1, 2, 1, 1],
                        "augmentation": ["hflip", "hflip", "hflip", "crop", "hflip"],
                        "pooling": ["cls", "cls", "cls", "cls", "mean"], "index": [0.5, 0.25, 1.0, 9.0, 9.0]})
    assert finetuning.flip_summary(per).to_dict("list") == {"model": ["a", "a"], "block": [1, 2], "index": [0.375, 1.0],
                                                           "augmentation": ["hflip"] * 2, "pooling": ["cls"] * 2}


def test_finetuning_claims_without_a_section_or_groups():
    bare = Profile("x", {})
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in finetuning.check_cka_claims(None, bare)] == [
        ("OM-2.3a", "fine-tuned models", CANNOT_CHECK, "the profile has no finetune section"),
        ("OM-2.3b", "fine-tuned models", CANNOT_CHECK, "the profile has no finetune section")]
    assert [r.claim for r in finetuning.check_dynamics_claims(None, bare)] == ["OM-2.3c", "OM-2.3d", "OM-2.3e"]
    assert all(r.verdict == CANNOT_CHECK for r in finetuning.check_dynamics_claims(None, bare))
    why = "the profile's finetune.models lack a joint-embedding or a reconstruction model"
    rows = finetuning.cka_checks(pd.DataFrame(), ["zoo-dino", "random-a"])
    assert [(r.claim, r.subject, r.reason) for r in rows] == [
        ("OM-2.3a", "reconstruction (FT) vs joint-embedding", why),
        ("OM-2.3b", "joint-embedding vs reconstruction", why)]
    (flip,) = finetuning.flip_check(pd.DataFrame({"augmentation": ["hflip"]}), ["zoo-dino"])
    assert (flip.claim, flip.reason) == ("OM-2.3d", "no reconstruction model is fine-tuned")
    (flip,) = finetuning.flip_check(pd.DataFrame({"augmentation": ["crop"]}), ["zoo-mae"])
    assert flip.reason == "the invariance section lacks hflip"
    (marg,) = finetuning.marginal_check({"correct": {}}, ["zoo-dino"])
    assert (marg.claim, marg.subject, marg.reason) == ("OM-2.3e", "reconstruction (PT) minus (FT)",
                                                       "no reconstruction model is fine-tuned")

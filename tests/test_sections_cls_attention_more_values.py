"""Exact values of vitscope.sections.cls_attention (issue 17): extract_maps with the model, dataset and extraction
faked (what it asks for and what it keeps), the example images against hand crops, the head table's uniform levels,
and TM 4.1's claims from constructed per-image statistics with exact intervals, measures and reasons."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from vitscope.claims.verdict import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.data import transform_key
from vitscope.extract import AttentionDistance
from vitscope.extract.attention_products import ClsMapStats
from vitscope.models import get_cfg
from vitscope.profiles import Profile
from vitscope.sections import cls_attention

CLEAR = "the 95 % interval clears 0"
NO_BASE = "no untrained baseline of the same architecture in this profile"


class _RecordingProfile(Profile):
    def dataset(self, dataset, preprocess):
        self.raw["_calls"].append((dataset, preprocess))
        return self.raw["_datasets"].get(dataset, f"dataset:{dataset}")


def _fake_edges(monkeypatch):
    pre = get_cfg("zoo-dino").preprocess
    calls = []
    monkeypatch.setattr(cls_attention, "resolve_device", lambda d: calls.append(("device", d)) or "dev")
    monkeypatch.setattr(cls_attention, "load_for_analysis",
                        lambda m, w, d: calls.append(("load", m, w, d)) or ("net", SimpleNamespace(preprocess=pre),
                                                                            "ident"))
    monkeypatch.setattr(cls_attention, "FeatureStore", lambda: "default-store")
    monkeypatch.setattr(cls_attention, "vit_geometry", lambda net: {"grid": (3, 3), "net": net})

    def fake_extract(net, ident, dataset, products, **kw):
        calls.append(("extract", net, ident, dataset, dict(products), kw))
        return {k: f"product:{k}" for k in products} | {"_meta": {"order": torch.tensor([4, 2, 0])}}
    monkeypatch.setattr(cls_attention, "extract", fake_extract)
    return calls, pre


def _profile(**raw) -> _RecordingProfile:
    return _RecordingProfile("t", {"models": ["zoo-dino"], "device": "dev0", "cls_attention": {"dataset": "maps"},
                                   "aaam": {"dataset": "aaam-set"}, "_calls": [], "_datasets": {}, **raw})


def test_extract_maps_asks_for_the_map_products_and_keeps_four(monkeypatch):
    calls, pre = _fake_edges(monkeypatch)
    profile = _profile(cls_attention={"dataset": "maps", "n_examples": 2})
    result = cls_attention.compute("zoo-dino", profile, weights="w", progress=True)
    assert profile.raw["_calls"] == [("maps", pre)]
    assert calls[:2] == [("device", "dev0"), ("load", "zoo-dino", "w", "dev")]
    (_, net, ident, dataset, products, kw), = calls[2:]
    assert (net, ident, dataset) == ("net", "ident", "dataset:maps")
    assert list(products) == ["cls", "cls_stats", "aaam", "queries"]
    assert isinstance(products["cls_stats"], ClsMapStats) and products["cls_stats"].n_examples == 2
    assert kw == {"transform_id": transform_key(pre), "store": "default-store", "device": "dev", "progress": True}
    assert result.model == "zoo-dino" and result.dataset_name == "maps"
    assert result.geometry == {"grid": (3, 3), "net": "net"}
    assert result.products == {k: f"product:{k}" for k in ("cls", "cls_stats", "aaam", "queries")}
    assert result.order.tolist() == [4, 2, 0] and result.n_images == 3


def test_extract_maps_adds_the_attention_distances_when_that_section_reads_the_same_data(monkeypatch):
    calls, _ = _fake_edges(monkeypatch)
    profile = _profile(attention_distance={"dataset": "aaam-set"})
    result = cls_attention.extract_maps("zoo-dino", profile, "aaam", device="cpu", store="s")
    assert calls[0] == ("device", "cpu") and profile.raw["_calls"][0][0] == "aaam-set"
    products, kw = calls[2][4], calls[2][5]
    assert list(products) == ["cls", "cls_stats", "aaam", "queries", "ad"]
    assert isinstance(products["ad"], AttentionDistance)
    assert products["cls_stats"].n_examples == cls_attention.N_EXAMPLES == 4
    assert kw["store"] == "s" and kw["progress"] is False
    assert set(result.products) == {"cls", "cls_stats", "aaam", "queries"} and result.dataset_name == "aaam-set"
    calls.clear()
    cls_attention.extract_maps("zoo-dino", _profile(attention_distance={"dataset": "other"}), "aaam")
    assert list(calls[2][4]) == ["cls", "cls_stats", "aaam", "queries"]


def test_example_images_are_the_first_images_resized_and_centre_cropped(tmp_path):
    pre = get_cfg("zoo-dino").preprocess                 # resize 64, centre crop 64, bicubic
    assert (pre.resize, pre.crop) == (64, 64)
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        p = tmp_path / f"flat{i}.png"
        Image.new("RGB", (32, 32), colour).save(p)
        paths.append(p)
    wide = np.zeros((64, 96, 3), np.uint8)
    wide[:, :, 0] = np.arange(96, dtype=np.uint8)[None, :]         # a ramp across the width
    Image.fromarray(wide).save(tmp_path / "wide.png")
    paths.append(tmp_path / "wide.png")
    dataset = SimpleNamespace(samples=[(str(p), 0) for p in paths])
    profile = _profile(_datasets={"maps": dataset})
    stats = {"examples": torch.zeros(2, 1, 1, 3, 3)}                 # two examples
    result = cls_attention.AttentionMaps("zoo-dino", {"grid": (3, 3)}, {"cls_stats": stats}, torch.tensor([3, 1, 0]),
                                         "maps")
    images = cls_attention.example_images(result, profile)
    assert profile.raw["_calls"] == [("maps", pre)]
    assert len(images) == 2 and all(im.shape == (64, 64, 3) for im in images)
    np.testing.assert_array_equal(images[0], wide[:, 16:80])          # the central 64 of 96 columns
    assert (images[1] == np.array([0, 255, 0], np.uint8)).all()       # 32 -> 64, flat stays flat


def _stats(levels: dict, n=4):
    """[N=n, L=2, H=2] statistics: block 1 holds 9 (late blocks are block 2 only), block 2 the level + a per-image
    offset shared by every model (paired contrasts exact); ``fixed``'s first half is NaN (the choosing images)."""
    offset = torch.arange(n, dtype=torch.float64)[:, None] / 16
    out = {}
    for stat, level in levels.items():
        v = torch.full((n, 2, 2), 9.0, dtype=torch.float64)
        v[:, 1] = level + offset
        if stat == "fixed":
            v[: n // 2] = float("nan")
        out[stat] = v.float()
    return out


def _result(model, centre, coverage, fixed):
    return cls_attention.AttentionMaps(model, {"grid": (3, 3)}, {"cls_stats": _stats(
        {"centre": centre, "coverage": coverage, "fixed": fixed})}, torch.arange(4), "maps")


def _iv(i):
    return (i.estimate, i.low, i.high, i.n, i.unit)


def test_claims_from_stats_exact_rows():
    results = {"zoo-dino": _result("zoo-dino", 0.75, 0.25, 0.125), "zoo-mocov3": _result("zoo-mocov3", 0.5, 0.25,
                                                                                         0.125),
               "zoo-supervised": _result("zoo-supervised", 0.25, 0.5, 0.5), "zoo-mae": _result("zoo-mae", 0.5, 0.75,
                                                                                              0.25),
               "random-a": _result("random-a", 0.375, 0.5, 0.25)}
    rows = cls_attention.claims_from_stats(results)
    assert [(r.claim, r.subject, r.verdict) for r in rows] == [
        ("TM-4.1a", "contrastive minus explicitly supervised", HOLDS), ("TM-4.1a", "zoo-dino", HOLDS),
        ("TM-4.1a", "zoo-mocov3", HOLDS),
        ("TM-4.1b", "reconstruction minus contrastive", HOLDS),
        ("TM-4.1c", "explicitly supervised minus contrastive", HOLDS), ("TM-4.1c", "zoo-supervised", HOLDS)]
    a, a_dino, a_moco, b, c, c_sup = rows
    assert a.measure == ("late-block CLS mass in the central quarter (zoo-dino, zoo-mocov3 minus zoo-supervised)")
    assert _iv(a.effect) == (0.375, 0.375, 0.375, 4, "images") and _iv(a.baseline)[:3] == (0.25, 0.25, 0.25)
    assert (a.expected, a.baseline_model, a.reason) == (1, "random-a", f"{CLEAR}, and the effect exceeds `random-a`'s")
    assert a_dino.measure == "late-block CLS mass in the central quarter minus `random-a`'s"
    assert _iv(a_dino.effect)[:3] == (0.375,) * 3 and a_dino.baseline == a_dino.effect
    assert _iv(a_moco.effect)[:3] == (0.125,) * 3
    assert b.measure == "late-block share of tokens holding 60 % of the CLS map (zoo-mae minus zoo-dino, zoo-mocov3)"
    assert _iv(b.effect)[:3] == (0.5,) * 3 and _iv(b.baseline)[:3] == (0.25,) * 3
    assert c.measure == ("late-block CLS mass on the 10 % of tokens most attended on other images (zoo-supervised "
                         "minus zoo-dino, zoo-mocov3)")
    assert _iv(c.effect) == (0.375, 0.375, 0.375, 2, "images")       # the second half of the images only
    assert _iv(c_sup.effect)[:3] == (0.25,) * 3
    assert c_sup.measure == ("late-block CLS mass on the 10 % of tokens most attended on other images minus "
                             "`random-a`'s")


def test_claims_from_stats_reversed_and_explained():
    results = {"zoo-dino": _result("zoo-dino", 0.25, 0.5, 0.5), "zoo-clip": _result("zoo-clip", 0.5, 0.25, 0.25),
               "zoo-beit": _result("zoo-beit", 0.5, 0.5, 0.5), "random-a": _result("random-a", 0.5, 0.25, 0.25)}
    rows = {(r.claim, r.subject): r for r in cls_attention.claims_from_stats(results)}
    a = rows[("TM-4.1a", "contrastive minus explicitly supervised")]
    assert a.verdict == DOES_NOT_HOLD and _iv(a.effect)[:3] == (-0.25,) * 3
    assert a.reason == f"{CLEAR} on the side opposite to the paper's, beyond `random-a`'s"
    b = rows[("TM-4.1b", "reconstruction minus contrastive")]                  # beit = dino on coverage
    assert b.verdict == INCONCLUSIVE and b.reason == "within noise: the 95 % interval of the effect includes 0"
    c = rows[("TM-4.1c", "explicitly supervised minus contrastive")]           # clip below dino, but = random-a
    assert c.verdict == INCONCLUSIVE and _iv(c.effect)[:3] == (-0.25,) * 3
    assert c.reason == "the untrained baseline explains it: the effect beyond `random-a` is within noise of 0"
    assert rows[("TM-4.1c", "zoo-clip")].verdict == INCONCLUSIVE
    assert list(rows) == [("TM-4.1a", "contrastive minus explicitly supervised"), ("TM-4.1a", "zoo-dino"),
                          ("TM-4.1b", "reconstruction minus contrastive"),
                          ("TM-4.1c", "explicitly supervised minus contrastive"), ("TM-4.1c", "zoo-clip")]


def test_claims_from_stats_without_groups_or_a_baseline():
    only_dino = cls_attention.claims_from_stats({"zoo-dino": _result("zoo-dino", 0.5, 0.5, 0.5),
                                                 "random-a": _result("random-a", 0.5, 0.5, 0.5)})
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in only_dino] == [
        ("TM-4.1a", "contrastive minus explicitly supervised", CANNOT_CHECK,
         "the profile has no explicitly supervised model"),
        ("TM-4.1b", "reconstruction minus contrastive", CANNOT_CHECK, "the profile has no reconstruction model"),
        ("TM-4.1c", "explicitly supervised minus contrastive", CANNOT_CHECK,
         "the profile has no explicitly supervised model")]
    only_mae = cls_attention.claims_from_stats({"zoo-mae": _result("zoo-mae", 0.5, 0.5, 0.5)})
    assert [r.reason for r in only_mae] == ["the profile has no contrastive model"] * 2 + [
        "the profile has no explicitly supervised model"]
    no_base = cls_attention.claims_from_stats({"zoo-clip": _result("zoo-clip", 0.25, 0.5, 0.75),
                                               "zoo-dino": _result("zoo-dino", 0.75, 0.5, 0.25)})
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in no_base] == [
        ("TM-4.1a", "contrastive minus explicitly supervised", INCONCLUSIVE, NO_BASE),
        ("TM-4.1a", "zoo-dino", CANNOT_CHECK, NO_BASE),
        ("TM-4.1b", "reconstruction minus contrastive", CANNOT_CHECK, "the profile has no reconstruction model"),
        ("TM-4.1c", "explicitly supervised minus contrastive", INCONCLUSIVE, NO_BASE),
        ("TM-4.1c", "zoo-clip", CANNOT_CHECK, NO_BASE)]
    assert no_base[0].baseline is None and _iv(no_base[0].effect)[:3] == (0.5,) * 3


def test_head_table_columns_and_uniform_levels_on_a_4_grid():
    n = 5
    centre = torch.arange(n * 1 * 2, dtype=torch.float32).reshape(n, 1, 2)
    fixed = torch.arange(n * 1 * 2, dtype=torch.float32).reshape(n, 1, 2) * 2
    stats = {"centre": centre, "coverage": centre + 1, "fixed": fixed}
    result = cls_attention.AttentionMaps("zoo-mae", {"grid": (4, 4)}, {"cls_stats": stats}, torch.arange(n), "x")
    t = cls_attention.head_table(result)
    assert list(t.columns) == ["model", "block", "head", "centre", "coverage", "fixed", "centre_uniform",
                               "fixed_uniform"]
    assert t.model.tolist() == ["zoo-mae"] * 2 and t.block.tolist() == [1, 1] and t["head"].tolist() == [0, 1]
    assert t.centre.tolist() == [4.0, 5.0] and t.coverage.tolist() == [5.0, 6.0]
    assert t.fixed.tolist() == [12.0, 14.0]       # images 2, 3, 4 only (reference_count(5) = 2)
    assert t.centre_uniform.tolist() == [0.25, 0.25]        # the middle 2 x 2 of 4 x 4
    assert t.fixed_uniform.tolist() == [0.125, 0.125]       # the top 2 of 16 tokens
    assert cls_attention.late_values(result, "fixed").tolist() == [9.0, 13.0, 17.0]
    assert cls_attention.late_values(result, "coverage").tolist() == [1.5, 3.5, 5.5, 7.5, 9.5]


def test_relative_to_uniform_on_a_non_square_grid_and_query_names():
    maps = torch.full((2, 3), 1 / 6)
    np.testing.assert_allclose(cls_attention.relative_to_uniform(maps), np.ones((2, 3)))
    assert cls_attention.relative_to_uniform(torch.tensor([[0.5, 0.25, 0.25]])).tolist() == [[1.5, 0.75, 0.75]]
    result = cls_attention.AttentionMaps("m", {"grid": (5, 7)}, {}, torch.arange(2), "x")
    assert cls_attention.query_names(result) == cls_attention.query_positions(5)
    assert cls_attention.query_names(result) != cls_attention.query_positions(7)
    assert cls_attention.late_blocks(1) == [1] and cls_attention.late_blocks(2) == [2]


def test_check_claims_defaults_to_the_profiles_models(monkeypatch):
    seen = []

    def fake(model, profile, section, *, weights, device, store, progress):
        seen.append((model, section, weights, device, store, progress))
        return _result(model, 0.5, 0.5, 0.5)
    monkeypatch.setattr(cls_attention, "extract_maps", fake)
    profile = Profile("t", {"models": ["zoo-dino", "zoo-mae"]})
    rows = cls_attention.check_claims(None, profile, device="cpu", store="s", progress=True)
    assert seen == [("zoo-dino", "cls_attention", None, "cpu", "s", True),
                    ("zoo-mae", "cls_attention", None, "cpu", "s", True)]
    assert rows == cls_attention.claims_from_stats({m: _result(m, 0.5, 0.5, 0.5) for m in ("zoo-dino", "zoo-mae")})

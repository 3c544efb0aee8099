"""Exact values of vitscope.sections.attention_distance (issue 17): _extract with the model, dataset and extraction
faked (what it asks for, the uniform levels of the model's grid), the per-head and per-layer tables by hand, and the
check_claims default models."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from vitscope.data import transform_key
from vitscope.extract import AttentionDistance
from vitscope.kernels.attention import uniform_attention_distance
from vitscope.models import get_cfg
from vitscope.profiles import Profile
from vitscope.sections import attention_distance as ad


class _RecordingProfile(Profile):
    def dataset(self, dataset, preprocess):
        self.raw["_calls"].append((dataset, preprocess))
        return f"dataset:{dataset}"


def test_extract_asks_for_attention_distances_and_the_grids_uniform_levels(monkeypatch):
    pre = get_cfg("zoo-mae").preprocess
    calls = []
    monkeypatch.setattr(ad, "resolve_device", lambda d: calls.append(("device", d)) or "dev")
    monkeypatch.setattr(ad, "load_for_analysis",
                        lambda m, w, d: calls.append(("load", m, w, d)) or ("net", SimpleNamespace(preprocess=pre),
                                                                            "ident"))
    monkeypatch.setattr(ad, "FeatureStore", lambda: "default-store")
    monkeypatch.setattr(ad, "vit_geometry", lambda net: calls.append(("geometry", net)) or {"grid": (4, 6),
                                                                                              "patch_size": 8})
    product = {"unit_square": torch.zeros(1, 1, 1), "pixels": torch.ones(1, 1, 1)}

    def fake_extract(net, ident, dataset, products, **kw):
        calls.append(("extract", net, ident, dataset, list(products), type(products["ad"]), kw))
        return {"ad": product, "_meta": {}}
    monkeypatch.setattr(ad, "extract", fake_extract)
    profile = _RecordingProfile("t", {"models": ["zoo-mae"], "device": "dev0",
                                      "attention_distance": {"dataset": "dist-set"}, "_calls": []})
    result, uniform = ad._extract("zoo-mae", profile, "w", None, None, True)
    assert result is product and profile.raw["_calls"] == [("dist-set", pre)]
    assert calls == [("device", "dev0"), ("load", "zoo-mae", "w", "dev"),
                     ("extract", "net", "ident", "dataset:dist-set", ["ad"], AttentionDistance,
                      {"transform_id": transform_key(pre), "store": "default-store", "device": "dev",
                       "progress": True}),
                     ("geometry", "net")]
    assert uniform == {"unit_square": uniform_attention_distance(4),
                       "pixels": uniform_attention_distance(4, "pixels", 8)}
    assert uniform["unit_square"] == pytest.approx(0.6693383231266959)        # hand-checked levels of a 4 x 4 grid
    assert uniform["pixels"] == pytest.approx(16.064119755040704)
    calls.clear()
    ad._extract("zoo-mae", profile, None, "cpu", "s", False)
    assert calls[0] == ("device", "cpu") and calls[1][2:] == (None, "dev")
    assert calls[2][6]["store"] == "s" and calls[2][6]["progress"] is False


def test_distance_table_by_hand():
    d = torch.tensor([[[0.25, 0.5]], [[0.75, 1.0]], [[0.5, 0.0]]])           # [N=3, L=1, H=2]
    result = {"unit_square": d, "pixels": 4 * d}
    t = ad.distance_table("zoo-dino", result, {"unit_square": 0.5, "pixels": 2.5})
    assert list(t.columns) == ["model", "method", "block", "head", "distance", "distance_std", "n_images", "uniform"]
    assert t.method.tolist() == ["unit_square", "unit_square", "pixels", "pixels"]
    assert t.model.tolist() == ["zoo-dino"] * 4 and t.block.tolist() == [1] * 4 and t["head"].tolist() == [0, 1, 0, 1]
    assert t.distance.tolist() == pytest.approx([0.5, 0.5, 2.0, 2.0])
    assert t.distance_std.tolist() == pytest.approx([0.25, 0.5, 1.0, 2.0])          # ddof = 1 over images
    assert t.n_images.tolist() == [3] * 4 and t.uniform.tolist() == [0.5, 0.5, 2.5, 2.5]
    two = ad.distance_table("m", {"unit_square": d[:2], "pixels": d[:2]}, {"unit_square": 0.0, "pixels": 0.0})
    assert two.distance_std.tolist() == pytest.approx([0.5 ** 0.5 / 2] * 4)              # two images: ddof = 1
    one = ad.distance_table("m", {"unit_square": d[:1], "pixels": d[:1]}, {"unit_square": 0.0, "pixels": 0.0})
    assert one.distance_std.tolist() == [0.0] * 4 and one.distance.tolist() == [0.25, 0.5, 0.25, 0.5]
    two_blocks = ad.distance_table("m", {"unit_square": torch.arange(4.0).reshape(1, 2, 2), "pixels": torch.zeros(1, 2,
                                                                                                                   2)},
                                   {"unit_square": 0.0, "pixels": 0.0})
    assert two_blocks.block.tolist()[:4] == [1, 1, 2, 2] and two_blocks.distance.tolist()[:4] == [0.0, 1.0, 2.0, 3.0]


def test_per_image_table_default_method_and_order():
    d = torch.tensor([[[0.25, 0.75], [0.5, 1.0]], [[0.0, 0.5], [1.0, 1.0]], [[0.125, 0.125], [0.0, 0.25]]])
    t = ad.per_image_table("zoo-dino", {"unit_square": d, "pixels": 100 * d})
    assert list(t.columns) == ["model", "image", "block", "distance"]
    assert t.image.tolist() == [0, 0, 1, 1, 2, 2] and t.block.tolist() == [1, 2, 1, 2, 1, 2]
    assert t.distance.tolist() == [0.5, 0.75, 0.25, 1.0, 0.125, 0.125] and set(t.model) == {"zoo-dino"}


def _table(model: str, per_block: list[float], method="unit_square", uniform=0.5, heads=(0.0, 0.0)) -> pd.DataFrame:
    """Per-head rows: head h of block b has per_block[b] + heads[h] (so the mean over heads is per_block[b] +
    mean(heads))."""
    return pd.DataFrame([{"model": model, "method": method, "block": b + 1, "head": h, "distance": v + dh,
                          "uniform": uniform} for b, v in enumerate(per_block) for h, dh in enumerate(heads)])


def test_layer_summary_by_hand():
    table = pd.concat([_table("zoo-mae", [0.5, 0.25, 0.125, 0.375], heads=(-0.125, 0.125)),
                       _table("zoo-mae", [9.0, 9.0, 9.0, 9.0], method="pixels", uniform=30.0),
                       _table("zoo-dino", [0.25, 0.5, 0.125, 0.75, 0.625], uniform=0.625)], ignore_index=True)
    s = ad.layer_summary(table)
    assert list(s.columns) == ["model", "family", "depth", "first", "dip_block", "dip", "last", "late_rise",
                               "uniform"]
    assert s.model.tolist() == ["zoo-mae", "zoo-dino"]                 # first seen, not sorted
    assert s.family.tolist() == ["masked-reconstruction", "self-distillation"]
    assert s.depth.tolist() == [4, 5] and s["first"].tolist() == [0.5, 0.25]
    assert s.dip_block.tolist() == [3, 3] and s.dip.tolist() == [0.125, 0.125]
    assert s["last"].tolist() == [0.375, 0.625] and s.late_rise.tolist() == [0.25, 0.5]
    assert s.uniform.tolist() == [0.5, 0.625]
    px = ad.layer_summary(table, "pixels")
    assert px.model.tolist() == ["zoo-mae"] and px["first"].tolist() == [9.0] and px.uniform.tolist() == [30.0]


def test_layer_summary_of_a_one_block_one_head_model():
    s = ad.layer_summary(_table("zoo-clip", [0.375], uniform=0.75, heads=(0.0,)))
    assert s.drop(columns="family").iloc[0].tolist() == ["zoo-clip", 1, 0.375, 1, 0.375, 0.375, 0.0, 0.75]


def test_layer_summary_reads_blocks_in_order_even_when_rows_are_shuffled():
    table = _table("zoo-dino", [0.75, 0.25, 0.5]).sample(frac=1.0, random_state=3)
    s = ad.layer_summary(table)
    assert (s["first"].item(), s.dip_block.item(), s["last"].item()) == (0.75, 2, 0.5)


def test_last_block_takes_the_deepest_block_in_image_order():
    per = pd.DataFrame({"model": ["a"] * 6 + ["b"] * 2, "image": [2, 0, 1, 0, 1, 2, 0, 1],
                        "block": [3, 3, 3, 1, 1, 1, 3, 3], "distance": [0.5, 0.25, 0.75, 9.0, 9.0, 9.0, 0.0, 0.0]})
    last = ad._last_block(per, "a")
    assert last.dtype == torch.float64 and last.tolist() == [0.25, 0.75, 0.5]


def test_check_claims_defaults_to_the_profiles_models_and_unit_square(monkeypatch):
    seen = []

    def fake(model, profile, *, method, weights, device, store, progress):
        seen.append((model, method, weights, device, store, progress))
        level = {"zoo-dino": 0.75, "zoo-mae": 0.25}[model]
        return pd.DataFrame({"model": model, "image": [0, 1], "block": 1, "distance": [level, level]})
    monkeypatch.setattr(ad, "per_image", fake)
    profile = Profile("t", {"models": ["zoo-dino", "zoo-mae"]})
    rows = ad.check_claims(None, profile, device="cpu", store="s", progress=True)
    assert seen == [("zoo-dino", "unit_square", None, "cpu", "s", True),
                    ("zoo-mae", "unit_square", None, "cpu", "s", True)]
    assert [(r.subject, r.reason) for r in rows] == [
        ("global-late minus reconstruction group", "no untrained baseline of the same architecture in this profile"),
        ("zoo-dino", "no untrained baseline of the same architecture in this profile"),
        ("zoo-mae", "no untrained baseline of the same architecture in this profile")]

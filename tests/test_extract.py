"""Extraction: capture sites, attention maps with fused attention off, products, and the feature store."""
from __future__ import annotations

import pytest
import torch

from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.extract import (AttentionDistance, Capture, ClsAttention, FeatureStore, GramMatrices, PooledTokens,
                              extract, unfused_attention, vit_geometry)
from vitscope.kernels import attention as attention_k
from vitscope.kernels import cka as cka_k
from vitscope.models import Preprocess

PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)
TRANSFORM_ID = {"resize": 32}


def test_capture_shapes_and_one_map_per_block(tiny_vit):
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), Capture(tiny_vit, {"block", "norm1", "qkv", "fc1", "attn"}) as cap:
        final = tiny_vit.forward_features(x)
        out = cap.collect()
    assert [len(v) for v in out.values()] == [3] * 5
    assert out["block"][0].shape == (2, 17, 48) and out["qkv"][0].shape == (2, 17, 144)
    assert out["fc1"][0].shape == (2, 17, 192) and out["attn"][0].shape == (2, 3, 17, 17)
    torch.testing.assert_close(out["attn"][1].sum(-1), torch.ones(2, 3, 17))
    # the last block's output, normed, is what forward_features returns
    with torch.no_grad():
        torch.testing.assert_close(tiny_vit.norm(out["block"][-1]), final)


def test_captured_attention_is_softmax_of_qk(tiny_vit):
    """Independent recomputation of block 0's attention from its captured qkv output."""
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode(), Capture(tiny_vit, {"qkv", "attn"}) as cap:
        tiny_vit.forward_features(x)
        out = cap.collect()
    qkv = out["qkv"][0].reshape(1, 17, 3, 3, 16).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    ref = torch.softmax(q @ k.transpose(-2, -1) / 16 ** 0.5, dim=-1)
    torch.testing.assert_close(out["attn"][0], ref, atol=1e-5, rtol=1e-5)


def test_fused_attention_is_restored(tiny_vit):
    before = [b.attn.fused_attn for b in tiny_vit.blocks]
    with unfused_attention(tiny_vit):
        assert not any(b.attn.fused_attn for b in tiny_vit.blocks)
    assert [b.attn.fused_attn for b in tiny_vit.blocks] == before


def test_capture_rejects_unknown_site(tiny_vit):
    with pytest.raises(ValueError, match="bogus"):
        Capture(tiny_vit, {"bogus"})


def test_geometry(tiny_vit):
    g = vit_geometry(tiny_vit)
    assert g == {"depth": 3, "num_heads": 3, "embed_dim": 48, "n_prefix": 1, "grid": (4, 4), "patch_size": 8}


@pytest.fixture
def dataset(synthetic_root, manifest):
    return ImageFolderSubset(synthetic_root, manifest, eval_transform(PRE), per_class=6, num_classes=5)   # 30


def _products():
    return {"ad": AttentionDistance(), "cls": ClsAttention(), "pooled": PooledTokens(),
            "grams": GramMatrices(capture_sites=("block", "norm1"), tokens="all")}


def test_products_match_direct_computation(tiny_vit, dataset, tmp_path):
    out = extract(tiny_vit, {"name": "tiny"}, dataset, _products(), transform_id=TRANSFORM_ID,
                  store=FeatureStore(tmp_path), batch_size=8, order="shuffled", progress=False)
    order = out["_meta"]["order"]
    assert sorted(order.tolist()) == list(range(30)) and order.tolist() != list(range(30))
    images = torch.stack([dataset[i][0] for i in order.tolist()])
    with torch.inference_mode(), Capture(tiny_vit, {"block", "norm1", "attn"}) as cap:
        tiny_vit.forward_features(images)
        ref = cap.collect()
    assert out["ad"]["unit_square"].shape == (30, 3, 3)
    torch.testing.assert_close(out["ad"]["unit_square"][:, 2],
                               attention_k.attention_distance(ref["attn"][2]).float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["cls"]["mean"][1],
                               attention_k.cls_attention_map(ref["attn"][1]).mean(0).float(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(out["pooled"]["mean"][:, 0], ref["block"][0][:, 1:].mean(1), atol=1e-5, rtol=1e-4)
    # batches of 8, 8, 8, 6; rows: block0..2 then norm1.0..2; the second batch is examples 8..15
    grams = out["grams"]
    assert sorted(grams) == ["batch0000", "batch0001", "batch0002", "batch0003"]
    assert grams["batch0001"].shape == (6, 8, 8) and grams["batch0003"].shape == (6, 6, 6)
    torch.testing.assert_close(grams["batch0001"][4], cka_k.gram(ref["norm1"][1][8:16]), atol=1e-3, rtol=1e-4)


def test_second_run_is_a_cache_hit_and_a_changed_key_recomputes(tiny_vit, dataset, tmp_path):
    store = FeatureStore(tmp_path)
    calls = []
    tiny_vit.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    base = {"model_id": {"name": "tiny"}, "batch_size": 8, "transform_id": TRANSFORM_ID}

    def run(products, **changed):
        kwargs = {**base, **changed}
        out = extract(tiny_vit, kwargs.pop("model_id"), dataset, products, store=store, progress=False, **kwargs)
        n, calls[:] = len(calls), []
        return out, n

    first, n = run(_products())
    assert n == 4                                   # 30 images in batches of 8: one pass for all four products
    again, n = run(_products())
    assert n == 0
    torch.testing.assert_close(again["ad"]["pixels"], first["ad"]["pixels"])
    torch.testing.assert_close(again["grams"]["batch0002"], first["grams"]["batch0002"])
    for changed in ({"model_id": {"name": "tiny", "weights": "other"}}, {"batch_size": 10}, {"order": "sorted"},
                    {"transform_id": {"resize": 48}}, {"limit": 16}):
        assert run({"ad": AttentionDistance()}, **changed)[1] > 0, f"{changed} should have missed the cache"
    # a product with other parameters misses; the stored sidecar key is checked in full, not just the hash
    assert run({"g": GramMatrices(tokens="cls")})[1] > 0


def test_partial_batch_under_four_is_refused_before_any_work(tiny_vit, dataset, tmp_path):
    with pytest.raises(ValueError, match="last batch of 2"):
        extract(tiny_vit, {"name": "tiny"}, dataset, {"ad": AttentionDistance()}, transform_id=TRANSFORM_ID,
                store=FeatureStore(tmp_path), batch_size=4, progress=False)

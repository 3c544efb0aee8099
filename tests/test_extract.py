"""Extraction: capture sites, attention maps with fused attention off, products, and the feature store."""
from __future__ import annotations

import pytest
import torch

from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.extract import (
    AttentionDistance,
    Capture,
    ClsAttention,
    FeatureStore,
    GramMatrices,
    PooledTokens,
    example_order,
    extract,
    unfused_attention,
    vit_geometry,
)
from vitscope.extract.run import library_versions
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
    torch.testing.assert_close(out["pooled"]["cls"][:, 2], ref["block"][2][:, 0], atol=1e-5, rtol=1e-4)
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


def test_last_batch_under_four_is_fine_without_grams_and_refused_with_them(tiny_vit, dataset, tmp_path):
    """Seam 3: the Gram product (HSIC_1's minimum n) owns the rule, not the extraction layer."""
    store = FeatureStore(tmp_path)
    out = extract(tiny_vit, {"name": "tiny"}, dataset, {"ad": AttentionDistance()}, transform_id=TRANSFORM_ID,
                  store=store, batch_size=4, progress=False)                                 # 30 = 7 x 4 + 2
    assert out["ad"]["unit_square"].shape == (30, 3, 3)
    with pytest.raises(ValueError, match=rf"last batch of 2.*'grams'.*at least {cka_k.HSIC1_MIN_N}"):
        extract(tiny_vit, {"name": "tiny"}, dataset, {"ad": AttentionDistance(), "grams": GramMatrices()},
                transform_id=TRANSFORM_ID, store=store, batch_size=4, progress=False)


def test_capture_sites_match_a_manual_forward_of_the_block(tiny_vit):
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), Capture(tiny_vit, {"block", "norm1", "qkv", "fc1", "norm2"}) as cap:
        tiny_vit.forward_features(x)
        out = cap.collect()
        blk = tiny_vit.blocks[1]
        h = out["block"][0]                                            # block 1's input is block 0's output
        n1 = torch.nn.functional.layer_norm(h, (48,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        qkv = n1 @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv.reshape(2, 17, 3, 3, 16).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
        attn_out = blk.attn.proj((a @ v).transpose(1, 2).reshape(2, 17, 48))
        h2 = h + attn_out
        n2 = torch.nn.functional.layer_norm(h2, (48,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        fc1 = n2 @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias
        block_out = h2 + blk.mlp.fc2(torch.nn.functional.gelu(fc1))
    for site, ref in (("norm1", n1), ("qkv", qkv), ("norm2", n2), ("fc1", fc1), ("block", block_out)):
        torch.testing.assert_close(out[site][1], ref, atol=1e-5, rtol=1e-5, msg=site)


def test_pooled_cls_is_token_zero_and_cls_grams_by_value(tiny_vit, dataset, tmp_path):
    out = extract(tiny_vit, {"name": "tiny"}, dataset, {"pooled": PooledTokens(),
                  "g": GramMatrices(capture_sites=("block",), tokens="cls")}, transform_id=TRANSFORM_ID,
                  store=FeatureStore(tmp_path), batch_size=8, progress=False)
    images = torch.stack([dataset[i][0] for i in out["_meta"]["order"].tolist()])
    with torch.inference_mode(), Capture(tiny_vit, {"block"}) as cap:
        tiny_vit.forward_features(images)
        ref = cap.collect()["block"]
    torch.testing.assert_close(out["pooled"]["cls"][:, 2], ref[2][:, 0], atol=1e-5, rtol=1e-4)
    cls8 = ref[1][8:16, 0].double()
    torch.testing.assert_close(out["g"]["batch0001"][1], cls8 @ cls8.T, atol=1e-4, rtol=1e-5)


def test_limit_keeps_the_first_n_and_order_depends_on_seed(tiny_vit, dataset, tmp_path):
    out = extract(tiny_vit, {"name": "tiny"}, dataset, {"p": PooledTokens()}, transform_id=TRANSFORM_ID,
                  store=FeatureStore(tmp_path), batch_size=8, limit=16, seed=3, progress=False)
    assert out["_meta"]["order"].tolist() == example_order(30, "shuffled", 3)[:16].tolist()
    assert example_order(30, "shuffled", 3).tolist() != example_order(30, "shuffled", 4).tolist()
    assert sorted(example_order(30, "shuffled", 4).tolist()) == list(range(30))
    assert example_order(30, "sorted", 9).tolist() == list(range(30))


def test_cache_key_holds_library_versions_but_not_tqdms(tiny_vit, dataset, tmp_path, monkeypatch):
    import timm
    import tqdm

    import vitscope
    store = FeatureStore(tmp_path)
    calls = []
    tiny_vit.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))

    def n_forwards():
        calls.clear()
        extract(tiny_vit, {"name": "tiny"}, dataset, {"ad": AttentionDistance()}, transform_id=TRANSFORM_ID,
                store=store, batch_size=10, progress=False)
        return len(calls)

    assert n_forwards() == 3
    monkeypatch.setattr(tqdm, "__version__", "99.0", raising=False)
    assert n_forwards() == 0                                     # tqdm cannot change a number
    for module, attr in ((timm, "__version__"), (torch, "__version__"), (vitscope.extract.run, "__version__")):
        with monkeypatch.context() as m:
            m.setattr(module, attr, "0.0.0-other")
            assert n_forwards() == 3, f"{module.__name__} version should be in the key"
    with monkeypatch.context() as m:
        m.setattr(AttentionDistance, "version", 99)
        assert n_forwards() == 3
    assert library_versions()["timm"] == timm.__version__


def test_dataloader_workers_give_identical_products(tiny_vit, dataset, tmp_path):
    products = lambda: {"ad": AttentionDistance(), "g": GramMatrices(capture_sites=("fc1",))}  # noqa: E731
    a = extract(tiny_vit, {"name": "tiny"}, dataset, products(), transform_id=TRANSFORM_ID,
                store=FeatureStore(tmp_path / "a"), batch_size=8, progress=False, num_workers=0)
    b = extract(tiny_vit, {"name": "tiny"}, dataset, products(), transform_id=TRANSFORM_ID,
                store=FeatureStore(tmp_path / "b"), batch_size=8, progress=False, num_workers=2)
    torch.testing.assert_close(a["ad"]["pixels"], b["ad"]["pixels"], atol=0, rtol=0)
    torch.testing.assert_close(a["g"]["batch0003"], b["g"]["batch0003"], atol=0, rtol=0)


def test_bf16_autocast_is_opt_in_and_keyed(tiny_vit, dataset, tmp_path):
    store = FeatureStore(tmp_path)
    kw = dict(transform_id=TRANSFORM_ID, store=store, batch_size=10, progress=False)
    full = extract(tiny_vit, {"name": "tiny"}, dataset, {"ad": AttentionDistance()}, **kw)
    bf16 = extract(tiny_vit, {"name": "tiny"}, dataset, {"ad": AttentionDistance()}, autocast="bfloat16", **kw)
    assert len(list((tmp_path / "tiny").glob("attention_distance-*.json"))) == 2     # two keys, two entries
    diff = (full["ad"]["unit_square"] - bf16["ad"]["unit_square"]).abs().max()
    assert 0 < diff < 0.05                                       # it did change precision, and only a little
    with pytest.raises(ValueError, match="autocast"):
        extract(tiny_vit, {"name": "tiny"}, dataset, {"ad": AttentionDistance()}, autocast="fp8", **kw)


def test_attention_distance_product_refuses_a_nan_map_by_block():
    """The product skips the probability checks on captured maps, so a NaN map must still stop it, naming the block
    (checked once per batch: on a GPU each check is a synchronisation)."""
    product = AttentionDistance()
    product.start({"depth": 2, "n_prefix": 1, "patch_size": 16, "grid": (2, 2)}, 2)
    product.begin_batch(2)
    good = torch.full((2, 1, 5, 5), 0.2)
    product.consume("attn", 0, good)
    bad = good.clone()
    bad[1, 0, 2, 3] = float("nan")
    product.consume("attn", 1, bad)
    with pytest.raises(ValueError, match=r"block\(s\) \[1\].*NaN"):
        product.end_batch()


def test_gram_product_refuses_non_finite_features_naming_site_and_block():
    product = GramMatrices(capture_sites=("block", "fc1"))
    product.start({"depth": 2, "n_prefix": 1, "patch_size": 16, "grid": (2, 2)}, 4)
    product.begin_batch(4)
    for site in ("block", "fc1"):
        for block in range(2):
            x = torch.randn(4, 5, 3)
            if (site, block) == ("fc1", 0):
                x[2, 1, 0] = float("inf")
            product.consume(site, block, x)
    with pytest.raises(ValueError, match=r"\('fc1', 0\).*NaN or Inf"):
        product.end_batch()

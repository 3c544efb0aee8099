"""vitscope.extract capture, products and store, value by value (issue 17: survivors in vit_geometry,
has_cls_token, capture_for, GramMatrices.consume / end_batch, ClsAttention.consume, Product.key and
FeatureStore.get_shard).

A non-square (4 x 8) patch model, whole error and warning messages (and where a warning points), every key field,
the float64 accumulator by value, and NaN features reaching the product's own per-batch check.
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import timm
import torch

from vitscope.extract import (
    AttentionDistance,
    Capture,
    ClsAttention,
    FeatureStore,
    GramMatrices,
    PooledTokens,
    vit_geometry,
)
from vitscope.extract.capture import has_cls_token
from vitscope.extract.cnn_capture import CnnCapture, capture_for, cnn_geometry
from vitscope.kernels import cka as cka_k
from warning_origin import warned_at_the_call


def _tiny_resnet():
    return timm.create_model("resnet18", layers=(1, 2, 1, 1), channels=(8, 16, 24, 32), num_classes=0).eval()


# ------------------------------------------------------------------------------------------------ geometry


def test_vit_geometry_of_a_non_square_patch_reads_the_first_patch_side():
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=(4, 8), embed_dim=16, depth=2,
                              num_heads=2, num_classes=0, reg_tokens=2)
    assert vit_geometry(model) == {"depth": 2, "num_heads": 2, "embed_dim": 16, "n_prefix": 3, "grid": (8, 4),
                                   "patch_size": 4}
    stand_in = SimpleNamespace(blocks=[SimpleNamespace(attn=SimpleNamespace(num_heads=5))] * 3, embed_dim=7,
                               patch_embed=SimpleNamespace(grid_size=[3, 2], patch_size=[8, 16]))
    got = vit_geometry(stand_in)                          # no num_prefix_tokens: one (the CLS token)
    assert got == {"depth": 3, "num_heads": 5, "embed_dim": 7, "n_prefix": 1, "grid": (3, 2), "patch_size": 8}
    assert type(got["grid"]) is tuple and type(got["patch_size"]) is int
    stand_in.patch_embed.patch_size = 6                   # an int patch size
    assert vit_geometry(stand_in)["patch_size"] == 6


@pytest.mark.parametrize("model", [object(), SimpleNamespace(blocks=[]), SimpleNamespace(patch_embed=None)],
                         ids=["neither", "no-patch-embed", "no-blocks"])
def test_vit_geometry_refuses_what_is_not_a_vit_with_the_whole_message(model):
    with pytest.raises(TypeError) as err:
        vit_geometry(model)
    assert str(err.value) == (f"{type(model).__name__} is not a timm ViT (no .blocks / .patch_embed); token-level "
                              "capture supports timm VisionTransformer and Beit models.")


def test_has_cls_token_reads_has_class_token_first_then_cls_token():
    assert has_cls_token(SimpleNamespace(cls_token=torch.zeros(1))) is True
    assert has_cls_token(SimpleNamespace(cls_token=None)) is False
    assert has_cls_token(SimpleNamespace()) is False
    assert has_cls_token(SimpleNamespace(has_class_token=False, cls_token=torch.zeros(1))) is False
    assert has_cls_token(SimpleNamespace(has_class_token=1)) is True
    plain = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=16, depth=1,
                              num_heads=2, num_classes=0)
    assert has_cls_token(plain) is True
    del plain.has_class_token                             # older timm: only cls_token tells
    assert has_cls_token(plain) is True


# ------------------------------------------------------------------------------------------------ capture_for


def test_capture_for_picks_the_capture_and_geometry():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                            num_classes=0)
    assert capture_for(vit, [ClsAttention()]) == (Capture, vit_geometry(vit))
    cnn = _tiny_resnet()
    assert capture_for(cnn, [GramMatrices(tokens="mean"), PooledTokens()]) == (CnnCapture, cnn_geometry(cnn))


def test_capture_for_refuses_cnn_products_with_the_whole_message():
    cnn = _tiny_resnet()
    with pytest.raises(ValueError) as err:
        capture_for(cnn, [GramMatrices(tokens="all"), GramMatrices(tokens="cls")])
    assert str(err.value) == ("product GramMatrices asks for tokens='cls', but ResNet is a CNN and has no CLS token; "
                              "use tokens='all' (every spatial position) or 'mean' (global average pool)")
    for product, sites in ((AttentionDistance(), "['attn']"), (GramMatrices(capture_sites=("norm1", "fc1")),
                                                               "['fc1', 'norm1']")):
        with pytest.raises(ValueError) as err:
            capture_for(cnn, [PooledTokens(), product])
        assert str(err.value) == (f"product {type(product).__name__} needs site(s) {sites}, which ResNet (a CNN) "
                                  "does not have; CNN sites: ('block',)")


# ------------------------------------------------------------------------------------------------ products


def test_product_keys_hold_name_version_and_every_field():
    assert ClsAttention().key() == {"product": "cls_attention", "version": 1}
    assert AttentionDistance().key() == {"product": "attention_distance", "version": 3}
    assert PooledTokens(site="norm1").key() == {"product": "pooled", "version": 1, "site": "norm1"}
    assert GramMatrices(capture_sites=("fc1",), tokens="spatial").key() == {
        "product": "grams", "version": 3, "capture_sites": ("fc1",), "tokens": "spatial"}


def test_cls_attention_accumulates_in_float64_by_value():
    gen = torch.Generator().manual_seed(5)
    attn = torch.softmax(4 * torch.randn(64, 2, 17, 17, generator=gen), dim=-1)      # float32, 1 CLS + 4x4 grid
    product = ClsAttention()
    product.start({"depth": 2, "grid": (4, 4), "n_prefix": 1}, 64)
    product.begin_batch(64)
    product.consume("attn", 1, attn)
    state = product.state_dict()
    exact = attn[:, :, 0, 1:].double().sum(0).reshape(2, 4, 4)
    assert state["_count"] == 64 and state["_sum"].dtype == torch.float64
    assert torch.equal(state["_sum"][0], torch.zeros(2, 4, 4, dtype=torch.float64))
    assert torch.equal(state["_sum"][1], exact)
    # a float32 sum would differ (so the comparison above can fail)
    assert not torch.equal(attn[:, :, 0, 1:].sum(0).double().reshape(2, 4, 4), exact)
    assert torch.equal(product.finish()["mean"][1], (exact / 64).float())


def _nan_batch(P=1):
    x = torch.randn(4, P + 4, 6, generator=torch.Generator().manual_seed(1))
    x[2, P + 1, 3] = float("nan")                           # a spatial token: every reduction but "cls" sees it
    return x


@pytest.mark.parametrize("tokens", ["all", "spatial"])
def test_non_finite_features_reach_the_grams_own_check_with_its_message(tokens, monkeypatch):
    product = GramMatrices(capture_sites=("block", "fc1"), tokens=tokens)
    product.start({"depth": 2, "n_prefix": 2, "grid": (2, 2)}, 4)
    product.begin_batch(4)
    calls = []
    real = cka_k.gram_tokens
    monkeypatch.setattr(cka_k, "gram_tokens", lambda *a, **k: calls.append(k) or real(*a, **k))
    good = torch.randn(4, 6, 6, generator=torch.Generator().manual_seed(2))
    for site, block, x in (("block", 0, good), ("block", 1, _nan_batch(2)), ("fc1", 0, good), ("fc1", 1, good)):
        product.consume(site, block, x)                     # no check here: one per batch, in end_batch
    assert calls == [{"check_finite": False}] * 4
    with pytest.raises(ValueError) as err:
        product.end_batch()
    assert str(err.value) == ("[('block', 1)]: the captured features hold NaN or Inf values (or overflow float32 in "
                              "their Gram); check the model's weights and autocast")


def test_mean_grams_are_checked_by_the_gram_kernel_at_once():
    # "mean" / "cls" reduce to [n, p] features first: cka.gram checks them itself (cheap), in consume
    product = GramMatrices(tokens="mean")
    product.start({"depth": 2, "n_prefix": 2, "grid": (2, 2)}, 4)
    product.begin_batch(4)
    with pytest.raises(ValueError) as err:
        product.consume("block", 1, _nan_batch(2))
    assert str(err.value) == ("X (shape (4, 6)) holds NaN or Inf values; check the model's outputs or recompute the "
                              "cached features")


def test_finite_spatial_grams_by_value():
    product = GramMatrices(tokens="spatial")
    product.start({"depth": 1, "n_prefix": 2, "grid": (2, 2)}, 4)
    product.begin_batch(4)
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    product.consume("block", 0, x)
    product.end_batch()
    flat = x[:, 2:].reshape(4, -1)
    torch.testing.assert_close(product.finish()["batch0000"][0], flat @ flat.T, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ store warnings


def _damaged_shard(tmp_path):
    store = FeatureStore(tmp_path)
    path = store.put_shard("m", {"k": 1}, {"a": torch.arange(4.0)}, 2)
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    return store, path


def _points_at_caller(w) -> bool:
    return warned_at_the_call(w, __file__)


def test_a_damaged_shard_warning_is_whole_and_points_at_the_caller(tmp_path):
    store, path = _damaged_shard(tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert store.get_shard("m", {"k": 1}) is None
    [w] = seen
    assert w.category is UserWarning and _points_at_caller(w)
    assert str(w.message) == (f"Ignoring the damaged extraction shard {path} (ValueError: digest mismatch): the "
                              "extraction starts from its first batch.")


def test_damaged_entry_warnings_are_whole_and_point_at_the_caller(tmp_path):
    store = FeatureStore(tmp_path)
    data = store.put("m", "p", {"k": 1}, {"x": torch.arange(3.0)})
    data.write_bytes(data.read_bytes()[:-2])
    for setup, expected in (
            (lambda: None, f"Cache file {data} does not match its recorded checksum (truncated or corrupted): "
                           "recomputing the entry."),
            (lambda: data.with_suffix(".json").write_text("{not json"),
             f"Unreadable cache sidecar {data.with_suffix('.json')}: recomputing the entry.")):
        setup()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert store.get("m", "p", {"k": 1}) is None
        [w] = seen
        assert w.category is UserWarning and _points_at_caller(w) and str(w.message) == expected

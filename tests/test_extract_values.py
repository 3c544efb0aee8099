"""vitscope.extract, value by value (issue 17: mutants in it survived the shape-level tests).

Dense tiling's resizes are compared with ``torch.nn.functional.interpolate`` called with the documented settings on
sizes worked out here by hand (non-square images, a non-default short-side factor, a downscale where antialiasing
shows), label masks with hand-made nearest-exact cases, the streamed attention IoU with a float64 NumPy re-computation
(register tokens, a non-default mass), and every error with its whole message.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from vitscope.extract import (
    AlignedAttention,
    ClsAttention,
    ClsMapStats,
    GramMatrices,
    QueryAttention,
    attention_map_products,
    layer_labels,
)
from vitscope.extract.cnn_capture import CnnCapture, cnn_geometry
from vitscope.extract.dense import model_geometry, resize_for_tiling, resize_mask
from vitscope.extract.iou_products import AttentionIoU, spatial_mean_maps
from vitscope.extract.products import AttentionDistance, PooledTokens, Product

# ------------------------------------------------------------------------------------------------ model_geometry


class _Intermediates:
    def forward_intermediates(self, *args, **kwargs):
        raise AssertionError("model_geometry must not run the model")


class NoPatchEmbed(_Intermediates):
    pass


class NoIntermediates:
    def __init__(self):
        self.patch_embed = SimpleNamespace(img_size=(32, 32), patch_size=(8, 8))


class FakeViT(_Intermediates):
    def __init__(self, img_size, patch_size):
        self.patch_embed = SimpleNamespace(img_size=img_size, patch_size=patch_size)


def _not_a_vit(name):
    return (f"{name} is not a timm VisionTransformer (no patch_embed / forward_intermediates); dense tiling needs "
            "a ViT")


@pytest.mark.parametrize("model", [NoPatchEmbed(), NoIntermediates(), object()], ids=["no-patch-embed",
                                                                                       "no-intermediates", "neither"])
def test_model_geometry_refuses_what_is_not_a_vit_naming_its_type(model):
    with pytest.raises(TypeError) as err:
        model_geometry(model)
    assert str(err.value) == _not_a_vit(type(model).__name__)


@pytest.mark.parametrize("img_size, patch_size", [((32, 48), (8, 8)), ((48, 32), (8, 8)), ((32, 32), (8, 4)),
                                                  ((32, 32), (4, 8)), ((32, 48), (8, 4))])
def test_model_geometry_refuses_a_non_square_window_or_patch_on_either_axis(img_size, patch_size):
    with pytest.raises(ValueError) as err:
        model_geometry(FakeViT(img_size, patch_size))
    assert str(err.value) == (f"dense tiling needs square inputs and patches; got img_size {img_size}, "
                              f"patch {patch_size}")


def test_model_geometry_of_square_models():
    assert model_geometry(FakeViT((48, 48), (16, 16))) == (48, 16)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=40, patch_size=8, embed_dim=24,
                              depth=1, num_heads=2, num_classes=0)
    got = model_geometry(model)
    assert got == (40, 8) and all(type(v) is int for v in got)


# ------------------------------------------------------------------------------------------------ resize_for_tiling


def _reference_resize(image, size):
    return F.interpolate(image[None].float(), size=size, mode="bicubic", antialias=True, align_corners=False)[0]


@pytest.mark.parametrize("shape, factor, size", [
    # short side -> factor * window; long side 140 * 48/90 = 74.7 px = 9.33 patches of 8 -> 9 patches = 72 px
    ((3, 90, 140), 3, (48, 72)),
    ((3, 140, 90), 3, (72, 48)),
    # the default factor 2: short side 32; 140 * 32/90 = 49.8 px = 6.2 patches -> 48 px
    ((3, 90, 140), None, (32, 48)),
    # an upscale: 10 x 13 px -> 48 x 62.4 px = 7.8 patches -> 64 px
    ((3, 10, 13), 3, (48, 64)),
])
def test_resize_for_tiling_is_antialiased_bicubic_to_the_hand_computed_size(shape, factor, size):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(shape, generator=gen, dtype=torch.float64)
    got = resize_for_tiling(image, 16, 8) if factor is None else resize_for_tiling(image, 16, 8, factor)
    assert got.dtype == torch.float32 and tuple(got.shape) == (3, *size)
    assert torch.equal(got, _reference_resize(image, size))
    # and none of the other settings gives the same picture (so the comparison above can fail)
    for other in (dict(antialias=False, align_corners=False), dict(antialias=True, align_corners=True)):
        plain = F.interpolate(image[None].float(), size=size, mode="bicubic", **other)[0]
        assert (got - plain).abs().max() > 1e-3


def test_resize_for_tiling_reads_integer_images_as_floats():
    image = torch.arange(3 * 20 * 30, dtype=torch.int64).reshape(3, 20, 30) % 256
    got = resize_for_tiling(image.to(torch.uint8), 16, 8, 1)                  # 16 x 24 px
    assert torch.equal(got, _reference_resize(image.float(), (16, 24)))


@pytest.mark.parametrize("shape", [(4, 20, 30), (1, 20, 30), (3, 20, 30, 1), (20, 30), (3,)])
def test_resize_for_tiling_refuses_what_is_not_a_three_channel_image(shape):
    with pytest.raises(ValueError) as err:
        resize_for_tiling(torch.zeros(shape), 16, 8)
    assert str(err.value) == f"image must be [3, h, w]; got {shape}"


# ------------------------------------------------------------------------------------------------ resize_mask


def test_resize_mask_is_nearest_exact_by_hand():
    mask = torch.tensor([[10 * r + c for c in range(5)] for r in range(5)], dtype=torch.int64) + 1000
    # nearest-exact samples source pixel floor((i + 0.5) * 5/3) = 0, 2, 4 (plain "nearest" would take 0, 1, 3)
    assert torch.equal(resize_mask(mask, (3, 3)), torch.tensor([[1000, 1002, 1004],
                                                                [1020, 1022, 1024],
                                                                [1040, 1042, 1044]]))
    # upscaling 2 -> 3: floor((i + 0.5) * 2/3) = 0, 1, 1 ("nearest": 0, 0, 1); non-square sizes keep their axes
    small = torch.tensor([[7, 9]], dtype=torch.uint8)
    got = resize_mask(small, (2, 3))
    assert got.dtype == torch.uint8 and torch.equal(got, torch.tensor([[7, 9, 9], [7, 9, 9]], dtype=torch.uint8))
    tall = resize_mask(torch.tensor([[1], [2]]), (3, 1))
    assert tall.dtype == torch.int64 and tall[:, 0].tolist() == [1, 2, 2]


def test_resize_mask_keeps_boolean_masks_boolean():
    mask = torch.tensor([[True, False, False, True, True]])
    got = resize_mask(mask, (1, 3))
    assert got.dtype == torch.bool and got.tolist() == [[True, False, True]]


@pytest.mark.parametrize("shape", [(1, 5, 5), (5,), (2, 1, 5, 5)])
def test_resize_mask_refuses_what_is_not_a_2d_mask(shape):
    with pytest.raises(ValueError) as err:
        resize_mask(torch.zeros(shape, dtype=torch.int64), (3, 3))
    assert str(err.value) == f"mask must be [h, w]; got {shape}"


# ------------------------------------------------------------------------------------------------ attention IoU


def _attention(B, H, T, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(B, H, T, T, generator=gen, dtype=torch.float64), -1).float()


def _np_spatial_mean(attn, P):
    a = attn.double().numpy()[:, :, P:, P:]
    rows = a / a.sum(-1, keepdims=True)
    G = int(round(np.sqrt(a.shape[-1])))
    return rows.mean(2).reshape(*a.shape[:2], G, G)


def _np_cls(attn, P):
    a = attn.double().numpy()[:, :, 0, P:]
    G = int(round(np.sqrt(a.shape[-1])))
    return (a / a.sum(-1, keepdims=True)).reshape(*a.shape[:2], G, G)


def _np_mass_mask(maps, mass):
    """DINO's rule, one map at a time: the most attended tokens (stable order) until their share reaches mass."""
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    out = np.zeros(flat.shape, bool)
    for i, v in enumerate(flat):
        share = 0.0
        for j in np.argsort(-v, kind="stable"):
            if share >= mass:
                break
            out[i, j] = True
            share += v[j] / v.sum()
    return out.reshape(maps.shape)


def _np_fraction(mask, G):
    B, S, _ = mask.shape
    return mask.reshape(B, G, S // G, G, S // G).mean((2, 4))


def _np_iou(pred, target):
    p, t = pred.astype(float), target.astype(float)
    inter = (p * t).sum((-2, -1))
    return inter / (p.sum((-2, -1)) + t.sum((-2, -1)) - inter)


@pytest.mark.parametrize("P", [0, 2])
def test_spatial_mean_maps_against_numpy(P):
    attn = _attention(2, 3, P + 16, seed=1)
    got = spatial_mean_maps(attn, P)
    assert tuple(got.shape) == (2, 3, 4, 4)
    np.testing.assert_allclose(got.double().numpy(), _np_spatial_mean(attn, P), rtol=1e-6, atol=1e-7)


def _masks(B, S, seed):
    """Object masks at 16 px for a 4x4 grid: random rectangles, so token fractions take many values."""
    gen = np.random.default_rng(seed)
    out = np.zeros((B, S, S), bool)
    for b in range(B):
        y0, x0 = gen.integers(0, S // 2, 2)
        y1, x1 = gen.integers(S // 2 + 1, S + 1, 2)
        out[b, y0:y1, x0:x1] = True
    out[0] = False
    out[0, :, :S * 3 // 8] = True        # token columns 0 (all object) and 1 (exactly half: object, >= 0.5)
    return torch.from_numpy(out)


def test_attention_iou_against_a_numpy_recomputation_with_registers_and_another_mass():
    P, G, L, H, mass = 2, 4, 2, 3, 0.3            # 2 prefix tokens (CLS + 1 register), not the default 0.6 mass
    product = AttentionIoU(mass=mass, masks="m")
    geometry = {"n_prefix": P, "grid": (G, G), "depth": L}
    batches = [(_attention(3, H, P + G * G, seed=10 + b), _masks(3, 16, seed=b)) for b in range(2)]
    product.start(geometry, 6)
    for attn, mask in batches:
        product.extras = {"object_mask": mask}
        product.begin_batch(3)
        for block in range(L):
            product.consume("attn", block, attn.roll(block, dims=1))          # each block its own maps
        product.end_batch()
    got = product.finish()
    assert sorted(got) == ["cls", "cls_pixel", "object_share", "spatial", "spatial_pixel"]
    assert got["object_share"][[0, 3]].tolist() == [0.5, 0.5]         # 2 of 4 token columns, the half one included

    expected = {k: [] for k in got}
    for attn, mask in batches:
        fraction = _np_fraction(mask.numpy(), G)                                       # [B, G, G]
        targets = {"": fraction >= 0.5, "_pixel": fraction}
        expected["object_share"].append(targets[""].mean((-2, -1)))
        for name, maps_of in (("cls", _np_cls), ("spatial", _np_spatial_mean)):
            per_block = {s: [] for s in targets}
            for block in range(L):
                pred = _np_mass_mask(maps_of(attn.roll(block, dims=1), P), mass)        # [B, H, G, G]
                for suffix, target in targets.items():
                    per_block[suffix].append(_np_iou(pred, target[:, None]))           # [B, H]
            for suffix in targets:
                expected[name + suffix].append(np.stack(per_block[suffix], 1))         # [B, L, H]
    for key, parts in expected.items():
        assert got[key].dtype == torch.float32
        np.testing.assert_allclose(got[key].double().numpy(), np.concatenate(parts), rtol=1e-6, atol=1e-7,
                                   err_msg=key)


def test_attention_iou_refuses_batches_without_their_masks():
    product = AttentionIoU()
    product.start({"n_prefix": 1, "grid": (4, 4), "depth": 1}, 4)
    for extras in ("never set", None, {}, {"other": torch.zeros(2, 16, 16)}):
        if extras != "never set":                       # a product used outside extract() has no extras at all
            product.extras = extras
        with pytest.raises(ValueError) as err:
            product.begin_batch(2)
        assert str(err.value) == ("AttentionIoU needs object masks: the dataset must return (image, label, "
                                  "{'object_mask': mask}) items, as vitscope.data.coco.CocoInstances does with a "
                                  "mask_transform; this dataset returns none")
    product.extras = {"object_mask": torch.zeros(3, 16, 16, dtype=torch.bool)}
    with pytest.raises(ValueError) as err:
        product.begin_batch(2)
    assert str(err.value) == "object_mask holds 3 masks for a batch of 2 images"


@pytest.mark.parametrize("product", [AttentionIoU(), ClsAttention(), ClsMapStats(), AlignedAttention(),
                                     QueryAttention(), AttentionDistance(), PooledTokens(), GramMatrices()],
                         ids=lambda p: type(p).__name__)
def test_every_product_keeps_the_base_record_of_start_and_begin_batch(product):
    # Product.start / begin_batch record the geometry, image count and batch size that every product may read
    # (_Streamed counts images by the batch size): an override must hand them on unchanged.
    geometry = {"n_prefix": 1, "grid": (2, 2), "depth": 1, "num_heads": 1, "patch_size": 8, "embed_dim": 4}
    product.start(geometry, 7)
    assert product.geometry is geometry and product.n_images == 7
    product.extras = {"object_mask": torch.zeros(5, 8, 8, dtype=torch.bool)}
    product.begin_batch(5)
    assert product._batch_size == 5


# ------------------------------------------------------------------------------------------------ products


def test_attention_map_products_are_the_four_pages_products():
    got = attention_map_products()
    assert list(got) == ["cls", "cls_stats", "aaam", "queries"]
    assert [type(p) for p in got.values()] == [ClsAttention, ClsMapStats, AlignedAttention, QueryAttention]
    assert got["cls_stats"].n_examples == 4
    assert attention_map_products(n_examples=2)["cls_stats"].n_examples == 2
    assert attention_map_products()["cls"] is not got["cls"]               # fresh accumulators on every call


def test_layer_labels_are_site_major_and_one_based():
    assert layer_labels(GramMatrices(), 3) == [("block", 1), ("block", 2), ("block", 3)]
    assert layer_labels(GramMatrices(capture_sites=("fc1", "norm1")), 2) == [("fc1", 1), ("fc1", 2), ("norm1", 1),
                                                                             ("norm1", 2)]
    assert layer_labels(GramMatrices(), 0) == []


class Unresumable(Product):
    name = "unresumable"


def test_state_dict_errors_name_the_product_and_the_fields():
    with pytest.raises(NotImplementedError) as err:
        Unresumable().state_dict()
    assert str(err.value) == "Unresumable declares no state_fields: it cannot be resumed"
    for product, state, expected in ((Unresumable(), {}, "[]"), (ClsAttention(), {"_sum": None}, "['_count', '_sum']")):
        with pytest.raises(ValueError) as err:
            product.load_state_dict(state)
        assert str(err.value) == (f"{type(product).__name__}: a saved state holds {sorted(state)}, expected "
                                  f"{expected}; the shard belongs to another version of it")


# ------------------------------------------------------------------------------------------------ CNN capture


def _tiny_resnet():
    return timm.create_model("resnet18", layers=(1, 2, 1, 1), channels=(8, 16, 24, 32), num_classes=0).eval()


def test_cnn_geometry_is_exactly_the_documented_dict():
    assert cnn_geometry(_tiny_resnet()) == {"kind": "cnn", "depth": 5, "n_prefix": 0, "embed_dim": 32,
                                            "stage_ends": (0, 2, 3, 4), "stage_blocks": (1, 2, 1, 1)}


@pytest.mark.parametrize("sites, named", [({"attn", "block"}, "['attn']"), ({"qkv", "norm1"}, "['norm1', 'qkv']")])
def test_cnn_capture_refuses_vit_sites_naming_them(sites, named):
    with pytest.raises(ValueError) as err:
        CnnCapture(_tiny_resnet(), sites)
    assert str(err.value) == (f"capture site(s) {named} do not exist in a CNN; CNN sites: ('block',) (stage outputs "
                              "are block rows: stage_rows(geometry))")


def test_cnn_stages_need_all_four_resnet_layers_and_name_the_model_otherwise():
    from torch import nn

    from vitscope.extract.cnn_capture import cnn_stages

    class ThreeLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer2, self.layer3, self.layer4 = nn.Sequential(), nn.Sequential(), nn.Sequential()

    with pytest.raises(TypeError) as err:
        cnn_stages(ThreeLayers())
    assert str(err.value) == (
        "ThreeLayers is neither a timm ViT (.blocks, .patch_embed) nor a timm CNN with residual stages "
        "(.stages[i].blocks as ConvNeXt, .layer1-.layer4 as ResNet); capture supports those families.")
    model = ThreeLayers()
    model.layer1 = nn.Sequential(nn.Identity())
    assert cnn_stages(model) == [model.layer1, model.layer2, model.layer3, model.layer4]


def test_cls_map_stats_fixed_set_and_examples_in_one_batch():
    """One batch of 6 images, 2 heads (so batch and head counts differ): the first half fixes the top tokens, the
    second half is measured on them; the examples are float32 copies of the raw CLS maps, whatever the input dtype."""
    from vitscope.extract.attention_products import reference_count
    from vitscope.kernels import attention_maps as maps_k

    g = torch.Generator().manual_seed(3)
    attn = torch.softmax(torch.randn(6, 2, 17, 17, generator=g, dtype=torch.float64), dim=-1)  # 1 CLS + 4x4 grid
    product = ClsMapStats(n_examples=3)
    product.start({"depth": 1, "grid": (4, 4), "n_prefix": 1, "num_heads": 2, "embed_dim": 8}, 6)
    product.begin_batch(6)
    product.consume("attn", 0, attn)
    product.end_batch()
    out = product.finish()
    k = reference_count(6)
    m = maps_k.cls_maps(attn, 1).double()
    top = maps_k.top_tokens(m[:k].sum(0))
    assert torch.isnan(out["fixed"][:k]).all()
    torch.testing.assert_close(out["fixed"][k:, 0], maps_k.mass_on(m[k:], top).float())
    assert out["examples"].dtype == torch.float32 and out["examples"].shape == (3, 1, 2, 4, 4)
    torch.testing.assert_close(out["examples"][:, 0], attn[:3, :, 0, 1:].reshape(3, 2, 4, 4).float())


def test_query_positions_by_hand_and_clamped_at_the_last_row():
    from vitscope.extract.attention_products import query_positions

    assert query_positions(8) == [("centre", 4, 4), ("top-left", 1, 1)]         # int(0.5 * 8), int(0.15 * 8)
    assert query_positions(14) == [("centre", 7, 7), ("top-left", 2, 2)]
    assert query_positions(4, (("edge", 1.0, 0.99), ("corner", 0.0, 0.5))) == [("edge", 3, 3), ("corner", 0, 2)]


def test_query_attention_reports_its_positions_and_the_mean_query_maps():
    from vitscope.kernels import attention_maps as maps_k

    g = torch.Generator().manual_seed(4)
    attn = torch.softmax(torch.randn(3, 2, 17, 17, generator=g), dim=-1)      # 1 CLS + 4x4 grid
    product = QueryAttention()
    product.start({"depth": 1, "grid": (4, 4), "n_prefix": 1, "num_heads": 2, "embed_dim": 8}, 3)
    product.begin_batch(3)
    product.consume("attn", 0, attn)
    product.end_batch()
    out = product.finish()
    assert out["positions"].tolist() == [[2, 2], [0, 0]]
    expected = maps_k.query_maps(attn.double(), [(2, 2), (0, 0)], 1).mean(0)
    torch.testing.assert_close(out["mean"][0], expected.float())

"""ViTs laid out unlike ViT-B/16 -- patch 14, register tokens, no CLS token -- at capture, products and kernels.

Each product is checked against a float64 NumPy transcription of its kernel, computed from the attention maps
captured on the same images (the layout: ``n_prefix`` prefix tokens, CLS first when there is one, then the grid).
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.extract import (
    AttentionDistance,
    Capture,
    ClsAttention,
    FeatureStore,
    GramMatrices,
    PooledTokens,
    extract,
    vit_geometry,
)
from vitscope.extract.attention_products import AlignedAttention, ClsMapStats, QueryAttention, query_positions
from vitscope.extract.capture import has_cls_token
from vitscope.kernels import attention as attention_k
from vitscope.kernels import attention_maps as maps_k
from vitscope.models import Preprocess

PATCH, IMG = 14, 56                                   # a 4 x 4 grid of 14-pixel patches (DINOv2's patch size)
G = IMG // PATCH
LAYOUTS = {                                           # name: (timm kwargs, prefix tokens, has CLS)
    "patch14": ({}, 1, True),
    "registers": ({"reg_tokens": 4}, 5, True),
    "no-cls": ({"class_token": False, "global_pool": "avg"}, 0, False),
    "no-cls-registers": ({"class_token": False, "global_pool": "avg", "reg_tokens": 4}, 4, False),
}


def _model(layout: str):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=IMG, patch_size=PATCH, embed_dim=48,
                             depth=2, num_heads=3, num_classes=0, **LAYOUTS[layout][0]).eval()


@pytest.fixture(scope="module")
def dataset(synthetic_root, manifest):
    pre = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=IMG, crop=IMG)
    return ImageFolderSubset(synthetic_root, manifest, eval_transform(pre), per_class=2, num_classes=5)   # 10


def _captured(model, dataset, order) -> np.ndarray:
    images = torch.stack([dataset[i][0] for i in order.tolist()])
    with torch.inference_mode(), Capture(model, {"attn"}) as cap:
        model.forward_features(images)
        return np.stack([a.double().numpy() for a in cap.collect()["attn"]], axis=1)    # [N, L, H, T, T]


def _grid_xy(scale: float) -> np.ndarray:
    return np.array([(c * scale, r * scale) for r in range(G) for c in range(G)])       # token (r, c) at (c, r)


def _distances(scale: float) -> np.ndarray:
    xy = _grid_xy(scale)
    return np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))                              # [Q, K]


def _renormalised(rows: np.ndarray) -> np.ndarray:
    mass = rows.sum(-1, keepdims=True)
    return rows / np.where(mass == 0, 1.0, mass)


def _ref_distance(attn: np.ndarray, n_prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """TM 4.3 (renormalised rows, unit square) and Raghu et al. (raw rows, pixels), per image, block and head."""
    a = attn[..., n_prefix:, n_prefix:]
    unit = (_renormalised(a) * _distances(1 / (G - 1))).sum(-1).mean(-1)
    pixels = (a * _distances(PATCH)).sum(-1).mean(-1)
    return unit, pixels


def _ref_aaam(attn: np.ndarray, n_prefix: int) -> np.ndarray:
    """Mean over images and queries of each renormalised spatial row pasted centred in a (2G-1)^2 canvas."""
    rows = _renormalised(attn[..., n_prefix:, n_prefix:]).mean(0)                      # [L, H, Q, K]
    canvas = np.zeros(rows.shape[:2] + (2 * G - 1, 2 * G - 1))
    for q in range(G * G):
        for k in range(G * G):
            canvas[:, :, k // G - q // G + G - 1, k % G - q % G + G - 1] += rows[:, :, q, k]
    return canvas / (G * G)


@pytest.mark.reliability("bad input", "models whose patch size or prefix tokens differ from ViT-B/16 (patch 14, 4 "
                                      "register tokens, no CLS) reach the attention products and kernels")
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_attention_products_follow_the_models_layout(layout, dataset, tmp_path):
    model, (_, n_prefix, with_cls) = _model(layout), LAYOUTS[layout]
    g = vit_geometry(model)
    assert (g["n_prefix"], g["grid"], g["patch_size"], has_cls_token(model)) == (n_prefix, (G, G), PATCH, with_cls)
    products = {"ad": AttentionDistance(), "aaam": AlignedAttention(), "queries": QueryAttention()}
    if with_cls:
        products |= {"cls": ClsAttention(), "stats": ClsMapStats(n_examples=2)}
    out = extract(model, {"name": layout}, dataset, products, transform_id={"resize": IMG},
                  store=FeatureStore(tmp_path), batch_size=4, progress=False)
    attn = _captured(model, dataset, out["_meta"]["order"])
    assert attn.shape[-1] == n_prefix + G * G

    unit, pixels = _ref_distance(attn, n_prefix)
    np.testing.assert_allclose(out["ad"]["unit_square"].numpy(), unit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["ad"]["pixels"].numpy(), pixels, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["aaam"]["mean"].numpy(), _ref_aaam(attn, n_prefix), rtol=1e-5, atol=1e-7)
    spatial = _renormalised(attn[..., n_prefix:, n_prefix:])
    positions = [r * G + c for _, r, c in query_positions(G)]
    np.testing.assert_allclose(out["queries"]["mean"].numpy(),
                               spatial[:, :, :, positions].mean(0).reshape(2, 3, len(positions), G, G),
                               rtol=1e-5, atol=1e-7)
    if with_cls:                                      # the CLS row is token 0, its keys after every prefix token
        cls_rows = attn[:, :, :, 0, n_prefix:]
        np.testing.assert_allclose(out["cls"]["mean"].numpy(), cls_rows.mean(0).reshape(2, 3, G, G),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out["stats"]["examples"].numpy(), cls_rows[:2].reshape(2, 2, 3, G, G),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.reliability("bad input", "CLS-reading products on a model without a CLS token: an error naming the "
                                      "model and the missing CLS")
@pytest.mark.parametrize("product", [ClsAttention(), ClsMapStats(), PooledTokens(), GramMatrices(tokens="cls")],
                         ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("layout", ["no-cls", "no-cls-registers"])
def test_cls_products_refuse_a_model_without_cls(layout, product, dataset, tmp_path):
    calls = []
    model = _model(layout)
    model.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=rf"model '{layout}' \(VisionTransformer\) has no CLS token.*'p'"):
        extract(model, {"name": layout}, dataset, {"p": product}, transform_id={"resize": IMG},
                store=FeatureStore(tmp_path), batch_size=5, progress=False)
    assert calls == []                                # refused before any forward pass
    # the same model's spatial products are fine
    out = extract(model, {"name": layout}, dataset, {"g": GramMatrices(tokens="mean")}, transform_id={"resize": IMG},
                  store=FeatureStore(tmp_path), batch_size=5, progress=False)
    assert out["g"]["batch0000"].shape == (2, 5, 5)


def _softmax_maps(n_prefix: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, 3, n_prefix + G * G, n_prefix + G * G, generator=gen, dtype=torch.float64)
    return logits.softmax(-1)


@pytest.mark.parametrize("n_prefix", [0, 1, 5])
def test_kernels_handle_zero_one_and_five_prefix_tokens(n_prefix):
    attn = _softmax_maps(n_prefix, seed=n_prefix)
    a = attn.numpy()[:, None]                          # [B, 1 block, H, T, T] for the references
    got = attention_k.attention_distances(attn, n_prefix, PATCH)
    unit, pixels = _ref_distance(a, n_prefix)
    np.testing.assert_allclose(got["unit_square"].numpy(), unit[:, 0], rtol=1e-12)
    np.testing.assert_allclose(got["pixels"].numpy(), pixels[:, 0], rtol=1e-12)
    np.testing.assert_allclose(maps_k.aaam(attn, n_prefix).numpy(), _ref_aaam(a, n_prefix)[0], rtol=1e-12)
    if n_prefix == 0:
        with pytest.raises(ValueError, match="needs a CLS token"):
            attention_k.cls_attention_map(attn, n_prefix)
    else:
        np.testing.assert_allclose(attention_k.cls_attention_map(attn, n_prefix).numpy(),
                                   a[:, 0, :, 0, n_prefix:].reshape(2, 3, G, G), rtol=1e-12)
    # the wrong prefix count is never silently accepted: the remaining tokens do not form a square grid
    with pytest.raises(ValueError, match="not a square G\\*G grid"):
        attention_k.attention_distances(attn, n_prefix + 1 if n_prefix < 5 else 4, PATCH)

"""vitscope.extract products, capture and CNN detection, value by value (issue 17, round 2 survivors in
AlignedAttention.consume / start, ClsMapStats.consume, ClsAttention.consume, Capture.collect and is_cnn).

The accumulators are checked against a float64 NumPy reference at float32 precision (a float32 sum misses it), the
example maps' copy is recorded (device and dtype), the capture's error is compared whole, and a model that has both
a ViT's and a ResNet's attributes is a ViT.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch

from vitscope.extract import AlignedAttention, Capture, ClsAttention, ClsMapStats
from vitscope.extract import attention_products as ap
from vitscope.extract.cnn_capture import is_cnn
from vitscope.kernels import attention_maps as maps_k


def _attention(batch, heads, G, n_prefix=1, seed=0, spread=3.0):
    """Float32 softmax maps [B, H, T, T] over T = n_prefix + G*G tokens; a larger ``spread`` of the logits gives
    peakier rows (entries from near 1 down to far below it)."""
    g = torch.Generator().manual_seed(seed)
    T = n_prefix + G * G
    return torch.softmax(spread * torch.randn(batch, heads, T, T, generator=g, dtype=torch.float64), -1).float()


def _run(product, geometry, batches):
    """Feed ``batches`` (lists of one [B, H, T, T] map per block) through a product as extract does."""
    product.start(geometry, sum(b[0].shape[0] for b in batches))
    for per_block in batches:
        product.begin_batch(per_block[0].shape[0])
        for block, x in enumerate(per_block):
            product.consume("attn", block, x)
        product.end_batch()
    return product.finish()


def _canvas_np(rows):
    """Reference AAAM canvas of spatial rows [..., G*G, G*G] (float64 NumPy): key offset (dy, dx) from the query,
    placed at (G-1+dy, G-1+dx), averaged over the G*G queries."""
    rows = np.asarray(rows, dtype=np.float64)
    Q = rows.shape[-1]
    G = int(round(Q ** 0.5))
    out = np.zeros(rows.shape[:-2] + (2 * G - 1, 2 * G - 1))
    for q in range(Q):
        qy, qx = divmod(q, G)
        for k in range(Q):
            ky, kx = divmod(k, G)
            out[..., G - 1 + ky - qy, G - 1 + kx - qx] += rows[..., q, k]
    return out / Q


# ------------------------------------------------------------------------------------------------ AAAM


def test_aligned_attention_sums_float32_maps_in_float64():
    """512 images in batches of 128, float32 attention with peaky rows: both means match the float64 reference to
    float32 rounding (a float32 sum of 128 rows, large and tiny entries, drifts by several ulps)."""
    G, H, L = 3, 2, 2
    geometry = {"depth": L, "num_heads": H, "grid": (G, G), "n_prefix": 1}
    batches = [[_attention(128, H, G, seed=10 * b + blk, spread=6.0) for blk in range(L)] for b in range(4)]
    got = _run(AlignedAttention(), geometry, batches)
    rows = [torch.cat([b[blk] for b in batches]) for blk in range(L)]                    # [N, H, T, T] per block
    spatial = np.stack([maps_k.spatial_rows(r, 1).double().numpy() for r in rows], 1)   # [N, L, H, Q, Q]
    want_mean = _canvas_np(spatial.sum(0)) / 512
    want_first = _canvas_np(spatial[:256].sum(0)) / 256
    assert got["mean"].dtype == torch.float32 and got["mean_first"].dtype == torch.float32
    np.testing.assert_allclose(got["mean"].numpy(), want_mean, rtol=1.2e-7, atol=0)
    np.testing.assert_allclose(got["mean_first"].numpy(), want_first, rtol=1.2e-7, atol=0)


def test_aligned_attention_accumulates_in_float64_where_float32_loses_the_small_terms():
    """Hand-computed: 8 images on a 2 x 2 grid whose every spatial row is exactly [0, 0, 0, 1] (images 0 and 4) or
    [1 - 2**-24, 0, 0, 2**-24] (the others). The canvas corner (offset +1, +1) holds query 0's weight on key 3 over
    the 4 queries: the first half sums 1 + 3 * 2**-24, which float32 rounds to 1 (each small term is lost) and
    float64 keeps; the float32 result then rounds 1 + 3 * 2**-24 to 1 + 2**-22."""
    eps = 2.0 ** -24
    big, small = [0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0 - eps, 0.0, 0.0, eps]        # prefix token, then 4 keys
    x = torch.tensor([[[big if i % 4 == 0 else small] * 5] for i in range(8)], dtype=torch.float32)  # [8, 1, 5, 5]
    got = _run(AlignedAttention(), {"depth": 1, "num_heads": 1, "grid": (2, 2), "n_prefix": 1}, [[x]])
    assert got["mean_first"][0, 0, 2, 2].item() == (1 + 2.0 ** -22) / 16
    assert got["mean"][0, 0, 2, 2].item() == (1 + 2.0 ** -22) / 16           # 2 + 6 * 2**-24 over 8 images
    assert got["mean"][0, 0, 0, 2].item() == got["mean_first"][0, 0, 0, 2].item() == 0.0    # offset -1, +1: none


def test_aligned_attention_canvas_side_is_the_grids_first_entry():
    """The canvas is (2G-1)^2 with G = geometry["grid"][0] (rows; the maps are square): a second entry that
    disagrees is not read."""
    G, H = 2, 1
    x = _attention(2, H, G, seed=3)
    got = _run(AlignedAttention(), {"depth": 1, "num_heads": H, "grid": (G, 5), "n_prefix": 1}, [[x]])
    want = _canvas_np(maps_k.spatial_rows(x, 1).double().numpy().sum(0)) / 2
    np.testing.assert_allclose(got["mean"][0].numpy(), want, rtol=1.2e-7, atol=0)


# ------------------------------------------------------------------------------------------------ ClsAttention


def test_cls_attention_side_is_the_grids_first_entry():
    G, H = 3, 2
    x = _attention(4, H, G, seed=5)
    got = _run(ClsAttention(), {"depth": 1, "num_heads": H, "grid": (G, 7), "n_prefix": 1}, [[x]])
    want = x[:, :, 0, 1:].double().numpy().reshape(4, H, G, G).mean(0)
    np.testing.assert_allclose(got["mean"][0].numpy(), want, rtol=1.2e-7, atol=0)


# ------------------------------------------------------------------------------------------------ ClsMapStats


def test_cls_map_stats_fixed_mass_does_not_depend_on_the_default_dtype():
    """``fixed`` is accumulated in float64 whatever torch's default dtype (a float16 default must not round it)."""
    G, H = 4, 2
    geometry = {"depth": 1, "num_heads": H, "grid": (G, G), "n_prefix": 1}
    batches = [[_attention(3, H, G, seed=b)] for b in range(2)]
    want = _run(ClsMapStats(n_examples=1), geometry, batches)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        got = _run(ClsMapStats(n_examples=1), geometry, batches)
    finally:
        torch.set_default_dtype(previous)
    for name in ("centre", "coverage", "fixed", "examples"):
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, equal_nan=True)
    # and the value itself: images 3..5 (the second half) measured on the top tokens of images 0..2
    maps = torch.cat([b[0] for b in batches])[:, :, 0, 1:].double()
    maps = (maps / maps.sum(-1, keepdim=True)).numpy()                                 # [6, H, G*G]
    ref = maps[:3].sum(0)
    k = int(np.ceil(maps_k.TOP_FRACTION * G * G))
    for h in range(H):
        top = np.argsort(-ref[h], kind="stable")[:k]
        np.testing.assert_allclose(want["fixed"][3:, 0, h].numpy(), maps[3:, h][:, top].sum(-1), rtol=1.2e-7)
    assert torch.isnan(want["fixed"][:3]).all()


def test_cls_map_stats_examples_are_cpu_float32_copies(monkeypatch):
    calls = []
    real = ap.cls_attention_map

    class Recorded:
        def __init__(self, t):
            self.t = t

        def to(self, *args, **kwargs):
            calls.append((args, kwargs))
            return self.t.to(*args, **kwargs)

    class Batch:
        def __init__(self, t):
            self.t = t

        def __getitem__(self, i):
            return Recorded(self.t[i])

    monkeypatch.setattr(ap, "cls_attention_map", lambda x, n_prefix: Batch(real(x, n_prefix)))
    G, H = 2, 1
    x = _attention(3, H, G, seed=7)
    got = _run(ClsMapStats(n_examples=2), {"depth": 1, "num_heads": H, "grid": (G, G), "n_prefix": 1}, [[x]])
    assert calls == [(("cpu", torch.float32), {"copy": True})] * 2
    torch.testing.assert_close(got["examples"][:, 0], x[:2, :, 0, 1:].reshape(2, H, G, G), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ Capture


def test_capture_collect_names_the_site_counts_and_model_whole():
    model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=16, depth=2,
                              num_heads=2, num_classes=0).eval()
    with Capture(model, {"attn"}) as cap:                     # no forward pass: the site fired 0 times
        with pytest.raises(RuntimeError) as err:
            cap.collect()
    assert str(err.value) == ("Capture site 'attn' fired 0 times for 2 blocks; VisionTransformer does not expose "
                              "it as a module call.")


# ------------------------------------------------------------------------------------------------ is_cnn


def test_a_model_with_blocks_and_patch_embed_is_not_a_cnn_even_with_resnet_stages():
    layers = {f"layer{i}": [] for i in range(1, 5)}
    assert is_cnn(SimpleNamespace(**layers)) is True
    assert is_cnn(SimpleNamespace(blocks=[], patch_embed=None, **layers)) is False
    assert is_cnn(SimpleNamespace(blocks=[], **layers)) is True              # blocks alone do not make a ViT
    assert is_cnn(SimpleNamespace(patch_embed=None, **layers)) is True
    assert is_cnn(SimpleNamespace(blocks=[], patch_embed=None)) is False


# ------------------------------------------------------------------------------------------------ QueryAttention


def test_query_attention_sums_float32_maps_in_float64():
    """The mean query maps of many float32 images equal the float64 mean, rounded once to float32: a float32 sum over
    the batch drifts by several float32 steps at this batch size."""
    from vitscope.extract import QueryAttention

    G, H, B = 6, 2, 1024
    x = _attention(B, H, G, seed=7, spread=4.0)
    got = _run(QueryAttention(), {"depth": 1, "num_heads": H, "grid": (G, G), "n_prefix": 1}, [[x]])
    positions = [(r, c) for _, r, c in ap.query_positions(G)]
    np.testing.assert_array_equal(got["positions"].numpy(), np.array(positions))
    rows = x.double().numpy()[:, :, [1 + r * G + c for r, c in positions], 1:]          # [B, H, Q, G*G]
    rows = rows / rows.sum(-1, keepdims=True)
    want = rows.mean(0).reshape(H, len(positions), G, G)
    np.testing.assert_allclose(got["mean"][0].numpy(), want, rtol=1.2e-7, atol=0)


def test_cls_map_stats_reference_tells_apart_tokens_closer_than_float32_resolution():
    """The reference sum that picks the top tokens is float64: two tokens 1e-9 apart at 0.3 (float32's step there is
    3e-8) are still ordered, so the later image's ``fixed`` mass is read on the truly most attended token."""
    G, T = 2, 5                                                  # TOP_FRACTION of 4 tokens: the single top token
    x = torch.full((2, 1, T, T), 1.0 / T, dtype=torch.float64)
    x[0, 0, 0] = torch.tensor([0.0, 0.3 + 1e-9, 0.3, 0.2, 0.2 - 1e-9], dtype=torch.float64)   # reference image
    x[1, 0, 0] = torch.tensor([0.0, 0.1, 0.7, 0.1, 0.1], dtype=torch.float64)                 # measured image
    got = _run(ClsMapStats(n_examples=1), {"depth": 1, "num_heads": 1, "grid": (G, G), "n_prefix": 1}, [[x]])
    assert math.ceil(maps_k.TOP_FRACTION * G * G) == 1
    assert torch.isnan(got["fixed"][0, 0, 0])                   # the reference image itself is not measured
    assert got["fixed"][1, 0, 0].item() == pytest.approx(0.1, abs=1e-6)     # token 0 (0.3 + 1e-9), not token 1


def test_cls_map_stats_with_no_examples_returns_an_empty_examples_tensor():
    """``n_examples=0`` asks for the statistics only: ``examples`` is empty with the layout's shape, not an error."""
    G, H, L = 3, 2, 2
    x = _attention(4, H, G, seed=9)
    got = _run(ClsMapStats(n_examples=0), {"depth": L, "num_heads": H, "grid": (G, G), "n_prefix": 1}, [[x, x]])
    assert got["examples"].shape == (0, L, H, G, G) and got["examples"].dtype == torch.float32
    want = _run(ClsMapStats(n_examples=1), {"depth": L, "num_heads": H, "grid": (G, G), "n_prefix": 1}, [[x, x]])
    for name in ("centre", "coverage", "fixed"):
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, equal_nan=True)


def test_cls_map_stats_refuses_a_negative_example_count():
    with pytest.raises(ValueError, match="n_examples"):
        _run(ClsMapStats(n_examples=-1), {"depth": 1, "num_heads": 2, "grid": (3, 3), "n_prefix": 1},
             [[_attention(2, 2, 3)]])

"""vitscope.kernels.attention and .attention_maps: exact messages, bounds, defaults, dtypes and batched values
(issue 17: mutants in them survived the behavioural tests).

Every validation message is compared whole with the text it must be, written out here by hand, so a renamed
argument or a dropped part of a message fails. Each documented bound is tried at the bound and just past it; each
default is compared with the documented value passed explicitly and with another value; values are checked against
float64 NumPy loops that do not import vitscope.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from vitscope.kernels import attention as att
from vitscope.kernels import attention_maps as am

TAIL = ("Did you pass pre-softmax logits? Take the output of attn.softmax(-1) (timm: attn_drop's output).")


def _raises(fn, message: str):
    """``fn()`` raises ValueError whose whole message is ``message``."""
    with pytest.raises(ValueError) as err:
        fn()
    assert str(err.value) == message


def _random_attn(B, H, G, n_prefix, seed=0, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    T = n_prefix + G * G
    e = np.exp(rng.normal(scale=2.0, size=(B, H, T, T)))
    return torch.from_numpy(e / e.sum(-1, keepdims=True)).to(dtype)


def _uniform(T, B=1, H=1, dtype=torch.float64):
    return torch.full((B, H, T, T), 1.0 / T, dtype=dtype)


def _not_probabilities(name, row_err, min_val, tol):
    return (f"{name} must hold post-softmax probabilities (entries >= 0, each query row summing to 1 over keys); "
            f"got max |row sum - 1| = {row_err} and min entry {min_val} (tolerance {tol}). " + TAIL)


# ---------------------------------------------------------------------------------------------- layout validation
def test_layout_messages_name_attn_and_what_was_given():
    expected = "attn must be a tensor [B, H, T, T] of attention probabilities; got {}"
    for fn in (att.validate_attention, att.attention_distances, att.attention_distance, att.cls_attention_map,
               att.attention_entropy):
        _raises(lambda: fn([[0.5, 0.5]]), expected.format("list"))
        _raises(lambda: fn(torch.full((1, 5, 5), 0.2)), expected.format("(1, 5, 5)"))
        _raises(lambda: fn(torch.full((1, 1, 5, 4), 0.25)), expected.format("(1, 1, 5, 4)"))
    _raises(lambda: att.validate_attention(torch.ones(1, 1, 5, 5, dtype=torch.int64)),
            "attn must be floating point (probabilities); got torch.int64")


def test_n_prefix_bounds_are_0_and_t_minus_1():
    a = _uniform(5)
    assert att.validate_attention(a, 4) == 1                 # T - 1 prefix tokens leave a 1 x 1 grid
    assert att.validate_attention(_uniform(4), 0) == 2       # no prefix token at all
    assert att.validate_attention(a) == 2                    # default n_prefix = 1 (CLS)
    for bad in (5, -1, 1.0, True):
        _raises(lambda: att.validate_attention(a, bad),
                f"n_prefix (prefix tokens, with T=5 tokens) must be an int in [0, 4]; got {bad!r}")


def test_non_square_spatial_count_message():
    _raises(lambda: att.validate_attention(_uniform(6)),
            "T=6 tokens with n_prefix=1 leaves 5 spatial tokens, which is not a square G*G grid; check n_prefix "
            "(CLS + register tokens) or the model's patch layout")
    _raises(lambda: att.attention_distances(_uniform(10), 2, check_probabilities=False),
            "T=10 tokens with n_prefix=2 leaves 8 spatial tokens, which is not a square G*G grid; check n_prefix "
            "(CLS + register tokens) or the model's patch layout")


# ------------------------------------------------------------------------------------------ probability checks
def test_probability_message_reports_the_error_and_minimum():
    a = _uniform(5)
    a[0, 0, 2] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.5], dtype=torch.float64)    # row sums to 1.5
    _raises(lambda: att.validate_attention(a), _not_probabilities("attn", "0.5", "0", "0.001"))
    _raises(lambda: att.attention_distances(a), _not_probabilities("attn", "0.5", "0", "0.001"))
    _raises(lambda: att.attention_entropy(a), _not_probabilities("attn", "0.5", "0", "0.001"))
    _raises(lambda: am.spatial_rows(a), _not_probabilities("attn", "0.5", "0", "0.001"))
    neg = _uniform(5)
    neg[0, 0, 1] = torch.tensor([0.25, -0.25, 0.5, 0.25, 0.25], dtype=torch.float64)   # sums to 1, one entry < 0
    _raises(lambda: att.validate_attention(neg), _not_probabilities("attn", "0", "-0.25", "0.001"))


def test_nan_and_inf_message_alone_even_when_only_one_of_the_two_is_non_finite():
    for bad in (float("nan"), float("inf"), -float("inf")):
        a = _uniform(5, B=2)
        a[1, 0, 3, 2] = bad
        _raises(lambda: att.validate_attention(a), "attn (shape (2, 1, 5, 5)) holds NaN or Inf values")


def test_tolerance_is_1e3_for_float32_and_1e2_for_half_with_the_bounds_inclusive():
    a = _uniform(5)
    a[0, 0, 1, 0] = 0.2 + 9e-4                               # |row sum - 1| = 9e-4 < 1e-3: accepted
    assert att.validate_attention(a) == 2
    assert att.validate_attention(a.float()) == 2
    a[0, 0, 1, 0] = 0.2 + 2e-3                               # 2e-3 > 1e-3: refused in float32 / float64
    with pytest.raises(ValueError, match=r"^attn must hold post-softmax probabilities .* \(tolerance 0\.001\)\. "):
        att.validate_attention(a.float())
    for half in (torch.float16, torch.bfloat16):             # 2e-3 < 1e-2: accepted at half precision
        assert att.validate_attention(a.to(half)) == 2
    # An entry of exactly -tol is still accepted (min entry < -tol refuses); just past it is refused.
    edge = _uniform(5)
    edge[0, 0, 1] = torch.tensor([-1e-3, 0.201, 0.2, 0.3, 0.3], dtype=torch.float64)
    assert att.validate_attention(edge) == 2
    edge[0, 0, 1, 0], edge[0, 0, 1, 1] = -1.1e-3, 0.2011
    with pytest.raises(ValueError, match=r"^attn must hold .* min entry -0\.0011 \(tolerance 0\.001\)"):
        att.validate_attention(edge)
    # half: a bfloat16 error of 0.0156 > 1e-2 is refused with the 0.01 tolerance named
    b = _uniform(5).to(torch.bfloat16)
    b[0, 0, 1, 0] = 0.2156
    with pytest.raises(ValueError, match=r"^attn must hold .* \(tolerance 0\.01\)\. "):
        att.validate_attention(b)


def test_half_row_sums_are_taken_in_float32():
    # Three entries 0.25 and half(0.2603) = 0.26025390625: the exact (float32) sum is 1.01025390625, off by more
    # than the 1e-2 half tolerance; a float16 sum would round it to 1.009765625 and let the row through.
    row = torch.tensor([0.25, 0.25, 0.25, 0.2603, 0.0], dtype=torch.float16)
    assert float(row.sum()) - 1 < 1e-2 < float(row.sum(dtype=torch.float32)) - 1     # the premise
    a = _uniform(5).half()
    a[0, 0, 0] = row
    msg = _not_probabilities("attn (CLS row)", "0.0103", "0", "0.01")
    _raises(lambda: att.cls_attention_map(a), msg)
    _raises(lambda: att.validate_attention(a), msg.replace("attn (CLS row)", "attn"))
    q = _uniform(5).half()
    q[0, 0, 3] = row
    _raises(lambda: am.query_maps(q, [(1, 0)]), msg.replace("attn (CLS row)", "attn (query rows)"))


# ----------------------------------------------------------------------------------------- token_grid_distances
def _np_grid_distances(G, scale_x, scale_y=None):
    scale_y = scale_x if scale_y is None else scale_y
    out = np.zeros((G * G, G * G))
    for q in range(G * G):
        for k in range(G * G):
            out[q, k] = math.hypot((q % G - k % G) * scale_x, (q // G - k // G) * scale_y)
    return out


def test_token_grid_distances_values_defaults_and_dtype():
    for G in (2, 3, 5):
        d = att.token_grid_distances(G)
        assert d.dtype == torch.float64 and d.shape == (G * G, G * G)
        np.testing.assert_allclose(d.numpy(), _np_grid_distances(G, 1 / (G - 1)), rtol=1e-15, atol=1e-15)
        torch.testing.assert_close(att.token_grid_distances(G, "unit_square"), d, rtol=0, atol=0)
        p = att.token_grid_distances(G, "pixels", 14)
        np.testing.assert_allclose(p.numpy(), _np_grid_distances(G, 14.0), rtol=1e-15)
        np.testing.assert_allclose(att.token_grid_distances(G, "pixels", 0.5).numpy(), _np_grid_distances(G, 0.5))
    f = att.token_grid_distances(4, dtype=torch.float32)
    assert f.dtype == torch.float32
    np.testing.assert_allclose(f.numpy(), _np_grid_distances(4, 1 / 3), rtol=1e-6)


def test_token_grid_distances_messages():
    _raises(lambda: att.token_grid_distances(1),
            "grid_size (distances on a 1x1 grid are undefined) must be an int >= 2; got 1")
    _raises(lambda: att.token_grid_distances(3, "km"), "unit='km' is unknown; choose from ('unit_square', 'pixels')")
    for bad in (None, 0, -16):
        _raises(lambda: att.token_grid_distances(3, "pixels", bad),
                f"unit='pixels' needs a positive patch_size (pixels per patch); got {bad!r}")


# ------------------------------------------------------------------------------------------- attention distances
def _np_distances(a, n_prefix, patch_size):
    """Both methods by loops, float64."""
    B, H, T, _ = a.shape
    G = math.isqrt(T - n_prefix)
    d = _np_grid_distances(G, 1 / (G - 1))
    unit, pix = np.zeros((B, H)), np.zeros((B, H))
    for b in range(B):
        for h in range(H):
            for q in range(G * G):
                row = a[b, h, n_prefix + q, n_prefix:].astype(np.float64)
                s = float((row * d[q]).sum())
                unit[b, h] += s / row.sum() if row.sum() > 0 else 0.0
                pix[b, h] += s * patch_size * (G - 1)
    return unit / (G * G), pix / (G * G)


@pytest.mark.parametrize("dtype,out_dtype", [(torch.float64, torch.float64), (torch.float32, torch.float32),
                                             (torch.float16, torch.float32), (torch.bfloat16, torch.float32)])
def test_distances_keep_at_least_float32(dtype, out_dtype):
    a = _random_attn(2, 3, 3, 2, seed=1)
    both = att.attention_distances(a.to(dtype), 2, patch_size=8)
    assert {m: v.dtype for m, v in both.items()} == {"unit_square": out_dtype, "pixels": out_dtype}
    assert att.attention_distance(a.to(dtype), 2).dtype == out_dtype
    unit, pix = _np_distances(a.to(dtype).double().numpy(), 2, 8)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(both["unit_square"].double().numpy(), unit, rtol=tol)
    np.testing.assert_allclose(both["pixels"].double().numpy(), pix, rtol=tol)


def test_float32_query_mean_is_taken_in_float64():
    # One-hot rows: each s_q is one float32 distance and each m_q is exactly 1, so the only rounding left is the
    # mean over the G*G queries; taken in float64 and rounded once, it equals the float64 mean of those distances.
    G, B, H = 14, 4, 6
    rng = np.random.default_rng(7)
    keys = rng.integers(0, G * G, size=(B, H, G * G))
    a = torch.zeros(B, H, 1 + G * G, 1 + G * G, dtype=torch.float32)
    a[:, :, 0, 0] = 1.0
    for b in range(B):
        for h in range(H):
            a[b, h, 1 + np.arange(G * G), 1 + keys[b, h]] = 1.0
    d32 = att.token_grid_distances(G, dtype=torch.float32).double().numpy()
    expected = np.array([[d32[np.arange(G * G), keys[b, h]].mean() for h in range(H)] for b in range(B)])
    got = att.attention_distances(a, 1, patch_size=16)
    assert torch.equal(got["unit_square"], torch.from_numpy(expected).float())
    assert torch.equal(got["pixels"], torch.from_numpy(expected * 16 * (G - 1)).float())


def test_attention_distance_defaults_and_patch_size_rules():
    a = _random_attn(2, 2, 3, 1, seed=3)
    unit, pix = _np_distances(a.numpy(), 1, 16)
    np.testing.assert_allclose(att.attention_distance(a).numpy(), unit, rtol=1e-12)        # unit_square, CLS
    torch.testing.assert_close(att.attention_distance(a), att.attention_distance(a, 1, "unit_square"), rtol=0, atol=0)
    # unit_square ignores patch_size, even an invalid one
    torch.testing.assert_close(att.attention_distance(a, 1, "unit_square", 0), att.attention_distance(a), rtol=0,
                               atol=0)
    np.testing.assert_allclose(att.attention_distance(a, 1, "pixels", 16).numpy(), pix, rtol=1e-12)
    np.testing.assert_allclose(att.attention_distance(a, 1, "pixels", 0.5).numpy(), pix / 32, rtol=1e-12)
    assert set(att.attention_distances(a)) == {"unit_square"}                               # no patch_size
    _raises(lambda: att.attention_distance(a, 1, "pixels"),
            "method='pixels' needs patch_size (pixels per patch, e.g. 16 for ViT-B/16)")
    _raises(lambda: att.attention_distance(a, method="km"),
            "method='km' is unknown; choose from ('unit_square', 'pixels')")
    _raises(lambda: att.attention_distance(a, variant="raghu"),
            "method='raghu' is unknown; choose from ('unit_square', 'pixels')")
    torch.testing.assert_close(att.attention_distance(a, variant="teaching-matters"), att.attention_distance(a))
    for bad in (0, -1.0):
        _raises(lambda: att.attention_distances(a, patch_size=bad),
                f"patch_size must be > 0 (pixels per patch); got {bad!r}")
        _raises(lambda: att.attention_distance(a, 1, "pixels", bad),
                f"patch_size must be > 0 (pixels per patch); got {bad!r}")


def test_distances_check_probabilities_by_default():
    logits = torch.randn(1, 1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 3
    with pytest.raises(ValueError, match=r"^attn must hold post-softmax probabilities"):
        att.attention_distances(logits)
    assert set(att.attention_distances(logits, check_probabilities=False)) == {"unit_square"}


def test_uniform_attention_distance_defaults():
    for G in (2, 4):
        ref = _np_grid_distances(G, 1 / (G - 1)).mean()
        assert att.uniform_attention_distance(G) == pytest.approx(ref, rel=1e-14)
        assert att.uniform_attention_distance(G, "unit_square") == att.uniform_attention_distance(G)
        assert att.uniform_attention_distance(G, "pixels", 8) == pytest.approx(_np_grid_distances(G, 8.0).mean(),
                                                                              rel=1e-14)
    assert isinstance(att.uniform_attention_distance(3), float)


# --------------------------------------------------------------------------------------------------- CLS maps
def test_cls_attention_map_messages_and_only_the_cls_row_is_checked():
    a = _random_attn(2, 3, 3, 2, seed=4)
    _raises(lambda: att.cls_attention_map(_uniform(4), 0),
            "cls_attention_map needs a CLS token (n_prefix >= 1); got n_prefix=0")
    bad = a.clone()
    bad[1, 2, 0, 5] += 0.5
    _raises(lambda: att.cls_attention_map(bad, 2), _not_probabilities("attn (CLS row)", "0.5", "0.000106", "0.001")
            .replace("0.000106", f"{float(bad[:, :, 0].min()):.3g}"))
    other = a.clone()
    other[:, :, 1:] = -5.0                                   # rows never read are never checked
    torch.testing.assert_close(att.cls_attention_map(other, 2), att.cls_attention_map(a, 2), rtol=0, atol=0)


@pytest.mark.parametrize("dtype,mean_dtype", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                              (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_cls_maps_dtypes_and_batched_values(dtype, mean_dtype):
    a = _random_attn(3, 2, 4, 2, seed=5).to(dtype)
    m = att.cls_attention_map(a, 2)
    assert m.dtype == dtype and m.shape == (3, 2, 4, 4)
    ref = a.double().numpy()[:, :, 0, 2:].reshape(3, 2, 4, 4)
    assert np.array_equal(m.double().numpy(), ref)
    mean = att.mean_cls_attention_map(a, 2)
    assert mean.dtype == mean_dtype and mean.shape == (2, 4, 4)
    np.testing.assert_allclose(mean.double().numpy(), ref.mean(0), rtol=1e-6 if mean_dtype == torch.float32 else
                               1e-14)
    one = _random_attn(2, 2, 3, 1, seed=55).to(dtype)
    torch.testing.assert_close(att.mean_cls_attention_map(one), att.mean_cls_attention_map(one, 1), rtol=0, atol=0)
    torch.testing.assert_close(att.cls_attention_map(one), att.cls_attention_map(one, 1), rtol=0, atol=0)


def test_mean_cls_map_of_half_maps_is_not_rounded_to_half():
    # The batch mean of half maps taken in float32: 1/3 of (a + b + c) keeps float32 digits a half mean would lose.
    a = _random_attn(3, 1, 2, 1, seed=6).half()
    ref = a.double().numpy()[:, :, 0, 1:].reshape(3, 1, 2, 2).mean(0)
    np.testing.assert_allclose(att.mean_cls_attention_map(a).double().numpy(), ref, rtol=1e-6)


# --------------------------------------------------------------------------------------------------- entropy
def _np_entropy(a, n_prefix):
    B, H, T, _ = a.shape
    out = np.zeros((B, H))
    Q = T - n_prefix
    for b in range(B):
        for h in range(H):
            for q in range(Q):
                row = a[b, h, n_prefix + q, n_prefix:].astype(np.float64)
                if row.sum() == 0:
                    continue
                p = row / row.sum()
                out[b, h] -= sum(x * math.log(x) for x in p if x > 0)
            out[b, h] /= Q
    return out


def test_entropy_against_loops_with_prefix_tokens_and_batches():
    a = _random_attn(2, 3, 3, 2, seed=8)
    got = att.attention_entropy(a, 2)
    assert got.shape == (2, 3) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _np_entropy(a.numpy(), 2), rtol=1e-12)
    one = _random_attn(2, 2, 4, 1, seed=81)
    np.testing.assert_allclose(att.attention_entropy(one).numpy(), _np_entropy(one.numpy(), 1), rtol=1e-12)
    f32 = att.attention_entropy(a.float(), 2)                # float32 input: float64 sums
    assert f32.dtype == torch.float64
    np.testing.assert_allclose(f32.numpy(), _np_entropy(a.float().double().numpy(), 2), rtol=1e-12)


def test_entropy_hand_cases_zero_mass_rows_and_zero_entries():
    G = 3
    a = torch.zeros(1, 4, 1 + G * G, 1 + G * G, dtype=torch.float64)
    a[:, :, 0, 0] = 1.0
    a[0, 0, 1:, 1:] = 1 / 9                                  # uniform: ln 9
    a[0, 1, 1:, 1:] = torch.eye(9, dtype=torch.float64)      # one-hot: 0
    a[0, 2, 1:, 0] = 1.0                                     # all mass on CLS: every row counts as 0
    a[0, 3, 1:, 0] = 0.5                                     # half on CLS, half on two keys: renormalised ln 2
    a[0, 3, 1:, 1:3] = 0.25
    got = att.attention_entropy(a)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got[0].numpy(), [math.log(9), 0.0, 0.0, math.log(2)], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(got, att.attention_entropy(a, 1), rtol=0, atol=0)


# ================================================================================================ attention_maps
def test_spatial_rows_renormalise_keep_zero_rows_and_upcast_half():
    a = _random_attn(2, 2, 3, 2, seed=9)
    a[1, 1, 4, :2] = 0.5                                      # all of one spatial query's mass on the prefix
    a[1, 1, 4, 2:] = 0.0
    ref = a.numpy()[:, :, 2:, 2:]
    s = ref.sum(-1, keepdims=True)
    ref = np.divide(ref, s, out=np.zeros_like(ref), where=s > 0)
    got = am.spatial_rows(a, 2)
    assert got.dtype == torch.float64 and got.shape == (2, 2, 9, 9)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-14)
    assert not got[1, 1, 2].any()
    half = am.spatial_rows(a.half(), 2)
    assert half.dtype == torch.float32
    one = _random_attn(2, 2, 4, 1, seed=91)
    torch.testing.assert_close(am.spatial_rows(one), am.spatial_rows(one, 1), rtol=0, atol=0)
    assert am.spatial_rows(one[:, :, :16, :16] / one[:, :, :16, :16].sum(-1, keepdim=True), 0).shape == (2, 2, 16, 16)


def test_cls_maps_renormalised_batched_and_zero_mass():
    a = _random_attn(2, 3, 3, 1, seed=10)
    a[0, 2, 0] = 0.0
    a[0, 2, 0, 0] = 1.0                                       # that CLS row attends to CLS alone
    got = am.cls_maps(a)
    ref = a.numpy()[:, :, 0, 1:]
    s = ref.sum(-1, keepdims=True)
    ref = np.divide(ref, s, out=np.zeros_like(ref), where=s > 0).reshape(2, 3, 3, 3)
    assert got.shape == (2, 3, 3, 3) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-14)
    assert not got[0, 2].any()
    assert am.cls_maps(a.half()).dtype == torch.float32
    torch.testing.assert_close(am.cls_maps(a, 1), am.cls_maps(a), rtol=0, atol=0)


def test_query_maps_bounds_messages_and_values():
    a = _random_attn(2, 2, 4, 1, seed=11)
    got = am.query_maps(a, [[3, 0], (0, 3), (3, 3)])          # the grid's corners: bounds G - 1 accepted
    assert got.shape == (2, 2, 3, 4, 4) and got.dtype == torch.float64
    for i, (r, c) in enumerate([(3, 0), (0, 3), (3, 3)]):
        row = a.numpy()[:, :, 1 + 4 * r + c, 1:]
        np.testing.assert_allclose(got[:, :, i].numpy(), (row / row.sum(-1, keepdims=True)).reshape(2, 2, 4, 4),
                                   rtol=1e-14)
    for bad in (4, -1):
        _raises(lambda: am.query_maps(a, [(bad, 0)]), f"query row (grid 4 x 4) must be an int in [0, 3]; got {bad}")
        _raises(lambda: am.query_maps(a, [(0, bad)]),
                f"query column (grid 4 x 4) must be an int in [0, 3]; got {bad}")
    bad = a.clone()
    bad[0, 1, 1 + 5, 3] += 0.25
    _raises(lambda: am.query_maps(bad, [(1, 1)]), _not_probabilities("attn (query rows)", "0.25",
                                                                      f"{float(bad[:, :, 6].min()):.3g}", "0.001"))
    assert am.query_maps(bad, [(0, 1)]).shape == (2, 2, 1, 4, 4)          # unread rows are not checked
    z = a.clone()
    z[1, 0, 1 + 2, 0], z[1, 0, 1 + 2, 1:] = 1.0, 0.0           # query (0, 2): all mass on CLS -> a zero map
    q = am.query_maps(z, [(0, 2)], 1)
    assert not q[1, 0].any() and torch.isfinite(q).all()
    assert am.query_maps(a.half(), [(0, 0)]).dtype == torch.float32


def test_canvas_offsets():
    dy, dx = am.canvas_offsets(3)
    assert dy.dtype == torch.float64 and dy.shape == (5, 5) and dx.shape == (5, 5)
    assert dy[:, 0].tolist() == [-2, -1, 0, 1, 2] and dy[0].tolist() == [-2] * 5
    assert dx[0].tolist() == [-2, -1, 0, 1, 2] and dx[:, 0].tolist() == [-2] * 5
    one = am.canvas_offsets(1)
    assert one[0].tolist() == [[0.0]] and one[1].tolist() == [[0.0]]
    assert am.canvas_offsets(2, dtype=torch.float32)[0].dtype == torch.float32
    _raises(lambda: am.canvas_offsets(0), "grid_size must be an int >= 1; got 0")


def _np_canvas(rows):
    """rows [N, Q, Q] -> canvases [N, 2G-1, 2G-1] by loops."""
    N, Q, _ = rows.shape
    G = math.isqrt(Q)
    out = np.zeros((N, 2 * G - 1, 2 * G - 1))
    for n in range(N):
        for q in range(Q):
            for k in range(Q):
                out[n, k // G - q // G + G - 1, k % G - q % G + G - 1] += rows[n, q, k]
    return out / Q


def test_aaam_canvas_batched_2d_and_its_message():
    rng = np.random.default_rng(12)
    rows = rng.dirichlet(np.ones(9), size=(2, 3, 9))
    got = am.aaam_canvas(torch.from_numpy(rows))
    assert got.shape == (2, 3, 5, 5) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _np_canvas(rows.reshape(6, 9, 9)).reshape(2, 3, 5, 5), atol=1e-15)
    two_d = am.aaam_canvas(torch.from_numpy(rows[0, 0]).float())
    assert two_d.shape == (5, 5) and two_d.dtype == torch.float32
    np.testing.assert_allclose(two_d.numpy(), _np_canvas(rows[0, :1])[0], rtol=1e-6)
    for shape in ((4,), (4, 9), (5, 5), (2, 9, 4)):
        _raises(lambda: am.aaam_canvas(torch.zeros(shape)),
                f"rows must be [..., G*G, G*G] (spatial queries x keys); got {shape}")


def test_aaam_per_image_and_aaam_with_prefix_tokens():
    a = _random_attn(3, 2, 3, 2, seed=13)
    rows = a.numpy()[:, :, 2:, 2:]
    rows = rows / rows.sum(-1, keepdims=True)
    ref = _np_canvas(rows.reshape(6, 9, 9)).reshape(3, 2, 5, 5)
    np.testing.assert_allclose(am.aaam_per_image(a, 2).numpy(), ref, atol=1e-15)
    np.testing.assert_allclose(am.aaam(a, 2).numpy(), ref.mean(0), atol=1e-15)
    b = a[:, :, 1:, 1:] / a[:, :, 1:, 1:].sum(-1, keepdim=True)
    torch.testing.assert_close(am.aaam(b), am.aaam(b, 1), rtol=0, atol=0)


def _np_window_moments(canvas, radius):
    """canvas [2G-1, 2G-1] -> every head feature by loops, float64."""
    n = canvas.shape[-1]
    G = (n + 1) // 2
    cells = [(i - (G - 1), j - (G - 1), canvas[i, j]) for i in range(n) for j in range(n)
             if abs(i - (G - 1)) <= radius and abs(j - (G - 1)) <= radius]
    local = sum(p for _, _, p in cells)
    q = [(y, x, p / local if local else 0.0) for y, x, p in cells]
    my, mx = sum(p * y for y, x, p in q), sum(p * x for y, x, p in q)
    vy, vx = sum(p * (y - my) ** 2 for y, x, p in q), sum(p * (x - mx) ** 2 for y, x, p in q)
    ay, ax = sum(p * abs(y - my) for y, x, p in q), sum(p * abs(x - mx) for y, x, p in q)
    axy = sum(p * abs(y - my) * abs(x - mx) for y, x, p in q)
    return {"local_mass": local, "centre_mass": canvas[G - 1, G - 1], "offset_y": my, "offset_x": mx,
            "offset": math.hypot(my, mx), "spread": math.sqrt(vy + vx),
            "anisotropy": abs(vy - vx) / (vy + vx) if vy + vx > 0 else 0.0,
            "cross": 1 - axy / (ay * ax) if ay * ax > 0 else 0.0,
            "moment": (sum(p * y for y, x, p in cells), sum(p * x for y, x, p in cells))}


def _canvases(shape, G, seed):
    rng = np.random.default_rng(seed)
    c = rng.random(shape + (2 * G - 1, 2 * G - 1)) ** 4
    return c / c.sum((-2, -1), keepdims=True)


@pytest.mark.parametrize("radius", [None, 0, 1, 3])
def test_head_features_and_local_moment_against_loops(radius):
    maps = _canvases((2, 4), 5, seed=14)                       # shape[1] = 4: an even leading size is fine
    kw = {} if radius is None else {"radius": radius}
    r = am.LOCAL_RADIUS if radius is None else radius
    f = am.head_features(torch.from_numpy(maps).float(), **kw)
    moment = am.local_moment(torch.from_numpy(maps).float(), **kw)
    assert moment.shape == (2, 4, 2) and moment.dtype == torch.float64
    for key in f:
        assert f[key].shape == (2, 4) and f[key].dtype == torch.float64, key
    m32 = torch.from_numpy(maps).float().double().numpy()
    for i in range(2):
        for j in range(4):
            ref = _np_window_moments(m32[i, j], r)
            np.testing.assert_allclose(moment[i, j].numpy(), ref["moment"], rtol=1e-12, atol=1e-15)
            for key in f:
                assert float(f[key][i, j]) == pytest.approx(ref[key], rel=1e-10, abs=1e-13), key


def test_head_features_default_radius_is_local_radius():
    maps = torch.from_numpy(_canvases((3,), 6, seed=15))
    assert am.LOCAL_RADIUS == 2
    for fn in (am.head_features, am.local_moment):
        d, two, three = fn(maps), fn(maps, 2), fn(maps, 3)
        d, two, three = (x if isinstance(x, torch.Tensor) else x["local_mass"] for x in (d, two, three))
        torch.testing.assert_close(d, two, rtol=0, atol=0)
        assert not torch.allclose(d, three)
    assert am.classify_heads(maps) == am.classify(am.head_features(maps, 2))


def test_head_features_degenerate_canvases_are_zero_not_one():
    c = torch.zeros(3, 5, 5, dtype=torch.float64)
    c[0, 2, 2] = 1.0                                           # all mass on the query: no spread
    c[1, 0, 0] = 1.0                                           # all mass outside a radius-1 window
    c[2, 2, 1:4] = 1 / 3                                       # a horizontal line: cross undefined (E|dy| = 0)
    f = am.head_features(c, radius=1)
    assert f["anisotropy"].tolist() == [0.0, 0.0, 1.0]
    assert f["cross"].tolist() == [0.0, 0.0, 0.0]
    assert f["local_mass"].tolist() == [1.0, 0.0, pytest.approx(1.0)]
    assert f["centre_mass"].tolist() == [1.0, 0.0, pytest.approx(1 / 3)]
    assert f["offset"].tolist() == [0.0, 0.0, 0.0] and f["spread"][0] == 0.0
    assert float(f["spread"][2]) == pytest.approx(math.sqrt(2 / 3))


def test_canvas_check_message_and_local_moment_rows_radius():
    expected = "maps must be AAAM canvases [..., 2G-1, 2G-1] (odd, square); got {}"
    for fn in (am.head_features, am.local_moment, am.classify_heads):
        _raises(lambda: fn([[1.0]]), expected.format("list"))
        for shape in ((5,), (3, 4, 4), (5, 3), (2, 3, 5)):
            _raises(lambda: fn(torch.zeros(shape)), expected.format(shape))
    assert am.local_moment(torch.zeros(4, 2, 3, 3)).shape == (4, 2, 2)      # leading sizes even: accepted
    assert am.head_features(torch.zeros(1, 1))["local_mass"].shape == ()
    for fn in (am.head_features, am.local_moment, am.classify_heads):
        _raises(lambda: fn(torch.zeros(3, 3), -1), "radius must be an int >= 0; got -1")
    _raises(lambda: am.local_moment_rows(torch.zeros(4, 4), -1), "radius must be an int >= 0; got -1")


@pytest.mark.parametrize("radius", [None, 0, 1, 2])
def test_local_moment_rows_default_radius_and_dtype(radius):
    rng = np.random.default_rng(16)
    rows = torch.from_numpy(rng.dirichlet(np.ones(25), size=(2, 3, 25))).float()
    kw = {} if radius is None else {"radius": radius}
    got = am.local_moment_rows(rows, **kw)
    assert got.shape == (2, 3, 2) and got.dtype == torch.float64
    canvas = _np_canvas(rows.double().numpy().reshape(6, 25, 25))
    r = am.LOCAL_RADIUS if radius is None else radius
    ref = np.array([_np_window_moments(c, r)["moment"] for c in canvas]).reshape(2, 3, 2)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------- classify
def _features(**values):
    base = {"local_mass": 1.0, "centre_mass": 0.0, "offset": 0.0, "anisotropy": 0.0, "cross": 0.0}
    base.update(values)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in base.items()}


def test_classify_thresholds_are_inclusive_at_the_bound():
    assert (am.LOCAL_MASS_MIN, am.STRICT_CENTRE_MIN, am.OFFSET_MIN, am.AXIAL_ANISOTROPY_MIN, am.AXIAL_CROSS_MIN) \
        == (0.5, 0.5, 0.5, 0.5, 0.5)
    below = 0.5 - 1e-9
    cases = [({}, "soft local"),
             ({"local_mass": 0.5}, "soft local"), ({"local_mass": below}, "global"),
             ({"centre_mass": 0.5}, "strict local"), ({"centre_mass": below}, "soft local"),
             ({"offset": 0.5}, "offset local"), ({"offset": below}, "soft local"),
             ({"anisotropy": 0.5}, "axial local"), ({"anisotropy": below}, "soft local"),
             ({"cross": 0.5}, "axial local"), ({"cross": below}, "soft local"),
             # the first rule that applies wins: global > strict > offset > axial
             ({"local_mass": 0.1, "centre_mass": 0.9, "offset": 1, "cross": 1}, "global"),
             ({"centre_mass": 0.9, "offset": 1, "cross": 1}, "strict local"),
             ({"offset": 1, "anisotropy": 1, "cross": 1}, "offset local")]
    for values, expected in cases:
        assert am.classify(_features(**values)) == expected, values
    # float32 features are compared in float64: 0.5 - 1e-9 rounds to 0.5 in float32 only after the cast
    assert am.classify({k: v.float() for k, v in _features(offset=0.5).items()}) == "offset local"


def test_classify_nests_like_the_features():
    names = ["soft local", "global", "strict local", "offset local", "axial local", "soft local"]
    values = {"soft local": {}, "global": {"local_mass": 0.0}, "strict local": {"centre_mass": 1.0},
              "offset local": {"offset": 2.0}, "axial local": {"cross": 1.0}}
    feats = [_features(**values[n]) for n in names]
    stacked = {k: torch.stack([f[k] for f in feats]) for k in feats[0]}
    assert am.classify(stacked) == names
    assert am.classify({k: v.reshape(2, 3) for k, v in stacked.items()}) == [names[:3], names[3:]]
    assert am.classify({k: v.reshape(3, 2) for k, v in stacked.items()}) == [names[:2], names[2:4], names[4:]]
    assert am.classify({k: v.reshape(1, 3, 2) for k, v in stacked.items()}) == [[names[:2], names[2:4], names[4:]]]
    assert am.classify({k: v[1] for k, v in stacked.items()}) == "global"          # 0-d: a name, not a list


def test_direction_ties_and_zero():
    assert am.direction(0.0, 0.0) == "right"
    assert am.direction(1.0, 1.0) == "right" and am.direction(1.0, -1.0) == "left"
    assert am.direction(-1.0, 1.0) == "right" and am.direction(-1.0, -1.0) == "left"
    assert am.direction(2.0, 1.0) == "down" and am.direction(-2.0, 1.0) == "up"
    assert am.direction(2.0, 0.0) == "down" and am.direction(-2.0, -0.0) == "up"
    assert am.direction(0.0, 0.5) == "right" and am.direction(0.0, -0.5) == "left"


# -------------------------------------------------------------------------------------------- CLS-map statistics
def _np_central(G, fraction):
    centre = (np.arange(G) + 0.5) / G
    inside = np.abs(centre - 0.5) <= fraction / 2 + 1e-9
    return inside[:, None] & inside[None, :]


def test_central_region_bounds_default_and_values():
    assert am.CENTRAL_FRACTION == 0.5
    for G in (1, 2, 3, 4, 5, 14):
        for fraction in (0.2, 0.5, 0.7, 1.0):
            got = am.central_region(G, fraction)
            assert got.dtype == torch.bool and got.shape == (G, G)
            assert np.array_equal(got.numpy(), _np_central(G, fraction)), (G, fraction)
        assert torch.equal(am.central_region(G), am.central_region(G, 0.5))
    assert bool(am.central_region(6, 1.0).all())               # fraction 1 (the bound) keeps every token
    assert int(am.central_region(2, 0.5).sum()) == 4            # centres 0.25 and 0.75 sit exactly on the edge
    for bad in (0, 1.01, -0.5):
        _raises(lambda: am.central_region(4, bad), f"fraction must be in (0, 1]; got {bad!r}")
    _raises(lambda: am.central_region(0), "grid_size must be an int >= 1; got 0")


def test_mass_on_batched_float64_and_message():
    rng = np.random.default_rng(17)
    maps = rng.random((2, 3, 4, 5))
    mask = rng.random((4, 5)) > 0.5
    got = am.mass_on(torch.from_numpy(maps).float(), torch.from_numpy(mask))
    assert got.shape == (2, 3) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), (maps.astype(np.float32).astype(np.float64) * mask).sum((-2, -1)),
                               rtol=1e-13)
    for bad, name in (([[1.0]], "list"), (torch.zeros(4), "Tensor")):
        _raises(lambda: am.mass_on(bad, torch.ones(2, 2, dtype=torch.bool)),
                f"maps must be a tensor [..., G, G]; got {name}")


def _np_coverage(m, mass):
    flat = np.sort(m.reshape(-1))[::-1] / m.sum()
    return (int((np.cumsum(flat) < mass - 1e-12).sum()) + 1) / flat.size


def test_coverage_batched_bounds_and_default():
    rng = np.random.default_rng(18)
    maps = rng.random((2, 3, 4, 4)) ** 3 * 5                    # any scale: divided by each map's sum
    got = am.coverage(torch.from_numpy(maps))
    assert got.shape == (2, 3) and got.dtype == torch.float64
    for mass in (None, 0.3, 1.0):
        kw = {} if mass is None else {"mass": mass}
        got = am.coverage(torch.from_numpy(maps), **kw)
        ref = [[_np_coverage(maps[i, j], am.COVERAGE_MASS if mass is None else mass) for j in range(3)]
               for i in range(2)]
        np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=0)
    assert am.COVERAGE_MASS == 0.6
    assert float(am.coverage(torch.full((2, 2), 0.25), 1)) == 1.0           # mass 1 (the bound): every token
    for bad in (0, 1.5, -0.1):
        _raises(lambda: am.coverage(torch.ones(2, 2), bad), f"mass must be in (0, 1]; got {bad!r}")


def test_top_tokens_batched_bounds_and_default():
    maps = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(19))
    assert am.TOP_FRACTION == 0.1
    for fraction, k in ((None, 2), (0.1, 2), (0.25, 5), (1.0, 20)):
        got = am.top_tokens(maps) if fraction is None else am.top_tokens(maps, fraction)
        assert got.shape == maps.shape and got.dtype == torch.bool
        flat = maps.reshape(6, 20).numpy()
        ref = np.zeros((6, 20), dtype=bool)
        for i, row in enumerate(flat):
            ref[i, np.argsort(-row)[:k]] = True
        assert np.array_equal(got.reshape(6, 20).numpy(), ref), fraction
    for bad in (0, 1.5):
        _raises(lambda: am.top_tokens(maps, bad), f"fraction must be in (0, 1]; got {bad!r}")


def test_uniform_aaam_formula():
    for G in (1, 2, 4):
        u = am.uniform_aaam(G)
        assert u.dtype == torch.float64 and u.shape == (2 * G - 1, 2 * G - 1)
        ref = np.array([[(G - abs(dy)) * (G - abs(dx)) / G ** 4 for dx in range(1 - G, G)] for dy in range(1 - G, G)])
        np.testing.assert_allclose(u.numpy(), ref, rtol=1e-15)
        assert float(u.sum()) == pytest.approx(1.0, abs=1e-14)


def test_messages_start_with_the_argument_name():
    # Guards the anchored form for the messages above that interpolate values.
    with pytest.raises(ValueError, match=re.escape("radius must be an int >= 0; got -2")):
        am.head_features(torch.zeros(3, 3), -2)

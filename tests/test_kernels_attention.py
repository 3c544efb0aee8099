"""Tests for vitscope.kernels.attention against an independent loop-based NumPy reference (TM 4.1, 4.3)."""

import math

import numpy as np
import pytest
import torch

from vitscope.kernels import attention as att

# ---------- independent NumPy reference (does not import vitscope) ----------

def np_attention_distance(a, n_prefix, variant, patch_size=None):
    B, H, T, _ = a.shape
    N = T - n_prefix
    G = int(round(math.sqrt(N)))
    pos = []
    for i in range(N):
        r, c = i // G, i % G
        pos.append((c / (G - 1), r / (G - 1)) if variant == "teaching-matters" else (c * patch_size, r * patch_size))
    out = np.zeros((B, H))
    for b in range(B):
        for h in range(H):
            total = 0.0
            for q in range(N):
                row = a[b, h, n_prefix + q, n_prefix:].astype(np.float64)
                if variant == "teaching-matters" and row.sum() > 0:
                    row = row / row.sum()
                total += sum(row[k] * math.dist(pos[q], pos[k]) for k in range(N))
            out[b, h] = total / N
    return out


def random_attn(B, H, G, n_prefix, seed=0):
    rng = np.random.default_rng(seed)
    T = n_prefix + G * G
    logits = rng.normal(scale=2.0, size=(B, H, T, T))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def empty_attn(G, n_prefix=1, B=1, H=1):
    T = n_prefix + G * G
    a = torch.zeros(B, H, T, T, dtype=torch.float64)
    a[:, :, :n_prefix, :] = 1.0 / T  # prefix query rows: any valid distribution
    return a


# ---------- attention distance ----------

@pytest.mark.parametrize("G,n_prefix", [(3, 1), (4, 2), (2, 0)])
@pytest.mark.parametrize("variant", ["teaching-matters", "pixels"])
def test_distance_matches_numpy(G, n_prefix, variant):
    a = random_attn(2, 3, G, n_prefix, seed=G + n_prefix)
    got = att.attention_distance(torch.from_numpy(a), n_prefix=n_prefix, variant=variant, patch_size=16)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), np_attention_distance(a, n_prefix, variant, 16), rtol=0, atol=1e-10)


def test_float32_input_close_to_float64():
    a = random_attn(1, 2, 3, 1, seed=5)
    got = att.attention_distance(torch.from_numpy(a).float())
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), np_attention_distance(a, 1, "teaching-matters"), atol=1e-5)


def test_self_attention_is_distance_zero():
    a = empty_attn(2)
    for q in range(4):
        a[0, 0, 1 + q, 1 + q] = 1.0
    assert att.attention_distance(a).item() == 0.0
    assert att.attention_distance(a, variant="pixels", patch_size=16).item() == 0.0


def test_uniform_attention_on_2x2_grid():
    a = empty_attn(2)
    a[0, 0, 1:, 1:] = 0.25
    # From any corner of the unit square: distances 0, 1, 1, sqrt(2) to the four tokens.
    expected = (0 + 1 + 1 + math.sqrt(2)) / 4
    assert att.attention_distance(a).item() == pytest.approx(expected, abs=1e-12)
    assert att.attention_distance(a, variant="pixels", patch_size=16).item() == pytest.approx(16 * expected,
                                                                                            abs=1e-12)


def test_all_attention_on_cls_gives_zero_not_nan():
    # Spatial mass 0: the renormalisation guard keeps the row at 0 instead of 0/0 = NaN.
    a = empty_attn(2)
    a[0, 0, 1:, 0] = 1.0
    assert att.attention_distance(a).item() == 0.0
    assert att.attention_distance(a, variant="pixels", patch_size=16).item() == 0.0


def test_renormalisation_matters():
    # Half the mass on CLS, half on the diagonally opposite corner (distance sqrt(2) on the unit square).
    a = empty_attn(2)
    for q in range(4):
        a[0, 0, 1 + q, 0] = 0.5
        a[0, 0, 1 + q, 1 + (3 - q)] = 0.5
    assert att.attention_distance(a).item() == pytest.approx(math.sqrt(2), abs=1e-12)
    assert att.attention_distance(a, variant="pixels", patch_size=16).item() == pytest.approx(
        0.5 * 16 * math.sqrt(2), abs=1e-12)


def test_token_grid_distances():
    d = att.token_grid_distances(3)
    assert d.shape == (9, 9)
    assert d[0, 2].item() == pytest.approx(1.0)  # token 2 = (row 0, col 2): along x
    assert d[0, 6].item() == pytest.approx(1.0)  # token 6 = (row 2, col 0): along y
    assert d[0, 8].item() == pytest.approx(math.sqrt(2))
    assert d[0, 5].item() == pytest.approx(math.hypot(1.0, 0.5))  # token 5 = (row 1, col 2)
    torch.testing.assert_close(att.token_grid_distances(3, "pixels", patch_size=16), 32 * d)
    with pytest.raises(ValueError, match="grid_size"):
        att.token_grid_distances(1)


# ---------- CLS attention maps ----------

@pytest.mark.parametrize("n_prefix", [1, 2])
def test_cls_map_one_hot_lands_at_row_col(n_prefix):
    G, r, c = 3, 1, 2
    a = torch.from_numpy(random_attn(2, 4, G, n_prefix, seed=1))
    a[1, 3, 0, :] = 0.0
    a[1, 3, 0, n_prefix + r * G + c] = 1.0
    m = att.cls_attention_map(a, n_prefix=n_prefix)
    assert m.shape == (2, 4, G, G)
    assert m[1, 3, r, c].item() == 1.0 and m[1, 3].sum().item() == 1.0
    # Not renormalised: other maps sum to 1 minus the CLS query's mass on prefix keys.
    torch.testing.assert_close(m[0, 0].sum(), 1 - a[0, 0, 0, :n_prefix].sum())
    mean = att.mean_cls_attention_map(a, n_prefix=n_prefix)
    assert mean.shape == (4, G, G)
    torch.testing.assert_close(mean, m.mean(0))


# ---------- errors ----------

def test_error_non_square_token_count():
    a = torch.full((1, 1, 6, 6), 1 / 6)
    with pytest.raises(ValueError, match=r"T=6.*n_prefix=1"):
        att.attention_distance(a)
    with pytest.raises(ValueError, match=r"T=6.*n_prefix=1"):
        att.cls_attention_map(a)


def test_error_logits_instead_of_probabilities():
    logits = torch.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match="logits"):
        att.attention_distance(logits)


def test_error_missing_patch_size_and_bad_inputs():
    a = torch.from_numpy(random_attn(1, 1, 2, 1))
    with pytest.raises(ValueError, match="patch_size"):
        att.attention_distance(a, variant="pixels")
    with pytest.raises(ValueError, match="choose from"):
        att.attention_distance(a, variant="raghu")
    with pytest.raises(ValueError, match=r"\[B, H, T, T\]"):
        att.attention_distance(a[0])
    bad = a.clone()
    bad[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        att.validate_attention(bad, 1)


def test_uniform_attention_distance_is_the_uniform_head():
    from vitscope.kernels.attention import attention_distance, uniform_attention_distance

    assert uniform_attention_distance(2) == pytest.approx((0 + 1 + 1 + np.sqrt(2)) / 4)
    G = 5
    attn = torch.full((1, 1, 1 + G * G, 1 + G * G), 1.0 / (1 + G * G), dtype=torch.float64)
    assert attention_distance(attn)[0, 0].item() == pytest.approx(uniform_attention_distance(G))
    assert uniform_attention_distance(G, "pixels", 16) == pytest.approx(16 * (G - 1) * uniform_attention_distance(G))


# ---------- one pass, both methods (issue 9 part 2) ----------

def test_single_pass_serves_both_methods_and_pixels_is_the_scaled_unnormalised_sum():
    """pixels = (unnormalised unit-square sum) x patch_size x (G-1): the algebra, checked on the NumPy reference."""
    G, n_prefix, ps = 4, 1, 16
    a = random_attn(2, 3, G, n_prefix, seed=11)
    both = att.attention_distances(torch.from_numpy(a), n_prefix, patch_size=ps)
    assert set(both) == set(att.METHODS)
    np.testing.assert_allclose(both["unit_square"].numpy(), np_attention_distance(a, n_prefix, "teaching-matters"),
                               atol=1e-10, rtol=0)
    np.testing.assert_allclose(both["pixels"].numpy(), np_attention_distance(a, n_prefix, "pixels", ps),
                               atol=1e-9, rtol=0)
    # the unnormalised unit-square sum, by hand: per query sum_k a_qk d_unit(q, k), mean over queries
    d_unit = np.array([[math.dist((q % G / (G - 1), q // G / (G - 1)), (k % G / (G - 1), k // G / (G - 1)))
                        for k in range(G * G)] for q in range(G * G)])
    raw = (a[:, :, n_prefix:, n_prefix:] * d_unit).sum(-1).mean(-1)
    np.testing.assert_allclose(both["pixels"].numpy(), raw * ps * (G - 1), atol=1e-9, rtol=0)
    # the single-method function and the former variant names agree with the one-pass result
    for method, legacy in (("unit_square", "teaching-matters"), ("pixels", "pixels")):
        torch.testing.assert_close(att.attention_distance(torch.from_numpy(a), n_prefix, method, ps), both[method])
        torch.testing.assert_close(att.attention_distance(torch.from_numpy(a), n_prefix, variant=legacy,
                                                          patch_size=ps), both[method])


def test_float32_path_within_1e6_of_float64_at_vit_size():
    """ViT-B/16 geometry (G=14, 197 tokens): float32 row sums, float64 query means, vs all-float64."""
    a = torch.from_numpy(random_attn(2, 4, 14, 1, seed=3))
    d64 = att.attention_distances(a, 1, patch_size=16)
    d32 = att.attention_distances(a.float(), 1, patch_size=16)
    assert (d32["unit_square"].double() - d64["unit_square"]).abs().max() < 1e-6
    # pixel values reach ~200: the same relative accuracy, i.e. 1e-6 in unit-square terms
    assert ((d32["pixels"].double() - d64["pixels"]) / (16 * 13)).abs().max() < 1e-6


def test_negative_attention_entries_are_rejected():
    a = torch.from_numpy(random_attn(1, 1, 3, 1, seed=2))
    a[0, 0, 2, 3] += 0.2
    a[0, 0, 2, 4] -= 0.2                       # the row still sums to 1, but one entry is negative
    assert a.min() < -1e-3
    with pytest.raises(ValueError, match="entries >= 0"):
        att.attention_distance(a)
    with pytest.raises(ValueError, match="NaN or Inf"):
        att.attention_distances(torch.full((1, 1, 5, 5), float("nan")))


def test_unchecked_path_gives_the_same_numbers_and_lets_nan_through_as_nan():
    """Extraction skips the probability checks on maps a softmax produced; the numbers must not change."""
    a = torch.from_numpy(random_attn(3, 2, 5, 1, seed=4)).float()
    checked = att.attention_distances(a, 1, patch_size=16)
    unchecked = att.attention_distances(a, 1, patch_size=16, check_probabilities=False)
    for method in att.METHODS:
        torch.testing.assert_close(unchecked[method], checked[method], rtol=0, atol=0)
    bad = a.clone()
    bad[1, 0, 3, 2] = float("nan")
    out = att.attention_distances(bad, 1, patch_size=16, check_probabilities=False)
    assert torch.isnan(out["unit_square"][1, 0]) and torch.isfinite(out["unit_square"][0]).all()
    with pytest.raises(ValueError, match="not a square"):                 # the layout is still checked
        att.attention_distances(a[:, :, :-1, :-1], 1, check_probabilities=False)


def test_half_and_strided_maps_match_the_numpy_reference():
    a = random_attn(2, 3, 4, 2, seed=5)
    wide = torch.zeros(2, 3, 18, 20, dtype=torch.float64)
    wide[:, :, :, :18] = torch.from_numpy(a)
    strided = wide[:, :, :, :18]                                          # rows not contiguous in memory
    for m, v in (("unit_square", "teaching-matters"), ("pixels", "pixels")):
        ref = np_attention_distance(a, 2, v, 16)
        np.testing.assert_allclose(att.attention_distance(strided, 2, m, 16).numpy(), ref, rtol=1e-12)
        np.testing.assert_allclose(att.attention_distance(strided.half(), 2, m, 16).double().numpy(), ref,
                                   rtol=3e-3)

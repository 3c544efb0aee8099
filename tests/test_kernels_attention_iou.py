"""Attention-mass masks, object masks on the token grid, IoU and the two best-head rules (TM 4.4), against hand
cases and a float64 NumPy transcription of DINO's procedure."""
import numpy as np
import pytest
import torch

from vitscope.kernels import attention_iou as k


def dino_mask_reference(a: np.ndarray, mass: float) -> np.ndarray:
    """DINO's visualize_attention.py, transcribed for one flat map: sort ascending, normalise, cumulative sum,
    keep where it exceeds 1 - mass, undo the sort (ties resolved as our stable rule: lower index ranks higher)."""
    order = np.lexsort((-np.arange(a.size), a))          # ascending value; among ties the higher index first
    val = a[order] / a.sum()
    keep_sorted = np.cumsum(val) > 1 - mass + 1e-12
    out = np.zeros(a.size, dtype=bool)
    out[order] = keep_sorted
    return out


def test_mass_mask_hand_case():
    # 0.5 alone is short of 0.6; 0.5 + 0.3 reaches it: two tokens.
    m = torch.tensor([[0.5, 0.1], [0.3, 0.1]])
    assert k.mass_mask(m).tolist() == [[True, False], [True, False]]
    # exactly 0.6 in the first token is enough (reaches = >=)
    m = torch.tensor([[0.6, 0.2], [0.1, 0.1]])
    assert k.mass_mask(m).tolist() == [[True, False], [False, False]]


def test_mass_mask_ties_go_to_the_lower_index():
    m = torch.full((2, 2), 0.25)              # uniform: any 3 tokens hold 0.75 >= 0.6, 2 hold only 0.5
    assert k.mass_mask(m).flatten().tolist() == [True, True, True, False]


def test_mass_mask_matches_dino_reference_and_is_scale_free():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 3, 7, 7, generator=g) ** 3
    for mass in (0.3, 0.6, 0.9):
        got = k.mass_mask(maps * 17.0, mass).reshape(-1, 49).numpy()
        ref = np.stack([dino_mask_reference(a, mass) for a in maps.double().reshape(-1, 49).numpy()])
        np.testing.assert_array_equal(got, ref)
        # the smallest such set: the kept mass reaches `mass`, and dropping the least attended kept token falls short
        flat = maps.reshape(-1, 49).double()
        kept = (flat * torch.from_numpy(got)).sum(1) / flat.sum(1)
        least = torch.where(torch.from_numpy(got), flat, torch.inf).min(1).values / flat.sum(1)
        assert bool((kept >= mass - 1e-12).all()) and bool((kept - least < mass).all())


def test_mass_mask_zero_map_and_bad_inputs():
    assert not k.mass_mask(torch.zeros(3, 3)).any()
    with pytest.raises(ValueError, match="non-negative"):
        k.mass_mask(torch.tensor([[1.0, -0.5], [0.2, 0.3]]))
    with pytest.raises(ValueError, match="mass"):
        k.mass_mask(torch.ones(2, 2), 0.0)


def test_object_fraction_and_grid_rule():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 0] = True                           # patch (0, 0): 1 of 4 pixels
    mask[0:2, 2:4] = True                       # patch (0, 1): 4 of 4
    mask[2, 0:2] = True                         # patch (1, 0): 2 of 4 (exactly the threshold)
    frac = k.object_fraction(mask, 2)
    assert frac.tolist() == [[0.25, 1.0], [0.5, 0.0]]
    assert k.mask_to_grid(mask, 2).tolist() == [[False, True], [True, False]]
    assert k.mask_to_grid(mask, (2, 2), threshold=0.75).tolist() == [[False, True], [False, False]]


def test_iou_token_sets_and_pixel_level():
    pred = torch.tensor([[True, True], [False, False]])
    target = torch.tensor([[True, False], [True, False]])
    assert k.iou(pred, target).item() == pytest.approx(1 / 3)
    # pixel level: a 4x4 mask, 2x2 grid; pred upsampled covers the top half (8 px); object = left 2 columns + 1 px
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:, 0:2] = True
    mask[0, 2] = True
    pixel_pred = pred.repeat_interleave(2, 0).repeat_interleave(2, 1)
    inter = (pixel_pred & mask).sum().item()
    union = (pixel_pred | mask).sum().item()
    assert k.iou(pred, k.object_fraction(mask, 2)).item() == pytest.approx(inter / union)
    assert torch.isnan(k.iou(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)))


def test_iou_batched_against_numpy():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(4, 3, 5, 5, generator=g) > 0.5
    t = torch.rand(4, 1, 5, 5, generator=g) > 0.4
    got = k.iou(p, t)
    pn, tn = p.numpy(), np.broadcast_to(t.numpy(), p.shape)
    ref = (pn & tn).sum((-2, -1)) / (pn | tn).sum((-2, -1))
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)


def test_patch_sums():
    a = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) - 40
    got = k.patch_sums(a, 2)
    ref = np.abs(a.double().numpy()).sum(1).reshape(2, 2, 2, 2, 2).sum((2, 4))
    np.testing.assert_allclose(got.numpy(), ref)


def test_best_head_rules_hand_case():
    # 4 images, 1 layer, 2 heads: head 0 is better on average, but head 1 wins on images 2 and 3.
    s = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.4], [0.2, 0.6]], dtype=torch.float64).reshape(4, 1, 2)
    assert k.best_head_per_image(s)[:, 0].tolist() == [0.9, 0.8, 0.4, 0.6]
    out = k.held_out_best_head(s, 0)
    choose, score = out["choose"], out["score"]
    assert sorted(choose.tolist() + score.tolist()) == [0, 1, 2, 3] and len(choose) == 2
    expected_head = int(s[choose, 0].mean(0).argmax())
    assert out["head"].tolist() == [expected_head]
    assert out["iou"][:, 0].tolist() == s[score, 0, expected_head].tolist()


def test_per_image_max_is_optimistic_on_random_heads():
    g = torch.Generator().manual_seed(2)
    s = torch.rand(200, 3, 6, generator=g)           # heads with no skill: every head alike in expectation
    assert float(k.best_head_per_image(s).mean()) > float(k.held_out_best_head(s, 0)["iou"].mean()) + 0.2


def test_split_is_seeded_and_disjoint():
    a, b = k.split_halves(11, 3)
    a2, b2 = k.split_halves(11, 3)
    assert torch.equal(a, a2) and torch.equal(b, b2) and len(a) == 5 and len(b) == 6
    assert not set(a.tolist()) & set(b.tolist())
    with pytest.raises(ValueError, match="NaN"):
        k.held_out_best_head(torch.full((4, 1, 2), float("nan")), 0)

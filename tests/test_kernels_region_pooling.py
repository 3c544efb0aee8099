"""kernels.region_pooling: one feature per region from the tokens overlapping its mask (TM 5.3)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitscope.kernels.region_pooling import coverage, pool_regions, region_weights


def _hand_case():
    """A 2x2 token grid of 2 px patches (4x4 px image); token (r, c) has feature [10 r + c, 1]."""
    tokens = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[10.0, 1.0], [11.0, 1.0]]])      # [2, 2, C=2]
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True            # one pixel of token (0, 0): coverage 1/4
    masks[0, 0:2, 2:4] = True        # all of token (0, 1): coverage 1
    masks[1, 2:4, 0:2] = True        # all of token (1, 0)
    masks[1, 2, 2:4] = True          # half of token (1, 1)
    return tokens, masks             # mask 2 is empty


def test_hand_case_any_fraction_weighted():
    tokens, masks = _hand_case()
    cov = coverage(masks, 2)
    assert cov[0].tolist() == [[0.25, 1.0], [0.0, 0.0]]
    assert cov[1].tolist() == [[0.0, 0.0], [1.0, 0.5]]
    # any: region 0 = mean of tokens (0,0) and (0,1) = [0.5, 1]; region 1 = mean of (1,0), (1,1) = [10.5, 1]
    feats, kept = pool_regions(tokens, masks, 2, "any")
    assert kept.tolist() == [True, True, False]
    assert feats.tolist() == [[0.5, 1.0], [10.5, 1.0]]
    # fraction 0.5: region 0 keeps only token (0,1) -> [1, 1]; region 1 keeps both
    feats, kept = pool_regions(tokens, masks, 2, "fraction", min_fraction=0.5)
    assert feats.tolist() == [[1.0, 1.0], [10.5, 1.0]]
    # fraction 0.75: region 1 keeps only token (1,0)
    feats, _ = pool_regions(tokens, masks, 2, "fraction", min_fraction=0.75)
    assert feats.tolist() == [[1.0, 1.0], [10.0, 1.0]]
    # weighted: region 0 = (0.25 * 0 + 1 * 1) / 1.25 = 0.8; region 1 = (1 * 10 + 0.5 * 11) / 1.5
    feats, _ = pool_regions(tokens, masks, 2, "weighted")
    assert feats[:, 0].tolist() == pytest.approx([0.8, 15.5 / 1.5])
    assert feats[:, 1].tolist() == pytest.approx([1.0, 1.0])


def test_sliver_skipped_under_a_threshold():
    tokens, masks = _hand_case()
    _, kept = pool_regions(tokens, masks[:1], 2, "fraction", min_fraction=1.0)
    assert kept.tolist() == [True]
    sliver = torch.zeros(1, 4, 4, dtype=torch.bool)
    sliver[0, 0, 0] = True
    feats, kept = pool_regions(tokens, sliver, 2, "fraction", min_fraction=0.5)
    assert kept.tolist() == [False] and feats.shape == (0, 2)


def _reference(tokens: np.ndarray, masks: np.ndarray, patch: int, rule: str, min_fraction=None):
    """Loops in float64: per region, per token, the share of its patch inside the mask, then the weighted mean."""
    L, gh, gw, C = tokens.shape
    out, kept = [], []
    for m in masks:
        num, den = np.zeros((L, C)), 0.0
        for r in range(gh):
            for c in range(gw):
                share = m[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].mean()
                w = {"any": float(share > 0), "fraction": float(share >= (min_fraction or 0)),
                     "weighted": share}[rule]
                num += w * tokens[:, r, c]
                den += w
        kept.append(den > 0)
        if den > 0:
            out.append(num / den)
    return np.stack(out, axis=1) if out else np.zeros((L, 0, C)), kept


@pytest.mark.parametrize("rule,min_fraction", [("any", None), ("fraction", 0.3), ("weighted", None)])
def test_against_float64_loops(rule, min_fraction):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 4, 5, 6, generator=gen, dtype=torch.float64)       # 3 blocks, 4x5 grid, C=6
    masks = torch.rand(7, 4 * 3, 5 * 3, generator=gen) > 0.8                   # patch 3, sparse random masks
    masks[6] = False                                                             # one empty region
    feats, kept = pool_regions(tokens, masks, 3, rule, min_fraction)
    ref, ref_kept = _reference(tokens.numpy(), masks.numpy(), 3, rule, min_fraction)
    assert kept.tolist() == ref_kept
    np.testing.assert_allclose(feats.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_weights_sum_to_one_and_float32_kept():
    masks = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    w = region_weights(masks, 4, "weighted")
    assert torch.allclose(w.sum(dim=(1, 2)), torch.ones(4, dtype=torch.float64))
    feats, _ = pool_regions(torch.randn(2, 2, 5), masks, 4)
    assert feats.dtype == torch.float32 and feats.shape == (4, 5)


@pytest.mark.reliability("bad input", "region pooling with masks off the token grid or a wrong overlap rule")
def test_errors_name_the_problem():
    tokens, masks = _hand_case()
    with pytest.raises(ValueError, match="multiples of patch"):
        pool_regions(tokens, masks[:, :3], 2)
    with pytest.raises(ValueError, match="token grid"):
        pool_regions(tokens, torch.zeros(1, 6, 6, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="unknown"):
        pool_regions(tokens, masks, 2, "majority")
    with pytest.raises(ValueError, match="min_fraction"):
        pool_regions(tokens, masks, 2, "fraction")
    with pytest.raises(ValueError, match="only to rule='fraction'"):
        pool_regions(tokens, masks, 2, "any", min_fraction=0.5)
    with pytest.raises(ValueError, match="0/1"):
        pool_regions(tokens, masks.long() * 2, 2)

"""One feature per object or part: the tokens overlapping a region's mask, averaged (Teaching Matters 5.3).

TM 5.3: "Using ground truth segmentation masks, we extract and average the features of the tokens overlapping with
the masks." A token covers one ``patch x patch`` block of pixels of the (tiled) image; its **coverage** by a region
is the fraction of those pixels inside the region's mask. Which tokens "overlap" is a named rule:

* ``"any"`` (default, the paper's words): every token with coverage > 0 (its patch holds any pixel of the mask),
  averaged with equal weights;
* ``"fraction"``: tokens with coverage >= ``min_fraction``, equal weights (``min_fraction=0.5``: the tokens mostly
  inside the region);
* ``"weighted"``: every token, weighted by its coverage (weights sum to 1). Closest to the original code, which
  resizes each mask to the token grid with PIL's bicubic filter and normalises it to a sum of 1 (a soft mask whose
  weights also reach a little beyond the region); coverage is the exact area version of that soft mask.

A region that no token overlaps under the rule (e.g. a sliver thinner than ``min_fraction`` of any patch) gets no
feature: it is skipped, and ``kept`` says which.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_choice, check_finite, check_int

OVERLAP_RULES = ("any", "fraction", "weighted")


def coverage(masks: Tensor, patch: int) -> Tensor:
    """Fraction of each token's patch inside each mask: float64 ``[R, G_h, G_w]``.

    masks: bool (or 0/1) ``[R, H, W]`` with ``H = G_h * patch`` and ``W = G_w * patch`` (the tiled image's size).
    """
    patch = check_int(patch, "patch")
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"masks must be a tensor [R, H, W] (one mask per region); got {got}")
    R, H, W = masks.shape
    if H % patch or W % patch:
        raise ValueError(f"masks are {H}x{W} px, not multiples of patch ({patch}); resize them to the tiled image's "
                         "size (vitscope.extract.dense.resize_mask)")
    if masks.dtype != torch.bool and bool(((masks != 0) & (masks != 1)).any()):
        raise ValueError("masks must be boolean or 0/1; got other values (a label map? compare it with each label)")
    m = masks.to(torch.float64).reshape(R, H // patch, patch, W // patch, patch)
    return m.mean(dim=(2, 4))


def region_weights(masks: Tensor, patch: int, rule: str = "any", min_fraction: float | None = None) -> Tensor:
    """Per region, the weight of each token in its average: float64 ``[R, G_h, G_w]``, each region's weights
    summing to 1, or all 0 for a region no token overlaps under ``rule`` (see the module docstring)."""
    check_choice(rule, "rule (token overlap)", OVERLAP_RULES)
    if rule == "fraction":
        if min_fraction is None or isinstance(min_fraction, bool) or not 0 < float(min_fraction) <= 1:
            raise ValueError(f"rule='fraction' needs min_fraction in (0, 1] (the share of a patch inside the mask); "
                             f"got {min_fraction!r}")
    elif min_fraction is not None:
        raise ValueError(f"min_fraction={min_fraction!r} applies only to rule='fraction'; got rule={rule!r}")
    cov = coverage(masks, patch)
    if rule == "any":
        w = (cov > 0).to(torch.float64)
    elif rule == "fraction":
        w = (cov >= float(min_fraction)).to(torch.float64)
    else:
        w = cov
    total = w.sum(dim=(1, 2), keepdim=True)
    return torch.where(total > 0, w / total.clamp(min=1e-300), w)


def pool_regions(tokens: Tensor, masks: Tensor, patch: int, rule: str = "any",
                 min_fraction: float | None = None) -> tuple[Tensor, Tensor]:
    """Average the tokens overlapping each region into one feature per region.

    Args:
        tokens: ``[..., G_h, G_w, C]`` spatial tokens of one image (e.g. ``[n_blocks, G_h, G_w, C]`` from
            :func:`vitscope.extract.dense.dense_tokens`).
        masks: bool ``[R, H, W]``, ``H = G_h * patch``, ``W = G_w * patch``: one mask per object or part.
        patch: patch size in pixels.
        rule, min_fraction: which tokens overlap a region (module docstring).

    Returns ``(features [..., R_kept, C], kept bool [R])``: the features of the regions some token overlaps, in
    mask order, in the dtype of ``tokens`` (summed in float64); ``(~kept).sum()`` regions were skipped.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim < 3 or not tokens.is_floating_point():
        got = (tuple(tokens.shape), tokens.dtype) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a floating-point tensor [..., G_h, G_w, C]; got {got}")
    check_finite(tokens, "tokens")
    weights = region_weights(masks, patch, rule, min_fraction)            # [R, G_h, G_w]
    if weights.shape[1:] != tokens.shape[-3:-1]:
        raise ValueError(f"masks cover a {weights.shape[1]}x{weights.shape[2]} token grid (at patch {patch}) but the "
                         f"tokens are a {tokens.shape[-3]}x{tokens.shape[-2]} grid; resize the masks to the tiled "
                         "image's size")
    kept = weights.sum(dim=(1, 2)) > 0
    pooled = torch.einsum("rhw,...hwc->...rc", weights[kept].to(tokens.device), tokens.to(torch.float64))
    return pooled.to(tokens.dtype), kept.cpu()

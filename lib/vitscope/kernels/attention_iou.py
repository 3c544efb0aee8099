"""Attention masks and their IoU with object masks (Teaching Matters 4.4, Fig. 5).

The paper follows DINO (Caron et al. 2021, ``visualize_attention.py``): keep the tokens that hold 60 % of a map's
mass, the most attended first, and score that mask against the ground-truth object mask by Intersection over
Union. DINO sorts each map ascending, divides by its sum, takes the cumulative sum and keeps the tokens where it
exceeds ``1 - mass``; that is the same set as :func:`mass_mask`'s "fewest most-attended tokens whose cumulative mass
reaches ``mass``". DINO's ``torch.sort`` leaves the order of equal values unspecified; here ties go to the lower
token index (a stable sort), so a mask never depends on the device.

Object masks reach the token grid through :func:`object_fraction` (the share of each patch's pixels that are
object). Two readings of it are offered: :func:`mask_to_grid` (a token is object when at least
:data:`OBJECT_FRACTION` of its pixels are; the default, an IoU of token sets) and passing the fraction itself to
:func:`iou`, which gives the pixel-level IoU of the token mask upsampled to pixels by nearest neighbour against the
pixel mask (as DINO's evaluation upsamples its token masks). We could not find which of the two the Teaching
Matters code uses; both are reported where they differ.

Best head (the paper plots "the single best head per layer"): :func:`best_head_per_image` is the optimistic
per-image maximum over heads (each image picks its own head after seeing its own score);
:func:`held_out_best_head` picks one head per layer on one half of the images and scores it on the other half.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_int

#: DINO's and the paper's attention-mass threshold (Sec. 4.4: "keeping 60 % of the total attention mass").
MASS = 0.6
#: A token counts as object when at least this share of its pixels is object (:func:`mask_to_grid`).
OBJECT_FRACTION = 0.5
#: Cumulative sums are compared with this slack, so a float64 rounding error never adds a token.
_EPS = 1e-12


def _check_grid_maps(maps: Tensor, name: str) -> None:
    if not isinstance(maps, Tensor) or maps.ndim < 2:
        raise ValueError(f"{name} must be a tensor [..., G, G] (one map per leading index); got "
                         f"{type(maps).__name__ if not isinstance(maps, Tensor) else tuple(maps.shape)}")


def mass_mask(maps: Tensor, mass: float = MASS) -> Tensor:
    """Boolean ``[..., Gh, Gw]``: per map, the fewest most-attended tokens whose share of the map's total reaches
    ``mass`` (DINO's procedure; ties: the lower flat index first).

    maps: [..., Gh, Gw], non-negative (attention, or |attribution|), any scale: each map is divided by its sum.
    A map summing to 0 gives an empty mask. mass: in (0, 1].
    """
    _check_grid_maps(maps, "maps")
    if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not 0 < mass <= 1:
        raise ValueError(f"mass must be a number in (0, 1] (the share of attention the mask keeps); got {mass!r}")
    flat = maps.detach().to(torch.float64).flatten(-2)
    if bool((flat < 0).any()) or not bool(torch.isfinite(flat).all()):
        raise ValueError("maps must be finite and non-negative (attention probabilities or |attributions|); "
                         "take .abs() of signed attributions first")
    total = flat.sum(-1, keepdim=True)
    values, order = torch.sort(flat, dim=-1, descending=True, stable=True)
    cum = (values / torch.where(total == 0, torch.ones_like(total), total)).cumsum(-1)
    before = torch.cat([torch.zeros_like(cum[..., :1]), cum[..., :-1]], -1)   # mass of the tokens ranked above
    keep = (before < mass - _EPS) & (total > 0)
    out = torch.zeros_like(keep).scatter(-1, order, keep)
    return out.reshape(maps.shape)


def object_fraction(mask: Tensor, grid: int | tuple[int, int]) -> Tensor:
    """Share of each patch's pixels that are object: float64 ``[..., Gh, Gw]`` in [0, 1].

    mask: [..., H, W], non-zero = object (a union of instance masks; bool or integer). ``grid``: the token grid,
    ``G`` or ``(Gh, Gw)``. When ``H`` and ``W`` are multiples of the grid (a model's input crop always is) each
    patch is a ``H/Gh x W/Gw`` block and the share is exact; otherwise torch's adaptive average pooling bins.
    """
    if not isinstance(mask, Tensor) or mask.ndim < 2:
        raise ValueError(f"mask must be a tensor [..., H, W]; got {type(mask).__name__}")
    gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
    check_int(gh, "grid rows")
    check_int(gw, "grid columns")
    H, W = mask.shape[-2:]
    if H < gh or W < gw:
        raise ValueError(f"mask is {H}x{W} pixels, smaller than the {gh}x{gw} token grid; pass the mask at the "
                         "model's input resolution")
    m = (mask != 0).to(torch.float64).reshape(-1, 1, H, W)
    frac = torch.nn.functional.adaptive_avg_pool2d(m, (gh, gw))
    return frac.reshape(*mask.shape[:-2], gh, gw)


def mask_to_grid(mask: Tensor, grid: int | tuple[int, int], threshold: float = OBJECT_FRACTION) -> Tensor:
    """Boolean ``[..., Gh, Gw]``: a token is object when at least ``threshold`` of its pixels are
    (:func:`object_fraction`). mask: [..., H, W], non-zero = object."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] (share of a patch's pixels); got {threshold!r}")
    return object_fraction(mask, grid) >= threshold - _EPS


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """Intersection over union of each map: float64 ``[...]``.

    pred: bool [..., Gh, Gw] (e.g. :func:`mass_mask`). target: bool [..., Gh, Gw] (:func:`mask_to_grid`): the IoU of
    token sets; or float [..., Gh, Gw] in [0, 1] (:func:`object_fraction`): ``sum(p f) / (sum p + sum f - sum(p f))``,
    the pixel IoU of the token mask upsampled by nearest neighbour against the pixel mask (in units of one patch).
    The two broadcast against each other. Both empty: NaN (no object and nothing predicted: undefined).
    """
    _check_grid_maps(pred, "pred")
    _check_grid_maps(target, "target")
    if pred.dtype != torch.bool:
        raise ValueError(f"pred must be a boolean mask (e.g. mass_mask(maps)); got {pred.dtype}")
    p = pred.to(torch.float64)
    t = target.to(torch.float64)
    if target.dtype != torch.bool and (bool((t < 0).any()) or bool((t > 1).any())):
        raise ValueError("a float target must hold per-token object fractions in [0, 1] (object_fraction)")
    inter = (p * t).sum((-2, -1))
    union = p.sum((-2, -1)) + t.sum((-2, -1)) - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.full_like(union, float("nan")))


def patch_sums(attributions: Tensor, grid: int | tuple[int, int]) -> Tensor:
    """Attribution mass per token: the sum of ``|attribution|`` over channels and each patch's pixels, float64
    ``[B, Gh, Gw]``. attributions: [B, C, H, W] with H, W multiples of the grid (a model's input crop)."""
    if not isinstance(attributions, Tensor) or attributions.ndim != 4:
        raise ValueError(f"attributions must be a tensor [B, C, H, W] (captum's output for an image batch); got "
                         f"{tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions)}")
    gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
    B, _, H, W = attributions.shape
    if H % gh or W % gw:
        raise ValueError(f"attributions are {H}x{W} pixels, not a multiple of the {gh}x{gw} token grid")
    a = attributions.detach().to(torch.float64).abs().sum(1)                         # [B, H, W]
    return a.reshape(B, gh, H // gh, gw, W // gw).sum((2, 4))


def _check_scores(scores: Tensor) -> Tensor:
    if not isinstance(scores, Tensor) or scores.ndim != 3:
        raise ValueError(f"iou must be a tensor [N images, L layers, H heads]; got "
                         f"{tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("iou holds NaN or Inf (an image without object and an empty mask); drop such images first")
    return scores.to(torch.float64)


def best_head_per_image(scores: Tensor) -> Tensor:
    """The original's rule: per image and layer, the best head's IoU, float64 ``[N, L]``.

    Optimistic: each image chooses its head after seeing its own score, so even heads that attend at random gain
    from the maximum over H draws. scores: [N, L, H] (:func:`iou` per image, layer and head)."""
    return _check_scores(scores).amax(-1)


def split_halves(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random split of ``n`` images: ``(choose, score)`` index tensors of ``n // 2`` and ``n - n // 2``."""
    check_int(n, "number of images", 2)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:n // 2].sort().values, perm[n // 2:].sort().values


def held_out_best_head(scores: Tensor, split_seed: int) -> dict[str, Tensor]:
    """One head per layer, chosen on one half of the images and scored on the other (:func:`split_halves`).

    scores: [N, L, H], N >= 2. Returns ``head`` int64 [L] (the head of highest mean IoU on the choosing half; ties:
    the lower index), ``iou`` float64 [n_score, L] (that head's IoU on each scoring image), ``choose`` and ``score``
    (the image indices of the two halves).
    """
    s = _check_scores(scores)
    choose, score = split_halves(s.shape[0], split_seed)
    head = s[choose].mean(0).argmax(-1)              # argmax returns the first maximum: ties go to the lower head
    picked = s[score].gather(-1, head.view(1, -1, 1).expand(len(score), -1, 1))[..., 0]
    return {"head": head, "iou": picked, "choose": choose, "score": score}


__all__ = ["MASS", "OBJECT_FRACTION", "best_head_per_image", "held_out_best_head", "iou", "mask_to_grid",
           "mass_mask", "object_fraction", "patch_sums", "split_halves"]

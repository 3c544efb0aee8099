"""Keypoint correspondence by nearest neighbours of dense features, scored by PCK (Teaching Matters §6.2, Fig. 10
right; the protocol of Amir et al. as the Teaching Matters code runs it on SPair-71k).

Coordinates are pixel indices ``(x, y)`` (x = column, y = row), as SPair-71k annotates them. Each image is
*letterboxed* to a square of side ``size`` (the model's input): scaled so that its long side is ``size``, the short
side rounded to the nearest pixel, and centred with ``(size - new) // 2`` pixels of padding before it
(:func:`letterbox_geometry`). A point moves as ``x * scale + pad_left`` (the Teaching Matters code's mapping).

Matching (:func:`nearest_neighbour_keypoints`): the spatial tokens of one block are L2-normalised and upsampled
bilinearly to ``size x size``; each source keypoint takes the upsampled source vector at its (rounded) pixel and the
target pixel of highest similarity is the prediction. Two similarities:

* ``"cosine"`` (default, the protocol as stated): the cosine between the upsampled vectors (upsampled target vectors
  are re-normalised, since a bilinear mix of unit vectors is shorter than 1);
* ``"teaching-matters"``: the Teaching Matters code's dot product of the upsampled unit tokens, without
  re-normalising, which favours target pixels at token centres (where the upsampled vector still has length 1).

PCK@α (:func:`keypoint_hits`): a prediction is correct when its distance to the target keypoint is at most
``α · max(h, w)`` of the target's bounding box (in the same pixel frame). The Teaching Matters code uses ``<``;
on real data (integer predictions, scaled float targets) the two differ on a set of measure zero.
Aggregation (:func:`category_mean`): per category, correct keypoints over all keypoints of its pairs; then the mean
over categories.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import check_choice, check_int

SIMILARITIES = ("cosine", "teaching-matters")
#: The α of the paper's figure and Table 1, and the two finer ones it reports with them.
ALPHAS = (0.1, 0.05, 0.01)


@dataclass(frozen=True)
class Letterbox:
    """How an ``h x w`` image sits in a ``size x size`` letterbox: scale, resized extent and padding (pixels)."""

    scale: float
    new_h: int
    new_w: int
    pad_top: int
    pad_left: int
    size: int


def letterbox_geometry(h: int, w: int, size: int) -> Letterbox:
    """The letterbox of an ``h x w`` image in a ``size x size`` square: the long side becomes ``size``, the short side
    ``round(size * short / long)``, centred (``(size - new) // 2`` pixels before it)."""
    h, w, size = check_int(h, "h"), check_int(w, "w"), check_int(size, "size")
    scale = size / max(h, w)
    new_h = size if h >= w else max(1, round(size * h / w))
    new_w = size if w >= h else max(1, round(size * w / h))
    return Letterbox(scale, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2, size)


def letterbox_points(points: Tensor, box: Letterbox) -> Tensor:
    """[K, 2] ``(x, y)`` pixel coordinates of the original image -> the letterboxed image's (float64)."""
    p = _check_points(points, "points")
    return torch.stack([p[:, 0] * box.scale + box.pad_left, p[:, 1] * box.scale + box.pad_top], dim=1)


def letterbox_bbox(bbox, box: Letterbox) -> Tensor:
    """A box ``[x1, y1, x2, y2]`` of the original image -> the letterboxed image's ([4] float64)."""
    b = torch.as_tensor(bbox, dtype=torch.float64).reshape(-1)
    if b.shape != (4,):
        raise ValueError(f"bbox must be [x1, y1, x2, y2]; got shape {tuple(b.shape)}")
    return letterbox_points(b.reshape(2, 2), box).reshape(4)


def _check_points(points, name: str) -> Tensor:
    p = torch.as_tensor(points, dtype=torch.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{name} must be [K, 2] (x, y) pixel coordinates; got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()):
        raise ValueError(f"{name} holds NaN or Inf coordinates")
    return p


def _check_map(x, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 3 or not x.is_floating_point():
        got = (tuple(x.shape), x.dtype) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor [C, h, w] (one block's spatial tokens on their grid); "
                         f"got {got}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} (shape {tuple(x.shape)}) holds NaN or Inf; check the model's outputs")
    return x


def upsampled_unit_tokens(feats: Tensor, size: int) -> Tensor:
    """[C, h, w] spatial tokens -> [C, size, size]: each token L2-normalised, then bilinear upsampling
    (``align_corners=False``, as ``F.interpolate`` by default and the Teaching Matters code)."""
    x = F.normalize(_check_map(feats, "feats"), dim=0)
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def nearest_neighbour_keypoints(src_feats: Tensor, trg_feats: Tensor, src_kps, *, size: int,
                                similarity: str = "cosine") -> Tensor:
    """For each source keypoint, the target pixel whose upsampled feature is most similar.

    Args:
        src_feats, trg_feats: [C, h, w] one block's spatial tokens of the letterboxed source and target images.
        src_kps: [K, 2] ``(x, y)`` source keypoints in the letterboxed image's pixels (rounded to the nearest pixel,
            clamped into the image).
        size: side of the letterboxed images (the model's input size).
        similarity: ``"cosine"`` or ``"teaching-matters"`` (see the module docstring).

    Returns [K, 2] int64 ``(x, y)`` predicted target pixels; ties go to the first pixel in row-major order.
    """
    check_choice(similarity, "similarity", SIMILARITIES)
    size = check_int(size, "size")
    kps = _check_points(src_kps, "src_kps")
    _check_map(src_feats, "src_feats"), _check_map(trg_feats, "trg_feats")
    if src_feats.shape[0] != trg_feats.shape[0]:
        raise ValueError(f"src_feats {tuple(src_feats.shape)} and trg_feats {tuple(trg_feats.shape)} must have the "
                         "same number of channels C (features of the same block of the same model)")
    trg = upsampled_unit_tokens(trg_feats, size).flatten(1)                   # [C, S*S]
    if similarity == "cosine":
        trg = F.normalize(trg, dim=0)
    # The upsampled source is needed at K pixels only: grid_sample (half-pixel centres, border clamp) reads exactly
    # the values F.interpolate would put there, without upsampling the whole map.
    pix = kps.round().clamp(0, size - 1).to(device=trg.device, dtype=trg.dtype)          # [K, 2] (x, y)
    grid = ((pix + 0.5) / size * 2 - 1)[None, None]                                       # [1, 1, K, 2]
    unit = F.normalize(src_feats, dim=0)[None]
    query = F.grid_sample(unit, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
    if similarity == "cosine":
        query = F.normalize(query, dim=1)
    best = (query @ trg).argmax(dim=1)                                        # [K] row-major pixel index
    return torch.stack([best % size, best // size], dim=1).cpu()


def keypoint_hits(pred, gt, bbox, alphas=ALPHAS) -> Tensor:
    """[A, K] bool: whether each prediction lies within ``α · max(h, w)`` of the target bounding box ``bbox``
    (``[x1, y1, x2, y2]``, same pixel frame as ``pred`` and ``gt``) of its target keypoint, for each α."""
    p, g = _check_points(pred, "pred"), _check_points(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {tuple(p.shape)} and gt {tuple(g.shape)} must both be [K, 2], one row per keypoint")
    b = torch.as_tensor(bbox, dtype=torch.float64).reshape(-1)
    if b.shape != (4,) or not (b[2] >= b[0] and b[3] >= b[1]):
        raise ValueError(f"bbox must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1; got {b.tolist()}")
    a = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
    if a.numel() == 0 or not bool((a > 0).all()):
        raise ValueError(f"alphas must be numbers > 0 (fractions of the bounding box, e.g. {ALPHAS}); got {a.tolist()}")
    threshold = a * torch.maximum(b[2] - b[0], b[3] - b[1])                   # [A]
    dist = torch.linalg.vector_norm(p - g, dim=1)                             # [K]
    return dist[None, :] <= threshold[:, None]


def pck(pred, gt, bbox, alphas=ALPHAS) -> Tensor:
    """[A] float64: the fraction of keypoints correct at each α (:func:`keypoint_hits`) for one image pair."""
    return keypoint_hits(pred, gt, bbox, alphas).double().mean(dim=1)


def _check_pairs(correct, total, category) -> tuple[Tensor, Tensor, list]:
    c, t = (torch.tensor(np.asarray(v, dtype=np.float64)) for v in (correct, total))   # copies: never aliases
    cats = list(category)
    if c.ndim != 1 or c.shape != t.shape or len(cats) != c.shape[0]:
        raise ValueError(f"correct {tuple(c.shape)}, total {tuple(t.shape)} and category ({len(cats)}) must be "
                         "vectors of the same length, one entry per image pair")
    if not bool((t > 0).all()) or not bool(((c >= 0) & (c <= t)).all()):
        raise ValueError("every pair needs total > 0 keypoints and 0 <= correct <= total")
    return c, t, cats


def category_mean(correct, total, category) -> float:
    """PCK over a set of pairs as SPair is scored: per category, correct keypoints over keypoints (pooled over its
    pairs), then the mean over categories. ``correct``, ``total``: [P] counts per pair; ``category``: P labels."""
    return float(pair_values(correct, total, category).mean())


def pair_values(correct, total, category) -> Tensor:
    """[P] float64 per-pair values whose plain mean is :func:`category_mean`: ``P / (C · T_c) · correct_i``, with P
    pairs, C categories and ``T_c`` the keypoints of all pairs of pair i's category.

    A bootstrap over pairs that averages these holds each category's keypoint total at its full-sample value (a
    linearised ratio): the paired contrasts of the claims then need nothing but means."""
    c, t, cats = _check_pairs(correct, total, category)
    names = list(dict.fromkeys(cats))
    totals = {k: float(sum(t[i] for i in range(len(cats)) if cats[i] == k)) for k in names}
    scale = torch.tensor([len(cats) / (len(names) * totals[k]) for k in cats], dtype=torch.float64)
    return c * scale

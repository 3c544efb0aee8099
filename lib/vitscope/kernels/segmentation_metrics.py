"""Video object segmentation scores as the DAVIS benchmark defines them (Perazzi et al. 2016; Pont-Tuset et al.
2017; the ``davis2017-evaluation`` code, ``davis2017/metrics.py`` and ``evaluation.py``), written from those
definitions.

* **J**, region similarity: the Jaccard index (IoU) of the predicted and annotated masks of one object; 1 when both
  are empty.
* **F**, boundary accuracy: the F-measure of boundary precision and recall. Boundaries are one pixel wide
  (:func:`seg2bmap`); a boundary pixel counts as matched when the other mask's boundary lies within a disk of
  ``ceil(0.008 * image diagonal)`` pixels (:func:`boundary_tolerance`). Empty boundaries: both empty gives F = 1,
  one empty gives F = 0.
* A video's score per object is the mean over its frames **without the first and the last** (the first is given in
  the semi-supervised task); J-mean and F-mean average these over all objects of all videos; J&F is their mean.

Objects are the ids ``1 .. max`` of the first annotation, as the official evaluation reads them. The official code
also passes a void mask (pixels labelled 255) but builds it from boolean masks, so it never excludes a pixel; void
pixels are therefore not handled here either.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

#: The boundary tolerance as a fraction of the image diagonal (``bound_th`` of the official code).
BOUND_TH = 0.008


def _as_bool(mask, name: str) -> Tensor:
    mask = torch.as_tensor(np.array(mask) if not isinstance(mask, Tensor) else mask)   # a copy: PIL's is read-only
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask [H, W]; got shape {tuple(mask.shape)}")
    return mask != 0


def _pair(annotation, prediction) -> tuple[Tensor, Tensor]:
    gt, pred = _as_bool(annotation, "annotation"), _as_bool(prediction, "prediction")
    if gt.shape != pred.shape:
        raise ValueError(f"annotation {tuple(gt.shape)} and prediction {tuple(pred.shape)} must have the same size; "
                         "resize the prediction to the annotation's size (nearest neighbour)")
    return gt, pred


def region_similarity(annotation, prediction) -> float:
    """J: ``|A and P| / |A or P|`` of two binary masks ``[H, W]`` (any nonzero is foreground); 1 if both are empty."""
    gt, pred = _pair(annotation, prediction)
    union = int((gt | pred).sum())
    return 1.0 if union == 0 else int((gt & pred).sum()) / union


def seg2bmap(mask) -> Tensor:
    """bool ``[H, W]``: the one-pixel-wide boundary of a binary mask, offset half a pixel towards the origin.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour; in the last row only
    the right neighbour is compared, in the last column only the lower one, and the bottom-right pixel never is.
    """
    seg = _as_bool(mask, "mask")
    right, down, diag = torch.zeros_like(seg), torch.zeros_like(seg), torch.zeros_like(seg)
    right[:, :-1], down[:-1, :], diag[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    b[-1, :] = seg[-1, :] ^ right[-1, :]
    b[:, -1] = seg[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def boundary_tolerance(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Match radius in pixels: ``bound_th`` itself when >= 1 (pixels), else ``ceil(bound_th * diagonal)``."""
    if not bound_th > 0:
        raise ValueError(f"bound_th must be > 0 (a fraction of the diagonal, or pixels if >= 1); got {bound_th!r}")
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape))


def disk(radius: int) -> Tensor:
    """bool ``[2r+1, 2r+1]``: the pixels with ``dx^2 + dy^2 <= r^2`` (the official code's structuring element)."""
    r = torch.arange(-radius, radius + 1)
    return r[:, None] ** 2 + r[None] ** 2 <= radius ** 2


def _dilate(mask: Tensor, radius: int) -> Tensor:
    """``mask`` dilated by :func:`disk` (``radius``): the pixels within Euclidean distance ``radius`` of a True pixel.
    Computed by a distance transform, linear in the pixels whatever the radius (a 480p frame has radius 8)."""
    from scipy.ndimage import distance_transform_edt

    return torch.from_numpy(distance_transform_edt(~mask.numpy()) <= radius)


def boundary_f_measure(annotation, prediction, bound_th: float = BOUND_TH) -> float:
    """F: the F-measure of boundary precision (predicted boundary within the tolerance of the annotated one) and
    recall (annotated boundary within the tolerance of the predicted one) for two binary masks ``[H, W]``."""
    gt, pred = _pair(annotation, prediction)
    radius = boundary_tolerance(tuple(gt.shape), bound_th)
    gt_b, pred_b = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    if n_gt == 0 or n_pred == 0:
        precision, recall = (1.0, 1.0) if n_gt == n_pred else (float(n_pred == 0), float(n_gt == 0))
    else:
        precision = int((pred_b & _dilate(gt_b, radius)).sum()) / n_pred
        recall = int((gt_b & _dilate(pred_b, radius)).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def video_scores(annotations, predictions, object_ids, bound_th: float = BOUND_TH) -> tuple[Tensor, Tensor]:
    """J and F, float64 ``[K, T]``, of every object (``object_ids``, K of them) in every frame.

    Args:
        annotations, predictions: integer label masks ``[T, H, W]`` (or sequences of ``[H, W]``), frame by frame.
    Every frame is scored; :func:`summarise` drops the first and last as the benchmark does.
    """
    if len(annotations) != len(predictions):
        raise ValueError(f"{len(annotations)} annotated frames but {len(predictions)} predicted ones")
    ids = list(object_ids)
    J = torch.zeros(len(ids), len(annotations), dtype=torch.float64)
    Fm = torch.zeros_like(J)
    for t, (gt, pred) in enumerate(zip(annotations, predictions)):
        gt, pred = torch.as_tensor(np.asarray(gt)), torch.as_tensor(np.asarray(pred))
        for k, obj in enumerate(ids):
            J[k, t] = region_similarity(gt == obj, pred == obj)
            Fm[k, t] = boundary_f_measure(gt == obj, pred == obj, bound_th)
    return J, Fm


def object_means(per_frame: Tensor) -> Tensor:
    """float64 ``[K]``: each object's mean over the frames ``1 .. T-2`` of ``per_frame [K, T]`` (the benchmark
    skips the first frame, which is given, and the last). Needs T >= 3."""
    if per_frame.ndim != 2 or per_frame.shape[1] < 3:
        raise ValueError(f"per_frame must be [K, T] with T >= 3 frames (the first and last are skipped); got "
                         f"{tuple(per_frame.shape)}")
    return per_frame[:, 1:-1].double().mean(dim=1)


def summarise(J_objects: Tensor, F_objects: Tensor) -> dict[str, float]:
    """``{"j", "f", "jf"}`` from per-object means ``[K]`` of all videos: J-mean, F-mean and their mean."""
    j, f = float(J_objects.double().mean()), float(F_objects.double().mean())
    return {"j": j, "f": f, "jf": (j + f) / 2}


__all__ = ["BOUND_TH", "boundary_f_measure", "boundary_tolerance", "disk", "object_means", "region_similarity",
           "seg2bmap", "summarise", "video_scores"]

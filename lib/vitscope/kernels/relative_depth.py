"""CKA as a function of the distance between relative depths (Objectives Matter Fig. 11, App. E).

Two networks of different depth (a 12-block ViT and a 16-block ResNet-50) are compared layer by layer by placing
each layer at its relative depth, ``index / number of layers`` (block 1 of 12 at 1/12, the last block of any network
at 1), and grouping the layer pairs by ``|depth_a - depth_b|``. OM plots CKA against that distance: a pair of
networks whose representations follow each other through depth has high CKA at small distances.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_finite, check_int


def relative_depths(n_layers: int) -> Tensor:
    """Relative depth of layers ``1..n_layers``: ``[i / n_layers]`` float64 [n_layers], the last layer at 1."""
    n = check_int(n_layers, "n_layers")
    return torch.arange(1, n + 1, dtype=torch.float64) / n


def _vector(x, name: str) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor of relative depths in [0, 1]; got shape {tuple(x.shape)}")
    check_finite(x, name)
    if len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"{name} holds values outside [0, 1] (min {float(x.min()):.3g}, max {float(x.max()):.3g}); "
                         "pass relative depths (relative_depths(n_layers)), not block indices")
    return x


def bin_edges(bins) -> Tensor:
    """Edges of distance bins on [0, 1]: ``bins`` an int (that many equal bins) or increasing edges from 0 to 1."""
    if isinstance(bins, int) and not isinstance(bins, bool):
        n = check_int(bins, "bins")
        return torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
    edges = torch.as_tensor(bins, dtype=torch.float64)
    if edges.ndim != 1 or len(edges) < 2 or not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError(f"bins must be an int >= 1 or increasing edges (at least two); got {bins!r}")
    if float(edges[0]) > 0 or float(edges[-1]) < 1:
        raise ValueError(f"bin edges {edges.tolist()} must cover [0, 1] (start at or below 0, end at or above 1), "
                         "or some layer pairs would fall outside every bin")
    return edges


def cka_by_depth(cka: Tensor, depth_a, depth_b, bins=5) -> dict[str, Tensor]:
    """Mean CKA of the layer pairs in each bin of relative-depth distance.

    cka: [La, Lb] (layer i of network a vs layer j of network b); depth_a: [La] and depth_b: [Lb] relative depths
    in [0, 1] (:func:`relative_depths`); bins: number of equal bins on [0, 1] or their edges. Bins are half-open
    ``[lo, hi)`` except the last, which includes 1. Returns float64 tensors over bins: ``low``, ``high`` (edges),
    ``mean`` (mean CKA of the pairs in the bin, NaN where the bin is empty) and ``count`` (pairs in the bin).
    """
    cka = torch.as_tensor(cka, dtype=torch.float64)
    da, db = _vector(depth_a, "depth_a"), _vector(depth_b, "depth_b")
    if cka.ndim != 2 or cka.shape != (len(da), len(db)):
        raise ValueError(f"cka must be [La, Lb] = [{len(da)}, {len(db)}] (one row per depth_a, one column per "
                         f"depth_b); got {tuple(cka.shape)}")
    check_finite(cka, "cka")
    edges = bin_edges(bins)
    which = distance_bins(da, db, edges).reshape(-1)
    values = cka.reshape(-1)
    n_bins = len(edges) - 1
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, torch.ones_like(values))
    total = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, values)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
    return {"low": edges[:-1], "high": edges[1:], "mean": mean, "count": count}


def distance_bins(depth_a, depth_b, bins=5) -> Tensor:
    """[La, Lb] long: the bin of :func:`cka_by_depth` each layer pair's relative-depth distance falls in."""
    da, db = _vector(depth_a, "depth_a"), _vector(depth_b, "depth_b")
    edges = bin_edges(bins)
    distance = (da[:, None] - db[None, :]).abs()
    # bucketize with right=True puts d in bin b when edges[b] <= d < edges[b+1]; the last bin also takes d == 1.
    return (torch.bucketize(distance, edges, right=True) - 1).clamp(min=0, max=len(edges) - 2)


def distance_mask(depth_a, depth_b, low: float, high: float = 1.0) -> Tensor:
    """[La, Lb] bool: the layer pairs whose relative-depth distance lies in ``[low, high]``."""
    da, db = _vector(depth_a, "depth_a"), _vector(depth_b, "depth_b")
    if not 0 <= low <= high <= 1:
        raise ValueError(f"need 0 <= low <= high <= 1; got low={low!r}, high={high!r}")
    distance = (da[:, None] - db[None, :]).abs()
    return (distance >= low - 1e-12) & (distance <= high + 1e-12)

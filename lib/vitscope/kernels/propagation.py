"""Label propagation through a video by feature affinity: DINO's DAVIS protocol (Caron et al. 2021,
``eval_video_segmentation.py``), used by Teaching Matters §6.2 (Fig. 10, left).

The first frame's labels are given. Every later frame takes its labels from *context* frames: the first frame and
the ``n_last_frames`` frames before it, with the labels predicted for them (soft, at token resolution). For a target
token, the affinity to a context token is ``cos(target, source) / temperature`` on L2-normalised features; sources
outside a square neighbourhood of ``radius`` tokens around the target's position are excluded; only the ``topk``
largest affinities over all context frames are kept, and their softmax weights the sources' label vectors.
Ties at the k-th largest value are all kept (DINO thresholds at the k-th value rather than taking exactly k).

Labels are one channel per label id (0 = background, 1..K objects): ``[K+1, h, w]`` soft masks. The final mask of a
frame: bilinear upsampling by the patch size, each channel min-max rescaled (DINO's ``norm_mask``), argmax, then a
nearest-neighbour resize to the frame's size.

Shapes: ``h x w`` token grid, ``C`` channels, ``S`` context frames, ``B`` independent feature sets propagated side by
side (e.g. the blocks of a model), ``K1 = K + 1`` label channels.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import check_finite, check_int, check_positive

#: DINO's defaults (``eval_video_segmentation.py``): temperature (hard-coded there), top-k, neighbourhood radius in
#: tokens (``size_mask_neighborhood``) and the number of preceding frames used as context.
TEMPERATURE = 0.1
TOPK = 5
RADIUS = 12
N_LAST_FRAMES = 7


def neighbourhood(grid: tuple[int, int], radius: int | None, device=None) -> Tensor:
    """bool ``[h*w, h*w]`` (target, source): True where the source token lies within ``radius`` tokens of the target
    along both axes (a ``(2 radius + 1)^2`` square, clipped at the grid's edges). ``None``: every source."""
    h, w = (check_int(g, "grid side") for g in grid)
    if radius is None:
        return torch.ones(h * w, h * w, dtype=torch.bool, device=device)
    radius = check_int(radius, "radius", minimum=0)
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return ((rows[:, None] - rows[None]).abs() <= radius) & ((cols[:, None] - cols[None]).abs() <= radius)


def propagation_weights(target: Tensor, sources: Tensor, allowed: Tensor | None, *, temperature: float = TEMPERATURE,
                        topk: int = TOPK) -> Tensor:
    """Weights ``[N, S*M]`` with which each of ``N`` target tokens takes labels from ``S*M`` source tokens.

    Args:
        target: ``[N, C]`` target-frame features; sources: ``[S, M, C]`` context-frame features.
        allowed: bool ``[N, M]`` sources each target may use (the same in every context frame); ``None``: all.
    Each row: softmax of ``cos / temperature`` over the sources whose affinity is at least the row's ``topk``-th
    largest among the allowed ones, zero elsewhere; rows sum to 1.
    """
    temperature, topk = check_positive(temperature, "temperature"), check_int(topk, "topk")
    if target.ndim != 2 or sources.ndim != 3 or sources.shape[-1] != target.shape[-1]:
        raise ValueError(f"target must be [N, C] and sources [S, M, C] with the same C; got {tuple(target.shape)} "
                         f"and {tuple(sources.shape)}")
    S, M, _ = sources.shape
    logits = F.normalize(target.float(), dim=-1) @ F.normalize(sources.float(), dim=-1).reshape(S * M, -1).T
    logits = logits / temperature                                              # [N, S*M]
    if allowed is not None:
        if allowed.shape != (target.shape[0], M):
            raise ValueError(f"allowed must be [N, M] = {(target.shape[0], M)}; got {tuple(allowed.shape)}")
        logits = logits.masked_fill(~allowed.repeat(1, S), float("-inf"))
    k = min(topk, S * M)
    kth = logits.topk(k, dim=1).values[:, -1:]                                  # [N, 1]
    # A target with fewer than k allowed sources has kth = -inf; keep only its finite (allowed) ones.
    keep = (logits >= kth) & torch.isfinite(logits)
    if not bool(keep.any(dim=1).all()):
        raise ValueError("a target token has no allowed source; use radius >= 0 (its own position is always allowed)")
    return torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=1)


def propagation_step(target: Tensor, sources: Tensor, source_labels: Tensor, *, temperature: float = TEMPERATURE,
                     topk: int = TOPK, radius: int | None = RADIUS) -> Tensor:
    """Soft labels ``[B, K1, h, w]`` of one target frame from its context frames.

    Args:
        target: ``[B, h, w, C]`` features of the target frame (one feature set per ``B``).
        sources: ``[B, S, h, w, C]`` features of the context frames.
        source_labels: ``[B, S, K1, h, w]`` their soft labels.
    """
    if target.ndim != 4 or sources.ndim != 5 or source_labels.ndim != 5:
        raise ValueError(f"target [B, h, w, C], sources [B, S, h, w, C], source_labels [B, S, K1, h, w] expected; "
                         f"got {tuple(target.shape)}, {tuple(sources.shape)}, {tuple(source_labels.shape)}")
    B, h, w, C = target.shape
    if sources.shape[0] != B or sources.shape[2:] != (h, w, C):
        raise ValueError(f"sources {tuple(sources.shape)} do not match target {tuple(target.shape)}")
    S = sources.shape[1]
    if source_labels.shape[:2] != (B, S) or source_labels.shape[3:] != (h, w):
        raise ValueError(f"source_labels {tuple(source_labels.shape)} must be [B={B}, S={S}, K1, {h}, {w}]")
    check_finite(target, "target features")
    check_finite(sources, "source features")   # the first frame is only ever a source: checked nowhere else
    allowed = neighbourhood((h, w), radius, target.device)
    K1 = source_labels.shape[2]
    out = []
    for b in range(B):          # one feature set at a time: the [N, S*N] affinity of a ViT-B frame is large
        weights = propagation_weights(target[b].reshape(h * w, C), sources[b].reshape(S, h * w, C), allowed,
                                      temperature=temperature, topk=topk)
        labels = source_labels[b].float().permute(0, 2, 3, 1).reshape(S * h * w, K1)
        out.append((weights @ labels).T.reshape(K1, h, w))
    return torch.stack(out)


def one_hot_labels(mask: Tensor, num_labels: int) -> Tensor:
    """float ``[num_labels, h, w]`` one-hot of an integer label mask ``[h, w]`` (labels >= num_labels: no channel)."""
    if mask.ndim != 2 or mask.is_floating_point():
        raise ValueError(f"mask must be an integer tensor [h, w]; got {tuple(mask.shape)} {mask.dtype}")
    num_labels = check_int(num_labels, "num_labels")
    return torch.stack([(mask == k) for k in range(num_labels)]).float()


def propagate_video(features: Iterable[Tensor], first_labels: Tensor, *, n_last_frames: int = N_LAST_FRAMES,
                    temperature: float = TEMPERATURE, topk: int = TOPK,
                    radius: int | None = RADIUS) -> Iterator[Tensor]:
    """Soft labels of every frame of a video, frame by frame (only the context is held in memory).

    Args:
        features: per frame, ``[B, h, w, C]`` (the first item is the first frame's).
        first_labels: ``[K1, h, w]`` the first frame's labels at token resolution (:func:`one_hot_labels`).
    Yields ``[B, K1, h, w]`` per frame: the first frame's labels (repeated over ``B``), then each later frame's
    propagation from the first frame and the ``n_last_frames`` frames before it (their predicted soft labels).
    """
    n_last_frames = check_int(n_last_frames, "n_last_frames", minimum=0)
    frames = iter(features)
    first = next(frames, None)
    if first is None:
        raise ValueError("features is empty: a video needs at least its first frame")
    if first.ndim != 4 or first_labels.ndim != 3 or first_labels.shape[1:] != first.shape[1:3]:
        raise ValueError(f"first frame features [B, h, w, C] and first_labels [K1, h, w] on the same grid expected; "
                         f"got {tuple(first.shape)} and {tuple(first_labels.shape)}")
    first_soft = first_labels.float().to(first.device).expand(first.shape[0], *first_labels.shape)
    yield first_soft
    recent: list[tuple[Tensor, Tensor]] = []
    for feats in frames:
        ctx_feats = torch.stack([first] + [f for f, _ in recent], dim=1)
        ctx_labels = torch.stack([first_soft] + [lab for _, lab in recent], dim=1)
        soft = propagation_step(feats, ctx_feats, ctx_labels, temperature=temperature, topk=topk, radius=radius)
        yield soft
        if n_last_frames:
            recent = (recent + [(feats, soft)])[-n_last_frames:]


def labels_to_mask(soft: Tensor, patch: int, size: tuple[int, int]) -> Tensor:
    """int64 ``[H, W]`` label mask of a frame from its soft labels ``[K1, h, w]``: bilinear upsampling by ``patch``,
    each channel with any mass min-max rescaled to [0, 1] (DINO's ``norm_mask``), argmax over channels, then a
    nearest-neighbour resize to ``size`` (the frame's own)."""
    if soft.ndim != 3:
        raise ValueError(f"soft labels must be [K1, h, w]; got {tuple(soft.shape)}")
    patch = check_int(patch, "patch")
    up = F.interpolate(soft[None].float(), scale_factor=patch, mode="bilinear", align_corners=False)[0]
    flat = up.reshape(up.shape[0], -1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    rescale = (high > 0).squeeze(1)
    flat = torch.where(rescale[:, None], (flat - low) / (high - low).clamp_min(1e-12), flat)
    labels = flat.argmax(dim=0).reshape(up.shape[1:])
    if tuple(labels.shape) == tuple(size):
        return labels
    return F.interpolate(labels[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0].long()


__all__ = ["N_LAST_FRAMES", "RADIUS", "TEMPERATURE", "TOPK", "labels_to_mask", "neighbourhood", "one_hot_labels",
           "propagate_video", "propagation_step", "propagation_weights"]

"""Attention statistics: CLS attention maps (Teaching Matters 4.1) and average attention distance (4.3).

``attn`` is always post-softmax attention probabilities ``[B, H, T, T]`` (batch, heads, queries, keys; each query
row sums to 1 over keys) with ``T = n_prefix + G*G``: ``n_prefix`` prefix tokens first (CLS, then any register /
distillation tokens; default 1 = CLS only), then the G x G patch grid in row-major order (token r*G + c sits at
row r, column c). Computation happens on ``attn``'s device, in at least float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

VARIANTS = ("teaching-matters", "pixels")
UNITS = ("unit_square", "pixels")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # half / bfloat16 maps are upcast so sums over ~200 keys keep their precision.
    return torch.promote_types(dtype, torch.float32)


def validate_attention(attn: Tensor, n_prefix: int = 1) -> int:
    """Check ``attn`` [B, H, T, T] holds attention probabilities over ``n_prefix`` + G*G tokens; return G.

    Raises ValueError for: a non-tensor or non-4-D input, non-square last two dims, a bad ``n_prefix``, NaN/Inf,
    negative entries or rows that do not sum to 1 (e.g. pre-softmax logits), or a non-square spatial token count.
    Tolerance on row sums: 1e-2 for float16/bfloat16, 1e-3 otherwise.
    """
    if not isinstance(attn, Tensor) or attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        shape = tuple(attn.shape) if isinstance(attn, Tensor) else type(attn).__name__
        raise ValueError(f"attn must be a tensor [B, H, T, T] of attention probabilities; got {shape}")
    T = attn.shape[-1]
    if isinstance(n_prefix, bool) or not isinstance(n_prefix, int) or not 0 <= n_prefix < T:
        raise ValueError(f"n_prefix must be an int in [0, T) with T={T} tokens; got {n_prefix!r}")
    if not bool(torch.isfinite(attn).all()):
        raise ValueError(f"attn (shape {tuple(attn.shape)}) holds NaN or Inf values")
    tol = 1e-2 if attn.dtype in (torch.float16, torch.bfloat16) else 1e-3
    row_err = (attn.sum(-1, dtype=_compute_dtype(attn.dtype)) - 1).abs().max().item()
    min_val = attn.min().item()
    if row_err > tol or min_val < -tol:
        raise ValueError(
            f"attn must hold post-softmax probabilities (entries >= 0, each query row summing to 1 over keys); "
            f"got max |row sum - 1| = {row_err:.3g} and min entry {min_val:.3g} (tolerance {tol}). "
            "Did you pass pre-softmax logits? Take the output of attn.softmax(-1) (timm: attn_drop's output).")
    n_spatial = T - n_prefix
    G = math.isqrt(n_spatial)
    if G * G != n_spatial:
        raise ValueError(f"T={T} tokens with n_prefix={n_prefix} leaves {n_spatial} spatial tokens, which is not a "
                         "square G*G grid; check n_prefix (CLS + register tokens) or the model's patch layout")
    return G


def token_grid_distances(grid_size: int, unit: str = "unit_square", patch_size: float | None = None, *,
                         device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Euclidean distances between the G*G row-major grid tokens: [G*G, G*G].

    unit="unit_square": token (r, c) at (c/(G-1), r/(G-1)), i.e. the grid spans a 1 x 1 square (Teaching Matters
    4.3 and its code, ``x = i % G / (G-1)``); distances lie in [0, sqrt(2)].
    unit="pixels": token (r, c) at (c, r) * patch_size, distances in input pixels (Raghu et al. 2021 /
    probing-vits); ``patch_size`` required. ``device``/``dtype`` of the result (default: torch default device).
    """
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"grid_size must be an int >= 2 (distances on a 1x1 grid are undefined); got {grid_size!r}")
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r} is unknown; valid units are {UNITS}")
    idx = torch.arange(grid_size * grid_size, device=device)
    x, y = (idx % grid_size).to(dtype), (idx // grid_size).to(dtype)
    if unit == "unit_square":
        x, y = x / (grid_size - 1), y / (grid_size - 1)
    else:
        if patch_size is None or not patch_size > 0:
            raise ValueError(f"unit='pixels' needs a positive patch_size (pixels per patch); got {patch_size!r}")
        x, y = x * patch_size, y * patch_size
    return torch.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])


def attention_distance(attn: Tensor, n_prefix: int = 1, variant: str = "teaching-matters",
                       patch_size: float | None = None) -> Tensor:
    """Average attention distance per image and head: [B, H].

    For each spatial query q: sum_k a_qk * d(q, k) over spatial keys k, then the mean over the G*G spatial queries.
    Prefix queries and keys are dropped in both variants.

    variant="teaching-matters" (default; Teaching Matters 4.3 and its AttentionDistance code): each spatial row is
    renormalised to sum to 1 over spatial keys (the mass on prefix keys is discarded); distances on the unit square
    (result in [0, sqrt(2)]). A row whose spatial mass is exactly 0 (all attention on prefix tokens) is left at 0
    rather than becoming NaN, and still counts as a query in the mean (as in the original code).
    variant="pixels" (Raghu et al. 2021 / probing-vits): NO renormalisation, so mass on prefix keys counts as
    distance 0; distances in pixels, ``patch_size`` required (ignored by the other variant).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is unknown; valid variants are {VARIANTS}")
    if variant == "pixels" and patch_size is None:
        raise ValueError("variant='pixels' needs patch_size (pixels per patch, e.g. 16 for ViT-B/16)")
    G = validate_attention(attn, n_prefix)
    if G < 2:
        raise ValueError(f"attention distance needs a grid of at least 2x2 spatial tokens; got {G}x{G}")
    cdtype = _compute_dtype(attn.dtype)
    a = attn[:, :, n_prefix:, n_prefix:].to(cdtype)
    if variant == "teaching-matters":
        mass = a.sum(-1, keepdim=True)
        a = a / torch.where(mass == 0, torch.ones_like(mass), mass)
        unit = "unit_square"
    else:
        unit = "pixels"
    d = token_grid_distances(G, unit, patch_size, device=attn.device, dtype=cdtype)
    return (a * d).sum(-1).mean(-1)


def cls_attention_map(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """CLS query's attention over the patch grid: [B, H, G, G] (Teaching Matters 4.1).

    Row 0 (the CLS query; CLS must be token 0) with the prefix keys dropped, reshaped row-major to the grid. Not
    renormalised: the map sums to 1 minus the CLS query's mass on prefix tokens, so maps stay comparable to the raw
    attention probabilities. Keeps ``attn``'s dtype.
    """
    G = validate_attention(attn, n_prefix)
    if n_prefix < 1:
        raise ValueError("cls_attention_map needs a CLS token (n_prefix >= 1); got n_prefix=0")
    B, H = attn.shape[:2]
    return attn[:, :, 0, n_prefix:].reshape(B, H, G, G)


def mean_cls_attention_map(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """Mean over the batch of :func:`cls_attention_map`: [H, G, G], in at least float32."""
    m = cls_attention_map(attn, n_prefix)
    return m.to(_compute_dtype(m.dtype)).mean(0)


def uniform_attention_distance(grid_size: int, unit: str = "unit_square", patch_size: float | None = None) -> float:
    """The attention distance of a head that attends uniformly to every spatial token: a reference level.

    Equals ``attention_distance`` of uniform attention (mean of all pairwise token distances). A head far
    below it is local; a head near it is as global as attention without any spatial preference.
    """
    return float(token_grid_distances(grid_size, unit, patch_size).mean())

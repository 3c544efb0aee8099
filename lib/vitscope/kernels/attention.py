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

from .validation import check_choice, check_int

#: The two attention-distance methods, named by their unit (each method has its own unit, so one word serves both;
#: tables and plots use the same names):
#: ``"unit_square"``: Teaching Matters 4.3 and its code: spatial rows renormalised, grid on the unit square.
#: ``"pixels"``: Raghu et al. 2021 / probing-vits: no renormalisation (prefix mass counts as distance 0), pixels.
METHODS = ("unit_square", "pixels")
#: Units of :func:`token_grid_distances` (the same names: a method's unit is its name).
UNITS = METHODS
#: Former names of the methods (``variant=`` keyword), still accepted.
_LEGACY_VARIANTS = {"teaching-matters": "unit_square", "pixels": "pixels"}


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # half / bfloat16 maps are upcast so sums over ~200 keys keep their precision.
    return torch.promote_types(dtype, torch.float32)


def validate_attention(attn: Tensor, n_prefix: int = 1) -> int:
    """Check ``attn`` [B, H, T, T] holds attention probabilities over ``n_prefix`` + G*G tokens; return G.

    Raises ValueError for: a non-tensor or non-4-D input, non-square last two dims, a bad ``n_prefix``, NaN/Inf,
    negative entries or rows that do not sum to 1 (e.g. pre-softmax logits), or a non-square spatial token count.
    Tolerance on row sums: 1e-2 for float16/bfloat16, 1e-3 otherwise.
    """
    G = _validate_layout(attn, n_prefix)
    _check_probabilities(attn, attn.sum(-1, dtype=_compute_dtype(attn.dtype)), "attn")
    return G


def _validate_layout(attn: Tensor, n_prefix: int) -> int:
    if not isinstance(attn, Tensor) or attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        shape = tuple(attn.shape) if isinstance(attn, Tensor) else type(attn).__name__
        raise ValueError(f"attn must be a tensor [B, H, T, T] of attention probabilities; got {shape}")
    if not attn.is_floating_point():
        raise ValueError(f"attn must be floating point (probabilities); got {attn.dtype}")
    T = attn.shape[-1]
    check_int(n_prefix, f"n_prefix (prefix tokens, with T={T} tokens)", 0, T - 1)
    n_spatial = T - n_prefix
    G = math.isqrt(n_spatial)
    if G * G != n_spatial:
        raise ValueError(f"T={T} tokens with n_prefix={n_prefix} leaves {n_spatial} spatial tokens, which is not a "
                         "square G*G grid; check n_prefix (CLS + register tokens) or the model's patch layout")
    return G


def _check_probabilities(rows: Tensor, row_sums: Tensor, name: str) -> None:
    # Row sums of NaN/Inf entries are NaN/Inf, so one reduction checks finiteness and normalisation together.
    tol = 1e-2 if rows.dtype in (torch.float16, torch.bfloat16) else 1e-3
    row_err = (row_sums - 1).abs().max().item()
    min_val = rows.min().item()
    if not math.isfinite(row_err) or not math.isfinite(min_val):
        raise ValueError(f"{name} (shape {tuple(rows.shape)}) holds NaN or Inf values")
    if row_err > tol or min_val < -tol:
        raise ValueError(
            f"{name} must hold post-softmax probabilities (entries >= 0, each query row summing to 1 over keys); "
            f"got max |row sum - 1| = {row_err:.3g} and min entry {min_val:.3g} (tolerance {tol}). "
            "Did you pass pre-softmax logits? Take the output of attn.softmax(-1) (timm: attn_drop's output).")


def token_grid_distances(grid_size: int, unit: str = "unit_square", patch_size: float | None = None, *,
                         device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Euclidean distances between the G*G row-major grid tokens: [G*G, G*G].

    unit="unit_square": token (r, c) at (c/(G-1), r/(G-1)), i.e. the grid spans a 1 x 1 square (Teaching Matters
    4.3 and its code, ``x = i % G / (G-1)``); distances lie in [0, sqrt(2)].
    unit="pixels": token (r, c) at (c, r) * patch_size, distances in input pixels (Raghu et al. 2021 /
    probing-vits); ``patch_size`` required. ``device``/``dtype`` of the result (default: torch default device).
    """
    check_int(grid_size, "grid_size (distances on a 1x1 grid are undefined)", 2)
    check_choice(unit, "unit", UNITS)
    idx = torch.arange(grid_size * grid_size, device=device)
    x, y = (idx % grid_size).to(dtype), (idx // grid_size).to(dtype)
    if unit == "unit_square":
        x, y = x / (grid_size - 1), y / (grid_size - 1)
    else:
        if patch_size is None or not patch_size > 0:
            raise ValueError(f"unit='pixels' needs a positive patch_size (pixels per patch); got {patch_size!r}")
        x, y = x * patch_size, y * patch_size
    return torch.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])


def attention_distances(attn: Tensor, n_prefix: int = 1, patch_size: float | None = None, *,
                        check_probabilities: bool = True) -> dict[str, Tensor]:
    """Average attention distance per image and head by both :data:`METHODS` in ONE pass: ``{method: [B, H]}``.

    For each spatial query q, ``s_q = sum_k a_qk d(q, k)`` over spatial keys with unit-square distances d, and its
    spatial mass ``m_q = sum_k a_qk``; prefix queries and keys are dropped. Then

    - ``unit_square`` (Teaching Matters 4.3): ``mean_q s_q / m_q`` (each row renormalised over spatial keys; a row
      with ``m_q == 0``, all attention on prefix tokens, is left at 0 and still counts in the mean, as in the code);
    - ``pixels`` (Raghu et al. 2021): ``mean_q s_q * patch_size * (G - 1)`` (no renormalisation; the pixel grid is
      the unit square scaled by ``patch_size * (G - 1)``). Present only when ``patch_size`` is given.

    ``s_q`` and ``m_q`` are computed in ``attn``'s dtype promoted to at least float32 (a sum of G*G products per
    row); the division and the mean over queries in float64; results are returned in that compute dtype.

    ``check_probabilities=False`` skips the two full passes that check entries and row sums (the layout is still
    checked): for maps a softmax just produced, as extraction captures them. NaN/Inf then still show as NaN/Inf
    in the result, which the caller can check on [B, H] values.
    """
    G = validate_attention(attn, n_prefix) if check_probabilities else _validate_layout(attn, n_prefix)
    cdtype = _compute_dtype(attn.dtype)
    B, H, Q = attn.shape[0], attn.shape[1], G * G
    a = attn[:, :, n_prefix:, n_prefix:]
    if a.dtype != cdtype:
        a = a.to(cdtype)
    # Both row sums in ONE read of the map, with no [B, H, Q, K] temporary: a batched matmul over queries q,
    # [Q, B*H, K] @ [Q, K, 2], against [d(q, k), 1] (the columns give s_q and m_q). The [Q, B*H, K] operand is a
    # strided view of the map (its rows stay contiguous), so nothing is copied.
    d = token_grid_distances(G, "unit_square", device=attn.device, dtype=cdtype)
    sums = torch.bmm(a.flatten(0, 1).transpose(0, 1), torch.stack([d, torch.ones_like(d)], dim=-1))
    sums = sums.transpose(0, 1).reshape(B, H, Q, 2).double()
    weighted, mass = sums[..., 0], sums[..., 1]                       # [B, H, Q]: s_q, m_q
    out = {"unit_square": (weighted / torch.where(mass == 0, torch.ones_like(mass), mass)).mean(-1)}
    if patch_size is not None:
        if not patch_size > 0:
            raise ValueError(f"patch_size must be > 0 (pixels per patch); got {patch_size!r}")
        out["pixels"] = weighted.mean(-1) * (float(patch_size) * (G - 1))
    return {method: d.to(cdtype) for method, d in out.items()}


def attention_distance(attn: Tensor, n_prefix: int = 1, method: str = "unit_square",
                       patch_size: float | None = None, *, variant: str | None = None) -> Tensor:
    """Average attention distance per image and head by one method: [B, H] (see :func:`attention_distances`).

    For each spatial query q: sum_k a_qk * d(q, k) over spatial keys k, then the mean over the G*G spatial queries.
    Prefix queries and keys are dropped in both methods.

    method="unit_square" (default; Teaching Matters 4.3 and its AttentionDistance code): each spatial row is
    renormalised to sum to 1 over spatial keys (the mass on prefix keys is discarded); distances on the unit square
    (result in [0, sqrt(2)]). method="pixels" (Raghu et al. 2021 / probing-vits): NO renormalisation, so mass on
    prefix keys counts as distance 0; distances in pixels, ``patch_size`` required (ignored by the other method).
    ``variant=`` is the former name of ``method`` and accepts its former values ("teaching-matters", "pixels").
    """
    if variant is not None:
        method = _LEGACY_VARIANTS.get(variant, variant)
    check_choice(method, "method", METHODS)
    if method == "pixels" and patch_size is None:
        raise ValueError("method='pixels' needs patch_size (pixels per patch, e.g. 16 for ViT-B/16)")
    return attention_distances(attn, n_prefix, patch_size if method == "pixels" else None)[method]


def cls_attention_map(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """CLS query's attention over the patch grid: [B, H, G, G] (Teaching Matters 4.1).

    Row 0 (the CLS query; CLS must be token 0) with the prefix keys dropped, reshaped row-major to the grid. Not
    renormalised: the map sums to 1 minus the CLS query's mass on prefix tokens, so maps stay comparable to the raw
    attention probabilities. Keeps ``attn``'s dtype.
    """
    G = _validate_layout(attn, n_prefix)
    if n_prefix < 1:
        raise ValueError("cls_attention_map needs a CLS token (n_prefix >= 1); got n_prefix=0")
    B, H = attn.shape[:2]
    row = attn[:, :, 0]                                                # the only row read: the only row checked
    _check_probabilities(row, row.sum(-1, dtype=_compute_dtype(attn.dtype)), "attn (CLS row)")
    return row[:, :, n_prefix:].reshape(B, H, G, G)


def mean_cls_attention_map(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """Mean over the batch of :func:`cls_attention_map`: [H, G, G], in at least float32."""
    m = cls_attention_map(attn, n_prefix)
    return m.to(_compute_dtype(m.dtype)).mean(0)


def uniform_attention_distance(grid_size: int, method: str = "unit_square", patch_size: float | None = None) -> float:
    """The attention distance of a head that attends uniformly to every spatial token: a reference level.

    Equals ``attention_distance`` of uniform attention (mean of all pairwise token distances). A head far
    below it is local; a head near it is as global as attention without any spatial preference.
    """
    return float(token_grid_distances(grid_size, method, patch_size).mean())


def attention_entropy(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """Mean entropy (nats) of the spatial attention rows per image and head: ``[B, H]``.

    Prefix queries and keys are dropped and each spatial row renormalised over the spatial keys (as the
    ``unit_square`` attention distance does); a row with no spatial mass counts as entropy 0. Uniform attention over
    the ``G*G`` spatial tokens scores ``ln(G*G)``, the maximum; one-hot attention scores 0.
    """
    validate_attention(attn, n_prefix)
    a = attn[:, :, n_prefix:, n_prefix:].double()      # float64: a sum of G*G terms p log p per row
    mass = a.sum(-1, keepdim=True)
    p = a / torch.where(mass == 0, torch.ones_like(mass), mass)
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    return -plogp.sum(-1).mean(-1)

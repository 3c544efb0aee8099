"""Attention maps as pictures (Teaching Matters 4.1) and Aligned Aggregated Attention Maps with head types (4.2).

``attn`` is post-softmax attention ``[B, H, T, T]`` laid out as in :mod:`vitscope.kernels.attention` (``n_prefix``
prefix tokens, then the G x G patch grid row-major). Maps are on the patch grid: ``[..., G, G]``, row ``r`` (down),
column ``c`` (right).

**AAAM** (Sec. 4.2): every spatial query's row (prefix keys dropped, renormalised over the spatial keys) is pasted
into a ``(2G-1) x (2G-1)`` canvas so that the query sits at the centre; canvas cell ``(G-1+dy, G-1+dx)`` holds the
attention from query ``q`` to key ``q + (dy, dx)``. The AAAM is the **mean** of these canvases over the G*G queries
and the images, so it sums to 1 and is a distribution over offsets (the original code stored ``batch_size`` times
this mean).

**Head types** (new work; the paper names them, its code has no classifier). From the AAAM ``P`` of one head, with
the *local window* the offsets within ``LOCAL_RADIUS`` patches (Chebyshev) of the query:

1. *global* when the local window holds less than ``LOCAL_MASS_MIN`` of the mass;
2. *strict local* when the query's own position holds at least ``STRICT_CENTRE_MIN``;
3. *offset local* when the centroid of the window (renormalised) lies ``OFFSET_MIN`` patches or more from the query;
4. *axial local* when the window is elongated along one axis (``anisotropy >= AXIAL_ANISOTROPY_MIN``: variance
   along one image axis against the other) or lies along both axes, a cross (``cross >= AXIAL_CROSS_MIN``:
   ``1 - E|dy||dx| / (E|dy| E|dx|)`` about the centroid, 0 for any blob whose rows and columns are independent,
   e.g. an isotropic Gaussian cut by a square window, and 1 for mass on the two mid-lines only);
5. *soft local* otherwise (a symmetric neighbourhood).

Every threshold is a named constant below; the page prints them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .attention import _check_probabilities, _compute_dtype, _validate_layout, cls_attention_map, validate_attention
from .validation import check_int

HEAD_TYPES = ("strict local", "soft local", "axial local", "offset local", "global")
#: Half-width (patches, Chebyshev) of the local window around the query: a 5 x 5 neighbourhood.
LOCAL_RADIUS = 2
#: A head is local when at least this share of its AAAM lies in the local window (uniform attention on a 14 x 14
#: grid puts 0.11 there, on an 8 x 8 grid 0.28).
LOCAL_MASS_MIN = 0.5
#: Strict local: at least this share of the attention stays on the query's own patch.
STRICT_CENTRE_MIN = 0.5
#: Offset local: the local window's centroid lies at least this many patches from the query.
OFFSET_MIN = 0.5
#: Axial (one axis): |var_y - var_x| / (var_y + var_x) of the local window at least this (a variance ratio of 3).
AXIAL_ANISOTROPY_MIN = 0.5
#: Axial (both axes, a cross): the cross score at least this.
AXIAL_CROSS_MIN = 0.5

#: CLS maps: the central region is the middle half of the image along each axis (a quarter of its area).
CENTRAL_FRACTION = 0.5
#: CLS maps: the share of the mass whose token count measures how much of the image a map covers (TM 4.4, DINO).
COVERAGE_MASS = 0.6
#: CLS maps: the share of tokens forming a head's "most attended" set.
TOP_FRACTION = 0.1


def spatial_rows(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """Spatial queries' rows over spatial keys, each renormalised to sum to 1: ``[B, H, G*G, G*G]``, in at least
    float32. A row with no spatial mass (everything on prefix tokens) stays 0."""
    validate_attention(attn, n_prefix)
    a = attn[:, :, n_prefix:, n_prefix:].to(_compute_dtype(attn.dtype))
    mass = a.sum(-1, keepdim=True)
    return a / torch.where(mass == 0, torch.ones_like(mass), mass)


def cls_maps(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """CLS attention over the patch grid, renormalised over spatial keys: ``[B, H, G, G]`` summing to 1 (the raw
    map is :func:`vitscope.kernels.attention.cls_attention_map`)."""
    m = cls_attention_map(attn, n_prefix)
    m = m.to(_compute_dtype(m.dtype))
    mass = m.sum((-2, -1), keepdim=True)
    return m / torch.where(mass == 0, torch.ones_like(mass), mass)


def query_maps(attn: Tensor, queries, n_prefix: int = 1) -> Tensor:
    """Attention of the spatial queries at grid positions ``queries`` [(row, col), ...] over the spatial keys,
    renormalised: ``[B, H, Q, G, G]``."""
    G = _validate_layout(attn, n_prefix)               # only the rows read are checked, as cls_attention_map does
    queries = [tuple(q) for q in queries]
    for r, c in queries:
        check_int(r, f"query row (grid {G} x {G})", 0, G - 1)
        check_int(c, f"query column (grid {G} x {G})", 0, G - 1)
    picked = attn[:, :, [n_prefix + r * G + c for r, c in queries]]
    _check_probabilities(picked, picked.sum(-1, dtype=_compute_dtype(attn.dtype)), "attn (query rows)")
    rows = picked[..., n_prefix:].to(_compute_dtype(attn.dtype))
    mass = rows.sum(-1, keepdim=True)
    rows = rows / torch.where(mass == 0, torch.ones_like(mass), mass)
    return rows.reshape(*rows.shape[:3], G, G)


def canvas_offsets(grid_size: int, *, dtype=torch.float64, device=None) -> tuple[Tensor, Tensor]:
    """``(dy, dx)``, each ``[2G-1, 2G-1]``: the offset (key minus query, in patches) of every AAAM canvas cell."""
    G = check_int(grid_size, "grid_size", 1)
    d = torch.arange(-(G - 1), G, dtype=dtype, device=device)
    return d[:, None].expand(2 * G - 1, 2 * G - 1), d[None, :].expand(2 * G - 1, 2 * G - 1)


def _canvas_index(G: int, device) -> Tensor:
    # Flat canvas cell of every (query, key) pair: ((ky - qy) + G - 1) * (2G - 1) + (kx - qx) + G - 1.
    idx = torch.arange(G * G, device=device)
    y, x = idx // G, idx % G
    dy = y[None, :] - y[:, None] + G - 1                               # [Q, K]
    dx = x[None, :] - x[:, None] + G - 1
    return (dy * (2 * G - 1) + dx).reshape(-1)


def aaam_per_image(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """Aligned Aggregated Attention Map of each image and head: ``[B, H, 2G-1, 2G-1]``, the mean over the G*G
    spatial queries of their re-centred, renormalised rows (each canvas sums to 1 when every row has spatial mass).
    The AAAM of a data set is the mean of these over its images (:func:`aaam`)."""
    return aaam_canvas(spatial_rows(attn, n_prefix))


def aaam_canvas(rows: Tensor) -> Tensor:
    """Re-centre spatial rows ``[..., G*G, G*G]`` (queries x keys, e.g. :func:`spatial_rows`, or their sum over
    images) and average over the queries: ``[..., 2G-1, 2G-1]``."""
    G = math.isqrt(rows.shape[-1])
    if rows.ndim < 2 or G * G != rows.shape[-1] or rows.shape[-2] != rows.shape[-1]:
        raise ValueError(f"rows must be [..., G*G, G*G] (spatial queries x keys); got {tuple(rows.shape)}")
    lead = rows.shape[:-2]
    flat = rows.reshape(-1, G ** 4)
    canvas = flat.new_zeros(flat.shape[0], (2 * G - 1) ** 2)
    canvas.index_add_(1, _canvas_index(G, rows.device), flat)
    return (canvas / (G * G)).reshape(*lead, 2 * G - 1, 2 * G - 1)


def local_moment_rows(rows: Tensor, radius: int = LOCAL_RADIUS) -> Tensor:
    """:func:`local_moment` of ``aaam_canvas(rows)`` straight from spatial rows ``[..., G*G, G*G]``, without building
    the canvas: ``[..., 2]`` (dy, dx), float64 (the mean over queries of the window's offsets weighted by attention)."""
    G = math.isqrt(rows.shape[-1])
    idx = torch.arange(G * G, device=rows.device)
    dy = (idx // G)[None, :] - (idx // G)[:, None]                    # [Q, K]: key minus query
    dx = (idx % G)[None, :] - (idx % G)[:, None]
    window = (dy.abs() <= check_int(radius, "radius", 0)) & (dx.abs() <= radius)
    weights = torch.stack([dy * window, dx * window]).to(rows.dtype)  # [2, Q, K]
    return torch.einsum("...qk,cqk->...c", rows, weights).double() / (G * G)


def aaam(attn: Tensor, n_prefix: int = 1) -> Tensor:
    """The AAAM of a batch: the mean over images of :func:`aaam_per_image`, ``[H, 2G-1, 2G-1]``."""
    return aaam_per_image(attn, n_prefix).mean(0)


def _check_canvas(maps: Tensor, name: str) -> int:
    if not isinstance(maps, Tensor) or maps.ndim < 2 or maps.shape[-1] != maps.shape[-2] or maps.shape[-1] % 2 == 0:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"{name} must be AAAM canvases [..., 2G-1, 2G-1] (odd, square); got {shape}")
    return (maps.shape[-1] + 1) // 2


def _window(G: int, radius: int, device) -> tuple[Tensor, Tensor, Tensor]:
    dy, dx = canvas_offsets(G, device=device)
    return dy, dx, ((dy.abs() <= radius) & (dx.abs() <= radius)).double()


def local_moment(maps: Tensor, radius: int = LOCAL_RADIUS) -> Tensor:
    """First moment of the AAAM inside the local window, ``sum P(d) d`` over ``|d|_inf <= radius``: ``[..., 2]``
    (dy, dx) in patches, float64. Linear in ``P``, so the moment of a mean AAAM is the mean of per-image moments."""
    G = _check_canvas(maps, "maps")
    dy, dx, w = _window(G, check_int(radius, "radius", 0), maps.device)
    p = maps.double() * w
    return torch.stack([(p * dy).sum((-2, -1)), (p * dx).sum((-2, -1))], -1)


def head_features(maps: Tensor, radius: int = LOCAL_RADIUS) -> dict[str, Tensor]:
    """The quantities the head types are defined on, each ``[...]`` float64, from AAAMs ``[..., 2G-1, 2G-1]``:

    ``local_mass`` (share in the local window), ``centre_mass`` (share on the query's own patch), ``offset_y``,
    ``offset_x`` and ``offset`` (centroid of the renormalised window, patches; +y is down, +x right), ``spread``
    (sqrt of the window's total variance about its centroid, patches), ``anisotropy`` and ``cross`` (module
    docstring; 0 where undefined, e.g. all mass on one cell).
    """
    G = _check_canvas(maps, "maps")
    dy, dx, w = _window(G, check_int(radius, "radius", 0), maps.device)
    P = maps.double()
    local = (P * w).sum((-2, -1))
    q = P * w / torch.where(local == 0, torch.ones_like(local), local)[..., None, None]
    e = lambda f: (q * f).sum((-2, -1))
    my, mx = e(dy), e(dx)
    ry, rx = dy - my[..., None, None], dx - mx[..., None, None]
    vy, vx = e(ry ** 2), e(rx ** 2)
    total = vy + vx
    aniso = torch.where(total > 0, (vy - vx).abs() / torch.where(total > 0, total, 1.0), 0.0)
    ay, ax = e(ry.abs()), e(rx.abs())
    denom = ay * ax
    cross = torch.where(denom > 0, 1 - e(ry.abs() * rx.abs()) / torch.where(denom > 0, denom, 1.0), 0.0)
    return {"local_mass": local, "centre_mass": P[..., G - 1, G - 1], "offset_y": my, "offset_x": mx,
            "offset": torch.hypot(my, mx), "spread": total.sqrt(), "anisotropy": aniso, "cross": cross}


def classify(features: dict[str, Tensor]) -> list:
    """Head type of each head from :func:`head_features` (the rules of the module docstring), as a nested list of
    names from :data:`HEAD_TYPES` shaped like the features."""
    f = {k: v.double() for k, v in features.items()}
    kind = torch.full_like(f["local_mass"], HEAD_TYPES.index("soft local"))
    axial = (f["anisotropy"] >= AXIAL_ANISOTROPY_MIN) | (f["cross"] >= AXIAL_CROSS_MIN)
    # Assigned from the last rule to the first, so the first rule that applies wins.
    kind[axial] = HEAD_TYPES.index("axial local")
    kind[f["offset"] >= OFFSET_MIN] = HEAD_TYPES.index("offset local")
    kind[f["centre_mass"] >= STRICT_CENTRE_MIN] = HEAD_TYPES.index("strict local")
    kind[f["local_mass"] < LOCAL_MASS_MIN] = HEAD_TYPES.index("global")
    names = [HEAD_TYPES[int(i)] for i in kind.reshape(-1)]
    out = names
    for size in reversed(kind.shape[1:]):
        out = [out[i:i + size] for i in range(0, len(out), size)]
    return out if kind.ndim else names[0]


def classify_heads(maps: Tensor, radius: int = LOCAL_RADIUS) -> list:
    """Head type of each AAAM ``[..., 2G-1, 2G-1]``: ``classify(head_features(maps, radius))``."""
    return classify(head_features(maps, radius))


def direction(offset_y: float, offset_x: float) -> str:
    """The dominant direction of an offset, in image terms: "right", "left", "down" or "up"."""
    if abs(offset_x) >= abs(offset_y):
        return "right" if offset_x >= 0 else "left"
    return "down" if offset_y >= 0 else "up"


# ------------------------------------------------------------------------------------------------ CLS-map statistics
def central_region(grid_size: int, fraction: float = CENTRAL_FRACTION) -> Tensor:
    """Boolean ``[G, G]``: the tokens whose centre lies in the middle ``fraction`` of the image along both axes."""
    G = check_int(grid_size, "grid_size", 1)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    centre = (torch.arange(G, dtype=torch.float64) + 0.5) / G
    inside = (centre - 0.5).abs() <= fraction / 2 + 1e-12
    return inside[:, None] & inside[None, :]


def mass_on(maps: Tensor, mask: Tensor) -> Tensor:
    """Mass of each map ``[..., G, G]`` on the tokens of ``mask`` (``[G, G]`` or broadcastable), float64."""
    if not isinstance(maps, Tensor) or maps.ndim < 2:
        raise ValueError(f"maps must be a tensor [..., G, G]; got {type(maps).__name__}")
    return (maps.double() * mask.to(maps.device, torch.float64)).sum((-2, -1))


def coverage(maps: Tensor, mass: float = COVERAGE_MASS) -> Tensor:
    """Share of the tokens needed to hold ``mass`` of each map ``[..., G, G]`` (maps summing to 1): the fewest
    most-attended tokens whose cumulative mass reaches ``mass``, divided by G*G. Uniform maps give about ``mass``.
    A map that sums to 0 (an all-zero attribution) has no mass to hold: NaN, never a share above 1."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1]; got {mass!r}")
    flat = maps.double().flatten(-2)
    total = flat.sum(-1, keepdim=True)
    cum = (flat.sort(-1, descending=True).values / torch.where(total == 0, 1.0, total)).cumsum(-1)
    count = (cum < mass - 1e-12).sum(-1) + 1
    share = count.double() / flat.shape[-1]
    return torch.where(total.squeeze(-1) == 0, torch.nan, share)


def top_tokens(maps: Tensor, fraction: float = TOP_FRACTION) -> Tensor:
    """Boolean ``[..., G, G]``: each map's ``ceil(fraction * G*G)`` most attended tokens (ties: lower index)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    flat = maps.flatten(-2)
    k = math.ceil(fraction * flat.shape[-1])
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(-1, flat.topk(k, -1).indices, True)
    return mask.reshape(maps.shape)


def uniform_aaam(grid_size: int) -> Tensor:
    """The AAAM of uniform attention: ``[2G-1, 2G-1]`` float64, the share of query-key pairs at each offset,
    ``(G - |dy|)(G - |dx|) / G**4``. Dividing an AAAM by it shows where a head attends more than chance."""
    dy, dx = canvas_offsets(grid_size)
    return (grid_size - dy.abs()) * (grid_size - dx.abs()) / grid_size ** 4

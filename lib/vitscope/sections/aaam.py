"""Teaching Matters §4.2 — Aligned Aggregated Attention Maps (AAAMs) and the types of local attention heads.

Product: :class:`vitscope.extract.attention_products.AlignedAttention` (shared with §4.1's products in one
forward pass, :func:`vitscope.sections.cls_attention.extract_maps`); kernels:
:func:`vitscope.kernels.attention_maps.head_features` and :func:`~vitscope.kernels.attention_maps.classify` (the
head-type rules and thresholds are in that module's docstring) and, for the claim,
:func:`vitscope.kernels.stats.bootstrap_contrast`.

Claim TM-4.2b ("offset local heads occur in every model") is checked per model with a held-out proxy: on the first
half of the images (extraction order), the head whose AAAM has the largest local first moment
``m = sum_{|d|<=LOCAL_RADIUS} P(d) d`` (local and shifted: both raise it) is chosen, with its direction
``u = m / |m|``; on the second half, each image's ``m . u`` for that head (patches) minus
:data:`OFFSET_MOMENT_MIN` is the effect, against the untrained model's head chosen by the same rule. An offset
local head (local mass >= ``LOCAL_MASS_MIN``, window centroid >= ``OFFSET_MIN``) has a moment of at least
``LOCAL_MASS_MIN * OFFSET_MIN``, so a positive effect is necessary for one (not sufficient: the page's head types
name them).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, judge, paired_contrast
from ..extract.attention_products import reference_count
from ..kernels import attention_maps as maps_k
from ..profiles import Profile
from .cls_attention import AttentionMaps, extract_maps

#: The rules' thresholds, as the page prints them.
THRESHOLDS = {"local window (patches, each side)": maps_k.LOCAL_RADIUS,
              "global below local mass": maps_k.LOCAL_MASS_MIN,
              "strict: centre mass at least": maps_k.STRICT_CENTRE_MIN,
              "offset: window centroid at least (patches)": maps_k.OFFSET_MIN,
              "axial: anisotropy at least": maps_k.AXIAL_ANISOTROPY_MIN,
              "axial: cross score at least": maps_k.AXIAL_CROSS_MIN}


#: The smallest local first moment (patches) an offset local head can have.
OFFSET_MOMENT_MIN = maps_k.LOCAL_MASS_MIN * maps_k.OFFSET_MIN


def compute(model: str, profile: Profile, **kwargs) -> AttentionMaps:
    """``extract_maps`` on the profile's ``aaam`` dataset (the same pass as §4.1 when both name one dataset)."""
    return extract_maps(model, profile, "aaam", **kwargs)


def head_table(result: AttentionMaps) -> pd.DataFrame:
    """One row per block and head of the mean AAAM: ``model, block, head, type, direction`` (of an offset head,
    else ""), and the features of :func:`~vitscope.kernels.attention_maps.head_features`. Blocks 1-based."""
    mean = result.products["aaam"]["mean"]
    f = maps_k.head_features(mean)
    types = maps_k.classify(f)
    L, H = mean.shape[:2]
    rows = []
    for b in range(L):
        for h in range(H):
            kind = types[b][h]
            oy, ox = float(f["offset_y"][b, h]), float(f["offset_x"][b, h])
            rows.append({"model": result.model, "block": b + 1, "head": h, "type": kind,
                         "direction": maps_k.direction(oy, ox) if kind == "offset local" else "",
                         **{k: float(v[b, h]) for k, v in f.items()}})
    return pd.DataFrame(rows)


def type_counts(table: pd.DataFrame, by=("model",)) -> pd.DataFrame:
    """Heads of each type (columns in :data:`HEAD_TYPES` order) per ``by`` (e.g. model, or model and block)."""
    counts = table.groupby(list(by), sort=False)["type"].value_counts().unstack(fill_value=0)
    return counts.reindex(columns=list(maps_k.HEAD_TYPES), fill_value=0)


def gallery(table: pd.DataFrame, per_type: int = 3) -> pd.DataFrame:
    """Up to ``per_type`` heads of each type found, the clearest first (strict: centre mass; offset: offset;
    axial: the larger of anisotropy and cross; soft: local mass; global: the lowest local mass), one model each
    where possible."""
    key = {"strict local": ("centre_mass", False), "offset local": ("offset", False), "soft local":
           ("local_mass", False), "global": ("local_mass", True), "axial local": ("axial_score", False)}
    t = table.assign(axial_score=np.maximum(table.anisotropy, table.cross))
    picks = []
    for kind in maps_k.HEAD_TYPES:
        sel = t[t.type == kind]
        if sel.empty:
            continue
        col, ascending = key[kind]
        sel = sel.sort_values(col, ascending=ascending)
        first = sel.drop_duplicates("model").head(per_type)            # one head per model first, then the rest
        picks.append(pd.concat([first, sel.drop(first.index)]).head(per_type))
    return pd.concat(picks).drop(columns="axial_score") if picks else table.head(0)


# ------------------------------------------------------------------------------------------------------ claims
def offset_head(result: AttentionMaps) -> tuple[int, int, torch.Tensor]:
    """``(block, head, u)`` chosen on the first half of the images: the largest local first moment, its unit
    direction ``u`` [2] (dy, dx). Block 1-based."""
    m = maps_k.local_moment(result.products["aaam"]["mean_first"])            # [L, H, 2]
    norm = m.norm(dim=-1)
    b, h = divmod(int(norm.argmax()), norm.shape[1])
    return b + 1, h, m[b, h] / norm[b, h].clamp_min(1e-12)


def held_out_offset(result: AttentionMaps) -> tuple[torch.Tensor, tuple[int, int, torch.Tensor]]:
    """Per image of the second half, the chosen head's local moment along its direction (patches): [N/2]."""
    b, h, u = offset_head(result)
    moment = result.products["aaam"]["moment"].double()[reference_count(result.n_images):, b - 1, h]   # [n, 2]
    return moment @ u, (b, h, u)


def claims_from_maps(results: dict[str, AttentionMaps]) -> list[ClaimResult]:
    """TM-4.2b per trained model (module docstring), least favourable verdict first (the ledger's headline)."""
    from ..models import get_cfg

    base = untrained_baseline(list(results))
    trained = [m for m in results if not get_cfg(m).is_untrained]
    if not trained:
        return [cannot_check("TM-4.2b", "every model", "the profile has no trained model")]
    values, chosen = {}, {}
    for m, r in results.items():
        moment, chosen[m] = held_out_offset(r)
        values[m] = moment - OFFSET_MOMENT_MIN
    out = []
    for m in trained:
        b, h, u = chosen[m]
        what = f"block {b} head {h}, towards {maps_k.direction(float(u[0]), float(u[1]))}"
        measure = (f"held-out local moment of its most offset head ({what}) minus {OFFSET_MOMENT_MIN:g}, the least "
                   "an offset local head has (patches)")
        if base is None:
            out.append(cannot_check("TM-4.2b", m, "no untrained baseline of the same architecture in this profile"))
            continue
        effect = paired_contrast(values, {m: 1.0})
        beyond = paired_contrast(values, {m: 1.0, base: -1.0})
        out.append(judge("TM-4.2b", m, measure, effect, beyond, 1, base))
    severity = {"does not hold": 0, "inconclusive": 1, "cannot be checked": 2, "holds": 3}
    return sorted(out, key=lambda r: (severity[r.verdict], r.baseline.low if r.baseline else 0.0))


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """The claim of TM 4.2 on ``models`` (default: the profile's), from the cached extraction."""
    models = list(models or profile.models)
    weights = weights or {}
    return claims_from_maps({m: compute(m, profile, weights=weights.get(m), device=device, store=store,
                                        progress=progress) for m in models})

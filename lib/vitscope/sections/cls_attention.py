"""Teaching Matters §4.1 — CLS attention maps per block and head, spatial-query maps and single-image examples.

Products: :class:`vitscope.extract.ClsAttention` (mean map) and the products of
:func:`vitscope.extract.attention_products.attention_map_products` (requested together with §4.2's, so one
forward pass serves both pages); kernels: :mod:`vitscope.kernels.attention_maps` and, for the claims,
:func:`vitscope.kernels.stats.bootstrap_contrast`.

The paper's reading of Fig. 2 is checked with measurable proxies, computed per image on the CLS map renormalised
over spatial tokens and averaged over the second half of the blocks ("mid-to-final layers") and the heads:

* TM-4.1a, *centred blobs* (DINO, MoCo): mass in the central quarter of the image (middle half of each axis);
* TM-4.1b, *more diverse, covering more of the image* (MAE, BEiT): share of tokens holding 60 % of the mass;
* TM-4.1c, *sparse repeating patterns* (FS, CLIP): mass on the 10 % of tokens the head attends most on average
  over the *other* images (the first half of the extraction order chooses the tokens, the second half is scored):
  high when every image sends its attention to the same few places.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, judge, paired_contrast
from ..data import transform_key
from ..devices import resolve_device
from ..extract import AttentionDistance, FeatureStore, extract, vit_geometry
from ..extract.attention_products import attention_map_products, query_positions, reference_count
from ..kernels import attention_maps as maps_k
from ..profiles import Profile
from .common import load_for_analysis

#: Teaching Matters' groups of supervision (Sec. 4.1).
CONTRASTIVE = ("self-distillation", "contrastive")                       # DINO, MoCo
EXPLICIT = ("supervised", "image-text")                                  # FS, CLIP
RECONSTRUCTION = ("masked-reconstruction", "masked-token-prediction")    # MAE, BEiT
#: Examples per page (the first images of the extraction order); a profile may set ``cls_attention.n_examples``.
N_EXAMPLES = 4


@dataclass(frozen=True)
class AttentionMaps:
    """One model's extracted attention-map products (:func:`extract_maps`)."""

    model: str
    geometry: dict
    products: dict          # {"cls", "cls_stats", "aaam", "queries"}: {tensor name: tensor}
    order: torch.Tensor     # dataset indices in extraction order
    dataset_name: str

    @property
    def n_images(self) -> int:
        return len(self.order)


def extract_maps(model: str, profile: Profile, section: str, *, weights=None, device=None, store=None,
                 progress: bool = False) -> AttentionMaps:
    """The cached TM 4.1/4.2 products of ``model`` on the dataset of profile section ``section`` (one forward pass
    for both sections' products, and the attention distances of §4.3 when that section reads the same data)."""
    device = resolve_device(device or profile.device)
    dataset_name = profile.section(section)["dataset"]
    n_examples = int((profile.raw.get("cls_attention") or {}).get("n_examples", N_EXAMPLES))
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = profile.dataset(dataset_name, cfg.preprocess)
    products = attention_map_products(n_examples)
    if (profile.raw.get("attention_distance") or {}).get("dataset") == dataset_name:
        products["ad"] = AttentionDistance()
    out = extract(net, ident, dataset, products, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, progress=progress)
    kept = {k: out[k] for k in ("cls", "cls_stats", "aaam", "queries")}
    return AttentionMaps(model, vit_geometry(net), kept, out["_meta"]["order"], dataset_name)


def compute(model: str, profile: Profile, **kwargs) -> AttentionMaps:
    """``extract_maps`` on the profile's ``cls_attention`` dataset."""
    return extract_maps(model, profile, "cls_attention", **kwargs)


def relative_to_uniform(maps: torch.Tensor) -> np.ndarray:
    """Maps ``[..., G, G]`` as multiples of uniform attention (1 = every patch alike): comparable across grids."""
    return maps.double().numpy() * maps.shape[-1] * maps.shape[-2]


def head_table(result: AttentionMaps) -> pd.DataFrame:
    """Per block and head, means over images: ``model, block, head, centre, coverage, fixed`` (see the module
    docstring; ``fixed`` over the second half of the images) and the uniform levels ``centre_uniform``,
    ``fixed_uniform``. Blocks are 1-based."""
    s = result.products["cls_stats"]
    G = result.geometry["grid"][0]
    centre, cov = s["centre"].double().mean(0), s["coverage"].double().mean(0)
    fixed = s["fixed"].double()[reference_count(result.n_images):].mean(0)
    L, H = centre.shape
    return pd.DataFrame({"model": result.model, "block": np.repeat(np.arange(1, L + 1), H),
                         "head": np.tile(np.arange(H), L), "centre": centre.reshape(-1).numpy(),
                         "coverage": cov.reshape(-1).numpy(), "fixed": fixed.reshape(-1).numpy(),
                         "centre_uniform": float(maps_k.central_region(G).double().mean()),
                         "fixed_uniform": float(maps_k.top_tokens(torch.zeros(G, G)).double().mean())})


def late_blocks(depth: int) -> list[int]:
    """The "mid-to-final" blocks of the claims: the second half, 1-based (ViT-B: 7-12; the mini-zoo: 4-6)."""
    return list(range(depth // 2 + 1, depth + 1))


def late_values(result: AttentionMaps, stat: str) -> torch.Tensor:
    """Per image, ``stat`` averaged over the late blocks and all heads: [N] float64 (``fixed``: the second half
    of the images only)."""
    v = result.products["cls_stats"][stat].double()
    blocks = [b - 1 for b in late_blocks(v.shape[1])]
    v = v[:, blocks].mean((1, 2))
    return v[reference_count(result.n_images):] if stat == "fixed" else v


def example_images(result: AttentionMaps, profile: Profile) -> list[np.ndarray]:
    """The example images (first of the extraction order) as the model saw them, resized and cropped: RGB arrays."""
    import torchvision.transforms as T

    from ..data.imagefolder import read_rgb
    from ..data.transforms import _INTERPOLATION
    from ..models import get_cfg

    pre = get_cfg(result.model).preprocess
    dataset = profile.dataset(result.dataset_name, pre)
    crop = T.Compose([T.Resize(pre.resize, interpolation=_INTERPOLATION[pre.interpolation]), T.CenterCrop(pre.crop)])
    n = result.products["cls_stats"]["examples"].shape[0]
    return [np.asarray(crop(read_rgb(dataset.samples[int(i)][0]))) for i in result.order[:n]]


def query_names(result: AttentionMaps) -> list[tuple[str, int, int]]:
    return query_positions(result.geometry["grid"][0])


# ------------------------------------------------------------------------------------------------------ claims
def _group_check(claim, values, family, base, hi, lo, hi_name, lo_name, measure, per_model) -> list[ClaimResult]:
    a = [m for m in values if family[m] in hi]
    b = [m for m in values if family[m] in lo]
    subject = f"{hi_name} minus {lo_name}"
    if not a or not b:
        return [cannot_check(claim, subject, f"the profile has no {hi_name if not a else lo_name} model")]
    w = {**{m: 1 / len(a) for m in a}, **{m: -1 / len(b) for m in b}}
    beyond = paired_contrast(values, {**{m: 1 / len(a) for m in a}, base: -1.0}) if base else None
    out = [judge(claim, subject, f"{measure} ({', '.join(a)} minus {', '.join(b)})", paired_contrast(values, w),
                 beyond, 1, base)]
    for m in (a if per_model else []):
        if base is None:
            out.append(cannot_check(claim, m, "no untrained baseline of the same architecture in this profile"))
            continue
        effect = paired_contrast(values, {m: 1.0, base: -1.0})
        out.append(judge(claim, m, f"{measure} minus `{base}`'s", effect, effect, 1, base))
    return out


def claims_from_stats(results: dict[str, AttentionMaps]) -> list[ClaimResult]:
    """TM-4.1a, b, c (module docstring) from the extracted products of several models (same images for each)."""
    from ..models import get_cfg

    family = {m: get_cfg(m).family for m in results}
    base = untrained_baseline(list(results))
    late = "late-block"
    stats = {s: {m: late_values(r, s) for m, r in results.items()} for s in ("centre", "coverage", "fixed")}
    return (_group_check("TM-4.1a", stats["centre"], family, base, CONTRASTIVE, EXPLICIT, "contrastive",
                         "explicitly supervised", f"{late} CLS mass in the central quarter", per_model=True)
            + _group_check("TM-4.1b", stats["coverage"], family, base, RECONSTRUCTION, CONTRASTIVE, "reconstruction",
                           "contrastive", f"{late} share of tokens holding 60 % of the CLS map", per_model=False)
            + _group_check("TM-4.1c", stats["fixed"], family, base, EXPLICIT, CONTRASTIVE, "explicitly supervised",
                           "contrastive", f"{late} CLS mass on the 10 % of tokens most attended on other images",
                           per_model=True))


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """The claims of TM 4.1 on ``models`` (default: the profile's), from the cached extraction."""
    models = list(models or profile.models)
    weights = weights or {}
    return claims_from_stats({m: compute(m, profile, weights=weights.get(m), device=device, store=store,
                                         progress=progress) for m in models})

"""Objectives Matter §2.3 — what supervised fine-tuning does to self-supervised ViTs (Figs. 4, 5, 8-10, 14, 17).

The fine-tuned models are registry names ``<base>+ft`` made by :func:`vitscope.finetune.finetune` (the profile's
``finetune.models``; :func:`ensure` trains the missing ones with a progress bar). Every analysis is an existing
section run on the pre-trained and the fine-tuned names together:

* CKA (Figs. 4, 8, 9, 10): :func:`vitscope.sections.cka.model_grams` / ``table_from_grams`` / ``batch_terms``
  (product :class:`vitscope.extract.GramMatrices`, kernel :func:`vitscope.kernels.cka.minibatch_cka_from_grams`);
* path efficiency (Fig. 14): the run's per-epoch checkpoints, kernel
  :func:`vitscope.kernels.path_efficiency.path_efficiency`;
* marginal information of intermediate CLS (Fig. 5): :func:`vitscope.sections.probes.compute` (multi-layer probes);
* flip invariance (Fig. 17): :func:`vitscope.sections.invariance.per_image`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from .. import finetune as ft
from ..claims.baseline import untrained_baseline
from ..claims.verdict import CONFIDENCE, N_RESAMPLES, SEED, ClaimResult, Interval, cannot_check, judge, paired_contrast
from ..kernels import path_efficiency as pe
from ..kernels.stats import bootstrap_contrast
from ..models import get_cfg, load_model
from ..profiles import Profile
from . import cka as cka_section
from .cka import ATTENTION_SITES, JOINT_EMBEDDING, MLP_SITE, RECONSTRUCTION

SECTION = "finetune"
CKA_CLAIM, LAYER_TYPE_CLAIM, PATH_CLAIM, FLIP_CLAIM, MARGINAL_CLAIM = (
    "OM-2.3a", "OM-2.3b", "OM-2.3c", "OM-2.3d", "OM-2.3e")
#: Fig. 14's layer types (the attention layers the paper reads, and the rest for context).
PATH_TYPES = ("norm1", "qkv", "proj", "norm2", "fc1", "fc2")


def protocol(profile: Profile) -> dict:
    """The profile's ``finetune`` section: ``models`` (the pre-trained models to fine-tune) and, for the paper
    recipe, ``dataset`` (the ImageNet folder to fine-tune on); with each model's recipe."""
    spec = profile.section(SECTION)
    models = list(spec.get("models") or [])
    if not models:
        raise ValueError(f"Profile {profile.name!r}: finetune.models is empty; list the models to fine-tune")
    return {"models": models, "dataset": spec.get("dataset"),
            "recipes": {m: ft.default_recipe(get_cfg(m)) for m in models}}


def ensure(profile: Profile, progress: bool = True) -> list[str]:
    """Fine-tune each of the profile's ``finetune.models`` that has no finished run; returns the ``+ft`` names."""
    return ft.ensure(protocol(profile)["models"], profile, progress=progress)


def families(models) -> dict[str, str]:
    return {m: get_cfg(m).family for m in models}


def tuned_baseline(bases) -> str | None:
    """The untrained model among ``bases`` (fine-tuned with the same recipe: the baseline of every claim here), or
    ``None``. A claim's baseline contrast is its effect minus the same effect computed on this model."""
    return untrained_baseline(list(bases))


def groups(bases) -> tuple[list[str], list[str]]:
    """(joint-embedding, reconstruction) bases, in the given order."""
    fam = families(bases)
    return [m for m in bases if fam[m] in JOINT_EMBEDDING], [m for m in bases if fam[m] in RECONSTRUCTION]


# ---------------------------------------------------------------- CKA before and after (Figs. 4, 8, 9, 10)
def grams(models, profile: Profile, *, device=None, store=None, progress=False) -> dict:
    """``{model: (per-batch Gram stacks, layer labels)}`` of the CKA section's protocol (its dataset, sites)."""
    return {m: cka_section.model_grams(m, profile, device=device, store=store, progress=progress)
            for m in dict.fromkeys(models)}


def before_after(same_depth: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Same-depth CKA of ``a`` vs ``b`` before (both pre-trained), after (both fine-tuned) and mixed, per site and
    block: columns ``site, index, PT/PT, FT/PT, PT/FT, FT/FT`` (first: ``a``'s state, second ``b``'s)."""
    def pair(x, y):
        sel = same_depth[((same_depth.model_a == x) & (same_depth.model_b == y))
                         | ((same_depth.model_a == y) & (same_depth.model_b == x))]
        return sel.set_index(["site", "index"])["cka"]

    af, bf = a + ft.SUFFIX, b + ft.SUFFIX
    out = pd.DataFrame({"PT/PT": pair(a, b), "FT/PT": pair(af, b), "PT/FT": pair(a, bf), "FT/FT": pair(af, bf)})
    return out.reset_index()


def mean_same_depth(same_depth: pd.DataFrame, a: str, b: str, site: str = "block") -> float:
    """Mean over blocks of the same-depth CKA of ``a`` and ``b`` (either order) at ``site``."""
    sel = same_depth[(same_depth.site == site) & (((same_depth.model_a == a) & (same_depth.model_b == b))
                                                  | ((same_depth.model_a == b) & (same_depth.model_b == a)))]
    return float(sel.cka.mean())


def closeness(same_depth: pd.DataFrame, bases) -> pd.DataFrame:
    """The page's question: is each fine-tuned reconstruction model closer to the pre-trained joint-embedding models
    than to its own start? Mean same-depth block CKA of ``R+ft`` against every JE base, against ``R`` and against
    the fine-tuned JE models, then of ``R`` against the JE bases. Columns ``model, vs, cka``."""
    je, rec = groups(bases)
    rows = [(r + ft.SUFFIX, other) for r in rec for other in [*je, r, *[j + ft.SUFFIX for j in je]]]
    rows += [(r, j) for r in rec for j in je]
    return pd.DataFrame([{"model": a, "vs": b, "cka": mean_same_depth(same_depth, a, b)} for a, b in rows])


def _terms_contrast(terms, parts) -> Interval:
    return cka_section._cka_contrast(terms, parts)


def cka_checks(terms: pd.DataFrame, bases, seeds=()) -> list[ClaimResult]:
    """``OM-2.3a`` and ``OM-2.3b`` on a :func:`vitscope.sections.cka.batch_terms` table of the pre-trained bases,
    their ``+ft`` names and the untrained model.

    ``OM-2.3a`` per (reconstruction R, joint-embedding J): mean same-depth block CKA of R+ft vs J minus R vs J
    (expected > 0: fine-tuning brings R to J). A second row asks the page's question: R+ft vs J minus R+ft vs R
    (closer to J than to its own start?). Beyond the baseline, for both: the same contrast with the untrained model
    U (fine-tuned with the same recipe, U+ft) in place of R, subtracted.
    ``OM-2.3b`` per (J, R): the rise of same-depth CKA from (J, R) to (J+ft, R+ft) at LayerNorm-before-attention and
    qkv minus its rise at fc1 (expected > 0: the attention and normalisation layers gain most).
    """
    je, rec = groups(bases)
    base = tuned_baseline(bases)
    out = []
    if not je or not rec:
        why = "the profile's finetune.models lack a joint-embedding or a reconstruction model"
        return [cannot_check(CKA_CLAIM, "reconstruction (FT) vs joint-embedding", why),
                cannot_check(LAYER_TYPE_CLAIM, "joint-embedding vs reconstruction", why)]
    blocks = ("block",)
    for r in rec:
        for j in je:
            rf, bf = r + ft.SUFFIX, (base or "") + ft.SUFFIX
            toward = [(rf, j, blocks, 1.0), (r, j, blocks, -1.0)]
            beyond = _terms_contrast(terms, toward + [(bf, j, blocks, -1.0), (base, j, blocks, 1.0)]) if base else None
            out.append(judge(CKA_CLAIM, f"{rf} vs {j}", f"same-depth block CKA: {rf} vs {j} minus {r} vs {j}",
                             _terms_contrast(terms, toward), beyond, 1, base))
            closer = [(rf, j, blocks, 1.0), (rf, r, blocks, -1.0)]
            beyond = _terms_contrast(terms, closer + [(bf, j, blocks, -1.0), (bf, base, blocks, 1.0)]) if base else None
            out.append(judge(CKA_CLAIM, f"{rf}: {j} or {r}?", f"same-depth block CKA: {rf} vs {j} minus {rf} vs {r}",
                             _terms_contrast(terms, closer), beyond, 1, base))
    if not {MLP_SITE, *ATTENTION_SITES} <= set(terms.site):
        out.append(cannot_check(LAYER_TYPE_CLAIM, "joint-embedding vs reconstruction",
                                f"the profile's CKA sites lack one of {MLP_SITE}, {', '.join(ATTENTION_SITES)}"))
        return out
    def rise(j, r, sign=1.0):
        jf, rf = j + ft.SUFFIX, r + ft.SUFFIX
        return [(jf, rf, ATTENTION_SITES, sign), (j, r, ATTENTION_SITES, -sign),
                (jf, rf, (MLP_SITE,), -sign), (j, r, (MLP_SITE,), sign)]

    tuned_base = tuned_baseline(bases)
    for j in je:
        for r in rec:
            beyond = _terms_contrast(terms, rise(j, r) + rise(j, tuned_base, -1.0)) if tuned_base else None
            out.append(judge(LAYER_TYPE_CLAIM, f"{j} vs {r}", "rise of same-depth CKA after fine-tuning both, "
                             f"{' and '.join(ATTENTION_SITES)} minus {MLP_SITE}", _terms_contrast(terms, rise(j, r)),
                             beyond, 1, tuned_base))
    return out


# ---------------------------------------------------------------- path efficiency (Fig. 14)
def trajectory(base: str) -> list[dict]:
    """[θ_PT, θ_1, ..., θ_E]: the pre-trained backbone and every epoch's, as float32 state dicts."""
    pt = {k: v.float() for k, v in load_model(base).state_dict().items()}
    return [pt] + [load_file(str(f)) for f in ft.trajectory_files(base)]


def path_table(bases) -> pd.DataFrame:
    """Path efficiency per model, layer type and block: columns ``model, type, block, efficiency, displacement,
    path_length``; ``block`` 0 is the whole layer type (every block's parameters together)."""
    rows = []
    for m in bases:
        thetas = trajectory(m)
        steps = pe.step_norms(thetas)
        for grouping, block_of in ((pe.group_by_type, lambda g: 0),
                                   (pe.group_by_type_and_block, lambda g: int(g.split("@")[1]) if "@" in g else 0)):
            for g, r in pe.path_efficiency(thetas[0], thetas[-1], steps, group=grouping).items():
                kind = g.split("@")[0]
                if kind in PATH_TYPES and (grouping is pe.group_by_type or "@" in g):
                    rows.append({"model": m, "type": kind, "block": block_of(g), **r})
    return pd.DataFrame(rows)


def path_check(table: pd.DataFrame, layer_type: str = "qkv") -> list[ClaimResult]:
    """``OM-2.3c``: per (reconstruction R, joint-embedding J), the path efficiency of R's ``layer_type`` minus J's,
    mean over blocks (expected > 0), bootstrapped over blocks (paired: the same blocks of both models). Beyond the
    baseline: R's efficiency minus the fine-tuned untrained model's. One fine-tuning seed per model: no seed floor."""
    bases = list(dict.fromkeys(table.model))
    je, rec = groups(bases)
    if not je or not rec:
        return [cannot_check(PATH_CLAIM, "reconstruction minus joint-embedding", "the profile's finetune.models lack "
                             "a joint-embedding or a reconstruction model")]
    per_block = table[(table.type == layer_type) & (table.block > 0)]
    base = tuned_baseline(bases)

    def contrast(weights: dict) -> Interval:
        v = torch.tensor(np.stack([per_block[per_block.model == m].sort_values("block").efficiency.to_numpy()
                                   for m in weights]))
        res = bootstrap_contrast(v, torch.tensor(list(weights.values()), dtype=torch.float64),
                                 n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
        return Interval.from_bootstrap(res, "blocks")

    out = []
    for r in rec:
        for j in je:
            beyond = contrast({r: 1.0, base: -1.0}) if base else None
            out.append(judge(PATH_CLAIM, f"{r} minus {j}", f"path efficiency of {layer_type} (mean over blocks)",
                             contrast({r: 1.0, j: -1.0}), beyond, 1, base))
    return out


# ---------------------------------------------------------------- flip invariance (Fig. 17)
def flip_table(bases, profile: Profile, **kw) -> pd.DataFrame:
    """Per-image invariance index (:func:`vitscope.sections.invariance.per_image`) of every base and its ``+ft``
    name."""
    from .invariance import per_image

    names = dict.fromkeys(x for m in bases for x in (m, m + ft.SUFFIX))
    return pd.concat([per_image(m, profile, **kw) for m in names], ignore_index=True)


def flip_summary(per_image_df: pd.DataFrame, augmentation: str = "hflip", pooling: str = "cls") -> pd.DataFrame:
    """Mean invariance index per model and block for one augmentation and pooling, in the columns
    :func:`vitscope.plots.knn.invariance_by_block` reads (``model, block, index, augmentation, pooling``)."""
    sel = per_image_df[(per_image_df.augmentation == augmentation) & (per_image_df.pooling == pooling)]
    out = sel.groupby(["model", "block"], sort=False)["index"].mean().reset_index()
    return out.assign(augmentation=augmentation, pooling=pooling)


def flip_check(per_image_df: pd.DataFrame, bases) -> list[ClaimResult]:
    """``OM-2.3d``: per reconstruction base R, the last block's horizontal-flip invariance index (CLS) of R+ft minus
    R's (expected > 0), bootstrapped over images; beyond the baseline: that rise minus the untrained model's rise
    under the same fine-tuning."""
    from .invariance import _last

    _, rec = groups(bases)
    if not rec:
        return [cannot_check(FLIP_CLAIM, "reconstruction (FT) minus (PT)", "no reconstruction model is fine-tuned")]
    if "hflip" not in set(per_image_df.augmentation):
        return [cannot_check(FLIP_CLAIM, "reconstruction (FT) minus (PT)", "the invariance section lacks hflip")]
    names = list(dict.fromkeys(per_image_df.model))
    base = tuned_baseline(bases)
    last = {m: _last(per_image_df, m, "cls").numpy() for m in names}
    out = []
    for r in rec:
        rf = r + ft.SUFFIX
        w = {rf: 1.0, r: -1.0}
        beyond = paired_contrast(last, {**w, base + ft.SUFFIX: -1.0, base: 1.0}) if base else None
        out.append(judge(FLIP_CLAIM, f"{rf} minus {r}", "last-block flip-invariance index (CLS)",
                         paired_contrast(last, w), beyond, 1, base))
    return out


# ---------------------------------------------------------------- marginal information (Fig. 5)
def probe_results(bases, profile: Profile, **kw) -> dict:
    """:func:`vitscope.sections.probes.compute` (multi-layer probes included) on the reconstruction bases (Fig. 5 is
    about MAE) and the untrained baseline, each pre-trained and fine-tuned: the probe grids are the page's costliest
    step, so the joint-embedding models are left out."""
    from .probes import compute

    _, rec = groups(bases)
    base = tuned_baseline(bases)
    return compute([x for m in [*rec, *([base] if base else [])] for x in (m, m + ft.SUFFIX)], profile, **kw)


def marginal_table(results: dict) -> pd.DataFrame:
    """Best-k accuracy of final + intermediate CLS minus the final-CLS linear probe's, per model and block:
    columns ``model, layer, gain, linear, multi``."""
    s = results["summary"]
    lin = s[s.probe == "linear"].set_index("model")["mean"]
    multi = s[s.probe == "multi-layer"].copy()
    multi["linear"] = multi.model.map(lin)
    multi["gain"] = multi["mean"] - multi["linear"]
    return multi.rename(columns={"mean": "multi"})[["model", "layer", "gain", "linear", "multi"]]


def marginal_check(results: dict, bases) -> list[ClaimResult]:
    """``OM-2.3e``: per reconstruction base R, the multi-layer probe's mean gain over the linear probe (over
    intermediate blocks) of R minus R+ft (expected > 0: fine-tuning moves the class information into the final CLS),
    bootstrapped over test images; beyond the baseline: that drop minus the untrained model's under the same
    fine-tuning."""
    from .probes import _gain

    _, rec = groups(bases)
    if not rec:
        return [cannot_check(MARGINAL_CLAIM, "reconstruction (PT) minus (FT)", "no reconstruction model is fine-tuned")]
    base = tuned_baseline(bases)
    gain = {m: _gain(results["correct"], m, "multi-layer") for m in results["correct"]}
    out = []
    for r in rec:
        rf = r + ft.SUFFIX
        w = {r: 1.0, rf: -1.0}
        beyond = paired_contrast(gain, {**w, base: -1.0, base + ft.SUFFIX: 1.0}) if base else None
        out.append(judge(MARGINAL_CLAIM, f"{r} minus {rf}", "gain of final + intermediate CLS over the final CLS "
                         "(mean over blocks)", paired_contrast(gain, w), beyond, 1, base))
    return out


# ---------------------------------------------------------------- the checks the catalogue points at
def check_cka_claims(models, profile: Profile, *, device=None, store=None, progress=False) -> list[ClaimResult]:
    """``OM-2.3a``, ``OM-2.3b`` on the profile's ``finetune.models`` (``models`` is ignored: the pairs are fixed)."""
    if SECTION not in profile.raw:
        return [cannot_check(c, "fine-tuned models", "the profile has no finetune section")
                for c in (CKA_CLAIM, LAYER_TYPE_CLAIM)]
    bases = protocol(profile)["models"]
    tuned = ensure(profile, progress=progress)
    names = list(dict.fromkeys([*bases, *tuned]))
    terms = cka_section.batch_terms(grams(names, profile, device=device, store=store))
    return cka_checks(terms, bases)


def check_dynamics_claims(models, profile: Profile, *, device=None, store=None,
                          progress=False) -> list[ClaimResult]:
    """``OM-2.3c``, ``OM-2.3d``, ``OM-2.3e`` on the profile's ``finetune.models``."""
    if SECTION not in profile.raw:
        return [cannot_check(c, "fine-tuned models", "the profile has no finetune section")
                for c in (PATH_CLAIM, FLIP_CLAIM, MARGINAL_CLAIM)]
    bases = protocol(profile)["models"]
    ensure(profile, progress=progress)
    out = path_check(path_table(bases))
    out += flip_check(flip_table(bases, profile, device=device, store=store), bases)
    if "probes" in profile.raw:
        out += marginal_check(probe_results(bases, profile, device=device, store=store), bases)
    else:
        out.append(cannot_check(MARGINAL_CLAIM, "reconstruction (PT) minus (FT)", "the profile has no probes section"))
    return out

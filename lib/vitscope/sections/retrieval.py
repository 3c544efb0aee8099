"""Image retrieval after every block: Teaching Matters §6.1 (Fig. 9, right; App. E.2) on revisited Oxford and Paris.

Product: :class:`vitscope.extract.PooledTokens` (the CLS token of every block; the same product and cache as the
k-NN page), extracted once on each benchmark's database and once on its queries (two datasets of
:mod:`vitscope.data.revisitop`). Kernels: :func:`vitscope.kernels.retrieval.cosine_similarity` (L2-normalised CLS
features) and :func:`~vitscope.kernels.retrieval.query_average_precisions` (revisitop's AP with junk removed, per
setup Easy / Medium / Hard); :func:`vitscope.kernels.clustering.noise_features` for the paper's Gaussian-noise
random baseline; the claims use :func:`vitscope.claims.verdict.judge_contrast` (bootstrap over queries).

Profile section ``retrieval``: ``datasets`` (profile dataset keys; each key is the revisitop benchmark name, e.g.
``roxford5k``, and its entry's ``manifest`` is ``revisitop``), ``crop_queries`` (default true: the official protocol
crops each query to its box; false is Teaching Matters' setting) and ``setups`` (default easy, medium, hard).
Images go through the model's own eval transform (resize the short side, centre crop), as on every other page.
Features are block outputs, before the final LayerNorm.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, group_weights, judge_contrast, judge_depth_contrast
from ..data import eval_transform, transform_key
from ..data.manifest import load_fetch_spec
from ..data.revisitop import GroundTruth, load_ground_truth, revisitop_database, revisitop_queries
from ..data.twins.revisitop import write_revisitop_twin
from ..devices import resolve_device
from ..extract import FeatureStore, PooledTokens, extract
from ..kernels.clustering import noise_features
from ..kernels.retrieval import SETUP_GROUPS, SETUPS, cosine_similarity, query_average_precisions
from ..models import get_cfg
from ..profiles import Profile
from .common import load_for_analysis

SECTION = "retrieval"
#: The setup of the paper's Fig. 9 (right) and Table 1, and the benchmark its claims are read on.
REPORTED_SETUP = "medium"
CLAIM_DATASET = "roxford5k"
SETUP_LETTERS = {"easy": "E", "medium": "M", "hard": "H"}
#: Seed of the Gaussian noise features (the random-chance baseline).
NOISE_SEED = 0


def protocol(profile: Profile) -> dict:
    """The profile's ``retrieval`` section with defaults: ``datasets, crop_queries, setups``."""
    spec = profile.section(SECTION)
    datasets = spec.get("datasets")
    if not datasets or isinstance(datasets, str):
        raise ValueError(f"Profile {profile.name!r}: retrieval.datasets must list dataset keys (e.g. [roxford5k, "
                         f"rparis6k]); got {datasets!r}")
    setups = tuple(spec.get("setups", SETUPS))
    unknown = [s for s in setups if s not in SETUPS]
    if unknown or not setups:
        raise ValueError(f"Profile {profile.name!r}: retrieval.setups {list(setups)} must be among {list(SETUPS)}")
    crop = spec.get("crop_queries", True)
    if not isinstance(crop, bool):
        raise ValueError(f"Profile {profile.name!r}: retrieval.crop_queries must be true or false; got {crop!r}")
    return {"datasets": tuple(datasets), "crop_queries": crop, "setups": setups}


def benchmark(profile: Profile, dataset: str) -> tuple:
    """``(root, ground truth)`` of a profile's revisitop dataset; writes its synthetic twin first if due.

    The dataset key is the benchmark name (``gnd_<key>.pkl``); its ``synthetic`` mapping, if any, holds keyword
    arguments of :func:`vitscope.data.twins.revisitop.write_revisitop_twin`."""
    spec = profile.dataset_spec(dataset, named_by="retrieval.datasets")
    fmt = load_fetch_spec(spec["manifest"]).format
    if fmt != "revisitop":
        raise ValueError(f"Profile {profile.name!r}: dataset {dataset!r} uses manifest {spec['manifest']!r} "
                         f"(format {fmt!r}); retrieval needs a revisitop dataset (manifest: revisitop).")
    root = profile.dataset_root(dataset)
    if profile.is_synthetic(dataset):
        write_revisitop_twin(root, dataset, **(spec["synthetic"] or {}))
    return root, load_ground_truth(root, dataset)


def _cls(model, ident, data, transform_id, store, device, progress) -> torch.Tensor:
    out = extract(model, ident, data, {"pooled": PooledTokens()}, transform_id=transform_id,
                  store=store, device=device, progress=progress)
    back = torch.argsort(out["_meta"]["order"])              # extraction order -> ground-truth order
    return out["pooled"]["cls"][back]


def cls_features(model: str, profile: Profile, dataset: str, *, weights=None, device=None, store=None,
                 progress: bool = False) -> dict:
    """CLS tokens of every block: ``{"database": [N, L, D], "queries": [Q, L, D], "truth": GroundTruth}``.

    Two cached extractions of :class:`~vitscope.extract.PooledTokens`; the queries' key records their crop."""
    device = resolve_device(device or profile.device)
    net, cfg, ident = load_for_analysis(model, weights, device)
    root, truth = benchmark(profile, dataset)
    crop = protocol(profile)["crop_queries"]
    transform, transform_id = eval_transform(cfg.preprocess), transform_key(cfg.preprocess)
    store = store or FeatureStore()
    database = revisitop_database(root, dataset, transform, ground_truth=truth)
    queries = revisitop_queries(root, dataset, transform, crop=crop, ground_truth=truth)
    query_id = {**transform_id, "query_crop": f"bbx {truth.digest()}" if crop else "none"}
    return {"database": _cls(net, ident, database, transform_id, store, device, progress),
            "queries": _cls(net, ident, queries, query_id, store, device, progress), "truth": truth}


def block_aps(queries: torch.Tensor, database: torch.Tensor, truth: GroundTruth, setups) -> dict:
    """``{(setup, block): [Q] AP}`` (1-based blocks) for CLS features [Q, L, D] and [N, L, D]; NaN: no positive."""
    return {(setup, block + 1): query_average_precisions(cosine_similarity(queries[:, block], database[:, block]),
                                                         truth.gnd, setup)
            for block in range(queries.shape[1]) for setup in setups}


def noise_aps(truth: GroundTruth, dim: int, setups, seed: int = NOISE_SEED) -> dict:
    """``{setup: [Q] AP}`` of the same protocol on Gaussian noise features of dimension ``dim`` (TM §6)."""
    n_db = len(truth.imlist)
    noise = noise_features(n_db + len(truth.qimlist), dim, seed=seed)
    sim = cosine_similarity(noise[n_db:], noise[:n_db])
    return {setup: query_average_precisions(sim, truth.gnd, setup) for setup in setups}


def per_query(model: str, profile: Profile, *, weights=None, device=None, store=None,
              progress: bool = False) -> pd.DataFrame:
    """AP of every query per benchmark, setup and block. Columns ``model, dataset, setup, block, query, ap,
    noise`` (the query's AP on Gaussian noise features); queries without a positive in a setup are left out."""
    p = protocol(profile)
    frames = []
    for dataset in p["datasets"]:
        feats = cls_features(model, profile, dataset, weights=weights, device=device, store=store,
                             progress=progress)
        noise = noise_aps(feats["truth"], feats["database"].shape[-1], p["setups"])
        for (setup, block), aps in block_aps(feats["queries"], feats["database"], feats["truth"],
                                             p["setups"]).items():
            frames.append(pd.DataFrame({"model": model, "dataset": dataset, "setup": setup, "block": block,
                                        "query": range(len(aps)), "ap": aps.numpy(),
                                        "noise": noise[setup].numpy()}).dropna(subset=["ap"]))
    return pd.concat(frames, ignore_index=True)


def summarise(per_query_df: pd.DataFrame) -> pd.DataFrame:
    """mAP per model, benchmark, setup and block from :func:`per_query`'s table. Columns ``model, dataset, setup,
    block, map, n_queries, noise`` (the mAP of Gaussian noise features)."""
    keys = ["model", "dataset", "setup", "block"]
    out = per_query_df.groupby(keys, sort=False).agg(map=("ap", "mean"), n_queries=("ap", "size"),
                                                     noise=("noise", "mean"))
    return out.reset_index()


def compute(model: str, profile: Profile, *, weights=None, device=None, store=None,
            progress: bool = False) -> pd.DataFrame:
    """Retrieval mAP of ``model`` after every block on each benchmark and setup (see :func:`summarise`)."""
    return summarise(per_query(model, profile, weights=weights, device=device, store=store, progress=progress))


def best_blocks(table: pd.DataFrame, setup: str = REPORTED_SETUP) -> pd.DataFrame:
    """Per model and benchmark at ``setup``: the best block, its mAP, the last block's mAP and the noise level
    (the shape of :func:`vitscope.sections.knn.best_blocks`, with ``dataset`` in place of ``pooling``)."""
    rows = []
    for (model, dataset), g in table[table.setup == setup].groupby(["model", "dataset"], sort=False):
        g = g.sort_values("block")
        best = g.loc[g["map"].idxmax()]
        rows.append({"model": model, "dataset": dataset, "setup": setup, "best_block": int(best.block),
                     "best": float(best["map"]), "last_block": int(g.block.max()), "last": float(g["map"].iloc[-1]),
                     "noise": float(g.noise.iloc[0])})
    return pd.DataFrame(rows, columns=["model", "dataset", "setup", "best_block", "best", "last_block", "last",
                                       "noise"])


def best_per_model(table: pd.DataFrame, dataset: str = CLAIM_DATASET, setup: str = REPORTED_SETUP) -> pd.DataFrame:
    """Table 1's retrieval column: per model, the best block and its mAP on ``dataset`` at ``setup`` (ROxford5k
    Medium by default), with the last block's mAP and the noise level. Columns ``model, best_block, best,
    last_block, last, noise``; one row per model, in table order."""
    best = best_blocks(table, setup)
    sel = best[best.dataset == dataset]
    if sel.empty:
        raise ValueError(f"no retrieval rows for dataset {dataset!r} at setup {setup!r}; the table has "
                         f"{sorted(set(table.dataset))} x {sorted(set(table.setup))}")
    return sel.drop(columns=["dataset", "setup"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- claims

def _values(df: pd.DataFrame, model: str, block: int) -> torch.Tensor:
    sel = df[df.model == model]
    sel = sel[sel.block == (sel.block.max() if block == -1 else block)].sort_values("query")
    return torch.tensor(sel.ap.to_numpy(), dtype=torch.float64)


def claim_slice(per_query_df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows the claims read: the paper's benchmark (ROxford5k, else the first) at the Medium setup."""
    datasets = list(dict.fromkeys(per_query_df.dataset))
    dataset = CLAIM_DATASET if CLAIM_DATASET in datasets else datasets[0]
    sel = per_query_df[(per_query_df.dataset == dataset) & (per_query_df.setup == REPORTED_SETUP)]
    return sel, dataset


def _one_of(group: str) -> str:
    """A missing group as the reason names it: "an image-text model", "any other trained model"."""
    if group == "the other trained models":
        return "any other trained model"
    return f"{'an' if group[0] in 'aeiou' else 'a'} {group} model"


def tm_check(per_query_df: pd.DataFrame, seeds=()) -> list[ClaimResult]:
    """TM 6.1 retrieval (``TM-6.1b``) and the retrieval half of Table 1's ``TM-T1a``, on per-query AP (CLS,
    Medium setup, ROxford5k or the first benchmark).

    TM-6.1b, at the last block (expected > 0 each): the supervised model minus the other trained models' mean; the
    image-text model minus the joint-embedding models' mean (DINO, MoCo); the joint-embedding models' mean minus
    the reconstruction models' mean (MAE, BEiT). Each effect's baseline contrast puts the untrained model in place
    of the side the paper ranks lower. TM-T1a: per trained model, the last block minus its best earlier block
    (expected >= 0; *holds* needs > 0), beyond the untrained model's same contrast.
    """
    sel, dataset = claim_slice(per_query_df)
    if sel.empty:
        return [cannot_check("TM-6.1b", "retrieval", f"no {REPORTED_SETUP!r} rows in the retrieval table")]
    names = list(dict.fromkeys(sel.model))
    family = {m: get_cfg(m).family for m in names}
    trained = [m for m in names if family[m] != "random"]
    base = untrained_baseline(names)
    last = {m: _values(sel, m, -1) for m in names}
    seeds = [s for s in seeds if s in last]
    seed_last = torch.stack([last[s].mean() for s in seeds]) if len(seeds) >= 2 else None
    measure = f"last-block AP ({dataset}, {REPORTED_SETUP}, CLS)"
    groups = {"supervised": [m for m in trained if family[m] == "supervised"],
              "image-text": [m for m in trained if family[m] == "image-text"],
              "joint-embedding": [m for m in trained if family[m] in ("self-distillation", "contrastive")],
              "reconstruction": [m for m in trained if family[m] in ("masked-reconstruction",
                                                                     "masked-token-prediction")]}
    groups["the other trained models"] = [m for m in trained if m not in groups["supervised"]]
    out = []
    for high, low in (("supervised", "the other trained models"), ("image-text", "joint-embedding"),
                      ("joint-embedding", "reconstruction")):
        subject = f"{high} minus {low}"
        if not groups[high] or not groups[low]:
            out.append(cannot_check("TM-6.1b", subject, f"the profile lacks {_one_of(high)} or {_one_of(low)}"))
            continue
        w, beyond = group_weights(groups[high], groups[low], base)
        out.append(judge_contrast("TM-6.1b", subject, measure, last, w, beyond, 1, base,
                                  seed_last if len(seeds) >= 2 else None, seeds, unit="queries"))
    def last_and_best_earlier(m):
        ap = sel[sel.model == m].groupby("block").ap.mean()
        return int(ap.index.max()), int(ap.drop(ap.index.max()).idxmax())

    for m in trained:
        out.append(judge_depth_contrast(
            "TM-T1a", f"retrieval ({dataset}, {REPORTED_SETUP}), {m}",
            f"last block minus its best earlier block ({last_and_best_earlier(m)[1]})",
            lambda model, block: _values(sel, model, block), last_and_best_earlier, m, base, seeds, unit="queries"))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """TM 6.1 retrieval's claims on ``models`` (default: the profile's) and its untrained seeds; see
    :func:`tm_check`."""
    seeds = noise_seeds(profile)
    weights = weights or {}
    frames = [per_query(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
              for m in dict.fromkeys(list(models or profile.models) + seeds)]
    return tm_check(pd.concat(frames, ignore_index=True), seeds)


def benchmarks_table(profile: Profile) -> pd.DataFrame:
    """What each benchmark of the protocol holds: columns ``dataset, data, database, queries`` and the mean number
    of positives and junk images per query in each setup (``easy +``, ``easy junk``, ...)."""
    p = protocol(profile)
    rows = []
    for dataset in p["datasets"]:
        _, truth = benchmark(profile, dataset)
        row = {"dataset": dataset, "data": "synthetic twin" if profile.is_synthetic(dataset) else "real",
               "database": len(truth.imlist), "queries": len(truth.qimlist)}
        for setup in p["setups"]:
            for kind, groups in zip(("+", "junk"), SETUP_GROUPS[setup]):
                row[f"{setup} {kind}"] = sum(len(g[k]) for g in truth.gnd for k in groups) / len(truth.gnd)
        rows.append(row)
    return pd.DataFrame(rows)

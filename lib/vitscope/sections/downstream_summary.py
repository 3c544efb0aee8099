"""Teaching Matters §6.3, Table 1: the best value and best block of every model on the four downstream tasks, side by
side with the paper's numbers, and the paper's two readings of the table checked in code.

Nothing is computed here that a task section computes: each column comes from that section's ``compute`` (which
reads the cached extractions of the per-model pages) and its Table 1 helper —
:func:`vitscope.sections.knn.best_blocks` (CLS, the reported k), :func:`vitscope.sections.retrieval.best_per_model`,
:func:`vitscope.sections.propagation.best_per_model` and :func:`vitscope.sections.correspondence.best_per_model`.
The claims reuse the sections' own Table 1 checks (``TM-T1a``: :func:`vitscope.sections.knn.tm_check`,
:func:`vitscope.sections.retrieval.tm_check`; ``TM-T1b``: :func:`vitscope.sections.correspondence.check`,
:func:`vitscope.sections.propagation.tm_check`) and add, per claim, a headline row that counts their per-model
verdicts, and ``TM-T1c`` ("no model is best at every task"), a paired bootstrap per model on the section's per-image
(per-query, per-pair, per-object) values, whose means are the tasks' metrics.

A task whose section is missing from the profile, or whose module does not offer what the table needs yet, is
reported as "not computed on this profile" and picked up as soon as it exists.

Profile section ``table1``: ``models`` (default: the profile's), ``retrieval_dataset`` and ``retrieval_setup`` (the
paper's ROxford5k, Medium), ``alpha`` (PCK@0.1).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, ClaimResult, cannot_check
from ..profiles import Profile

SECTION = "table1"
DEFAULTS = {"models": None, "retrieval_dataset": "roxford5k", "retrieval_setup": "medium", "alpha": 0.1}
NOT_COMPUTED = "not computed on this profile"
#: The paper's models have 12 blocks; its "layer" is our 1-based block.
PAPER_DEPTH = 12
#: Row of our table holding each task's Gaussian-noise reference, which the paper's "Random" row reports.
NOISE_ROW = "Gaussian noise"

# Table 1 of Teaching Matters, transcribed: {row: (registry model, {task: (value, best layer)})}; the paper gives
# k-NN and PCK in %, mAP and J&F as fractions, and no layer for Random (Gaussian noise features, TM §6).
PAPER_TABLE1: dict[str, tuple[str | None, dict[str, tuple[float, int | None]]]] = {
    "FS": ("fs", {"knn": (83.79, 12), "retrieval": (0.45, 12), "davis": (0.59, 8), "keypoints": (28.56, 9)}),
    "CLIP": ("clip", {"knn": (75.75, 12), "retrieval": (0.40, 12), "davis": (0.60, 9), "keypoints": (30.70, 8)}),
    "DINO": ("dino", {"knn": (76.06, 12), "retrieval": (0.37, 12), "davis": (0.60, 12), "keypoints": (28.28, 9)}),
    "MoCo": ("mocov3", {"knn": (71.59, 12), "retrieval": (0.31, 12), "davis": (0.61, 11), "keypoints": (25.85, 9)}),
    "MAE": ("mae", {"knn": (45.19, 12), "retrieval": (0.15, 10), "davis": (0.54, 12), "keypoints": (22.74, 11)}),
    "BEiT": ("beit", {"knn": (26.84, 8), "retrieval": (0.14, 8), "davis": (0.58, 9), "keypoints": (24.11, 8)}),
    "Random": (None, {"knn": (0.10, None), "retrieval": (0.02, None), "davis": (0.06, None),
                      "keypoints": (1.32, None)}),
}


def _section(name: str):
    return importlib.import_module(f"vitscope.sections.{name}")


# ------------------------------------------------------------------------------------------ per-task adapters
# Each task: compute(model, profile, p, **kw) -> the section's per-block table; best(table, profile, p) -> one row
# per model: model, best_block, best, last_block, last, noise (the section's units); units(model, profile, p, **kw)
# -> the section's per-image table; values(units) -> model, block, unit, value (per image; the metric is the mean);
# check(units, seeds, p) -> the section's claim rows; dataset(profile, p) -> the profile dataset key.

def _knn_best(table, profile, p):
    knn = _section("knn")
    best = knn.best_blocks(table, knn.protocol(profile)["k"])
    return best[best.pooling == "cls"].drop(columns="pooling").reset_index(drop=True)


def _knn_values(units):
    sel = units[units.pooling == "cls"]
    return pd.DataFrame({"model": sel.model, "block": sel.block, "unit": sel.image, "value": sel.correct})


def _retrieval_units(model, profile, p, **kw):
    pq = _section("retrieval").per_query(model, profile, **kw)
    return pq[(pq.dataset == p["retrieval_dataset"]) & (pq.setup == p["retrieval_setup"])]


def _retrieval_values(units):
    return pd.DataFrame({"model": units.model, "block": units.block, "unit": units["query"], "value": units.ap})


def _keypoint_units(model, profile, p, **kw):
    pp = _section("correspondence").per_pair(model, profile, **kw)
    return pp[(pp.model != "noise") & np.isclose(pp.alpha, p["alpha"])]


def _keypoint_values(units):
    from ..kernels.correspondence import pair_values
    frames = []
    for (model, block), g in units.groupby(["model", "block"], sort=False):
        g = g.sort_values("pair")
        frames.append(pd.DataFrame({"model": model, "block": block, "unit": g.pair.to_numpy(),
                                    "value": pair_values(g.correct.to_numpy(), g.total.to_numpy(),
                                                         g.category.tolist()).numpy()}))
    return pd.concat(frames, ignore_index=True)


def _davis_best(table, profile, p):
    """:func:`vitscope.sections.propagation.best_per_model`, in the shape of the other tasks' (its ``jf`` and
    ``last_jf`` are ``best`` and ``last``; it has no noise reference)."""
    best = _section("propagation").best_per_model(table).rename(columns={"jf": "best", "last_jf": "last"})
    if "noise" not in best:
        best["noise"] = float("nan")
    return best[["model", "best_block", "best", "last_block", "last", "noise"]]


def _davis_values(units):
    unit = units.video.astype(str) + "/" + units.object.astype(str)
    return pd.DataFrame({"model": units.model, "block": units.block, "unit": unit, "value": units.jf})


@dataclass(frozen=True)
class Task:
    """One column of Table 1: its section (profile key and module), metric and unit, and how to read it."""

    key: str                 # the profile section (and Table 1 column) key
    name: str                # the column's name on the page
    module: str              # vitscope.sections.<module>
    kind: str                # "global" (CLS token) or "local" (spatial tokens)
    metric: str
    unit: str                # the paper's unit: "%" or "fraction"
    scale: float             # our value * scale is in the paper's unit
    needs: tuple[str, ...]   # what the module must offer for this task to be computed
    compute: Callable
    best: Callable
    units: Callable
    values: Callable
    check: Callable
    claim: str               # the Table 1 claim this task's section checks
    dataset: Callable
    differs: Callable = lambda profile, p: None   # how the section's protocol differs from the paper's (None: not)

    @property
    def header(self) -> str:
        return f"{self.name} {self.metric} ({self.unit})"


TASKS: dict[str, Task] = {t.key: t for t in (
    Task("knn", "ImageNet k-NN", "knn", "global", "top-1", "%", 100.0,
         ("compute", "best_blocks", "per_query", "tm_check"),
         lambda m, profile, p, **kw: _section("knn").compute(m, profile, **kw), _knn_best,
         lambda m, profile, p, **kw: _section("knn").per_query(m, profile, **kw), _knn_values,
         lambda units, seeds, p: _section("knn").tm_check(units, seeds), "TM-T1a",
         lambda profile, p: _section("knn").protocol(profile)["dataset"],
         lambda profile, p: "k-fold cross-validation on the profile's ImageNet subset, not ImageNet-1k val against "
                            "train (the k-NN section has no separate query set yet)"),
    Task("retrieval", "ROxford5k (M)", "retrieval", "global", "mAP", "fraction", 1.0,
         ("compute", "best_per_model", "per_query", "tm_check"),
         lambda m, profile, p, **kw: _section("retrieval").compute(m, profile, **kw),
         lambda table, profile, p: _section("retrieval").best_per_model(table, p["retrieval_dataset"],
                                                                         p["retrieval_setup"]),
         _retrieval_units, _retrieval_values,
         lambda units, seeds, p: _section("retrieval").tm_check(units, seeds), "TM-T1a",
         lambda profile, p: p["retrieval_dataset"],
         lambda profile, p: ("queries cropped to their box (the official protocol; Teaching Matters does not crop)"
                             if _section("retrieval").protocol(profile)["crop_queries"] else None)),
    Task("davis", "DAVIS", "propagation", "local", "J&F mean", "fraction", 1.0,
         ("compute", "best_per_model", "per_object", "tm_check"),
         lambda m, profile, p, **kw: _section("propagation").compute(m, profile, **kw), _davis_best,
         lambda m, profile, p, **kw: _section("propagation").per_object(m, profile, **kw), _davis_values,
         lambda units, seeds, p: _section("propagation").tm_check(units, seeds), "TM-T1b",
         lambda profile, p: _section("propagation").protocol(profile)["dataset"]),
    Task("keypoints", "SPair-71k", "correspondence", "local", "PCK@0.1", "%", 100.0,
         ("compute", "best_per_model", "per_pair", "check"),
         lambda m, profile, p, **kw: _section("correspondence").compute(m, profile, **kw),
         lambda table, profile, p: _section("correspondence").best_per_model(table, p["alpha"]),
         _keypoint_units, _keypoint_values,
         lambda units, seeds, p: _section("correspondence").check(units, seeds, p["alpha"]), "TM-T1b",
         lambda profile, p: _section("correspondence").protocol(profile)["dataset"]),
)}


def protocol(profile: Profile) -> dict:
    """The profile's ``table1`` section with defaults: ``models, retrieval_dataset, retrieval_setup, alpha``."""
    spec = dict(profile.raw.get(SECTION) or {})
    p = {**DEFAULTS, **spec}
    p["alpha"] = float(p["alpha"])
    if p["models"] is not None and (isinstance(p["models"], str) or not p["models"]):
        raise ValueError(f"Profile {profile.name!r}: {SECTION}.models must list registry names (or be null for "
                         f"the profile's models); got {p['models']!r}")
    retrieval = profile.raw.get("retrieval") or {}
    if retrieval and p["retrieval_dataset"] not in (retrieval.get("datasets") or ()):
        raise ValueError(f"Profile {profile.name!r}: {SECTION}.retrieval_dataset={p['retrieval_dataset']!r} is not "
                         f"among retrieval.datasets {retrieval.get('datasets')}; name one of them")
    return p


def models_of(profile: Profile, models=None) -> list[str]:
    """``models``, else the ``table1`` section's, else the profile's."""
    return list(models or protocol(profile)["models"] or profile.models)


def missing(task: Task, profile: Profile) -> str | None:
    """Why ``task`` cannot be computed on ``profile`` (``None``: it can): the profile lacks its section, or its
    section module lacks a function the table needs (e.g. while it is being written)."""
    if task.key not in profile.raw:
        return f"the profile has no {task.key!r} section"
    try:
        module = _section(task.module)
    except ImportError as err:
        return f"vitscope.sections.{task.module} cannot be imported ({err})"
    lacking = [name for name in task.needs if not callable(getattr(module, name, None))]
    if lacking:
        return f"vitscope.sections.{task.module} has no {', '.join(lacking)} yet"
    return None


# --------------------------------------------------------------------------------------------------- the table

def paper_table() -> pd.DataFrame:
    """:data:`PAPER_TABLE1` as rows ``row, model, task, value, layer`` (paper units; layer NaN for Random)."""
    return pd.DataFrame([{"row": row, "model": model, "task": task, "value": value,
                          "layer": np.nan if layer is None else layer}
                         for row, (model, cells) in PAPER_TABLE1.items() for task, (value, layer) in cells.items()])


def paper_row(model: str) -> str | None:
    """The row of Table 1 whose model has ``model``'s family (``fs`` and ``zoo-supervised`` -> ``FS``), as
    :func:`vitscope.book.reproduce.paper_counterparts` matches them; ``None`` for an untrained model or a family
    the table lacks (the table's ``Random`` row is Gaussian noise, not an untrained network)."""
    from ..models import get_cfg
    family = get_cfg(model).family
    if family == "random":
        return None
    return next((row for row, (m, _) in PAPER_TABLE1.items() if m is not None and get_cfg(m).family == family),
                None)


def best_tables(profile: Profile, models=None, *, weights=None, device=None, store=None) -> dict:
    """``{task key: per-model best table (section units) or the reason it is not computed}``."""
    p, weights = protocol(profile), weights or {}
    out = {}
    for key, task in TASKS.items():
        out[key] = missing(task, profile)
        if out[key] is None:
            table = pd.concat([task.compute(m, profile, p, weights=weights.get(m), device=device, store=store)
                               for m in models_of(profile, models)], ignore_index=True)
            out[key] = task.best(table, profile, p)
    return out


def side_by_side(bests: dict, profile: Profile, models: list[str]) -> pd.DataFrame:
    """Long table from :func:`best_tables`' result: one row per (model, task) plus a :data:`NOISE_ROW` per task.

    Columns ``model, paper_row, task, kind, metric, unit, status, best, best_block, last, last_block,
    blocks_before_last, paper, paper_layer, paper_before_last, difference, setting``. Values are in the paper's
    unit (k-NN and PCK in %, mAP and J&F as fractions); ``difference`` is ours minus the paper's; ``setting`` is
    "paper's" only for the paper's own model on real data under the paper's protocol (:attr:`Task.differs`), else
    "different setting"."""
    p = protocol(profile)
    paper = paper_table().set_index(["row", "task"])
    rows = []
    for key, task in TASKS.items():
        best = bests.get(key, NOT_COMPUTED)
        computed = isinstance(best, pd.DataFrame)
        real_data = computed and not profile.is_synthetic(task.dataset(profile, p)) and not task.differs(profile, p)
        by_model = best.set_index("model") if computed else None
        noise = float(best.noise.iloc[0]) * task.scale if computed and len(best) else np.nan
        for model in [*models, NOISE_ROW]:
            row = "Random" if model == NOISE_ROW else paper_row(model)
            ours = by_model.loc[model] if computed and model in by_model.index else None
            theirs = paper.loc[(row, key)] if row is not None else None
            r = {"model": model, "paper_row": row, "task": key, "kind": task.kind, "metric": task.metric,
                 "unit": task.unit, "status": "computed" if computed else f"{NOT_COMPUTED}: {best}",
                 "best": np.nan, "best_block": np.nan, "last": np.nan, "last_block": np.nan,
                 "blocks_before_last": np.nan,
                 "paper": np.nan if theirs is None else float(theirs.value),
                 "paper_layer": np.nan if theirs is None else theirs.layer}
            r["paper_before_last"] = PAPER_DEPTH - r["paper_layer"]
            if model == NOISE_ROW:
                r["best"] = noise
            elif ours is not None:
                r.update(best=float(ours.best) * task.scale, best_block=int(ours.best_block),
                         last=float(ours["last"]) * task.scale, last_block=int(ours.last_block),
                         blocks_before_last=int(ours.last_block) - int(ours.best_block))
            r["difference"] = r["best"] - r["paper"]
            same = real_data and (model == NOISE_ROW or (theirs is not None and model == PAPER_TABLE1[row][0]))
            r["setting"] = "paper's" if same else "different setting"
            rows.append(r)
    return pd.DataFrame(rows)


def table(profile: Profile, models=None, *, weights=None, device=None, store=None) -> pd.DataFrame:
    """Table 1 on ``profile``: per model and task, our best value and block beside the paper's (see
    :func:`side_by_side`). ``weights``: ``{model: checkpoint path}`` overrides."""
    models = models_of(profile, models)
    return side_by_side(best_tables(profile, models, weights=weights, device=device, store=store), profile, models)


def protocol_differences(profile: Profile) -> dict[str, str]:
    """``{task name: how this profile's protocol differs from the paper's}`` for the computed tasks that differ."""
    p = protocol(profile)
    return {t.name: why for t in TASKS.values() if missing(t, profile) is None and (why := t.differs(profile, p))}


def _cell(value, block, unit) -> str:
    if pd.isna(value):
        return "–"
    text = f"{value:.2f}" if unit == "%" else f"{value:.3f}"
    return text if pd.isna(block) else f"{text} ({int(block)})"


def display_table(long: pd.DataFrame) -> pd.DataFrame:
    """The page's view of :func:`side_by_side`: one row per model, per task three columns — ours "value (block)",
    the paper's "value (layer)" and the difference — with the unit in each task's header."""
    out = {}
    for key in dict.fromkeys(long.task):
        task, sel = TASKS[key], long[long.task == key].set_index("model")
        computed = (sel.status == "computed").all()
        head = task.header
        out[(head, "ours (block)")] = [_cell(r.best, r.best_block, task.unit) if computed else NOT_COMPUTED
                                       for r in sel.itertuples()]
        out[(head, "paper (layer)")] = [_cell(r.paper, r.paper_layer, task.unit) for r in sel.itertuples()]
        out[(head, "difference")] = [_cell(r.difference, np.nan, task.unit) for r in sel.itertuples()]
        index = sel.index
    frame = pd.DataFrame(out, index=index)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.index.name = "model"
    return frame


def best_block_share(long: pd.DataFrame) -> pd.DataFrame:
    """Per task: of the trained models (ours) and the paper's six, how many peak at their last block.

    Columns ``task, kind, ours_last, ours_models, paper_last, paper_models``."""
    from ..models import get_cfg
    rows = []
    for key in dict.fromkeys(long.task):
        sel = long[(long.task == key) & (long.model != NOISE_ROW)]
        ours = sel[sel.model.map(lambda m: get_cfg(m).family != "random") & sel.best_block.notna()]
        paper = paper_table()
        paper = paper[(paper.task == key) & paper.layer.notna()]
        rows.append({"task": key, "kind": TASKS[key].kind, "ours_last": int((ours.blocks_before_last == 0).sum()),
                     "ours_models": len(ours), "paper_last": int((paper.layer == PAPER_DEPTH).sum()),
                     "paper_models": len(paper)})
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------------- the claims

def _tally(claim: str, subject: str, rows: list[ClaimResult], expected_sign: str) -> ClaimResult:
    """A headline row for a claim read as "usually": it holds when more than half of the judged per-model rows hold,
    does not hold when more than half do not, is inconclusive otherwise, cannot be checked with none judged."""
    judged = [r for r in rows if r.verdict != CANNOT_CHECK]
    counts = {v: sum(r.verdict == v for r in judged) for v in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)}
    if not judged:
        return cannot_check(claim, subject, "no per-model comparison could be judged on this profile")
    if counts[HOLDS] * 2 > len(judged):
        verdict = HOLDS
    elif counts[DOES_NOT_HOLD] * 2 > len(judged):
        verdict = DOES_NOT_HOLD
    else:
        verdict = INCONCLUSIVE
    reason = (f"'usually' read as more than half of the {len(judged)} judged per-model comparisons below: "
              f"{counts[HOLDS]} hold, {counts[DOES_NOT_HOLD]} do not hold, {counts[INCONCLUSIVE]} inconclusive")
    return ClaimResult(claim, subject, verdict, reason, f"count of per-model verdicts ({expected_sign})")


def _per_model(rows: list[ClaimResult]) -> list[ClaimResult]:
    """The per-model rows of a section's check (its pooled "mean of ..." rows are left out of the count)."""
    return [r for r in rows if "mean of" not in r.subject]


def _means(values: pd.DataFrame, model: str) -> pd.Series:
    return values[values.model == model].groupby("block").value.mean()


def _at(values: pd.DataFrame, model: str, block: int) -> torch.Tensor:
    sel = values[(values.model == model) & (values.block == block)].sort_values("unit")
    return torch.tensor(sel.value.to_numpy(dtype=float), dtype=torch.float64)


def best_everywhere_check(values: dict[str, pd.DataFrame], seeds=()) -> list[ClaimResult]:
    """``TM-T1c`` ("no single model is best at every task") on per-image values ``{task: model, block, unit,
    value}`` of several models (each model read at its best block, chosen on the same images, as Table 1 does).

    Per trained model m: on the task where the best other model leads m by the largest share of the leader's value,
    the contrast (that model minus m), paired bootstrap over the task's images; expected > 0 (m is beaten somewhere).
    Its baseline contrast is the winning side minus the untrained model (the winner must owe its lead to training);
    with untrained ``seeds``, the seed floor of the contrast from the seeds' best values on that task. Headline:
    *holds* when every model's row holds, *does not hold* when some model's does not (it leads even where it leads
    least), else *inconclusive*."""
    from ..models import get_cfg
    from .knn import judge_contrast
    claim = "TM-T1c"
    tasks = {k: v for k, v in values.items() if v is not None and len(v)}
    names = list(dict.fromkeys(m for v in tasks.values() for m in v.model))
    trained = [m for m in names if get_cfg(m).family != "random" and all(m in set(v.model) for v in tasks.values())]
    base = untrained_baseline(names)
    if len(tasks) < 2 or len(trained) < 2:
        return [cannot_check(claim, "every trained model", f"needs two tasks and two trained models; this profile "
                             f"has {len(tasks)} task(s) computed and {len(trained)} trained model(s)")]
    rows = []
    for m in trained:
        gaps = {}
        for key, v in tasks.items():
            best = {o: float(_means(v, o).max()) for o in trained}
            leader = max((o for o in trained if o != m), key=best.get)
            gaps[key] = (leader, (best[leader] - best[m]) / max(abs(best[leader]), 1e-12))
        key = max(gaps, key=lambda k: gaps[k][1])
        leader, v = gaps[key][0], tasks[key]
        block = {o: int(_means(v, o).idxmax()) for o in [m, leader] + ([base] if base else []) + list(seeds)
                 if o in set(v.model)}
        slots = {o: _at(v, o, b) for o, b in block.items()}
        w = {leader: 1.0, m: -1.0}
        ahead = float(slots[leader].mean() - slots[m].mean()) >= 0
        beyond = None if base is None else ({leader: 1.0, base: -1.0} if ahead else {base: 1.0, m: -1.0})
        seed_stats = [float(slots[s].mean()) for s in seeds if s in slots]
        stats = torch.tensor(seed_stats, dtype=torch.float64) if len(seed_stats) >= 2 else None
        r = judge_contrast(claim, f"{m} beaten on {TASKS[key].name}",
                           f"{leader} (block {block[leader]}) minus {m} (block {block[m]}), {TASKS[key].metric}",
                           slots, w, beyond, 1, base, stats, seeds if stats is not None else ())
        rows.append(r)
    verdicts = [r.verdict for r in rows]
    if all(v == HOLDS for v in verdicts):
        head = (HOLDS, "every trained model is beaten on some task, beyond noise")
    elif DOES_NOT_HOLD in verdicts:
        leaders = [r.subject.split(" beaten")[0] for r in rows if r.verdict == DOES_NOT_HOLD]
        head = (DOES_NOT_HOLD, f"{', '.join(leaders)} leads even on the task where its lead is smallest")
    else:
        head = (INCONCLUSIVE, f"{verdicts.count(HOLDS)} of {len(rows)} models are beaten beyond noise; the others' "
                "comparisons are inconclusive")
    summary = ClaimResult(claim, "every trained model", head[0], head[1],
                          "per model: the best other model minus it, on the task where it trails most")
    return [summary] + rows


def check(units: dict[str, pd.DataFrame], seeds=(), p: dict | None = None) -> list[ClaimResult]:
    """TM-T1a, TM-T1b (a headline count, then the sections' per-model rows) and TM-T1c on per-image tables
    ``{task key: the section's per-image rows of several models}`` (:attr:`Task.units`; a task left out is not
    computed). ``p``: :func:`protocol`'s dict (the retrieval slice and α)."""
    p = {**DEFAULTS, **(p or {})}
    out = []
    for claim, kind, text in (("TM-T1a", "global", "last block minus the best earlier block, expected > 0"),
                              ("TM-T1b", "local", "best block before the last minus the last, expected > 0")):
        keys = [k for k, t in TASKS.items() if t.kind == kind]
        rows = [r for k in keys if k in units for r in TASKS[k].check(units[k], list(seeds), p) if r.claim == claim]
        names = " and ".join(TASKS[k].name for k in keys)
        absent = [TASKS[k].name for k in keys if k not in units]
        head = _tally(claim, f"{names}, every trained model", _per_model(rows), text)
        if absent and head.verdict != CANNOT_CHECK:
            head = ClaimResult(head.claim, head.subject, head.verdict,
                               head.reason + f"; {', '.join(absent)} {NOT_COMPUTED}", head.measure)
        out += [head] + rows
    values = {k: TASKS[k].values(u) for k, u in units.items()}
    return out + best_everywhere_check(values, list(seeds))


def units_tables(profile: Profile, models=None, *, weights=None, device=None, store=None) -> dict:
    """``{task key: per-image rows of the models and the profile's untrained seeds}`` for every computed task."""
    p, weights = protocol(profile), weights or {}
    names = list(dict.fromkeys(models_of(profile, models) + noise_seeds(profile)))
    return {key: pd.concat([task.units(m, profile, p, weights=weights.get(m), device=device, store=store)
                            for m in names], ignore_index=True)
            for key, task in TASKS.items() if missing(task, profile) is None}


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """Table 1's readings on ``models`` (default: the ``table1`` section's, else the profile's); see :func:`check`."""
    units = units_tables(profile, models, weights=weights, device=device, store=store)
    return check(units, noise_seeds(profile), protocol(profile))

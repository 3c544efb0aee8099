"""Objectives Matter §2.2 — linear, non-linear and multi-layer probes on frozen CLS tokens (Fig. 2, Table 2,
App. B.3, B.4, Table 4).

Product: :class:`vitscope.extract.PooledTokens` (per-image CLS of every block, one forward pass per model);
kernels: :func:`vitscope.kernels.probes.fit_probe_grid` (every cell of the hyper-parameter grid trained as one batched
model), :func:`vitscope.kernels.probes.best_k` (OM's mean ± std of the best 5) and
:func:`vitscope.kernels.stats.bootstrap_contrast` (the claims, paired over test images).

Three probe families per model, each a full grid:

* ``linear``: BatchNorm (no affine) + Linear on the final CLS;
* ``non-linear``: ``depth`` blocks of Linear + BatchNorm + ReLU before the Linear, on the final CLS;
* ``multi-layer``: the linear probe on the final CLS concatenated with the CLS of one intermediate block
  (``layer``), one grid per block, all trained together (the marginal information of that block).

The split is per class and deterministic: in the dataset's (class-major, sorted) order, the last
``test_fraction`` of each class's images are the test images, the rest train. Best cells are chosen on the test
accuracy, as the paper reports its best 5 on ImageNet val.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..claims.baseline import untrained_baseline
from ..claims.verdict import CONFIDENCE, N_RESAMPLES, SEED, ClaimResult, Interval, cannot_check, judge
from ..data import transform_key
from ..devices import resolve_device
from ..extract import FeatureStore, PooledTokens, extract
from ..kernels import probes as probes_k
from ..kernels.stats import bootstrap_contrast
from ..profiles import Profile
from .cka import JOINT_EMBEDDING, RECONSTRUCTION
from .common import load_for_analysis

KINDS = ("linear", "non-linear", "multi-layer")


def protocol(profile: Profile) -> dict:
    """The profile's ``probes`` section with its defaults filled in (what the page states)."""
    spec = profile.section("probes")
    grid = {k: tuple(spec.get(k, probes_k.TABLE4[k])) for k in probes_k.TABLE4}
    return {"dataset": spec["dataset"], "models": spec.get("models"), "test_fraction": spec.get("test_fraction", 0.2),
            "optimizer": spec.get("optimizer", "lars"),
            "batch_size": spec.get("batch_size", probes_k.TABLE4_BATCH_SIZE), **grid,
            "depths": tuple(spec.get("depths", (1, 2, 3))), "best_k": spec.get("best_k", 5), "seed": 0}


def split(labels: torch.Tensor, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` indices of ``labels`` [N] (dataset order): per class, the last ``ceil(test_fraction * n_c)``
    images are test images."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction!r}")
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        k = math.ceil(test_fraction * len(idx))
        if k >= len(idx):
            raise ValueError(f"class {c} has {len(idx)} images: too few to keep {k} for testing and train on the rest")
        train.append(idx[:-k]), test.append(idx[-k:])
    return torch.cat(train), torch.cat(test)


def model_cls(model: str, profile: Profile, *, weights=None, device=None, store=None, progress=False):
    """``(cls [N, L, D] float32, labels [N])`` of ``model`` on the probe dataset, in dataset order."""
    device = resolve_device(device or profile.device)
    spec = protocol(profile)
    net, cfg, ident = load_for_analysis(model, weights, device)
    dataset = profile.dataset(spec["dataset"], cfg.preprocess)
    out = extract(net, ident, dataset, {"pooled": PooledTokens()}, transform_id=transform_key(cfg.preprocess),
                  store=store or FeatureStore(), device=device, order="sorted", progress=progress)
    return out["pooled"]["cls"], out["_meta"]["labels"]


def probe_model(cls: torch.Tensor, labels: torch.Tensor, spec: dict, device="cpu") -> tuple[pd.DataFrame, dict]:
    """Every grid of one model. ``cls``: [N, L, D] CLS of every block; ``labels`` [N].

    Returns the grid table (one row per cell: ``probe, depth, layer, lr, weight_decay, epochs, warmup_epochs,
    accuracy``; ``layer`` is the intermediate block of a multi-layer probe, 0 otherwise) and
    ``{(probe, depth, layer): per-test-image correctness [M] averaged over the best_k cells}``.
    """
    train, test = split(labels, spec["test_fraction"])
    configs = probes_k.probe_grid(spec["lrs"], spec["weight_decays"], spec["epochs"], spec["warmup_epochs"])
    x = cls.to(device).float()
    K = int(labels.max()) + 1
    kw = {"optimizer": spec["optimizer"], "batch_size": spec["batch_size"], "seed": spec["seed"], "num_classes": K}
    final = x[:, -1]
    runs = [("linear", 0, 0, final, 0)] + [("non-linear", d, 0, final, d) for d in spec["depths"]]
    L = x.shape[1]
    multi = torch.stack([torch.cat([final, x[:, i]], dim=1) for i in range(L - 1)])      # [L-1, N, 2D]
    rows, correct = [], {}

    def record(kind, depth, layer, fit_correct):
        acc = fit_correct.double().mean(1).cpu()
        top = probes_k.best_k(acc, spec["best_k"])["indices"]
        correct[(kind, depth, layer)] = fit_correct[top].double().mean(0).cpu()
        rows.extend({"probe": kind, "depth": depth, "layer": layer, "lr": c.lr, "weight_decay": c.weight_decay,
                     "epochs": c.epochs, "warmup_epochs": c.warmup_epochs, "accuracy": float(a)}
                    for c, a in zip(configs, acc.tolist()))

    y_test = labels[test].to(device)
    for kind, depth, layer, feats, d in runs:
        fit = probes_k.fit_probe_grid(feats[train], labels[train].to(device), configs, depth=d, **kw)
        record(kind, depth, layer, fit.correct(feats[test], y_test))
    fit = probes_k.fit_probe_grid(multi[:, train], labels[train].to(device), configs, **kw)
    both = fit.correct(multi[:, test], y_test).reshape(L - 1, len(configs), -1)
    for i in range(L - 1):
        record("multi-layer", 0, i + 1, both[i])
    return pd.DataFrame(rows), correct


_MEMO: dict = {}


def compute(models: list[str] | None, profile: Profile, *, weights: dict | None = None, device=None, store=None,
            progress: bool = False) -> dict:
    """All probes of ``models`` (default: the profile's ``probes.models``) on ``profile``.

    Returns ``{"grid": every cell (column ``model`` added), "summary": mean ± std of the best_k cells per
    (model, probe, depth, layer), "correct": {model: {(probe, depth, layer): [M]}}, "n_train", "n_test"}``.
    Memoised per (profile, models) within a kernel: the page and its claims share one training.
    """
    spec = protocol(profile)
    models = list(models or spec["models"] or profile.models)
    key = (profile.name, repr(profile.raw.get("probes")), tuple(models), repr(weights))
    if key in _MEMO:
        return _MEMO[key]
    weights = weights or {}
    dev = resolve_device(device or profile.device)
    grids, correct = [], {}
    for m in models:
        cls, labels = model_cls(m, profile, weights=weights.get(m), device=dev, store=store, progress=progress)
        table, correct[m] = probe_model(cls, labels, spec, device=dev)
        grids.append(table.assign(model=m))
    grid = pd.concat(grids, ignore_index=True)
    train, test = split(labels, spec["test_fraction"])
    _MEMO[key] = {"grid": grid, "summary": summarise(grid, spec["best_k"]), "correct": correct,
                  "n_train": len(train), "n_test": len(test)}
    return _MEMO[key]


def summarise(grid: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """OM's summary: mean and std of the ``k`` best cells' accuracies per (model, probe, depth, layer)."""
    rows = []
    for (m, p, d, layer), g in grid.groupby(["model", "probe", "depth", "layer"], sort=False):
        best = probes_k.best_k(torch.tensor(g.accuracy.to_numpy()), k)
        rows.append({"model": m, "probe": p, "depth": d, "layer": layer, "mean": best["mean"], "std": best["std"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the claims, bootstrapped over test images
LINEAR_CLAIM, NONLINEAR_CLAIM, MULTILAYER_CLAIM = "OM-2.2b", "OM-2.2a", "OM-2.2c"


def _gain(correct: dict, model: str, kind: str, depth: int | None = None) -> np.ndarray:
    """Per test image: the best-k correctness of a probe minus the linear probe's (``multi-layer``: the mean over
    intermediate blocks)."""
    c = correct[model]
    base = c[("linear", 0, 0)].numpy()
    if kind == "non-linear":
        return c[("non-linear", depth, 0)].numpy() - base
    layers = [k for k in c if k[0] == "multi-layer"]
    return np.mean([c[k].numpy() for k in layers], axis=0) - base


def _interval(values: list[np.ndarray], weights: list[float]) -> Interval:
    res = bootstrap_contrast(torch.tensor(np.stack(values)), torch.tensor(weights), n_resamples=N_RESAMPLES,
                             seed=SEED, confidence=CONFIDENCE)
    return Interval.from_bootstrap(res, "test images")


def judge_results(results: dict, families: dict[str, str], depth: int = 3) -> list[ClaimResult]:
    """OM 2.2's claims on a :func:`compute` result; ``families``: model -> registry family.

    ``OM-2.2b``: joint-embedding models' linear probe (best-5 mean) minus reconstruction models' (expected > 0);
    beyond the baseline: joint-embedding minus the untrained model. ``OM-2.2a``: the gain of a ``depth``-block
    non-linear probe over the linear one, reconstruction minus joint-embedding (> 0); ``OM-2.2c``: the same for the
    multi-layer probe's mean gain over intermediate blocks. Beyond the baseline for both: reconstruction gain minus
    the untrained model's gain.
    """
    correct = results["correct"]
    models = list(correct)
    je = [m for m in models if families[m] in JOINT_EMBEDDING]
    rec = [m for m in models if families[m] in RECONSTRUCTION]
    base = untrained_baseline(models)
    subject = "joint-embedding vs reconstruction"
    if not je or not rec:
        why = "the profile lacks a joint-embedding or a reconstruction model"
        return [cannot_check(c, subject, why) for c in (LINEAR_CLAIM, NONLINEAR_CLAIM, MULTILAYER_CLAIM)]
    lin = {m: correct[m][("linear", 0, 0)].numpy() for m in models}
    wj, wr = [1 / len(je)] * len(je), [1 / len(rec)] * len(rec)
    effect = _interval([lin[m] for m in je + rec], wj + [-w for w in wr])
    beyond = None if base is None else _interval([lin[m] for m in je] + [lin[base]], wj + [-1.0])
    out = [judge(LINEAR_CLAIM, subject, "linear-probe accuracy (best-5 mean), joint-embedding minus reconstruction",
                 effect, beyond, 1, base)]
    depths = sorted({k[1] for k in correct[models[0]] if k[0] == "non-linear"})
    for claim, kind, d, measure in ((NONLINEAR_CLAIM, "non-linear", depth,
                                     f"gain of a {depth}-block non-linear probe over the linear probe"),
                                    (MULTILAYER_CLAIM, "multi-layer", None,
                                     "gain of final + intermediate CLS over the final CLS (mean over blocks)")):
        if kind == "non-linear" and depth not in depths:
            out.append(cannot_check(claim, subject, f"the profile's probes.depths {depths} lack depth {depth}"))
            continue
        gain = {m: _gain(correct, m, kind, d) for m in models}
        effect = _interval([gain[m] for m in rec + je], wr + [-w for w in wj])
        beyond = None if base is None else _interval([gain[m] for m in rec] + [gain[base]], wr + [-1.0])
        out.append(judge(claim, "reconstruction vs joint-embedding", f"{measure}, reconstruction minus "
                         "joint-embedding", effect, beyond, 1, base))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights: dict | None = None, device=None,
                 store=None, progress: bool = False) -> list[ClaimResult]:
    """The claims of OM 2.2 (Fig. 2a, 2c; the linear-probe gap) on ``models`` (default: ``probes.models``)."""
    from ..models import get_cfg

    if "probes" not in profile.raw:
        return [cannot_check(c, "joint-embedding vs reconstruction", "the profile has no probes section")
                for c in (LINEAR_CLAIM, NONLINEAR_CLAIM, MULTILAYER_CLAIM)]
    results = compute(models, profile, weights=weights, device=device, store=store, progress=progress)
    return judge_results(results, {m: get_cfg(m).family for m in results["correct"]})

"""Objectives Matter App. B.1 (Fig. 6) — does minibatch CKA depend on the batch size and the number of examples?

Product: :class:`vitscope.extract.PooledTokens` through :func:`vitscope.sections.knn.pooled_features` (per image and
block, the CLS token and the mean of the spatial tokens; the same cached extraction as the k-NN page, so no new forward
pass). The cached Gram matrices of the CKA page are fixed at one batch size; pooled features held in memory can be
re-batched at any size. Kernels: :func:`vitscope.kernels.cka.gram` and :func:`vitscope.kernels.cka.hsic1` per
minibatch, combined by :func:`vitscope.kernels.stats.cka_from_batch_terms` (eq. 2-3, the reference estimator: the
same number as :func:`vitscope.kernels.cka.minibatch_cka`, with each minibatch's terms computed once for every pair
and every number of examples); :func:`vitscope.kernels.cka.linear_cka` with ``debiased=True`` (the full-batch limit:
one minibatch of every example); :func:`vitscope.kernels.cka.hsic0` (the biased HSIC, to show why eq. 3's unbiased
HSIC_1 is used).

Two sweeps, each repeated over ``repeats`` seeded shuffles of the images (repeat ``r`` uses seed ``r``):

* ``batch_size``: the largest ``examples`` value of the profile, cut into minibatches of each of ``batch_sizes``;
* ``examples``: the first ``n`` images of the shuffle for each ``n`` of ``examples``, in minibatches of the smallest
  batch size (OM's 32).

A last partial minibatch with at least :data:`vitscope.kernels.cka.HSIC1_MIN_N` examples is its own minibatch (as in
:func:`~vitscope.kernels.cka.minibatch_cka`); one with fewer is dropped, and the table records the examples used.
Pairs: the first model of the section's ``models`` against each model of the list, itself included (the same-model
control, 1 at every batch size by construction).
"""
from __future__ import annotations

import itertools

import pandas as pd
import torch

from ..devices import one_cpu_thread
from ..kernels import cka as cka_k
from ..kernels.stats import cka_from_batch_terms
from ..kernels.validation import check_choice, check_int
from ..profiles import Profile
from .knn import pooled_features

SECTION = "cka_convergence"
#: ``tokens`` of the profile -> the pooled tensor of :func:`vitscope.sections.knn.pooled_features`.
TOKENS = {"cls": "cls", "mean": "gap"}
TOKEN_NAMES = {"cls": "CLS token", "mean": "mean of the spatial tokens"}
#: The estimators a sweep can run: eq. 3's unbiased HSIC_1 (the paper's, the reference) and the biased HSIC_0.
ESTIMATORS = ("reference", "biased")
#: Defaults where the profile is silent: OM's range of batch sizes (2^5 ... 2^10) and its 1024 examples.
DEFAULTS = {"batch_sizes": (32, 64, 128, 256, 512, 1024), "examples": (1024,), "tokens": "cls", "repeats": 10}


def protocol(profile: Profile) -> dict:
    """The profile's ``cka_convergence`` section with defaults: ``dataset, models, pairs, batch_sizes, examples,
    layers, tokens, repeats`` (what the page states). ``layers`` are 1-based blocks (``None``: every block)."""
    spec = profile.section(SECTION)
    where = f"Profile {profile.name!r}, section {SECTION!r}"
    models = list(spec.get("models") or (profile.raw.get("cka") or {}).get("models") or profile.models)
    if len(models) < 2 or not all(isinstance(m, str) for m in models):
        raise ValueError(f"{where}: models must list at least two model names (the first is compared with each, "
                         f"itself included); got {models!r}")
    out = {"dataset": spec["dataset"], "models": models, "pairs": [(models[0], m) for m in models[1:] + models[:1]]}
    for key in ("batch_sizes", "examples"):
        values = tuple(spec.get(key, DEFAULTS[key]))
        for v in values:
            check_int(v, f"{where}: {key} entry (HSIC_1 needs at least {cka_k.HSIC1_MIN_N} examples)",
                      cka_k.HSIC1_MIN_N)
        if not values or list(values) != sorted(set(values)):
            raise ValueError(f"{where}: {key} must be a non-empty increasing list; got {list(values)}")
        out[key] = values
    layers = spec.get("layers")
    out["layers"] = None if layers is None else tuple(check_int(v, f"{where}: layers entry (1-based block)", 1)
                                                      for v in layers)
    out["tokens"] = check_choice(spec.get("tokens", DEFAULTS["tokens"]), f"{where}: tokens", tuple(TOKENS))
    out["repeats"] = check_int(spec.get("repeats", DEFAULTS["repeats"]), f"{where}: repeats", 1)
    return out


def _usable(n: int, batch_size: int) -> int:
    """How many of ``n`` examples minibatches of ``batch_size`` use: a last partial batch under HSIC_1's minimum
    is dropped."""
    rest = n % batch_size
    return n - rest if 0 < rest < cka_k.HSIC1_MIN_N else n


#: The HSIC estimator of each :data:`ESTIMATORS` entry; both take Gram stacks [..., n, n] and broadcast.
_HSIC = {"reference": cka_k.hsic1, "biased": cka_k.hsic0}


class _BatchTerms:
    """Per-minibatch HSIC terms of one shuffle, memoised by the minibatch's index range: the examples sweep's batches
    are prefixes of the same shuffle, so most of its minibatches are computed once for every ``n``."""

    def __init__(self, feats: dict[str, torch.Tensor], order: torch.Tensor):
        self.feats, self.order = feats, order
        self._grams: dict = {}
        self._terms: dict = {}

    def gram(self, model: str, start: int, stop: int) -> torch.Tensor:
        key = (model, start, stop)
        if key not in self._grams:
            idx = self.order[start:stop]
            self._grams[key] = torch.stack([cka_k.gram(x) for x in self.feats[model][:, idx]])    # [L, b, b]
        return self._grams[key]

    def hsic(self, estimator: str, a: str, b: str, start: int, stop: int) -> torch.Tensor:
        """[L] same-depth HSIC of layer l of ``a`` with layer l of ``b`` on one minibatch."""
        key = (estimator, *sorted((a, b)), start, stop)
        if key not in self._terms:
            self._terms[key] = _HSIC[estimator](self.gram(a, start, stop), self.gram(b, start, stop))
        return self._terms[key]

    def cka(self, estimator: str, a: str, b: str, n: int, batch_size: int) -> torch.Tensor:
        """[L] eq. (2) over the first ``n`` examples of the shuffle in minibatches of ``batch_size``."""
        ranges = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        ab, aa, bb = (torch.stack([self.hsic(estimator, x, y, *r) for r in ranges])            # [k, L] each
                      for x, y in ((a, b), (a, a), (b, b)))
        return cka_from_batch_terms(ab, aa, bb)


def sweep(feats: dict[str, torch.Tensor], pairs, batch_sizes, examples, repeats: int, *,
          estimators=("reference",), seed: int = 0) -> pd.DataFrame:
    """Both sweeps of the module docstring for every pair of models.

    feats: ``{model: [L, N, D]}``, the same N images in the same order for every model (layer l of one model is
    compared with layer l of the other); pairs: ``[(model_a, model_b), ...]``. Returns one row per (pair, sweep,
    estimator, repeat, setting, layer): ``model_a, model_b, sweep, estimator, repeat, batch_size, examples`` (the
    examples used), ``layer`` (0-based position in the stacks) and ``cka``. Repeat ``r`` shuffles the N images with
    seed ``seed + r``.
    """
    shapes = {m: tuple(f.shape) for m, f in feats.items()}
    if any(len(s) != 3 for s in shapes.values()) or len({s[:2] for s in shapes.values()}) != 1:
        raise ValueError(f"feats must be [L, N, D] stacks with one L and one N; got {shapes}")
    missing = sorted({m for p in pairs for m in p} - set(feats))
    if missing:
        raise ValueError(f"pairs name {missing} but feats holds only {sorted(feats)}")
    N = next(iter(shapes.values()))[1]
    if max(examples) > N:
        raise ValueError(f"examples asks for {max(examples)} images but the features hold {N}; lower the profile's "
                         f"{SECTION}.examples to at most {N}")
    for e in estimators:
        check_choice(e, "estimator", ESTIMATORS)
    settings = ([("batch_size", b, max(examples)) for b in batch_sizes]
                + [("examples", min(batch_sizes), n) for n in examples])
    rows = []
    with one_cpu_thread():
        for r in range(repeats):
            terms = _BatchTerms(feats, torch.randperm(N, generator=torch.Generator().manual_seed(seed + r)))
            for (a, b), (name, size, n), est in itertools.product(pairs, settings, estimators):
                used = _usable(n, size)
                values = terms.cka(est, a, b, used, size).tolist()
                rows += [{"model_a": a, "model_b": b, "sweep": name, "estimator": est, "repeat": r,
                          "batch_size": size, "examples": used, "layer": i, "cka": v} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def full_batch(A: torch.Tensor, B: torch.Tensor) -> list[float]:
    """Unbiased linear CKA of every same-depth layer of A, B [L, N, D] on all N examples at once (the limit of one
    minibatch)."""
    with one_cpu_thread():
        return [cka_k.linear_cka(a, b, debiased=True) for a, b in zip(A, B, strict=True)]


def _stack(feats: torch.Tensor, layers) -> tuple[torch.Tensor, list[int]]:
    """[N, L, D] pooled features -> [len(layers), N, D] float64 and the 1-based blocks kept."""
    depth = feats.shape[1]
    blocks = list(layers or range(1, depth + 1))
    if max(blocks) > depth:
        raise ValueError(f"layers {blocks} name block {max(blocks)} but the model has {depth} blocks; lower the "
                         f"profile's {SECTION}.layers")
    return feats[:, [b - 1 for b in blocks]].transpose(0, 1).to(torch.float64), blocks


def compute(profile: Profile, models: list[str] | None = None, *, estimators=ESTIMATORS, weights: dict | None = None,
            device=None, store=None, progress: bool = False) -> dict:
    """Both sweeps for every pair of the protocol (``models`` overrides the profile's list; its first model is
    compared with each, itself included).

    Returns ``{"runs": every repeat (:func:`sweep`'s columns with ``pair`` and the 1-based ``block`` for ``layer``),
    "full": full-batch unbiased CKA per ``model_a, model_b, pair, block`` on all ``n_images``, "n_images",
    "protocol"}``.
    """
    spec = protocol(profile)
    if models:
        models = list(models)
        spec = {**spec, "models": models, "pairs": [(models[0], m) for m in models[1:] + models[:1]]}
    weights = weights or {}
    feats, blocks = {}, None
    for m in dict.fromkeys(spec["models"]):
        pooled = pooled_features(m, profile, spec["dataset"], weights=weights.get(m), device=device, store=store,
                                 progress=progress)
        feats[m], blocks = _stack(pooled[TOKENS[spec["tokens"]]], spec["layers"])
    runs = sweep(feats, spec["pairs"], spec["batch_sizes"], spec["examples"], spec["repeats"], estimators=estimators)
    runs = runs.assign(pair=runs.model_a + " vs " + runs.model_b, block=[blocks[i] for i in runs.layer])
    full = [{"model_a": a, "model_b": b, "pair": f"{a} vs {b}", "block": blk, "cka": v}
            for a, b in spec["pairs"] for blk, v in zip(blocks, full_batch(feats[a], feats[b]))]
    return {"runs": runs.drop(columns="layer"), "full": pd.DataFrame(full),
            "n_images": next(iter(feats.values())).shape[1], "protocol": spec}


def summarise(runs: pd.DataFrame, full: pd.DataFrame) -> pd.DataFrame:
    """Per (pair, estimator, sweep, setting, block): ``mean``, ``std`` (over repeats, ddof=1; NaN for one repeat),
    ``low``, ``high`` (min, max over repeats), ``full`` (the full-batch value) and ``deviation`` (mean - full)."""
    keys = ["model_a", "model_b", "pair", "estimator", "sweep", "batch_size", "examples", "block"]
    out = runs.groupby(keys, sort=False)["cka"].agg(mean="mean", std="std", low="min", high="max").reset_index()
    out = out.merge(full.rename(columns={"cka": "full"}), on=["model_a", "model_b", "pair", "block"],
                    how="left", validate="many_to_one")
    out["deviation"] = out["mean"] - out["full"]
    return out


def settling(summary: pd.DataFrame, estimator: str = "reference") -> pd.DataFrame:
    """Per sweep and setting, over every pair except same-model controls and every block: the largest
    |mean - full-batch| and the largest spread over repeats (max - min). What the page reads "settles" from."""
    sel = summary[(summary.estimator == estimator) & (summary.model_a != summary.model_b)]
    if sel.empty:
        raise ValueError(f"no rows for estimator {estimator!r} between distinct models")
    sel = sel.assign(abs_deviation=sel.deviation.abs(), spread=sel.high - sel.low)
    return (sel.groupby(["sweep", "batch_size", "examples"], sort=False)
            .agg(max_abs_deviation=("abs_deviation", "max"), max_spread=("spread", "max")).reset_index())

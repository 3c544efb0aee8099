"""Bootstrap intervals for the claims ledger: pure functions on tensors, float64, no I/O.

Two resampling units appear in the papers' analyses:

* **images** (attention distance, TM 4.3): every model sees the same images, so a contrast between models is
  resampled *paired*, one draw of image indices shared by all models (:func:`bootstrap_contrast`);
* **CKA minibatches** (OM eq. 2): minibatch CKA is a ratio of batch means of HSIC_1 terms, so a resample draws
  batch indices with replacement and recomputes the ratio from the drawn batches' terms
  (:func:`bootstrap_cka_contrast`). Batches line up across models, so one draw serves every pair.

Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13): the (1-c)/2 and (1+c)/2 quantiles of the
resampled statistic.

A proportion estimated from a random sample (the mutation score of a package from a sample of its mutants) gets
the Wilson score interval (:func:`wilson_interval`), which stays inside [0, 1] and keeps its coverage near 0 and 1
where the normal approximation does not.

A third noise source is the training seed. Where a profile has several untrained seeds of one architecture,
:func:`seed_floor` turns the spread of a statistic among them into a floor that a contrast must clear.
"""
from __future__ import annotations

import math
import numbers
from statistics import NormalDist

import torch
from torch import Tensor

from ..validation import check_int


def _check_confidence(confidence) -> float:
    if not isinstance(confidence, numbers.Real) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be a number in (0, 1), e.g. 0.95; got {confidence!r}")
    return float(confidence)


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> Tensor:
    """``[n_resamples, n]`` int64 indices drawn uniformly with replacement from ``range(n)``; same seed, same draw."""
    n, n_resamples = check_int(n, "n", 1), check_int(n_resamples, "n_resamples", 1)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    return torch.randint(0, n, (n_resamples, n), generator=gen)


def percentile_interval(replicates: Tensor, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval of bootstrap ``replicates`` [R]: quantiles (1-c)/2 and (1+c)/2.

    Any NaN replicate (e.g. a CKA whose self-HSIC came out non-positive in a resample) makes the interval NaN:
    the statistic is undefined on part of the resampling distribution and we do not hide that.
    """
    c = _check_confidence(confidence)
    r = replicates.to(torch.float64).reshape(-1)
    if r.numel() == 0:
        raise ValueError("replicates is empty; draw at least one bootstrap resample")
    if bool(torch.isnan(r).any()):
        return float("nan"), float("nan")
    q = torch.tensor([(1 - c) / 2, (1 + c) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(r, q).tolist()
    return lo, hi


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927) of a binomial proportion ``successes / trials``, two-sided.

    ``(c + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with p = successes/trials and z the normal
    quantile of (1+confidence)/2. Returns ``(low, high)`` within [0, 1]. At 0 successes the bound is 0, and at
    ``trials`` successes 1, exactly (the formula's rounding would leave 1e-17 there).
    """
    trials = check_int(trials, "trials", 1)
    successes = check_int(successes, "successes", 0)
    if successes > trials:
        raise ValueError(f"successes ({successes}) cannot exceed trials ({trials})")
    z = NormalDist().inv_cdf((1 + _check_confidence(confidence)) / 2)
    p, z2n = successes / trials, z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials)) / (1 + z2n)
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == trials else centre + half
    return low, high


def _check_weights(weights: Tensor, m: int, name: str) -> Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.ndim != 1 or w.shape[0] != m:
        raise ValueError(f"weights must be a vector [{m}] (one per row of {name}); got shape {tuple(w.shape)}")
    return w


def bootstrap_contrast(values: Tensor, weights: Tensor, *, n_resamples: int, seed: int,
                       confidence: float) -> dict:
    """A linear contrast of per-model means, with a paired bootstrap over the shared examples.

    values: [M, N], ``values[m, i]`` the statistic of model ``m`` on example ``i`` (the same N examples for
    every model). weights: [M]; e.g. ``[1/2, 1/2, -1]`` is "mean of models 0-1 minus model 2".
    Returns ``{"estimate", "low", "high", "n"}``: ``estimate = weights · values.mean(1)``, the interval from
    ``n_resamples`` draws of N example indices with replacement, the same draw for all models (paired).
    """
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.ndim != 2 or v.shape[1] < 2:
        raise ValueError(f"values must be [models, examples] with at least 2 examples; got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"values (shape {tuple(v.shape)}) holds NaN or Inf")
    w = _check_weights(weights, v.shape[0], "values")
    idx = bootstrap_indices(v.shape[1], n_resamples, seed)              # [R, N]
    replicates = v[:, idx].mean(-1).T @ w                                  # [M, R, N] -> [R, M] -> [R]
    lo, hi = percentile_interval(replicates, confidence)
    return {"estimate": float(v.mean(1) @ w), "low": lo, "high": hi, "n": int(v.shape[1])}


def cka_from_batch_terms(ab: Tensor, aa: Tensor, bb: Tensor) -> Tensor:
    """Minibatch CKA (OM eq. 2) from per-batch HSIC_1 terms, each [..., k, P] (k batches, P layer pairs).

    ``mean_k ab / sqrt(mean_k aa · mean_k bb)`` over the batch axis (-2). Returns [..., P] float64.
    """
    ab, aa, bb = (torch.as_tensor(t, dtype=torch.float64) for t in (ab, aa, bb))
    if not (ab.shape == aa.shape == bb.shape) or ab.ndim < 2:
        raise ValueError(f"ab, aa, bb must share one shape [..., batches, pairs]; got {tuple(ab.shape)}, "
                         f"{tuple(aa.shape)}, {tuple(bb.shape)}")
    return ab.mean(-2) / torch.sqrt(aa.mean(-2) * bb.mean(-2))


def bootstrap_cka_contrast(ab: Tensor, aa: Tensor, bb: Tensor, weights: Tensor, *, n_resamples: int, seed: int,
                           confidence: float) -> dict:
    """A linear contrast of minibatch CKA values, with a bootstrap over minibatches.

    ab, aa, bb: [k, P] per-batch HSIC_1 terms of P layer pairs (``ab[i, p] = HSIC_1(K_i, L_i)`` of pair p on
    batch i, ``aa``/``bb`` the self terms of its two layers); batches aligned across pairs. weights: [P].
    Returns ``{"estimate", "low", "high", "n"}`` with ``estimate = weights · CKA`` (CKA as eq. 2 over all k
    batches) and the interval from ``n_resamples`` draws of k batch indices with replacement (one draw for all P).
    """
    ab, aa, bb = (torch.as_tensor(t, dtype=torch.float64) for t in (ab, aa, bb))
    if ab.ndim != 2 or ab.shape[0] < 2:
        raise ValueError(f"ab must be [batches, pairs] with at least 2 batches; got {tuple(ab.shape)}")
    w = _check_weights(weights, ab.shape[1], "ab's pairs")
    estimate = float(cka_from_batch_terms(ab, aa, bb) @ w)
    idx = bootstrap_indices(ab.shape[0], n_resamples, seed)             # [R, k]
    replicates = cka_from_batch_terms(ab[idx], aa[idx], bb[idx]) @ w      # [R, k, P] -> [R, P] -> [R]
    lo, hi = percentile_interval(replicates, confidence)
    return {"estimate": estimate, "low": lo, "high": hi, "n": int(ab.shape[0])}


def seed_floor(seed_values: Tensor, weights: Tensor) -> float:
    """The seed noise floor of a contrast: the largest ``|weights · x|`` when each of the contrast's slots holds the
    statistic of some untrained seed instead of its model.

    Both inputs may be tensors or sequences of floats (read as float64).
    seed_values: [S], S >= 2: the statistic on each untrained seed (a per-model statistic, e.g. a last-block
    attention distance) or each pair of seeds (a per-pair statistic, e.g. a same-depth CKA). weights: [M], the
    contrast's weights over its M slots (models or model pairs), e.g. ``[1, -1]`` for "model minus untrained".

    Slots take seeds independently (with repetition), so the maximum is reached at the extremes:
    ``max(|hi|, |lo|)`` with ``hi = sum(w+) max(x) - sum(w-) min(x)`` and ``lo = sum(w+) min(x) - sum(w-) max(x)``
    (``w+``, ``w-`` the positive weights and the magnitudes of the negative ones). For a zero-sum contrast this is
    ``sum(w+) * (max(x) - min(x))``: with ``[1, -1]``, the largest |difference| between two seeds; with ``[1]``
    (a statistic that should be 0 for untrained networks), the largest |x|. Returns a float >= 0.
    """
    x = torch.as_tensor(seed_values, dtype=torch.float64)
    if x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"seed_values must be a vector with one value per untrained seed (or seed pair), at least "
                         f"2 of them (a spread needs two); got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"seed_values holds NaN or Inf: {x.tolist()}")
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.ndim != 1 or w.shape[0] < 1 or not bool(torch.isfinite(w).all()):
        raise ValueError(f"weights must be a finite vector [M >= 1], one per slot of the contrast; got {w.tolist()}")
    pos, neg = float(w.clamp(min=0).sum()), float((-w).clamp(min=0).sum())
    top, bottom = float(x.max()), float(x.min())
    return max(abs(pos * top - neg * bottom), abs(pos * bottom - neg * top))

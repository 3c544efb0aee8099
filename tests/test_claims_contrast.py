"""paired_contrast and judge_contrast (claims.verdict): the resampling unit reaches the interval and the claims
table, the estimate is the weighted mean difference, and the seed floors follow kernels.stats.seed_floor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitscope.claims import render
from vitscope.claims.verdict import HOLDS, INCONCLUSIVE, judge, judge_contrast, paired_contrast


def _values(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(1.0, 0.1, n), "b": rng.normal(0.2, 0.1, n), "base": rng.normal(0.1, 0.1, n)}


def test_paired_contrast_names_its_unit_and_estimates_the_weighted_mean_difference():
    values = _values()
    default = paired_contrast(values, {"a": 1.0, "b": -1.0})
    queries = paired_contrast(values, {"a": 1.0, "b": -1.0}, unit="queries")
    assert default.unit == "images" and queries.unit == "queries" and queries.n == 30
    assert queries.estimate == pytest.approx(float(np.mean(values["a"]) - np.mean(values["b"])), abs=1e-12)
    assert (queries.low, queries.high) == (default.low, default.high)          # the unit is a name, not a method
    with pytest.raises(ValueError, match="different numbers of pairs"):
        paired_contrast({"a": np.zeros(3), "b": np.zeros(4)}, {"a": 1.0, "b": -1.0}, unit="pairs")


def test_judge_contrast_is_judge_on_two_paired_contrasts_with_the_unit_in_the_table():
    values = _values()
    effect_w, beyond_w = {"a": 1.0, "b": -1.0}, {"a": 1.0, "base": -1.0}
    seed_stats = torch.tensor([0.10, 0.13, 0.11], dtype=torch.float64)
    got = judge_contrast("X-1", "a minus b", "score", values, effect_w, beyond_w, 1, "base", seed_stats,
                         ("s1", "s2", "s3"), unit="regions")
    floor = 0.13 - 0.10               # [1, -1]: the largest difference between two seeds, by hand
    want = judge("X-1", "a minus b", "score", paired_contrast(values, effect_w, "regions"),
                 paired_contrast(values, beyond_w, "regions"), 1, "base", floor, floor, ("s1", "s2", "s3"))
    assert got.floor == pytest.approx(floor) and got.baseline_floor == pytest.approx(floor)
    assert (got.verdict, got.effect, got.baseline, got.seeds) == (want.verdict, want.effect, want.baseline, want.seeds)
    assert got.verdict == HOLDS and got.effect.unit == got.baseline.unit == "regions"
    row = render.results_table([got]).iloc[0]
    assert (row["n"], row["unit"]) == (30, "regions")


def test_judge_contrast_without_a_baseline_or_seeds():
    got = judge_contrast("X-1", "a minus b", "score", _values(), {"a": 1.0, "b": -1.0}, None, 1, None)
    assert got.baseline is None and got.floor is None and got.seeds == ()
    assert got.verdict == INCONCLUSIVE and got.effect.unit == "images"

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


def _per_block(means: dict, n: int = 40, seed: int = 0) -> dict:
    """{(model, block): float [n]} with the given per-block means (small paired noise)."""
    rng = np.random.default_rng(seed)
    return {(m, b): np.clip(mu + rng.normal(0, 0.01, n), 0, 1) for (m, b), mu in means.items()}


def _depth(rows, model, base, seeds, sign=1.0):
    from vitscope.claims.verdict import judge_depth_contrast

    def choose(m):
        blocks = sorted(b for (mm, b) in rows if mm == m)
        last = blocks[-1]
        return last, max(blocks[:-1], key=lambda b: rows[(m, b)].mean())
    return judge_depth_contrast("T-1", model, "score", lambda m, b: rows[(m, b)], choose, model, base, seeds,
                                sign=sign)


def test_depth_contrast_takes_its_seed_floor_from_the_seeds_own_depth_contrasts():
    """Effect = last minus best earlier block (by hand 0.8 - 0.5); the floor is the spread over seeds of the same
    contrast with blocks chosen by the same rule (seed d: 0.30-0.40 = -0.10, 0.35-0.40 = -0.05 -> floor 0.05)."""
    means = {("m", 1): 0.4, ("m", 2): 0.5, ("m", 3): 0.8,
             ("base", 1): 0.4, ("base", 2): 0.3, ("base", 3): 0.3,
             ("s1", 1): 0.4, ("s1", 2): 0.2, ("s1", 3): 0.30, ("s2", 1): 0.4, ("s2", 2): 0.1, ("s2", 3): 0.35}
    rows = _per_block(means)
    got = _depth(rows, "m", "base", ("s1", "s2"))
    d = [rows[("s1", 3)].mean() - rows[("s1", 1)].mean(), rows[("s2", 3)].mean() - rows[("s2", 1)].mean()]
    assert got.floor == pytest.approx(abs(d[0] - d[1])) and got.baseline_floor == got.floor
    assert got.effect.estimate == pytest.approx(rows[("m", 3)].mean() - rows[("m", 2)].mean())
    assert got.verdict == HOLDS and got.seeds == ("s1", "s2")
    # seeds whose own contrast swings by more than the effect: inconclusive, whatever the bootstrap says
    wide = {**means, ("s2", 3): 1.0, ("s2", 2): 0.0, ("s2", 1): 0.0}
    assert _depth(_per_block(wide), "m", "base", ("s1", "s2")).verdict == INCONCLUSIVE
    # one seed: no floor (a spread needs two), and the row says so by listing no seeds
    one = _depth(rows, "m", "base", ("s1",))
    assert one.floor is None and one.seeds == ()
    # sign -1 reads "best earlier minus last": the same interval mirrored
    flipped = _depth(rows, "m", "base", ("s1", "s2"), sign=-1.0)
    assert flipped.effect.estimate == pytest.approx(-got.effect.estimate)


def test_group_weights_average_each_side_and_put_the_untrained_model_on_the_lower_side():
    from vitscope.claims.verdict import group_weights

    w, beyond = group_weights(["a", "b"], ["c", "d", "e"], "base")
    assert w == pytest.approx({"a": 0.5, "b": 0.5, "c": -1 / 3, "d": -1 / 3, "e": -1 / 3})
    assert beyond == pytest.approx({"a": 0.5, "b": 0.5, "base": -1.0})
    assert sum(w.values()) == pytest.approx(0.0) and sum(beyond.values()) == pytest.approx(0.0)
    assert group_weights(["a"], ["c"], None) == ({"a": 1.0, "c": -1.0}, None)
    with pytest.raises(ValueError, match="disjoint"):
        group_weights(["a"], ["a", "c"], "base")

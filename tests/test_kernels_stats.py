"""The interval kernels (vitscope.kernels.stats): bootstrap against NumPy, the seed floor by brute force and by hand,
the Wilson interval against published values and SciPy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitscope.kernels import stats


# ---------------------------------------------------------------- bootstrap kernels vs NumPy
def test_bootstrap_indices_are_seeded_and_in_range():
    a, b = stats.bootstrap_indices(7, 50, seed=3), stats.bootstrap_indices(7, 50, seed=3)
    assert torch.equal(a, b) and a.shape == (50, 7) and int(a.min()) >= 0 and int(a.max()) <= 6
    assert not torch.equal(a, stats.bootstrap_indices(7, 50, seed=4))
    with pytest.raises(ValueError, match="n_resamples"):
        stats.bootstrap_indices(7, 0, seed=0)


def test_bootstrap_contrast_matches_numpy_paired_reference():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 40)) + np.array([[1.0], [0.5], [0.0]])
    weights = np.array([0.5, 0.5, -1.0])
    res = stats.bootstrap_contrast(torch.tensor(values), torch.tensor(weights), n_resamples=300, seed=1,
                                   confidence=0.9)
    idx = stats.bootstrap_indices(40, 300, seed=1).numpy()
    reps = np.array([weights @ values[:, i].mean(1) for i in idx])      # the same draw for all models: paired
    assert res["estimate"] == pytest.approx(weights @ values.mean(1))
    assert (res["low"], res["high"]) == pytest.approx((np.quantile(reps, 0.05), np.quantile(reps, 0.95)))
    assert res["n"] == 40


def test_bootstrap_cka_contrast_matches_numpy_ratio_of_means():
    rng = np.random.default_rng(1)
    ab, aa, bb = rng.uniform(0.2, 0.8, (12, 4)), rng.uniform(1, 2, (12, 4)), rng.uniform(1, 2, (12, 4))
    w = np.array([1.0, 1.0, -1.0, -1.0]) / 2
    res = stats.bootstrap_cka_contrast(*(torch.tensor(t) for t in (ab, aa, bb)), torch.tensor(w), n_resamples=200,
                                       seed=0, confidence=0.95)

    def cka(i):
        return ab[i].mean(0) / np.sqrt(aa[i].mean(0) * bb[i].mean(0))

    reps = np.array([w @ cka(i) for i in stats.bootstrap_indices(12, 200, seed=0).numpy()])
    assert res["estimate"] == pytest.approx(w @ cka(np.arange(12)))
    assert (res["low"], res["high"]) == pytest.approx((np.quantile(reps, 0.025), np.quantile(reps, 0.975)))


def test_percentile_interval_is_nan_when_a_replicate_is_undefined():
    assert np.isnan(stats.percentile_interval(torch.tensor([0.1, float("nan"), 0.3]), 0.95)).all()
    with pytest.raises(ValueError, match="confidence"):
        stats.percentile_interval(torch.tensor([0.1]), 95)


def _np_seed_floor(values, weights):
    """Brute force: every assignment of a seed's value to every slot of the contrast."""
    import itertools
    return max(abs(float(np.dot(weights, combo))) for combo in itertools.product(values, repeat=len(weights)))


@pytest.mark.parametrize("values, weights", [
    ([0.5910, 0.5911, 0.5909], [1.0, -1.0]),                 # model minus untrained: the largest seed difference
    ([0.3, 0.7, 0.4, 0.65], [0.25, 0.25, 0.25, 0.25, -0.5, -0.5]),   # group means contrast
    ([0.02, -0.04, 0.001], [1.0]),                           # a statistic that is 0 for identical networks
    ([0.9, 0.95], [1.0, 0.5, -2.0]),                          # not zero-sum
])
def test_seed_floor_is_the_largest_contrast_over_seed_assignments(values, weights):
    got = stats.seed_floor(torch.tensor(values, dtype=torch.float64), weights)
    assert got == pytest.approx(_np_seed_floor(values, weights), abs=1e-12)


def test_seed_floor_by_hand_and_its_input_checks():
    # random-a/b/c end at 0.5910, 0.5912, 0.5905: the largest difference between two seeds is 0.0007
    assert stats.seed_floor([0.5910, 0.5912, 0.5905], [1.0, -1.0]) == pytest.approx(7e-4, abs=1e-15)
    assert stats.seed_floor([0.02, -0.04, 0.0], [1.0]) == pytest.approx(0.04, abs=1e-15)
    with pytest.raises(ValueError, match="at least 2"):
        stats.seed_floor(torch.tensor([0.5]), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="NaN"):
        stats.seed_floor(torch.tensor([0.5, float("nan")]), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="weights"):
        stats.seed_floor(torch.tensor([0.5, 0.6]), torch.tensor([]))


# ---------------------------------------------------------------- Wilson interval
@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (score interval without continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_published_values(k, n, low, high):
    assert stats.wilson_interval(k, n, 0.95) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("k, n, c", [(280, 300, 0.95), (1, 7, 0.9), (50, 51, 0.99), (3, 3, 0.8)])
def test_wilson_interval_matches_scipy_and_the_formula_in_float64(k, n, c):
    from statistics import NormalDist

    got = stats.wilson_interval(k, n, c)
    z = NormalDist().inv_cdf((1 + c) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    expected = (0.0 if k == 0 else centre - half, 1.0 if k == n else centre + half)
    assert got == pytest.approx(expected, abs=1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=c, method="wilson")
    assert got == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_interval_brackets_the_proportion_and_narrows_with_n():
    for k, n in [(1, 4), (9, 10), (90, 100), (900, 1000)]:
        low, high = stats.wilson_interval(k, n)
        assert 0.0 <= low < k / n < high <= 1.0
    assert np.diff([np.subtract(*stats.wilson_interval(9 * n // 10, n)[::-1]) for n in (10, 100, 1000)]).max() < 0
    assert stats.wilson_interval(5, 10, 0.99)[0] < stats.wilson_interval(5, 10, 0.9)[0]   # wider at more confidence


def test_wilson_interval_input_checks():
    with pytest.raises(ValueError, match="exceed"):
        stats.wilson_interval(11, 10)
    with pytest.raises(ValueError, match="trials"):
        stats.wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        stats.wilson_interval(-1, 10)
    with pytest.raises(ValueError, match="confidence"):
        stats.wilson_interval(5, 10, 95)

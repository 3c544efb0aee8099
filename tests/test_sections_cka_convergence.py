"""Minibatch-CKA convergence (OM App. B.1): the sweeps against an independent float64 NumPy transcription of eq. (2)-(3)
and of the biased HSIC_0, the invariants (a model with itself is 1 at every batch size, one minibatch of every example
is the full-batch unbiased CKA), the protocol read from a profile and the summary tables. No model is run here."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from vitscope import plots
from vitscope.kernels import cka as cka_k
from vitscope.profiles import Profile
from vitscope.sections import cka_convergence as cc


def _np_hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Eq. (3), written out with explicit ones vectors."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def _np_hsic0(K: np.ndarray, L: np.ndarray) -> float:
    """Gretton et al.'s biased HSIC with the centring matrix H."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def _np_minibatch_cka(X: np.ndarray, Y: np.ndarray, batch_size: int, hsic) -> float:
    """Eq. (2): ratio of the batch means, consecutive batches (a partial last batch included)."""
    ab, aa, bb = [], [], []
    for s in range(0, len(X), batch_size):
        K, L = X[s:s + batch_size] @ X[s:s + batch_size].T, Y[s:s + batch_size] @ Y[s:s + batch_size].T
        ab.append(hsic(K, L)), aa.append(hsic(K, K)), bb.append(hsic(L, L))
    return float(np.mean(ab) / np.sqrt(np.mean(aa) * np.mean(bb)))


def _features(n=70, layers=2, dim=6, seed=0) -> dict[str, torch.Tensor]:
    """Two correlated models and an unrelated third, [layers, n, dim] float64."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(layers, n, dim, generator=gen, dtype=torch.float64)
    return {"a": base, "b": base @ torch.randn(dim, dim, generator=gen, dtype=torch.float64)
            + 0.8 * torch.randn(layers, n, dim, generator=gen, dtype=torch.float64),
            "c": torch.randn(layers, n, dim, generator=gen, dtype=torch.float64) ** 2}


@pytest.mark.parametrize("estimator, hsic", [("reference", _np_hsic1), ("biased", _np_hsic0)])
def test_sweep_matches_numpy_for_one_batch_size_and_one_shuffle(estimator, hsic):
    feats = _features()
    runs = cc.sweep(feats, [("a", "b")], batch_sizes=(16, 32), examples=(50, 70), repeats=2, estimators=(estimator,),
                    seed=3)
    order = torch.randperm(70, generator=torch.Generator().manual_seed(4)).numpy()     # repeat 1: seed 3 + 1
    X, Y = feats["a"].numpy()[:, order], feats["b"].numpy()[:, order]
    # batch-size sweep at 70 examples, batch 32: 32 + 32 + 6 (a last batch of 6 >= 4 is its own minibatch)
    row = runs[(runs.sweep == "batch_size") & (runs.batch_size == 32) & (runs.repeat == 1)]
    assert list(row.examples.unique()) == [70]
    for layer in (0, 1):
        expected = _np_minibatch_cka(X[layer], Y[layer], 32, hsic)
        assert row[row.layer == layer].cka.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # examples sweep at 50 examples, batch 16: 16 + 16 + 16 + 2, and 2 < 4 examples are dropped -> 48 used
    row = runs[(runs.sweep == "examples") & (runs.batch_size == 16) & (runs.repeat == 1)]
    assert list(row.examples.unique()) == [48, 70]
    expected = _np_minibatch_cka(X[1, :48], Y[1, :48], 16, hsic)
    assert row[(row.examples == 48) & (row.layer == 1)].cka.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_sweep_agrees_with_the_minibatch_cka_kernel():
    feats = _features(n=64)
    runs = cc.sweep(feats, [("a", "c")], batch_sizes=(8, 32), examples=(64,), repeats=1, seed=0)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    kernel = torch.diagonal(cka_k.minibatch_cka(feats["a"][:, order], feats["c"][:, order], batch_size=8))
    got = runs[(runs.sweep == "batch_size") & (runs.batch_size == 8)].sort_values("layer").cka.to_numpy()
    np.testing.assert_allclose(got, kernel.numpy(), rtol=1e-12)


def test_a_model_with_itself_is_one_and_one_minibatch_is_the_full_batch_cka():
    feats = _features(n=40)
    runs = cc.sweep(feats, [("a", "a"), ("a", "b")], batch_sizes=(4, 8, 40), examples=(12, 40), repeats=3,
                    estimators=cc.ESTIMATORS)
    self_pair = runs[runs.model_b == "a"]
    np.testing.assert_allclose(self_pair.cka.to_numpy(), 1.0, rtol=1e-12)
    one_batch = runs[(runs.model_b == "b") & (runs.batch_size == 40) & (runs.estimator == "reference")]
    full = cc.full_batch(feats["a"], feats["b"])                  # CKA does not depend on the order of the examples
    for layer, value in enumerate(full):
        np.testing.assert_allclose(one_batch[one_batch.layer == layer].cka.to_numpy(), value, rtol=1e-10)
        X, Y = feats["a"][layer].numpy(), feats["b"][layer].numpy()
        assert value == pytest.approx(_np_minibatch_cka(X, Y, 40, _np_hsic1), rel=1e-10)
    # smaller batches differ from the full-batch value (the test can fail), but not by much for the unbiased HSIC
    small = runs[(runs.model_b == "b") & (runs.batch_size == 8) & (runs.estimator == "reference")]
    assert not np.allclose(small.groupby("layer").cka.first().to_numpy(), full, rtol=1e-6)


def _profile(section: dict, models=("zoo-dino", "zoo-mocov3", "zoo-mae")) -> Profile:
    return Profile("t", {"models": list(models), "cka_convergence": {"dataset": "imagenet50", **section}})


def test_protocol_pairs_the_first_model_with_each_itself_included_and_fills_defaults():
    spec = cc.protocol(_profile({"models": ["zoo-dino", "zoo-mocov3", "zoo-mae"], "batch_sizes": [32, 64]}))
    assert spec["pairs"] == [("zoo-dino", "zoo-mocov3"), ("zoo-dino", "zoo-mae"), ("zoo-dino", "zoo-dino")]
    assert spec["batch_sizes"] == (32, 64)
    assert spec["examples"] == cc.DEFAULTS["examples"] and spec["repeats"] == cc.DEFAULTS["repeats"]
    assert spec["tokens"] == "cls" and spec["layers"] is None


@pytest.mark.reliability("bad input", "a convergence protocol with unusable batch sizes, tokens, models or examples")
def test_bad_protocols_and_inputs_are_named():
    with pytest.raises(ValueError, match="increasing"):
        cc.protocol(_profile({"batch_sizes": [64, 32]}))
    with pytest.raises(ValueError, match="HSIC_1 needs at least 4"):
        cc.protocol(_profile({"batch_sizes": [2, 32]}))
    with pytest.raises(ValueError, match="tokens"):
        cc.protocol(_profile({"tokens": "spatial"}))
    with pytest.raises(ValueError, match="at least two model names"):
        cc.protocol(_profile({"models": ["zoo-dino"]}))
    feats = _features(n=20)
    with pytest.raises(ValueError, match="at most 20"):
        cc.sweep(feats, [("a", "b")], batch_sizes=(8,), examples=(30,), repeats=1)
    with pytest.raises(ValueError, match=r"\['z'\]"):
        cc.sweep(feats, [("a", "z")], batch_sizes=(8,), examples=(20,), repeats=1)
    with pytest.raises(ValueError, match="block 7"):
        cc._stack(torch.zeros(5, 6, 3), [2, 7])


def test_summary_and_settling_by_hand():
    runs = pd.DataFrame({"model_a": "a", "model_b": ["b"] * 4 + ["a"] * 2, "pair": ["a vs b"] * 4 + ["a vs a"] * 2,
                         "estimator": "reference", "sweep": "batch_size", "batch_size": [8, 8, 16, 16, 8, 16],
                         "examples": 32, "block": 1, "repeat": [0, 1, 0, 1, 0, 0],
                         "cka": [0.5, 0.7, 0.62, 0.64, 1.0, 1.0]})
    full = pd.DataFrame({"model_a": "a", "model_b": ["b", "a"], "pair": ["a vs b", "a vs a"], "block": 1,
                         "cka": [0.65, 1.0]})
    summary = cc.summarise(runs, full)
    row = summary[(summary.pair == "a vs b") & (summary.batch_size == 8)].iloc[0]
    assert (row["mean"], row.low, row.high, row.full) == pytest.approx((0.6, 0.5, 0.7, 0.65))
    assert row["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1)) and row.deviation == pytest.approx(-0.05)
    settle = cc.settling(summary).set_index("batch_size")      # the self pair (deviation 0) is left out
    assert settle.loc[8, "max_abs_deviation"] == pytest.approx(0.05)
    assert settle.loc[16, "max_abs_deviation"] == pytest.approx(0.02) and settle.loc[16, "max_spread"] == \
        pytest.approx(0.02)


def test_plots_draw_one_panel_per_pair_and_sweep():
    feats = _features(n=40)
    runs = cc.sweep(feats, [("a", "b"), ("a", "a")], batch_sizes=(8, 16), examples=(20, 40), repeats=2,
                    estimators=cc.ESTIMATORS)
    runs = runs.assign(pair=runs.model_a + " vs " + runs.model_b, block=runs.layer + 1)
    full = pd.DataFrame([{"model_a": a, "model_b": b, "pair": f"{a} vs {b}", "block": i + 1, "cka": v}
                         for a, b in (("a", "b"), ("a", "a")) for i, v in enumerate(cc.full_batch(feats[a], feats[b]))])
    summary = cc.summarise(runs.drop(columns="layer"), full)
    fig = plots.cka_convergence.convergence_panels(summary)
    assert len(fig.axes) == 4
    fig2 = plots.cka_convergence.deviation_by_estimator(summary)
    assert len(fig2.axes) == 1                                  # the self pair is left out
    plt.close("all")
    with pytest.raises(ValueError, match="estimator"):
        plots.cka_convergence.convergence_panels(summary, estimator="nope")

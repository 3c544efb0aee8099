"""OM App. B.1 (sections.cka_convergence) pinned down further (issue 17): every row of a sweep with both estimators,
batch sizes whose minibatches share a start or an end (so the memoised per-minibatch terms must be keyed by model,
estimator, start and stop), and reversed pairs, against float64 NumPy HSIC_0 / HSIC_1 on the shuffled images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from numpy_reference import hsic0 as _hsic0
from numpy_reference import hsic1 as _hsic1
from vitscope.sections import cka_convergence as cc


def _np_cka(X, Y, ranges, hsic):
    terms = []
    for s, e in ranges:
        K, L = X[s:e] @ X[s:e].T, Y[s:e] @ Y[s:e].T
        terms.append((hsic(K, L), hsic(K, K), hsic(L, L)))
    ab, aa, bb = np.array(terms).T
    return ab.mean() / np.sqrt(aa.mean() * bb.mean())


def test_every_row_of_both_sweeps_and_estimators_against_numpy():
    g = torch.Generator().manual_seed(11)
    base = torch.randn(2, 16, 3, generator=g, dtype=torch.float64)
    feats = {"a": base + 0.5 * torch.randn(2, 16, 3, generator=g, dtype=torch.float64),
             "b": base + 0.8 * torch.randn(2, 16, 3, generator=g, dtype=torch.float64),
             "c": torch.randn(2, 16, 4, generator=g, dtype=torch.float64)}
    pairs = [("a", "b"), ("c", "a"), ("a", "a")]
    runs = cc.sweep(feats, pairs, (4, 8, 12), (8, 16), 2, estimators=("biased", "reference"), seed=3)
    hsic = {"reference": _hsic1, "biased": _hsic0}
    settings = [("batch_size", 4, 16), ("batch_size", 8, 16), ("batch_size", 12, 16), ("examples", 4, 8),
                ("examples", 4, 16)]
    expected = []
    for r in range(2):
        order = torch.randperm(16, generator=torch.Generator().manual_seed(3 + r)).numpy()
        for a, b in pairs:
            for name, size, n in settings:
                for est in ("biased", "reference"):
                    ranges = [(s, min(s + size, n)) for s in range(0, n, size)]
                    for layer in range(2):
                        X, Y = feats[a][layer].numpy()[order], feats[b][layer].numpy()[order]
                        expected.append((a, b, name, est, r, size, n, layer, _np_cka(X, Y, ranges, hsic[est])))
    got = list(zip(runs.model_a, runs.model_b, runs.sweep, runs.estimator, runs.repeat, runs.batch_size,
                   runs.examples, runs.layer))
    assert got == [e[:8] for e in expected]
    np.testing.assert_allclose(runs.cka.to_numpy(), [e[8] for e in expected], rtol=1e-9, atol=1e-12)
    same = runs[(runs.model_a == "a") & (runs.model_b == "a")]
    np.testing.assert_allclose(same.cka.to_numpy(), 1.0, rtol=1e-12)
    # the biased estimator differs from the reference one (else the memo could mix them up unseen)
    ref = runs[runs.estimator == "reference"].cka.to_numpy()
    assert np.abs(runs[runs.estimator == "biased"].cka.to_numpy() - ref).max() > 1e-3


def test_batch_terms_are_memoised_per_model_estimator_and_range():
    g = torch.Generator().manual_seed(2)
    feats = {"a": torch.randn(1, 12, 3, generator=g, dtype=torch.float64),
             "b": torch.randn(1, 12, 3, generator=g, dtype=torch.float64)}
    order = torch.arange(12).flip(0)
    terms = cc._BatchTerms(feats, order)
    X, Y = feats["a"][0].numpy()[::-1], feats["b"][0].numpy()[::-1]
    for s, e in ((0, 4), (4, 8), (0, 8), (4, 12), (0, 12)):
        K, L = X[s:e] @ X[s:e].T, Y[s:e] @ Y[s:e].T
        assert terms.gram("a", s, e)[0].numpy() == pytest.approx(K, abs=1e-12)
        assert terms.hsic("reference", "a", "b", s, e).tolist() == pytest.approx([_hsic1(K, L)], abs=1e-12)
        assert terms.hsic("biased", "b", "a", s, e).tolist() == pytest.approx([_hsic0(K, L)], abs=1e-12)
        assert terms.hsic("reference", "b", "b", s, e).tolist() == pytest.approx([_hsic1(L, L)], abs=1e-12)
    assert terms.hsic("reference", "b", "a", 0, 4) is terms.hsic("reference", "a", "b", 0, 4)   # one term per pair
    assert terms.gram("a", 0, 4) is terms.gram("a", 0, 4)
    assert terms.cka("reference", "a", "b", 12, 8).tolist() == pytest.approx(
        [_np_cka(X, Y, [(0, 8), (8, 12)], _hsic1)], abs=1e-12)
    assert terms.cka("biased", "a", "b", 10, 4).tolist() == pytest.approx(
        [_np_cka(X, Y, [(0, 4), (4, 8), (8, 10)], _hsic0)], abs=1e-12)


def test_full_batch_refuses_stacks_of_different_depths():
    g = torch.Generator().manual_seed(4)
    A, B = torch.randn(2, 10, 3, generator=g), torch.randn(3, 10, 3, generator=g)
    with pytest.raises(ValueError):
        cc.full_batch(A, B)
    values = cc.full_batch(A.double(), B[:2].double())
    assert len(values) == 2
    assert values[1] == pytest.approx(_np_debiased(A[1].double().numpy(), B[1].double().numpy()), rel=1e-10)


def _np_debiased(X, Y):
    K, L = X @ X.T, Y @ Y.T
    return _hsic1(K, L) / np.sqrt(_hsic1(K, K) * _hsic1(L, L))

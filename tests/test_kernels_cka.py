"""Tests for vitscope.kernels.cka against an independent NumPy transcription of OM App. B.1, eqs. (2)-(3)."""

import math

import numpy as np
import pytest
import torch

from vitscope.kernels import cka

RNG = np.random.default_rng(0)


# ---------- independent NumPy reference (does not import vitscope) ----------

def np_hsic1(K, L):
    """Eq. (3) written literally with explicit ones vectors."""
    n = K.shape[0]
    Kt, Lt = K.astype(np.float64).copy(), L.astype(np.float64).copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones((n, 1))
    term1 = np.trace(Kt @ Lt)
    term2 = (one.T @ Kt @ one).item() * (one.T @ Lt @ one).item() / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one.T @ Kt @ Lt @ one).item()
    return (term1 + term2 - term3) / (n * (n - 3))


def np_tm_kernel(X):
    """Teaching Matters cka_main.py: K = XXᵀ; K -= K.min(); K /= K.max(); K.fill_diagonal_(0)."""
    K = X.reshape(X.shape[0], -1) @ X.reshape(X.shape[0], -1).T
    K = K - K.min()
    K = K / K.max()
    np.fill_diagonal(K, 0.0)
    return K


def np_minibatch_cka(A, B, bs, kernel=None):
    """Eq. (2): ratio of batch means, explicit loops over layer pairs and batches."""
    kernel = kernel or (lambda X: X.reshape(X.shape[0], -1) @ X.reshape(X.shape[0], -1).T)
    n = A[0].shape[0]
    batches = [(s, min(s + bs, n)) for s in range(0, n, bs)]
    out = np.zeros((len(A), len(B)))
    for i, X in enumerate(A):
        for j, Y in enumerate(B):
            xy = xx = yy = 0.0
            for s, e in batches:
                K, L = kernel(X[s:e]), kernel(Y[s:e])
                xy += np_hsic1(K, L) / len(batches)
                xx += np_hsic1(K, K) / len(batches)
                yy += np_hsic1(L, L) / len(batches)
            out[i, j] = xy / (math.sqrt(xx) * math.sqrt(yy))
    return out


def feats(n_layers, n, p, seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, p))
    # Layers share structure so CKA values are spread out, not all ~0.
    return [base @ rng.normal(size=(p, p)) + 0.5 * rng.normal(size=(n, p)) for _ in range(n_layers)]


def t(xs):
    return [torch.from_numpy(x) for x in xs]


# ---------- HSIC_1 ----------

def test_hsic1_hand_case():
    # Diagonals (9 and 5) must be ignored. Off-diagonal K̃: pairs {0,1}, {2,3} = 1. L̃: (0,1) = 3, (1,2) = 1. n = 4:
    # n(n-3) = 4, (n-1)(n-2) = 6, 2/(n-2) = 1.
    # HSIC1(K,L): tr(K̃L̃) = 2*(1*3) = 6; 1ᵀK̃1 = 4, 1ᵀL̃1 = 8 -> 32/6 = 16/3; K̃1 = [1,1,1,1], L̃1 = [3,4,1,0]
    #   -> 1ᵀK̃L̃1 = 8. (6 + 16/3 - 8)/4 = 5/6.
    # HSIC1(K,K): tr = 4; 16/6 = 8/3; K̃1·K̃1 = 4 -> (4 + 8/3 - 4)/4 = 2/3.
    # HSIC1(L,L): tr = 2*(9+1) = 20; 64/6 = 32/3; L̃1·L̃1 = 26 -> (20 + 32/3 - 26)/4 = 7/6.
    # CKA = (5/6) / sqrt(2/3 * 7/6) = 5 / (2 sqrt 7).
    K = torch.tensor([[9, 1, 0, 0], [1, 9, 0, 0], [0, 0, 9, 1], [0, 0, 1, 9]], dtype=torch.float64)
    L = torch.tensor([[5, 3, 0, 0], [3, 5, 1, 0], [0, 1, 5, 0], [0, 0, 0, 5]], dtype=torch.float64)
    assert cka.hsic1(K, L).item() == pytest.approx(5 / 6, abs=1e-14)
    assert cka.hsic1(K, K).item() == pytest.approx(2 / 3, abs=1e-14)
    assert cka.hsic1(L, L).item() == pytest.approx(7 / 6, abs=1e-14)
    got = cka.minibatch_cka_from_grams([K[None]], [L[None]])
    assert got.item() == pytest.approx(5 / (2 * math.sqrt(7)), abs=1e-14)


@pytest.mark.parametrize("n", [4, 7, 32])
def test_hsic1_matches_numpy_and_broadcasts(n):
    X, Y, Z = RNG.normal(size=(n, 5)), RNG.normal(size=(n, 3)), RNG.normal(size=(n, 8))
    Ks = np.stack([X @ X.T, Z @ Z.T, (X + 1) @ (X + 1).T])
    L = Y @ Y.T
    got = cka.hsic1(torch.from_numpy(Ks), torch.from_numpy(L))  # [3, n, n] vs [n, n]
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), [np_hsic1(k, L) for k in Ks], rtol=0, atol=1e-10)
    cross = cka.hsic1_cross(torch.from_numpy(Ks), torch.from_numpy(np.stack([L, Ks[1]])))
    ref = np.array([[np_hsic1(k, m) for m in (L, Ks[1])] for k in Ks])
    np.testing.assert_allclose(cross.numpy(), ref, rtol=0, atol=1e-10)


def test_hsic1_needs_four_examples():
    with pytest.raises(ValueError, match="n >= 4"):
        cka.hsic1(torch.eye(3), torch.eye(3))


# ---------- minibatch CKA ----------

@pytest.mark.parametrize("la,lb,n,bs", [(1, 1, 64, 32), (3, 2, 70, 32), (4, 5, 45, 8), (2, 3, 37, 16)])
def test_minibatch_matches_numpy(la, lb, n, bs):
    A, B = feats(la, n, 6, seed=n), feats(lb, n, 9, seed=n + 1)  # p1 != p2; n % bs gives partial batches
    got = cka.minibatch_cka(t(A), t(B), batch_size=bs)
    assert got.shape == (la, lb) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), np_minibatch_cka(A, B, bs), rtol=0, atol=1e-10)


def test_minibatch_accepts_stacked_tensor_and_token_features():
    A = RNG.normal(size=(3, 40, 4, 5))  # [L, n, T, D]: tokens flattened per example
    B = feats(2, 40, 7, seed=3)
    got = cka.minibatch_cka(torch.from_numpy(A), t(B), batch_size=20)
    np.testing.assert_allclose(got.numpy(), np_minibatch_cka(list(A), B, 20), rtol=0, atol=1e-10)


def test_from_grams_and_streaming_agree():
    A, B = feats(3, 48, 5, seed=7), feats(2, 48, 4, seed=8)
    ga = [torch.stack([cka.gram(x[s:s + 16]) for x in t(A)]) for s in range(0, 48, 16)]
    gb = [torch.stack([cka.gram(y[s:s + 16]) for y in t(B)]) for s in range(0, 48, 16)]
    ref = cka.minibatch_cka(t(A), t(B), batch_size=16)
    torch.testing.assert_close(cka.minibatch_cka_from_grams(ga, gb), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(cka.minibatch_cka_from_grams(torch.stack(ga), torch.stack(gb)), ref,
                               rtol=0, atol=1e-12)
    acc = cka.MinibatchCKA()
    for a, b in zip(ga, gb):
        acc.update(a, b)
    torch.testing.assert_close(acc.compute(), ref, rtol=0, atol=1e-12)


def test_batch_size_n_equals_debiased_linear_cka():
    X, Y = RNG.normal(size=(50, 6)), RNG.normal(size=(50, 4)) + 0.3 * RNG.normal(size=(50, 1))
    mb = cka.minibatch_cka([torch.from_numpy(X)], [torch.from_numpy(Y)], batch_size=50).item()
    assert mb == pytest.approx(cka.linear_cka(torch.from_numpy(X), torch.from_numpy(Y), debiased=True), abs=1e-10)


# ---------- full-batch linear CKA ----------

def test_biased_cka_closed_form():
    X, Y = RNG.normal(size=(30, 7)), RNG.normal(size=(30, 4))
    Y[:, 0] += X[:, 0]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    ref = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert cka.linear_cka(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(ref, abs=1e-12)


ESTIMATORS = {
    "biased": lambda X, Y: cka.linear_cka(X, Y),
    "debiased": lambda X, Y: cka.linear_cka(X, Y, debiased=True),
    "minibatch": lambda X, Y: cka.minibatch_cka([X], [Y], batch_size=20).item(),
    "teaching-matters": lambda X, Y: cka.minibatch_cka([X], [Y], batch_size=20, mode="teaching-matters").item(),
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_invariances(name):
    f = ESTIMATORS[name]
    rng = np.random.default_rng(11)
    X, Y = rng.normal(size=(60, 8)), rng.normal(size=(60, 5))
    Y[:, :3] += X[:, :3]
    X_, Y_ = torch.from_numpy(X), torch.from_numpy(Y)
    base = f(X_, Y_)
    assert f(X_, X_) == pytest.approx(1.0, abs=1e-12)
    assert f(Y_, X_) == pytest.approx(base, abs=1e-12)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert f(torch.from_numpy(X @ Q), Y_) == pytest.approx(base, abs=1e-10)
    assert f(3.7 * X_, Y_) == pytest.approx(base, abs=1e-10)
    # A generic invertible map changes linear CKA: proves the assertions above can fail.
    M = np.diag(np.logspace(-2, 2, 8)) @ rng.normal(size=(8, 8))
    assert abs(f(torch.from_numpy(X @ M), Y_) - base) > 1e-3


def test_minibatch_matrix_symmetric():
    A, B = feats(3, 40, 5, seed=21), feats(2, 40, 6, seed=22)
    ab = cka.minibatch_cka(t(A), t(B), batch_size=8)
    ba = cka.minibatch_cka(t(B), t(A), batch_size=8)
    torch.testing.assert_close(ab, ba.T, rtol=0, atol=1e-12)


# ---------- teaching-matters compatibility mode ----------

def test_teaching_matters_mode_matches_original_and_differs_from_reference():
    A, B = feats(3, 40, 6, seed=31), feats(2, 40, 5, seed=32)
    got = cka.minibatch_cka(t(A), t(B), batch_size=8, mode="teaching-matters")
    np.testing.assert_allclose(got.numpy(), np_minibatch_cka(A, B, 8, kernel=np_tm_kernel), rtol=0, atol=1e-10)
    ref = cka.minibatch_cka(t(A), t(B), batch_size=8)
    assert (got - ref).abs().max().item() > 1e-2


# ---------- errors ----------

def test_error_last_batch_too_small():
    A = t(feats(1, 66, 4, seed=1))
    with pytest.raises(ValueError, match=r"2 < 4 examples.*batch_size"):
        cka.minibatch_cka(A, A, batch_size=32)


def test_error_mismatched_n():
    with pytest.raises(ValueError, match=r"\(40, 4\).*\(39, 4\)"):
        cka.minibatch_cka(t(feats(1, 40, 4, 1)), t(feats(1, 39, 4, 1)), batch_size=8)
    with pytest.raises(ValueError, match="same n"):
        cka.linear_cka(torch.randn(10, 3), torch.randn(11, 3))


def test_error_nan_features():
    A = t(feats(2, 16, 4, seed=2))
    bad = [A[0], A[1].clone()]
    bad[1][3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"feats_b\[1\].*NaN"):
        cka.minibatch_cka(A, bad, batch_size=8)
    with pytest.raises(ValueError, match="X .*NaN"):
        cka.gram(bad[1])


def test_error_unknown_mode():
    A = t(feats(1, 16, 4, seed=2))
    with pytest.raises(ValueError, match="reference.*teaching-matters"):
        cka.minibatch_cka(A, A, batch_size=8, mode="kornblith")
    with pytest.raises(ValueError, match="choose from"):
        cka.MinibatchCKA(mode="nope")


def test_hsic0_normalisation_is_n_minus_1_squared():
    """Hand-computed: tr(K H L H) / (n-1)^2 with an explicit centring matrix, n = 5."""
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    K, L = X @ X.T, Y @ Y.T
    H = np.eye(5) - np.ones((5, 5)) / 5
    expected = np.trace(K @ H @ L @ H) / 16.0
    assert float(cka.hsic0(torch.from_numpy(K), torch.from_numpy(L))) == pytest.approx(expected, rel=1e-12)
    assert float(cka.hsic0(torch.from_numpy(K), torch.from_numpy(L))) != pytest.approx(expected * 16 / 25, rel=1e-3)


def test_nan_features_are_rejected_by_name():
    A = [torch.randn(16, 4), torch.randn(16, 4)]
    A[1][3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"feats_a\[1\].*NaN"):
        cka.minibatch_cka(A, A[:1], batch_size=8)
    with pytest.raises(ValueError, match="Y.*NaN"):
        cka.linear_cka(torch.randn(8, 3), torch.full((8, 3), float("inf")))
    with pytest.raises(ValueError, match="X.*NaN"):
        cka.gram_tokens(torch.full((4, 2, 3), float("nan")))


def test_gram_tokens_cka_within_1e6_of_float64():
    """Token-split float32 Grams (the extraction's fast path) vs float64 Grams, at ViT-S/16 sizes (197 x 384)."""
    g = torch.Generator().manual_seed(0)
    shift = torch.randn(197, 384, generator=g) * 3      # a large shared component, as residual streams have
    A = [torch.randn(32, 197, 384, generator=g) + shift for _ in range(2)]
    B = [torch.randn(32, 197, 384, generator=g) * 0.5 + A[0] * 0.5 for _ in range(2)]
    fast_a, fast_b = torch.stack([cka.gram_tokens(x) for x in A]), torch.stack([cka.gram_tokens(x) for x in B])
    ref_a = torch.stack([cka.gram(x.double()) for x in A])
    ref_b = torch.stack([cka.gram(x.double()) for x in B])
    assert fast_a.dtype == torch.float64
    err = (cka.minibatch_cka_from_grams([fast_a], [fast_b]) - cka.minibatch_cka_from_grams([ref_a], [ref_b]))
    assert err.abs().max() < 1e-6
    torch.testing.assert_close(cka.gram_tokens(A[0][:4].double()), ref_a[0][:4, :4], atol=1e-9, rtol=1e-12)


@pytest.mark.parametrize("p_chunk_bytes", [40, 1000, 10**9])   # many chunks with a ragged last one, a few, one
def test_gram_tokens_is_exact_in_float64_whatever_the_chunking(monkeypatch, p_chunk_bytes):
    """float64 input: chunked, centred and recombined, the Gram equals X Xᵀ to rounding (an exact identity)."""
    monkeypatch.setattr(cka, "_GRAM_CHUNK_BYTES", p_chunk_bytes)
    X = torch.randn(6, 7, 5, dtype=torch.float64) + 4.0
    ref = X.reshape(6, -1).numpy() @ X.reshape(6, -1).numpy().T
    np.testing.assert_allclose(cka.gram_tokens(X).numpy(), ref, rtol=1e-12, atol=1e-10)


def test_gram_tokens_half_input_and_inf_rejected():
    X = torch.randn(5, 3, 4)
    np.testing.assert_allclose(cka.gram_tokens(X.half()).numpy(), cka.gram(X.half().double()).numpy(), rtol=1e-5,
                               atol=1e-4)
    X[2, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="X.*NaN or Inf"):
        cka.gram_tokens(X)
    with pytest.raises(ValueError, match="floating point"):
        cka.gram_tokens(torch.ones(4, 2, 3, dtype=torch.long))

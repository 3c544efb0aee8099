"""Property-based tests of the kernels' invariants (issue 17), through their public functions only.

Hypothesis draws shapes, scales and a seed; the values come from a NumPy generator seeded by it, so each example
is cheap and reproducible. Every test runs few examples, with no deadline and a derandomised search (the same
examples on every run, CI included) and no example database on disk.

The invariants: CKA is invariant to orthogonal transforms, isotropic scaling and translation of either
representation and is 1 between a representation and itself; HSIC_1 is unbiased (its mean over independent
batches matches the population value ||Cov(X, Y)||_F^2 within a tolerance derived from the batches' own spread);
attention distance lies in [0, sqrt(2)] on the unit square, is 0 for the identity map, ignores the mass on prefix
keys (Teaching Matters renormalises each row) and is unchanged by symmetries of the token grid; the weighted
k-NN vote is invariant to any positive rescaling of each feature row and to the chunk size.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vitscope.kernels import attention, cka, knn

FAST = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _features(rng: np.random.Generator, n: int, p: int) -> torch.Tensor:
    """Gaussian features with uneven column scales (an isotropic cloud would make invariances too easy)."""
    return torch.from_numpy(rng.normal(size=(n, p)) * rng.uniform(0.2, 3.0, size=p))


def _orthogonal(rng: np.random.Generator, p: int) -> torch.Tensor:
    q, r = np.linalg.qr(rng.normal(size=(p, p)))
    return torch.from_numpy(q * np.sign(np.diag(r)))  # Haar-distributed, and never the identity by construction


# ----------------------------------------------------------------------------- CKA

@FAST
@given(n=st.integers(8, 24), p=st.integers(1, 12), q=st.integers(1, 12), seed=seeds,
       scale=st.floats(1e-3, 1e3), debiased=st.booleans())
def test_linear_cka_invariances(n, p, q, seed, scale, debiased):
    rng = _rng(seed)
    X = _features(rng, n, p)
    Y = X[:, :min(p, q)] @ torch.from_numpy(rng.normal(size=(min(p, q), q))) + _features(rng, n, q)
    base = cka.linear_cka(X, Y, debiased=debiased)
    assume(math.isfinite(base))  # HSIC_1 of a layer with itself may be <= 0 on a tiny batch: CKA undefined
    assert -1 - 1e-9 <= base <= 1 + 1e-9 if debiased else 0 <= base <= 1 + 1e-9
    shift = torch.from_numpy(rng.normal(scale=5.0, size=(1, p)))
    for X2 in (X @ _orthogonal(rng, p), scale * X, X + shift):
        assert cka.linear_cka(X2, Y, debiased=debiased) == pytest.approx(base, rel=1e-7, abs=1e-9)
    assert cka.linear_cka(Y, X, debiased=debiased) == pytest.approx(base, rel=1e-9, abs=1e-12)  # symmetric
    self_cka = cka.linear_cka(X, X, debiased=debiased)
    assert self_cka == pytest.approx(1.0, abs=1e-9) or (debiased and self_cka == pytest.approx(-1.0))
    if not debiased or float(cka.hsic1(cka.gram(X), cka.gram(X))) > 0:
        assert self_cka == pytest.approx(1.0, abs=1e-9)


@FAST
@given(batches=st.integers(1, 3), batch_size=st.integers(4, 10), dims=st.lists(st.integers(1, 8), min_size=1,
       max_size=3), seed=seeds, scale=st.floats(1e-2, 1e2))
def test_minibatch_cka_invariances_and_self_similarity(batches, batch_size, dims, seed, scale):
    rng = _rng(seed)
    n = batches * batch_size
    layers = [_features(rng, n, p) for p in dims]
    base = cka.minibatch_cka(layers, layers, batch_size=batch_size)
    assert base.shape == (len(dims), len(dims)) and base.dtype == torch.float64
    hsic_self = [float(sum(cka.hsic1(cka.gram(f[s:s + batch_size]), cka.gram(f[s:s + batch_size]))
                           for s in range(0, n, batch_size))) for f in layers]
    assume(all(h > 0 for h in hsic_self))  # otherwise CKA is undefined (NaN) for that layer, by design
    assert torch.allclose(base.diagonal(), torch.ones(len(dims), dtype=torch.float64), atol=1e-9)
    assert torch.allclose(base, base.T, atol=1e-12)
    moved = [scale * f @ _orthogonal(rng, f.shape[1]) for f in layers]
    assert torch.allclose(cka.minibatch_cka(moved, layers, batch_size=batch_size), base, atol=1e-8)


@settings(max_examples=6, deadline=None, derandomize=True, database=None)
@given(p=st.integers(1, 4), q=st.integers(1, 4), n=st.integers(6, 12), coupled=st.booleans(), seed=seeds)
def test_hsic1_is_unbiased(p, q, n, coupled, seed):
    """Linear kernels: HSIC = ||Cov(X, Y)||_F^2. With X ~ N(0, I_p) and Y = X A + N(0, I_q), Cov(X, Y) = A.

    The mean of HSIC_1 over B independent batches must match ||A||_F^2 within 5 standard errors, the standard
    error being the batches' own sample std / sqrt(B) (a 5-sigma miss has probability < 1e-6). The biased HSIC_0
    on the same batches is far outside that band, so this check can tell an unbiased estimator from a biased one.
    """
    rng, B = _rng(seed), 3000
    A = rng.normal(size=(p, q)) if coupled else np.zeros((p, q))
    X = rng.normal(size=(B, n, p))
    Y = X @ A + rng.normal(size=(B, n, q))
    X, Y = torch.from_numpy(X), torch.from_numpy(Y)
    K, L = X @ X.mT, Y @ Y.mT
    values = cka.hsic1(K, L)
    assert values.shape == (B,)
    population = float((A ** 2).sum())
    se = float(values.std()) / math.sqrt(B)
    assert abs(float(values.mean()) - population) < 5 * se
    biased = cka.hsic0(K, L)
    assert abs(float(biased.mean()) - population) > 5 * se  # the test has the power to see a bias


# ----------------------------------------------------------------------------- attention distance

def _random_attention(rng: np.random.Generator, B: int, H: int, T: int, temperature: float) -> torch.Tensor:
    logits = torch.from_numpy(rng.normal(size=(B, H, T, T)) / temperature)
    return logits.softmax(-1)


@FAST
@given(B=st.integers(1, 3), H=st.integers(1, 3), G=st.integers(2, 6), n_prefix=st.integers(0, 2), seed=seeds,
       temperature=st.floats(0.05, 5.0))
def test_attention_distance_range_identity_and_prefix_mass(B, H, G, n_prefix, seed, temperature):
    rng = _rng(seed)
    T = n_prefix + G * G
    attn = _random_attention(rng, B, H, T, temperature)
    dist = attention.attention_distance(attn, n_prefix=n_prefix)
    assert dist.shape == (B, H)
    assert bool((dist >= 0).all()) and bool((dist <= math.sqrt(2) + 1e-9).all())
    eye = torch.eye(T, dtype=torch.float64).expand(B, H, T, T)
    assert torch.equal(attention.attention_distance(eye, n_prefix=n_prefix), torch.zeros(B, H, dtype=torch.float64))
    pixels = attention.attention_distance(attn, n_prefix=n_prefix, variant="pixels", patch_size=16)
    assert bool((pixels >= 0).all()) and bool((pixels <= 16 * (G - 1) * math.sqrt(2) + 1e-9).all())
    if n_prefix:  # Teaching Matters renormalises each spatial row: moving mass onto prefix keys changes nothing
        keep = torch.from_numpy(rng.uniform(0.05, 1.0, size=(B, H, T, 1)))
        spatial_mass = attn[..., n_prefix:].sum(-1, keepdim=True)
        moved = attn.clone()
        moved[..., n_prefix:] *= keep
        moved[..., :n_prefix] += (1 - keep) * spatial_mass / n_prefix
        assert torch.allclose(attention.attention_distance(moved, n_prefix=n_prefix), dist, atol=1e-9)


@FAST
@given(G=st.integers(2, 6), n_prefix=st.integers(0, 2), seed=seeds,
       symmetry=st.sampled_from(["transpose", "flip_rows", "flip_cols", "rotate"]))
def test_attention_distance_is_unchanged_by_grid_symmetries(G, n_prefix, seed, symmetry):
    """Relabelling the tokens by a symmetry of the square grid (for queries and keys alike) preserves distances."""
    rng = _rng(seed)
    T = n_prefix + G * G
    attn = _random_attention(rng, 2, 2, T, 0.3)
    grid = torch.arange(G * G).reshape(G, G)
    moved = {"transpose": grid.T, "flip_rows": grid.flip(0), "flip_cols": grid.flip(1),
             "rotate": grid.rot90(1)}[symmetry].reshape(-1)
    perm = torch.cat([torch.arange(n_prefix), n_prefix + moved])
    assert not torch.equal(perm, torch.arange(T))  # a real relabelling for every G >= 2
    relabelled = attn[:, :, perm][:, :, :, perm]
    for kwargs in ({}, {"variant": "pixels", "patch_size": 8}):
        assert torch.allclose(attention.attention_distance(relabelled, n_prefix=n_prefix, **kwargs),
                              attention.attention_distance(attn, n_prefix=n_prefix, **kwargs), atol=1e-9)


@pytest.mark.parametrize("G", [2, 3, 5])
def test_attention_distance_hand_cases(G):
    """Every query attending to the token mirrored through the grid centre: distance = |2 p - centre|, by hand."""
    T = 1 + G * G
    attn = torch.zeros(1, 1, T, T, dtype=torch.float64)
    attn[0, 0, 0, 0] = 1.0
    for r in range(G):
        for c in range(G):
            attn[0, 0, 1 + r * G + c, 1 + (G - 1 - r) * G + (G - 1 - c)] = 1.0
    step = 1 / (G - 1)
    expected = np.mean([math.hypot((G - 1 - 2 * c) * step, (G - 1 - 2 * r) * step)
                        for r in range(G) for c in range(G)])
    assert float(attention.attention_distance(attn)[0, 0]) == pytest.approx(expected, rel=1e-12)
    if G == 2:  # every query looks at the opposite corner of the unit square
        assert expected == pytest.approx(math.sqrt(2))
    uniform = torch.zeros(1, 1, T, T, dtype=torch.float64)
    uniform[..., 1:] = 1.0 / (G * G)
    uniform[0, 0, 0] = torch.eye(T, dtype=torch.float64)[0]
    assert float(attention.attention_distance(uniform)[0, 0]) == pytest.approx(
        attention.uniform_attention_distance(G), rel=1e-12)


# ----------------------------------------------------------------------------- weighted k-NN

@FAST
@given(n_train=st.integers(5, 40), n_test=st.integers(1, 30), D=st.integers(2, 16), C=st.integers(2, 5),
       k=st.integers(1, 20), seed=seeds, chunk=st.integers(1, 7))
def test_weighted_knn_invariant_to_feature_scaling(n_train, n_test, D, C, k, seed, chunk):
    rng = _rng(seed)
    k = min(k, n_train)
    train = torch.from_numpy(rng.normal(size=(n_train, D)))
    test = torch.from_numpy(rng.normal(size=(n_test, D)))
    labels = torch.from_numpy(rng.integers(0, C, size=n_train))
    base = knn.weighted_knn(train, labels, test, k=k, num_classes=C)
    assert base.shape == (n_test,) and base.dtype == torch.int64 and bool(((base >= 0) & (base < C)).all())
    row_scale_train = torch.from_numpy(rng.uniform(1e-3, 1e3, size=(n_train, 1)))
    row_scale_test = torch.from_numpy(rng.uniform(1e-3, 1e3, size=(n_test, 1)))
    scaled = knn.weighted_knn(train * row_scale_train, labels, test * row_scale_test, k=k, num_classes=C)
    assert torch.equal(scaled, base)
    assert torch.equal(knn.weighted_knn(train, labels, test, k=k, num_classes=C, chunk_size=chunk), base)
    # k = 1 is the nearest training feature by cosine (independent NumPy reference)
    a = train.numpy() / np.linalg.norm(train.numpy(), axis=1, keepdims=True)
    b = test.numpy() / np.linalg.norm(test.numpy(), axis=1, keepdims=True)
    nearest = labels.numpy()[(b @ a.T).argmax(1)]
    assert knn.weighted_knn(train, labels, test, k=1, num_classes=C).tolist() == nearest.tolist()

"""vitscope.kernels cka / stats / invariance / validation: messages, bounds, defaults and precision checked exactly.

Issue 17: mutants of these modules survived because the tests matched a message with a loose ``match=`` (which finds
"n" inside "XXnXX"), never tried a value exactly at a documented bound, never called without a defaulted keyword,
and fed float64 only (so a dropped ``.to(torch.float64)`` changed nothing). Here each error message is compared with
the whole text it must be, written out by hand; each bound is tried at the bound and just past it; each default is
compared with the explicit value and an independent reference; float32 inputs are compared with a float64 NumPy
reference at a tolerance float32 arithmetic cannot meet.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from vitscope.kernels import cka, stats
from vitscope.kernels.invariance import augmentation_similarity
from vitscope.kernels.validation import check_features, check_finite, check_labels, check_same_rows


def raises(msg, fn, *args, exc=ValueError, **kwargs):
    """``fn(*args, **kwargs)`` raises ``exc`` whose message is exactly ``msg``."""
    with pytest.raises(exc) as err:
        fn(*args, **kwargs)
    assert str(err.value) == msg
    return err.value


NAN_TAIL = " holds NaN or Inf values; check the model's outputs or recompute the cached features"


# ---------------------------------------------------------------- NumPy references (no vitscope)
def np_hsic1(K, L):
    """OM eq. (3) literally, for any square K, L (not only symmetric ones)."""
    n = K.shape[0]
    Kt, Lt = K.astype(np.float64).copy(), L.astype(np.float64).copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def np_hsic0(K, L):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K.astype(np.float64) @ H @ L.astype(np.float64) @ H) / (n - 1) ** 2


def np_minibatch_cka(A, B, bs):
    n = A[0].shape[0]
    out = np.zeros((len(A), len(B)))
    for i, X in enumerate(A):
        for j, Y in enumerate(B):
            terms = []
            for s in range(0, n, bs):
                K, L = X[s:s + bs] @ X[s:s + bs].T, Y[s:s + bs] @ Y[s:s + bs].T
                terms.append((np_hsic1(K, L), np_hsic1(K, K), np_hsic1(L, L)))
            ab, aa, bb = np.mean(terms, axis=0)
            out[i, j] = ab / math.sqrt(aa * bb)
    return out


def f32(shape, seed, scale=1.0, shift=0.0):
    """float32 values (exactly representable in float64, so the reference sees the same numbers)."""
    return (torch.from_numpy(np.random.default_rng(seed).normal(size=shape)) * scale + shift).float()


# ================================================================ kernels/validation.py
def test_check_finite_message_and_identity():
    x = torch.zeros(2, 3)
    assert check_finite(x, "feats") is x
    raises("feats (shape (2, 3))" + NAN_TAIL, check_finite, torch.tensor([[0.0, float("inf"), 0.0], [0, 0, 0]]),
           "feats")


def test_check_features_messages_bounds_and_flatten():
    raises("feats must be a tensor [n, D]; got list", check_features, [[1.0]], "feats")
    raises("feats must be a tensor [n, D]; got (2, 3, 4)", check_features, torch.zeros(2, 3, 4), "feats")
    raises("feats must be a tensor [n, D] (or [n, ...]); got (5,)", check_features, torch.zeros(5), "feats",
           flatten=True)
    raises("feats must be a tensor [n, D] (or [n, ...]); got int", check_features, 3, "feats", flatten=True)
    raises("feats must be floating point; got torch.int64 (convert with .float())", check_features,
           torch.zeros(2, 3, dtype=torch.long), "feats")
    raises("feats has 0 rows (shape (0, 3)); at least 1 needed", check_features, torch.zeros(0, 3), "feats")
    raises("feats has 2 rows (shape (2, 3)); at least 3 needed", check_features, torch.zeros(2, 3), "feats",
           min_rows=3)
    raises("feats (shape (2, 2))" + NAN_TAIL, check_features, torch.tensor([[0.0, float("nan")], [0, 0]]), "feats")
    x = torch.arange(24.0).reshape(2, 3, 4)
    flat = check_features(x, "feats", flatten=True)
    assert flat.shape == (2, 12) and torch.equal(flat, x.reshape(2, 12))
    m = torch.zeros(3, 5)
    assert check_features(m, "feats", min_rows=3) is m          # exactly min_rows rows is enough
    assert check_features(torch.zeros(1, 5), "feats").shape == (1, 5)
    assert check_features(m, "feats", flatten=True).shape == (3, 5)


def test_check_same_rows_message_and_value():
    assert check_same_rows(torch.zeros(4, 2), torch.zeros(4, 7), ("a", "b")) == 4
    raises("a (4, 2) and b (5, 2) must have the same n (examples, first dimension)", check_same_rows,
           torch.zeros(4, 2), torch.zeros(5, 2), ("a", "b"))


def test_check_labels_messages_and_bounds():
    y = torch.tensor([0, 2, 1])
    assert check_labels(y, 3, "labels", num_classes=3) is y       # max label = num_classes - 1 is allowed
    assert check_labels(y, 3, "labels") is y
    raises("labels holds label 3 >= num_classes=3", check_labels, torch.tensor([0, 3, 1]), 3, "labels",
           num_classes=3)
    raises("labels holds negative labels (min -1)", check_labels, torch.tensor([0, -1, 1]), 3, "labels")
    raises("labels has 2 labels but its features have 3 rows", check_labels, torch.tensor([0, 1]), 3, "labels")
    raises("labels must be an integer tensor [n]; got list", check_labels, [0, 1], 2, "labels")
    raises("labels must be an integer tensor [n]; got ((2,), torch.float32)", check_labels, torch.zeros(2), 2,
           "labels")
    raises("labels must be an integer tensor [n]; got ((2,), torch.bool)", check_labels, torch.zeros(2, dtype=bool),
           2, "labels")
    raises("labels must be an integer tensor [n]; got ((1, 2), torch.int64)", check_labels,
           torch.zeros(1, 2, dtype=torch.long), 1, "labels")
    empty = torch.zeros(0, dtype=torch.long)
    assert check_labels(empty, 0, "labels", num_classes=2) is empty    # no min()/max() of an empty tensor


# ================================================================ cka.py: messages
def test_gram_messages_and_float64_from_float32():
    raises("X must be a tensor [n, D] (or [n, ...]); got list", cka.gram, [[1.0]])
    raises("X must be floating point; got torch.int64 (convert with .float())", cka.gram,
           torch.ones(3, 2, dtype=torch.long))
    X = f32((9, 3, 50), 0, scale=3.0, shift=1.0)
    G = cka.gram(X)
    Xn = X.double().numpy().reshape(9, -1)
    assert G.dtype == torch.float64 and G.shape == (9, 9)
    np.testing.assert_allclose(G.numpy(), Xn @ Xn.T, rtol=1e-13, atol=0)


def test_gram_tokens_messages():
    raises("X must be token features [n, T, C]; got [1, 2] (use gram() for [n, p] features)", cka.gram_tokens,
           [1, 2])
    raises("X must be token features [n, T, C]; got (4, 3) (use gram() for [n, p] features)", cka.gram_tokens,
           torch.zeros(4, 3))
    raises("X must be floating point; got torch.int64 (convert with .float())", cka.gram_tokens,
           torch.zeros(4, 2, 3, dtype=torch.long))
    bad = torch.zeros(4, 2, 3)
    bad[1, 1, 2] = float("nan")
    raises("X (shape (4, 2, 3)) holds NaN or Inf values (or values so large that their float32 Gram overflows); "
           "check the model's outputs or recompute the cached features", cka.gram_tokens, bad)
    assert bool(cka.gram_tokens(bad, check_finite=False).isnan().any())     # the caller checks instead


def test_gram_tokens_float32_and_half_inputs():
    X = f32((5, 4, 3), 1)
    K = cka.gram_tokens(X)
    Xn = X.double().numpy().reshape(5, -1)
    assert K.dtype == torch.float64
    np.testing.assert_allclose(K.numpy(), Xn @ Xn.T, rtol=1e-5, atol=1e-5)
    assert cka.gram_tokens(X.half()).dtype == torch.float64


def test_gram_tokens_centres_on_the_batch_mean():
    """Tokens sharing a large offset (300) with unit noise: centred on the batch mean, float32 loses nothing HSIC_1
    sees; centred on anything else (e.g. twice the mean) the float32 products carry the offset and HSIC_1 is off by
    ~10 %."""
    rng = np.random.default_rng(30)
    X = torch.from_numpy(rng.normal(size=(6, 50, 20)) + 300.0).float()
    Xn = X.double().numpy().reshape(6, -1)
    ref = torch.from_numpy(Xn @ Xn.T)
    K = cka.gram_tokens(X)
    np.testing.assert_allclose(K.numpy(), ref.numpy(), rtol=1e-6)
    assert float(cka.hsic1(K, K)) == pytest.approx(float(cka.hsic1(ref, ref)), rel=1e-6)


def test_check_grams_messages_through_hsic0_hsic1_and_cross():
    raises("K must be [..., n, n] (square in the last two dims); got (4, 5)", cka.hsic1, torch.zeros(4, 5),
           torch.zeros(4, 4))
    raises("L must be [..., n, n] (square in the last two dims); got (4, 5)", cka.hsic0, torch.zeros(4, 4),
           torch.zeros(4, 5))
    raises("K must be [..., n, n] (square in the last two dims); got (4,)", cka.hsic0, torch.zeros(4),
           torch.zeros(4, 4))
    nan = torch.zeros(4, 4)
    nan[0, 1] = float("nan")
    raises("K (shape (4, 4))" + NAN_TAIL, cka.hsic1, nan, torch.zeros(4, 4))
    raises("L (shape (4, 4))" + NAN_TAIL, cka.hsic0, torch.zeros(4, 4), nan)
    raises("K (4, 4) and L (2, 5, 5) must have the same n", cka.hsic1, torch.zeros(4, 4), torch.zeros(2, 5, 5))
    raises("this HSIC estimator needs n >= 4 examples; got n=3", cka.hsic1, torch.eye(3), torch.eye(3))
    raises("this HSIC estimator needs n >= 2 examples; got n=1", cka.hsic0, torch.eye(1), torch.eye(1))
    # hsic1_cross: its own rank check (both ranks shown), then the shared checks with names Ks / Ls
    raises("Ks and Ls must be [L, n, n]; got (4, 4) and (2, 4, 4)", cka.hsic1_cross, torch.zeros(4, 4),
           torch.zeros(2, 4, 4))
    raises("Ks and Ls must be [L, n, n]; got (1, 4, 4) and (4, 4)", cka.hsic1_cross, torch.zeros(1, 4, 4),
           torch.zeros(4, 4))
    raises("Ks must be [..., n, n] (square in the last two dims); got (1, 4, 5)", cka.hsic1_cross,
           torch.zeros(1, 4, 5), torch.zeros(1, 4, 4))
    raises("Ls must be [..., n, n] (square in the last two dims); got (1, 4, 5)", cka.hsic1_cross,
           torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
    raises("Ks (1, 4, 4) and Ls (1, 5, 5) must have the same n", cka.hsic1_cross, torch.zeros(1, 4, 4),
           torch.zeros(1, 5, 5))
    raises("Ls (shape (1, 4, 4))" + NAN_TAIL, cka.hsic1_cross, torch.zeros(1, 4, 4), nan[None])
    raises("this HSIC estimator needs n >= 4 examples; got n=3", cka.hsic1_cross, torch.zeros(2, 3, 3),
           torch.zeros(1, 3, 3))


def test_hsic_bounds_on_n_are_exact():
    K, L = f32((2, 2), 2).double(), f32((2, 2), 3).double()
    assert float(cka.hsic0(K, L)) == pytest.approx(np_hsic0(K.numpy(), L.numpy()), rel=1e-12)    # n = 2 allowed
    K, L = f32((4, 4), 4).double(), f32((4, 4), 5).double()
    assert float(cka.hsic1(K, L)) == pytest.approx(np_hsic1(K.numpy(), L.numpy()), rel=1e-12)    # n = 4 allowed
    assert cka.hsic1_cross(K[None], L[None]).item() == pytest.approx(np_hsic1(K.numpy(), L.numpy()), rel=1e-12)


def test_minibatch_cka_object_messages():
    acc = cka.MinibatchCKA()
    assert acc.mode == "reference" and acc.n_batches == 0
    raises("MinibatchCKA.compute() called before any update()", acc.compute, exc=RuntimeError)
    raises("grams_a must be a Gram stack [L, b, b]; got list", acc.update, [1], torch.zeros(1, 4, 4))
    raises("grams_a must be a Gram stack [L, b, b]; got (4, 4)", acc.update, torch.zeros(4, 4), torch.zeros(1, 4, 4))
    raises("grams_b must be a Gram stack [L, b, b]; got (1, 4, 5)", acc.update, torch.zeros(1, 4, 4),
           torch.zeros(1, 4, 5))
    raises("grams_b must be a Gram stack [L, b, b]; got dict", acc.update, torch.zeros(1, 4, 4), {})
    raises("grams_a (2, 4, 4) and grams_b (1, 5, 5) must share the batch size b (aligned batches of the same "
           "examples)", acc.update, torch.zeros(2, 4, 4), torch.zeros(1, 5, 5))
    nan = torch.zeros(1, 4, 4)
    nan[0, 2, 1] = float("nan")
    raises("grams_a (shape (1, 4, 4))" + NAN_TAIL, acc.update, nan, torch.zeros(1, 4, 4))
    raises("grams_b (shape (1, 4, 4))" + NAN_TAIL, acc.update, torch.zeros(1, 4, 4), nan)
    raises("this HSIC estimator needs n >= 4 examples; got n=3", acc.update, torch.zeros(1, 3, 3),
           torch.zeros(1, 3, 3))
    assert acc.n_batches == 0                                  # refused batches leave nothing behind
    X = f32((2, 6, 3), 6).double()
    G = torch.stack([x @ x.T for x in X])
    acc.update(G, G[:1])
    acc.update(G, G[:1])
    assert acc.n_batches == 2
    raises("layer counts changed: got La=1, Lb=1, earlier batches had (2, 1)", acc.update, G[:1], G[:1])
    raises("layer counts changed: got La=2, Lb=2, earlier batches had (2, 1)", acc.update, G, G)
    assert acc.n_batches == 2


def test_mode_messages_everywhere():
    msg = "mode='kornblith' is unknown; choose from ('reference', 'teaching-matters')"
    raises(msg, cka.MinibatchCKA, "kornblith")
    A = [torch.randn(8, 3, dtype=torch.float64)]
    raises(msg, cka.minibatch_cka, A, A, batch_size=4, mode="kornblith")
    raises(msg, cka.minibatch_cka_from_grams, [torch.eye(4)[None]], [torch.eye(4)[None]], mode="kornblith")


def test_from_grams_messages():
    G = torch.eye(4, dtype=torch.float64)[None]
    raises("grams_a and grams_b must hold the same, non-zero number of batches; got 2 and 1",
           cka.minibatch_cka_from_grams, [G, G], [G])
    raises("grams_a and grams_b must hold the same, non-zero number of batches; got 0 and 0",
           cka.minibatch_cka_from_grams, [], [])
    good = f32((6, 5), 7).double()
    Kg = (good @ good.T)[None]
    err = raises("batch 1: grams_a (1, 6, 6) and grams_b (1, 4, 4) must share the batch size b (aligned batches of "
                 "the same examples)", cka.minibatch_cka_from_grams, [Kg, Kg], [Kg, G])
    assert isinstance(err.__cause__, ValueError)


def test_layers_messages():
    ok = [torch.randn(8, 3, dtype=torch.float64)]
    raises("feats_a as a tensor must be [L, n, p]; got (8, 3)", cka.minibatch_cka, torch.zeros(8, 3), ok,
           batch_size=4)
    raises("feats_b as a tensor must be [L, n, p]; got (8,)", cka.minibatch_cka, ok, torch.zeros(8), batch_size=4)
    raises("feats_a must be a non-empty list of [n, p] tensors or a tensor [L, n, p]", cka.minibatch_cka, [], ok,
           batch_size=4)
    raises("feats_b must be a non-empty list of [n, p] tensors or a tensor [L, n, p]", cka.minibatch_cka, ok, 7,
           batch_size=4)
    raises("feats_a[1] must be a tensor [n, D] (or [n, ...]); got list", cka.minibatch_cka, [ok[0], [1.0]], ok,
           batch_size=4)
    raises("all layers of feats_b must have the same n (examples); got n in [8, 9]", cka.minibatch_cka, ok,
           [ok[0], torch.zeros(9, 3), ok[0]], batch_size=4)
    raises("feats_a (8, 3) and feats_b (9, 3) must have the same n (examples, first dimension)", cka.minibatch_cka,
           ok, [torch.zeros(9, 3)], batch_size=4)
    # a [L, n, p] tensor with L = 1 is the smallest stacked input (ndim 3 exactly)
    X = f32((1, 8, 3), 8).double()
    np.testing.assert_allclose(cka.minibatch_cka(X, X, batch_size=4).numpy(), [[1.0]], rtol=0, atol=1e-12)


def test_batch_size_messages_and_suggestions():
    A = [f32((66, 4), 9).double()]
    raises("batch_size (HSIC_1 needs n >= 4) must be an int >= 4; got 3", cka.minibatch_cka, A, A, batch_size=3)
    raises("batch_size (HSIC_1 needs n >= 4) must be an int >= 4; got 8.0", cka.minibatch_cka, A, A, batch_size=8.0)
    # n=66, batch 32 leaves 2: the nearest sizes whose last batch is empty or >= 4 are 31 (rest 4), 33 (0), 30 (6)
    raises("with n=66 and batch_size=32 the last batch would have 2 < 4 examples, too few for HSIC_1; drop those 2 "
           "examples or use another batch_size (e.g. [31, 33, 30])", cka.minibatch_cka, A, A, batch_size=32)
    # n=9, batch 8: only 9 (rest 0) and 5 (rest 4) among 4..9 work; nothing above n is offered
    B = [f32((9, 4), 10).double()]
    raises("with n=9 and batch_size=8 the last batch would have 1 < 4 examples, too few for HSIC_1; drop those 1 "
           "examples or use another batch_size (e.g. [9, 5])", cka.minibatch_cka, B, B, batch_size=8)
    # n=211, batch 4: the search stops at 4 * batch_size = 16; only 9 (rest 4) and 12 (rest 7) pass below it
    C = [f32((211, 2), 11).double()]
    raises("with n=211 and batch_size=4 the last batch would have 3 < 4 examples, too few for HSIC_1; drop those 3 "
           "examples or use another batch_size (e.g. [9, 12])", cka.minibatch_cka, C, C, batch_size=4)


# ================================================================ cka.py: values
def test_hsic_formulas_on_non_symmetric_batched_float32_inputs():
    """The kernels take any square [..., n, n]; the NumPy reference is the literal formula, in float64."""
    Ks, Ls = f32((3, 7, 7), 12, scale=5.0, shift=2.0), f32((2, 7, 7), 13, scale=3.0, shift=-1.0)
    Kn, Ln = Ks.double().numpy(), Ls.double().numpy()
    h1 = cka.hsic1(Ks[:, None], Ls[None])                            # broadcast to [3, 2]
    h0 = cka.hsic0(Ks[:, None], Ls[None])
    cross = cka.hsic1_cross(Ks, Ls)
    ref1 = np.array([[np_hsic1(k, m) for m in Ln] for k in Kn])
    ref0 = np.array([[np_hsic0(k, m) for m in Ln] for k in Kn])
    for got, ref in ((h1, ref1), (h0, ref0), (cross, ref1)):
        assert got.dtype == torch.float64 and got.shape == (3, 2)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_hsic_leave_the_callers_grams_untouched():
    K = f32((5, 5), 14).double()
    L = f32((5, 5), 15).double()
    K0, L0 = K.clone(), L.clone()
    cka.hsic1(K, L)
    cka.hsic1_cross(K[None], L[None])
    cka.hsic0(K, L)
    acc = cka.MinibatchCKA()
    acc.update(K[None], L[None])
    assert torch.equal(K, K0) and torch.equal(L, L0)


def test_hsic_with_large_float32_grams_is_float64_exact():
    """float32 Grams: float32 arithmetic on them misses the float64 formula by 1e-8 to 1e-6 relative."""
    X = f32((32, 20), 16, shift=1.0)
    K = X @ X.T                                                    # float32 Gram
    L = (X[:, :7] ** 2) @ (X[:, :7] ** 2).T
    Kn, Ln = K.double().numpy(), L.double().numpy()
    np.testing.assert_allclose(float(cka.hsic1(K, L)), np_hsic1(Kn, Ln), rtol=1e-12)
    np.testing.assert_allclose(float(cka.hsic0(K, L)), np_hsic0(Kn, Ln), rtol=1e-12)
    np.testing.assert_allclose(float(cka.hsic1_cross(K[None], L[None])), np_hsic1(Kn, Ln), rtol=1e-12)
    acc = cka.MinibatchCKA()
    acc.update(K[None], L[None])
    expected = np_hsic1(Kn, Ln) / math.sqrt(np_hsic1(Kn, Kn) * np_hsic1(Ln, Ln))
    assert acc.compute().dtype == torch.float64
    np.testing.assert_allclose(acc.compute().item(), expected, rtol=1e-12)


def test_minibatch_cka_defaults_are_batch_32_and_reference_mode():
    A = [f32((64, 5), 17, shift=1.0).double(), f32((64, 3), 18).double()]
    B = [f32((64, 4), 19).double() + A[0][:, :4]]
    default = cka.minibatch_cka(A, B)
    torch.testing.assert_close(default, cka.minibatch_cka(A, B, batch_size=32, mode="reference"), rtol=0, atol=0)
    ref = np_minibatch_cka([a.numpy() for a in A], [b.numpy() for b in B], 32)
    np.testing.assert_allclose(default.numpy(), ref, rtol=1e-12)
    assert np.abs(np_minibatch_cka([a.numpy() for a in A], [b.numpy() for b in B], 16) - ref).max() > 1e-3
    G = [torch.stack([a[s:s + 32] @ a[s:s + 32].T for a in A]) for s in (0, 32)]
    H = [torch.stack([b[s:s + 32] @ b[s:s + 32].T for b in B]) for s in (0, 32)]
    torch.testing.assert_close(cka.minibatch_cka_from_grams(G, H), default, rtol=0, atol=1e-12)


def test_minibatch_cka_last_batch_bounds_and_float32_features():
    """rest = 4 is a batch of its own, rest = 0 adds none; batch_size = 4 (the minimum) works; float32 in, float64
    arithmetic: the reference sees the same float32 values and computes in float64."""
    for n, bs in ((36, 8), (32, 8), (12, 4)):
        A = [f32((n, 40), n, shift=1.0), f32((n, 3), n + 1)]
        B = [f32((n, 6), n + 2, shift=-1.0)]
        got = cka.minibatch_cka(A, B, batch_size=bs)
        assert got.dtype == torch.float64 and got.shape == (2, 1)
        ref = np_minibatch_cka([a.double().numpy() for a in A], [b.double().numpy() for b in B], bs)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_linear_cka_messages_default_and_float32():
    raises("X (10, 3) and Y (11, 3) must have the same n (examples, first dimension)", cka.linear_cka,
           torch.randn(10, 3), torch.randn(11, 3))
    raises("Y must be a tensor [n, D] (or [n, ...]); got tuple", cka.linear_cka, torch.randn(10, 3), (1, 2))
    raises("X must be floating point; got torch.int64 (convert with .float())", cka.linear_cka,
           torch.ones(10, 3, dtype=torch.long), torch.randn(10, 3))
    X, Y = f32((40, 30), 20, shift=1.0), f32((40, 2, 3), 21)
    Y[:, 0] += X[:, :3]
    got = cka.linear_cka(X, Y)
    assert isinstance(got, float)
    assert got == cka.linear_cka(X, Y, debiased=False)
    Xn, Yn = X.double().numpy(), Y.double().numpy().reshape(40, -1)
    Xc, Yc = Xn - Xn.mean(0), Yn - Yn.mean(0)
    ref = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert got == pytest.approx(ref, rel=1e-12)
    K, L = Xn @ Xn.T, Yn @ Yn.T
    deb = np_hsic1(K, L) / math.sqrt(np_hsic1(K, K) * np_hsic1(L, L))
    assert cka.linear_cka(X, Y, debiased=True) == pytest.approx(deb, rel=1e-12)
    assert abs(deb - ref) > 1e-3


def test_teaching_matters_constant_gram_counts_as_zeros():
    """A constant Gram in one batch (min-max rescaling has nothing to divide by) becomes all zeros: that batch adds
    0 to the layer's sums and the other batches still give a finite CKA."""
    rng = np.random.default_rng(22)
    Y1 = rng.normal(size=(6, 4))                                   # batch 0 of network a is the constant Gram
    X2, Y2 = rng.normal(size=(6, 3)), rng.normal(size=(6, 4))
    const = torch.full((1, 6, 6), 2.5, dtype=torch.float64)
    g = [const, torch.from_numpy(X2 @ X2.T)[None]]
    h = [torch.from_numpy(Y1 @ Y1.T)[None], torch.from_numpy(Y2 @ Y2.T)[None]]

    def tm(K):
        K = K - K.min()
        K = K / K.max()
        np.fill_diagonal(K, 0.0)
        return K

    Kb, L1, L2 = tm(X2 @ X2.T), tm(Y1 @ Y1.T), tm(Y2 @ Y2.T)
    ab = (0.0 + np_hsic1(Kb, L2)) / 2
    aa = (0.0 + np_hsic1(Kb, Kb)) / 2
    bb = (np_hsic1(L1, L1) + np_hsic1(L2, L2)) / 2
    got = cka.minibatch_cka_from_grams(g, h, mode="teaching-matters")
    assert got.item() == pytest.approx(ab / math.sqrt(aa * bb), rel=1e-12)
    acc = cka.MinibatchCKA("teaching-matters")
    assert acc.mode == "teaching-matters"


# ================================================================ stats.py
def test_confidence_bounds_and_messages():
    r = torch.tensor([0.0, 1.0, 2.0, 3.0])
    for bad in (1.0, 1, 0.0, -0.5, 95, "0.9", None):
        raises(f"confidence must be a number in (0, 1), e.g. 0.95; got {bad!r}", stats.percentile_interval, r, bad)
    raises("confidence must be a number in (0, 1), e.g. 0.95; got 1.0", stats.wilson_interval, 1, 2, 1.0)
    lo, hi = stats.percentile_interval(r, 0.999999)
    assert (lo, hi) == pytest.approx((0.0000015, 2.9999985), abs=1e-12)
    assert stats.percentile_interval(r, np.float64(0.5)) == pytest.approx((0.75, 2.25), abs=1e-15)


def test_bootstrap_indices_messages_bounds_and_draw():
    raises("n must be an int >= 1; got 0", stats.bootstrap_indices, 0, 5, 0)
    raises("n_resamples must be an int >= 1; got 0", stats.bootstrap_indices, 4, 0, 0)
    raises("seed must be an int >= 0; got -1", stats.bootstrap_indices, 4, 5, -1)
    raises("n must be an int >= 1; got 2.0", stats.bootstrap_indices, 2.0, 5, 0)
    assert stats.bootstrap_indices(1, 3, 0).tolist() == [[0], [0], [0]]
    assert stats.bootstrap_indices(5, 1, 0).shape == (1, 5)
    idx = stats.bootstrap_indices(6, 40, 0)
    expected = torch.randint(0, 6, (40, 6), generator=torch.Generator().manual_seed(0))
    assert idx.dtype == torch.int64 and torch.equal(idx, expected)
    assert set(idx.reshape(-1).tolist()) == set(range(6))          # every index is drawn, none outside


def test_percentile_interval_values_empty_and_float32():
    raises("replicates is empty; draw at least one bootstrap resample", stats.percentile_interval,
           torch.zeros(0), 0.9)
    r = f32((3, 333), 23, scale=1e3, shift=1e5)                    # [R] may come in any shape: flattened
    lo, hi = stats.percentile_interval(r, 0.9)
    ref = np.quantile(r.double().numpy().reshape(-1), [0.05, 0.95])
    assert isinstance(lo, float) and isinstance(hi, float)
    assert (lo, hi) == pytest.approx(tuple(ref), rel=1e-15, abs=0)


def test_wilson_interval_messages_bounds_and_default():
    raises("trials must be an int >= 1; got 0", stats.wilson_interval, 0, 0)
    raises("successes must be an int >= 0; got -1", stats.wilson_interval, -1, 10)
    raises("successes (11) cannot exceed trials (10)", stats.wilson_interval, 11, 10)
    raises("trials must be an int >= 1; got True", stats.wilson_interval, 0, True)
    # at p = 1 the lower bound is n / (n + z^2), at p = 0 the upper bound z^2 / (n + z^2)
    z2 = NormalDist().inv_cdf(0.975) ** 2
    low, high = stats.wilson_interval(10, 10)                        # successes == trials is allowed
    assert high == 1.0 and low == pytest.approx(10 / (10 + z2), abs=1e-14)
    assert stats.wilson_interval(0, 1) == (0.0, pytest.approx(z2 / (1 + z2), abs=1e-14))
    # where the formula rounds to 2.8e-17 (0 of 5) or 1.0000000000000002 (9 of 9), the ends are exact
    assert stats.wilson_interval(0, 5)[0] == 0.0 and stats.wilson_interval(9, 9)[1] == 1.0
    assert stats.wilson_interval(17, 17)[1] == 1.0 and stats.wilson_interval(0, 17)[0] == 0.0
    # default confidence 0.95: Newcombe (1998) table I, 81/263 -> (0.2553, 0.3662)
    assert stats.wilson_interval(81, 263) == stats.wilson_interval(81, 263, 0.95)
    assert stats.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)


def test_bootstrap_contrast_messages_bounds_and_float32():
    w = torch.tensor([1.0, -1.0])
    raises("values must be [models, examples] with at least 2 examples; got (2, 1)", stats.bootstrap_contrast,
           torch.zeros(2, 1), w, n_resamples=5, seed=0, confidence=0.9)
    raises("values must be [models, examples] with at least 2 examples; got (5,)", stats.bootstrap_contrast,
           torch.zeros(5), w, n_resamples=5, seed=0, confidence=0.9)
    raises("values (shape (2, 3)) holds NaN or Inf", stats.bootstrap_contrast,
           torch.tensor([[0.0, 1.0, 2.0], [0.0, float("inf"), 1.0]]), w, n_resamples=5, seed=0, confidence=0.9)
    raises("weights must be a vector [2] (one per row of values); got shape (3,)", stats.bootstrap_contrast,
           torch.zeros(2, 3), torch.zeros(3), n_resamples=5, seed=0, confidence=0.9)
    raises("weights must be a vector [2] (one per row of values); got shape (2, 1)", stats.bootstrap_contrast,
           torch.zeros(2, 3), torch.zeros(2, 1), n_resamples=5, seed=0, confidence=0.9)
    v = f32((2, 2), 24)                                              # 2 examples: the fewest allowed
    assert stats.bootstrap_contrast(v, w, n_resamples=3, seed=0, confidence=0.9)["n"] == 2
    v = f32((2, 500), 25, scale=10.0, shift=1e4)
    res = stats.bootstrap_contrast(v, [0.5, 0.5], n_resamples=50, seed=2, confidence=0.8)
    vn = v.double().numpy()
    reps = np.array([0.5 * vn[:, i].mean(1).sum() for i in stats.bootstrap_indices(500, 50, 2).numpy()])
    assert res["estimate"] == pytest.approx(0.5 * vn.mean(1).sum(), rel=1e-14)
    assert (res["low"], res["high"]) == pytest.approx(tuple(np.quantile(reps, [0.1, 0.9])), rel=1e-14)
    assert res["n"] == 500


def test_cka_from_batch_terms_messages_batches_and_precision():
    raises("ab, aa, bb must share one shape [..., batches, pairs]; got (3, 2), (3, 2), (3, 1)",
           stats.cka_from_batch_terms, torch.ones(3, 2), torch.ones(3, 2), torch.ones(3, 1))
    raises("ab, aa, bb must share one shape [..., batches, pairs]; got (3,), (3,), (3,)",
           stats.cka_from_batch_terms, torch.ones(3), torch.ones(3), torch.ones(3))
    rng = np.random.default_rng(26)
    ab, aa, bb = rng.uniform(0.1, 0.5, (2, 4, 5, 3)), rng.uniform(1, 2, (2, 4, 5, 3)), rng.uniform(1, 2, (2, 4, 5, 3))
    ab, aa, bb = (np.float32(x).astype(np.float64) for x in (ab, aa, bb))   # float32 values, float64 reference
    got = stats.cka_from_batch_terms(*(torch.from_numpy(x).float() for x in (ab, aa, bb)))
    ref = ab.mean(-2) / np.sqrt(aa.mean(-2) * bb.mean(-2))
    assert got.dtype == torch.float64 and got.shape == (2, 4, 3)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-14)


def test_list_inputs_are_read_as_float64():
    """Python lists of floats are read as float64 (torch's default for them would be float32)."""
    ab = [[0.1, 0.7], [0.3, 0.2], [0.55, 0.35]]
    aa, bb = [[1.1, 1.3], [1.7, 1.9], [1.2, 1.05]], [[2.1, 1.4], [1.3, 1.6], [1.15, 1.25]]
    w = [1 / 3, -2 / 3]
    res = stats.bootstrap_cka_contrast(ab, aa, bb, w, n_resamples=4, seed=0, confidence=0.9)
    A, B, C = np.array(ab), np.array(aa), np.array(bb)
    assert res["estimate"] == pytest.approx(float(np.dot(A.mean(0) / np.sqrt(B.mean(0) * C.mean(0)), w)), rel=1e-14)
    assert stats.seed_floor([0.1, 0.7], [1 / 3, -1 / 3]) == pytest.approx(0.6 / 3, rel=1e-14)
    assert stats.seed_floor([0.1, 0.7], [0.1]) == pytest.approx(0.07, rel=1e-14)


def test_bootstrap_cka_contrast_messages_and_bound():
    raises("ab must be [batches, pairs] with at least 2 batches; got (1, 3)", stats.bootstrap_cka_contrast,
           torch.ones(1, 3), torch.ones(1, 3), torch.ones(1, 3), torch.ones(3), n_resamples=3, seed=0,
           confidence=0.9)
    raises("ab must be [batches, pairs] with at least 2 batches; got (4,)", stats.bootstrap_cka_contrast,
           torch.ones(4), torch.ones(4), torch.ones(4), torch.ones(1), n_resamples=3, seed=0, confidence=0.9)
    raises("weights must be a vector [3] (one per row of ab's pairs); got shape (2,)", stats.bootstrap_cka_contrast,
           torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), torch.ones(2), n_resamples=3, seed=0,
           confidence=0.9)
    res = stats.bootstrap_cka_contrast(torch.full((2, 1), 0.5), torch.ones(2, 1), torch.ones(2, 1), [2.0],
                                       n_resamples=3, seed=0, confidence=0.9)
    assert res == {"estimate": 1.0, "low": 1.0, "high": 1.0, "n": 2}


def test_seed_floor_messages_and_bounds():
    raises("seed_values must be a vector with one value per untrained seed (or seed pair), at least 2 of them "
           "(a spread needs two); got shape (1,)", stats.seed_floor, [0.5], [1.0])
    raises("seed_values must be a vector with one value per untrained seed (or seed pair), at least 2 of them "
           "(a spread needs two); got shape (2, 2)", stats.seed_floor, [[0.5, 0.6], [0.1, 0.2]], [1.0])
    raises("seed_values holds NaN or Inf: [0.5, inf]", stats.seed_floor, [0.5, float("inf")], [1.0])
    raises("weights must be a finite vector [M >= 1], one per slot of the contrast; got []", stats.seed_floor,
           [0.5, 0.6], [])
    raises("weights must be a finite vector [M >= 1], one per slot of the contrast; got [1.0, nan]", stats.seed_floor,
           [0.5, 0.6], [1.0, float("nan")])
    raises("weights must be a finite vector [M >= 1], one per slot of the contrast; got [[1.0]]", stats.seed_floor,
           [0.5, 0.6], [[1.0]])
    assert stats.seed_floor([0.25, 0.75], [1.0]) == 0.75               # S = 2 and M = 1: the fewest allowed
    x = np.float32([0.1234567, 0.7654321, 0.5])
    got = stats.seed_floor(torch.from_numpy(x), [1.0, -1.0])
    assert got == float(x.astype(np.float64).max() - x.astype(np.float64).min())


# ================================================================ invariance.py
def test_augmentation_similarity_messages():
    ok = torch.zeros(3, 2)
    head = " must be a floating-point tensor [N, ..., D] (images first, features last); got "
    raises("original" + head + "list", augmentation_similarity, [[0.0]], ok)
    raises("augmented" + head + "NoneType", augmentation_similarity, ok, None)
    raises("original" + head + "((3, 2), torch.int64)", augmentation_similarity, torch.zeros(3, 2, dtype=torch.long),
           ok)
    raises("augmented" + head + "((3,), torch.float32)", augmentation_similarity, ok, torch.zeros(3))
    raises("augmented (shape (3, 2))" + NAN_TAIL, augmentation_similarity, ok, torch.full((3, 2), float("nan")))
    raises("original (4, 3) and augmented (5, 3) must have the same shape: row i of both is the same image, before "
           "and after the augmentation", augmentation_similarity, torch.zeros(4, 3), torch.zeros(5, 3))
    raises("original has 1 image(s); the reference level compares each image with the others, so at least 2 are "
           "needed", augmentation_similarity, torch.zeros(1, 3), torch.zeros(1, 3))


def test_augmentation_similarity_middle_axes_and_float32_vs_numpy():
    f, g = f32((6, 3, 2, 5), 27, shift=40.0), f32((6, 3, 2, 5), 28, shift=40.0)
    out = augmentation_similarity(f, g)
    F, G = f.double().numpy(), g.double().numpy()
    mu = F.mean(0, keepdims=True)
    fh = (F - mu) / np.linalg.norm(F - mu, axis=-1, keepdims=True)
    gh = (G - mu) / np.linalg.norm(G - mu, axis=-1, keepdims=True)
    own = (fh * gh).sum(-1)
    others = np.stack([np.mean([(fh[i] * gh[j]).sum(-1) for j in range(6) if j != i], axis=0) for i in range(6)])
    for key, ref in (("own", own), ("others", others), ("index", (own - others) / (1 - others))):
        assert out[key].dtype == torch.float64 and out[key].shape == (6, 3, 2)
        np.testing.assert_allclose(out[key].numpy(), ref, rtol=1e-11, atol=1e-12)
    two = augmentation_similarity(f[:2], g[:2])                     # N = 2: the fewest allowed
    assert two["own"].shape == (2, 3, 2)

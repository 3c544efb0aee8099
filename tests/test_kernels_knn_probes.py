"""Tests for vitscope.kernels.knn (DINO weighted k-NN) and vitscope.kernels.probes (OM 2.2 linear probe)."""

import numpy as np
import pytest
import torch

from vitscope.kernels.knn import knn_accuracy, weighted_knn
from vitscope.kernels.probes import LinearProbe, fit_linear_probe, linear_probe


# ---------- independent NumPy reference (does not import vitscope) ----------

def np_weighted_knn(train, labels, test, k, T, C):
    """DINO's vote written as a loop over test images, in float64."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = []
    for q in test:
        q = q / np.linalg.norm(q)
        sims = np.array([float(np.dot(q, t)) for t in train])
        nn_idx = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(C)
        for i in nn_idx:
            votes[labels[i]] += np.exp(sims[i] / T)
        out.append(int(np.argmax(votes)))
    return np.array(out)


def random_problem(n=300, m=150, d=16, c=7, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    ytr, yte = rng.integers(0, c, n), rng.integers(0, c, m)
    xtr = centres[ytr] + rng.normal(scale=1.5, size=(n, d))
    xte = centres[yte] + rng.normal(scale=1.5, size=(m, d))
    return xtr, ytr, xte, yte


# ---------- k-NN ----------

@pytest.mark.parametrize("k,T", [(20, 0.07), (1, 0.07), (10, 1.0), (200, 0.07)])
def test_knn_matches_numpy_reference(k, T):
    xtr, ytr, xte, _ = random_problem()
    ref = np_weighted_knn(xtr, ytr, xte, k, T, 7)
    got = weighted_knn(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), k=k, temperature=T,
                       num_classes=7)
    assert got.dtype == torch.int64 and got.shape == (150,)
    np.testing.assert_array_equal(got.numpy(), ref)


def test_knn_hand_case():
    # class 0 lives along +x, class 1 along +y; queries near each axis take that axis's label.
    train = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.9, -0.1], [0.0, 1.0], [0.1, 3.0], [-0.1, 1.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    test = torch.tensor([[5.0, 0.2], [0.3, 4.0]])
    assert weighted_knn(train, labels, test, k=3).tolist() == [0, 1]
    # with k = all, the weighting still favours the near class
    assert weighted_knn(train, labels, test, k=6).tolist() == [0, 1]
    assert knn_accuracy(train, labels, test, torch.tensor([0, 0]), k=3) == 0.5


@pytest.mark.parametrize("chunk", [1, 7, 150, 10_000])
def test_knn_chunking_invariance(chunk):
    xtr, ytr, xte, _ = random_problem(seed=1)
    args = (torch.from_numpy(xtr).float(), torch.from_numpy(ytr), torch.from_numpy(xte).float())
    ref = weighted_knn(*args, chunk_size=150)
    assert torch.equal(weighted_knn(*args, chunk_size=chunk), ref)


def test_knn_fewer_than_100_test_images():
    # DINO's chunking (num_test // 100 rows per step) crashes here; ours must not.
    xtr, ytr, xte, yte = random_problem(m=37, seed=2)
    acc = knn_accuracy(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte))
    assert 0.0 <= acc <= 1.0
    one = weighted_knn(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte[:1]))
    assert one.shape == (1,)


def test_knn_input_validation():
    xtr, ytr, xte = torch.randn(30, 4), torch.randint(0, 3, (30,)), torch.randn(5, 4)
    bad = xte.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="test_feats"):
        weighted_knn(xtr, ytr, bad)
    bad_tr = xtr.clone()
    bad_tr[0, 0] = float("inf")
    with pytest.raises(ValueError, match="train_feats"):
        weighted_knn(bad_tr, ytr, xte)
    with pytest.raises(ValueError, match="feature dimension"):
        weighted_knn(xtr, ytr, torch.randn(5, 3))
    with pytest.raises(ValueError, match="train_labels"):
        weighted_knn(xtr, ytr[:-1], xte)
    with pytest.raises(ValueError, match=r"k \(neighbours"):
        weighted_knn(xtr, ytr, xte, k=31)
    with pytest.raises(ValueError, match="temperature"):
        weighted_knn(xtr, ytr, xte, temperature=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        weighted_knn(xtr, ytr, xte, num_classes=2 if int(ytr.max()) == 2 else 1)
    with pytest.raises(ValueError, match="integer"):
        weighted_knn(xtr, ytr.float(), xte)


# ---------- linear probe ----------

def test_probe_separable_features_reach_full_accuracy():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=g) * 4
    ytr, yte = torch.arange(500) % 5, torch.arange(200) % 5
    xtr = centres[ytr] + torch.randn(500, 32, generator=g)
    xte = centres[yte] + torch.randn(200, 32, generator=g)
    assert linear_probe(xtr, ytr, xte, yte, epochs=30, lr=1e-2) >= 0.99


def test_probe_random_labels_near_chance_on_held_out():
    g = torch.Generator().manual_seed(1)
    xtr, xte = torch.randn(400, 64, generator=g), torch.randn(400, 64, generator=g)
    ytr, yte = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (400,), generator=g)
    acc = linear_probe(xtr, ytr, xte, yte, epochs=50, lr=1e-2)
    assert 0.15 <= acc <= 0.37   # chance is 0.25; the probe can memorise the train set but not generalise


def test_probe_deterministic_for_a_seed_and_global_rng_untouched():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(200, 16, generator=g), torch.randint(0, 3, (200,), generator=g)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    p1 = fit_linear_probe(x, y, epochs=5, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    p2 = fit_linear_probe(x, y, epochs=5, seed=7)
    p3 = fit_linear_probe(x, y, epochs=5, seed=8)
    assert isinstance(p1, LinearProbe) and not p1.training
    assert torch.equal(p1[1].weight, p2[1].weight)
    assert not torch.equal(p1[1].weight, p3[1].weight)
    bn = p1[0]
    assert not bn.affine and bn.eps == 1e-6


def test_probe_validation():
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="train_x"):
        linear_probe(bad, y, x, y)
    with pytest.raises(ValueError, match="test_x"):
        linear_probe(x, y, bad, y, epochs=1)
    with pytest.raises(ValueError, match="same D"):
        linear_probe(x, y, torch.randn(5, 3), y[:5])

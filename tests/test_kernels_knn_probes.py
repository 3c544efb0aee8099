"""Tests for vitscope.kernels.knn (DINO weighted k-NN). The probe tests live in test_kernels_probes.py."""

import numpy as np
import pytest
import torch

from vitscope.kernels.knn import knn_accuracy, weighted_knn

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


def test_knn_default_chunk_fits_the_memory_budget_and_changes_nothing(monkeypatch):
    import vitscope.kernels.knn as knn_module
    xtr, ytr, xte, _ = random_problem(seed=3)
    args = (torch.from_numpy(xtr).float() * 5, torch.from_numpy(ytr), torch.from_numpy(xte).float())
    ref = weighted_knn(*args, chunk_size=1)
    assert torch.equal(weighted_knn(*args), ref)                          # one block: all 150 queries
    monkeypatch.setattr(knn_module, "SIMILARITY_BLOCK_BYTES", 300 * 4 * 7)  # 7 rows of 300 float32 similarities
    assert torch.equal(weighted_knn(*args), ref)


def test_knn_fewer_than_100_test_images():
    # DINO's chunking (num_test // 100 rows per step) crashes here; ours must not.
    xtr, ytr, xte, yte = random_problem(m=37, seed=2)
    acc = knn_accuracy(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte),
                       num_classes=7)
    ref = np_weighted_knn(xtr, ytr, xte, 20, 0.07, 7)
    assert acc == pytest.approx(float((ref == yte).mean()), abs=1e-12)
    assert 0.3 < acc < 1.0  # a problem the vote can solve in part: a constant or shuffled prediction would not pass
    one = weighted_knn(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte[:1]), num_classes=7)
    assert one.tolist() == ref[:1].tolist()


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

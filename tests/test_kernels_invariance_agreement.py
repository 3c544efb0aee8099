"""Flip invariance (OM Fig. 3) and prediction agreement (OM App. F): checked by construction and against scipy /
scikit-learn."""
import numpy as np
import pytest
import torch
from scipy.stats import kendalltau
from sklearn.metrics import f1_score

from vitscope.kernels.agreement import knn_class_votes, prediction_f1, topk_kendall_tau
from vitscope.kernels.invariance import augmentation_similarity
from vitscope.kernels.knn import weighted_knn


def _reference_similarity(f: np.ndarray, g: np.ndarray):
    """The module docstring's formulas, float64 NumPy, with the full N x N matrix."""
    mu = f.mean(0)
    fh = (f - mu) / np.linalg.norm(f - mu, axis=1, keepdims=True)
    gh = (g - mu) / np.linalg.norm(g - mu, axis=1, keepdims=True)
    s = fh @ gh.T
    own = np.diag(s)
    others = (s.sum(1) - own) / (len(f) - 1)
    return own, others, (own - others) / (1 - others)


def test_similarity_matches_numpy_reference():
    gen = torch.Generator().manual_seed(0)
    f, g = torch.randn(30, 8, generator=gen), torch.randn(30, 8, generator=gen)
    out = augmentation_similarity(f, g)
    own, others, index = _reference_similarity(f.double().numpy(), g.double().numpy())
    np.testing.assert_allclose(out["own"].numpy(), own, atol=1e-12)
    np.testing.assert_allclose(out["others"].numpy(), others, atol=1e-12)
    np.testing.assert_allclose(out["index"].numpy(), index, atol=1e-12)


def test_pooled_flip_equivariant_map_is_invariant():
    # A per-pixel linear map then a 1x1 "token" grid mean: flipping the image permutes the tokens, so the mean of
    # spatial tokens (GAP) of the flipped image equals the original's: index 1 in every image and layer.
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(40, 3, 8, 8, generator=gen)
    weights = torch.randn(2, 3, 5, generator=gen)                       # two "layers"

    def gap(x):                                                          # [N, L, D]
        tokens = torch.einsum("nchw,lcd->nlhwd", x, weights)
        return torch.tanh(tokens).mean((2, 3))

    out = augmentation_similarity(gap(images), gap(torch.flip(images, dims=(-1,))))
    assert out["index"].shape == (40, 2)
    torch.testing.assert_close(out["index"], torch.ones(40, 2, dtype=torch.float64), atol=1e-10, rtol=0)


def test_position_dependent_map_is_not_invariant_and_random_gives_reference_level():
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(400, 3, 4, 4, generator=gen)
    flat = lambda x: x.reshape(x.shape[0], -1)                           # keeps every pixel's position
    flipped = augmentation_similarity(flat(images), flat(torch.flip(images, dims=(-1,))))["index"]
    assert flipped.mean() < 0.2                                          # far from invariant
    random = augmentation_similarity(torch.randn(400, 32, generator=gen), torch.randn(400, 32, generator=gen))
    assert abs(float(random["index"].mean())) < 0.02                     # the reference level is 0
    assert abs(float(random["others"].mean())) < 0.01


def test_similarity_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        augmentation_similarity(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        augmentation_similarity(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        augmentation_similarity(torch.full((3, 2), float("nan")), torch.zeros(3, 2))


def test_votes_argmax_is_weighted_knn_and_votes_are_dino_weights():
    gen = torch.Generator().manual_seed(3)
    train, labels = torch.randn(60, 6, generator=gen, dtype=torch.float64), torch.randint(0, 5, (60,), generator=gen)
    test = torch.randn(25, 6, generator=gen, dtype=torch.float64)
    votes = knn_class_votes(train, labels, test, k=7, num_classes=5, chunk_size=4)
    assert torch.equal(votes.argmax(1), weighted_knn(train, labels, test, k=7, num_classes=5))
    # hand reference for one query: cosine, 7 nearest, exp(sim / 0.07) summed per class
    sim = (test[0] / test[0].norm()) @ (train / train.norm(dim=1, keepdim=True)).T
    top = sim.topk(7)
    expected = torch.zeros(5, dtype=torch.float64).index_add_(0, labels[top.indices], (top.values / 0.07).exp())
    torch.testing.assert_close(votes[0], expected)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_kendall_tau_matches_scipy_on_the_union_of_top_k(k):
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(50, 20, generator=gen, dtype=torch.float64)
    b = 0.6 * a + torch.randn(50, 20, generator=gen, dtype=torch.float64)
    a[:, :3] = 0.0                                                       # ties, as k-NN votes have
    b[:10, 5:9] = 0.0
    tau = topk_kendall_tau(a, b, k)
    for i in range(50):
        classes = sorted(set(torch.sort(-a[i], stable=True).indices[:k].tolist())
                         | set(torch.sort(-b[i], stable=True).indices[:k].tolist()))
        ref = kendalltau(a[i, classes].numpy(), b[i, classes].numpy()).statistic     # tau-b by default
        if np.isnan(ref):
            assert torch.isnan(tau[i])
        else:
            assert float(tau[i]) == pytest.approx(ref, abs=1e-12)


def test_kendall_tau_hand_cases():
    a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert float(topk_kendall_tau(a, a, 2)) == 1.0                       # same ranking
    assert float(topk_kendall_tau(a, a.flip(1), 2)) == -1.0              # reversed: union is all 4 classes
    with pytest.raises(ValueError, match="same shape"):
        topk_kendall_tau(a, torch.ones(1, 3), 2)
    with pytest.raises(ValueError, match="k"):
        topk_kendall_tau(a, a, 5)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_prediction_f1_matches_sklearn(average):
    gen = torch.Generator().manual_seed(5)
    a = torch.randint(0, 7, (200,), generator=gen)
    b = torch.where(torch.rand(200, generator=gen) < 0.7, a, torch.randint(0, 9, (200,), generator=gen))
    ours = prediction_f1(a, b, average=average)
    ref = f1_score(a.numpy(), b.numpy(), average=average, zero_division=0)
    assert ours == pytest.approx(ref, abs=1e-12)


def test_prediction_f1_hand_case():
    a, b = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    # class 0: tp 1, |a|=2, |b|=1 -> 2/3; class 1: tp 2, |a|=2, |b|=3 -> 4/5
    assert prediction_f1(a, b) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert prediction_f1(a, b, average="micro") == pytest.approx(0.75)
    assert prediction_f1(a, a) == 1.0
    with pytest.raises(ValueError, match="average"):
        prediction_f1(a, b, average="binary")

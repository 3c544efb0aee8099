"""k-means purity, NMI, ARI and the noise reference (vitscope.kernels.clustering): hand cases and scikit-learn."""
from __future__ import annotations

import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from vitscope.kernels import clustering as ck

Y = torch.tensor([0, 0, 0, 1, 1, 2])
C = torch.tensor([0, 0, 1, 1, 1, 1])


def test_contingency_and_purity_by_hand():
    # cluster 0 holds classes {0, 0}; cluster 1 holds {0, 1, 1, 2}: majorities 2 and 2 of 6 images
    assert ck.contingency(Y, C).tolist() == [[2, 1], [0, 2], [0, 1]]
    assert ck.purity(Y, C) == pytest.approx(4 / 6)
    assert ck.purity_per_example(Y, C).tolist() == [1, 1, 0, 1, 1, 0]


def test_scores_ignore_the_names_of_classes_and_clusters():
    renamed_y, renamed_c = torch.tensor([7, 7, 7, 3, 3, 9]), torch.tensor([5, 5, 2, 2, 2, 2])
    assert ck.scores(renamed_y, renamed_c) == pytest.approx(ck.scores(Y, C))


def test_per_example_mean_is_purity_on_random_labelings():
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        y, c = torch.randint(0, 6, (50,), generator=gen), torch.randint(0, 9, (50,), generator=gen)
        assert float(ck.purity_per_example(y, c).mean()) == pytest.approx(ck.purity(y, c))


@pytest.mark.parametrize("n_classes, n_clusters, n", [(5, 5, 60), (3, 10, 40), (12, 4, 100), (50, 50, 500)])
def test_nmi_and_ari_match_scikit_learn(n_classes, n_clusters, n):
    gen = torch.Generator().manual_seed(n)
    y = torch.randint(0, n_classes, (n,), generator=gen)
    c = torch.where(torch.rand(n, generator=gen) < 0.5, y % n_clusters, torch.randint(0, n_clusters, (n,),
                                                                                        generator=gen))
    assert ck.nmi(y, c) == pytest.approx(normalized_mutual_info_score(y.numpy(), c.numpy()), abs=1e-12)
    assert ck.ari(y, c) == pytest.approx(adjusted_rand_score(y.numpy(), c.numpy()), abs=1e-12)


@pytest.mark.parametrize("y, c", [([0, 0, 1, 1], [1, 1, 0, 0]), ([0, 1, 2, 3], [0, 0, 0, 0]),
                                  ([0, 0, 0, 0], [0, 0, 0, 0]), ([0, 1, 2, 3], [3, 2, 1, 0]),
                                  ([0, 0, 0, 0], [0, 1, 2, 3])])
def test_degenerate_partitions_follow_scikit_learn(y, c):
    y, c = torch.tensor(y), torch.tensor(c)
    assert ck.nmi(y, c) == pytest.approx(normalized_mutual_info_score(y.numpy(), c.numpy()), abs=1e-12)
    assert ck.ari(y, c) == pytest.approx(adjusted_rand_score(y.numpy(), c.numpy()), abs=1e-12)


def _blobs(n_per=20, k=4, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = 20 * torch.randn(k, dim, generator=gen)
    labels = torch.arange(k).repeat_interleave(n_per)
    return centres[labels] + torch.randn(k * n_per, dim, generator=gen), labels


def test_kmeans_recovers_separated_blobs_and_is_deterministic():
    X, labels = _blobs()
    a = ck.kmeans(X, 4)
    assert a.dtype == torch.int64 and a.shape == labels.shape
    assert ck.scores(labels, a) == pytest.approx({"purity": 1.0, "nmi": 1.0, "ari": 1.0})
    assert torch.equal(a, ck.kmeans(X, 4)) and torch.equal(a, ck.kmeans(X.float(), 4))


def test_kmeans_on_noise_is_near_chance_and_well_below_blobs():
    X, labels = _blobs(n_per=25, k=8, dim=16)
    noise = ck.noise_features(len(labels), 16, seed=3)
    on_noise = ck.scores(labels, ck.kmeans(noise, 8))
    assert on_noise["ari"] < 0.05 and on_noise["purity"] < 0.5
    assert ck.purity(labels, ck.kmeans(X, 8)) == 1.0


def test_settings_are_fixed_and_recorded():
    rec = ck.KMeansSettings().record()
    # The Teaching Matters code ran scikit-learn < 1.4, whose n_init default was 10 (now "auto": one run).
    assert rec["n_init"] == 10 and rec["max_iter"] == 300 and rec["seed"] == 0 and rec["algorithm"] == "lloyd"
    assert "scikit-learn" in rec
    with pytest.raises(ValueError, match="algorithm"):
        ck.KMeansSettings(algorithm="auto")
    with pytest.raises(ValueError, match="n_init"):
        ck.KMeansSettings(n_init="auto")


def test_a_different_seed_can_change_the_assignment_but_not_its_validity():
    noise = ck.noise_features(60, 4, seed=0)
    a = ck.kmeans(noise, 6, ck.KMeansSettings(n_init=1, seed=0))
    assert set(a.tolist()) == set(range(6))


@pytest.mark.reliability("bad input", "k-means and scores reject malformed features, labels and k")
def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="k"):
        ck.kmeans(torch.randn(5, 3), 6)
    with pytest.raises(ValueError, match="NaN"):
        ck.kmeans(torch.tensor([[float("nan"), 0.0]] * 4), 2)
    with pytest.raises(ValueError, match="labels_true"):
        ck.purity(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels_pred"):
        ck.purity(torch.tensor([0, 1]), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="distribution"):
        ck.noise_features(4, 2, distribution="laplace")


def test_noise_features_shape_seed_and_distribution():
    g = ck.noise_features(2000, 16, seed=5)
    assert g.shape == (2000, 16) and g.dtype == torch.float64
    assert torch.equal(g, ck.noise_features(2000, 16, seed=5)) and not torch.equal(g, ck.noise_features(2000, 16))
    assert abs(float(g.mean())) < 0.02 and abs(float(g.std()) - 1) < 0.02
    u = ck.noise_features(2000, 16, distribution="uniform")
    assert float(u.min()) >= 0 and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01

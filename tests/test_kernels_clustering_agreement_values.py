"""vitscope.kernels.agreement and vitscope.kernels.clustering: messages, bounds, defaults and dtypes checked exactly
(issue 17: mutants in them survived the value tests).

Every validation message is compared whole with the text written out here (a message is how a user learns which
argument to fix); every documented bound is tried at the bound and one step past it; every default is compared with
the explicit value and with an independent reference (scipy, scikit-learn, a float64 formula).
"""
from __future__ import annotations

import numpy as np
import pytest
import sklearn
import torch
from scipy.stats import kendalltau
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

from vitscope.kernels import clustering as ck
from vitscope.kernels.agreement import knn_class_votes, prediction_f1, topk_kendall_tau

FINITE_HINT = "holds NaN or Inf values; check the model's outputs or recompute the cached features"


def raises(fn, message):
    with pytest.raises(ValueError) as err:
        fn()
    assert str(err.value) == message


# ------------------------------------------------------------------ knn_class_votes

def _votes_reference(train, labels, test, k, T, C):
    """The DINO vote in float64 NumPy, one query at a time."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = np.zeros((len(test), C))
    for i, q in enumerate(test):
        sims = train @ (q / np.linalg.norm(q))
        for j in np.argsort(-sims, kind="stable")[:k]:
            out[i, labels[j]] += np.exp(sims[j] / T)
    return out


def _vote_problem(n=40, m=9, d=5, c=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=gen), torch.randint(0, c, (n,), generator=gen),
            torch.randn(m, d, generator=gen))


def test_votes_are_float64_from_float32_inputs_to_float64_precision():
    train, labels, test = _vote_problem()
    votes = knn_class_votes(train, labels, test, k=6, temperature=0.1, num_classes=4, chunk_size=2)
    assert votes.dtype == torch.float64 and votes.shape == (9, 4)
    ref = _votes_reference(train.double().numpy(), labels.numpy(), test.double().numpy(), 6, 0.1, 4)
    np.testing.assert_allclose(votes.numpy(), ref, rtol=1e-12, atol=0)   # float32 arithmetic misses this by far


def test_votes_defaults_are_k20_t007_and_max_label_plus_one_classes():
    train, labels, test = _vote_problem(n=300, m=260, seed=1)             # 260 queries: more than one default chunk
    default = knn_class_votes(train, labels, test)
    explicit = knn_class_votes(train, labels, test, k=20, temperature=0.07, num_classes=None, chunk_size=256)
    assert torch.equal(default, explicit)
    C = int(labels.max()) + 1
    assert default.shape == (260, C)
    ref = _votes_reference(train.double().numpy(), labels.numpy(), test.double().numpy(), 20, 0.07, C)
    np.testing.assert_allclose(default.numpy(), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(knn_class_votes(train, labels, test, chunk_size=7), default, rtol=1e-13, atol=0)
    assert knn_class_votes(train, labels, test, num_classes=C + 2).shape == (260, C + 2)


def test_votes_take_any_integer_label_dtype():
    train, labels, test = _vote_problem(seed=2)
    ref = knn_class_votes(train, labels, test, k=5)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert torch.equal(knn_class_votes(train, labels.to(dtype), test, k=5), ref)


def test_votes_k_bounds_are_one_and_n():
    train, labels, test = _vote_problem(n=12)
    every = knn_class_votes(train, labels, test, k=12, num_classes=4)       # k = N: every reference votes
    ref = _votes_reference(train.double().numpy(), labels.numpy(), test.double().numpy(), 12, 0.07, 4)
    np.testing.assert_allclose(every.numpy(), ref, rtol=1e-12, atol=0)
    knn_class_votes(train, labels, test, k=1)
    name = "k (neighbours; at most N, the number of train features)"
    raises(lambda: knn_class_votes(train, labels, test, k=13), f"{name} must be an int in [1, 12]; got 13")
    raises(lambda: knn_class_votes(train, labels, test, k=0), f"{name} must be an int in [1, 12]; got 0")


def test_votes_validation_messages():
    train, labels, test = _vote_problem(n=10, m=3, d=4)
    raises(lambda: knn_class_votes([[1.0]], labels, test), "train_feats must be a tensor [n, D]; got list")
    raises(lambda: knn_class_votes(train, labels, test[0]), "test_feats must be a tensor [n, D]; got (4,)")
    nan = test.clone()
    nan[1, 2] = float("nan")
    raises(lambda: knn_class_votes(train, labels, nan), f"test_feats (shape (3, 4)) {FINITE_HINT}")
    raises(lambda: knn_class_votes(train, labels, torch.randn(3, 5)),
           "train_feats (10, 4) and test_feats (3, 5) must have the same feature dimension D")
    raises(lambda: knn_class_votes(train, labels[:9], test), "train_labels has 9 labels but its features have 10 rows")
    raises(lambda: knn_class_votes(train, torch.full((10,), 3), test, num_classes=3),
           "train_labels holds label 3 >= num_classes=3")
    raises(lambda: knn_class_votes(train, labels, test, k=3, temperature=0.0),
           "temperature must be a number > 0; got 0.0")
    raises(lambda: knn_class_votes(train, labels, test, k=3, chunk_size=0), "chunk_size must be an int >= 1; got 0")


# ------------------------------------------------------------------ topk_kendall_tau

def _tau_reference(a, b, k):
    out = []
    for i in range(a.shape[0]):
        classes = sorted(set(np.argsort(-a[i], kind="stable")[:k]) | set(np.argsort(-b[i], kind="stable")[:k]))
        out.append(kendalltau(a[i, classes], b[i, classes]).statistic)
    return np.array(out)


def test_tau_top_k_membership_takes_the_lowest_class_among_many_ties():
    # 30 classes, 25 of them tied at 0 in model a: an unstable sort would pick other tied classes than 0, 1, ...
    gen = torch.Generator().manual_seed(6)
    a = torch.zeros(4, 30)
    a[:, 25:] = torch.rand(4, 5, generator=gen) + 1
    b = torch.randn(4, 30, generator=gen)
    for k in (6, 8):
        tau = topk_kendall_tau(a, b, k)
        assert tau.dtype == torch.float64 and tau.shape == (4,)
        np.testing.assert_allclose(tau.numpy(), _tau_reference(a.double().numpy(), b.double().numpy(), k),
                                   rtol=0, atol=1e-12)


def test_tau_k_bounds_are_two_and_c():
    gen = torch.Generator().manual_seed(7)
    a, b = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    np.testing.assert_allclose(topk_kendall_tau(a, b, 5).numpy(), _tau_reference(a.numpy(), b.numpy(), 5), atol=1e-12)
    np.testing.assert_allclose(topk_kendall_tau(a, b, 2).numpy(), _tau_reference(a.numpy(), b.numpy(), 2), atol=1e-12)
    raises(lambda: topk_kendall_tau(a, b, 6), "k (top classes compared) must be an int in [2, 5]; got 6")
    raises(lambda: topk_kendall_tau(a, b, 1), "k (top classes compared) must be an int in [2, 5]; got 1")


def test_tau_validation_messages():
    a = torch.randn(2, 4)
    raises(lambda: topk_kendall_tau([[1.0]], a, 2), "scores_a must be a tensor [n, D]; got list")
    raises(lambda: topk_kendall_tau(a, (1, 2), 2), "scores_b must be a tensor [n, D]; got tuple")
    inf = a.clone()
    inf[0, 0] = float("inf")
    raises(lambda: topk_kendall_tau(inf, a, 2), f"scores_a (shape (2, 4)) {FINITE_HINT}")
    raises(lambda: topk_kendall_tau(a, inf, 2), f"scores_b (shape (2, 4)) {FINITE_HINT}")
    raises(lambda: topk_kendall_tau(a, torch.randn(3, 4), 2),
           "scores_a (2, 4) and scores_b (3, 4) must have the same shape [queries, classes]")


# ------------------------------------------------------------------ prediction_f1

def test_f1_default_average_is_macro():
    gen = torch.Generator().manual_seed(8)
    a = torch.randint(0, 5, (60,), generator=gen)
    b = torch.where(torch.rand(60, generator=gen) < 0.5, a, torch.randint(0, 6, (60,), generator=gen))
    macro = f1_score(a.numpy(), b.numpy(), average="macro", zero_division=0)
    assert prediction_f1(a, b) == prediction_f1(a, b, average="macro") == pytest.approx(macro, abs=1e-12)
    assert prediction_f1(a, b) != pytest.approx(f1_score(a.numpy(), b.numpy(), average="weighted"), abs=1e-6)
    # num_classes only widens the class axis with classes neither model predicts: the scores stay sklearn's
    for average in ("macro", "micro", "weighted"):
        assert prediction_f1(a, b, num_classes=9, average=average) == pytest.approx(
            f1_score(a.numpy(), b.numpy(), average=average, zero_division=0), abs=1e-12)
    for dtype in (torch.int32, torch.uint8):
        assert prediction_f1(a.to(dtype), b.to(dtype)) == pytest.approx(macro, abs=1e-12)


def test_f1_validation_messages():
    a, b = torch.tensor([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1])
    raises(lambda: prediction_f1(a, b, average="binary"),
           "average='binary' is unknown; choose from ('macro', 'micro', 'weighted')")
    raises(lambda: prediction_f1([0, 1], b), "pred_a must be an integer tensor [n]; got list")
    raises(lambda: prediction_f1(a.float(), b), "pred_a must be an integer tensor [n]; got ((4,), torch.float32)")
    raises(lambda: prediction_f1(a, b[:3]), "pred_b has 3 labels but its features have 4 rows")
    raises(lambda: prediction_f1(a, b.bool()), "pred_b must be an integer tensor [n]; got ((4,), torch.bool)")
    raises(lambda: prediction_f1(a, b, num_classes=2), "pred_a holds label 2 >= num_classes=2")
    raises(lambda: prediction_f1(b, a, num_classes=2), "pred_b holds label 2 >= num_classes=2")
    raises(lambda: prediction_f1(torch.tensor([0, -1]), torch.tensor([0, 1])), "pred_a holds negative labels (min -1)")
    empty = torch.zeros(0, dtype=torch.long)
    raises(lambda: prediction_f1(empty, empty), "pred_a is empty; F1 needs at least one query")
    assert prediction_f1(a, b, num_classes=3) == pytest.approx(f1_score(a.numpy(), b.numpy(), average="macro"))


# ------------------------------------------------------------------ clustering: settings and k-means

def test_settings_defaults_and_record_exactly():
    assert ck.KMeansSettings().record() == {"n_init": 10, "max_iter": 300, "tol": 1e-4, "seed": 0,
                                            "algorithm": "lloyd", "init": "k-means++",
                                            "scikit-learn": sklearn.__version__}
    ck.KMeansSettings(seed=0, algorithm="elkan", init="random", n_init=1, max_iter=1)   # every bound accepted


@pytest.mark.parametrize("kwargs, message", [
    ({"n_init": 0}, "KMeansSettings.n_init must be an int >= 1; got 0"),
    ({"max_iter": 0}, "KMeansSettings.max_iter must be an int >= 1; got 0"),
    ({"tol": 0.0}, "KMeansSettings.tol must be a number > 0; got 0.0"),
    ({"seed": -1}, "KMeansSettings.seed must be an int >= 0; got -1"),
    ({"algorithm": "auto"}, "KMeansSettings.algorithm='auto' is unknown; choose from ('lloyd', 'elkan')"),
    ({"init": "kmeans++"}, "KMeansSettings.init='kmeans++' is unknown; choose from ('k-means++', 'random')"),
])
def test_settings_messages(kwargs, message):
    raises(lambda: ck.KMeansSettings(**kwargs), message)


def _sklearn_assignment(X, k, **kw):
    return KMeans(n_clusters=k, **kw).fit_predict(X.double().numpy())


@pytest.mark.parametrize("settings", [
    ck.KMeansSettings(),
    ck.KMeansSettings(n_init=1, max_iter=1, seed=3, init="random"),
    ck.KMeansSettings(n_init=2, max_iter=2, tol=0.5, seed=1, algorithm="elkan"),
])
def test_kmeans_passes_every_setting_to_scikit_learn(settings):
    X = ck.noise_features(80, 3, seed=11).float()
    got = ck.kmeans(X, 7, settings)
    ref = _sklearn_assignment(X, 7, n_init=settings.n_init, max_iter=settings.max_iter, tol=settings.tol,
                              random_state=settings.seed, algorithm=settings.algorithm, init=settings.init)
    assert got.dtype == torch.int64 and got.device.type == "cpu"
    assert got.tolist() == ref.tolist()


def test_kmeans_settings_change_the_assignment_and_default_is_the_documented_one():
    # The reference cases above must be able to fail: each setting changes the result on these features.
    X = ck.noise_features(80, 3, seed=11)
    base = ck.kmeans(X, 7)
    assert torch.equal(base, ck.kmeans(X, 7, ck.KMeansSettings()))
    assert base.tolist() == _sklearn_assignment(X, 7, n_init=10, max_iter=300, tol=1e-4, random_state=0,
                                                algorithm="lloyd", init="k-means++").tolist()
    for other in (ck.KMeansSettings(n_init=1, seed=1), ck.KMeansSettings(max_iter=1), ck.KMeansSettings(init="random"),
                  ck.KMeansSettings(n_init=1, tol=10.0)):
        assert ck.scores(base, ck.kmeans(X, 7, other))["ari"] < 0.999


def test_kmeans_k_bounds_and_messages():
    X = torch.randn(5, 2, dtype=torch.float64)
    assert sorted(ck.kmeans(X, 5).tolist()) == [0, 1, 2, 3, 4]          # k = n: one example per cluster
    assert ck.kmeans(X, 1).tolist() == [0] * 5
    raises(lambda: ck.kmeans(X, 6), "k (number of clusters) must be an int in [1, 5]; got 6")
    raises(lambda: ck.kmeans(X, 0), "k (number of clusters) must be an int in [1, 5]; got 0")
    raises(lambda: ck.kmeans([[0.0, 1.0]], 1), "features must be a tensor [n, D]; got list")
    raises(lambda: ck.kmeans(torch.zeros(4, 2, dtype=torch.long), 1),
           "features must be floating point; got torch.int64 (convert with .float())")


# ------------------------------------------------------------------ clustering: scores

Y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
C = torch.tensor([1, 1, 0, 0, 0, 2, 2, 1])


def test_scores_exactly_and_in_the_right_argument_order():
    # purity is not symmetric: clusters {0,0,2}, {0,1,1}, {2,2} -> 2 + 2 + 2 of 8; classes read as clusters: 6 of 8
    # as well but on a different table, so check a case where the two orders differ
    y, c = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 0, 1, 1])
    assert ck.purity(y, c) == pytest.approx(4 / 6) and ck.purity(c, y) == 1.0
    got = ck.scores(y, c)
    assert got == {"purity": ck.purity(y, c), "nmi": ck.nmi(y, c), "ari": ck.ari(y, c)}
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(y.numpy(), c.numpy()), abs=1e-12)
    assert got["ari"] == pytest.approx(adjusted_rand_score(y.numpy(), c.numpy()), abs=1e-12)
    assert ck.scores(Y, C) == pytest.approx({"purity": 6 / 8,
                                             "nmi": normalized_mutual_info_score(Y.numpy(), C.numpy()),
                                             "ari": adjusted_rand_score(Y.numpy(), C.numpy())}, abs=1e-12)


def test_one_example_scores_one():
    one = torch.tensor([4])
    assert ck.ari(one, one) == 1.0 == adjusted_rand_score([4], [4])
    assert ck.nmi(one, one) == 1.0 and ck.purity(one, one) == 1.0
    assert ck.purity_per_example(one, one).tolist() == [1.0]


def test_entropies_count_singleton_groups():
    # classes and clusters of one example each weigh in the entropies (NMI's denominator)
    y, c = torch.tensor([0, 0, 1, 2, 3, 3, 3]), torch.tensor([0, 1, 1, 2, 2, 3, 4])
    assert ck.nmi(y, c) == pytest.approx(normalized_mutual_info_score(y.numpy(), c.numpy()), abs=1e-12)
    assert ck.ari(y, c) == pytest.approx(adjusted_rand_score(y.numpy(), c.numpy()), abs=1e-12)


def test_purity_per_example_values_and_dtypes():
    got = ck.purity_per_example(Y, C)
    # cluster 0: classes {0, 1, 1} -> 1 wins; cluster 1: {0, 0, 2} -> 0; cluster 2: {2, 2} -> 2
    assert got.dtype == torch.float64 and got.tolist() == [1, 1, 0, 1, 1, 1, 1, 0]
    for dtype in (torch.int32, torch.uint8):
        assert torch.equal(ck.purity_per_example(Y.to(dtype), C.to(dtype)), got)
        assert ck.contingency(Y.to(dtype), C.to(dtype)).tolist() == ck.contingency(Y, C).tolist()
    # renamed ids (not 0..k-1): the majority is looked up by each example's own class and cluster
    assert ck.purity_per_example(Y * 3 + 5, C * 7 + 2).tolist() == got.tolist()
    # a tie credits the smallest class: cluster 0 holds classes {4, 9}
    assert ck.purity_per_example(torch.tensor([9, 4]), torch.tensor([0, 0])).tolist() == [0.0, 1.0]


def test_contingency_dtype_and_shape():
    t = ck.contingency(Y, C)
    assert t.dtype == torch.float64 and t.tolist() == [[1, 2, 0], [2, 0, 0], [0, 1, 2]]


@pytest.mark.parametrize("fn", [ck.purity, ck.purity_per_example, ck.nmi, ck.ari, ck.scores, ck.contingency])
def test_score_validation_messages(fn):
    y = torch.tensor([0, 1, 1])
    raises(lambda: fn([0, 1, 1], y), "labels_true must be an integer tensor [n]; got list")
    raises(lambda: fn(y.float(), y), "labels_true must be an integer tensor [n]; got ((3,), torch.float32)")
    raises(lambda: fn(y.reshape(3, 1), y), "labels_true must be an integer tensor [n]; got ((3, 1), torch.int64)")
    raises(lambda: fn(y, [0, 1, 1]), "labels_pred must be an integer tensor [n]; got list")
    raises(lambda: fn(y, y[:2]), "labels_pred has 2 labels but its features have 3 rows")
    raises(lambda: fn(torch.tensor([0, -2, 1]), y), "labels_true holds negative labels (min -2)")
    raises(lambda: fn(y, torch.tensor([0, -1, 1])), "labels_pred holds negative labels (min -1)")
    empty = torch.zeros(0, dtype=torch.long)
    raises(lambda: fn(empty, empty), "labels_true is empty; scoring a clustering needs at least one example")


# ------------------------------------------------------------------ noise features

def test_noise_features_defaults_are_seed_0_gaussian():
    ref = torch.randn(30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(ck.noise_features(30, 4), ref)
    assert torch.equal(ck.noise_features(30, 4, seed=0, distribution="gaussian"), ref)
    uniform = ck.noise_features(30, 4, seed=2, distribution="uniform")
    assert uniform.dtype == torch.float64
    assert torch.equal(uniform, torch.rand(30, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    assert ck.noise_features(1, 1, seed=0).shape == (1, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0, "dim": 2}, "n must be an int >= 1; got 0"),
    ({"n": 2, "dim": 0}, "dim must be an int >= 1; got 0"),
    ({"n": 2, "dim": 2, "seed": -1}, "seed must be an int >= 0; got -1"),
    ({"n": 2, "dim": 2, "distribution": "laplace"},
     "distribution='laplace' is unknown; choose from ('gaussian', 'uniform')"),
])
def test_noise_features_messages(kwargs, message):
    raises(lambda: ck.noise_features(**kwargs), message)

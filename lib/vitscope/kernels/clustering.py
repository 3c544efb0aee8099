"""k-means cluster purity, NMI and ARI (Teaching Matters §5.2 and App. D.5), and the noise baseline.

The paper clusters each layer's features with k-means (k = number of classes) and scores the clusters against the
image labels. The original code calls ``KMeans(n_clusters=k, random_state=0)`` with scikit-learn's defaults, and
those defaults moved: ``n_init`` went from 10 to ``"auto"`` (one k-means++ run) in scikit-learn 1.4, and
``algorithm`` from ``"auto"``/``"elkan"`` to ``"lloyd"`` in 1.1. :class:`KMeansSettings` fixes every setting and
records it, so a page prints what it ran with and the numbers do not drift with the library.

Scores are computed here from the contingency table in float64, not by scikit-learn, so the tests can check them
against scikit-learn as an independent reference:

* purity: ``(1/n) sum_c max_y n_{c,y}`` (each cluster votes its majority class);
* NMI: mutual information over the arithmetic mean of the two entropies (scikit-learn's default normalisation);
* ARI: Hubert & Arabie's adjusted Rand index.

Labels are integer tensors ``[n]``; features ``[n, D]``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from .validation import check_choice, check_features, check_int, check_labels, check_positive

ALGORITHMS = ("lloyd", "elkan")
NOISE_DISTRIBUTIONS = ("gaussian", "uniform")


@dataclass(frozen=True)
class KMeansSettings:
    """Every k-means setting that can change a cluster assignment, fixed (not scikit-learn's defaults).

    ``n_init=10`` k-means++ restarts and ``max_iter=300`` are scikit-learn's values before 1.4, i.e. what the
    Teaching Matters code ran with; ``seed=0`` is its ``random_state``. ``algorithm``: ``"lloyd"`` and
    ``"elkan"`` are exact and reach the same optimum from the same start, up to float rounding.
    """

    n_init: int = 10
    max_iter: int = 300
    tol: float = 1e-4
    seed: int = 0
    algorithm: str = "lloyd"
    init: str = "k-means++"

    def __post_init__(self):
        check_int(self.n_init, "KMeansSettings.n_init")
        check_int(self.max_iter, "KMeansSettings.max_iter")
        check_positive(self.tol, "KMeansSettings.tol")
        check_int(self.seed, "KMeansSettings.seed", 0)
        check_choice(self.algorithm, "KMeansSettings.algorithm", ALGORITHMS)
        check_choice(self.init, "KMeansSettings.init", ("k-means++", "random"))

    def record(self) -> dict:
        """The settings and the scikit-learn version that ran them, for a page or a cache key."""
        import sklearn

        return {**asdict(self), "scikit-learn": sklearn.__version__}


def kmeans(features: Tensor, k: int, settings: KMeansSettings = KMeansSettings()) -> Tensor:
    """k-means cluster assignments of ``features`` [n, D] (float64 arithmetic) into ``k`` clusters.

    Returns int64 [n] cluster ids in ``[0, k)``, on the CPU. Same features and settings, same assignment.
    """
    from sklearn.cluster import KMeans

    X = check_features(features, "features")
    k = check_int(k, "k (number of clusters)", 1, X.shape[0])
    model = KMeans(n_clusters=k, n_init=settings.n_init, max_iter=settings.max_iter, tol=settings.tol,
                   random_state=settings.seed, algorithm=settings.algorithm, init=settings.init)
    assignment = model.fit_predict(X.detach().to("cpu", torch.float64).numpy())
    return torch.as_tensor(np.asarray(assignment), dtype=torch.int64)


def _labels(labels: Tensor, name: str, n: int | None = None) -> Tensor:
    """Integer labels [n] on the CPU; ``n=None`` accepts any length (check_labels rejects a non-vector first)."""
    if n is None:
        n = labels.shape[0] if isinstance(labels, Tensor) and labels.ndim == 1 else 0
    return check_labels(labels, n, name).to("cpu", torch.int64)


def contingency(labels_true: Tensor, labels_pred: Tensor) -> Tensor:
    """Counts ``[classes, clusters]`` (float64): entry ``(y, c)`` is how many examples of class ``y`` fell in cluster
    ``c``. Rows and columns of ids that never occur are dropped. labels_true, labels_pred: integer [n], n >= 1."""
    y = _labels(labels_true, "labels_true")
    c = _labels(labels_pred, "labels_pred", y.shape[0])
    if y.shape[0] == 0:
        raise ValueError("labels_true is empty; scoring a clustering needs at least one example")
    _, y = torch.unique(y, return_inverse=True)
    _, c = torch.unique(c, return_inverse=True)
    n_y, n_c = int(y.max()) + 1, int(c.max()) + 1
    return torch.bincount(y * n_c + c, minlength=n_y * n_c).reshape(n_y, n_c).to(torch.float64)


def purity(labels_true: Tensor, labels_pred: Tensor) -> float:
    """Cluster purity: the fraction of examples whose class is their cluster's majority class."""
    table = contingency(labels_true, labels_pred)
    return float(table.max(0).values.sum() / table.sum())


def purity_per_example(labels_true: Tensor, labels_pred: Tensor) -> Tensor:
    """float64 [n]: 1 where an example's class is its cluster's majority class, else 0; its mean is
    :func:`purity`. A tie for the majority credits the smallest class id (any choice gives the same purity).

    For a bootstrap over examples with the clustering held fixed (``vitscope.kernels.stats.bootstrap_contrast``).
    """
    y = _labels(labels_true, "labels_true")
    c = _labels(labels_pred, "labels_pred", y.shape[0])
    _, y_idx = torch.unique(y, return_inverse=True)
    _, c_idx = torch.unique(c, return_inverse=True)
    table = contingency(y, c)                                   # [classes, clusters]
    majority = table.argmax(0)                                  # first maximum: the smallest class id
    return (majority[c_idx] == y_idx).to(torch.float64)


def _entropy(counts: Tensor) -> Tensor:
    p = counts[counts > 0] / counts.sum()
    return -(p * p.log()).sum()


def nmi(labels_true: Tensor, labels_pred: Tensor) -> float:
    """Normalised mutual information, ``MI / ((H(classes) + H(clusters)) / 2)`` (natural log).

    1.0 when both labelings put every example in one group (scikit-learn's convention); 0.0 when the mutual
    information is 0."""
    table = contingency(labels_true, labels_pred)
    n = table.sum()
    if table.shape == (1, 1):
        return 1.0
    a, b = table.sum(1, keepdim=True), table.sum(0, keepdim=True)
    nz = table > 0
    mi = (table[nz] / n * (n * table[nz] / (a * b)[nz]).log()).sum()
    if float(mi) <= 0:
        return 0.0
    mean_entropy = (_entropy(a.reshape(-1)) + _entropy(b.reshape(-1))) / 2
    return float(mi / mean_entropy)


def _pairs(x: Tensor) -> Tensor:
    return (x * (x - 1) / 2).sum()


def ari(labels_true: Tensor, labels_pred: Tensor) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985): ``(index - expected) / (max - expected)`` over pairs of
    examples. 1.0 when the denominator vanishes (both labelings trivial in the same way), as in scikit-learn."""
    table = contingency(labels_true, labels_pred)
    n = table.sum()
    index, rows, cols = _pairs(table), _pairs(table.sum(1)), _pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2) if n > 1 else torch.zeros((), dtype=torch.float64)
    denominator = (rows + cols) / 2 - expected
    if float(denominator) == 0.0:
        return 1.0
    return float((index - expected) / denominator)


def scores(labels_true: Tensor, labels_pred: Tensor) -> dict[str, float]:
    """``{"purity", "nmi", "ari"}`` of one clustering."""
    return {"purity": purity(labels_true, labels_pred), "nmi": nmi(labels_true, labels_pred),
            "ari": ari(labels_true, labels_pred)}


def noise_features(n: int, dim: int, seed: int = 0, distribution: str = "gaussian") -> Tensor:
    """Random features of the same shape as a layer's, [n, dim] float64: the paper's random-chance reference.

    ``"gaussian"``: standard normal, as the paper describes (Sec. 5.2); ``"uniform"``: U[0, 1), what the
    original code draws (``np.random.rand``, unseeded). Seeded here: same seed, same features."""
    n, dim = check_int(n, "n"), check_int(dim, "dim")
    check_int(seed, "seed", 0)
    check_choice(distribution, "distribution", NOISE_DISTRIBUTIONS)
    gen = torch.Generator().manual_seed(seed)
    if distribution == "gaussian":
        return torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return torch.rand(n, dim, generator=gen, dtype=torch.float64)

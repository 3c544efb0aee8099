"""Float64 NumPy references for the CKA estimators, shared by the sections tests (not a test module: pytest
collects ``test_*.py`` only). Written from the formulas, independently of ``vitscope.kernels.cka``."""
from __future__ import annotations

import numpy as np


def hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC_1 (Song et al. 2012; Nguyen et al. 2021 eq. 3) of two [n, n] Gram matrices, n >= 4."""
    n = K.shape[0]
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float((np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3)))


def hsic0(K: np.ndarray, L: np.ndarray) -> float:
    """Biased HSIC_0 = tr(K H L H) / (n - 1)^2 of two [n, n] Gram matrices (Kornblith et al. 2019)."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H) / (n - 1) ** 2)


def hsic1_terms(X: np.ndarray, Y: np.ndarray) -> tuple[float, float, float]:
    """(HSIC_1(K, L), HSIC_1(K, K), HSIC_1(L, L)) of one minibatch's [n, d] features, linear kernels."""
    K, L = X @ X.T, Y @ Y.T
    return hsic1(K, L), hsic1(K, K), hsic1(L, L)


def debiased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA with HSIC_1 on one full batch of [n, d] features."""
    ab, aa, bb = hsic1_terms(X, Y)
    return ab / np.sqrt(aa * bb)

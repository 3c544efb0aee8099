"""Linear CKA: full-batch (biased / debiased) and minibatch CKA with unbiased HSIC_1.

Objectives Matter, App. B.1: eq. (2) is the ratio of batch means of HSIC_1 (Nguyen et al. 2020), eq. (3) is
HSIC_1 itself (Song et al. 2012). Features are ``[n, p]`` (examples x features; ``[n, ...]`` is flattened);
Gram stacks are ``[L, n, n]`` (one per layer). All arithmetic is float64 on the input's device.

A layer whose self-HSIC is zero (constant features) or, for HSIC_1, slightly negative (the estimator is unbiased,
not non-negative) yields NaN in its row/column: CKA is undefined there and we do not invent a value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .validation import check_choice, check_features, check_finite, check_int, check_same_rows

MODES = ("reference", "teaching-matters")

#: The fewest examples HSIC_1 (eq. 3) is defined for: its normalisation divides by n(n-3) and (n-1)(n-2).
#: Every rule about batch sizes for minibatch CKA (here and in the extraction's Gram product) reads this name.
HSIC1_MIN_N = 4


def _check_mode(mode: str) -> None:
    check_choice(mode, "mode", MODES)


def _features(X: Tensor, name: str) -> Tensor:
    return check_features(X, name, flatten=True)


def _gram(X: Tensor) -> Tensor:
    X = X.reshape(X.shape[0], -1).to(torch.float64)
    return X @ X.T


def gram(X: Tensor) -> Tensor:
    """Linear Gram matrix ``X Xᵀ`` in float64. X: [n, p] or [n, ...] (flattened). Returns [n, n]."""
    return _gram(_features(X, "X"))


#: Bytes of float32 scratch per chunk of :func:`gram_tokens` ([n+1, chunk] centred columns): small enough to stay in
#: cache, so the features are read from memory once, and no [n, T*C] copy is allocated (on a VM the page faults of a
#: fresh 20-80 MB buffer per block cost more than the matmul itself); large enough that a block takes ~10 chunks,
#: not hundreds (each chunk is three small parallel ops, slow when other processes share the cores).
_GRAM_CHUNK_BYTES = 4 * 2**20


def gram_tokens(X: Tensor, *, check_finite: bool = True) -> Tensor:
    """Linear Gram matrix of token features flattened per example, ``X Xᵀ`` with X [n, T, C] seen as [n, T*C].

    The extraction's fast path: float32 matmuls over chunks of the flattened features, each chunk's columns first
    centred by their batch mean m: with ``Y = X - 1mᵀ`` and ``v = Y m``, ``X Xᵀ = Y Yᵀ + v 1ᵀ + 1 vᵀ + |m|²``.
    Each chunk's matmul takes ``[Y; mᵀ]`` times its transpose, so ``Y Yᵀ``, ``v`` and ``|m|²`` come out of the same
    pass; chunks are summed and the terms recombined in float64. Why centre: a large component shared by all
    images (residual streams have one) would otherwise swamp float32 precision, and HSIC_1 is exactly invariant to
    the ``v`` and ``|m|²`` terms (U-centring removes ``a 1ᵀ + 1 aᵀ + const``), so minibatch CKA sees only the
    well-conditioned ``Y Yᵀ``. (Shifting by one example instead of the mean leaves that example's deviation in
    every row: 10x the error.) On ViT-S/16-sized features the CKA is within ~2e-7 of all-float64 arithmetic
    (tests/test_kernels_cka.py checks 1e-6). float64 input stays float64 throughout. Returns [n, n] float64.

    NaN/Inf in X make the Gram non-finite, so finiteness is checked on the result (n² values instead of n·T·C);
    ``check_finite=False`` leaves that check to the caller (extraction checks a whole batch's Grams at once: on a
    GPU each check is a synchronisation).
    """
    if not isinstance(X, Tensor) or X.ndim != 3:
        raise ValueError(f"X must be token features [n, T, C]; got {tuple(X.shape) if isinstance(X, Tensor) else X!r}"
                         " (use gram() for [n, p] features)")
    if not X.is_floating_point():
        raise ValueError(f"X must be floating point; got {X.dtype} (convert with .float())")
    n = X.shape[0]
    flat = X.reshape(n, -1)
    dtype = torch.promote_types(X.dtype, torch.float32)
    chunk = max(1024, _GRAM_CHUNK_BYTES // ((n + 1) * dtype.itemsize))
    scratch = flat.new_empty((n + 1, min(chunk, flat.shape[1])), dtype=dtype)
    batch_mean = scratch.new_full((1, n), 1.0 / n)
    P = torch.zeros(n + 1, n + 1, dtype=torch.float64, device=X.device)       # [[Y Yᵀ, v], [vᵀ, |m|²]]
    for start in range(0, flat.shape[1], chunk):
        cols = flat[:, start:start + chunk].to(dtype)
        rows = scratch[:, :cols.shape[1]]
        torch.matmul(batch_mean, cols, out=rows[n:])                          # mᵀ of these columns (a GEMV)
        torch.sub(cols, rows[n], out=rows[:n])                                # Y = X - 1mᵀ
        P += rows @ rows.T
    v = P[:n, n]
    K = P[:n, :n] + v[:, None] + v[None, :] + P[n, n]
    if check_finite and not bool(torch.isfinite(K).all()):
        raise ValueError(f"X (shape {tuple(X.shape)}) holds NaN or Inf values (or values so large that their float32 "
                         "Gram overflows); check the model's outputs or recompute the cached features")
    return K


def _check_grams(K: Tensor, L: Tensor, min_n: int, names: tuple[str, str] = ("K", "L")) -> int:
    for name, M in zip(names, (K, L)):
        if M.ndim < 2 or M.shape[-1] != M.shape[-2]:
            raise ValueError(f"{name} must be [..., n, n] (square in the last two dims); got {tuple(M.shape)}")
        check_finite(M, name)
    if K.shape[-1] != L.shape[-1]:
        raise ValueError(f"{names[0]} {tuple(K.shape)} and {names[1]} {tuple(L.shape)} must have the same n")
    n = K.shape[-1]
    if n < min_n:
        raise ValueError(f"this HSIC estimator needs n >= {min_n} examples; got n={n}")
    return n


def hsic0(K: Tensor, L: Tensor) -> Tensor:
    """Biased HSIC (Gretton et al. 2005): tr(K H L H) / (n-1)^2. K, L: [..., n, n] (broadcast). Returns [...]."""
    n = _check_grams(K, L, 2)   # (n-1)^2 needs n >= 2
    K, L = K.to(torch.float64), L.to(torch.float64)

    def centre(M: Tensor) -> Tensor:
        return M - M.mean(-1, keepdim=True) - M.mean(-2, keepdim=True) + M.mean((-2, -1), keepdim=True)

    # H is idempotent, so tr(K H L H) = tr((HKH)(HLH)) = sum(Kc * Lcᵀ).
    return (centre(K) * centre(L).mT).sum((-2, -1)) / (n - 1) ** 2


def _zero_diag(M: Tensor) -> Tensor:
    M = M.to(torch.float64, copy=True)          # a copy: the caller's Grams are left as they are
    M.diagonal(dim1=-2, dim2=-1).zero_()
    return M


def _hsic1_zeroed(Kt: Tensor, Lt: Tensor) -> Tensor:
    n = Kt.shape[-1]
    tr = (Kt * Lt.mT).sum((-2, -1))
    ones_k_ones = Kt.sum((-2, -1)) * Lt.sum((-2, -1))
    ones_kl_ones = (Kt.sum(-2) * Lt.sum(-1)).sum(-1)  # 1ᵀK̃L̃1 = (1ᵀK̃)·(L̃1)
    return (tr + ones_k_ones / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ones_kl_ones) / (n * (n - 3))


def _hsic1_cross_zeroed(Kt: Tensor, Lt: Tensor) -> Tensor:
    n = Kt.shape[-1]
    # One [La, n²] x [n², Lb] matmul gives every tr(K̃_a L̃_b) at once.
    tr = Kt.reshape(Kt.shape[0], -1) @ Lt.mT.reshape(Lt.shape[0], -1).T
    ones_k_ones = torch.outer(Kt.sum((-2, -1)), Lt.sum((-2, -1)))
    ones_kl_ones = Kt.sum(-2) @ Lt.sum(-1).T
    return (tr + ones_k_ones / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ones_kl_ones) / (n * (n - 3))


def hsic1(K: Tensor, L: Tensor) -> Tensor:
    """Unbiased HSIC_1, eq. (3): diagonals zeroed, then
    ``[tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1] / (n(n-3))``.

    K, L: [..., n, n], broadcast against each other; n >= 4. Returns [...] float64.
    """
    _check_grams(K, L, HSIC1_MIN_N)
    return _hsic1_zeroed(_zero_diag(K), _zero_diag(L))


def hsic1_cross(Ks: Tensor, Ls: Tensor) -> Tensor:
    """HSIC_1 of every pair: Ks [La, n, n], Ls [Lb, n, n] -> [La, Lb], out[a, b] = hsic1(Ks[a], Ls[b])."""
    if Ks.ndim != 3 or Ls.ndim != 3:
        raise ValueError(f"Ks and Ls must be [L, n, n]; got {tuple(Ks.shape)} and {tuple(Ls.shape)}")
    _check_grams(Ks, Ls, HSIC1_MIN_N, ("Ks", "Ls"))
    return _hsic1_cross_zeroed(_zero_diag(Ks), _zero_diag(Ls))


def _teaching_matters_kernel(G: Tensor) -> Tensor:
    # Original cka_main.py: K -= K.min(); K /= K.max(); K.fill_diagonal_(0), per batch and layer. A constant
    # Gram would divide by zero there; we keep it at zeros so only that layer's CKA is NaN.
    G = G.to(torch.float64)
    G = G - G.amin((-2, -1), keepdim=True)
    mx = G.amax((-2, -1), keepdim=True)
    return _zero_diag(G / torch.where(mx > 0, mx, torch.ones_like(mx)))


class MinibatchCKA:
    """Streaming eq. (2): feed aligned per-batch Gram stacks, get the [La, Lb] CKA matrix.

    ``update(grams_a [La, b, b], grams_b [Lb, b, b])`` (same b within a batch, b >= 4; b may vary across batches),
    ``compute() -> [La, Lb]`` = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) · mean_i HSIC_1(L_i, L_i)).
    Sums are float64 on the device of the first batch. ``mode`` as in :func:`minibatch_cka`.
    """

    def __init__(self, mode: str = "reference"):
        _check_mode(mode)
        self.mode = mode
        self.n_batches = 0
        self._ab: Tensor | None = None
        self._aa: Tensor | None = None
        self._bb: Tensor | None = None

    def update(self, grams_a: Tensor, grams_b: Tensor) -> None:
        for name, G in (("grams_a", grams_a), ("grams_b", grams_b)):
            if not isinstance(G, Tensor) or G.ndim != 3 or G.shape[-1] != G.shape[-2]:
                shape = tuple(G.shape) if isinstance(G, Tensor) else type(G).__name__
                raise ValueError(f"{name} must be a Gram stack [L, b, b]; got {shape}")
        if grams_a.shape[-1] != grams_b.shape[-1]:
            raise ValueError(f"grams_a {tuple(grams_a.shape)} and grams_b {tuple(grams_b.shape)} must share the "
                             "batch size b (aligned batches of the same examples)")
        _check_grams(grams_a, grams_b, HSIC1_MIN_N, ("grams_a", "grams_b"))
        if self._ab is not None and (grams_a.shape[0], grams_b.shape[0]) != tuple(self._ab.shape):
            raise ValueError(f"layer counts changed: got La={grams_a.shape[0]}, Lb={grams_b.shape[0]}, earlier "
                             f"batches had {tuple(self._ab.shape)}")
        device = grams_a.device if self._ab is None else self._ab.device
        prep = _teaching_matters_kernel if self.mode == "teaching-matters" else _zero_diag
        Kt, Lt = prep(grams_a.to(device)), prep(grams_b.to(device))
        ab, aa, bb = _hsic1_cross_zeroed(Kt, Lt), _hsic1_zeroed(Kt, Kt), _hsic1_zeroed(Lt, Lt)
        if self._ab is None:
            self._ab, self._aa, self._bb = ab, aa, bb
        else:
            self._ab, self._aa, self._bb = self._ab + ab, self._aa + aa, self._bb + bb
        self.n_batches += 1

    def compute(self) -> Tensor:
        if self._ab is None:
            raise RuntimeError("MinibatchCKA.compute() called before any update()")
        k = self.n_batches
        return (self._ab / k) / torch.sqrt(torch.outer(self._aa / k, self._bb / k))


def minibatch_cka_from_grams(grams_a, grams_b, mode: str = "reference") -> Tensor:
    """Eq. (2) from stored per-batch Grams (the extraction layer stores these, not features).

    grams_a: list over batches of [La, b_i, b_i] (or a tensor [k, La, b, b]); grams_b likewise with [Lb, b_i, b_i]
    and the same b_i (batches aligned example by example across models). Returns [La, Lb] float64.
    """
    _check_mode(mode)
    if len(grams_a) != len(grams_b) or len(grams_a) == 0:
        raise ValueError(f"grams_a and grams_b must hold the same, non-zero number of batches; got "
                         f"{len(grams_a)} and {len(grams_b)}")
    acc = MinibatchCKA(mode)
    for i, (Ga, Gb) in enumerate(zip(grams_a, grams_b)):
        try:
            acc.update(Ga, Gb)
        except ValueError as e:
            raise ValueError(f"batch {i}: {e}") from e
    return acc.compute()


def _layers(feats, name: str) -> list[Tensor]:
    if isinstance(feats, Tensor):
        if feats.ndim < 3:
            raise ValueError(f"{name} as a tensor must be [L, n, p]; got {tuple(feats.shape)}")
        feats = list(feats.unbind(0))
    if not isinstance(feats, Sequence) or len(feats) == 0:
        raise ValueError(f"{name} must be a non-empty list of [n, p] tensors or a tensor [L, n, p]")
    out = [_features(f, f"{name}[{i}]") for i, f in enumerate(feats)]
    ns = {f.shape[0] for f in out}
    if len(ns) != 1:
        raise ValueError(f"all layers of {name} must have the same n (examples); got n in {sorted(ns)}")
    return out


def _suggest_batch_sizes(n: int, batch_size: int) -> list[int]:
    ok = [b for b in range(HSIC1_MIN_N, min(n, 4 * batch_size) + 1) if n % b == 0 or n % b >= HSIC1_MIN_N]
    return sorted(ok, key=lambda b: (abs(b - batch_size), b))[:3]


def minibatch_cka(feats_a, feats_b, batch_size: int = 32, mode: str = "reference") -> Tensor:
    """Minibatch linear CKA (eq. 2) for every layer pair, float64, on the features' device.

    feats_a: list over layers of [n, p_l] (or [n, ...], flattened) or a tensor [La, n, p]; feats_b likewise, same
    examples in the same order. Batches are consecutive slices of ``batch_size`` examples (shuffle beforehand if
    the order is sorted, e.g. by class); a last partial batch with >= 4 examples is its own batch, one with fewer
    is a ValueError (HSIC_1 needs n >= 4). Returns [La, Lb].

    mode="reference" (default): Nguyen et al. 2020 / Objectives Matter eq. (2)-(3) on linear Grams X Xᵀ.
    mode="teaching-matters": reproduces Teaching Matters' cka/cka_main.py: each batch's Gram is min-max rescaled,
    K <- (K - min K) / max(K - min K), its diagonal zeroed, then the same HSIC_1 and ratio of batch means. This is a
    DIFFERENT number from the reference: subtracting the minimum adds a constant to every entry, which changes the
    kernel (not a scalar rescaling) and so the CKA. The original also used class-sorted batches of 8 with all tokens
    flattened ([n, T, D] -> [n, T*D], which passing [n, T, D] features here reproduces) and float32 arithmetic.
    """
    _check_mode(mode)
    A, B = _layers(feats_a, "feats_a"), _layers(feats_b, "feats_b")
    n = check_same_rows(A[0], B[0], ("feats_a", "feats_b"))
    check_int(batch_size, f"batch_size (HSIC_1 needs n >= {HSIC1_MIN_N})", HSIC1_MIN_N)
    rest = n % batch_size
    if 0 < rest < HSIC1_MIN_N:
        raise ValueError(
            f"with n={n} and batch_size={batch_size} the last batch would have {rest} < {HSIC1_MIN_N} examples, "
            f"too few for HSIC_1; drop those {rest} examples or use another batch_size "
            f"(e.g. {_suggest_batch_sizes(n, batch_size)})")
    acc = MinibatchCKA(mode)
    for s in range(0, n, batch_size):
        acc.update(torch.stack([_gram(f[s:s + batch_size]) for f in A]),
                   torch.stack([_gram(f[s:s + batch_size]) for f in B]))
    return acc.compute()


def linear_cka(X: Tensor, Y: Tensor, debiased: bool = False) -> float:
    """Full-batch linear CKA of X [n, p1] and Y [n, p2].

    debiased=False: Kornblith et al. 2019 (centred Grams, biased HSIC_0). debiased=True: HSIC_1 in place of HSIC_0
    (equal to Kornblith's ``cka(..., debiased=True)``; needs n >= 4).
    """
    X, Y = _features(X, "X"), _features(Y, "Y")
    check_same_rows(X, Y, ("X", "Y"))
    K, L = _gram(X), _gram(Y)
    h = hsic1 if debiased else hsic0
    return float(h(K, L) / torch.sqrt(h(K, K) * h(L, L)))

"""DINO weighted k-NN classification (Caron et al. 2021, ``eval_knn.py``; Teaching Matters 6.1, Objectives Matter 2.1).

Features are L2-normalised, similarity is the cosine (a dot product of unit vectors), each test image takes its
``k`` most similar training images and every neighbour votes for its label with weight ``exp(sim / T)``; the class
with the largest summed vote wins. Papers report ``k=20``, ``T=0.07``.

Computation runs on the device of ``train_feats`` in its dtype promoted to at least float32 (float64 inputs stay
float64, so tests can compare against a float64 reference exactly). The training matrix is never copied to a wider
dtype: for ImageNet-size reference sets that would not fit in memory.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import check_features, check_int, check_labels, check_positive

#: Memory for one block of similarities [chunk, N] when ``chunk_size`` is not given: the chunk is as many test rows
#: as fit (one large float32 matmul is what makes brute force fast; 256 MB holds 1000 queries against 50k references,
#: ~50 against ImageNet's 1.28M). A fixed SIZE, never a fixed number of chunks: DINO's ``knn_classifier`` steps
#: through the test set in ``num_test_images // 100`` rows, so fewer than 100 test images give a step of 0 and
#: ``range(0, n, 0)`` raises.
SIMILARITY_BLOCK_BYTES = 256 * 2**20


def weighted_knn(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, k: int = 20,
                 temperature: float = 0.07, num_classes: int | None = None,
                 chunk_size: int | None = None) -> Tensor:
    """Predict a label for each test feature by DINO's weighted k-NN vote.

    Args:
        train_feats: [N, D] reference features (any scale: they are L2-normalised here).
        train_labels: [N] integer labels in [0, num_classes).
        test_feats: [M, D] query features, same D.
        k: neighbours per query, 1 <= k <= N.
        temperature: T in the vote weight ``exp(cos / T)``; > 0.
        num_classes: number of classes (default ``max(train_labels) + 1``).
        chunk_size: test rows per similarity block (memory is ``chunk_size x N``); ``None``: as many as fit in
            :data:`SIMILARITY_BLOCK_BYTES`. The result does not depend on it.

    Returns:
        [M] int64 predicted labels on ``train_feats``' device. Ties between classes go to the lowest class index.
    """
    check_features(train_feats, "train_feats")
    check_features(test_feats, "test_feats")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"train_feats {tuple(train_feats.shape)} and test_feats {tuple(test_feats.shape)} "
                         "must have the same feature dimension D")
    n_train = train_feats.shape[0]
    if num_classes is not None:
        check_int(num_classes, "num_classes")
    check_labels(train_labels, n_train, "train_labels", num_classes)
    check_int(k, "k (neighbours; at most N, the number of train features)", 1, n_train)
    check_positive(temperature, "temperature")
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size")
    C = int(num_classes) if num_classes is not None else int(train_labels.max()) + 1

    device = train_feats.device
    dtype = torch.promote_types(train_feats.dtype, torch.float32)
    # Cosine = (q / |q|) . (x / |x|): the reference norms divide the similarity columns instead of normalising a
    # copy of the [N, D] reference matrix (a full write of it per call; at 50k x 768 that is 150 MB).
    train = train_feats if train_feats.dtype == dtype else train_feats.to(dtype)
    inv_norms = 1.0 / train.norm(dim=1).clamp_min(1e-12)                   # F.normalize's eps
    labels = train_labels.to(device=device, dtype=torch.long)
    if chunk_size is None:
        chunk_size = max(1, SIMILARITY_BLOCK_BYTES // (n_train * dtype.itemsize))
    preds = []
    for start in range(0, test_feats.shape[0], chunk_size):
        q = F.normalize(test_feats[start:start + chunk_size].to(device=device, dtype=dtype), dim=1)
        sim = (q @ train.T).mul_(inv_norms)                           # [m, N] cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)                        # [m, k]
        votes = torch.zeros(q.shape[0], C, device=device, dtype=dtype)
        votes.scatter_add_(1, labels[top_idx], (top_sim / temperature).exp())
        preds.append(votes.argmax(dim=1))                            # first maximum = lowest class on ties
    return torch.cat(preds)


def knn_accuracy(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
                 **kwargs) -> float:
    """Top-1 accuracy in [0, 1] of :func:`weighted_knn` (same keyword arguments) against ``test_labels`` [M]."""
    check_features(test_feats, "test_feats")   # first: a non-tensor would otherwise read as "-1 rows" below
    check_labels(test_labels, test_feats.shape[0], "test_labels")
    pred = weighted_knn(train_feats, train_labels, test_feats, **kwargs)
    return float((pred.cpu() == test_labels.cpu().long()).double().mean())

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

#: Default number of test rows per similarity chunk. A fixed SIZE, not a fixed number of chunks: DINO's
#: ``knn_classifier`` steps through the test set in ``num_test_images // num_chunks`` rows with num_chunks=100, so a
#: test set of fewer than 100 images gives a step of 0 and ``range(0, n, 0)`` raises. Our demo sets are small.
DEFAULT_CHUNK_SIZE = 256


def _check_feats(x, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor [n, D]; got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} (shape {tuple(x.shape)}) holds NaN or Inf values")


def _check_labels(y, n: int, name: str, num_classes: int | None) -> None:
    if not isinstance(y, Tensor) or y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        shape = (tuple(y.shape), y.dtype) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name} must be an integer tensor [n]; got {shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but its features have {n} rows")
    if n and int(y.min()) < 0:
        raise ValueError(f"{name} holds negative labels (min {int(y.min())})")
    if num_classes is not None and n and int(y.max()) >= num_classes:
        raise ValueError(f"{name} holds label {int(y.max())} >= num_classes={num_classes}")


def weighted_knn(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, k: int = 20,
                 temperature: float = 0.07, num_classes: int | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Predict a label for each test feature by DINO's weighted k-NN vote.

    Args:
        train_feats: [N, D] reference features (any scale: they are L2-normalised here).
        train_labels: [N] integer labels in [0, num_classes).
        test_feats: [M, D] query features, same D.
        k: neighbours per query, 1 <= k <= N.
        temperature: T in the vote weight ``exp(cos / T)``; > 0.
        num_classes: number of classes (default ``max(train_labels) + 1``).
        chunk_size: test rows per similarity block (memory is ``chunk_size x N``); the result does not depend on it.

    Returns:
        [M] int64 predicted labels on ``train_feats``' device. Ties between classes go to the lowest class index.
    """
    _check_feats(train_feats, "train_feats")
    _check_feats(test_feats, "test_feats")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"train_feats {tuple(train_feats.shape)} and test_feats {tuple(test_feats.shape)} "
                         "must have the same feature dimension D")
    n_train = train_feats.shape[0]
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    _check_labels(train_labels, n_train, "train_labels", num_classes)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_train:
        raise ValueError(f"k must be an int in [1, N={n_train}] (the number of train features); got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    C = int(num_classes) if num_classes is not None else int(train_labels.max()) + 1

    device = train_feats.device
    dtype = torch.promote_types(train_feats.dtype, torch.float32)
    train = F.normalize(train_feats.to(dtype), dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    preds = []
    for start in range(0, test_feats.shape[0], chunk_size):
        q = F.normalize(test_feats[start:start + chunk_size].to(device=device, dtype=dtype), dim=1)
        sim = q @ train.T                                            # [m, N] cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)                        # [m, k]
        votes = torch.zeros(q.shape[0], C, device=device, dtype=dtype)
        votes.scatter_add_(1, labels[top_idx], (top_sim / temperature).exp())
        preds.append(votes.argmax(dim=1))                            # first maximum = lowest class on ties
    return torch.cat(preds)


def knn_accuracy(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
                 **kwargs) -> float:
    """Top-1 accuracy in [0, 1] of :func:`weighted_knn` (same keyword arguments) against ``test_labels`` [M]."""
    _check_labels(test_labels, test_feats.shape[0] if isinstance(test_feats, Tensor) else -1, "test_labels", None)
    pred = weighted_knn(train_feats, train_labels, test_feats, **kwargs)
    return float((pred.cpu() == test_labels.cpu().long()).double().mean())

"""Weighted k-NN (DINO vote) vs scikit-learn brute-force neighbours and faiss-cpu IndexFlatIP + the same vote."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from common import best_of_interleaved, record

from vitscope.kernels import knn


def _vote(sim, idx, labels, classes, temperature):
    votes = np.zeros((sim.shape[0], classes))
    np.add.at(votes, (np.arange(sim.shape[0])[:, None], labels[idx]), np.exp(sim / temperature))
    return votes.argmax(1)


def run(n_train: int = 50_000, n_test: int = 1000, dim: int = 768, classes: int = 100, k: int = 20) -> list[dict]:
    import faiss
    from sklearn.neighbors import NearestNeighbors
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=g)
    ytr = torch.randint(classes, (n_train,), generator=g)
    yte = torch.randint(classes, (n_test,), generator=g)
    xtr = centres[ytr] + 2 * torch.randn(n_train, dim, generator=g)
    xte = centres[yte] + 2 * torch.randn(n_test, dim, generator=g)
    tr, te = F.normalize(xtr, dim=1).numpy(), F.normalize(xte, dim=1).numpy()
    labels = ytr.numpy()

    def ours():
        return knn.weighted_knn(xtr, ytr, xte, k=k, num_classes=classes).numpy()

    def with_faiss():
        index = faiss.IndexFlatIP(dim)
        index.add(tr)
        sim, idx = index.search(te, k)
        return _vote(sim, idx, labels, classes, 0.07)

    def with_sklearn():
        nn_ = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(tr)
        dist, idx = nn_.kneighbors(te)
        return _vote(1 - dist, idx, labels, classes, 0.07)

    mine = ours()
    rows = []
    for name, fn, target in (("faiss-cpu IndexFlatIP", with_faiss, "within 1.5x of faiss (ratio >= 0.67)"),
                             ("scikit-learn brute", with_sklearn, "")):
        disagree = float((fn() != mine).mean())          # fraction of different predictions (ties may differ)
        times = best_of_interleaved({"ours": ours, "theirs": fn}, repeat=2)
        rows.append(record("knn_vs_" + name.split()[0], times["ours"], name, times["theirs"], disagree, 0.005,
                           target, 0.67 if target else None, n_train=n_train, n_test=n_test, dim=dim, k=k))
    return rows

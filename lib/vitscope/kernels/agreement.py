"""Do two models rank and predict classes alike? (Objectives Matter App. F, Fig. 13.)

* :func:`knn_class_votes`: per query, every class's summed DINO k-NN vote (:mod:`vitscope.kernels.knn`'s vote, kept
  whole instead of reduced to its argmax): the class scores whose rankings are compared.
* :func:`topk_kendall_tau`: per query, Kendall's tau-b between two models' scores on the classes either model ranks
  in its top k (OM compares top-5 and top-10 rankings). Tau-b counts ties (k-NN votes are 0 for every class no
  neighbour voted for), as ``scipy.stats.kendalltau`` does by default. Its reference level is below 0: for two
  unrelated models each one's top classes are the other's low ones, so the union holds discordant pairs; read a
  pair's tau against the same models' tau with an untrained model.
* :func:`prediction_f1`: F1 of one model's top-1 predictions scored against the other's, as
  ``sklearn.metrics.f1_score(pred_a, pred_b, average=...)``; ``"micro"`` is the fraction of queries on which they
  agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import check_choice, check_features, check_int, check_labels, check_positive


def knn_class_votes(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, k: int = 20,
                    temperature: float = 0.07, num_classes: int | None = None, chunk_size: int = 256) -> Tensor:
    """[M, C] summed vote ``exp(cos / T)`` of each query's k nearest references per class (float64).

    Same inputs and vote as :func:`vitscope.kernels.knn.weighted_knn` (whose prediction is this matrix's argmax,
    lowest class on ties); computed in float64 on the device of ``train_feats``.
    """
    check_features(train_feats, "train_feats")
    check_features(test_feats, "test_feats")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"train_feats {tuple(train_feats.shape)} and test_feats {tuple(test_feats.shape)} "
                         "must have the same feature dimension D")
    check_labels(train_labels, train_feats.shape[0], "train_labels", num_classes)
    check_int(k, "k (neighbours; at most N, the number of train features)", 1, train_feats.shape[0])
    check_positive(temperature, "temperature")
    check_int(chunk_size, "chunk_size")
    C = int(num_classes) if num_classes is not None else int(train_labels.max()) + 1
    device = train_feats.device
    train = F.normalize(train_feats.double(), dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    out = []
    for start in range(0, test_feats.shape[0], chunk_size):
        q = F.normalize(test_feats[start:start + chunk_size].to(device=device, dtype=torch.float64), dim=1)
        top_sim, top_idx = (q @ train.T).topk(k, dim=1)                          # [m, k]
        votes = torch.zeros(q.shape[0], C, device=device, dtype=torch.float64)
        out.append(votes.scatter_add_(1, labels[top_idx], (top_sim / temperature).exp()))
    return torch.cat(out)


def _tau_b(x: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    """Kendall's tau-b of x and y [M, P] over the positions where ``valid`` [M, P] is True, per row: [M]."""
    dx = torch.sign(x[:, :, None] - x[:, None, :])                              # [M, P, P]
    dy = torch.sign(y[:, :, None] - y[:, None, :])
    pair = (valid[:, :, None] & valid[:, None, :]).triu(diagonal=1)            # each unordered pair once
    s = (dx * dy * pair).sum((1, 2))                                            # concordant minus discordant
    n_x = ((dx != 0) & pair).sum((1, 2)).double()                               # pairs not tied in x
    n_y = ((dy != 0) & pair).sum((1, 2)).double()
    return s / torch.sqrt(n_x * n_y)                                            # NaN where one side is all ties


def topk_kendall_tau(scores_a: Tensor, scores_b: Tensor, k: int) -> Tensor:
    """Per query, Kendall's tau-b between two models' class scores on the union of their top-``k`` classes.

    Args:
        scores_a, scores_b: [M, C] class scores of the same M queries (e.g. :func:`knn_class_votes`, logits).
        k: how many top classes of each model enter the comparison (OM: 5 and 10), 2 <= k <= C.

    Returns [M] float64 in [-1, 1]; NaN for a query on which one model scores every compared class the same.
    Top-k membership takes the lowest class index among equal scores (a stable sort). Memory is [M, 2k, 2k], not
    [M, C, C], so 1000 ImageNet classes cost no more than 50.
    """
    for name, s in (("scores_a", scores_a), ("scores_b", scores_b)):
        check_features(s, name)
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"scores_a {tuple(scores_a.shape)} and scores_b {tuple(scores_b.shape)} must have the same "
                         "shape [queries, classes]")
    check_int(k, "k (top classes compared)", 2, scores_a.shape[1])
    a, b = scores_a.double(), scores_b.double()
    top = [torch.sort(-s, dim=1, stable=True).indices[:, :k] for s in (a, b)]  # ties: lowest class first
    idx = torch.cat(top, dim=1)                                                 # [M, 2k] classes, maybe repeated
    same = idx[:, :, None] == idx[:, None, :]
    repeated = (same & torch.ones_like(same[0]).tril(diagonal=-1)).any(2)      # seen at an earlier position
    return _tau_b(a.gather(1, idx), b.gather(1, idx), ~repeated)


F1_AVERAGES = ("macro", "micro", "weighted")


def prediction_f1(pred_a: Tensor, pred_b: Tensor, num_classes: int | None = None, average: str = "macro") -> float:
    """F1 of top-1 predictions ``pred_b`` [M] scored against ``pred_a`` [M] as if ``pred_a`` were the truth.

    ``average``: ``"macro"`` (mean over the classes either model predicts, sklearn's label set), ``"micro"``
    (the agreement rate) or ``"weighted"`` (classes weighted by how often ``pred_a`` predicts them). A class that
    one model never predicts has F1 0, as in scikit-learn with ``zero_division=0``. Macro F1 is symmetric in the
    two models; weighted F1 is not.
    """
    check_choice(average, "average", F1_AVERAGES)
    check_labels(pred_a, pred_a.shape[0] if isinstance(pred_a, Tensor) else -1, "pred_a", num_classes)
    check_labels(pred_b, pred_a.shape[0], "pred_b", num_classes)
    if pred_a.shape[0] == 0:
        raise ValueError("pred_a is empty; F1 needs at least one query")
    a, b = pred_a.long().cpu(), pred_b.long().cpu()
    C = int(num_classes) if num_classes is not None else int(max(a.max(), b.max())) + 1
    tp = torch.bincount(a[a == b], minlength=C).double()
    support_a = torch.bincount(a, minlength=C).double()                        # "true" count per class
    support_b = torch.bincount(b, minlength=C).double()                        # predicted count per class
    if average == "micro":
        return float(tp.sum() / a.shape[0])
    denom = support_a + support_b
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    present = denom > 0
    if average == "macro":
        return float(f1[present].mean())
    return float((f1 * support_a).sum() / support_a.sum())

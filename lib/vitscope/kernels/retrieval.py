"""Image retrieval mAP of the revisited Oxford and Paris protocol (Radenović et al., CVPR 2018; Teaching Matters 6.1).

Each query ranks the whole database by similarity (most similar first). The query's ground truth lists database
indices in three groups, ``easy``, ``hard`` and ``junk``; a *setup* turns them into positives and junk:

=========  ===================  ====================
setup      positives            junk (ignored)
=========  ===================  ====================
easy       easy                 junk + hard
medium     easy + hard          junk
hard       hard                 junk + easy
=========  ===================  ====================

Junk images are removed from the ranking before AP is computed: each positive moves up by the number of junk images
ranked above it. AP is the area under the precision-recall curve by the trapezoid rule, as the revisitop toolkit's
``compute_ap`` defines it: with 0-based rank ``r_j`` of the j-th positive (j = 0, 1, ...) among ``n`` positives,

    AP = (1/n) * sum_j (p0_j + p1_j) / 2,   p0_j = j / r_j (1 when r_j = 0),   p1_j = (j + 1) / (r_j + 1).

A query with no positives in a setup is skipped (NaN per query; mAP averages the others). Similarities are computed
in float64; ties are broken by the lower database index (a stable sort), where revisitop's ``np.argsort`` leaves the
order of ties unspecified.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import check_choice, check_features, check_int

#: The three setups of the revisited protocol, in the paper's order (E, M, H).
SETUPS = ("easy", "medium", "hard")
#: The ground-truth groups each setup makes its positives and its junk from.
SETUP_GROUPS = {"easy": (("easy",), ("junk", "hard")),
                "medium": (("easy", "hard"), ("junk",)),
                "hard": (("hard",), ("junk", "easy"))}


def average_precision(ranks_of_positives, n_positives: int) -> float:
    """Trapezoid-rule AP (revisitop's ``compute_ap``) of one query.

    Args:
        ranks_of_positives: [P] 0-based ranks of the retrieved positives after junk removal, ascending and distinct
            (a list or an integer tensor); P <= ``n_positives``. Positives never retrieved are simply absent.
        n_positives: the number of positives of the query (the recall denominator), >= 1.

    Returns AP in [0, 1].
    """
    n = check_int(n_positives, "n_positives (the query's number of positives)")
    ranks = torch.as_tensor(ranks_of_positives, dtype=torch.float64).reshape(-1)
    if ranks.numel() > n:
        raise ValueError(f"ranks_of_positives holds {ranks.numel()} ranks but n_positives={n}; a query cannot "
                         "retrieve more positives than it has")
    if ranks.numel() == 0:
        return 0.0
    if bool((ranks < 0).any()) or bool((ranks != ranks.round()).any()):
        raise ValueError("ranks_of_positives must be non-negative integer ranks (0 = the top of the ranking)")
    if bool((ranks[1:] <= ranks[:-1]).any()):
        raise ValueError("ranks_of_positives must be strictly increasing (each positive has its own rank); sort them")
    j = torch.arange(ranks.numel(), dtype=torch.float64)
    # rank 0 can only be the first positive (j = 0): precision there is defined as 1, as in compute_ap
    p0 = torch.where(ranks == 0, torch.ones_like(ranks), j / ranks.clamp_min(1))
    p1 = (j + 1) / (ranks + 1)
    return float(((p0 + p1) / 2).sum() / n)


def _indices(value, n_database: int, where: str) -> Tensor:
    """A ground-truth list (list / tuple / array / tensor of ints) as an int64 tensor, checked against N."""
    try:
        idx = torch.as_tensor(value if not isinstance(value, Tensor) else value.cpu()).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{where} must be a list of database indices; got {type(value).__name__}") from err
    if idx.numel() and (idx.is_floating_point() or idx.dtype == torch.bool):
        raise ValueError(f"{where} must hold integer database indices; got {idx.dtype}")
    idx = idx.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_database):
        raise ValueError(f"{where} holds index {int(idx.max()) if int(idx.max()) >= n_database else int(idx.min())} "
                         f"outside [0, {n_database}) (the database size); is the ground truth for another data set?")
    return idx


def setup_ground_truth(gnd: Sequence[Mapping], setup: str, n_database: int) -> list[tuple[Tensor, Tensor]]:
    """Per query, ``(positives, junk)`` int64 index tensors of ``setup`` (see the module table).

    ``gnd``: one mapping per query with keys ``easy``, ``hard``, ``junk`` (lists of database indices in
    [0, ``n_database``)); other keys (``bbx``) are ignored."""
    check_choice(setup, "setup", SETUPS)
    if isinstance(gnd, (str, bytes)) or not isinstance(gnd, Sequence):
        raise ValueError(f"gnd must be a list with one dict per query; got {type(gnd).__name__}")
    positives_from, junk_from = SETUP_GROUPS[setup]
    out = []
    for q, entry in enumerate(gnd):
        if not isinstance(entry, Mapping):
            raise ValueError(f"gnd[{q}] must be a dict with keys easy, hard, junk; got {type(entry).__name__}")
        missing = [k for k in ("easy", "hard", "junk") if k not in entry]
        if missing:
            raise ValueError(f"gnd[{q}] lacks {missing}; revisitop ground truth has easy, hard and junk per query")
        groups = {k: _indices(entry[k], n_database, f"gnd[{q}][{k!r}]") for k in ("easy", "hard", "junk")}
        # sets, as revisitop's np.in1d reads them: an image listed in two groups (easy and hard under "medium",
        # easy and junk under "hard") counts once, not as two positives or as junk twice
        out.append((torch.cat([groups[k] for k in positives_from]).unique(),
                    torch.cat([groups[k] for k in junk_from]).unique()))
    return out


def query_average_precisions(similarity: Tensor, gnd: Sequence[Mapping], setup: str) -> Tensor:
    """AP of every query under ``setup``, junk removed from each ranking.

    Args:
        similarity: [Q, N] similarity of each query to each database image (larger = more similar).
        gnd: Q ground-truth mappings (``easy``, ``hard``, ``junk``: database indices).
        setup: ``"easy"``, ``"medium"`` or ``"hard"``.

    Returns [Q] float64 APs; NaN for a query with no positives in this setup (the protocol skips it).
    """
    sim = check_features(similarity, "similarity ([Q queries, N database images])")
    Q, N = sim.shape
    if len(gnd) != Q:
        raise ValueError(f"gnd has {len(gnd)} entries but similarity has {Q} query rows; one entry per query")
    truth = setup_ground_truth(gnd, setup, N)
    order = torch.argsort(sim.double().cpu(), dim=1, descending=True, stable=True)    # [Q, N] database indices
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(N).expand(Q, N).contiguous())            # [Q, N] rank of each image
    aps = torch.full((Q,), float("nan"), dtype=torch.float64)
    for q, (pos, junk) in enumerate(truth):
        if pos.numel() == 0:
            continue
        pos_ranks = position[q, pos].sort().values
        junk_ranks = position[q, junk].sort().values
        # each positive moves up by the junk images ranked strictly above it (revisitop's compute_map)
        shift = torch.searchsorted(junk_ranks, pos_ranks, right=False)
        aps[q] = average_precision(pos_ranks - shift, pos.numel())
    return aps


def mean_average_precision(similarity: Tensor, gnd: Sequence[Mapping], setup: str) -> float:
    """mAP over the queries that have positives in ``setup`` (see :func:`query_average_precisions`)."""
    aps = query_average_precisions(similarity, gnd, setup)
    kept = aps[~aps.isnan()]
    if kept.numel() == 0:
        raise ValueError(f"no query has a positive in the {setup!r} setup; mAP is undefined")
    return float(kept.mean())


def cosine_similarity(queries: Tensor, database: Tensor) -> Tensor:
    """[Q, N] float64 cosine similarity of L2-normalised ``queries`` [Q, D] and ``database`` [N, D] rows."""
    check_features(queries, "queries")
    check_features(database, "database")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and database {tuple(database.shape)} must have the same "
                         "feature dimension D")
    return F.normalize(queries.double(), dim=1) @ F.normalize(database.double(), dim=1).T


"""Revisited Oxford/Paris mAP (vitscope.kernels.retrieval): hand-computed rankings, junk handling per setup, and an
independent float64 NumPy transcription of the revisitop toolkit's loops (compute_ap / compute_map)."""
import numpy as np
import pytest
import torch

from vitscope.kernels import retrieval as R


def test_average_precision_hand_computed():
    # positives at ranks 0 and 2 of 2: (1 + 1)/2 + (1/2 + 2/3)/2, over 2 positives = 19/24
    assert R.average_precision([0, 2], 2) == pytest.approx(19 / 24, abs=1e-15)
    # ranks 1 and 3, a third positive never retrieved: (0 + 1/2)/2 + (1/3 + 1/2)/2, over 3 = 2/9
    assert R.average_precision([1, 3], 3) == pytest.approx(2 / 9, abs=1e-15)
    assert R.average_precision([0, 1, 2], 3) == 1.0               # a perfect ranking
    assert R.average_precision([], 4) == 0.0


@pytest.mark.parametrize("bad, n, match", [([2, 1], 2, "increasing"), ([0, 0], 2, "increasing"),
                                           ([-1], 1, "non-negative"), ([0, 1, 2], 2, "more positives"),
                                           ([0], 0, "n_positives")])
def test_average_precision_refuses_bad_input(bad, n, match):
    with pytest.raises(ValueError, match=match):
        R.average_precision(bad, n)


def _ordered_similarity(order, n_queries=1):
    """[n_queries, N] similarity ranking the database as ``order`` (first = most similar)."""
    sim = torch.empty(len(order), dtype=torch.float64)
    sim[torch.tensor(order)] = torch.arange(len(order), 0, -1, dtype=torch.float64)
    return sim.expand(n_queries, -1).clone()


def test_junk_is_removed_per_setup_hand_computed():
    sim = _ordered_similarity([3, 0, 1, 2, 4])        # ranks: 3 -> 0, 0 -> 1, 1 -> 2, 2 -> 3, 4 -> 4
    gnd = [{"easy": [0], "hard": [2], "junk": [1], "bbx": [0, 0, 1, 1]}]
    # medium: positives 0 (rank 1) and 2 (rank 3, one junk above it -> 2): (0 + 1/2)/2 + (1/2 + 2/3)/2, over 2
    assert R.query_average_precisions(sim, gnd, "medium")[0] == pytest.approx(5 / 12, abs=1e-15)
    # easy: positive 0 at rank 1 (junk 1 and hard 2 rank below it): (0 + 1/2)/2
    assert R.query_average_precisions(sim, gnd, "easy")[0] == pytest.approx(0.25, abs=1e-15)
    # hard: positive 2 at rank 3; junk 1 and easy 0 above it -> rank 1: (0 + 1/2)/2
    assert R.query_average_precisions(sim, gnd, "hard")[0] == pytest.approx(0.25, abs=1e-15)
    # without the junk rule the medium AP would be ((0 + 1/2)/2 + (1/3 + 2/4)/2) / 2 = 1/3
    assert R.query_average_precisions(sim, [{"easy": [0], "hard": [2], "junk": []}], "medium")[0] == \
        pytest.approx(1 / 3, abs=1e-15)


def test_queries_without_positives_are_skipped():
    sim = _ordered_similarity([0, 1, 2, 3], n_queries=2)
    gnd = [{"easy": [0], "hard": [], "junk": []}, {"easy": [], "hard": [], "junk": [1]}]
    aps = R.query_average_precisions(sim, gnd, "medium")
    assert aps[0] == 1.0 and torch.isnan(aps[1])
    assert R.mean_average_precision(sim, gnd, "medium") == 1.0
    with pytest.raises(ValueError, match="no query has a positive"):
        R.mean_average_precision(sim, gnd, "hard")


# ------------------------------------------------------------------ independent transcription of revisitop's loops

def _np_compute_ap(ranks, nres):
    ap, recall_step = 0.0, 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def _np_map(scores, gnd, setup):
    """scores [N, Q] as revisitop's examples; ranks = argsort(-scores) (stable here, to fix the order of ties)."""
    ranks = np.argsort(-scores, axis=0, kind="stable")
    pos_groups, junk_groups = {"easy": (["easy"], ["junk", "hard"]), "medium": (["easy", "hard"], ["junk"]),
                               "hard": (["hard"], ["junk", "easy"])}[setup]
    aps = []
    for i, g in enumerate(gnd):
        qgnd = np.concatenate([np.asarray(g[k], dtype=int) for k in pos_groups])
        qgndj = np.concatenate([np.asarray(g[k], dtype=int) for k in junk_groups])
        if qgnd.shape[0] == 0:
            aps.append(np.nan)
            continue
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k, ij, ip = 0, 0, 0
        while ip < len(pos):
            while ij < len(junk) and pos[ip] > junk[ij]:
                k += 1
                ij += 1
            pos[ip] = pos[ip] - k
            ip += 1
        aps.append(_np_compute_ap(pos, len(qgnd)))
    return np.array(aps)


def _random_gnd(rng, Q, N):
    gnd = []
    for q in range(Q):
        perm = rng.permutation(N)
        a, b, c = rng.integers(0, 6, size=3)
        if q == 0:
            a = 0                                       # one query with no easy positives: skipped in "easy"
        gnd.append({"easy": perm[:a].tolist(), "hard": perm[a:a + b].tolist(), "junk": perm[a + b:a + b + c].tolist(),
                    "bbx": [0.0, 0.0, 10.0, 10.0]})
    return gnd


@pytest.mark.parametrize("setup", R.SETUPS)
def test_matches_a_numpy_transcription_of_revisitop(setup):
    rng = np.random.default_rng(1)
    Q, N = 12, 40
    scores = rng.normal(size=(N, Q))
    scores[5] = scores[6]                               # a tie, ordered by database index in both
    gnd = _random_gnd(rng, Q, N)
    ours = R.query_average_precisions(torch.from_numpy(scores.T.copy()), gnd, setup).numpy()
    ref = _np_map(scores, gnd, setup)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12, equal_nan=True)
    assert R.mean_average_precision(torch.from_numpy(scores.T.copy()), gnd, setup) == \
        pytest.approx(np.nanmean(ref), abs=1e-12)


def test_relabelling_the_database_leaves_ap_unchanged():
    rng = np.random.default_rng(2)
    Q, N = 6, 30
    sim = torch.from_numpy(rng.normal(size=(Q, N)))
    gnd = _random_gnd(rng, Q, N)
    perm = torch.from_numpy(rng.permutation(N))            # new index of old image i is inv[i]
    inv = torch.argsort(perm)
    moved = [{k: inv[torch.tensor(v, dtype=torch.long)].tolist() for k, v in g.items() if k != "bbx"} for g in gnd]
    for setup in R.SETUPS:
        a = R.query_average_precisions(sim, gnd, setup)
        b = R.query_average_precisions(sim[:, perm], moved, setup)
        torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=1e-15)


def test_cosine_similarity_ranks_like_normalised_dot_products():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    db = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    ref = np.array([[float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for b in db.double().numpy()]
                    for a in q.double().numpy()])
    np.testing.assert_allclose(R.cosine_similarity(q * 3.0, db).numpy(), ref, atol=1e-12)
    with pytest.raises(ValueError, match="feature dimension"):
        R.cosine_similarity(q, torch.randn(4, 6))


@pytest.mark.parametrize("gnd, match", [
    ([{"easy": [0], "hard": []}], "lacks"),
    ([{"easy": [9], "hard": [], "junk": []}], "outside"),
    ([{"easy": [0.5], "hard": [], "junk": []}], "integer"),
    ([{"easy": [0], "hard": [], "junk": []}] * 2, "one entry per query"),
])
def test_ground_truth_errors_name_the_problem(gnd, match):
    with pytest.raises(ValueError, match=match):
        R.query_average_precisions(torch.zeros(1, 4, dtype=torch.float64), gnd, "medium")
    with pytest.raises(ValueError, match="setup"):
        R.query_average_precisions(torch.zeros(1, 4), [{"easy": [0], "hard": [], "junk": []}], "medium-hard")

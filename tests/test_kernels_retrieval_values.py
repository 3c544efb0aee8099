"""vitscope.kernels.retrieval value by value (issue 17: its surviving mutants): every error message compared whole,
each bound at and past the bound, the ground-truth groups of each setup as exact tensors, AP in float64 against a
NumPy loop over many ranks, and a ground truth that lists an image both as positive and as junk (revisitop's loop
does not move a positive for its own junk entry)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitscope.kernels import retrieval as R


def _refuses(message, fn, *args, **kwargs):
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    assert str(err.value) == message


def _np_compute_ap(ranks, nres):
    """revisitop's compute_ap, transcribed (float64)."""
    ap, recall_step = 0.0, 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        ap += (precision_0 + float(j + 1) / (rank + 1)) * recall_step / 2.0
    return ap


def test_average_precision_many_ranks_in_float64():
    rng = np.random.default_rng(0)
    ranks = np.sort(rng.choice(5000, size=400, replace=False))
    ranks[0] = 0
    want = _np_compute_ap(ranks.tolist(), 450)
    for given in (ranks.tolist(), torch.from_numpy(ranks), torch.from_numpy(ranks).float()):   # float32 exact < 2^24
        assert R.average_precision(given, 450) == pytest.approx(want, rel=1e-14, abs=0)
    assert R.average_precision([0, 1], 2) == 1.0 and R.average_precision([1, 2], 2) == (0 + 0.5 + 0.5 + 2 / 3) / 4
    assert R.average_precision([0], 1) == 1.0                      # n_positives 1 accepted; as many ranks as positives
    assert R.average_precision([], 1) == 0.0
    # a narrow integer tensor is read as float64: rank 255 + 1 must not wrap around in uint8 (nor 32767 in int16)
    assert R.average_precision(torch.tensor([3, 255], dtype=torch.uint8), 2) == \
        pytest.approx(_np_compute_ap([3, 255], 2), rel=1e-15)
    assert R.average_precision(torch.tensor([0, 32767], dtype=torch.int16), 3) == \
        pytest.approx(_np_compute_ap([0, 32767], 3), rel=1e-15)


def test_average_precision_messages():
    _refuses("n_positives (the query's number of positives) must be an int >= 1; got 0", R.average_precision, [0], 0)
    _refuses("n_positives (the query's number of positives) must be an int >= 1; got 0", R.average_precision, [], 0)
    _refuses("ranks_of_positives holds 3 ranks but n_positives=2; a query cannot retrieve more positives than it has",
             R.average_precision, [0, 1, 2], 2)
    integer = "ranks_of_positives must be non-negative integer ranks (0 = the top of the ranking)"
    for bad in ([-1], [0, 1.5], [-2, 3]):
        _refuses(integer, R.average_precision, bad, 4)
    increasing = "ranks_of_positives must be strictly increasing (each positive has its own rank); sort them"
    for bad in ([2, 1], [1, 1], [0, 3, 3]):
        _refuses(increasing, R.average_precision, bad, 4)


def test_setup_ground_truth_groups_exactly():
    gnd = ({"easy": [3, 1], "hard": np.array([0]), "junk": torch.tensor([2]), "bbx": [0, 0, 1, 1]},
           {"easy": [], "hard": [], "junk": []})                               # a tuple is a sequence
    want = {"easy": ([1, 3], [0, 2]), "medium": ([0, 1, 3], [2]), "hard": ([0], [1, 2, 3])}   # sets, sorted
    for setup, (pos, junk) in want.items():
        (p, j), (p2, j2) = R.setup_ground_truth(gnd, setup, 4)
        assert p.dtype == j.dtype == torch.int64
        assert p.tolist() == pos and j.tolist() == junk, setup
        assert p2.tolist() == [] and j2.tolist() == [] and p2.dtype == torch.int64


@pytest.mark.parametrize("value, message", [
    ({"a": 1}, "gnd[0]['easy'] must be a list of database indices; got dict"),
    ("abc", "gnd[0]['easy'] must be a list of database indices; got str"),
    ([[1, 2], [3]], "gnd[0]['easy'] must be a list of database indices; got list"),
    ([0.5], "gnd[0]['easy'] must hold integer database indices; got torch.float32"),
    ([True], "gnd[0]['easy'] must hold integer database indices; got torch.bool"),
    ([4], "gnd[0]['easy'] holds index 4 outside [0, 4) (the database size); is the ground truth for another data set?"),
    ([-1], "gnd[0]['easy'] holds index -1 outside [0, 4) (the database size); is the ground truth for another data "
           "set?"),
    ([2, -1], "gnd[0]['easy'] holds index -1 outside [0, 4) (the database size); is the ground truth for another "
              "data set?"),
    ([-1, 4], "gnd[0]['easy'] holds index 4 outside [0, 4) (the database size); is the ground truth for another "
              "data set?"),
])
def test_index_messages(value, message):
    _refuses(message, R.setup_ground_truth, [{"easy": value, "hard": [], "junk": []}], "easy", 4)


def test_index_bounds_and_types_accepted():
    (p, j), = R.setup_ground_truth([{"easy": [0, 3], "hard": torch.tensor([2]), "junk": np.array([], float)}],
                                   "medium", 4)
    assert p.tolist() == [0, 2, 3] and j.tolist() == []
    _refuses("gnd[1]['junk'] holds index 5 outside [0, 5) (the database size); is the ground truth for another data "
             "set?", R.setup_ground_truth,
             [{"easy": [], "hard": [], "junk": []}, {"easy": [], "hard": [], "junk": [5]}], "hard", 5)


def test_ground_truth_messages():
    ok = {"easy": [0], "hard": [], "junk": []}
    _refuses("setup='medium-hard' is unknown; choose from ('easy', 'medium', 'hard')", R.setup_ground_truth, [ok],
             "medium-hard", 4)
    _refuses("gnd must be a list with one dict per query; got str", R.setup_ground_truth, "abc", "easy", 4)
    _refuses("gnd must be a list with one dict per query; got bytes", R.setup_ground_truth, b"ab", "easy", 4)
    _refuses("gnd must be a list with one dict per query; got dict", R.setup_ground_truth, ok, "easy", 4)
    _refuses("gnd[1] must be a dict with keys easy, hard, junk; got list", R.setup_ground_truth, [ok, [0]], "easy", 4)
    _refuses("gnd[0] lacks ['hard', 'junk']; revisitop ground truth has easy, hard and junk per query",
             R.setup_ground_truth, [{"easy": [0]}], "easy", 4)


def test_query_average_precisions_messages():
    gnd = [{"easy": [0], "hard": [], "junk": []}]
    name = "similarity ([Q queries, N database images])"
    _refuses(f"{name} must be a tensor [n, D]; got (4,)", R.query_average_precisions, torch.zeros(4), gnd, "easy")
    _refuses(f"{name} must be a tensor [n, D]; got list", R.query_average_precisions, [[0.0]], gnd, "easy")
    _refuses(f"{name} must be floating point; got torch.int64 (convert with .float())", R.query_average_precisions,
             torch.zeros(1, 4, dtype=torch.long), gnd, "easy")
    _refuses(f"{name} (shape (1, 4)) holds NaN or Inf values; check the model's outputs or recompute the cached "
             "features", R.query_average_precisions, torch.tensor([[0.0, float("nan"), 1.0, 2.0]]), gnd, "easy")
    _refuses("gnd has 2 entries but similarity has 1 query rows; one entry per query", R.query_average_precisions,
             torch.zeros(1, 4), gnd * 2, "easy")
    _refuses("setup='all' is unknown; choose from ('easy', 'medium', 'hard')", R.query_average_precisions,
             torch.zeros(1, 4), gnd, "all")
    _refuses("no query has a positive in the 'hard' setup; mAP is undefined", R.mean_average_precision,
             torch.zeros(1, 4), gnd, "hard")


def _np_aps(scores, gnd, setup):
    """revisitop's compute_map loop (scores [Q, N], stable order of ties), transcribed."""
    pos_groups, junk_groups = R.SETUP_GROUPS[setup]
    aps = []
    for i, g in enumerate(gnd):
        ranks = np.argsort(-scores[i], kind="stable")
        qgnd = np.concatenate([np.asarray(g[k], dtype=int) for k in pos_groups])
        qgndj = np.concatenate([np.asarray(g[k], dtype=int) for k in junk_groups])
        if qgnd.size == 0:
            aps.append(np.nan)
            continue
        pos = np.arange(ranks.size)[np.isin(ranks, qgnd)]
        junk = np.arange(ranks.size)[np.isin(ranks, qgndj)]
        k = ij = 0
        for ip in range(len(pos)):
            while ij < len(junk) and pos[ip] > junk[ij]:
                k += 1
                ij += 1
            pos[ip] -= k
        aps.append(_np_compute_ap(pos, len(qgnd)))
    return np.array(aps)


def test_an_image_listed_as_positive_and_junk_is_not_moved_by_itself():
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    # an image listed both as positive and as junk: its own junk entry, at its own rank, must not move it
    gnd = [{"easy": [1, 3], "hard": [4], "junk": [1, 0]}, {"easy": [2], "hard": [0], "junk": [2, 4]}]
    got = R.query_average_precisions(torch.from_numpy(scores), gnd, "medium")
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _np_aps(scores, gnd, "medium"), rtol=0, atol=1e-15)
    # by hand, query 0: images 1, 3, 4 at ranks 1, 3, 4; junk 0 above image 1, junk 0 and 1 above the others -> 0, 1, 2
    # query 1: images 2, 0 at ranks 2, 4; junk 4 (rank 0) above image 2, junk 4 and 2 above image 0 -> 1, 2
    assert got.tolist() == [1.0, ((0 + 1 / 2) + (1 / 2 + 2 / 3)) / 4]


def test_mean_average_precision_skips_queries_without_positives():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 12))
    gnd = [{"easy": [1, 5], "hard": [2], "junk": [0]}, {"easy": [], "hard": [3], "junk": []},
           {"easy": [7], "hard": [], "junk": [8, 9]}]
    ref = _np_aps(scores, gnd, "easy")
    assert np.isnan(ref[1])
    assert R.mean_average_precision(torch.from_numpy(scores), gnd, "easy") == pytest.approx(np.nanmean(ref),
                                                                                          rel=1e-15)


def test_cosine_similarity_in_float64_from_float32():
    gen = torch.Generator().manual_seed(2)
    q, db = torch.randn(3, 300, generator=gen), torch.randn(5, 300, generator=gen) * 7
    got = R.cosine_similarity(q, db)
    assert got.dtype == torch.float64 and got.shape == (3, 5)
    a, b = q.double().numpy(), db.double().numpy()
    want = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-15)


def test_cosine_similarity_messages():
    q = torch.randn(3, 5)
    _refuses("queries must be a tensor [n, D]; got (5,)", R.cosine_similarity, q[0], q)
    _refuses("database must be a tensor [n, D]; got tuple", R.cosine_similarity, q, (1.0,))
    _refuses("database must be floating point; got torch.int64 (convert with .float())", R.cosine_similarity, q,
             q.long())
    _refuses("queries (3, 5) and database (4, 6) must have the same feature dimension D", R.cosine_similarity, q,
             torch.randn(4, 6))


def test_ties_are_ranked_by_database_index_in_a_large_database():
    # three similarity levels over 400 images: every positive is tied with ~130 others; the stable order decides
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=(2, 400)).astype(np.float64)
    gnd = [{"easy": rng.choice(400, 6, replace=False).tolist(), "hard": [], "junk": rng.choice(400, 9).tolist()}
           for _ in range(2)]
    gnd = [{**g, "junk": [j for j in g["junk"] if j not in g["easy"]]} for g in gnd]
    got = R.query_average_precisions(torch.from_numpy(scores), gnd, "easy")
    np.testing.assert_allclose(got.numpy(), _np_aps(scores, gnd, "easy"), rtol=0, atol=1e-15)

"""Retrieval per block (TM 6.1, Fig. 9 right): the profile section, planted features, the noise baseline, the tables
for Table 1, the claim checks on hand-made per-query tables, and one end-to-end run of an untrained zoo ViT on a tiny
twin in the revisitop layout."""
import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims import CANNOT_CHECK, HOLDS, INCONCLUSIVE
from vitscope.data.revisitop import GroundTruth
from vitscope.extract import FeatureStore
from vitscope.kernels.retrieval import query_average_precisions
from vitscope.profiles import Profile
from vitscope.sections import retrieval


def _profile(tmp_path, section=None, manifest="revisitop"):
    twin = {"landmarks": 2, "easy": 2, "hard": 1, "junk": 1, "distractors": 2, "queries_per_landmark": 2,
            "size": 40, "seed": 5}
    raw = {"name": "tiny", "models": ["random-a"], "device": "cpu",
           "datasets": {"roxford5k": {"manifest": manifest, "root": str(tmp_path / "data"), "synthetic": twin}},
           "retrieval": section if section is not None else {"datasets": ["roxford5k"]}}
    return Profile("tiny", raw)


def test_protocol_defaults_and_errors(tmp_path):
    assert retrieval.protocol(_profile(tmp_path)) == {"datasets": ("roxford5k",), "crop_queries": True,
                                                      "setups": ("easy", "medium", "hard")}
    for bad, match in (({"datasets": "roxford5k"}, "must list"), ({"datasets": ["a"], "setups": ["medium-hard"]},
                                                                   "setups"),
                       ({"datasets": ["a"], "crop_queries": "yes"}, "true or false")):
        with pytest.raises(ValueError, match=match):
            retrieval.protocol(_profile(tmp_path, bad))
    with pytest.raises(ValueError, match="revisitop"):
        retrieval.benchmark(_profile(tmp_path, manifest="imagenet50"), "roxford5k")


def _truth():
    # two landmarks of 3 database images each (easy, hard, junk) + 2 distractors; one query per landmark
    gnd = ({"bbx": None, "easy": (0,), "hard": (1,), "junk": (2,)}, {"bbx": None, "easy": (3,), "hard": (4,),
                                                                     "junk": (5,)})
    return GroundTruth("x", None, tuple(f"d{i}" for i in range(8)), ("q0", "q1"), gnd)


def test_block_aps_on_planted_features():
    truth = _truth()
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=gen) * 5            # landmark 0, landmark 1, distractors
    db_owner = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    database = torch.stack([centres[db_owner] + torch.randn(8, 16, generator=gen),           # block 1: separable
                            torch.randn(8, 16, generator=gen)], dim=1)                        # block 2: noise
    queries = torch.stack([centres[:2] + torch.randn(2, 16, generator=gen), torch.randn(2, 16, generator=gen)], 1)
    aps = retrieval.block_aps(queries, database, truth, ("easy", "medium"))
    assert set(aps) == {("easy", 1), ("medium", 1), ("easy", 2), ("medium", 2)}
    assert torch.equal(aps[("medium", 1)], torch.ones(2, dtype=torch.float64))    # both positives ranked first
    direct = query_average_precisions(torch.nn.functional.normalize(queries[:, 1].double(), dim=1)
                                      @ torch.nn.functional.normalize(database[:, 1].double(), dim=1).T,
                                      truth.gnd, "medium")
    torch.testing.assert_close(aps[("medium", 2)], direct, rtol=0, atol=1e-12)


def test_noise_baseline_is_near_the_random_ranking_level():
    n_db, n_q = 400, 50
    gnd = tuple({"bbx": None, "easy": tuple(range(q, q + 20)), "hard": (), "junk": ()} for q in range(n_q))
    truth = GroundTruth("x", None, tuple(map(str, range(n_db))), tuple(map(str, range(n_q))), gnd)
    aps = retrieval.noise_aps(truth, dim=32, setups=("easy",))["easy"]
    # a random ranking of 20 positives among 400 images has expected AP close to 20/400 (slightly above)
    assert 0.03 < float(aps.mean()) < 0.10


def _table():
    rows = []
    for model, per_block in (("zoo-dino", [0.2, 0.5, 0.4]), ("zoo-mae", [0.1, 0.1, 0.3])):
        for dataset in ("roxford5k", "rparis6k"):
            for block, m in enumerate(per_block, 1):
                rows.append({"model": model, "dataset": dataset, "setup": "medium", "block": block,
                             "map": m + (0.01 if dataset == "rparis6k" else 0), "n_queries": 4, "noise": 0.02})
    return pd.DataFrame(rows)


def test_best_per_model_for_table_1():
    best = retrieval.best_per_model(_table())
    assert best.to_dict("records") == [
        {"model": "zoo-dino", "best_block": 2, "best": 0.5, "last_block": 3, "last": 0.4, "noise": 0.02},
        {"model": "zoo-mae", "best_block": 3, "best": 0.3, "last_block": 3, "last": 0.3, "noise": 0.02}]
    assert retrieval.best_per_model(_table(), "rparis6k").best.tolist() == pytest.approx([0.51, 0.31])
    with pytest.raises(ValueError, match="no retrieval rows"):
        retrieval.best_per_model(_table(), setup="hard")


def test_summarise_averages_queries():
    pq = pd.DataFrame({"model": "m", "dataset": "d", "setup": "easy", "block": 1, "query": [0, 1, 2],
                       "ap": [1.0, 0.5, 0.0], "noise": [0.1, 0.2, 0.3]})
    s = retrieval.summarise(pq)
    assert s[["map", "n_queries", "noise"]].iloc[0].tolist() == pytest.approx([0.5, 3, 0.2])


def _per_query(planted: dict, n=300, seed=0) -> pd.DataFrame:
    """Per-query APs with planted means ``{model: [per-block mAP]}`` (ROxford5k, Medium)."""
    rng = np.random.default_rng(seed)
    frames = []
    for model, per_block in planted.items():
        for block, m in enumerate(per_block, 1):
            ap = np.clip(rng.normal(m, 0.05, size=n), 0, 1)
            frames.append(pd.DataFrame({"model": model, "dataset": "roxford5k", "setup": "medium", "block": block,
                                        "query": np.arange(n), "ap": ap, "noise": 0.01}))
    return pd.concat(frames, ignore_index=True)


def test_tm_check_orders_the_families():
    planted = {"zoo-supervised": [0.2, 0.4, 0.9], "zoo-clip": [0.2, 0.4, 0.7], "zoo-dino": [0.3, 0.5, 0.5],
               "zoo-mocov3": [0.3, 0.5, 0.5], "zoo-mae": [0.1, 0.3, 0.2], "zoo-beit": [0.1, 0.2, 0.1],
               "random-a": [0.05, 0.05, 0.05]}
    results = retrieval.tm_check(_per_query(planted))
    by = {(r.claim, r.subject): r for r in results}
    for subject in ("supervised minus the other trained models", "image-text minus joint-embedding",
                    "joint-embedding minus reconstruction"):
        assert by[("TM-6.1b", subject)].verdict == HOLDS, subject
    assert by[("TM-6.1b", "joint-embedding minus reconstruction")].effect.estimate == pytest.approx(0.35, abs=0.02)
    assert by[("TM-T1a", "retrieval (roxford5k, medium), zoo-supervised")].verdict == HOLDS
    assert by[("TM-T1a", "retrieval (roxford5k, medium), zoo-mae")].verdict != HOLDS     # peaks at block 2
    flat = retrieval.tm_check(_per_query({m: [0.3] * 3 for m in planted}))
    assert flat[0].verdict == INCONCLUSIVE
    lacking = retrieval.tm_check(_per_query({"zoo-dino": [0.3] * 3, "random-a": [0.1] * 3}))
    assert [r.verdict for r in lacking if r.claim == "TM-6.1b"] == [CANNOT_CHECK] * 3


def test_end_to_end_on_a_tiny_twin(tmp_path):
    profile = _profile(tmp_path, {"datasets": ["roxford5k"], "setups": ["medium", "hard"]})
    store = FeatureStore(tmp_path / "cache")
    table = retrieval.compute("random-a", profile, device="cpu", store=store)
    assert set(table.setup) == {"medium", "hard"} and table.block.tolist()[:2] == [1, 1]
    assert len(table) == 2 * table.block.max() and (table.n_queries == 4).all()
    assert table["map"].between(0, 1).all() and table.noise.between(0, 1).all()
    feats = retrieval.cls_features("random-a", profile, "roxford5k", device="cpu", store=store)
    assert feats["database"].shape[:2] == (2 * 4 + 2, table.block.max()) and feats["queries"].shape[0] == 4
    whole = Profile("tiny", {**profile.raw, "retrieval": {**profile.raw["retrieval"], "crop_queries": False}})
    uncropped = retrieval.cls_features("random-a", whole, "roxford5k", device="cpu", store=store)
    assert torch.equal(uncropped["database"], feats["database"])           # the database extraction is shared
    assert not torch.equal(uncropped["queries"], feats["queries"])         # the crop is part of the queries' key

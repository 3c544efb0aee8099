"""TM 6.2 DAVIS section: the protocol read from a profile, the pipeline end to end on a tiny twin with an untrained
zoo-architecture ViT, the summary tables, and the claim checks on planted per-object tables."""
import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims import CANNOT_CHECK, HOLDS, INCONCLUSIVE
from vitscope.extract import FeatureStore
from vitscope.profiles import Profile
from vitscope.sections import propagation as P


def _profile(root, **davis) -> Profile:
    return Profile("t", {"models": ["random-a"], "device": "cpu",
                         "datasets": {"videos": {"manifest": "davis2017", "root": str(root),
                                                 "synthetic": {"n_videos": 2, "n_frames": 4, "size": 48, "seed": 1}}},
                         "davis": {"dataset": "videos", **davis}})


def test_protocol_defaults_are_dinos(tmp_path):
    p = P.protocol(_profile(tmp_path))
    assert (p["n_last_frames"], p["neighbourhood"], p["topk"], p["temperature"], p["blocks"]) == (7, 12, 5, 0.1, None)
    assert P.protocol(_profile(tmp_path, blocks=[2, 3], topk=3))["blocks"] == [2, 3]


def test_pipeline_on_a_tiny_twin(tmp_path):
    run = _profile(tmp_path / "twin", blocks=[1, 6], neighbourhood=4)
    store = FeatureStore(tmp_path / "cache")
    objects = P.per_object("random-a", run, store=store)
    assert list(objects.columns) == ["model", "block", "video", "object", "j", "f", "jf"]
    assert len(objects) == 2 * 3                       # 2 blocks x (1 + 2 objects)
    assert objects[["j", "f", "jf"]].apply(lambda c: c.between(0, 1).all()).all()
    np.testing.assert_allclose(objects.jf, (objects.j + objects.f) / 2)
    again = P.per_object("random-a", run, store=store)                    # from the cache
    pd.testing.assert_frame_equal(objects, again)
    table = P.summarise(objects)
    assert table.n_objects.tolist() == [3, 3] and table.n_videos.tolist() == [2, 2]
    assert table.jf.iloc[0] == pytest.approx(objects[objects.block == 1].jf.mean())
    s = P.strip("random-a", run, n_frames=3)
    assert s["frames"] == [0, 2, 3] and s["block"] == 6 and s["images"].shape == (3, 3, 48, 48)
    assert torch.equal(s["predictions"][0], s["annotations"][0])          # frame 0 is given


def test_blocks_outside_the_model_are_named(tmp_path):
    with pytest.raises(ValueError, match="davis.blocks"):
        P.per_object("random-a", _profile(tmp_path, blocks=[7]), store=FeatureStore(tmp_path / "c"))


def test_best_per_model_by_hand():
    table = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 3, "block": [1, 2, 3] * 2,
                          "jf": [0.2, 0.6, 0.5, 0.1, 0.2, 0.3], "j": [0.0] * 6, "f": [0.0] * 6})
    best = P.best_per_model(table).set_index("model")
    assert best.loc["a", "best_block"] == 2 and best.loc["a", "jf"] == 0.6 and best.loc["a", "last_jf"] == 0.5
    assert best.loc["b", "best_block"] == 3 == best.loc["b", "last_block"]


def _objects(curves: dict, n=40, noise=0.02, seed=0) -> pd.DataFrame:
    """A per-object table with planted mean J&F per block ``{model: [per block]}`` over ``n`` objects."""
    rng = np.random.default_rng(seed)
    frames = []
    for model, per_block in curves.items():
        for block, v in enumerate(per_block, 1):
            jf = np.clip(v + noise * rng.standard_normal(n), 0, 1)
            frames.append(pd.DataFrame({"model": model, "block": block, "video": [f"v{i // 2}" for i in range(n)],
                                        "object": [1 + i % 2 for i in range(n)], "j": jf, "f": jf, "jf": jf}))
    return pd.concat(frames, ignore_index=True)


def test_tm_check_holds_on_the_papers_pattern():
    planted = {"zoo-supervised": [0.3, 0.6, 0.7, 0.5], "zoo-clip": [0.3, 0.6, 0.7, 0.5],
               "zoo-dino": [0.3, 0.6, 0.85, 0.8], "zoo-mocov3": [0.3, 0.6, 0.85, 0.8],
               "zoo-mae": [0.3, 0.5, 0.6, 0.55], "random-a": [0.2, 0.2, 0.2, 0.2]}
    by = {(r.claim, r.subject): r for r in P.tm_check(_objects(planted))}
    assert by[("TM-6.2a", "mean of zoo-dino, zoo-mocov3 minus mean of zoo-supervised, zoo-clip, zoo-mae")].verdict \
        == HOLDS
    assert by[("TM-6.2a", "zoo-supervised: drop in the later layers")].verdict == HOLDS
    assert by[("TM-6.2a", "zoo-mae above the untrained model")].verdict == HOLDS
    pooled = next(r for r in by.values() if r.claim == "TM-T1b" and "mean of" in r.subject)
    assert pooled.verdict == HOLDS and pooled.effect.unit == "objects" and pooled.effect.n == 40
    assert pooled.effect.estimate == pytest.approx(np.mean([0.2, 0.2, 0.05, 0.05, 0.05]), abs=0.01)


def test_tm_check_is_inconclusive_when_flat_and_cannot_check_without_groups():
    flat = {m: [0.5] * 4 for m in ("zoo-supervised", "zoo-dino", "zoo-mae", "random-a")}
    results = P.tm_check(_objects(flat))
    assert results[0].verdict == INCONCLUSIVE
    assert {r.verdict for r in results if r.claim == "TM-T1b"} == {INCONCLUSIVE}
    only_dino = P.tm_check(_objects({"zoo-dino": [0.5, 0.6], "random-a": [0.2, 0.2]}))
    assert only_dino[0].verdict == CANNOT_CHECK

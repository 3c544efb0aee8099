"""SPair keypoints per block (TM 6.2): the letterboxed image agrees with the letterboxed keypoints, the tables and the
claim checks on hand-made per-pair rows, and one end-to-end run on a tiny twin with an untrained zoo ViT (cached)."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vitscope.claims import HOLDS, INCONCLUSIVE
from vitscope.extract import FeatureStore
from vitscope.kernels import correspondence as kc
from vitscope.profiles import Profile
from vitscope.sections import correspondence as corr


def test_letterboxed_image_and_letterboxed_points_agree():
    img = np.zeros((30, 80, 3), dtype=np.uint8)
    img[21, 57] = 255                                           # one bright pixel at (x, y) = (57, 21)
    boxed = np.asarray(corr.letterbox_image(Image.fromarray(img), 64, "bilinear")).sum(axis=2)
    y, x = np.unravel_index(np.argmax(boxed), boxed.shape)
    pt = kc.letterbox_points(torch.tensor([[57.0, 21.0]]), kc.letterbox_geometry(30, 80, 64))[0]
    assert abs(x - pt[0].item()) <= 1 and abs(y - pt[1].item()) <= 1
    assert boxed[:8].max() == 0 and boxed[-8:].max() == 0      # 80x30 -> 64x24: 20 black rows above and below


def _rows(model, block, correct, cats=("a", "a", "b", "b"), total=4, alpha=0.1):
    return pd.DataFrame({"model": model, "block": block, "alpha": alpha, "pair": np.arange(len(correct)),
                         "category": list(cats), "correct": correct, "total": total})


def test_summarise_and_best_per_model():
    pp = pd.concat([_rows("m", 1, [0, 1, 0, 0]), _rows("m", 2, [4, 4, 2, 0]), _rows("m", 3, [2, 2, 2, 2])])
    table = corr.summarise(pp)
    assert table.pck.tolist() == pytest.approx([1 / 16, (1 + 0.25) / 2, 0.5])
    table["noise"] = 0.01
    best = corr.best_per_model(table).iloc[0]
    assert (best.best_block, best.last_block) == (2, 3) and best.best == pytest.approx(0.625)
    with pytest.raises(ValueError, match="alpha=0.05"):
        corr.best_per_model(table, alpha=0.05)


def _claims_table(n=40):
    """CLIP best at block 2 of 3 and clearly above DINO; the untrained model flat and low."""
    cats = ["a", "b"] * (n // 2)
    rng = np.random.default_rng(0)
    frames = []
    for model, levels in (("zoo-clip", (1, 4, 2)), ("zoo-dino", (1, 2, 1)), ("random-a", (0, 0, 0))):
        for block, level in enumerate(levels, start=1):
            correct = np.clip(level + rng.integers(-1, 2, size=n), 0, 4)
            frames.append(_rows(model, block, correct, cats))
    return pd.concat(frames, ignore_index=True)


def test_claims_hold_on_planted_rows_and_follow_the_baseline():
    results = corr.check(_claims_table())
    by = {(r.claim, r.subject): r for r in results}
    assert by[("TM-6.2b", "zoo-clip minus the other trained models")].verdict == HOLDS
    assert by[("TM-T1b", "SPair keypoints, zoo-clip")].verdict == HOLDS
    assert by[("TM-T1b", "SPair keypoints, zoo-dino")].verdict in (HOLDS, INCONCLUSIVE)
    # the same rows with the untrained model as good as CLIP: the effect is no longer beyond it
    pp = _claims_table()
    clip = pp[pp.model == "zoo-clip"].copy()
    pp = pd.concat([pp[pp.model != "random-a"], clip.assign(model="random-a")], ignore_index=True)
    again = {(r.claim, r.subject): r for r in corr.check(pp)}
    assert again[("TM-6.2b", "zoo-clip minus the other trained models")].verdict == INCONCLUSIVE


def test_end_to_end_on_a_tiny_twin_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSCOPE_DATA", str(tmp_path / "data"))
    raw = {"name": "tiny", "models": ["random-a"],
           "datasets": {"spair-twin": {"manifest": "spair71k", "root": "tw", "synthetic": {
               "categories": [["square", "eye"], ["cross", "eye"]], "images_per_category": 3,
               "pairs_per_category": 2, "sides": [48, 56], "seed": 3}}},
           "keypoints": {"dataset": "spair-twin", "pairs_per_category": 2, "alphas": [0.1, 0.05], "alpha": 0.1}}
    run = Profile("tiny", raw)
    store = FeatureStore(tmp_path / "cache")
    table = corr.compute("random-a", run, device="cpu", store=store)
    assert sorted(table.block.unique()) == list(range(1, 7)) and set(table.alpha) == {0.1, 0.05}
    assert table.n_pairs.eq(4).all() and table.n_categories.eq(2).all()
    assert ((table.pck >= 0) & (table.pck <= 1)).all() and table.noise.between(0, 1).all()
    at = table.set_index(["block", "alpha"]).pck
    assert all(at[(b, 0.05)] <= at[(b, 0.1)] for b in range(1, 7))        # a tighter α can only lose keypoints

    def fail(*a, **k):
        raise AssertionError("recomputed although cached")
    monkeypatch.setattr(corr, "_predict", fail)
    again = corr.compute("random-a", run, device="cpu", store=store)
    pd.testing.assert_frame_equal(table, again)

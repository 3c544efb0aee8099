"""Exact values of the attention sections' claim checks and helpers (TM 4.1-4.4) on hand-made tables: verdicts,
intervals and texts, and the check_claims wiring with the extraction replaced (issue 17: the fast unit tests that
reach these functions)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.profiles import load_profile
from vitscope.sections import aaam, attention_distance, attention_iou, cls_attention

CLEAR = "the 95 % interval clears 0"
NOISE = "within noise: the 95 % interval of the effect includes 0"
NO_BASE = "no untrained baseline of the same architecture in this profile"


# ---------------------------------------------------------------- TM 4.3: late-layer attention distance
def _per_image(last: dict[str, float], n=8, vary=False, shuffle=False) -> pd.DataFrame:
    """Per-image table, blocks 1 and 2; model m's last block is ``last[m]`` (+ the same per-image offset for every
    model with ``vary``: paired differences stay exact, unpaired ones do not)."""
    offset = np.arange(n) / 16.0 if vary else np.zeros(n)
    frames = [pd.DataFrame({"model": m, "image": np.repeat(np.arange(n), 2), "block": np.tile([1, 2], n),
                            "distance": np.stack([np.full(n, 0.125), mu + offset], 1).reshape(-1)})
              for m, mu in last.items()]
    table = pd.concat(frames, ignore_index=True)
    return table.sample(frac=1.0, random_state=0) if shuffle else table


def _iv(r):
    return (r.effect.estimate, r.effect.low, r.effect.high, r.effect.n, r.effect.unit)


def test_late_layer_check_holds_with_exact_intervals_and_texts():
    rows = attention_distance.late_layer_check(_per_image({"zoo-dino": 0.75, "zoo-mae": 0.25, "random-a": 0.5},
                                                          vary=True, shuffle=True))
    assert [(r.claim, r.subject, r.verdict) for r in rows] == [
        ("TM-4.3c", "global-late minus reconstruction group", HOLDS), ("TM-4.3c", "zoo-dino", HOLDS),
        ("TM-4.3c", "zoo-mae", HOLDS)]
    head, dino, mae = rows
    # the images are paired by index although the rows are shuffled: every bootstrap resample gives the same value
    assert _iv(head) == (0.5, 0.5, 0.5, 8, "images")
    assert (head.baseline.estimate, head.baseline.low, head.baseline.high) == (0.25, 0.25, 0.25)
    assert head.measure == "last-block mean distance (zoo-dino minus zoo-mae)" and head.expected == 1
    assert head.reason == f"{CLEAR}, and the effect exceeds `random-a`'s" and head.baseline_model == "random-a"
    assert (head.floor, head.baseline_floor, head.seeds) == (None, None, ())
    assert _iv(dino) == (0.25, 0.25, 0.25, 8, "images") and dino.baseline == dino.effect and dino.expected == 1
    assert dino.measure == "last-block mean distance minus `random-a`'s"
    assert _iv(mae) == (-0.25, -0.25, -0.25, 8, "images") and mae.expected == -1 and mae.verdict == HOLDS


def test_late_layer_check_does_not_hold_when_reversed_and_is_inconclusive_when_flat():
    rev = attention_distance.late_layer_check(_per_image({"zoo-dino": 0.25, "zoo-mae": 0.75, "random-a": 0.5}))
    assert [r.verdict for r in rev] == [DOES_NOT_HOLD] * 3
    assert rev[0].reason == f"{CLEAR} on the side opposite to the paper's, beyond `random-a`'s"
    assert _iv(rev[0])[:3] == (-0.5, -0.5, -0.5) and _iv(rev[2])[:3] == (0.25, 0.25, 0.25)
    flat = attention_distance.late_layer_check(_per_image({"zoo-dino": 0.5, "zoo-mae": 0.5, "random-a": 0.5}))
    assert [r.verdict for r in flat] == [INCONCLUSIVE] * 3 and flat[0].reason == NOISE
    assert _iv(flat[0])[:3] == (0.0, 0.0, 0.0)
    # the global group ends where the untrained model does: the baseline explains the ordering
    explained = attention_distance.late_layer_check(_per_image({"zoo-dino": 0.5, "zoo-mae": 0.25,
                                                                "random-a": 0.5}))
    assert explained[0].verdict == INCONCLUSIVE
    assert explained[0].reason == ("the untrained baseline explains it: the effect beyond `random-a` is within "
                                   "noise of 0")


def test_late_layer_check_seed_floor_and_groups():
    seeds = {"random-a": 0.5, "random-b": 0.5625, "random-c": 0.53125}      # floor: 0.5625 - 0.5 = 0.0625
    table = _per_image({"zoo-supervised": 0.546875, "zoo-clip": 0.75, "zoo-dino": 0.75, "zoo-beit": 0.25, **seeds})
    rows = {r.subject: r for r in attention_distance.late_layer_check(table, seeds=tuple(seeds))}
    head = rows["global-late minus reconstruction group"]
    assert head.measure == "last-block mean distance (zoo-supervised, zoo-clip, zoo-dino minus zoo-beit)"
    assert head.effect.estimate == pytest.approx((0.546875 + 1.5) / 3 - 0.25, abs=1e-15)
    assert (head.floor, head.baseline_floor, head.seeds) == (0.0625, 0.0625, tuple(seeds))
    assert head.verdict == HOLDS and head.reason == f"{CLEAR} and the seed floor, and the effect exceeds `random-a`'s"
    sup = rows["zoo-supervised"]                                   # 0.046875 beyond random-a: inside the floor
    assert sup.effect.estimate == 0.046875 and sup.verdict == INCONCLUSIVE
    assert sup.reason == ("within seed noise: the interval reaches inside ±0.0625, the most that `random-a`, "
                          "`random-b`, `random-c` give for the same contrast")
    assert rows["zoo-beit"].verdict == HOLDS and rows["zoo-beit"].expected == -1
    assert list(rows) == ["global-late minus reconstruction group", "zoo-supervised", "zoo-clip", "zoo-dino",
                          "zoo-beit"]                       # the seeds are baselines, not subjects


def test_late_layer_check_without_a_group_a_baseline_or_a_seed():
    no_rec = attention_distance.late_layer_check(_per_image({"zoo-dino": 0.75, "random-a": 0.5}))
    assert no_rec[0].verdict == CANNOT_CHECK and no_rec[0].reason == "the profile has no reconstruction-based model"
    assert no_rec[1].subject == "zoo-dino" and no_rec[1].verdict == HOLDS
    no_global = attention_distance.late_layer_check(_per_image({"zoo-mae": 0.25, "random-a": 0.5}))
    assert no_global[0].reason == "the profile has no explicitly or contrastively supervised model"
    no_base = attention_distance.late_layer_check(_per_image({"zoo-dino": 0.75, "zoo-mae": 0.25}))
    assert no_base[0].verdict == INCONCLUSIVE and no_base[0].reason == NO_BASE and no_base[0].baseline is None
    assert [(r.subject, r.verdict, r.reason) for r in no_base[1:]] == [("zoo-dino", CANNOT_CHECK, NO_BASE),
                                                                       ("zoo-mae", CANNOT_CHECK, NO_BASE)]
    with pytest.raises(ValueError) as err:
        attention_distance.late_layer_check(_per_image({"zoo-dino": 0.75, "random-a": 0.5}), seeds=("random-z",))
    assert str(err.value) == ("seeds ['random-z'] are not in the per-image table (models ['zoo-dino', 'random-a']); "
                              "extract them on the same profile (check_claims adds the profile's baselines)")


def test_attention_distance_entry_points_reduce_the_extracted_product(monkeypatch):
    d = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)            # [N=2, L=3, H=2]
    result, uniform = {"unit_square": d, "pixels": 2 * d}, {"unit_square": 0.5, "pixels": 8.0}
    calls = []

    def fake(model, profile, weights, device, store, progress):
        calls.append((model, weights, device, store, progress))
        return result, uniform
    monkeypatch.setattr(attention_distance, "_extract", fake)
    profile = load_profile("demo")
    table = attention_distance.compute("zoo-dino", profile, weights="w", device="cpu", store="s")
    pd.testing.assert_frame_equal(table, attention_distance.distance_table("zoo-dino", result, uniform))
    per = attention_distance.per_image("zoo-dino", profile, method="pixels")
    assert per.distance.tolist() == [1.0, 5.0, 9.0, 13.0, 17.0, 21.0]     # 2 * mean over heads, image-major
    assert calls == [("zoo-dino", "w", "cpu", "s", True), ("zoo-dino", None, None, None, False)]
    with pytest.raises(ValueError) as err:
        attention_distance.per_image_table("zoo-dino", result, "manhattan")
    assert str(err.value) == "method='manhattan'; choose from ('unit_square', 'pixels')"


def test_attention_distance_check_claims_adds_the_seeds(monkeypatch):
    last = {"zoo-dino": 0.75, "zoo-mae": 0.25, "random-a": 0.5, "random-b": 0.5625, "random-c": 0.53125}
    seen = []

    def fake(model, profile, *, method, weights, device, store, progress):
        seen.append((model, method, weights))
        return _per_image({model: last[model]})
    monkeypatch.setattr(attention_distance, "per_image", fake)
    rows = attention_distance.check_claims(["zoo-dino", "zoo-mae", "random-a"], load_profile("demo"),
                                           method="pixels", weights={"zoo-dino": "w"})
    assert seen == [("zoo-dino", "pixels", "w"), ("zoo-mae", "pixels", None), ("random-a", "pixels", None),
                    ("random-b", "pixels", None), ("random-c", "pixels", None)]
    assert rows == attention_distance.late_layer_check(_per_image(last), ("random-a", "random-b", "random-c"))
    assert rows[0].floor == 0.0625 and rows[0].seeds == ("random-a", "random-b", "random-c")


# ---------------------------------------------------------------- TM 4.4: attention-mask IoU
def _iou(values: dict[str, list]) -> dict:
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def test_iou_head_table_and_best_head_rules():
    cls = [[[0.25, 0.75], [0.5, 0.0]], [[0.75, 0.25], [1.0, 0.5]]]       # [N=2, L=2, H=2]
    spatial = [[[0.0, 0.5], [0.25, 0.25]], [[0.5, 0.5], [0.75, 0.25]]]
    result = _iou({"cls": cls, "spatial": spatial})
    t = attention_iou.head_table("zoo-dino", result)
    assert list(t.columns) == ["model", "tokens", "block", "head", "iou"]
    assert t.tokens.tolist() == ["cls"] * 4 + ["spatial"] * 4
    assert t.block.tolist() == [1, 1, 2, 2] * 2 and t["head"].tolist() == [0, 1] * 4
    assert t.iou.tolist() == [0.5, 0.5, 0.75, 0.25, 0.25, 0.5, 0.5, 0.25] and set(t.model) == {"zoo-dino"}
    best = attention_iou.best_head_values(result, "cls", "per_image_max", 0)
    assert best.tolist() == [[0.75, 0.5], [0.75, 1.0]]
    with pytest.raises(ValueError) as err:
        attention_iou.best_head_values(result, "cls", "mean_head", 0)
    assert str(err.value) == "rule='mean_head'; choose from ['held_out', 'per_image_max']"


def test_iou_per_image_statistics_by_hand():
    assert attention_iou.halves(5) == ([0, 1], [2, 3, 4]) and attention_iou.halves(4) == ([0, 1], [2, 3])
    v = torch.tensor([[1.0, 0.5, 0.25, 0.0], [0.0, 0.0, 0.5, 1.0]])
    assert attention_iou.drop_per_image(v).tolist() == [0.625, -0.75]
    assert attention_iou.last_rise_per_image(v).tolist() == [-0.25, 0.5]


def test_iou_target_functions():
    class Net(torch.nn.Module):
        num_classes = 0

        def forward_features(self, x):
            return x

        def forward(self, x):
            return x[:, 0]
    net = Net()
    x = torch.tensor([[[3.0, 4.0], [1.0, 1.0]], [[0.0, 1.0], [5.0, 5.0]]])
    assert attention_iou._target_fn(net, "feature_norm")(x).tolist() == [5.0, 1.0]
    with pytest.raises(ValueError) as err:
        attention_iou._target_fn(net, "class_score")
    assert str(err.value) == ("captum_target='class_score' needs a model with a classification head; this one has "
                              "none (num_classes=0): use 'feature_norm'")
    net.num_classes = 2
    assert attention_iou._target_fn(net, "class_score")(x).tolist() == [4.0, 1.0]
    with pytest.raises(ValueError) as err:
        attention_iou._target_fn(net, "logit")
    assert str(err.value) == "captum_target='logit'; choose 'feature_norm' or 'class_score'"


def test_iou_check_claims_adds_the_seeds_and_the_split_seed(monkeypatch):
    n = 8
    ramp = torch.arange(n, dtype=torch.float32)[:, None, None] / 64     # per-image offsets, shared by every model

    def result(drop, rise):
        blocks = torch.tensor([0.5 + drop, 0.5 + drop, 0.5, 0.5])[None, :, None] + ramp       # [n, 4, 1]
        sp = torch.tensor([0.25, 0.25, 0.25, 0.25 + rise])[None, :, None] + ramp
        return {"cls": blocks.repeat(1, 1, 2), "spatial": sp.repeat(1, 1, 2),
                "cls_pixel": blocks.repeat(1, 1, 2), "spatial_pixel": sp.repeat(1, 1, 2)}
    made = {"zoo-clip": result(0.25, 0.125), "zoo-dino": result(0.0, 0.0), "random-a": result(0.0, 0.0),
            "random-b": result(0.03125, 0.0), "random-c": result(0.0, 0.0)}
    seen = []

    def fake(model, profile, *, weights, device, store, progress):
        seen.append((model, weights))
        return made[model]
    monkeypatch.setattr(attention_iou, "compute", fake)
    profile = load_profile("demo")
    rows = attention_iou.check_claims(["zoo-clip", "zoo-dino"], profile, weights={"zoo-clip": "w"})
    assert seen == [("zoo-clip", "w"), ("zoo-dino", None), ("random-a", None), ("random-b", None), ("random-c", None)]
    assert rows == attention_iou.claims_from_results(made, int(attention_iou.settings(profile)["split_seed"]),
                                                     ("random-a", "random-b", "random-c"))
    assert [(r.claim, r.subject, r.verdict) for r in rows] == [
        ("TM-4.4a", "mean of zoo-clip", HOLDS), ("TM-4.4a", "zoo-clip", HOLDS), ("TM-4.4d", "zoo-clip", HOLDS)]
    assert rows[0].effect.estimate == pytest.approx(0.25) and rows[0].floor == pytest.approx(0.03125)
    assert rows[2].effect.estimate == pytest.approx(0.125) and rows[2].floor == 0.0


# ---------------------------------------------------------------- TM 4.1 / 4.2: CLS maps and AAAMs
def _maps(model: str, n=4, stats=None, moment=None, mean_first=None):
    geometry = {"grid": (3, 3), "depth": 2, "num_heads": 2, "n_prefix": 1}
    products = {"aaam": {"mean": mean_first, "mean_first": mean_first, "moment": moment}, "cls_stats": stats or {}}
    return cls_attention.AttentionMaps(model, geometry, products, torch.arange(n), "x")


def test_cls_helpers_by_hand():
    maps = torch.full((2, 3, 4), 1 / 12)
    assert cls_attention.relative_to_uniform(maps) == pytest.approx(np.ones((2, 3, 4)), abs=1e-6)
    assert cls_attention.relative_to_uniform(torch.tensor([[0.5, 0.0], [0.25, 0.25]])).tolist() == [[2.0, 0.0],
                                                                                                     [1.0, 1.0]]
    assert cls_attention.late_blocks(12) == list(range(7, 13)) and cls_attention.late_blocks(5) == [3, 4, 5]
    centre = torch.tensor([[[0.0, 1.0], [0.5, 0.25]], [[1.0, 1.0], [0.25, 0.75]]])      # [N=2, L=2, H=2]
    fixed = torch.tensor([[[9.0, 9.0], [9.0, 9.0]], [[0.5, 0.25], [0.0, 1.0]]])
    result = _maps("zoo-dino", n=2, stats={"centre": centre, "coverage": 2 * centre, "fixed": fixed})
    t = cls_attention.head_table(result)
    assert t.block.tolist() == [1, 1, 2, 2] and t["head"].tolist() == [0, 1, 0, 1]
    assert t.centre.tolist() == [0.5, 1.0, 0.375, 0.5] and t.coverage.tolist() == [1.0, 2.0, 0.75, 1.0]
    assert t.fixed.tolist() == [0.5, 0.25, 0.0, 1.0]              # the second half of the images only
    # uniform levels on a 3 x 3 grid: the central token, and the top 10 % (one token) of nine
    assert t.centre_uniform.iloc[0] == pytest.approx(1 / 9) and t.fixed_uniform.iloc[0] == pytest.approx(1 / 9)
    assert cls_attention.late_values(result, "centre").tolist() == [0.375, 0.5]      # block 2, mean of heads
    assert cls_attention.late_values(result, "fixed").tolist() == [0.5]
    assert cls_attention.query_names(result) == cls_attention.query_positions(3)


def test_cls_group_check_without_a_baseline():
    values = {"zoo-dino": torch.full((4,), 0.75), "zoo-supervised": torch.full((4,), 0.25)}
    family = {"zoo-dino": "self-distillation", "zoo-supervised": "supervised"}
    rows = cls_attention._group_check("TM-4.1a", values, family, None, cls_attention.CONTRASTIVE,
                                      cls_attention.EXPLICIT, "contrastive", "explicitly supervised", "m",
                                      per_model=True)
    assert [(r.subject, r.verdict, r.reason) for r in rows] == [
        ("contrastive minus explicitly supervised", INCONCLUSIVE, NO_BASE), ("zoo-dino", CANNOT_CHECK, NO_BASE)]
    assert rows[0].measure == "m (zoo-dino minus zoo-supervised)" and rows[0].effect.estimate == 0.5
    lacking = cls_attention._group_check("TM-4.1b", values, family, None, cls_attention.RECONSTRUCTION,
                                         cls_attention.CONTRASTIVE, "reconstruction", "contrastive", "m", False)
    assert [(r.verdict, r.reason) for r in lacking] == [(CANNOT_CHECK, "the profile has no reconstruction model")]


def _offset_maps(model, shift, n=4):
    first = torch.zeros(2, 2, 5, 5)
    first[0, 0, 2, 3] = 1.0                                       # block 1 head 0 looks one patch right
    moment = torch.zeros(n, 2, 2, 2)
    moment[:, 0, 0, 1] = shift
    return _maps(model, n=n, moment=moment, mean_first=first)


def test_offset_claim_texts_and_missing_models():
    rows = aaam.claims_from_maps({"zoo-dino": _offset_maps("zoo-dino", 0.875),
                                  "random-a": _offset_maps("random-a", 0.0)})
    (r,) = rows
    assert (r.claim, r.subject, r.verdict, r.baseline_model) == ("TM-4.2b", "zoo-dino", HOLDS, "random-a")
    assert r.measure == (f"held-out local moment of its most offset head (block 1 head 0, towards right) minus "
                         f"{aaam.OFFSET_MOMENT_MIN:g}, the least an offset local head has (patches)")
    assert r.effect.estimate == pytest.approx(0.875 - aaam.OFFSET_MOMENT_MIN) and r.effect.n == 2
    assert r.baseline.estimate == pytest.approx(0.875)
    only_untrained = aaam.claims_from_maps({"random-a": _offset_maps("random-a", 0.0)})
    assert [(r.subject, r.verdict, r.reason) for r in only_untrained] == [
        ("every model", CANNOT_CHECK, "the profile has no trained model")]
    no_base = aaam.claims_from_maps({"zoo-dino": _offset_maps("zoo-dino", 0.875)})
    assert [(r.subject, r.verdict, r.reason) for r in no_base] == [("zoo-dino", CANNOT_CHECK, NO_BASE)]
    # least favourable first: the MAE row (no offset, less than the untrained head) before DINO's
    both = aaam.claims_from_maps({"zoo-dino": _offset_maps("zoo-dino", 0.875), "zoo-mae": _offset_maps("zoo-mae", 0.0),
                                  "random-a": _offset_maps("random-a", 0.25)})
    assert [(r.subject, r.verdict) for r in both] == [("zoo-mae", DOES_NOT_HOLD), ("zoo-dino", HOLDS)]


def test_attention_map_check_claims_pass_each_model_its_weights(monkeypatch):
    seen = []

    def fake_extract(model, profile, section, *, weights, device, store, progress):
        seen.append((model, section, weights))
        return _offset_maps(model, 0.875 if model == "zoo-dino" else 0.0)
    monkeypatch.setattr(aaam, "extract_maps", fake_extract)
    rows = aaam.check_claims(["zoo-dino", "random-a"], load_profile("demo"), weights={"zoo-dino": "w"})
    assert seen == [("zoo-dino", "aaam", "w"), ("random-a", "aaam", None)]
    assert [(r.subject, r.verdict) for r in rows] == [("zoo-dino", HOLDS)]
    stats = {"centre": torch.full((4, 2, 2), 0.5), "coverage": torch.full((4, 2, 2), 0.5),
             "fixed": torch.full((4, 2, 2), 0.5)}
    seen.clear()

    def fake_cls(model, profile, section, *, weights, device, store, progress):
        seen.append((model, section, weights))
        return _maps(model, stats=stats)
    monkeypatch.setattr(cls_attention, "extract_maps", fake_cls)
    rows = cls_attention.check_claims(["zoo-dino", "zoo-supervised"], load_profile("demo"), weights={"zoo-dino": "w"})
    assert seen == [("zoo-dino", "cls_attention", "w"), ("zoo-supervised", "cls_attention", None)]
    assert [(r.claim, r.verdict) for r in rows] == [("TM-4.1a", INCONCLUSIVE), ("TM-4.1a", CANNOT_CHECK),
                                                    ("TM-4.1b", CANNOT_CHECK), ("TM-4.1c", INCONCLUSIVE),
                                                    ("TM-4.1c", CANNOT_CHECK)]

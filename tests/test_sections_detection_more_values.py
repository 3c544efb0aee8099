"""sections.detection: open_split, runs, compute and resampled with the expensive edges (twin writer, COCO reader,
detector training, pycocotools evaluation) replaced by recorders that return hand-made values; checks what each
edge is given (datasets, splits, modes, recipe, device, areas, image ids, resample counts) and the tables built."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import vitscope.detection as detection_pkg
from vitscope.claims.verdict import N_RESAMPLES, SEED
from vitscope.data import coco as coco_data
from vitscope.data.twins import coco as coco_twin
from vitscope.detection import evaluate as evaluate_mod
from vitscope.detection import train as train_mod
from vitscope.profiles import Profile
from vitscope.sections import detection

SPEC = {"train_dataset": "tr", "val_dataset": "va", "recipe": "quick", "models": ["zoo-mae", "zoo-dino"]}


def _profile(spec=None, **raw) -> Profile:
    return Profile("t", {"models": ["zoo-mocov3"], "detection": {**SPEC, **(spec or {})}, **raw})


# ---------------------------------------------------------------------------------------------- open_split
def test_open_split_writes_the_twin_in_the_split_and_names_the_data(monkeypatch, tmp_path):
    made, twins = [], []
    monkeypatch.setattr(coco_twin, "write_coco_twin", lambda *a, **kw: twins.append((a, kw)))
    monkeypatch.setattr(coco_data, "CocoInstances", lambda root, split, name: made.append((root, split, name)) or name)
    syn = {"n_images": 9, "size": 40, "seed": 3}
    p = Profile("t", {"models": [], "detection": {}, "datasets": {
        "c": {"manifest": "coco_val2017", "root": str(tmp_path), "synthetic": syn},
        "d": {"manifest": "coco_x", "root": str(tmp_path / "d"), "synthetic": {}},
        "e": {"manifest": "coco_y", "root": str(tmp_path / "e")}}})
    assert detection.open_split(p, "c", "val2017") == "coco_val2017:c"
    assert twins == [((tmp_path, 9, 40, 3), {"split": "val2017"})] and made == [(tmp_path, "val2017", "coco_val2017:c")]
    detection.open_split(p, "d", "train2017")
    assert twins[-1] == ((tmp_path / "d", 200, 96, 0), {"split": "train2017"})
    assert made[-1] == (tmp_path / "d", "train2017", "coco_x:d")
    detection.open_split(p, "e", "val2017")
    assert len(twins) == 2 and made[-1] == (tmp_path / "e", "val2017", "coco_y:e")      # no synthetic: no twin


# --------------------------------------------------------------------------------------------------- runs
@pytest.fixture
def trained(monkeypatch):
    """open_split and detection.run replaced: records the calls; a card per (model, mode)."""
    calls = {"split": [], "run": []}

    def split(profile, name, which):
        calls["split"].append((name, which))
        return SimpleNamespace(name=name, split=which, coco=f"coco-{name}", image_ids=[5, 2, 9])

    def run(m, mode, recipe, train, val, *, device, progress):
        calls["run"].append((m, mode, recipe, train.name, train.split, val.name, val.split, device, progress))
        return {"dir": f"{m}/{mode}", "train_time_s": 10.0 * len(calls["run"]), "train_images": 7, "val_images": 3}

    monkeypatch.setattr(detection, "open_split", split)
    monkeypatch.setattr(detection_pkg, "run", run)
    return calls


def test_runs_trains_every_model_and_mode_on_the_profiles_splits(trained):
    out = detection.runs(_profile({"train_split": "tsplit", "val_split": "vsplit"}, device="meta"), progress=True)
    assert trained["split"] == [("tr", "tsplit"), ("va", "vsplit")]
    assert list(out) == ["val", ("zoo-mae", "frozen"), ("zoo-mae", "finetuned"), ("zoo-dino", "frozen"),
                         ("zoo-dino", "finetuned")]
    assert out["val"].name == "va" and out[("zoo-dino", "frozen")]["dir"] == "zoo-dino/frozen"
    assert trained["run"][0] == ("zoo-mae", "frozen", "quick", "tr", "tsplit", "va", "vsplit", "meta", True)
    assert [c[:2] for c in trained["run"]] == [k for k in list(out)[1:]]
    trained["run"].clear()
    detection.runs(_profile({"modes": ["frozen-multi"]}), models=["zoo-beit"], device="cpu")
    assert trained["run"] == [("zoo-beit", "frozen-multi", "quick", "tr", "train2017", "va", "val2017", "cpu",
                               False)]
    trained["run"].clear()
    detection.runs(_profile({"models": None, "recipe": None}))                  # the profile's models, defaults
    assert trained["run"] == [("zoo-mocov3", mode, "demo", "tr", "train2017", "va", "val2017", "cpu", False)
                              for mode in ("frozen", "finetuned")]


# ------------------------------------------------------------------------------------------------ compute
STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def test_compute_one_row_per_model_mode_and_task(monkeypatch, trained):
    seen = []

    def summary(coco, results, *, img_ids, areas):
        seen.append((coco, results, img_ids, areas))
        base = 10 * len(seen)
        return {"box": {k: base + i for i, k in enumerate(STATS)}, "mask": {k: base + 0.5 + i for i, k in
                                                                          enumerate(STATS)}}

    monkeypatch.setattr(evaluate_mod, "summary", summary)
    monkeypatch.setattr(train_mod, "predictions", lambda card: ["pred", card["dir"]])
    t = detection.compute(_profile({"areas": "terciles", "models": ["zoo-mae"]}), device="cpu", progress=True)
    assert [c[-1] for c in trained["run"]] == [True, True]
    assert seen == [("coco-va", ["pred", "zoo-mae/frozen"], [5, 2, 9], "terciles"),
                    ("coco-va", ["pred", "zoo-mae/finetuned"], [5, 2, 9], "terciles")]
    assert list(t.columns) == ["model", "mode", "task", *STATS, "train_time_s", "train_images", "val_images"]
    assert t[["model", "mode", "task"]].values.tolist() == [["zoo-mae", "frozen", "box"], ["zoo-mae", "frozen", "mask"],
                                                           ["zoo-mae", "finetuned", "box"],
                                                           ["zoo-mae", "finetuned", "mask"]]
    assert t.AP.tolist() == [10, 10.5, 20, 20.5] and t.AP_large.tolist() == [15, 15.5, 25, 25.5]
    assert t.train_time_s.tolist() == [10.0, 10.0, 20.0, 20.0]
    assert t.train_images.tolist() == [7] * 4 and t.val_images.tolist() == [3] * 4
    seen.clear()
    detection.compute(_profile({"models": ["zoo-dino"], "modes": ["frozen"]}), models=["zoo-beit"])
    assert [s[1][1] for s in seen] == ["zoo-beit/frozen"] and seen[0][3] == "coco"


# ---------------------------------------------------------------------------------------------- resampled
def test_resampled_full_set_then_shared_bootstrap_counts_per_task_and_area(monkeypatch, trained):
    seen = {"ranges": [], "evaluate": [], "match": [], "ap": []}

    def area_ranges(coco, ids, mode):
        seen["ranges"].append((coco, ids, mode))
        return "RANGES"

    def evaluate(coco, results, iou_type, *, img_ids, areas):
        seen["evaluate"].append((coco, results, iou_type, img_ids, areas))
        return None if results[1] == "zoo-dino/finetuned" and iou_type == "segm" else (results[1], iou_type)

    def match_tables(ev, area):
        seen["match"].append((ev, area))
        return {"ev": ev, "area": area}

    def resampled_ap(tables, counts):
        seen["ap"].append(counts)
        code = {"bbox": 1, "segm": 2}[tables["ev"][1]] + {"all": 10, "small": 20, "large": 30}[tables["area"]]
        return counts.sum(axis=1) * code

    for name, fn in [("area_ranges", area_ranges), ("evaluate", evaluate), ("match_tables", match_tables),
                     ("resampled_ap", resampled_ap)]:
        monkeypatch.setattr(evaluate_mod, name, fn)
    monkeypatch.setattr(train_mod, "predictions", lambda card: ["pred", card["dir"]])
    out = detection.resampled(_profile({"areas": "terciles"}), device="cpu")
    assert seen["ranges"] == [("coco-va", [2, 5, 9], "terciles")]                    # the ids sorted
    assert [e[2:] for e in seen["evaluate"][:2]] == [("bbox", [2, 5, 9], "RANGES"), ("segm", [2, 5, 9], "RANGES")]
    assert all(e[0] == "coco-va" for e in seen["evaluate"]) and len(seen["evaluate"]) == 8
    counts = seen["ap"][0]
    assert counts.shape == (N_RESAMPLES + 1, 3)
    np.testing.assert_array_equal(counts[0], [1, 1, 1])
    np.testing.assert_array_equal(counts[1:], evaluate_mod.bootstrap_counts(3, N_RESAMPLES, SEED))
    assert all(c is counts for c in seen["ap"])                                       # one draw shared by all
    assert list(out) == [(m, mode, task, area) for m in ("zoo-mae", "zoo-dino") for mode in ("frozen", "finetuned")
                         for task in ("box", "mask") for area in ("all", "small", "large")]
    np.testing.assert_array_equal(out[("zoo-mae", "frozen", "box", "all")], np.full(N_RESAMPLES + 1, 3 * 11.0))
    np.testing.assert_array_equal(out[("zoo-mae", "finetuned", "mask", "large")], np.full(N_RESAMPLES + 1, 3 * 32.0))
    np.testing.assert_array_equal(out[("zoo-dino", "frozen", "mask", "small")], np.full(N_RESAMPLES + 1, 3 * 22.0))
    # no detections for a (model, mode, task): AP 0 on the full set and on every resample
    np.testing.assert_array_equal(out[("zoo-dino", "finetuned", "mask", "all")], np.zeros(N_RESAMPLES + 1))
    np.testing.assert_array_equal(out[("zoo-dino", "finetuned", "box", "small")], np.full(N_RESAMPLES + 1, 3 * 21.0))
    assert ("zoo-dino/finetuned", "segm") not in [m[0] for m in seen["match"]]

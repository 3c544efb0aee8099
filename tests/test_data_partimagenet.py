"""data.partimagenet: the real COCO-style format (a fixture written here), its subset rule, and the twin."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.data import load_manifest
from vitscope.data.partimagenet import PartImageNet, round_robin_subset
from vitscope.data.synthetic import render_scene, sample_scene, scene_rng
from vitscope.data.twins.partimagenet import SEED_OFFSET, write_partimagenet_twin

CATEGORIES = [{"id": 0, "name": "Quadruped Head", "supercategory": "Quadruped"},
              {"id": 1, "name": "Quadruped Body", "supercategory": "Quadruped"},
              {"id": 2, "name": "Bird Head", "supercategory": "Bird"}]


def _write_root(root, *, wnid_split=None):
    """Two splits as PartImageNet ships them: polygons, 0-based category ids, images under images/<split>/<wnid>/.
    Image a (20x16, train, quadruped): a head square at x 2-5, y 2-5 and a body rectangle; plus a degenerate
    4-number polygon that pycocotools would read as a box. Image b (val, bird): one head triangle."""
    images = {"train": [{"id": 7, "file_name": "n02085620_0001.JPEG", "height": 16, "width": 20},
                        {"id": 8, "file_name": "n02085620_0000.JPEG", "height": 16, "width": 20},
                        {"id": 9, "file_name": "n02099601_0005.JPEG", "height": 16, "width": 20}],
              "val": [{"id": 1, "file_name": "n01530575_0003.JPEG", "height": 12, "width": 12}]}
    anns = {"train": [{"id": 0, "image_id": 7, "category_id": 0, "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]],
                       "bbox": [2, 2, 4, 4], "area": 16, "iscrowd": 0},
                      {"id": 1, "image_id": 7, "category_id": 1, "segmentation": [[6, 4, 18, 4, 18, 12, 6, 12]],
                       "bbox": [6, 4, 12, 8], "area": 96, "iscrowd": 0},
                      {"id": 2, "image_id": 7, "category_id": 1, "segmentation": [[1, 1, 3, 3]],
                       "bbox": [1, 1, 2, 2], "area": 0, "iscrowd": 0},
                      {"id": 3, "image_id": 8, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]],
                       "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
                      {"id": 4, "image_id": 9, "category_id": 0, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]],
                       "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}],
            "val": [{"id": 0, "image_id": 1, "category_id": 2, "segmentation": [[1, 1, 9, 1, 1, 9]],
                     "bbox": [1, 1, 8, 8], "area": 32, "iscrowd": 0}]}
    for split in images:
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{split}.json").write_text(json.dumps(
            {"images": images[split], "annotations": anns[split], "categories": CATEGORIES}))
        for im in images[split]:
            folder = root / "images" / split / im["file_name"].split("_")[0]
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (im["width"], im["height"]), (200, 10, 10)).save(folder / im["file_name"])
    return root


def test_reads_the_real_format(tmp_path):
    data = PartImageNet(_write_root(tmp_path), splits=("train", "val"))
    assert data.supercategories == ["Quadruped", "Bird"]
    assert [n for _, n, _ in data.part_categories] == ["Quadruped Head", "Quadruped Body", "Bird Head"]
    # all images, per super-category round-robin over sorted wnids, files sorted within a class
    assert [data.info(i)["file_name"] for i in range(len(data))] == [
        "n02085620_0000.JPEG", "n02099601_0005.JPEG", "n02085620_0001.JPEG", "n01530575_0003.JPEG"]
    item = data[2]                                             # image 7
    assert item["image"].shape == (3, 16, 20) and item["image"].dtype == torch.uint8
    assert item["part_labels"].tolist() == [0, 1]              # the degenerate polygon is skipped, not a box
    assert data.skipped == 1
    head = item["part_masks"][0]
    assert head[3, 3] and head[4, 4] and not head[10, 10] and not head[1, 1]
    assert item["object_labels"].tolist() == [0]
    assert torch.equal(item["object_masks"][0], item["part_masks"].any(0))
    bird = data[3]
    assert bird["object_labels"].tolist() == [1] and bird["part_labels"].tolist() == [2]


def test_round_robin_subset_rule():
    groups = {"A": {"w2": ["a1", "a2", "a3"], "w1": ["b1"]}, "B": {"w3": ["c1", "c2"]}}
    assert round_robin_subset(groups, 3) == ["b1", "a1", "a2", "c1", "c2"]
    assert round_robin_subset(groups, None) == ["b1", "a1", "a2", "a3", "c1", "c2"]


@pytest.mark.reliability("bad input", "PartImageNet root missing, annotations absent or malformed")
def test_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*vitscope data fetch partimagenet"):
        PartImageNet(tmp_path / "nowhere")
    root = _write_root(tmp_path / "r")
    (root / "annotations" / "test.json").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="annotations/test.json"):
        PartImageNet(root)
    (root / "annotations" / "val.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match="'categories'"):
        PartImageNet(root, splits=("val",))
    (root / "annotations" / "val.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        PartImageNet(root, splits=("val",))
    root2 = _write_root(tmp_path / "r2")
    (root2 / "images" / "val" / "n01530575" / "n01530575_0003.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match="n01530575_0003.JPEG is missing"):
        PartImageNet(root2, splits=("val",)).image(0)


def test_twin_round_trips_the_generator_masks(tmp_path):
    root = write_partimagenet_twin(tmp_path, per_class=1, size=32, seed=0)
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert write_partimagenet_twin(tmp_path, per_class=1, size=32, seed=0) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp           # complete: left untouched
    data = PartImageNet(root)
    assert len(data) == 50 and len(data.part_categories) == 50 and len(data.supercategories) == 10
    assert {data.info(i)["split"] for i in range(len(data))} == {"train", "val", "test"}
    for i in (0, 17, 49):
        label = load_manifest("imagenet50").wnids.index(data.info(i)["file_name"].split("_")[0])
        rng = scene_rng(SEED_OFFSET, label, 0)
        _, mask = render_scene(sample_scene(label, rng), 32, rng)
        item = data[i]
        names = [data.part_categories[j][1] for j in item["part_labels"].tolist()]
        assert names[0].endswith("Body")
        assert np.array_equal(item["part_masks"][0].numpy(), mask == 1)
        if len(names) > 1:
            assert np.array_equal(item["part_masks"][1].numpy(), mask == 2)
        assert np.array_equal(item["object_masks"][0].numpy(), mask > 0)

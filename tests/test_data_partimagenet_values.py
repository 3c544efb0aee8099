"""vitscope.data.partimagenet, value by value on hand-written COCO-style files: which polygons make a part mask, what
an image without valid parts returns, how classes spread over splits are grouped, and the whole error messages."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vitscope.data import partimagenet as pin
from vitscope.data.partimagenet import PartImageNet, round_robin_subset

CATEGORIES = [{"id": 0, "name": "Quadruped Head", "supercategory": "Quadruped"},
              {"id": 1, "name": "Quadruped Body", "supercategory": "Quadruped"},
              {"id": 2, "name": "Bird Head", "supercategory": "Bird"}]
SQUARE = [2, 2, 6, 2, 6, 6, 2, 6]                   # pixels x 2..5, y 2..5
HOW = "Get PartImageNet as data_manifests/partimagenet.yml says (`vitscope data fetch partimagenet --root {r}` " \
      "prints how), then check it with `vitscope data verify partimagenet --root {r}`."


def _ann(i, image_id, category, segmentation):
    return {"id": i, "image_id": image_id, "category_id": category, "segmentation": segmentation,
            "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}


def _root(root, images, anns, splits=("train",)):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in splits:
        (root / "annotations" / f"{split}.json").write_text(json.dumps(
            {"images": images.get(split, []), "annotations": anns.get(split, []), "categories": CATEGORIES}))
        for im in images.get(split, []):
            folder = root / "images" / split / im["file_name"].split("_")[0]
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (im["width"], im["height"])).save(folder / im["file_name"])
    return root


def _image(i, name, h=10, w=14):
    return {"id": i, "file_name": name, "height": h, "width": w}


def test_parts_use_only_the_valid_polygons_and_count_every_skip(tmp_path):
    anns = [_ann(0, 1, 1, [[1, 1, 3, 3]]),                              # a 4-number polygon only: skipped
            _ann(1, 1, 2, [[0, 0, 1, 1, 2]]),                           # odd length: skipped
            _ann(2, 1, 0, [[8, 1, 12, 5], SQUARE, [9, 9, 10, 9]])]      # the square only, not "boxes"
    data = PartImageNet(_root(tmp_path, {"train": [_image(1, "n1_0.JPEG")]}, {"train": anns}), splits=("train",))
    masks, labels = data.parts(0)
    expected = torch.zeros(1, 10, 14, dtype=torch.bool)
    expected[0, 2:6, 2:6] = True
    assert masks.dtype == torch.bool and torch.equal(masks, expected)
    assert labels.dtype == torch.int64 and labels.tolist() == [0]
    assert data.skipped == 2
    data.parts(0)
    assert data.skipped == 4


def test_an_image_without_valid_parts_gives_empty_masks_of_its_size(tmp_path):
    images = {"train": [_image(1, "n1_0.JPEG", h=10, w=14)]}
    data = PartImageNet(_root(tmp_path, images, {"train": [_ann(0, 1, 1, [[1, 1, 3, 3]])]}), splits=("train",))
    masks, labels = data.parts(0)
    assert masks.dtype == torch.bool and tuple(masks.shape) == (0, 10, 14)
    assert labels.dtype == torch.int64 and tuple(labels.shape) == (0,)
    objects, present = data.objects(0)
    assert objects.dtype == torch.bool and tuple(objects.shape) == (0, 10, 14)
    assert present.dtype == torch.int64 and tuple(present.shape) == (0,)


def test_objects_read_parts_themselves_and_item_names_the_file(tmp_path):
    anns = [_ann(0, 1, 0, [SQUARE]), _ann(1, 1, 2, [[8, 1, 12, 1, 12, 5, 8, 5]]), _ann(2, 1, 1, [[2, 6, 6, 6, 6, 9]])]
    data = PartImageNet(_root(tmp_path, {"train": [_image(1, "n1_0.JPEG")]}, {"train": anns}), splits=("train",))
    masks, present = data.objects(0)
    parts, labels = data.parts(0)
    assert present.tolist() == [0, 1] and present.dtype == torch.int64
    assert torch.equal(masks[0], parts[0] | parts[2]) and torch.equal(masks[1], parts[1])
    item = data[0]
    assert item["file"] == "n1_0.JPEG" and torch.equal(item["object_masks"], masks)


def test_a_class_split_across_splits_keeps_all_its_images_and_the_subset_rule_applies(tmp_path):
    images = {"train": [_image(1, "n1_1.JPEG"), _image(2, "n2_1.JPEG")], "val": [_image(1, "n1_0.JPEG")]}
    anns = {"train": [_ann(0, 1, 0, [SQUARE]), _ann(1, 2, 1, [SQUARE])], "val": [_ann(0, 1, 0, [SQUARE])]}
    root = _root(tmp_path, images, anns, splits=("train", "val"))
    data = PartImageNet(root, splits=("train", "val"))
    assert data.items == [("train", 1), ("train", 2), ("val", 1)]       # n1 (train, val) and n2, round robin
    assert PartImageNet(root, splits=("train", "val"), per_supercategory=2).items == [("train", 1), ("train", 2)]


def test_round_robin_visits_classes_in_sorted_order():
    groups = {"A": {"w3": ["c1", "c2"], "w1": ["a1", "a2"], "w2": ["b1"]}}
    assert round_robin_subset(groups, None) == ["a1", "b1", "c1", "a2", "c2"]


def test_reading_is_silent(tmp_path, capsys):
    PartImageNet(_root(tmp_path, {"train": [_image(1, "n1_0.JPEG")]}, {"train": [_ann(0, 1, 0, [SQUARE])]}),
                 splits=("train",))
    assert capsys.readouterr().out == ""


def test_root_and_annotation_messages(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        PartImageNet(tmp_path / "nowhere")
    r = tmp_path / "nowhere"
    assert str(err.value) == f"PartImageNet root {r} does not exist. {HOW.format(r=r)}"
    root = _root(tmp_path / "r", {}, {}, splits=("train",))
    with pytest.raises(FileNotFoundError) as err:
        PartImageNet(root, splits=("train", "val"))
    assert str(err.value) == (f"PartImageNet annotations {root / 'annotations' / 'val.json'} are missing (expected "
                              f"annotations/{{train,val}}.json under the root). {HOW.format(r=root)}")


def test_split_category_conflict_message(tmp_path):
    root = _root(tmp_path, {}, {}, splits=("train", "val"))
    path = root / "annotations" / "val.json"
    data = json.loads(path.read_text())
    data["categories"][2]["name"] = "Bird Tail"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        PartImageNet(root, splits=("train", "val"))
    assert str(err.value) == (f"{path}: category 2 is ('Bird Tail', 'Bird'), but another split calls it "
                              "('Bird Head', 'Bird'); the splits must share one category list")


def test_read_annotations_messages(tmp_path):
    (tmp_path / "a" / "annotations").mkdir(parents=True)
    path = tmp_path / "a" / "annotations" / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError) as err:
        pin.read_annotations(path)
    assert str(err.value) == (f"{path} has no 'images' list; a PartImageNet (COCO-style) json holds images, "
                              "annotations and categories")
    entry = {"id": 1, "file_name": "x" * 200, "height": 3}
    path.write_text(json.dumps({"images": [entry], "annotations": [], "categories": []}))
    with pytest.raises(ValueError) as err:
        pin.read_annotations(path)
    assert str(err.value) == f"{path}: an entry of 'images' lacks ['width'] (entry {str(entry)[:120]})"
    path.write_text('{"images": [')
    with pytest.raises(ValueError) as err:
        pin.read_annotations(path)
    assert str(err.value).startswith(f"{path} is not valid JSON (")
    assert str(err.value).endswith(f"); the download may be truncated. {HOW.format(r=tmp_path / 'a')}")


def test_missing_image_message(tmp_path):
    root = _root(tmp_path, {"train": [_image(1, "n1_0.JPEG")]}, {"train": [_ann(0, 1, 0, [SQUARE])]})
    (root / "images" / "train" / "n1" / "n1_0.JPEG").unlink()
    data = PartImageNet(root, splits=("train",))
    with pytest.raises(FileNotFoundError) as err:
        data.image_path(0)
    base = root / "images" / "train"
    assert str(err.value) == (f"PartImageNet image n1_0.JPEG is missing: looked in {base / 'n1'} and {base}. "
                              f"{HOW.format(r=root)}")

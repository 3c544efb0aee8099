"""vitscope.data.coco, value by value on hand-written COCO annotation files: the label of each image (largest
instance, ties to the lowest annotation id, -1 without any), the instance dicts, the mask handed to a
``mask_transform`` (mode "L", 255 = object) and the one :func:`mask_transform` builds (nearest-neighbour, > 127),
the cache identity recomputed from the file, the ``limit`` bounds, and the whole error messages (which name the
root, the missing piece and the fetch command)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.data.coco import CocoInstances, CocoSource, mask_transform
from vitscope.models import Preprocess

_FETCH = "vitscope data fetch coco_val2017 --root {root}"


def _missing(what, root, fetch=_FETCH):
    return (f"COCO root {root}: {what}. Expected <root>/annotations/instances_<split>.json and <root>/<split>/*.jpg; "
            f"get them with `{fetch.format(root=root)}` (or point the profile's root at a folder in that layout).")


def _square(x0, y0, x1, y1):
    """A polygon whose rasterisation is the pixels x in [x0, x1), y in [y0, y1) (pycocotools fills pixel centres)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _ann(id_, image_id, category_id, box, **extra):
    x0, y0, x1, y1 = box
    return {"id": id_, "image_id": image_id, "category_id": category_id, "segmentation": _square(*box),
            "bbox": [x0, y0, x1 - x0, y1 - y0], **extra}


def _write(root, images, annotations, categories=({"id": 18, "name": "dog"}, {"id": 1, "name": "person"}),
           size=(8, 6), files=None):
    """A COCO layout under ``root``: the annotation file, and a grey PNG of ``size`` (w, h) per listed image file
    (``files``: which file names to write; default all)."""
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    data = {"images": [{"id": i, "file_name": f, "width": size[0], "height": size[1]} for i, f in images],
            "annotations": list(annotations), "categories": list(categories)}
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(data))
    for _, f in images:
        if files is None or f in files:
            Image.fromarray(np.full((size[1], size[0], 3), 100, np.uint8)).save(root / "val2017" / f)
    return path


def _labelled(root):
    """Four images whose label each tells one rule of the choice apart (categories: 1 person -> 0, 18 dog -> 1)."""
    return _write(root, [(1, "a.png"), (2, "b.png"), (3, "c.png"), (4, "d.png")], [
        # a: the larger instance has the larger id, so the area decides, not the id -> person
        _ann(10, 1, 18, (0, 0, 2, 2), area=4.0, iscrowd=0), _ann(11, 1, 1, (3, 0, 6, 3), area=9.0, iscrowd=0),
        # b: equal areas: the lower annotation id wins (a stable choice) -> dog
        _ann(20, 2, 18, (0, 0, 2, 2), area=4.0, iscrowd=0), _ann(21, 2, 1, (4, 0, 6, 2), area=4.0, iscrowd=0),
        # c: an annotation without "area" counts as 0, below 0.5 -> dog; it also lacks "iscrowd" (0)
        _ann(30, 3, 18, (0, 0, 1, 1), area=0.5, iscrowd=0), _ann(31, 3, 1, (2, 2, 6, 5))])
    # d: no annotation -> label -1 (kept with require_objects=False)


def test_label_is_the_largest_instance_with_ties_to_the_lowest_id(tmp_path):
    _labelled(tmp_path)
    ds = CocoInstances(tmp_path)
    assert ds.classes == [(1, "person"), (18, "dog")]
    assert [(p.name, label) for p, label in ds.samples] == [("a.png", 0), ("b.png", 1), ("c.png", 1)]
    assert ds.labels.tolist() == [0, 1, 1]
    everything = CocoInstances(tmp_path, require_objects=False)
    assert [(p.name, label) for p, label in everything.samples] == [("a.png", 0), ("b.png", 1), ("c.png", 1),
                                                                     ("d.png", -1)]
    assert everything[3][1] == -1


def test_instances_values(tmp_path):
    _labelled(tmp_path)
    ds = CocoInstances(tmp_path)
    got = ds.instances(2)                                  # c.png: id 30 (dog, crowd 0), id 31 (person, no iscrowd)
    assert [{k: v for k, v in inst.items() if k != "mask"} for inst in got] == [
        {"category_id": 18, "label": 1, "iscrowd": 0, "bbox": [0, 0, 1, 1]},
        {"category_id": 1, "label": 0, "iscrowd": 0, "bbox": [2, 2, 4, 3]}]
    first, second = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    first[0:1, 0:1] = True
    second[2:5, 2:6] = True
    assert got[0]["mask"].dtype == np.bool_ and np.array_equal(got[0]["mask"], first)
    assert np.array_equal(got[1]["mask"], second)
    assert np.array_equal(ds.object_mask(2), first | second)


def test_crowd_flag_is_read_as_an_int(tmp_path):
    _write(tmp_path, [(1, "a.png")], [_ann(1, 1, 1, (0, 0, 2, 2), area=4.0, iscrowd=1)])
    assert CocoInstances(tmp_path).instances(0)[0]["iscrowd"] == 1


def test_mask_transform_receives_an_L_image_with_255_on_objects(tmp_path):
    """The documented contract of ``mask_transform``: the union mask as a PIL image, mode "L", 255 = object."""
    _labelled(tmp_path)
    ds = CocoInstances(tmp_path, mask_transform=lambda im: im)
    im = ds[0][2]["object_mask"]
    assert isinstance(im, Image.Image) and im.mode == "L" and im.size == (8, 6)
    expected = np.zeros((6, 8), np.uint8)
    expected[0:2, 0:2] = expected[0:3, 3:6] = 255
    np.testing.assert_array_equal(np.asarray(im), expected)


def test_loader_with_the_module_mask_transform_gives_the_sampled_union(tmp_path):
    _labelled(tmp_path)
    pre = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=6, crop=6)
    out = CocoInstances(tmp_path, mask_transform=mask_transform(pre))[0][2]["object_mask"]
    union = CocoInstances(tmp_path).object_mask(0)                    # 6x8: short side already 6, crop columns 1..6
    assert out.dtype == torch.bool
    np.testing.assert_array_equal(out.numpy(), union[:, 1:7])


def test_mask_transform_samples_nearest_pixels():
    """A 2x nearest downscale reads one source pixel per output pixel (PIL samples the centre of each 2x2 block,
    rounding to the odd index); a smoothing filter would mix the block's pixels instead."""
    mask = np.random.default_rng(0).integers(0, 2, (8, 8)).astype(np.uint8) * 255
    pre = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=4, crop=4)
    out = mask_transform(pre)(Image.fromarray(mask))
    np.testing.assert_array_equal(out.numpy(), mask[1::2, 1::2] > 127)


def test_mask_transform_threshold_is_the_midpoint():
    """Grey levels above 127 are object, 127 and below are not (same-size resize keeps the levels)."""
    levels = np.array([[0, 126, 127, 128], [129, 200, 254, 255], [127, 128, 127, 128], [1, 2, 3, 4]], np.uint8)
    pre = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=4, crop=4)
    out = mask_transform(pre)(Image.fromarray(levels))
    np.testing.assert_array_equal(out.numpy(), levels > 127)


def test_image_transform_is_applied_to_the_decoded_image(tmp_path):
    _labelled(tmp_path)
    seen = []
    ds = CocoInstances(tmp_path, transform=lambda im: seen.append(im) or ("t", np.asarray(im).sum()))
    image, label, _ = ds[1]
    assert image == ("t", 100 * 8 * 6 * 3) and label == 1
    assert len(seen) == 1 and seen[0].size == (8, 6) and seen[0].mode == "RGB"
    plain = CocoInstances(tmp_path)[1][0]
    assert isinstance(plain, Image.Image) and np.asarray(plain).sum() == 100 * 8 * 6 * 3


def test_manifest_and_per_class_values(tmp_path):
    path = _labelled(tmp_path)
    ds = CocoInstances(tmp_path)
    assert ds.manifest == CocoSource("coco_val2017", "COCO instances (val2017)",
                                     hashlib.sha256(path.read_bytes()).hexdigest()[:16])
    assert len(ds.manifest.annotations) == 16
    assert ds.per_class is None                            # the extraction's cache identity records it
    other = CocoInstances(tmp_path, name="mine")
    assert other.manifest.name == "mine"


def test_limit_bounds(tmp_path):
    _labelled(tmp_path)                                     # three images with objects
    root = tmp_path
    assert [p.name for p, _ in CocoInstances(root, limit=3).samples] == ["a.png", "b.png", "c.png"]
    assert [p.name for p, _ in CocoInstances(root, limit=2).samples] == ["a.png", "b.png"]
    for bad in (0, 4, True, -1):
        with pytest.raises(ValueError) as err:
            CocoInstances(root, limit=bad)
        assert str(err.value) == f"limit={bad!r}: choose an int in [1, 3] (the selected images under {root})"
    with pytest.raises(ValueError) as err:
        CocoInstances(root, limit=1.0)
    assert str(err.value) == f"limit=1.0: choose an int in [1, 3] (the selected images under {root})"


def test_no_annotated_image_message(tmp_path):
    _write(tmp_path, [(1, "a.png")], [])
    with pytest.raises(ValueError) as err:
        CocoInstances(tmp_path)
    assert str(err.value) == f"COCO root {tmp_path}: no image with annotations to select"


def test_annotation_file_lacking_keys_message(tmp_path):
    path = _write(tmp_path, [(1, "a.png")], [_ann(1, 1, 1, (0, 0, 2, 2), area=4.0)])
    tail = "; an instances_*.json holds 'images', 'annotations' and 'categories'"
    for content, lacking in (({"images": []}, ["annotations", "categories"]),
                             ({"images": [], "annotations": []}, ["categories"]),
                             ([1, 2], ["images", "annotations", "categories"])):
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError) as err:
            CocoInstances(tmp_path)
        assert str(err.value) == f"COCO annotation file {path} lacks {lacking}{tail}"


def test_loading_prints_nothing(tmp_path, capsys):
    _labelled(tmp_path)
    CocoInstances(tmp_path)
    assert capsys.readouterr().out == ""


def test_missing_root_annotations_and_image_folder_messages(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as err:
        CocoInstances(absent)
    assert str(err.value) == _missing("the folder does not exist", absent)
    with pytest.raises(FileNotFoundError) as err:
        CocoInstances(tmp_path)
    assert str(err.value) == _missing("no annotation file annotations/instances_val2017.json", tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": []}))
    fetch = "get-coco --into {root}"
    with pytest.raises(FileNotFoundError) as err:
        CocoInstances(tmp_path, fetch=fetch)
    assert str(err.value) == _missing("no image folder val2017/", tmp_path, fetch)
    with pytest.raises(FileNotFoundError) as err:
        CocoInstances(tmp_path, images="pics/2017", fetch=fetch)
    assert str(err.value) == _missing("no image folder pics/2017/", tmp_path, fetch)


def test_absent_image_files_message(tmp_path):
    names = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    _write(tmp_path, list(enumerate(names, 1)), [_ann(i, i, 1, (0, 0, 2, 2), area=4.0) for i in range(1, 6)],
           files={"c.png"})
    with pytest.raises(FileNotFoundError) as err:
        CocoInstances(tmp_path)
    assert str(err.value) == _missing("4 image file(s) the annotations list are absent from val2017/ "
                                      "(e.g. a.png, b.png, d.png)", tmp_path)


def test_image_size_mismatch_message(tmp_path):
    _write(tmp_path, [(1, "a.png")], [_ann(1, 1, 1, (0, 0, 2, 2), area=4.0)], size=(10, 7))
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "val2017" / "a.png")    # the real file: 8x6
    ds = CocoInstances(tmp_path)
    with pytest.raises(ValueError) as err:
        ds[0]
    assert str(err.value) == (f"{tmp_path / 'val2017' / 'a.png'}: the image is 8x6 but its annotations say 10x7; "
                              "the annotation file does not match the images")

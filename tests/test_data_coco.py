"""The COCO instances loader on a fixture written by hand in COCO's format, and the synthetic COCO twin."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.data.coco import CocoInstances, mask_transform
from vitscope.data.synthetic import render_scene, sample_scene, scene_rng
from vitscope.data.twins.coco import SEED_OFFSET, write_coco_twin


def _write_fixture(root, *, with_empty=True):
    """Three 8x6 images: a.jpg with a polygon square and an RLE strip of two categories, b.jpg with one crowd RLE,
    c.jpg with no annotation."""
    from pycocotools import mask as mask_utils

    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(np.full((6, 8, 3), 128, np.uint8)).save(root / "val2017" / name)
    strip = np.zeros((6, 8), np.uint8)
    strip[5, :] = 1                                                # bottom row
    rle = mask_utils.encode(np.asfortranarray(strip))
    rle = {"size": list(rle["size"]), "counts": rle["counts"].decode()}
    crowd = np.zeros((6, 8), np.uint8)
    crowd[0:2, 0:2] = 1
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    crowd_rle = {"size": list(crowd_rle["size"]), "counts": crowd_rle["counts"].decode()}
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 8, "height": 6},
                   {"id": 3, "file_name": "b.jpg", "width": 8, "height": 6},
                   {"id": 9, "file_name": "c.jpg", "width": 8, "height": 6}],
        "annotations": [
            # polygon of the pixel square x in [1, 4), y in [1, 4): pycocotools rasterises pixel centres inside
            {"id": 1, "image_id": 7, "category_id": 18, "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]], "area": 9.0,
             "bbox": [1, 1, 3, 3], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "segmentation": rle, "area": 8.0, "bbox": [0, 5, 8, 1],
             "iscrowd": 0},
            {"id": 3, "image_id": 3, "category_id": 1, "segmentation": crowd_rle, "area": 4.0, "bbox": [0, 0, 2, 2],
             "iscrowd": 1}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}]}
    if not with_empty:
        data["images"] = data["images"][:2]
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return data


def test_loader_reads_union_masks_labels_and_instances(tmp_path):
    _write_fixture(tmp_path)
    ds = CocoInstances(tmp_path)
    assert [p.name for p, _ in ds.samples] == ["a.jpg", "b.jpg"]          # sorted; c.jpg has no object
    assert ds.classes == [(1, "person"), (18, "dog")]                      # by category id
    assert ds.labels.tolist() == [1, 0]                    # a.jpg: the dog square (area 9) is larger than the strip
    image, label, extra = ds[0]
    expected = np.zeros((6, 8), bool)
    inst = {i["category_id"]: i for i in ds.instances(0)}
    assert set(inst) == {1, 18}
    assert inst[1]["mask"][5].all() and inst[1]["mask"].sum() == 8
    square = inst[18]["mask"]
    assert square.sum() > 0 and not square[0].any() and not square[:, 0].any()   # inside the polygon only
    expected |= inst[1]["mask"]
    expected |= square
    assert extra["object_mask"].dtype == torch.bool
    assert np.array_equal(extra["object_mask"].numpy(), expected)
    assert ds.instances(1)[0]["iscrowd"] == 1 and ds.object_mask(1).sum() == 4
    assert len(CocoInstances(tmp_path, require_objects=False)) == 3
    assert len(CocoInstances(tmp_path, limit=1)) == 1


def test_mask_transform_follows_the_image_geometry():
    from vitscope.models import Preprocess

    pre = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=4, crop=4, interpolation="bicubic")
    mask = np.zeros((6, 8), np.uint8)
    mask[:, :4] = 255                                             # left half; resize to 4x5 (short side 4), crop 4
    out = mask_transform(pre)(Image.fromarray(mask))
    assert out.shape == (4, 4) and out.dtype == torch.bool
    assert out[:, :1].all() and not out[:, 3:].any()


def test_missing_and_malformed_roots_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="vitscope data fetch coco_val2017"):
        CocoInstances(tmp_path / "absent")
    (tmp_path / "val2017").mkdir()
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        CocoInstances(tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoInstances(tmp_path)
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        CocoInstances(tmp_path)


def test_missing_image_files_are_named(tmp_path):
    _write_fixture(tmp_path, with_empty=False)
    (tmp_path / "val2017" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="b.jpg"):
        CocoInstances(tmp_path)


def test_twin_is_read_by_the_loader_with_the_generator_masks(tmp_path):
    root = write_coco_twin(tmp_path / "coco", n_images=6, size=32, seed=0)
    ds = CocoInstances(root)
    assert len(ds) == 6 and [c for _, c in ds.classes][:2] == ["circle", "square"]
    for i in (0, 5):
        rng = scene_rng(SEED_OFFSET, i, 0)
        spec = sample_scene(i, rng)
        _, mask = render_scene(spec, 32, rng)
        assert np.array_equal(ds.object_mask(i), mask > 0)
        assert ds.classes[ds.labels[i]][1] == spec.shape
        inst = ds.instances(i)[0]
        ys, xs = np.nonzero(mask)
        assert inst["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    write_coco_twin(tmp_path / "coco", n_images=6, size=32, seed=0)       # complete: left untouched
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp

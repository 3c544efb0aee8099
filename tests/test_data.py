"""Data layer: manifest, synthetic twin, the manifest-driven ImageNet folder loader, and bad inputs."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.data import ImageFolderSubset, eval_transform, load_manifest, write_imagefolder_twin
from vitscope.data.synthetic import class_of, render_scene, sample_scene, scene_rng
from vitscope.models import Preprocess


def test_imagenet50_manifest_is_the_scan_subset(manifest):
    assert len(manifest.classes) == 50 and len(set(manifest.wnids)) == 50
    assert manifest.wnids[0] == "n01601694" and manifest.wnids[-1] == "n07753592"
    assert manifest.wnids == sorted(manifest.wnids)      # label order = sorted wnids, as in the TM loader
    assert manifest.per_class == 100 and manifest.split == "train"


def test_unknown_manifest_names_the_closest(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet50"):
        load_manifest("imagenet5")


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.JPEG")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_synthetic_twin_is_deterministic(tmp_path, manifest):
    a = write_imagefolder_twin(tmp_path / "a", manifest.wnids[:3], 2, size=32, seed=7, progress=False)
    b = write_imagefolder_twin(tmp_path / "b", manifest.wnids[:3], 2, size=32, seed=7, progress=False)
    c = write_imagefolder_twin(tmp_path / "c", manifest.wnids[:3], 2, size=32, seed=8, progress=False)
    assert _digest(a) == _digest(b) != _digest(c)


def test_synthetic_masks_match_their_scene():
    rng = scene_rng(0, 12, 0)
    spec = sample_scene(12, rng)
    image, mask = render_scene(spec, 64, rng)
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert (spec.shape, spec.pattern) == class_of(12) == ("triangle", "stripes")
    # the object occupies roughly the area its radius implies (triangle area = 1.299 r^2 for unit circumradius)
    area = (mask > 0).mean()
    assert 0.5 * 1.299 * spec.radius ** 2 < area < 1.5 * 1.299 * spec.radius ** 2
    assert (mask == 2).any()                               # the stripes are drawn


def test_loader_follows_the_selection_rule(synthetic_root, manifest):
    ds = ImageFolderSubset(synthetic_root, manifest, per_class=4, num_classes=5)
    assert len(ds) == 20
    names = [p.name for p, _ in ds.samples[:4]]
    assert names == sorted(names) and names[0].endswith("_00000.JPEG")
    assert ds.labels.tolist() == [i for i in range(5) for _ in range(4)]
    # the split folder itself is accepted as root too
    assert len(ImageFolderSubset(synthetic_root / "train", manifest, per_class=4, num_classes=5)) == 20


def test_loader_applies_the_model_transform(synthetic_root, manifest):
    pre = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize=40, crop=32)
    image, label = ImageFolderSubset(synthetic_root, manifest, eval_transform(pre), per_class=2, num_classes=5)[3]
    assert image.shape == (3, 32, 32) and label == 1
    assert -1.0 <= image.min() and image.max() <= 1.0


def test_wrong_layout_is_explained(tmp_path, manifest):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="n01601694"):
        ImageFolderSubset(tmp_path, manifest)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderSubset(tmp_path / "nowhere", manifest)


def test_too_few_images_and_missing_class(synthetic_root, manifest):
    with pytest.raises(ValueError, match="fewer than per_class=7"):
        ImageFolderSubset(synthetic_root, manifest, per_class=7, num_classes=5)
    with pytest.raises(FileNotFoundError, match=manifest.wnids[5]):
        ImageFolderSubset(synthetic_root, manifest, per_class=2, num_classes=6)


def test_corrupt_image_names_the_file(tmp_path, manifest):
    root = write_imagefolder_twin(tmp_path, manifest.wnids[:1], 2, size=32, progress=False)
    bad = root / "train" / manifest.wnids[0] / f"{manifest.wnids[0]}_00001.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    ds = ImageFolderSubset(root, manifest, per_class=2, num_classes=1)
    assert isinstance(ds[0][0], Image.Image)
    with pytest.raises(OSError, match=bad.name):
        ds[1]

"""Data layer: manifest, synthetic twin, the manifest-driven ImageNet folder loader, and bad inputs."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.data import (
    ImageFolderSubset,
    eval_transform,
    load_manifest,
    read_rgb,
    select_files,
    transform_key,
    write_imagefolder_twin,
)
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


# ----------------------------------------------------------------------------- transform values, cache key

# mean != std in every channel and across channels, so swapping them or mixing channels changes every value
PRE = Preprocess(mean=(0.2, 0.4, 0.6), std=(0.1, 0.25, 0.5), resize=30, crop=24, interpolation="bicubic")


def _reference_eval(image: Image.Image, pre: Preprocess, resample) -> np.ndarray:
    """Independent float64 transcription: PIL resize of the short side, centre crop, [0, 1], (x - mean) / std."""
    w, h = image.size
    short, long_ = (w, h) if w <= h else (h, w)
    long_new = int(pre.resize * long_ / short)
    size = (pre.resize, long_new) if w <= h else (long_new, pre.resize)
    resized = image.resize(size, resample=resample)
    left, top = (size[0] - pre.crop) // 2, (size[1] - pre.crop) // 2  # sizes below make both offsets exact
    crop = resized.crop((left, top, left + pre.crop, top + pre.crop))
    x = np.asarray(crop, dtype=np.float64) / 255.0                      # [crop, crop, 3]
    return ((x - np.array(pre.mean)) / np.array(pre.std)).transpose(2, 0, 1)


def test_eval_transform_normalises_with_mean_then_std():
    """A solid colour stays solid through resize and crop: each channel must be (c/255 - mean) / std exactly."""
    colour = (51, 153, 204)
    out = eval_transform(PRE)(Image.new("RGB", (64, 48), colour))
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    # by hand: 51/255 = 0.2, 153/255 = 0.6, 204/255 = 0.8 -> (0.2-0.2)/0.1, (0.6-0.4)/0.25, (0.8-0.6)/0.5
    expected = [0.0, 0.8, 0.4]  # Normalize(std, mean) would give [1.0, 0.875, 0.333...]
    for channel, value in enumerate(expected):
        assert torch.allclose(out[channel], torch.full((24, 24), value), atol=1e-6)


@pytest.mark.parametrize("interpolation, resample", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR),
                                                     ("nearest", Image.NEAREST)])
def test_eval_transform_matches_an_independent_pipeline(interpolation, resample):
    """Resize of the SHORT side with the named filter, centre crop, normalise: pixel for pixel on a busy image."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))  # 64 wide, 48 high
    pre = dataclasses.replace(PRE, interpolation=interpolation)
    out = eval_transform(pre)(image).double().numpy()
    assert out.shape == (3, 24, 24)
    np.testing.assert_allclose(out, _reference_eval(image, pre, resample), atol=1e-5)
    others = [r for r in (Image.BICUBIC, Image.BILINEAR, Image.NEAREST) if r != resample]
    for other in others:  # the filters really differ on this image, so the check above pins the filter
        assert np.abs(out - _reference_eval(image, pre, other)).max() > 1e-2


def test_unknown_interpolation_is_named():
    with pytest.raises(ValueError, match="'lanczos'.*bicubic"):
        eval_transform(dataclasses.replace(PRE, interpolation="lanczos"))


@pytest.mark.parametrize("field, value", [("resize", 32), ("crop", 20), ("interpolation", "bilinear"),
                                          ("mean", (0.2, 0.4, 0.7)), ("std", (0.1, 0.25, 0.6))])
def test_transform_key_changes_with_every_pixel_changing_field(field, value):
    """Two transforms that give different pixels must never share a cache key."""
    other = dataclasses.replace(PRE, **{field: value})
    assert transform_key(other) != transform_key(PRE)
    assert transform_key(dataclasses.replace(PRE)) == transform_key(PRE)
    assert transform_key(PRE) == {"resize": 30, "crop": 24, "interpolation": "bicubic",
                                  "mean": [0.2, 0.4, 0.6], "std": [0.1, 0.25, 0.5]}


# ----------------------------------------------------------------------------- selection rule, whatever the disk

def _touch(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


@pytest.mark.parametrize("listing", ["reversed", "shuffled"])
def test_select_files_sorts_whatever_order_the_disk_lists(tmp_path, monkeypatch, listing):
    """The rule is "first N sorted lexically": it must not depend on the filesystem's listing order."""
    names = [f"img_{i:03d}.JPEG" for i in range(12)] + ["Z_upper.JPG", "a.png", "b.webp", "c.bmp", "d.jpeg"]
    _touch(tmp_path, names + ["notes.txt", "e.JPEG.bak", "f.gif"])
    real_iterdir = Path.iterdir

    def listed(self):
        entries = sorted(real_iterdir(self))
        if listing == "reversed":
            return iter(entries[::-1])
        order = np.random.default_rng(3).permutation(len(entries))
        return iter([entries[i] for i in order])

    monkeypatch.setattr(Path, "iterdir", listed)
    assert list(Path.iterdir(tmp_path))[:2] != sorted(Path.iterdir(tmp_path))[:2]  # the listing is really unsorted
    expected = sorted(names)[:5]  # uppercase sorts first: ['Z_upper.JPG', 'a.png', 'b.webp', 'c.bmp', 'd.jpeg']
    assert expected == ["Z_upper.JPG", "a.png", "b.webp", "c.bmp", "d.jpeg"]
    assert [p.name for p in select_files(tmp_path, 5)] == expected
    assert [p.name for p in select_files(tmp_path, 100)] == sorted(names)  # all of them, other files never


def test_loader_takes_the_first_files_in_sorted_order(tmp_path, monkeypatch, manifest):
    """Through the dataset: per class the first ``per_class`` sorted files, with the class's label, class-major."""
    wnids = manifest.wnids[:2]
    for wnid in wnids:
        folder = tmp_path / "train" / wnid
        folder.mkdir(parents=True)
        for i in (4, 0, 3, 1, 2):
            Image.new("RGB", (8, 8), (i, i, i)).save(folder / f"{wnid}_{i:05d}.JPEG")
    real_iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(real_iterdir(self), reverse=True)))
    ds = ImageFolderSubset(tmp_path, manifest, per_class=3, num_classes=2)
    assert [(p.name, label) for p, label in ds.samples] == [
        (f"{wnid}_{i:05d}.JPEG", label) for label, wnid in enumerate(wnids) for i in range(3)]


def test_loader_messages_name_what_was_found(tmp_path, manifest):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="it holds nothing"):
        ImageFolderSubset(tmp_path / "empty", manifest)
    _touch(tmp_path / "busy", [f"f{i}" for i in range(7)])
    with pytest.raises(FileNotFoundError, match=r"it holds \['f0', 'f1', 'f2', 'f3', 'f4'\]\. Point"):
        ImageFolderSubset(tmp_path / "busy", manifest)
    with pytest.raises(ValueError, match="has format 'coco', not 'imagefolder'"):
        ImageFolderSubset(tmp_path, dataclasses.replace(manifest, format="coco"))
    with pytest.raises(ValueError, match="num_classes=51 but manifest 'imagenet50' has 50 classes"):
        ImageFolderSubset(tmp_path, manifest, num_classes=51)


def test_too_few_images_lists_five_classes(tmp_path, manifest):
    for wnid in manifest.wnids[:7]:
        _touch(tmp_path / "train" / wnid, ["a.JPEG"])
    with pytest.raises(ValueError, match=r"^7 class folder\(s\) .* images: (n\d+ \(1\), ){4}n\d+ \(1\)\. Pass"):
        ImageFolderSubset(tmp_path, manifest, per_class=2, num_classes=7)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_read_rgb_converts_to_rgb(tmp_path, mode):
    path = tmp_path / f"x_{mode}.png"
    Image.new(mode, (4, 3), 7 if mode != "RGBA" else (7, 8, 9, 10)).save(path)
    image = read_rgb(path)
    assert image.mode == "RGB" and image.size == (4, 3)
    with pytest.raises(OSError, match="next file of its class"):
        read_rgb(tmp_path / "missing.png")

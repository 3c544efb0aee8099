"""DAVIS-2017 loader on a fixture written by hand in the release's layout, its errors, and the synthetic twin."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from vitscope.data.davis import DavisVideos, read_annotation
from vitscope.data.twins.davis import voc_palette, write_davis_twin

PALETTE = [0, 0, 0, 10, 20, 30, 40, 50, 60] + [0] * (256 * 3 - 9)     # not the VOC map: read from the file


def _write_video(base, name, masks, *, mode="P"):
    frames, anns = base / "JPEGImages" / "480p" / name, base / "Annotations" / "480p" / name
    frames.mkdir(parents=True)
    anns.mkdir(parents=True)
    for t, mask in enumerate(masks):
        h, w = mask.shape
        Image.fromarray(np.full((h, w, 3), 40 * t, np.uint8)).save(frames / f"{t:05d}.jpg")
        if mode == "P":
            im = Image.fromarray(mask.astype(np.uint8), mode="P")
            im.putpalette(PALETTE)
        else:
            im = Image.fromarray(np.stack([mask.astype(np.uint8) * 100] * 3, -1))
        im.save(anns / f"{t:05d}.png")


@pytest.fixture
def davis_root(tmp_path):
    base = tmp_path / "DAVIS"
    masks = [np.zeros((6, 10), np.uint8) for _ in range(3)]
    for t, m in enumerate(masks):
        m[1:3, t:t + 3] = 1
        m[4:, 7:] = 2
    _write_video(base, "bike", masks)
    one = [np.zeros((6, 10), np.uint8) for _ in range(3)]
    one[0][2:4, 2:4] = 1
    _write_video(base, "cows", one)
    (base / "ImageSets" / "2017").mkdir(parents=True)
    (base / "ImageSets" / "2017" / "val.txt").write_text("bike\ncows\n")
    return tmp_path


def test_reads_the_release_layout(davis_root):
    data = DavisVideos(davis_root)
    assert data.names == ["bike", "cows"] and len(data) == 2
    assert DavisVideos(davis_root / "DAVIS").names == data.names               # DAVIS/ itself as the root
    assert len(data.video("bike")) == 3
    ann = data.annotations("bike")
    assert ann.shape == (3, 6, 10) and ann[2, 1, 2:5].tolist() == [1, 1, 1] and ann[0, 5, 9] == 2
    assert data.object_ids("bike") == [1, 2] and data.object_ids("cows") == [1]
    assert data.palette("bike")[:3].tolist() == [[0, 0, 0], [10, 20, 30], [40, 50, 60]]
    frames = list(data.frames("bike"))
    assert frames[0].shape == (3, 6, 10) and float(frames[0].max()) <= 1.0
    assert DavisVideos(davis_root, videos=["cows"]).names == ["cows"]
    assert DavisVideos(davis_root, limit=1).names == ["bike"]


def test_identity_changes_with_a_file(davis_root):
    before = DavisVideos(davis_root).identity()
    path = davis_root / "DAVIS" / "Annotations" / "480p" / "cows" / "00001.png"
    im = Image.open(path)
    arr = np.asarray(im).copy()
    arr[0, 0] = 1
    out = Image.fromarray(arr, mode="P")
    out.putpalette(PALETTE)
    out.save(path)
    assert DavisVideos(davis_root).identity()["files"] != before["files"]


@pytest.mark.reliability("bad input", "DAVIS loader: missing root, list, annotation or an RGB annotation")
def test_missing_or_malformed_root_names_the_fix(davis_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="vitscope data fetch davis2017 --root"):
        DavisVideos(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="ImageSets/2017/test.txt"):
        DavisVideos(davis_root, split="test")
    with pytest.raises(ValueError, match="no videos"):
        DavisVideos(davis_root, videos=["dogs"])
    (davis_root / "DAVIS" / "Annotations" / "480p" / "cows" / "00002.png").unlink()
    with pytest.raises(ValueError, match="do not pair up"):
        DavisVideos(davis_root)


@pytest.mark.reliability("bad input", "DAVIS annotation saved as colours instead of palette indices")
def test_rgb_annotation_is_refused(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="palette"):
        read_annotation(path)


def test_voc_palette_by_hand():
    p = voc_palette()
    assert p[:8].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128],
                              [0, 128, 128], [128, 128, 128]]
    assert p[8].tolist() == [64, 0, 0] and len({tuple(c) for c in p}) == 256


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_twin_is_deterministic_in_the_real_layout_with_moving_objects(tmp_path):
    a = write_davis_twin(tmp_path / "a", n_videos=2, n_frames=4, size=48, seed=3)
    b = write_davis_twin(tmp_path / "b", n_videos=2, n_frames=4, size=48, seed=3)
    assert _digest(a / "DAVIS") == _digest(b / "DAVIS")
    data = DavisVideos(a)
    assert len(data) == 2 and [data.object_ids(n) for n in data.names] == [[1], [1, 2]]
    assert data.palette()[:3].tolist() == voc_palette()[:3].tolist()
    ann = data.annotations(data.names[1])
    assert ann.shape == (4, 48, 48) and not np.array_equal(ann[0].numpy(), ann[-1].numpy())   # the objects move
    stamp = (a / "synthetic.json").stat().st_mtime_ns
    write_davis_twin(tmp_path / "a", n_videos=2, n_frames=4, size=48, seed=3)      # complete: left untouched
    assert (a / "synthetic.json").stat().st_mtime_ns == stamp

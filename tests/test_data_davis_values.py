"""vitscope.data.davis, value by value on a hand-written DAVIS layout: the palette is the first annotation's own (or
grey levels), object ids, pixel values and dtypes, the cache identity recomputed from its docstring, and the whole
error messages (which name the root and the fetch command)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.data import davis as dv

_TAIL = ("Expected DAVIS/ImageSets/2017/<split>.txt, DAVIS/JPEGImages/480p/<video>/*.jpg and "
         "DAVIS/Annotations/480p/<video>/*.png; get them with `vitscope data fetch davis2017 --root {root}` (or point "
         "the profile's root at a folder in that layout).")


def _missing(what, root):
    return f"DAVIS root {root}: {what}. " + _TAIL.format(root=root)


def _palette(seed):
    return np.random.default_rng(seed).integers(0, 256, (256, 3), dtype=np.uint8)


def _annotation(path, ids, palette=None, mode="P"):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(ids, np.uint8), mode="L" if mode == "L" else None)
    if mode == "P":
        im = im.convert("L").copy()
        im = Image.frombytes("P", im.size, im.tobytes())
        im.putpalette(palette.ravel().tolist())
    im.save(path)


def _video(base, name, n_frames=2, size=(6, 4), palettes=(1, 2), ids=None, mode="P"):
    w, h = size
    for t in range(n_frames):
        frame = base / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"
        frame.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (255, 0, 51)).save(frame, quality=100)
        grid = np.zeros((h, w), np.uint8) if ids is None else ids
        if ids is None:
            grid[0, 0], grid[1, 1] = 2, 255
        _annotation(base / "Annotations" / "480p" / name / f"{t:05d}.png", grid, _palette(palettes[t % 2]), mode)


def _root(tmp_path, names=("a", "b"), **video):
    base = tmp_path / "DAVIS"
    (base / "ImageSets" / "2017").mkdir(parents=True)
    (base / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in names))
    for i, n in enumerate(names):
        _video(base, n, palettes=(10 * i + 1, 10 * i + 2), **video)
    return base


def test_palette_is_the_first_annotations_own(tmp_path):
    _root(tmp_path)
    data = dv.DavisVideos(tmp_path)
    for name, seed in ((None, 1), ("a", 1), ("b", 11)):
        got = data.palette(name)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, _palette(seed))


def test_a_single_channel_annotation_has_the_grey_palette(tmp_path):
    _root(tmp_path, names=("a",), mode="L")
    got = dv.DavisVideos(tmp_path).palette()
    grey = np.stack([np.arange(256)] * 3, axis=1).astype(np.uint8)
    assert got.dtype == np.uint8 and got.shape == (256, 3)
    np.testing.assert_array_equal(got, grey)


def test_annotations_frames_and_object_ids_values(tmp_path):
    _root(tmp_path)
    data = dv.DavisVideos(tmp_path)
    ids = dv.read_annotation(data.video("a").annotations[0])
    assert ids.dtype == torch.int64 and ids[0, 0] == 2 and ids[1, 1] == 255 and ids.sum() == 257
    frame = dv.read_frame(data.video("a").frames[0])
    assert frame.dtype == torch.float32 and frame.shape == (3, 4, 6)
    assert frame[0].min() > 0.97 and frame[1].max() < 0.03 and abs(frame[2].mean() - 0.2) < 0.03
    assert data.object_ids("a") == [1, 2] and data.video("b").name == "b"
    stack = data.annotations("a")
    assert stack.dtype == torch.int64 and stack.shape == (2, 4, 6)


def test_a_grey_frame_reads_as_rgb(tmp_path):
    Image.new("L", (3, 2), 255).save(tmp_path / "g.jpg", quality=100)
    frame = dv.read_frame(tmp_path / "g.jpg")
    assert frame.shape == (3, 2, 3) and torch.allclose(frame, torch.ones(3, 2, 3))


def test_a_one_frame_video_has_annotations(tmp_path):
    _root(tmp_path, names=("a",), n_frames=1)
    assert dv.DavisVideos(tmp_path).annotations("a").shape == (1, 4, 6)


def test_a_first_annotation_of_only_void_holds_no_object(tmp_path):
    _root(tmp_path, names=("a",), ids=np.full((4, 6), 255, np.uint8))
    with pytest.raises(ValueError) as err:
        dv.DavisVideos(tmp_path).object_ids("a")
    assert str(err.value) == ("DAVIS video 'a': the first annotation holds no object; the semi-supervised task starts "
                              "from the first frame's objects")


def test_identity_and_digest_follow_their_docstrings(tmp_path):
    _root(tmp_path)
    data = dv.DavisVideos(tmp_path)

    def digest(name):
        h = hashlib.sha256()
        v = data.video(name)
        for p in (*v.frames, *v.annotations):
            h.update(f"{p.parent.parent.name}/{p.name}|".encode() + hashlib.sha256(p.read_bytes()).digest())
        return h.hexdigest()[:16]
    assert data.video_digest("a") == digest("a") and len(digest("a")) == 16
    files = hashlib.sha256(f"{digest('a')}|{digest('b')}".encode()).hexdigest()[:16]
    assert data.identity() == {"dataset": "davis", "year": "2017", "split": "val", "resolution": "480p",
                               "videos": ["a", "b"], "files": files}


def test_root_and_listing_messages(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        dv.DavisVideos(tmp_path / "nowhere")
    assert str(err.value) == _missing("the folder does not exist", tmp_path / "nowhere")
    (tmp_path / "DAVIS").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        dv.DavisVideos(tmp_path)
    assert str(err.value) == _missing("no video list ImageSets/2017/val.txt", tmp_path)


def test_selection_and_video_messages(tmp_path):
    base = _root(tmp_path)
    with pytest.raises(ValueError) as err:
        dv.DavisVideos(tmp_path, videos=[])
    assert str(err.value) == f"DAVIS val selection is empty ({base / 'ImageSets' / '2017' / 'val.txt'}, videos=[], " \
                             "limit=None)"
    with pytest.raises(KeyError) as err:
        dv.DavisVideos(tmp_path, limit=1).video("b")
    assert err.value.args[0] == "no video 'b' in this selection; it has ['a']"


def test_index_messages(tmp_path):
    base = _root(tmp_path, names=("a",))
    (base / "ImageSets" / "2017" / "val.txt").write_text("a\nz\n")
    with pytest.raises(FileNotFoundError) as err:
        dv.DavisVideos(tmp_path)
    assert str(err.value) == _missing("video 'z' is listed but JPEGImages/480p/z is missing", tmp_path)
    (base / "JPEGImages" / "480p" / "z").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        dv.DavisVideos(tmp_path)
    assert str(err.value) == _missing("video 'z' is listed but Annotations/480p/z is missing", tmp_path)
    (base / "Annotations" / "480p" / "z").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        dv.DavisVideos(tmp_path)
    assert str(err.value) == _missing("video 'z' has no frames in JPEGImages/480p/z", tmp_path)
    for t in range(7):
        Image.new("RGB", (6, 4)).save(base / "JPEGImages" / "480p" / "z" / f"{t:05d}.jpg")
    with pytest.raises(ValueError) as err:
        dv.DavisVideos(tmp_path)
    assert str(err.value) == (
        "DAVIS video 'z': frames and annotations do not pair up (e.g. no annotation for "
        "['00000', '00001', '00002', '00003', '00004']); every frame of the semi-supervised val "
        f"set has one. Re-extract the release: `vitscope data fetch davis2017 --root {tmp_path}`.")


def test_annotation_size_and_mode_messages(tmp_path):
    base = _root(tmp_path, names=("a",), n_frames=7)
    for t in range(7):
        _annotation(base / "Annotations" / "480p" / "a" / f"{t:05d}.png", np.ones((5, 6), np.uint8), _palette(0))
    with pytest.raises(ValueError) as err:
        dv.DavisVideos(tmp_path).annotations("a")
    assert str(err.value) == ("DAVIS video 'a': annotations ['00000.png', '00001.png', '00002.png', '00003.png', "
                              "'00004.png'] differ in size from the frames (4 x 6)")
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (2, 2)).save(rgb)
    with pytest.raises(ValueError) as err:
        dv.read_annotation(rgb)
    assert str(err.value) == (
        f"DAVIS annotation {rgb} is a 'RGB' image; DAVIS annotations are palette ('P') PNGs "
        "whose pixel values are object ids. Re-extract the release, or save indices, not colours.")

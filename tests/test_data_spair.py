"""SPair-71k loader on a fixture written here in the real layout, and the synthetic twin (read by the same loader)."""
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from vitscope.data import spair
from vitscope.data.synthetic import render_scene, sample_scene, scene_rng
from vitscope.data.twins import spair as twin


def _pair_json(i, src, trg, cat, k=3):
    return {"pair_id": i, "src_imname": f"{src}.jpg", "trg_imname": f"{trg}.jpg", "category": cat,
            "src_kps": [[10 + j, 20 + j] for j in range(k)], "trg_kps": [[30 + j, 5 + j] for j in range(k)],
            "src_bndbox": [1, 2, 40, 30], "trg_bndbox": [0, 0, 50, 45], "src_imsize": [64, 48, 3],
            "trg_imsize": [60, 50, 3], "kps_ids": [str(j) for j in range(k)], "mirror": 0}


def _write_fixture(root, per_cat=(5, 2), layout=True):
    base = root / "SPair-71k"
    names = []
    for cat, n in zip(("cat", "aeroplane"), per_cat):
        (base / "JPEGImages" / cat).mkdir(parents=True)
        for s in range(n + 1):
            Image.new("RGB", (64, 48)).save(base / "JPEGImages" / cat / f"2008_{s:06d}.jpg")
        for i in range(n):
            name = f"{len(names):06d}-2008_{i:06d}-2008_{i + 1:06d}:{cat}"
            (base / "PairAnnotation" / "test").mkdir(parents=True, exist_ok=True)
            (base / "PairAnnotation" / "test" / f"{name}.json").write_text(
                json.dumps(_pair_json(i, f"2008_{i:06d}", f"2008_{i + 1:06d}", cat)))
            names.append(name)
    if layout:
        (base / "Layout" / "large").mkdir(parents=True)
        (base / "Layout" / "large" / "test.txt").write_text("\n".join(names) + "\n")
    return names


def test_loader_reads_the_real_layout_and_samples_per_category(tmp_path):
    _write_fixture(tmp_path)
    pairs = spair.load_pairs(tmp_path, "test", per_category=3, seed=42)
    assert [p.category for p in pairs] == ["aeroplane"] * 2 + ["cat"] * 3       # categories sorted, cap of 3
    p = pairs[0]
    assert p.src_kps.shape == (3, 2) and p.trg_kps[0].tolist() == [30.0, 5.0]
    assert p.trg_bbox == (0.0, 0.0, 50.0, 45.0) and p.src_size == (64, 48) and p.trg_size == (60, 50)
    assert p.src_image.is_file() and p.src_image.parent.name == "aeroplane"
    again = spair.load_pairs(tmp_path / "SPair-71k", "test", per_category=3, seed=42)   # the folder itself
    assert [q.name for q in again] == [q.name for q in pairs]                           # same seed, same draw
    names = {tuple(q.name for q in spair.load_pairs(tmp_path, per_category=3, seed=s)) for s in range(8)}
    assert len(names) > 1                                      # the seed matters
    assert len(spair.load_pairs(tmp_path, per_category=None)) == 7


def test_sampling_of_one_category_does_not_depend_on_the_others():
    names = [f"{i:06d}-a-b:cat" for i in range(30)] + [f"{i:06d}-a-b:dog" for i in range(30, 40)]
    both = spair.sample_names(names, 5, 42)
    alone = spair.sample_names([n for n in names if n.endswith(":cat")], 5, 42)
    assert both["cat"] == alone["cat"] and len(both["cat"]) == 5 and len(set(both["cat"])) == 5
    assert both["dog"] == sorted(both["dog"])


def test_without_a_layout_file_the_annotation_files_are_listed(tmp_path):
    _write_fixture(tmp_path, layout=False)
    assert len(spair.split_pair_names(tmp_path, "test")) == 7


@pytest.mark.reliability("bad input", "a missing or malformed SPair-71k root")
def test_missing_root_names_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="vitscope data fetch spair71k --root"):
        spair.load_pairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no SPair-71k/PairAnnotation"):
        spair.load_pairs(tmp_path / "empty")


@pytest.mark.reliability("bad input", "a malformed SPair-71k pair annotation")
def test_malformed_annotations_are_named(tmp_path):
    names = _write_fixture(tmp_path)
    path = tmp_path / "SPair-71k" / "PairAnnotation" / "test" / f"{names[0]}.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "trg_bndbox"}))
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['trg_bndbox'\]"):
        spair.read_pair(tmp_path, "test", names[0])
    path.write_text(json.dumps({**data, "trg_kps": data["trg_kps"][:2]}))
    with pytest.raises(ValueError, match="3 source but 2 target keypoints"):
        spair.read_pair(tmp_path, "test", names[0])
    path.write_text(json.dumps({**data, "category": "dog"}))
    with pytest.raises(ValueError, match="says category 'cat', its JSON 'dog'"):
        spair.read_pair(tmp_path, "test", names[0])
    (tmp_path / "SPair-71k" / "JPEGImages" / "cat" / "2008_000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2008_000001.jpg"):
        spair.read_pair(tmp_path, "test", names[1])


@pytest.mark.parametrize("flip", [False, True])
def test_twin_keypoints_land_where_render_scene_draws_the_object(flip):
    size = 96
    for shape, pattern in (("square", "eye"), ("triangle", "cap")):
        label = twin._label(shape, pattern)
        rng = scene_rng(5, label, 0)
        spec = dataclasses.replace(sample_scene(label, rng), flip=flip, rotation=0.4)
        _, mask = render_scene(spec, size, rng)
        uv = twin.object_keypoints(shape, pattern)
        px = np.rint(twin.to_pixels(spec, uv, size)).astype(int)
        n_vertices = len(uv) - (2 if pattern == "eye" else 1)
        centre = px[n_vertices]
        assert mask[centre[1], centre[0]] >= 1                 # the centre is on the object
        if pattern == "eye":
            assert mask[px[-1, 1], px[-1, 0]] == 2             # the eye keypoint is on the eye part
        for x, y in px[:n_vertices]:                           # vertices are on the object's outline
            assert mask[max(0, y - 2):y + 3, max(0, x - 2):x + 3].any()
            assert not mask[max(0, y - 2):y + 3, max(0, x - 2):x + 3].all()


def test_twin_is_read_by_the_real_loader_and_is_deterministic(tmp_path):
    kw = dict(categories=(("square", "eye"), ("cross", "eye")), images_per_category=3, pairs_per_category=4,
              sides=(48, 56), seed=3)
    twin.write_spair_twin(tmp_path / "a", **kw)
    twin.write_spair_twin(tmp_path / "b", **kw)
    a, b = spair.load_pairs(tmp_path / "a", per_category=20), spair.load_pairs(tmp_path / "b", per_category=20)
    assert {p.category for p in a} == {"square_eye", "cross_eye"} and len(a) == 8
    assert [p.name for p in a] == [p.name for p in b]
    assert all(np.array_equal(p.trg_kps, q.trg_kps) for p, q in zip(a, b))
    for p in a:
        w, h = p.trg_size
        assert Image.open(p.trg_image).size == (w, h) and 48 * 0.75 - 1 <= min(w, h) <= max(w, h) <= 56
        assert ((p.trg_kps >= 0) & (p.trg_kps <= [w - 1, h - 1])).all()
        x1, y1, x2, y2 = p.trg_bbox
        assert 0 <= x1 <= x2 <= w - 1 and 0 <= y1 <= y2 <= h - 1
    stamp = (tmp_path / "a" / "SPair-71k" / "synthetic.json").stat().st_mtime_ns
    twin.write_spair_twin(tmp_path / "a", **kw)                # same arguments: left untouched
    assert (tmp_path / "a" / "SPair-71k" / "synthetic.json").stat().st_mtime_ns == stamp

"""vitscope.data.spair, value by value on a hand-written SPair-71k layout: which pair list is read, the checks of a
pair annotation at their boundaries with whole messages, and the per-category draw recomputed from the docstring's
rule (``default_rng([seed, crc32(category)])``, without replacement, in name order)."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from PIL import Image

from vitscope.data import spair as sp


def _pair(cat="cat", src="s", trg="t", **over):
    data = {"src_imname": f"{src}.jpg", "trg_imname": f"{trg}.jpg", "category": cat,
            "src_kps": [[1, 2], [3, 4]], "trg_kps": [[5, 6], [7, 8]], "src_bndbox": [0, 1, 10, 12],
            "trg_bndbox": [2, 3, 4, 5], "src_imsize": [20, 16, 3], "trg_imsize": [18, 14, 3]}
    return {**data, **over}


def _root(root, pairs: dict, split="test", layout=None):
    """``pairs``: {name: annotation}; ``layout``: the names the Layout file lists (None: no Layout file)."""
    base = root / "SPair-71k"
    (base / "PairAnnotation" / split).mkdir(parents=True, exist_ok=True)
    for name, data in pairs.items():
        (base / "PairAnnotation" / split / f"{name}.json").write_text(json.dumps(data))
        for k in ("src", "trg"):
            image = base / "JPEGImages" / data["category"] / data[f"{k}_imname"]
            image.parent.mkdir(parents=True, exist_ok=True)
            if not image.exists():
                Image.new("RGB", (4, 4)).save(image)
    if layout is not None:
        (base / "Layout" / "large").mkdir(parents=True, exist_ok=True)
        (base / "Layout" / "large" / f"{split}.txt").write_text("".join(f"{n}\n" for n in layout))
    (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
    return root


HINT = "vitscope data fetch spair71k --root {}"


def test_spair_dir_needs_both_folders_and_messages_name_the_fix(tmp_path):
    (tmp_path / "SPair-71k" / "PairAnnotation").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        sp.spair_dir(tmp_path)
    assert str(err.value) == (f"SPair-71k root {tmp_path} holds no SPair-71k/PairAnnotation/ and JPEGImages/ (it holds "
                              f"['SPair-71k']). Expected <root>/SPair-71k/JPEGImages/<category>/ and "
                              f"<root>/SPair-71k/PairAnnotation/<split>/; run `{HINT.format(tmp_path)}`.")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        sp.spair_dir(empty)
    assert "(it holds nothing)" in str(err.value)
    for n in "gfedcba":
        (empty / n).mkdir()
    with pytest.raises(FileNotFoundError) as err:
        sp.spair_dir(empty)
    assert "(it holds ['a', 'b', 'c', 'd', 'e', 'f'])" in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        sp.spair_dir(tmp_path / "nowhere")
    assert str(err.value) == (f"SPair-71k root {tmp_path / 'nowhere'} does not exist. Expected "
                              f"<root>/SPair-71k/JPEGImages/<category>/ and <root>/SPair-71k/PairAnnotation/<split>/; "
                              f"run `{HINT.format(tmp_path / 'nowhere')}`.")


def test_the_layout_file_wins_over_the_annotation_folder(tmp_path):
    _root(tmp_path, {"1-a-b:cat": _pair(), "2-c-d:cat": _pair()}, layout=["2-c-d:cat", "9-x-y:dog"])
    assert sp.split_pair_names(tmp_path) == ["2-c-d:cat", "9-x-y:dog"]        # the default split is "test"
    (tmp_path / "SPair-71k" / "Layout" / "large" / "test.txt").unlink()
    assert sp.split_pair_names(tmp_path, "test") == ["1-a-b:cat", "2-c-d:cat"]


def test_split_pair_names_messages(tmp_path):
    _root(tmp_path, {})
    base = tmp_path / "SPair-71k"
    with pytest.raises(ValueError) as err:
        sp.split_pair_names(tmp_path, "train")
    assert str(err.value) == "split='train'; SPair-71k's splits are ('trn', 'val', 'test')"
    with pytest.raises(FileNotFoundError) as err:
        sp.split_pair_names(tmp_path, "val")
    assert str(err.value) == (f"SPair-71k at {base} has no Layout/large/val.txt nor PairAnnotation/val/; re-fetch it "
                              f"(`{HINT.format(tmp_path)}`).")
    with pytest.raises(FileNotFoundError) as err:
        sp.split_pair_names(tmp_path, "test")
    assert str(err.value) == f"SPair-71k at {base} lists no pairs for split 'test'"


@pytest.mark.parametrize("name, cat", [("1-a-b:cat", "cat"), ("1-a:b-c:dog", "dog"), ("x:y:z", "z"), ("1-a-b", ""),
                                       ("", "")])
def test_category_of(name, cat):
    assert sp.category_of(name) == cat


def test_read_pair_values(tmp_path):
    _root(tmp_path, {"1-s-t:cat": _pair(), "2-s-t": _pair()})
    pair = sp.read_pair(tmp_path, "test", "1-s-t:cat")
    base = tmp_path / "SPair-71k"
    assert (pair.name, pair.category) == ("1-s-t:cat", "cat")
    assert (pair.src_image, pair.trg_image) == (base / "JPEGImages" / "cat" / "s.jpg", base / "JPEGImages" / "cat" /
                                                "t.jpg")
    assert pair.src_kps.dtype == np.float64 and pair.src_kps.tolist() == [[1, 2], [3, 4]]
    assert pair.trg_kps.dtype == np.float64 and pair.trg_kps.tolist() == [[5, 6], [7, 8]]
    assert pair.src_bbox == (0.0, 1.0, 10.0, 12.0) and pair.trg_bbox == (2.0, 3.0, 4.0, 5.0)
    assert (pair.src_size, pair.trg_size) == ((20, 16), (18, 14))
    assert sp.read_pair(tmp_path, "test", "2-s-t").category == "cat"     # a name without a category is accepted


def _read_error(tmp_path, exc=ValueError, **over):
    _root(tmp_path, {"1-s-t:cat": _pair(**over)})
    with pytest.raises(exc) as err:
        sp.read_pair(tmp_path, "test", "1-s-t:cat")
    return str(err.value), tmp_path / "SPair-71k" / "PairAnnotation" / "test" / "1-s-t:cat.json"


@pytest.mark.parametrize("value, shape", [([], "(0,)"), ([1, 2], "(2,)"), ([[1, 2, 3]], "(1, 3)"),
                                          ([[[1, 2]]], "(1, 1, 2)")])
def test_keypoints_must_be_a_nonempty_list_of_points(tmp_path, value, shape):
    message, path = _read_error(tmp_path, src_kps=value)
    assert message == f"SPair pair {path}: src_kps must be a non-empty list of [x, y]; got shape {shape}"


def test_trg_keypoints_are_checked_by_name(tmp_path):
    message, path = _read_error(tmp_path, trg_kps=[[1, 2, 3]])
    assert message == f"SPair pair {path}: trg_kps must be a non-empty list of [x, y]; got shape (1, 3)"


def test_one_keypoint_is_a_pair(tmp_path):
    _root(tmp_path, {"1-s-t:cat": _pair(src_kps=[[1, 2]], trg_kps=[[3, 4]])})
    assert sp.read_pair(tmp_path, "test", "1-s-t:cat").trg_kps.tolist() == [[3, 4]]


def test_keypoint_count_mismatch_message(tmp_path):
    message, path = _read_error(tmp_path, trg_kps=[[1, 2]])
    assert message == (f"SPair pair {path}: 2 source but 1 target keypoints; they must correspond one to one")


@pytest.mark.parametrize("field", ["src_bndbox", "trg_bndbox"])
@pytest.mark.parametrize("box", [[5, 0, 4, 10], [0, 5, 10, 4], [0, 0, 1], [5, 5, 4, 4]])
def test_a_box_with_x2_below_x1_or_y2_below_y1_is_refused(tmp_path, field, box):
    message, path = _read_error(tmp_path, **{field: box})
    assert message == (f"SPair pair {path}: {field} = {box!r} is not [x1, y1, x2, y2] with x2 >= x1, y2 >= y1")


@pytest.mark.parametrize("box", [[3, 3, 3, 3], [0, 10, 5, 12], [10, 0, 12, 5]])
def test_boxes_at_the_boundary_are_accepted(tmp_path, box):
    _root(tmp_path, {"1-s-t:cat": _pair(src_bndbox=box, trg_bndbox=box)})
    pair = sp.read_pair(tmp_path, "test", "1-s-t:cat")
    assert pair.src_bbox == pair.trg_bbox == tuple(float(v) for v in box)


def test_read_pair_messages(tmp_path):
    base = tmp_path / "SPair-71k"
    message, path = _read_error(tmp_path, category="dog")
    assert message == f"SPair pair {path}: its name says category 'cat', its JSON 'dog'"
    path.write_text("{")
    with pytest.raises(ValueError) as err:
        sp.read_pair(tmp_path, "test", "1-s-t:cat")
    assert str(err.value).startswith(f"SPair pair annotation {path} is not valid JSON (")
    with pytest.raises(FileNotFoundError) as err:
        sp.read_pair(tmp_path, "test", "2-s-t:cat")
    assert str(err.value) == (f"SPair pair annotation {base / 'PairAnnotation' / 'test' / '2-s-t:cat.json'} is missing "
                              f"(listed in Layout/large/test.txt); re-fetch the data set (`{HINT.format(tmp_path)}`).")
    _root(tmp_path, {"1-s-t:cat": _pair()})
    (base / "JPEGImages" / "cat" / "t.jpg").unlink()
    with pytest.raises(FileNotFoundError) as err:
        sp.read_pair(tmp_path, "test", "1-s-t:cat")
    assert str(err.value) == (f"SPair image {base / 'JPEGImages' / 'cat' / 't.jpg'} (trg_imname of 1-s-t:cat.json) is "
                              f"missing; re-fetch the data set (`{HINT.format(tmp_path)}`).")


def _names(counts):
    return [f"{i:06d}-a-b:{cat}" for cat, n in counts.items() for i in range(n)]


def test_sample_names_draws_without_replacement_by_the_documented_rule():
    names = _names({"cat": 10, "dog": 3, "cow": 4})
    out = sp.sample_names(names[::-1], 4, seed=7)
    assert list(out) == ["cat", "cow", "dog"]
    members = sorted(n for n in names if n.endswith(":cat"))
    keep = np.sort(np.random.default_rng([7, zlib.crc32(b"cat")]).choice(10, size=4, replace=False))
    assert out["cat"] == [members[i] for i in keep] and len(set(out["cat"])) == 4
    assert out["cow"] == sorted(n for n in names if n.endswith(":cow"))           # exactly per_category: all kept
    assert out["dog"] == sorted(n for n in names if n.endswith(":dog"))
    many = sp.sample_names(_names({"cat": 12}), 11, seed=0)["cat"]
    assert len(set(many)) == 11                                                   # no pair drawn twice


def test_sample_names_filters_categories_and_names_what_is_wrong():
    names = _names({"cat": 2, "dog": 2, "cow": 1})
    assert sp.sample_names(names, None, 0, categories=["dog", "cat"]) == {
        "cat": ["000000-a-b:cat", "000001-a-b:cat"], "dog": ["000000-a-b:dog", "000001-a-b:dog"]}
    with pytest.raises(ValueError) as err:
        sp.sample_names(names, None, 0, categories=["dog", "pig", "emu"])
    assert str(err.value) == "categories ['emu', 'pig'] have no pairs in this split; it has ['cat', 'cow', 'dog']"
    with pytest.raises(ValueError) as err:
        sp.sample_names(names + ["7-a-b"], None, 0)
    assert str(err.value) == ("pair name '7-a-b' does not end in ':<category>'; SPair-71k's Layout files name pairs "
                              "'<index>-<source>-<target>:<category>'")


def test_load_pairs_defaults_are_20_per_category_with_seed_42(tmp_path):
    names = _names({"cat": 23, "dog": 2})
    _root(tmp_path, {n: _pair(cat=sp.category_of(n)) for n in names}, layout=names)
    _root(tmp_path, {"1-s-t:cat": _pair()}, split="val", layout=["1-s-t:cat"])
    pairs = sp.load_pairs(tmp_path)
    cats = sorted(n for n in names if n.endswith(":cat"))
    keep = np.sort(np.random.default_rng([42, zlib.crc32(b"cat")]).choice(23, size=20, replace=False))
    assert [p.name for p in pairs] == [cats[i] for i in keep] + ["000000-a-b:dog", "000001-a-b:dog"]
    assert [p.name for p in sp.load_pairs(tmp_path, categories=["dog"])] == ["000000-a-b:dog", "000001-a-b:dog"]
    assert [p.name for p in sp.load_pairs(tmp_path, "val")] == ["1-s-t:cat"]

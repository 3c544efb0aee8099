"""revisitop loader (vitscope.data.revisitop) on fixtures written in the real layout, its restricted Unpickler, and the
synthetic twin (vitscope.data.twins.revisitop)."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from vitscope.data import revisitop as rv
from vitscope.data.twins.revisitop import write_revisitop_twin


def _write_fixture(root, name="roxford5k", nested=False, arrays=False):
    """3 database images and 2 queries in the revisitop layout; images differ in size so order is visible."""
    folder = root / name
    imlist, qimlist = ["all_souls_000001", "radcliffe_000002", "magdalen_000003"], ["all_souls_q1", "radcliffe_q2"]
    for i, n in enumerate(imlist + qimlist):
        where = (folder / "jpg_nested" / "paris" / n.split("_")[0] if nested else folder / "jpg") / f"{n}.jpg"
        where.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + 10 * i, 30), (10 * i, 0, 0)).save(where)
    lists = (lambda v: np.array(v, dtype=np.int64)) if arrays else list
    gnd = [{"bbx": [5.0, 2.0, 25.0, 22.0], "easy": lists([0]), "hard": lists([]), "junk": lists([2])},
           {"bbx": np.array([1.5, 0.0, 11.5, 10.0]) if arrays else [1.5, 0.0, 11.5, 10.0],
            "easy": lists([1]), "hard": lists([0]), "junk": lists([])}]
    (folder / f"gnd_{name}.pkl").write_bytes(pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}))
    return folder


@pytest.mark.parametrize("arrays", [False, True])
def test_reads_the_real_layout_lists_or_numpy_arrays(tmp_path, arrays):
    _write_fixture(tmp_path, arrays=arrays)
    gt = rv.load_ground_truth(tmp_path, "roxford5k")
    assert gt.imlist[1] == "radcliffe_000002" and len(gt.qimlist) == 2
    assert gt.gnd[1] == {"bbx": (1.5, 0.0, 11.5, 10.0), "easy": (1,), "hard": (0,), "junk": ()}
    db = rv.revisitop_database(tmp_path, "roxford5k")
    assert [db[i][0].size for i in range(3)] == [(40, 30), (50, 30), (60, 30)]
    assert db.labels.tolist() == [0, 0, 0]
    q = rv.revisitop_queries(tmp_path, "roxford5k")
    assert q[0][0].size == (20, 20) and q[1][0].size == (10, 10)       # cropped to bbx (PIL rounds the float box)
    whole = rv.revisitop_queries(tmp_path, "roxford5k", crop=False)
    assert whole[0][0].size == (70, 30)
    assert len({db.manifest.name, q.manifest.name, whole.manifest.name}) == 3   # three different cache identities
    assert rv.revisitop_queries(tmp_path / "roxford5k", "roxford5k").samples == q.samples  # the dataset folder works


def test_paris_archive_nesting_is_found(tmp_path):
    _write_fixture(tmp_path, "rparis6k", nested=True)
    db = rv.revisitop_database(tmp_path, "rparis6k")
    assert db.samples[0][0].parent.name == "all"                     # jpg_nested/paris/all/all_souls_000001.jpg


def test_missing_root_or_images_name_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="vitscope data fetch revisitop --root"):
        rv.load_ground_truth(tmp_path / "nowhere", "roxford5k")
    with pytest.raises(FileNotFoundError, match="gnd_roxford5k.pkl"):
        rv.load_ground_truth(tmp_path, "roxford5k")
    folder = _write_fixture(tmp_path)
    (folder / "jpg" / "radcliffe_000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* radcliffe_000002.*vitscope data fetch"):
        rv.revisitop_database(tmp_path, "roxford5k")


@pytest.mark.parametrize("raw, match", [
    ([1, 2], "expected a dict"),
    ({"imlist": [], "gnd": []}, "lacks"),
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": []}, "0 entries for 1 queries"),
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [3], "hard": [], "junk": []}]}, "outside"),
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [5, 0, 1, 1], "easy": [0], "hard": [], "junk": []}]},
     "not a box"),
])
def test_malformed_ground_truth_names_file_and_field(tmp_path, raw, match):
    (tmp_path / "roxford5k").mkdir()
    (tmp_path / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(raw))
    with pytest.raises(ValueError, match=match):
        rv.load_ground_truth(tmp_path, "roxford5k")


_CALLED = []


def _side_effect():
    _CALLED.append(True)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return self.target


@pytest.mark.parametrize("target", [(os.getpid, ()), (eval, ("1 + 1",)), (_side_effect, ())])
def test_a_pickle_that_calls_code_is_refused(tmp_path, target):
    payload = pickle.dumps({"imlist": [], "qimlist": [], "gnd": [], "x": _Evil(target)})
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        rv.safe_load_pickle(payload)
    (tmp_path / "roxford5k").mkdir()
    (tmp_path / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="gnd_roxford5k.pkl"):
        rv.load_ground_truth(tmp_path, "roxford5k")
    assert _CALLED == []
    with pytest.raises(ValueError, match="not a readable pickle"):
        rv.safe_load_pickle(b"\x80\x02garbage")


def test_twin_groups_landmarks_into_easy_hard_junk_and_is_deterministic(tmp_path):
    kw = dict(landmarks=3, easy=2, hard=2, junk=1, distractors=4, queries_per_landmark=2, size=40, seed=3)
    folder = write_revisitop_twin(tmp_path / "a", "rparis6k", **kw)
    gt = rv.load_ground_truth(tmp_path / "a", "rparis6k")
    assert len(gt.imlist) == 3 * 5 + 4 and len(gt.qimlist) == 6
    for q, g in zip(gt.qimlist, gt.gnd):
        landmark = q.split("_")[0]
        groups = [set(g[k]) for k in ("easy", "hard", "junk")]
        assert [len(s) for s in groups] == [2, 2, 1]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert {gt.imlist[i].split("_")[0] for s in groups for i in s} == {landmark}
        x1, y1, x2, y2 = g["bbx"]
        assert 0 <= x1 < x2 <= 40 and 0 <= y1 < y2 <= 40
    in_gnd = {i for g in gt.gnd for k in ("easy", "hard", "junk") for i in g[k]}
    assert all(gt.imlist[i].startswith("landmark") for i in in_gnd)
    assert sum(n.startswith("distractor") for n in gt.imlist) == 4
    # same arguments: the same files; a complete twin is left alone
    write_revisitop_twin(tmp_path / "b", "rparis6k", **kw)
    pkl = folder / "gnd_rparis6k.pkl"
    assert pkl.read_bytes() == (tmp_path / "b" / "rparis6k" / "gnd_rparis6k.pkl").read_bytes()
    mtime = pkl.stat().st_mtime_ns
    write_revisitop_twin(tmp_path / "a", "rparis6k", **kw)
    assert pkl.stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="easy"):
        write_revisitop_twin(tmp_path / "c", "x", easy=0)

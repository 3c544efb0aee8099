"""vitscope.data.revisitop, value by value: every global the restricted Unpickler allows loads and every other one is
refused with its whole message; Python 2 and NumPy 1.x pickles (what the published gnd files are) load; each check of
parse_ground_truth fires at its boundary with the message that names the file and field; datasets keep their folder,
transform, labels and cache identity."""
import hashlib
import json
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from vitscope.data import revisitop as rv

_REFUSAL = ("a revisitop ground-truth file holds only dicts, lists, numbers, strings and NumPy arrays. It is not a "
            "revisitop ground-truth file; do not load it with plain pickle either.")


def _global(module: str, name: str) -> bytes:
    """A protocol-0 pickle whose only content is the global ``module.name`` (loading returns that object)."""
    return f"c{module}\n{name}\n.".encode()


@pytest.mark.parametrize("module", ["builtins", "__builtin__"])
@pytest.mark.parametrize("name", rv._BUILTIN_TYPES)
def test_every_allowed_builtin_type_loads(module, name):
    import builtins
    assert rv.safe_load_pickle(_global(module, name)) is getattr(builtins, name)


@pytest.mark.parametrize("module, name", sorted(rv._NUMPY_GLOBALS))
@pytest.mark.parametrize("core", ["numpy.core", "numpy._core"])
def test_every_allowed_numpy_global_loads_under_both_numpy_names_without_warnings(module, name, core):
    import importlib
    expected = getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # numpy 2 warns when numpy.core is imported: the loader must not
        assert rv.safe_load_pickle(_global(module.replace("numpy.core", core), name)) is expected


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"), ("__builtin__", "getattr"), ("builtins", "object"), ("os", "system"),
    ("posix", "system"), ("subprocess", "Popen"), ("numpy", "load"), ("numpy.core.multiarray", "ndarray"),
    ("numpy._core.multiarray", "dtype"), ("numpy.lib.npyio", "load"), ("foo", "dict"), ("numpy", "_reconstruct"),
    ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("numpy.core.numeric", "scalar"),
])
def test_every_other_global_is_refused_with_the_whole_message(module, name):
    with pytest.raises(rv.RefusedPickle) as err:
        rv.safe_load_pickle(_global(module, name))
    assert str(err.value) == f"pickle: refused global {module}.{name}: {_REFUSAL}"
    with pytest.raises(rv.RefusedPickle) as err:
        rv.safe_load_pickle(_global(module, name), where="gnd.pkl")
    assert str(err.value) == f"gnd.pkl: refused global {module}.{name}: {_REFUSAL}"


def test_python2_strings_load_as_latin1():
    """The published gnd files are Python 2 pickles; their byte strings are read as latin-1 (as numpy's need)."""
    payload = b"\x80\x02}q\x00U\x06imlistq\x01]q\x02U\x04caf\xe9q\x03as."
    assert rv.safe_load_pickle(payload) == {"imlist": ["caf\xe9"]}


def test_a_numpy_1_pickle_loads_under_numpy_2():
    arr = np.array([[3, 1], [4, 1]], dtype=np.int64)
    payload = pickle.dumps({"easy": arr}, protocol=3).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"numpy.core.multiarray" in payload
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = rv.safe_load_pickle(payload)
    np.testing.assert_array_equal(out["easy"], arr)


def test_an_unreadable_pickle_names_the_error_type():
    with pytest.raises(ValueError) as err:
        rv.safe_load_pickle(b"\x80\x02garbage")
    assert str(err.value).startswith("pickle is not a readable pickle (UnpicklingError: ")
    assert str(err.value).endswith("); re-download it")


# --- parse_ground_truth ----------------------------------------------------------------------------------------


def _parse(raw):
    return rv.parse_ground_truth(raw, "gnd.pkl", "roxford5k")


def _message(raw) -> str:
    with pytest.raises(ValueError) as err:
        _parse(raw)
    return str(err.value)


def _one(**entry):
    return {"imlist": ["a", "b", "c"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [], "junk": [], **entry}]}


def test_parse_keeps_name_path_and_normalises_boxes_and_indices():
    gt = _parse({"imlist": ["a", "b"], "qimlist": ["q", "r"], "gnd": [
        {"bbx": np.array([[1, 2, 3, 4]]), "easy": np.array([[0], [1]]), "hard": [], "junk": np.int64(1)},
        {"bbx": None, "easy": [], "hard": [1], "junk": []}]})
    assert gt.name == "roxford5k" and gt.path == "gnd.pkl"
    assert gt.gnd == ({"bbx": (1.0, 2.0, 3.0, 4.0), "easy": (0, 1), "hard": (), "junk": (1,)},
                      {"bbx": None, "easy": (), "hard": (1,), "junk": ()})
    assert all(type(v) is float for v in gt.gnd[0]["bbx"]) and all(type(i) is int for i in gt.gnd[0]["easy"])


def test_parse_messages_name_the_file_and_field():
    assert _message([1, 2]) == "gnd.pkl: expected a dict with imlist, qimlist and gnd; got list"
    raw = {k: [] for k in "abcdefgh"} | {"imlist": [], "qimlist": []}
    assert _message(raw) == ("gnd.pkl lacks ['gnd']: not a revisitop ground-truth file (keys: "
                             "['a', 'b', 'c', 'd', 'e', 'f'])")
    assert _message({"imlist": ["a"], "qimlist": ["q"], "gnd": [[0]]}) == (
        "gnd.pkl: gnd[0] must be a dict with easy, hard and junk index lists")
    assert _message({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [], "hard": []}]}) == (
        "gnd.pkl: gnd[0] must be a dict with easy, hard and junk index lists")
    assert _message(_one(hard=[3])) == (
        "gnd.pkl: gnd[0]['hard'] holds indices outside [0, 3) (the number of database images)")
    assert _message(_one(junk=[0.5])) == "gnd.pkl: gnd[0]['junk'] must list integer database indices; got dtype float64"


@pytest.mark.parametrize("bbx, shown", [
    ([5, 0, 5, 10], "(5.0, 0.0, 5.0, 10.0)"),        # zero width
    ([0, 5, 10, 5], "(0.0, 5.0, 10.0, 5.0)"),        # zero height
    ([5, 0, 4, 10], "(5.0, 0.0, 4.0, 10.0)"),        # x2 < x1 (though x1 < y2)
    ([None, 0, 10, 10], "(nan, 0.0, 10.0, 10.0)"),   # a missing coordinate reads as NaN, not a box
    ([1, 2, 3], "(1.0, 2.0, 3.0)"),
])
def test_a_degenerate_box_is_refused(bbx, shown):
    assert _message(_one(bbx=bbx)) == (f"gnd.pkl: gnd[0]['bbx'] = {shown} is not a box (x1, y1, x2, y2) "
                                       "with x1 < x2, y1 < y2")


def test_the_last_database_index_is_allowed_and_one_past_it_is_not():
    assert _parse(_one(easy=[2])).gnd[0]["easy"] == (2,)
    assert "outside [0, 3)" in _message(_one(easy=[3]))


def test_digest_is_the_short_sha256_of_the_boxes():
    gt = _parse({"imlist": ["a"], "qimlist": ["q", "r"], "gnd": [
        {"bbx": [1, 2, 3, 4], "easy": [], "hard": [], "junk": []},
        {"bbx": None, "easy": [], "hard": [], "junk": []}]})
    assert gt.digest() == hashlib.sha256(b"[[1.0, 2.0, 3.0, 4.0], null]").hexdigest()[:16]


# --- files and datasets ----------------------------------------------------------------------------------------


def _write(root, name="roxford5k", *, n_db=3, gnd=None, images=True):
    folder = root / name
    imlist, qimlist = [f"db{i}" for i in range(n_db)], ["qa", "qb"]
    (folder / "jpg").mkdir(parents=True)
    if images:
        for i, n in enumerate(imlist + qimlist):
            Image.new("RGB", (20 + 2 * i, 16), (30 * i, 0, 0)).save(folder / "jpg" / f"{n}.jpg")
    gnd = gnd or [{"bbx": [1, 2, 9, 12], "easy": [0], "hard": [], "junk": []},
                  {"bbx": [0, 0, 4, 4], "easy": [1], "hard": [], "junk": []}]
    (folder / f"gnd_{name}.pkl").write_bytes(pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}))
    return folder


def test_missing_root_and_missing_file_messages(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        rv.dataset_dir(nowhere, "roxford5k")
    assert str(err.value) == (
        f"revisitop root {nowhere} does not exist. Expected {nowhere}/roxford5k/gnd_roxford5k.pkl "
        f"and {nowhere}/roxford5k/jpg/; fetch it with `vitscope data fetch revisitop --root {nowhere}`.")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        rv.dataset_dir(empty, "roxford5k")
    assert str(err.value) == (f"No roxford5k/gnd_roxford5k.pkl under {empty} (it holds nothing). Point the root at the "
                              f"folder that contains 'roxford5k/', or fetch the data with `vitscope data fetch "
                              f"revisitop --root {empty}`.")
    for n in "gfedcba":
        (empty / n).mkdir()
    with pytest.raises(FileNotFoundError) as err:
        rv.dataset_dir(empty, "roxford5k")
    assert "(it holds ['a', 'b', 'c', 'd', 'e', 'f'])" in str(err.value)


def test_ground_truth_is_named_after_the_benchmark(tmp_path):
    _write(tmp_path)
    gt = rv.load_ground_truth(tmp_path, "roxford5k")
    assert gt.name == "roxford5k" and gt.path == tmp_path / "roxford5k" / "gnd_roxford5k.pkl"


def test_missing_images_message_lists_three_and_the_fetch_command(tmp_path):
    folder = _write(tmp_path, n_db=6, images=False)
    (folder / "jpg_nested" / "paris" / "x").mkdir(parents=True)       # a nesting that lacks them too
    Image.new("RGB", (8, 8)).save(folder / "jpg_nested" / "paris" / "x" / "db4.jpg")
    with pytest.raises(FileNotFoundError) as err:
        rv.revisitop_database(tmp_path, "roxford5k")
    assert str(err.value) == (f"5 of 6 images listed in {folder}/gnd_roxford5k.pkl are missing under {folder}/jpg/ "
                              f"(e.g. db0, db1, db2). Fetch them with `vitscope data fetch revisitop --root "
                              f"{tmp_path}`.")
    with pytest.raises(FileNotFoundError) as err:
        rv.revisitop_queries(tmp_path, "roxford5k")
    assert str(err.value).endswith(f"(e.g. qa, qb). Fetch them with `vitscope data fetch revisitop --root {tmp_path}`.")


def test_database_dataset_values(tmp_path):
    folder = _write(tmp_path)
    db = rv.revisitop_database(tmp_path, "roxford5k", transform=lambda im: ("t", im.size))
    assert db.root == folder and db.per_class is None and db.classes == ()
    assert db.samples == [(folder / "jpg" / f"db{i}.jpg", 0) for i in range(3)]
    assert db.manifest == rv.Part("revisitop/roxford5k/database", "roxford5k database")
    assert db[1] == (("t", (22, 16)), 0) and db.labels.tolist() == [0, 0, 0]


def test_query_dataset_values(tmp_path):
    folder = _write(tmp_path)
    gt = rv.load_ground_truth(tmp_path, "roxford5k")
    q = rv.revisitop_queries(tmp_path, "roxford5k", transform=lambda im: ("t", im.size))
    assert q.root == folder and q.samples == [(folder / "jpg" / "qa.jpg", 0), (folder / "jpg" / "qb.jpg", 0)]
    assert q.manifest == rv.Part(f"revisitop/roxford5k/queries-bbx-{gt.digest()}",
                                 "roxford5k queries (cropped to their box)")
    assert q[0] == (("t", (8, 10)), 0) and q[1] == (("t", (4, 4)), 0)
    whole = rv.revisitop_queries(tmp_path, "roxford5k", crop=False)
    assert whole.manifest == rv.Part("revisitop/roxford5k/queries", "roxford5k queries (whole images)")
    assert whole.boxes is None and whole[0][0].size == (26, 16) and whole[0][1] == 0


def test_queries_without_a_box_are_named_when_cropping(tmp_path):
    gnd = [{"bbx": None, "easy": [], "hard": [], "junk": []} for _ in range(2)]
    _write(tmp_path, gnd=gnd)
    path = tmp_path / "roxford5k" / "gnd_roxford5k.pkl"
    with pytest.raises(ValueError) as err:
        rv.revisitop_queries(tmp_path, "roxford5k")
    assert str(err.value) == f"{path}: queries [0, 1] have no bbx; pass crop=False (crop_queries: false)"
    raw = pickle.loads(path.read_bytes())
    raw["qimlist"] = [f"q{i}" for i in range(7)]
    raw["gnd"] = [{"bbx": None, "easy": [], "hard": [], "junk": []}] * 7
    path.write_bytes(pickle.dumps(raw))
    with pytest.raises(ValueError) as err:
        rv.revisitop_queries(tmp_path, "roxford5k")
    assert str(err.value) == f"{path}: queries [0, 1, 2, 3, 4] have no bbx; pass crop=False (crop_queries: false)"


def test_digest_json_is_what_cache_keys_hash():
    gt = rv.GroundTruth("x", "p", (), ("q",), ({"bbx": (1.0, 2.0, 3.0, 4.0), "easy": (), "hard": (), "junk": ()},))
    assert gt.digest() == hashlib.sha256(json.dumps([[1.0, 2.0, 3.0, 4.0]]).encode()).hexdigest()[:16]
    assert len(gt.digest()) == 16

"""vitscope.data.fetch and .archives, value by value (issue 17: these mutants survived the fetch tests).

The archive checker resolves each member's path through the archive's own symlinks before anything is written;
the verify report lists missing and short class folders. Both are compared here with hand-made cases and whole
strings.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from vitscope.data import fetch
from vitscope.data.archives import _MAX_LINK_HOPS, _resolve

# ----------------------------------------------------------------------------- archive paths through symlinks


def test_resolve_plain_paths_and_dot_components():
    assert _resolve(["a", "", ".", "b"], {}) == ["a", "b"]
    assert _resolve(["a", "b", "..", "c"], {}) == ["a", "c"]
    assert _resolve(["..", "a"], {}) is None                      # above the root


def test_resolve_follows_links_relative_to_their_folder():
    assert _resolve(["d", "x", "f"], {"d/x": "y"}) == ["d", "y", "f"]          # d/x -> d/y
    assert _resolve(["d", "x"], {"d/x": "..\\e"}) == ["e"]                     # Windows separators in a target
    assert _resolve(["d", "x", "..", ".."], {"d/x": "."}) is None              # d/x -> d, then two levels up
    assert _resolve(["x", "f"], {"x": "/etc"}) is None                          # absolute targets never resolve


def test_resolve_follows_exactly_the_allowed_number_of_hops():
    def chain(n):  # l0 -> l1 -> ... -> l{n-1} -> end: n links followed to reach "end"
        return {f"l{i}": (f"l{i + 1}" if i + 1 < n else "end") for i in range(n)}

    assert _MAX_LINK_HOPS == 40
    assert _resolve(["l0"], chain(_MAX_LINK_HOPS)) == ["end"]
    assert _resolve(["l0"], chain(_MAX_LINK_HOPS + 1)) is None
    assert _resolve(["a"], {"a": "b", "b": "a"}) is None                       # a loop ends, it does not recurse


# ----------------------------------------------------------------------------- verify: ImageNet-style folders

def _layout(tmp_path, monkeypatch, wnids, per_class, folders, split="val", make_split=True):
    """Fake manifest ``wnids``/``per_class``; ``folders``: {wnid: [file names]} written under the split."""
    monkeypatch.setattr(fetch, "load_manifest", lambda name: SimpleNamespace(split=split, wnids=wnids,
                                                                             per_class=per_class))
    base = tmp_path / split if make_split else tmp_path
    for wnid, files in folders.items():
        (base / wnid).mkdir(parents=True)
        for f in files:
            (base / wnid / f).write_bytes(b"")
    return base


def test_verify_lists_missing_and_short_class_folders(tmp_path, monkeypatch):
    wnids = [f"w{i}" for i in range(14)]
    full = ["1.jpg", "2.png", "3.JPEG"]
    folders = {"w6": ["a.txt", "b.txt", "c.json"], "w7": ["a.JPEG", "b.Jpg"], "w8": ["a.jpeg"],
               "w9": ["a.png", "b.webp"], "w10": [], "w11": ["a.bmp", "b.jpg"], "w12": full, "w13": full}
    split = _layout(tmp_path, monkeypatch, wnids, 3, folders)
    problems = fetch._imagefolder_problems("m", tmp_path, "FIX")
    assert problems == [
        fetch.Problem(str(split), "6 of 14 class folders missing (w0, w1, w2, w3, w4, ...)", "FIX"),
        fetch.Problem(str(split), "6 class folder(s) hold fewer than the 3 images the selection takes: w6 (0), "
                                  "w7 (2), w8 (1), w9 (2), w10 (0), ...", "FIX")]


def test_verify_without_a_split_folder_reads_the_root_and_lists_five_without_ellipsis(tmp_path, monkeypatch):
    wnids = [f"w{i}" for i in range(10)]
    folders = {f"w{i}": ["a.jpg"] for i in range(5, 10)}
    _layout(tmp_path, monkeypatch, wnids, 2, folders, make_split=False)
    problems = fetch._imagefolder_problems("m", tmp_path, "FIX")
    assert problems == [
        fetch.Problem(str(tmp_path), "5 of 10 class folders missing (w0, w1, w2, w3, w4)", "FIX"),
        fetch.Problem(str(tmp_path), "5 class folder(s) hold fewer than the 2 images the selection takes: w5 (1), "
                                     "w6 (1), w7 (1), w8 (1), w9 (1)", "FIX")]


def test_verify_is_quiet_when_every_folder_is_full(tmp_path, monkeypatch):
    _layout(tmp_path, monkeypatch, ["a", "b"], 2, {"a": ["1.jpg", "2.jpg"], "b": ["1.png", "2.png", "3.png"]})
    assert fetch._imagefolder_problems("m", tmp_path, "FIX") == []


# ----------------------------------------------------------------------------- ImageFolderSubset's selection

def test_imagefolder_subset_names_short_class_folders_whole(tmp_path):
    from vitscope.data import ImageFolderSubset, load_manifest, write_imagefolder_twin

    manifest = load_manifest("imagenet50")
    root = write_imagefolder_twin(tmp_path / "twin", manifest.wnids[:7], 2, size=16, seed=0, progress=False)
    with pytest.raises(ValueError) as err:
        ImageFolderSubset(root, manifest, per_class=3, num_classes=7)
    shown = ", ".join(f"{w} (2)" for w in manifest.wnids[:5])
    assert str(err.value) == (f"7 class folder(s) under {root / 'train'} hold fewer than per_class=3 images: {shown}. "
                              "Pass a smaller per_class or complete the dataset.")


# ----------------------------------------------------------------------------- archive member kinds

def test_tar_member_kinds_by_type():
    import tarfile

    from vitscope.data.archives import _tar_kind

    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
             tarfile.LNKTYPE: "hardlink", tarfile.FIFOTYPE: "other", tarfile.CHRTYPE: "other"}
    for type_, kind in kinds.items():
        info = tarfile.TarInfo("m")
        info.type = type_
        assert _tar_kind(info) == kind, type_


def test_zip_member_kinds_by_mode_bits():
    import stat
    import zipfile

    from vitscope.data.archives import _zip_kind

    def member(name, mode):
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        return info

    assert _zip_kind(member("link", stat.S_IFLNK | 0o777)) == "symlink"
    assert _zip_kind(member("folder/", stat.S_IFDIR | 0o755)) == "dir"
    assert _zip_kind(member("folder/", 0)) == "dir"                      # DOS zips: the trailing slash says it
    assert _zip_kind(member("a.txt", stat.S_IFREG | 0o644)) == "file"
    assert _zip_kind(member("a.txt", 0)) == "file"                        # written by writestr or on Windows
    assert _zip_kind(member("pipe", stat.S_IFIFO | 0o644)) == "other"

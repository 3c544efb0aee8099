"""vitscope.data.archives, value by value (issue 17: mutants of check_members, _normalise, _unpack, safe_extract...).

Real tar and zip archives are built in tmp_path with directory, symlink, hardlink, absolute and ``..`` members;
the unsafe ones must be refused with their whole message (mutmut rewrites message strings as ``XX...XX``) and
nothing written, the safe ones extracted with the right content and link targets.
"""
from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from vitscope.data.archives import Member, UnsafeArchiveError, check_members, list_members, safe_extract

_TAIL = "refusing the whole archive (nothing was extracted)."


# ----------------------------------------------------------------------------------------------- builders
def _tar(path: Path, entries: list[tuple]) -> Path:
    """``entries``: ``(name, bytes[, mode])`` files, ``(name, "dir")``, ``(name, "symlink"|"hardlink", target)``,
    ``(name, "fifo")``."""
    with tarfile.open(path, "w:gz") as tf:
        for entry in entries:
            info = tarfile.TarInfo(entry[0])
            if isinstance(entry[1], bytes):
                info.size = len(entry[1])
                info.mode = entry[2] if len(entry) > 2 else 0o644
                tf.addfile(info, io.BytesIO(entry[1]))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[entry[1]]
            if len(entry) > 2:
                info.linkname = entry[2]
            tf.addfile(info)
    return path


def _zip(path: Path, entries: list[tuple]) -> Path:
    """``entries``: ``(name, bytes)`` files, ``(name, "dir")``, ``(name, "symlink", target bytes)``."""
    with zipfile.ZipFile(path, "w") as zf:
        for entry in entries:
            if isinstance(entry[1], bytes):
                zf.writestr(entry[0], entry[1])
            elif entry[1] == "dir":
                zf.writestr(zipfile.ZipInfo(entry[0]), b"")
            else:
                info = zipfile.ZipInfo(entry[0])
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, entry[2])
    return path


def _tree(folder: Path) -> dict[str, object]:
    """Every path under ``folder``: file bytes, ``("link", target)`` or ``"dir"``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else ("dir" if p.is_dir() else p.read_bytes())
    return out


# ----------------------------------------------------------------------------------------------- check_members
def test_check_members_returns_every_member_normalised_with_its_kind_and_link():
    members = [Member("./only/a//b/", "dir"), Member("only\\f.txt", "file"), Member("only/l", "symlink", "f.txt"),
               Member("only/w", "symlink", "a\\b"), Member("h", "hardlink", "./only//f.txt"),
               Member("C", "file"), Member("ab:c", "file")]   # one letter, and a colon past the second character
    assert check_members(members, "t.tar") == [
        Member("only/a/b", "dir", ""), Member("only/f.txt", "file", ""), Member("only/l", "symlink", "f.txt"),
        Member("only/w", "symlink", "a/b"), Member("h", "hardlink", "only/f.txt"), Member("C", "file", ""),
        Member("ab:c", "file", "")]


@pytest.mark.parametrize("members, message", [
    ([Member("/etc/passwd", "file")],
     "t.tar: member '/etc/passwd' has an absolute path; refusing the whole archive (nothing was extracted). "
     "Get the archive from its official source."),
    ([Member("\\evil", "file")],
     "t.tar: member '\\\\evil' has an absolute path; refusing the whole archive (nothing was extracted). "
     "Get the archive from its official source."),
    ([Member("C:", "file")],          # two characters: a drive on its own
     "t.tar: member 'C:' has an absolute path; refusing the whole archive (nothing was extracted). "
     "Get the archive from its official source."),
    ([Member("d:x", "file")],
     "t.tar: member 'd:x' has an absolute path; refusing the whole archive (nothing was extracted). "
     "Get the archive from its official source."),
    ([Member("a/../../x", "file")],
     f"t.tar: member 'a/../../x' contains '..' and would write outside the destination; {_TAIL}"),
    ([Member("a\\..\\b", "file")],
     f"t.tar: member 'a\\\\..\\\\b' contains '..' and would write outside the destination; {_TAIL}"),
    ([Member("./", "dir")], "t.tar: member './' has an empty path; refusing the whole archive."),
    ([Member("", "file")], "t.tar: member '' has an empty path; refusing the whole archive."),
    ([Member("x", "symlink", "/etc")], f"t.tar: symlink 'x' points to the absolute path '/etc'; {_TAIL}"),
    ([Member("x", "symlink", "")], f"t.tar: symlink 'x' points to the absolute path ''; {_TAIL}"),
    ([Member("x", "symlink", "C:\\w")], f"t.tar: symlink 'x' points to the absolute path 'C:\\\\w'; {_TAIL}"),
    ([Member("x", "symlink", "\\etc")], f"t.tar: symlink 'x' points to the absolute path '\\\\etc'; {_TAIL}"),
    ([Member("d/x", "symlink", "../..")], f"t.tar: symlink 'd/x' -> '../..' points outside the destination; {_TAIL}"),
    ([Member("x", "symlink", "sub"), Member("x/f", "file")],
     f"t.tar: member 'x/f' would be written through the symlink 'x' (-> 'sub'); {_TAIL}"),
    ([Member("d", "dir"), Member("d/x", "symlink", "e"), Member("d/x", "file")],
     f"t.tar: member 'd/x' would be written through the symlink 'd/x' (-> 'e'); {_TAIL}"),
    ([Member("f", "dir"), Member("h", "hardlink", "f")],
     "t.tar: hardlink 'h' -> 'f' does not point to an earlier regular file of the archive; refusing the whole "
     "archive."),
    ([Member("h", "hardlink", "f"), Member("f", "file")],
     "t.tar: hardlink 'h' -> 'f' does not point to an earlier regular file of the archive; refusing the whole "
     "archive."),
    ([Member("f", "file"), Member("h", "hardlink", "../f")],
     f"t.tar: member '../f' contains '..' and would write outside the destination; {_TAIL}"),
    ([Member("dev", "other")], f"t.tar: member 'dev' is a device, fifo or other special file; {_TAIL}"),
    ([Member("y", "symlink", "x/.."), Member("x", "symlink", ".")],
     "t.tar: symlink 'y' -> 'x/..' points outside the destination once the archive's other links are in place; "
     "refusing the whole archive."),
])
def test_check_members_refuses_with_the_whole_message(members, message):
    with pytest.raises(UnsafeArchiveError) as err:
        check_members(members, "t.tar")
    assert str(err.value) == message


def test_check_members_names_the_archive_it_was_given_and_archive_by_default():
    with pytest.raises(UnsafeArchiveError) as err:
        check_members([Member("dev", "other")])
    assert str(err.value) == f"archive: member 'dev' is a device, fifo or other special file; {_TAIL}"


# ----------------------------------------------------------------------------------------------- list_members
def test_list_members_reads_tar_kinds_and_link_targets(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [("d", "dir"), ("d/f", b"x"), ("d/l", "symlink", "f"),
                                           ("h", "hardlink", "d/f"), ("p", "fifo")])
    assert list_members(archive, "tar") == [Member("d", "dir", ""), Member("d/f", "file", ""),
                                            Member("d/l", "symlink", "f"), Member("h", "hardlink", "d/f"),
                                            Member("p", "other", "")]


def test_list_members_reads_zip_link_targets_replacing_undecodable_bytes(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("d/", "dir"), ("d/f", b"body"), ("d/l", "symlink", b"f"),
                                        ("d/odd", "symlink", b"t\xffx")])
    assert list_members(archive, "zip") == [Member("d/", "dir", ""), Member("d/f", "file", ""),
                                            Member("d/l", "symlink", "f"), Member("d/odd", "symlink", "t\ufffdx")]


def test_list_members_names_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError) as err:
        list_members(tmp_path / "a.rar", "rar")
    assert str(err.value) == f"Unknown archive kind 'rar' for {tmp_path / 'a.rar'}; use 'zip' or 'tar'."


# ----------------------------------------------------------------------------------------------- safe_extract
def _good_tar(tmp_path):
    return _tar(tmp_path / "good.tar.gz", [
        ("only/a/b", "dir"),                      # a folder whose parents are no members
        ("top", "dir"),
        ("top/f.txt", b"alpha\n" * 100),
        ("top/run.sh", b"#!/bin/sh\n", 0o4755),   # setuid and executable bits are not carried over
        ("top/l", "symlink", "f.txt"),
        ("top/d/up", "symlink", "../f.txt"),      # a link whose folder is no member
        ("top/h", "hardlink", "top/f.txt"),       # into a folder that exists already
        ("fresh/deep/h2", "hardlink", "top/f.txt"),   # into folders that do not exist yet
    ])


def _check_good_tree(dest: Path):
    assert _tree(dest) == {
        "fresh": "dir", "fresh/deep": "dir", "fresh/deep/h2": b"alpha\n" * 100,
        "only": "dir", "only/a": "dir", "only/a/b": "dir",
        "top": "dir", "top/d": "dir", "top/d/up": ("link", "../f.txt"), "top/f.txt": b"alpha\n" * 100,
        "top/h": b"alpha\n" * 100, "top/l": ("link", "f.txt"), "top/run.sh": b"#!/bin/sh\n"}
    assert (dest / "top" / "d" / "up").read_bytes() == b"alpha\n" * 100      # the link resolves inside
    f, h = (dest / "top" / "f.txt").stat(), (dest / "top" / "h").stat()
    assert f.st_ino != h.st_ino and f.st_nlink == 1 and h.st_nlink == 1     # hardlinks become copies
    assert stat.S_IMODE((dest / "top" / "run.sh").stat().st_mode) & 0o7111 == 0


def test_safe_extract_tar_into_an_existing_folder(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    names = safe_extract(_good_tar(tmp_path), "tar", dest)
    assert names == ["only/a/b", "top", "top/f.txt", "top/run.sh", "top/l", "top/d/up", "top/h", "fresh/deep/h2"]
    _check_good_tree(dest)


def test_safe_extract_creates_missing_parent_folders_of_the_destination(tmp_path):
    dest = tmp_path / "x" / "y" / "dest"
    safe_extract(_good_tar(tmp_path), "tar", dest)
    _check_good_tree(dest)


def test_safe_extract_zip_with_folders_links_and_files(tmp_path):
    archive = _zip(tmp_path / "good.zip", [("only/a/b/", "dir"), ("top/f.txt", b"beta" * 50),
                                           ("top/l", "symlink", b"f.txt"), ("top/d/up", "symlink", b"../f.txt")])
    dest = tmp_path / "dest"
    dest.mkdir()
    assert safe_extract(archive, "zip", dest) == ["only/a/b", "top/f.txt", "top/l", "top/d/up"]
    assert _tree(dest) == {"only": "dir", "only/a": "dir", "only/a/b": "dir", "top": "dir", "top/d": "dir",
                           "top/d/up": ("link", "../f.txt"), "top/f.txt": b"beta" * 50, "top/l": ("link", "f.txt")}


def test_safe_extract_merges_into_folders_already_there_and_replaces_files(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [("top/sub/new.txt", b"new"), ("top/old.txt", b"replaced"),
                                           ("top/was_dir", b"now a file")])
    dest = tmp_path / "dest"
    (dest / "top" / "sub").mkdir(parents=True)
    (dest / "top" / "sub" / "keep.txt").write_bytes(b"kept")
    (dest / "top" / "old.txt").write_bytes(b"old")
    (dest / "top" / "was_dir").mkdir()
    (dest / "top" / "was_dir" / "inner").write_bytes(b"gone")
    (dest / "other.txt").write_bytes(b"untouched")
    safe_extract(archive, "tar", dest)
    assert _tree(dest) == {"other.txt": b"untouched", "top": "dir", "top/old.txt": b"replaced", "top/sub": "dir",
                           "top/sub/keep.txt": b"kept", "top/sub/new.txt": b"new", "top/was_dir": b"now a file"}
    safe_extract(archive, "tar", dest)                     # a re-run lands on the same tree
    assert (dest / "top" / "sub" / "keep.txt").read_bytes() == b"kept"
    assert (dest / "top" / "sub" / "new.txt").read_bytes() == b"new"


def test_safe_extract_clears_a_stale_staging_folder_and_leaves_none(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [("f.txt", b"fresh")])
    dest = tmp_path / "dest"
    stale = dest / f".vitscope-extract-a.tar.gz-{os.getpid()}"
    stale.mkdir(parents=True)
    (stale / "junk.txt").write_bytes(b"from a killed run")
    assert safe_extract(archive, "tar", dest) == ["f.txt"]
    assert _tree(dest) == {"f.txt": b"fresh"}


@pytest.mark.parametrize("kind, entries, message", [
    ("tar", [("ok.txt", b"ok"), ("../evil.txt", b"x")],
     f"evil: member '../evil.txt' contains '..' and would write outside the destination; {_TAIL}"),
    ("tar", [("ok.txt", b"ok"), ("/abs.txt", b"x")],
     "evil: member '/abs.txt' has an absolute path; refusing the whole archive (nothing was extracted). "
     "Get the archive from its official source."),
    ("tar", [("ok.txt", b"ok"), ("l", "symlink", "../.."), ("l/evil.txt", b"x")],
     f"evil: symlink 'l' -> '../..' points outside the destination; {_TAIL}"),
    ("tar", [("ok.txt", b"ok"), ("h", "hardlink", "/etc/passwd")],
     "evil: member '/etc/passwd' has an absolute path; refusing the whole archive (nothing was extracted). "
     "Get the archive from its official source."),
    ("tar", [("ok.txt", b"ok"), ("p", "fifo")], f"evil: member 'p' is a device, fifo or other special file; {_TAIL}"),
    ("zip", [("ok.txt", b"ok"), ("l", "symlink", b"/etc")],
     f"evil: symlink 'l' points to the absolute path '/etc'; {_TAIL}"),
    ("zip", [("ok.txt", b"ok"), ("a/../../evil.txt", b"x")],
     f"evil: member 'a/../../evil.txt' contains '..' and would write outside the destination; {_TAIL}"),
])
def test_safe_extract_refuses_unsafe_archives_and_writes_nothing(tmp_path, kind, entries, message):
    archive = (_zip if kind == "zip" else _tar)(tmp_path / "evil", entries)
    dest = tmp_path / "a" / "dest"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, kind, dest)
    assert str(err.value) == message
    assert not (tmp_path / "a").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil"]


def test_a_failure_while_writing_leaves_the_destination_as_it_was(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [("x.txt", b"x"), ("a", b"file"), ("a", "dir")])   # a folder over a file
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "before.txt").write_bytes(b"before")
    with pytest.raises(FileExistsError):
        safe_extract(archive, "tar", dest)
    assert _tree(dest) == {"before.txt": b"before"}


def test_a_folder_member_listed_after_its_own_files_is_no_error(tmp_path):
    # tar writers may list a folder after files inside it (or twice): the folder then exists in staging already
    archive = _tar(tmp_path / "late.tar.gz", [("a/b.txt", b"x"), ("a", "dir"), ("a", "dir")])
    assert safe_extract(archive, "tar", tmp_path / "out") == ["a/b.txt", "a", "a"]
    assert (tmp_path / "out" / "a" / "b.txt").read_bytes() == b"x"

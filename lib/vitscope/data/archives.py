"""Safe extraction of downloaded zip and tar(.gz) archives.

An archive from the internet can aim outside the folder it is unpacked into: a member named ``../../x`` or
``/etc/x``, a symlink pointing out of the root, or a symlink followed by a member written *through* it. Python's
``zipfile`` and ``tarfile`` (without a filter) trust all of these. Here every member is checked before a single
byte is written (:func:`check_members`), the archive is unpacked into a staging folder inside the destination, and
only a complete, checked extraction is moved into place: a refused archive leaves nothing behind.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

#: How many symlinks a path may pass through while resolving a link target (like the kernel's ELOOP limit).
_MAX_LINK_HOPS = 40
_CHUNK = 1 << 20


class UnsafeArchiveError(ValueError):
    """An archive member would write outside the destination, or is of a kind we do not unpack."""


@dataclass(frozen=True)
class Member:
    """One archive entry as the checks see it: ``kind`` is ``file``, ``dir``, ``symlink``, ``hardlink`` or
    ``other``; ``link`` is the target of a link (``""`` otherwise)."""

    name: str
    kind: str
    link: str = ""


def _parts(name: str) -> list[str]:
    """Path components of a member name, with ``.`` and empty components dropped."""
    return [p for p in name.split("/") if p not in ("", ".")]


def _normalise(name: str, archive: str) -> str:
    """The member's relative POSIX path, or an error when it is absolute or climbs out with ``..``."""
    text = name.replace("\\", "/")    # Windows-made zips use backslashes; treat them as separators, never as data
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing the whole archive "
                                 "(nothing was extracted). Get the archive from its official source.")
    parts = _parts(text)
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..' and would write outside the "
                                 "destination; refusing the whole archive (nothing was extracted).")
    if not parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an empty path; refusing the whole archive.")
    return "/".join(parts)


def _resolve(parts: list[str], links: dict[str, str], hops: int = 0) -> list[str] | None:
    """Resolve a path inside the root the way the file system would, following the archive's own symlinks.

    Returns the resolved components, or ``None`` when the path climbs above the root or loops. Lexical
    normalisation alone is not enough: with ``x -> .``, ``x/sub/../..`` normalises to the root but resolves to
    its parent.
    """
    if hops > _MAX_LINK_HOPS:
        return None
    out: list[str] = []
    for i, part in enumerate(parts):
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        here = "/".join(out)
        if here in links:
            target = links[here]
            if target.startswith("/"):
                return None
            base = out[:-1]
            resolved = _resolve(base + target.replace("\\", "/").split("/"), links, hops + 1)
            if resolved is None:
                return None
            out = resolved
    return [p for p in out if p not in ("", ".")]


def check_members(members: list[Member], archive: str = "archive") -> list[Member]:
    """Check every member before anything is written; returns the members with normalised names.

    Refuses (raising :class:`UnsafeArchiveError`, naming the member): absolute paths, ``..`` components, symlinks
    whose target is absolute or resolves outside the root (following the archive's other links), hardlinks to
    anything but an earlier regular file of the archive, members written through a symlink of the archive, and
    devices / fifos.
    """
    checked: list[Member] = []
    links: dict[str, str] = {}
    files: set[str] = set()
    for m in members:
        name = _normalise(m.name, archive)
        parts = name.split("/")
        through = next(("/".join(parts[:i]) for i in range(1, len(parts) + 1) if "/".join(parts[:i]) in links), None)
        if through is not None:   # also a member replacing a link: opening it would write to the link's target
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} would be written through the symlink "
                                     f"{through!r} (-> {links[through]!r}); refusing the whole archive "
                                     "(nothing was extracted).")
        link = m.link
        if m.kind == "symlink":
            link = m.link.replace("\\", "/")
            if not link or link.startswith("/") or (len(link) > 1 and link[1] == ":"):
                raise UnsafeArchiveError(f"{archive}: symlink {m.name!r} points to the absolute path {m.link!r}; "
                                         "refusing the whole archive (nothing was extracted).")
            links[name] = link
            if _resolve(parts, links) is None:
                raise UnsafeArchiveError(f"{archive}: symlink {m.name!r} -> {m.link!r} points outside the "
                                         "destination; refusing the whole archive (nothing was extracted).")
        elif m.kind == "hardlink":
            link = _normalise(m.link, archive)
            if link not in files:
                raise UnsafeArchiveError(f"{archive}: hardlink {m.name!r} -> {m.link!r} does not point to an earlier "
                                         "regular file of the archive; refusing the whole archive.")
        elif m.kind == "file":
            files.add(name)
        elif m.kind != "dir":
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device, fifo or other special file; "
                                     "refusing the whole archive (nothing was extracted).")
        checked.append(Member(name, m.kind, link))
    # A link defined later can change where an earlier one resolves (y -> x/.., then x -> .): check them all again.
    for name, link in links.items():
        if _resolve(name.split("/"), links) is None:
            raise UnsafeArchiveError(f"{archive}: symlink {name!r} -> {link!r} points outside the destination once "
                                     "the archive's other links are in place; refusing the whole archive.")
    return checked


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "other"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if info.is_dir():
        return "dir"
    if stat.S_IFMT(mode) == 0 or stat.S_ISREG(mode):   # zips written on DOS/Windows or by writestr carry no file type
        return "file"
    return "other"


def list_members(archive: Path, kind: str) -> list[Member]:
    """The members of a ``zip`` or ``tar`` archive, as :class:`Member` records, in archive order."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            return [Member(i.filename, _zip_kind(i), zf.read(i).decode("utf-8", "replace")
                           if _zip_kind(i) == "symlink" else "") for i in zf.infolist()]
    if kind == "tar":
        with tarfile.open(archive, "r:*") as tf:
            return [Member(i.name, _tar_kind(i), i.linkname) for i in tf.getmembers()]
    raise ValueError(f"Unknown archive kind {kind!r} for {archive}; use 'zip' or 'tar'.")


def _write(target: Path, source) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)


def _dir_or_link(target: Path, m: "Member") -> bool:
    """Create a checked directory or symlink member at ``target``; False for any other kind (the caller writes it)."""
    if m.kind == "dir":
        target.mkdir(parents=True, exist_ok=True)
    elif m.kind == "symlink":
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(m.link, target)
    else:
        return False
    return True


def _unpack(archive: Path, kind: str, checked: list[Member], staging: Path) -> None:
    """Write the checked members under ``staging`` (names already normalised and verified)."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info, m in zip(zf.infolist(), checked):
                target = staging / m.name
                if not _dir_or_link(target, m):
                    with zf.open(info) as src:
                        _write(target, src)
        return
    # Stream mode reads a .tar.gz once from front to back (random access would re-decompress from the start).
    with tarfile.open(archive, "r|*") as tf:
        for info, m in zip(tf, checked):
            target = staging / m.name
            if _dir_or_link(target, m):
                continue
            if m.kind == "hardlink":     # a copy of an earlier file: a hard link would share its inode with it
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(staging / m.link, target, follow_symlinks=False)
            else:
                _write(target, tf.extractfile(info))


def _move_into(staging: Path, dest: Path) -> None:
    """Move each staged entry into ``dest``, merging into existing folders (a re-run replaces files)."""
    for entry in sorted(staging.iterdir()):
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink() and entry.is_dir() and not entry.is_symlink():
            _move_into(entry, target)
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def safe_extract(archive: Path, kind: str, dest: Path) -> list[str]:
    """Unpack ``archive`` (``"zip"`` or ``"tar"``) into ``dest``, refusing unsafe archives as a whole.

    All members are checked first (:func:`check_members`); they are then written into a staging folder inside
    ``dest`` and moved into place only when every member was written, so an interrupted or refused extraction
    leaves ``dest`` as it was. Returns the normalised member names.
    """
    archive, dest = Path(archive), Path(dest)
    checked = check_members(list_members(archive, kind), archive.name)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".vitscope-extract-{archive.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _unpack(archive, kind, checked, staging)
        _move_into(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [m.name for m in checked]

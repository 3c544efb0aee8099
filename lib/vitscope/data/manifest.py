"""Dataset manifests: ``data_manifests/*.yml`` describe where a benchmark comes from and which subset we use.

A manifest is data, not code: class list, selection rule, licence and source URLs. Loaders read it so that
the subset a notebook analyses is the one written down, for real data and for its synthetic twin alike.

A manifest may also say how to obtain the data (read by :mod:`vitscope.data.fetch`):

- ``downloads:`` a list of ``{file, url, sha256, bytes, extract, into, creates}``: the archive's name under
  ``<root>/downloads/``, its public URL, its SHA-256 (``null`` when the publisher gives none: the first fetch then
  records what it got), its size, ``zip`` / ``tar`` / ``none``, the folder of the root it unpacks into, and the
  paths it creates there (what ``verify`` checks);
- ``layout:`` further paths under the root that must exist;
- ``access:`` instructions for data behind an account (ImageNet), which ``fetch`` prints instead of downloading.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from ..hints import did_you_mean

#: Where manifests live in a source checkout (``<repo>/data_manifests``).
MANIFEST_DIR = Path(__file__).resolve().parents[3] / "data_manifests"


ARCHIVE_KINDS = ("zip", "tar", "none")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DOWNLOAD_KEYS = ("file", "url", "sha256", "bytes", "extract", "into", "creates", "note")


@dataclass(frozen=True)
class Download:
    """One file a dataset is fetched from.

    Attributes:
        file: its name under ``<root>/downloads/`` (a bare file name, no folders).
        url: where it is published (``http`` or ``https``).
        sha256: the expected SHA-256 (lower-case hex), or ``None`` when the publisher gives none.
        bytes: the expected size, or ``None`` when unknown.
        extract: ``"zip"``, ``"tar"`` (also ``.tar.gz`` / ``.tgz``) or ``"none"`` (used as downloaded).
        into: the folder of the root it unpacks (or is copied) into, relative (``"."`` = the root).
        creates: paths relative to the root that exist once it is unpacked.
    """

    file: str
    url: str
    sha256: str | None
    bytes: int | None
    extract: str
    into: str = "."
    creates: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchSpec:
    """What ``vitscope data fetch`` / ``verify`` read from any manifest (whatever its format)."""

    name: str
    title: str
    format: str | None
    licence: str
    downloads: tuple[Download, ...]
    layout: tuple[str, ...]
    access: str | None
    path: Path


@dataclass(frozen=True)
class Manifest:
    """A parsed dataset manifest.

    Attributes:
        name: short key, e.g. ``"imagenet50"``.
        format: on-disk layout the loader expects (``"imagefolder"``: ``<root>/<split>/<wnid>/<file>``).
        split: sub-folder of the root holding the class folders.
        classes: ``(wnid, human name)`` pairs, in label order (label ``i`` is ``classes[i]``).
        per_class: the selection rule's N (first N files per class, sorted lexically).
        licence, source: provenance, shown on the book pages.
    """

    name: str
    title: str
    format: str
    split: str
    classes: tuple[tuple[str, str], ...]
    per_class: int
    licence: str
    source: dict = field(default_factory=dict, compare=False, hash=False)
    path: Path | None = field(default=None, compare=False, hash=False)
    downloads: tuple[Download, ...] = field(default=(), compare=False, hash=False)

    @property
    def wnids(self) -> list[str]:
        return [w for w, _ in self.classes]

    @property
    def class_names(self) -> list[str]:
        return [n for _, n in self.classes]


def available_manifests(directory: Path = MANIFEST_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yml"))


def _manifest_path(name_or_path: str | Path, directory: Path) -> Path:
    path = Path(name_or_path)
    if path.suffix not in (".yml", ".yaml"):
        path = Path(directory) / f"{name_or_path}.yml"
    if not path.is_file():
        known = available_manifests(directory)
        hint = did_you_mean(name_or_path, known)
        raise FileNotFoundError(f"No dataset manifest {str(name_or_path)!r} (looked for {path}). "
                                f"Known manifests: {', '.join(known) or 'none'}.{hint}")
    return path


def _relative_inside(value, where: str, path: Path) -> str:
    """A manifest path must stay under the dataset root: a manifest is data, and data must not aim elsewhere."""
    text = str(value)
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or ".." in pure.parts or "\\" in text:
        raise ValueError(f"Manifest {path}: {where} = {text!r} must be a relative path inside the dataset root "
                         "(no leading '/', no '..', forward slashes).")
    return text


def _parse_downloads(raw: dict, path: Path) -> tuple[Download, ...]:
    entries = raw.get("downloads") or []
    if not isinstance(entries, list):
        raise TypeError(f"Manifest {path}: 'downloads' must be a list of {{file, url, sha256, ...}} entries.")
    out = []
    for i, d in enumerate(entries):
        where = f"downloads[{i}]"
        missing = [k for k in ("file", "url", "extract") if k not in (d or {})]
        if missing:
            raise ValueError(f"Manifest {path}: {where} lacks {missing} (each needs file, url, sha256, extract).")
        unknown = sorted(set(d) - set(_DOWNLOAD_KEYS))
        if unknown:
            raise ValueError(f"Manifest {path}: {where} has unknown key(s) {unknown} (known: {_DOWNLOAD_KEYS})."
                             f"{did_you_mean(unknown[0], _DOWNLOAD_KEYS)}")
        file = str(d["file"])
        if "/" in file or "\\" in file or file in (".", "..") or file.startswith("."):
            raise ValueError(f"Manifest {path}: {where}.file = {file!r} must be a plain file name.")
        if not str(d["url"]).startswith(("http://", "https://")):
            raise ValueError(f"Manifest {path}: {where}.url = {d['url']!r} must be an http(s) URL.")
        sha = d.get("sha256")
        if sha is not None and not _SHA256.match(str(sha)):
            raise ValueError(f"Manifest {path}: {where}.sha256 = {sha!r} is not 64 lower-case hex digits "
                             "(write null when the publisher gives no checksum).")
        if d["extract"] not in ARCHIVE_KINDS:
            raise ValueError(f"Manifest {path}: {where}.extract = {d['extract']!r}; use one of {ARCHIVE_KINDS}.")
        creates = d.get("creates") or []
        creates = [creates] if isinstance(creates, str) else list(creates)
        out.append(Download(
            file=file, url=str(d["url"]), sha256=None if sha is None else str(sha),
            bytes=None if d.get("bytes") is None else int(d["bytes"]), extract=d["extract"],
            into=_relative_inside(d.get("into", "."), f"{where}.into", path),
            creates=tuple(_relative_inside(c, f"{where}.creates", path) for c in creates)))
    return tuple(out)


def load_fetch_spec(name_or_path: str | Path, directory: Path = MANIFEST_DIR) -> FetchSpec:
    """The ``downloads`` / ``layout`` / ``access`` sections of any manifest, by name or path."""
    path = _manifest_path(name_or_path, directory)
    raw = yaml.safe_load(path.read_text()) or {}
    layout = raw.get("layout") or []
    return FetchSpec(
        name=raw.get("name", path.stem), title=raw.get("title", raw.get("name", path.stem)),
        format=raw.get("format"), licence=raw.get("licence", "unknown"), downloads=_parse_downloads(raw, path),
        layout=tuple(_relative_inside(p, "layout", path) for p in layout),
        access=(raw.get("access") or None), path=path)


def load_manifest(name_or_path: str | Path, directory: Path = MANIFEST_DIR) -> Manifest:
    """Read a manifest by name (``"imagenet50"``) or by path to a ``.yml`` file."""
    path = _manifest_path(name_or_path, directory)
    raw = yaml.safe_load(path.read_text())
    missing = [k for k in ("name", "format", "split", "selection", "classes") if k not in raw]
    if missing:
        raise ValueError(f"Manifest {path} lacks the field(s) {missing}.")
    if raw["selection"].get("rule") != "first_n_sorted":
        raise ValueError(f"Manifest {path}: unsupported selection rule {raw['selection'].get('rule')!r} "
                         "(supported: 'first_n_sorted').")
    return Manifest(
        name=raw["name"], title=raw.get("title", raw["name"]), format=raw["format"], split=raw["split"],
        classes=tuple((c["wnid"], c["name"]) for c in raw["classes"]),
        per_class=int(raw["selection"]["per_class"]), licence=raw.get("licence", "unknown"),
        source=raw.get("source") or {}, path=path, downloads=_parse_downloads(raw, path),
    )

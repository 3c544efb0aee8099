"""Dataset manifests: ``data_manifests/*.yml`` describe where a benchmark comes from and which subset we use.

A manifest is data, not code: class list, selection rule, licence and source URLs. Loaders read it so that
the subset a notebook analyses is the one written down, for real data and for its synthetic twin alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..hints import did_you_mean

#: Where manifests live in a source checkout (``<repo>/data_manifests``).
MANIFEST_DIR = Path(__file__).resolve().parents[3] / "data_manifests"


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

    @property
    def wnids(self) -> list[str]:
        return [w for w, _ in self.classes]

    @property
    def class_names(self) -> list[str]:
        return [n for _, n in self.classes]


def available_manifests(directory: Path = MANIFEST_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yml"))


def load_manifest(name_or_path: str | Path, directory: Path = MANIFEST_DIR) -> Manifest:
    """Read a manifest by name (``"imagenet50"``) or by path to a ``.yml`` file."""
    path = Path(name_or_path)
    if path.suffix not in (".yml", ".yaml"):
        path = Path(directory) / f"{name_or_path}.yml"
    if not path.is_file():
        known = available_manifests(directory)
        hint = did_you_mean(name_or_path, known)
        raise FileNotFoundError(f"No dataset manifest {str(name_or_path)!r} (looked for {path}). "
                                f"Known manifests: {', '.join(known) or 'none'}.{hint}")
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
        source=raw.get("source") or {}, path=path,
    )

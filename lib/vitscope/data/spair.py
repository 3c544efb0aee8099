"""SPair-71k image pairs with keypoints, read from the real layout (Min et al. 2019):

``SPair-71k/JPEGImages/<category>/<image>.jpg``, ``SPair-71k/PairAnnotation/{trn,val,test}/<pair>.json`` and
``SPair-71k/Layout/large/{trn,val,test}.txt`` (one pair name per line, ``<index>-<src stem>-<trg stem>:<category>``,
also each annotation file's name). A pair's JSON holds ``src_imname``, ``trg_imname``, ``category``, ``src_kps`` and
``trg_kps`` (``[[x, y], ...]``, the pair's corresponding keypoints, in pixels), ``src_bndbox`` / ``trg_bndbox``
(``[x1, y1, x2, y2]``) and ``src_imsize`` / ``trg_imsize`` (``[w, h, channels]``). The same code reads the synthetic
twin (:mod:`vitscope.data.twins.spair`).

Selection (Teaching Matters §6.2: 20 pairs per category, seed 42): the split's pairs are grouped by category; a
category with more than ``per_category`` pairs keeps ``per_category`` of them drawn without replacement by
``numpy.random.default_rng([seed, crc32(category)])`` (so one category's draw does not depend on the others), in
name order. The Teaching Matters code drew with replacement from one global stream in directory-listing order, which
no other machine can reproduce exactly.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("trn", "val", "test")
#: The fields of a pair annotation this loader reads.
PAIR_FIELDS = ("src_imname", "trg_imname", "category", "src_kps", "trg_kps", "src_bndbox", "trg_bndbox",
               "src_imsize", "trg_imsize")
FETCH_HINT = "vitscope data fetch spair71k --root {root}"


@dataclass(frozen=True)
class SpairPair:
    """One annotated pair: images, ``[K, 2]`` corresponding keypoints ``(x, y)``, boxes and sizes ``(w, h)``."""

    name: str
    category: str
    src_image: Path
    trg_image: Path
    src_kps: np.ndarray
    trg_kps: np.ndarray
    src_bbox: tuple[float, float, float, float]
    trg_bbox: tuple[float, float, float, float]
    src_size: tuple[int, int]
    trg_size: tuple[int, int]


def spair_dir(root) -> Path:
    """The ``SPair-71k`` folder: ``root`` itself or ``root/SPair-71k``; an error names what is missing and the fix."""
    root = Path(root).expanduser()
    for candidate in (root / "SPair-71k", root):
        if (candidate / "PairAnnotation").is_dir() and (candidate / "JPEGImages").is_dir():
            return candidate
    missing = "does not exist" if not root.is_dir() else (
        f"holds no SPair-71k/PairAnnotation/ and JPEGImages/ (it holds "
        f"{sorted(p.name for p in root.iterdir())[:6] or 'nothing'})")
    raise FileNotFoundError(f"SPair-71k root {root} {missing}. Expected <root>/SPair-71k/JPEGImages/<category>/ and "
                            f"<root>/SPair-71k/PairAnnotation/<split>/; run `{FETCH_HINT.format(root=root)}`.")


def split_pair_names(root, split: str = "test") -> list[str]:
    """Pair names of ``split``: ``Layout/large/<split>.txt`` if present, else the annotation files' stems."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; SPair-71k's splits are {SPLITS}")
    base = spair_dir(root)
    layout = base / "Layout" / "large" / f"{split}.txt"
    if layout.is_file():
        names = [line.strip() for line in layout.read_text().splitlines() if line.strip()]
    else:
        folder = base / "PairAnnotation" / split
        if not folder.is_dir():
            raise FileNotFoundError(f"SPair-71k at {base} has no {layout.relative_to(base)} nor PairAnnotation/"
                                    f"{split}/; re-fetch it (`{FETCH_HINT.format(root=base.parent)}`).")
        names = sorted(p.stem for p in folder.glob("*.json"))
    if not names:
        raise FileNotFoundError(f"SPair-71k at {base} lists no pairs for split {split!r}")
    return names


def category_of(name: str) -> str:
    """The category a pair name ends in (``...:aeroplane``); ``''`` when the name carries none."""
    return name.rsplit(":", 1)[1] if ":" in name else ""


def _box(value, field: str, path: Path) -> tuple[float, ...]:
    box = tuple(float(v) for v in value)
    if len(box) != 4 or box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"SPair pair {path}: {field} = {value!r} is not [x1, y1, x2, y2] with x2 >= x1, y2 >= y1")
    return box


def _points(value, field: str, path: Path) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise ValueError(f"SPair pair {path}: {field} must be a non-empty list of [x, y]; got shape {arr.shape}")
    return arr


def read_pair(root, split: str, name: str) -> SpairPair:
    """One pair annotation, checked: every field of :data:`PAIR_FIELDS`, as many source as target keypoints, and
    both images on disk."""
    base = spair_dir(root)
    path = base / "PairAnnotation" / split / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"SPair pair annotation {path} is missing (listed in Layout/large/{split}.txt); "
                                f"re-fetch the data set (`{FETCH_HINT.format(root=base.parent)}`).")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"SPair pair annotation {path} is not valid JSON ({err})") from err
    missing = [f for f in PAIR_FIELDS if f not in data]
    if missing:
        raise ValueError(f"SPair pair annotation {path} lacks the field(s) {missing}; expected {PAIR_FIELDS}")
    cat = data["category"]
    if category_of(name) not in ("", cat):
        raise ValueError(f"SPair pair {path}: its name says category {category_of(name)!r}, its JSON {cat!r}")
    src, trg = _points(data["src_kps"], "src_kps", path), _points(data["trg_kps"], "trg_kps", path)
    if src.shape != trg.shape:
        raise ValueError(f"SPair pair {path}: {len(src)} source but {len(trg)} target keypoints; they must "
                         "correspond one to one")
    images = {k: base / "JPEGImages" / cat / data[f"{k}_imname"] for k in ("src", "trg")}
    for k, p in images.items():
        if not p.is_file():
            raise FileNotFoundError(f"SPair image {p} ({k}_imname of {path.name}) is missing; re-fetch the data set "
                                    f"(`{FETCH_HINT.format(root=base.parent)}`).")
    sizes = {k: tuple(int(v) for v in data[f"{k}_imsize"][:2]) for k in ("src", "trg")}
    return SpairPair(name, cat, images["src"], images["trg"], src, trg, _box(data["src_bndbox"], "src_bndbox", path),
                     _box(data["trg_bndbox"], "trg_bndbox", path), sizes["src"], sizes["trg"])


def sample_names(names: list[str], per_category: int | None, seed: int, categories=None) -> dict[str, list[str]]:
    """``{category: pair names}`` (categories sorted): at most ``per_category`` per category, drawn as the module
    docstring says (``None``: all). ``names`` must carry their category (``...:<category>``)."""
    groups: dict[str, list[str]] = {}
    for n in sorted(names):
        cat = category_of(n)
        if not cat:
            raise ValueError(f"pair name {n!r} does not end in ':<category>'; SPair-71k's Layout files name pairs "
                             "'<index>-<source>-<target>:<category>'")
        groups.setdefault(cat, []).append(n)
    if categories is not None:
        unknown = sorted(set(categories) - set(groups))
        if unknown:
            raise ValueError(f"categories {unknown} have no pairs in this split; it has {sorted(groups)}")
        groups = {c: groups[c] for c in categories}
    out = {}
    for cat in sorted(groups):
        members = groups[cat]
        if per_category is not None and len(members) > per_category:
            rng = np.random.default_rng([seed, zlib.crc32(cat.encode())])
            keep = np.sort(rng.choice(len(members), size=per_category, replace=False))
            members = [members[i] for i in keep]
        out[cat] = members
    return out


def load_pairs(root, split: str = "test", per_category: int | None = 20, seed: int = 42,
               categories=None) -> list[SpairPair]:
    """The selected pairs of ``split`` (see the module docstring), category by category in sorted order."""
    chosen = sample_names(split_pair_names(root, split), per_category, seed, categories)
    return [read_pair(root, split, n) for names in chosen.values() for n in names]


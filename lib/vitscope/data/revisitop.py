"""Revisited Oxford and Paris (revisitop; Radenović et al., CVPR 2018): ground truth and images, as published.

Layout (the revisitop toolkit's, and what ``vitscope data fetch revisitop --root <root>`` writes)::

    <root>/roxford5k/gnd_roxford5k.pkl     <root>/roxford5k/jpg/<name>.jpg
    <root>/rparis6k/gnd_rparis6k.pkl       <root>/rparis6k/jpg/<name>.jpg  (or the archives' nesting,
                                                                              jpg_nested/paris/<landmark>/<name>.jpg)

``gnd_<name>.pkl`` is a dict: ``imlist`` (database image names), ``qimlist`` (query image names) and ``gnd``, one
dict per query with ``bbx`` (x1, y1, x2, y2: the query's box in its image) and ``easy`` / ``hard`` / ``junk`` (lists
of database indices). The file comes from the dataset's site, but a pickle can run code when it is loaded: it is read
with an Unpickler that builds only plain containers, numbers, strings and NumPy arrays, and refuses anything else.

Two datasets per benchmark: :func:`revisitop_database` (the ranked images) and :func:`revisitop_queries` (cropped to
their box by default, the official protocol; ``crop=False`` is Teaching Matters' setting). Both are ``Dataset``s of
``(image, 0)`` with ``samples`` / ``root`` / ``manifest.name``, the interface :func:`vitscope.extract.extract` reads.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .imagefolder import read_rgb

#: The benchmarks the revisitop toolkit publishes (a synthetic twin may use another name).
REVISITOP_NAMES = ("roxford5k", "rparis6k")
FETCH_HINT = "vitscope data fetch revisitop --root {root}"

#: Globals a revisitop ground-truth pickle may name: the builtin container and number types, and what NumPy needs to
#: rebuild an array (NumPy 1.x writes ``numpy.core``, 2.x ``numpy._core``). Everything else is refused.
_BUILTIN_TYPES = ("dict", "list", "tuple", "str", "int", "float", "bool", "bytes", "set", "frozenset")
_NUMPY_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                  ("numpy.core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer")}


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that names a global outside the allow-list (it would run or import code)."""


class _GroundTruthUnpickler(pickle.Unpickler):
    """Builds only builtin containers, numbers and strings, and NumPy arrays; any other global is refused."""

    def find_class(self, module, name):
        if module in ("builtins", "__builtin__") and name in _BUILTIN_TYPES:
            import builtins
            return getattr(builtins, name)
        if (module.replace("numpy._core", "numpy.core"), name) in _NUMPY_GLOBALS:
            return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
        raise RefusedPickle(f"refused global {module}.{name}: a revisitop ground-truth file holds only "
                                     "dicts, lists, numbers, strings and NumPy arrays")


def safe_load_pickle(data: bytes, where: str = "pickle"):
    """Unpickle ``data`` allowing only builtin containers/numbers/strings and NumPy arrays (see the module doc)."""
    try:
        return _GroundTruthUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedPickle as err:
        raise RefusedPickle(f"{where}: {err}. It is not a revisitop ground-truth file; do not load it with plain "
                            "pickle either.") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        raise ValueError(f"{where} is not a readable pickle ({type(err).__name__}: {err}); re-download it") from err


@dataclass(frozen=True)
class GroundTruth:
    """A parsed ``gnd_<name>.pkl``: names, per-query boxes and easy / hard / junk database indices."""

    name: str
    path: Path
    imlist: tuple[str, ...]
    qimlist: tuple[str, ...]
    gnd: tuple[dict, ...]         # {"bbx": (x1, y1, x2, y2) or None, "easy"/"hard"/"junk": tuple[int, ...]}

    def digest(self) -> str:
        """Short SHA-256 of the query boxes (what changes a cropped query's pixels): part of cache keys."""
        return hashlib.sha256(json.dumps([g["bbx"] for g in self.gnd]).encode()).hexdigest()[:16]


def _index_list(value, n: int, where: str) -> tuple[int, ...]:
    arr = np.asarray(value).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where} must list integer database indices; got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{where} holds indices outside [0, {n}) (the number of database images)")
    return tuple(int(i) for i in arr)


def parse_ground_truth(raw, path: Path, name: str) -> GroundTruth:
    """Check and normalise an unpickled ground-truth dict (errors name the file and the field)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict with imlist, qimlist and gnd; got {type(raw).__name__}")
    missing = [k for k in ("imlist", "qimlist", "gnd") if k not in raw]
    if missing:
        raise ValueError(f"{path} lacks {missing}: not a revisitop ground-truth file (keys: {sorted(raw)[:6]})")
    imlist, qimlist = tuple(str(x) for x in raw["imlist"]), tuple(str(x) for x in raw["qimlist"])
    if len(raw["gnd"]) != len(qimlist):
        raise ValueError(f"{path}: gnd has {len(raw['gnd'])} entries for {len(qimlist)} queries (qimlist)")
    gnd = []
    for q, entry in enumerate(raw["gnd"]):
        where = f"{path}: gnd[{q}]"
        if not isinstance(entry, dict) or any(k not in entry for k in ("easy", "hard", "junk")):
            raise ValueError(f"{where} must be a dict with easy, hard and junk index lists")
        bbx = entry.get("bbx")
        if bbx is not None:
            bbx = tuple(float(v) for v in np.asarray(bbx, dtype=np.float64).reshape(-1))
            if len(bbx) != 4 or not (bbx[0] < bbx[2] and bbx[1] < bbx[3]):
                raise ValueError(f"{where}['bbx'] = {bbx} is not a box (x1, y1, x2, y2) with x1 < x2, y1 < y2")
        gnd.append({"bbx": bbx, **{k: _index_list(entry[k], len(imlist), f"{where}[{k!r}]")
                                   for k in ("easy", "hard", "junk")}})
    return GroundTruth(name, path, imlist, qimlist, tuple(gnd))


def dataset_dir(root, name: str) -> Path:
    """``<root>/<name>`` (or ``root`` itself when it already holds ``gnd_<name>.pkl``), checked to exist."""
    root = Path(root).expanduser()
    for candidate in (root / name, root):
        if (candidate / f"gnd_{name}.pkl").is_file():
            return candidate
    hint = FETCH_HINT.format(root=root)
    if not root.is_dir():
        raise FileNotFoundError(f"revisitop root {root} does not exist. Expected {root}/{name}/gnd_{name}.pkl and "
                                f"{root}/{name}/jpg/; fetch it with `{hint}`.")
    found = sorted(p.name for p in root.iterdir())[:6]
    raise FileNotFoundError(f"No {name}/gnd_{name}.pkl under {root} (it holds {found or 'nothing'}). Point the root "
                            f"at the folder that contains '{name}/', or fetch the data with `{hint}`.")


def load_ground_truth(root, name: str) -> GroundTruth:
    """Read and check ``<root>/<name>/gnd_<name>.pkl`` with the restricted Unpickler."""
    path = dataset_dir(root, name) / f"gnd_{name}.pkl"
    return parse_ground_truth(safe_load_pickle(path.read_bytes(), str(path)), path, name)


def _image_paths(folder: Path, names, root) -> list[Path]:
    """``jpg/<name>.jpg`` for each name, else the Paris archives' ``jpg_nested/paris/<landmark>/<name>.jpg``."""
    flat = [folder / "jpg" / f"{n}.jpg" for n in names]
    missing = [i for i, p in enumerate(flat) if not p.is_file()]
    if missing and (folder / "jpg_nested").is_dir():
        nested = {p.stem: p for p in (folder / "jpg_nested").glob("*/*/*.jpg")}
        for i in missing:
            flat[i] = nested.get(names[i], flat[i])
        missing = [i for i in missing if not flat[i].is_file()]
    if missing:
        first = ", ".join(names[i] for i in missing[:3])
        raise FileNotFoundError(f"{len(missing)} of {len(names)} images listed in {folder}/gnd_{folder.name}.pkl are "
                                f"missing under {folder}/jpg/ (e.g. {first}). Fetch them with "
                                f"`{FETCH_HINT.format(root=root)}`.")
    return flat


@dataclass(frozen=True)
class Part:
    """What names a revisitop image set in cache keys (:func:`vitscope.extract.dataset_identity` reads ``name``)."""

    name: str
    title: str


class RevisitopImages(Dataset):
    """Images of one revisitop benchmark, in ground-truth order; items ``(image, 0)`` (no class labels).

    ``boxes``: per image ``(x1, y1, x2, y2)`` to crop to before ``transform`` (queries), or ``None``.
    """

    def __init__(self, folder: Path, files: list[Path], part: Part, transform: Callable | None = None,
                 boxes: list | None = None):
        self.root = folder
        self.samples = [(p, 0) for p in files]
        self.manifest = part
        self.per_class = None
        self.classes = ()
        self.transform = transform
        self.boxes = boxes

    @property
    def labels(self) -> torch.Tensor:
        return torch.zeros(len(self.samples), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image = read_rgb(self.samples[index][0])
        if self.boxes is not None:
            image = image.crop(self.boxes[index])       # PIL rounds the float box, as revisitop's loaders do
        return (self.transform(image) if self.transform else image), 0


def revisitop_database(root, name: str, transform: Callable | None = None,
                       ground_truth: GroundTruth | None = None) -> RevisitopImages:
    """The database images of benchmark ``name`` (``imlist`` order: index i is the gnd's index i)."""
    gt = ground_truth or load_ground_truth(root, name)
    folder = gt.path.parent
    return RevisitopImages(folder, _image_paths(folder, gt.imlist, root),
                           Part(f"revisitop/{name}/database", f"{name} database"), transform)


def revisitop_queries(root, name: str, transform: Callable | None = None, crop: bool = True,
                      ground_truth: GroundTruth | None = None) -> RevisitopImages:
    """The query images of benchmark ``name`` (``qimlist`` order), cropped to their ``bbx`` when ``crop``."""
    gt = ground_truth or load_ground_truth(root, name)
    folder = gt.path.parent
    boxes = None
    if crop:
        lacking = [q for q, g in enumerate(gt.gnd) if g["bbx"] is None]
        if lacking:
            raise ValueError(f"{gt.path}: queries {lacking[:5]} have no bbx; pass crop=False (crop_queries: false)")
        boxes = [g["bbx"] for g in gt.gnd]
    part = Part(f"revisitop/{name}/queries" + (f"-bbx-{gt.digest()}" if crop else ""),
                f"{name} queries" + (" (cropped to their box)" if crop else " (whole images)"))
    return RevisitopImages(folder, _image_paths(folder, gt.qimlist, root), part, transform, boxes)

"""COCO instances in their real format (``annotations/instances_<split>.json`` + ``<split>/*.jpg``), via pycocotools.

Used by Teaching Matters 4.4 (attention IoU with object masks: each image's union of instance masks) and open to
any page that needs per-instance masks and category ids. The synthetic twin
(:func:`vitscope.data.twins.coco.write_coco_twin`) is written in this same layout, so the demo runs this loader.

Selection: images sorted by file name; with ``require_objects`` (default) images without any annotation (48 of
COCO val2017's 5000) are skipped, since an object mask is what every consumer scores against; ``limit`` keeps the
first ``limit`` of the rest. Crowd annotations (``iscrowd=1``) belong to the union mask: they cover object pixels.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .imagefolder import read_rgb

FETCH_HINT = "vitscope data fetch coco_val2017 --root {root}"
_REQUIRED = ("images", "annotations", "categories")


@dataclass(frozen=True)
class CocoSource:
    """What identifies the data in cache keys (the extraction reads ``.name``)."""

    name: str
    title: str
    annotations: str     # sha256 prefix of the annotation file: masks change the results


def _missing(what: str, root: Path, fetch: str) -> FileNotFoundError:
    return FileNotFoundError(f"COCO root {root}: {what}. Expected <root>/annotations/instances_<split>.json and "
                             f"<root>/<split>/*.jpg; get them with `{fetch.format(root=root)}` (or point the "
                             "profile's root at a folder in that layout).")


def _load_coco(path: Path):
    """pycocotools' COCO index of ``path``, without its progress prints (pages show no stray output)."""
    from pycocotools.coco import COCO

    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"COCO annotation file {path} is not valid JSON ({err}); re-download it") from err
    lacking = [k for k in _REQUIRED if not isinstance(data, dict) or k not in data]
    if lacking:
        raise ValueError(f"COCO annotation file {path} lacks {lacking}; an instances_*.json holds 'images', "
                         "'annotations' and 'categories'")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoInstances(Dataset):
    """COCO-format instance annotations with their images.

    Args:
        root: folder holding ``annotations/`` and ``<split>/``.
        split: ``"val2017"`` (the file names follow it: ``annotations/instances_<split>.json``).
        transform: callable on the RGB ``PIL.Image`` (e.g. :func:`vitscope.data.eval_transform`).
        mask_transform: callable on the union mask as a ``PIL.Image`` (mode ``"L"``, 255 = object), e.g.
            :func:`mask_transform`; ``None`` returns a bool tensor [H, W] at the image's own size.
        limit: keep the first ``limit`` selected images (sorted by file name); ``None`` keeps all.
        require_objects: skip images without annotations.
        annotations, images: override the two paths relative to ``root`` (other COCO-style datasets).
        name: the data's name in cache keys and messages.
        fetch: the command that gets the data, for error messages (``{root}`` is filled in).

    Items are ``(image, label, {"object_mask": mask})``; ``label`` is the contiguous index (in ``classes``) of the
    category of the image's largest instance. ``samples`` lists ``(path, label)``; :meth:`instances` gives the
    per-instance masks and category ids.
    """

    def __init__(self, root, split: str = "val2017", transform: Callable | None = None,
                 mask_transform: Callable | None = None, *, limit: int | None = None, require_objects: bool = True,
                 annotations: str | None = None, images: str | None = None, name: str = "coco_val2017",
                 fetch: str = FETCH_HINT):
        self.root = Path(root).expanduser()
        ann = self.root / (annotations or f"annotations/instances_{split}.json")
        self.image_dir = self.root / (images or split)
        if not self.root.is_dir():
            raise _missing("the folder does not exist", self.root, fetch)
        if not ann.is_file():
            raise _missing(f"no annotation file {ann.relative_to(self.root)}", self.root, fetch)
        if not self.image_dir.is_dir():
            raise _missing(f"no image folder {self.image_dir.relative_to(self.root)}/", self.root, fetch)
        self.coco = _load_coco(ann)
        self.manifest = CocoSource(name, f"COCO instances ({split})", hashlib.sha256(ann.read_bytes()).hexdigest()[:16])
        self.per_class = None
        cats = sorted(self.coco.cats.values(), key=lambda c: c["id"])
        self.classes = [(c["id"], c["name"]) for c in cats]
        self._cat_index = {c["id"]: i for i, c in enumerate(cats)}
        self.transform, self.mask_transform = transform, mask_transform
        self.image_ids = self._select(limit, require_objects)
        self.samples = [(self.image_dir / self.coco.imgs[i]["file_name"], self._label(i)) for i in self.image_ids]
        absent = [p.name for p, _ in self.samples if not p.is_file()]
        if absent:
            raise _missing(f"{len(absent)} image file(s) the annotations list are absent from "
                           f"{self.image_dir.name}/ (e.g. {', '.join(absent[:3])})", self.root, fetch)

    def _select(self, limit, require_objects) -> list[int]:
        ids = sorted(self.coco.imgs, key=lambda i: self.coco.imgs[i]["file_name"])
        if require_objects:
            ids = [i for i in ids if self.coco.getAnnIds(imgIds=[i])]
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= len(ids):
                raise ValueError(f"limit={limit!r}: choose an int in [1, {len(ids)}] (the selected images under "
                                 f"{self.root})")
            ids = ids[:limit]
        if not ids:
            raise ValueError(f"COCO root {self.root}: no image with annotations to select")
        return ids

    def _anns(self, image_id: int) -> list[dict]:
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))

    def _label(self, image_id: int) -> int:
        anns = self._anns(image_id)
        if not anns:
            return -1
        largest = max(anns, key=lambda a: (a.get("area", 0), -a["id"]))
        return self._cat_index[largest["category_id"]]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples])

    def __len__(self) -> int:
        return len(self.samples)

    def instances(self, index: int) -> list[dict]:
        """Per instance of image ``index``: ``{"mask": bool [H, W], "category_id", "label", "iscrowd", "bbox"}``
        (``label``: the category's index in ``classes``; ``bbox``: COCO's ``[x, y, w, h]``)."""
        return [{"mask": self.coco.annToMask(a).astype(bool), "category_id": a["category_id"],
                 "label": self._cat_index[a["category_id"]], "iscrowd": int(a.get("iscrowd", 0)),
                 "bbox": list(a["bbox"])} for a in self._anns(self.image_ids[index])]

    def object_mask(self, index: int) -> np.ndarray:
        """The union of every instance mask of image ``index``: bool [H, W]."""
        info = self.coco.imgs[self.image_ids[index]]
        mask = np.zeros((info["height"], info["width"]), dtype=bool)
        for a in self._anns(self.image_ids[index]):
            mask |= self.coco.annToMask(a).astype(bool)
        return mask

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image, mask = read_rgb(path), self.object_mask(index)
        if mask.shape != (image.height, image.width):
            raise ValueError(f"{path}: the image is {image.width}x{image.height} but its annotations say "
                             f"{mask.shape[1]}x{mask.shape[0]}; the annotation file does not match the images")
        if self.mask_transform is not None:
            mask = self.mask_transform(Image.fromarray(mask.astype(np.uint8) * 255))
        else:
            mask = torch.from_numpy(mask)
        return (self.transform(image) if self.transform else image), label, {"object_mask": mask}


def mask_transform(preprocess) -> Callable:
    """The geometry of :func:`vitscope.data.eval_transform` (Resize of the short side, CenterCrop) for a mask, with
    nearest-neighbour resampling: PIL mask -> bool tensor [crop, crop], aligned pixel for pixel with the image."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(preprocess.resize, interpolation=T.InterpolationMode.NEAREST),
                      T.CenterCrop(preprocess.crop), T.PILToTensor(), _ToBool()])


class _ToBool:
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x[0] > 127


__all__ = ["CocoInstances", "CocoSource", "mask_transform"]

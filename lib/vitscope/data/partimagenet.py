"""PartImageNet in its released COCO-style format: images, part masks and object masks (Teaching Matters 5.3).

Layout of a root (``data_manifests/partimagenet.yml``)::

    <root>/annotations/{train,val,test}.json     COCO json: images, annotations, categories
    <root>/images/<split>/<wnid>/<file_name>      (or <root>/images/<split>/<file_name>)

A category is a part of one super-category, ``{"id": 0, "name": "Quadruped Head", "supercategory": "Quadruped"}``
(ids from 0, unlike COCO's). An annotation is one part in one image: ``category_id``, ``segmentation`` as polygons
(or COCO RLE), ``bbox``, ``area``, ``iscrowd``. The splits hold different ImageNet classes, so all are read.

Objects: PartImageNet has no object masks; an image's object is the union of its parts, labelled with their
super-category (one object per super-category present, in practice one per image).

Traps handled here: pycocotools reads a polygon of exactly 4 numbers as a bounding box, and PartImageNet holds a few
such degenerate polygons (the original code skips them); polygons of fewer than 3 points are dropped, an annotation
left with none (or with an empty mask) is skipped and counted in :attr:`PartImageNet.skipped`.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

MANIFEST = "partimagenet"
SPLITS = ("train", "val", "test")
_REQUIRED = {"images": ("id", "file_name", "height", "width"),
             "annotations": ("id", "image_id", "category_id", "segmentation"),
             "categories": ("id", "name", "supercategory")}


def _how_to_get(root: Path) -> str:
    return (f"Get PartImageNet as data_manifests/partimagenet.yml says (`vitscope data fetch {MANIFEST} --root "
            f"{root}` prints how), then check it with `vitscope data verify {MANIFEST} --root {root}`.")


def annotation_path(root, split: str) -> Path:
    return Path(root) / "annotations" / f"{split}.json"


def read_annotations(path: Path) -> dict:
    """A split's json, checked for the COCO keys the loader reads; errors name the file and the missing key."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the download may be truncated. "
                         f"{_how_to_get(Path(path).parents[1])}") from err
    for section, keys in _REQUIRED.items():
        entries = data.get(section) if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"{path} has no {section!r} list; a PartImageNet (COCO-style) json holds images, "
                             "annotations and categories")
        for entry in entries:
            missing = [k for k in keys if k not in entry]
            if missing:
                raise ValueError(f"{path}: an entry of {section!r} lacks {missing} (entry {str(entry)[:120]})")
    return data


def _coco(data: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):      # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def wnid_of(file_name: str) -> str:
    """The ImageNet class of a file (``n01440764_10029.JPEG`` -> ``n01440764``)."""
    return Path(file_name).name.split("_")[0]


def _valid_segmentation(segm):
    """Polygons of >= 3 points (an even number of coordinates, at least 6), or an RLE dict; None when none is left."""
    if isinstance(segm, dict):
        return segm
    polygons = [p for p in segm if len(p) >= 6 and len(p) % 2 == 0]
    return polygons or None


def round_robin_subset(by_supercategory: dict[str, dict[str, list]], per_supercategory: int | None) -> list:
    """Teaching Matters' PartImageNet subset: per super-category (in the given order), take items round-robin over
    its classes (sorted), each class's items in the given order, until ``per_supercategory`` (all when fewer, or
    when ``None``). ``by_supercategory``: ``{supercategory: {wnid: [item, ...]}}``."""
    out = []
    for classes in by_supercategory.values():
        queues = [list(classes[w]) for w in sorted(classes)]
        total = sum(len(q) for q in queues)
        want = total if per_supercategory is None else min(per_supercategory, total)
        taken, i = 0, 0
        while taken < want:
            q = queues[i % len(queues)]
            if q:
                out.append(q.pop(0))
                taken += 1
            i += 1
    return out


class PartImageNet:
    """The images of a PartImageNet root with their part and object masks.

    Args:
        root: the dataset root (layout in the module docstring).
        splits: which annotation files to read (all three by default, as the original code).
        per_supercategory: the subset rule's N (:func:`round_robin_subset`); ``None``: every annotated image.

    Attributes: ``part_categories`` (``[(id, name, supercategory)]`` sorted by id; a part label is an index into
    it), ``supercategories`` (names; an object label is an index into it), ``skipped`` (annotations dropped so far).
    """

    def __init__(self, root, *, splits=SPLITS, per_supercategory: int | None = None):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"PartImageNet root {self.root} does not exist. {_how_to_get(self.root)}")
        self.cocos, categories = {}, {}
        for split in splits:
            path = annotation_path(self.root, split)
            if not path.is_file():
                raise FileNotFoundError(f"PartImageNet annotations {path} are missing (expected "
                                        f"annotations/{{{','.join(splits)}}}.json under the root). "
                                        f"{_how_to_get(self.root)}")
            data = read_annotations(path)
            for c in data["categories"]:
                entry = (c["name"], c["supercategory"])
                if categories.setdefault(c["id"], entry) != entry:
                    raise ValueError(f"{path}: category {c['id']} is {entry}, but another split calls it "
                                     f"{categories[c['id']]}; the splits must share one category list")
            self.cocos[split] = _coco(data)
        self.part_categories = [(i, *categories[i]) for i in sorted(categories)]
        self.supercategories = list(dict.fromkeys(s for _, _, s in self.part_categories))
        self._part_index = {cid: j for j, (cid, _, _) in enumerate(self.part_categories)}
        self._object_index = {s: j for j, s in enumerate(self.supercategories)}
        self.items = self._select(per_supercategory)
        self.skipped = 0

    def _select(self, per_supercategory) -> list[tuple[str, int]]:
        """``(split, image id)`` of the subset; a class belongs to the super-category of its first annotation."""
        grouped: dict[str, dict[str, list]] = {s: defaultdict(list) for s in self.supercategories}
        for split, coco in self.cocos.items():
            by_class = defaultdict(list)
            for img in coco.imgs.values():
                if coco.getAnnIds(imgIds=[img["id"]]):
                    by_class[wnid_of(img["file_name"])].append(img)
            for wnid, imgs in by_class.items():
                imgs.sort(key=lambda im: im["file_name"])
                first = coco.loadAnns(coco.getAnnIds(imgIds=[imgs[0]["id"]]))[0]
                sup = self.part_categories[self._part_index[first["category_id"]]][2]
                grouped[sup][wnid] += [(split, im["id"]) for im in imgs]
        return round_robin_subset({s: c for s, c in grouped.items() if c}, per_supercategory)

    def __len__(self) -> int:
        return len(self.items)

    def info(self, i: int) -> dict:
        split, image_id = self.items[i]
        return {"split": split, **self.cocos[split].imgs[image_id]}

    def image_path(self, i: int) -> Path:
        info = self.info(i)
        base = self.root / "images" / info["split"]
        for path in (base / wnid_of(info["file_name"]) / info["file_name"], base / info["file_name"]):
            if path.is_file():
                return path
        raise FileNotFoundError(f"PartImageNet image {info['file_name']} is missing: looked in "
                                f"{base / wnid_of(info['file_name'])} and {base}. {_how_to_get(self.root)}")

    def image(self, i: int) -> torch.Tensor:
        """uint8 ``[3, h, w]``."""
        from .imagefolder import read_rgb

        img = np.asarray(read_rgb(self.image_path(i)))
        return torch.from_numpy(img.copy()).permute(2, 0, 1)

    def parts(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masks bool [R, h, w], labels int64 [R])``: one mask per valid part annotation, labels indexing
        :attr:`part_categories`."""
        split, image_id = self.items[i]
        coco = self.cocos[split]
        info = coco.imgs[image_id]
        masks, labels = [], []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            segm = _valid_segmentation(ann["segmentation"])
            mask = coco.annToMask({**ann, "segmentation": segm}) if segm is not None else None
            if mask is None or not mask.any():
                self.skipped += 1
                continue
            masks.append(torch.from_numpy(mask.astype(bool)))
            labels.append(self._part_index[ann["category_id"]])
        if not masks:
            return torch.zeros(0, info["height"], info["width"], dtype=torch.bool), torch.zeros(0, dtype=torch.int64)
        return torch.stack(masks), torch.tensor(labels, dtype=torch.int64)

    def objects(self, i: int, parts=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masks bool [O, h, w], labels int64 [O])``: the union of the image's parts of each super-category,
        labels indexing :attr:`supercategories`. ``parts``: :meth:`parts`'s result, if already read."""
        masks, labels = parts if parts is not None else self.parts(i)
        sup = torch.tensor([self._object_index[self.part_categories[j][2]] for j in labels.tolist()],
                           dtype=torch.int64)
        present = torch.unique(sup)
        union = [masks[sup == s].any(0) for s in present.tolist()]
        return (torch.stack(union) if union else masks[:0]), present

    def __getitem__(self, i: int) -> dict:
        parts = self.parts(i)
        objects = self.objects(i, parts)
        return {"image": self.image(i), "part_masks": parts[0], "part_labels": parts[1],
                "object_masks": objects[0], "object_labels": objects[1], "file": self.info(i)["file_name"]}

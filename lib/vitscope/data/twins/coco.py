"""The synthetic twin of COCO instances, written in COCO's exact layout so the real loader
(:class:`vitscope.data.coco.CocoInstances`) reads it.

Each image is one scene of :mod:`vitscope.data.synthetic` (one object on a photographic background); its instance is
the object's whole mask (body and part), as an RLE, with its bbox and area; its category is the object's shape (10
categories, ids 1-10). Classes cycle through the 50 shape-pattern classes, so every shape appears equally often.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ...locks import one_writer_at_a_time
from ...validation import check_int
from ..stamps import is_complete, mark_complete
from ..synthetic import GENERATOR_VERSION, PATTERNS, SHAPES, render_scene, sample_scene, scene_rng

#: Bump when the twin's files change for the same arguments (the generator's own version is stamped too).
TWIN_VERSION = 1
#: Offsets the scenes' seed so the COCO twin does not repeat the ImageNet twin's scenes.
SEED_OFFSET = 1000


def encode_rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE of a bool mask ``[H, W]``, JSON-ready (``counts`` as text)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO's ``[x, y, width, height]`` box (pixels) of a non-empty bool mask ``[H, W]``."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


@one_writer_at_a_time
def write_coco_twin(root, n_images: int, size: int = 96, seed: int = 0, *, split: str = "val2017") -> Path:
    """Write ``n_images`` scenes as ``<root>/<split>/<id:012d>.jpg`` and ``<root>/annotations/instances_<split>.json``.

    Returns the root. A root already complete for the same arguments (recorded in ``<root>/synthetic.json``, written
    last) is left untouched, so calling this again is cheap.
    """
    check_int(n_images, "n_images")
    root = Path(root)
    meta = {"format": "coco", "twin_version": TWIN_VERSION, "generator_version": GENERATOR_VERSION,
            "n_images": n_images, "size": size, "seed": seed, "split": split}
    if is_complete(root, meta):
        return root
    n_classes = len(SHAPES) * len(PATTERNS)
    images, annotations = [], []
    (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        label = i % n_classes
        rng = scene_rng(seed + SEED_OFFSET, label, i // n_classes)
        spec = sample_scene(label, rng)
        image, mask = render_scene(spec, size, rng)
        image_id = i + 1
        name = f"{image_id:012d}.jpg"
        Image.fromarray(image).save(root / split / name, quality=92)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        obj = mask > 0
        annotations.append({"id": image_id, "image_id": image_id, "category_id": SHAPES.index(spec.shape) + 1,
                            "segmentation": encode_rle(obj), "area": float(obj.sum()), "bbox": mask_bbox(obj),
                            "iscrowd": 0})
    data = {"info": {"description": "vitscope synthetic twin of COCO instances", "version": str(TWIN_VERSION)},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    mark_complete(root, meta)
    return root


__all__ = ["write_coco_twin"]

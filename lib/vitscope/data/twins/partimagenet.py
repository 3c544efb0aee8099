"""The synthetic twin of PartImageNet, written in its exact layout so the real loader
(:class:`vitscope.data.partimagenet.PartImageNet`) reads it.

Each image is one scene of :mod:`vitscope.data.synthetic`. Super-categories are the generator's shapes (as
PartImageNet's Quadruped, Bird, ...); its classes (ImageNet wnids) are the 50 shape-pattern classes, written under the
imagenet50 manifest's wnids. Parts, as PartImageNet names them per super-category: ``"<Shape> Body"`` (the
generator's mask value 1) and ``"<Shape> <Pattern>"`` (value 2; the "plain" pattern draws none), so 10 x 5 = 50 part
categories with ids from 0. Masks are COCO RLE. Like PartImageNet, the splits hold different classes: the plain,
striped and dotted classes are in ``train``, the eye classes in ``val`` and the cap classes in ``test``.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ...locks import one_writer_at_a_time
from ...validation import check_int
from ..manifest import load_manifest
from ..stamps import is_complete, mark_complete
from ..synthetic import GENERATOR_VERSION, PATTERNS, SHAPES, render_scene, sample_scene, scene_rng
from .coco import encode_rle, mask_bbox

#: Bump when the twin's files change for the same arguments (the generator's own version is stamped too).
TWIN_VERSION = 1
#: Offsets the scenes' seed so the twin does not repeat the ImageNet twin's scenes.
SEED_OFFSET = 2000
#: The split of each pattern's classes (PartImageNet's splits hold disjoint classes).
SPLIT_OF_PATTERN = {"plain": "train", "stripes": "train", "dots": "train", "eye": "val", "cap": "test"}


def part_categories() -> list[dict]:
    """``[{"id", "name", "supercategory"}]``: per shape, its body (id ``5 s``) and each pattern (``5 s + p``)."""
    out = []
    for s, shape in enumerate(SHAPES):
        for p, part in enumerate(("body",) + PATTERNS[1:]):
            out.append({"id": s * len(PATTERNS) + p, "name": f"{shape.title()} {part.title()}",
                        "supercategory": shape.title()})
    return out


@one_writer_at_a_time
def write_partimagenet_twin(root, per_class: int, size: int = 96, seed: int = 0) -> Path:
    """Write ``per_class`` scenes of each of the 50 classes as ``<root>/images/<split>/<wnid>/<wnid>_<i>.JPEG``
    and ``<root>/annotations/<split>.json`` for ``train``, ``val`` and ``test``.

    Returns the root. A root already complete for the same arguments (recorded in ``<root>/synthetic.json``, written
    last) is left untouched, so calling this again is cheap.
    """
    check_int(per_class, "per_class")
    root = Path(root)
    meta = {"format": "partimagenet", "twin_version": TWIN_VERSION, "generator_version": GENERATOR_VERSION,
            "per_class": per_class, "size": size, "seed": seed}
    if is_complete(root, meta):
        return root
    wnids = load_manifest("imagenet50").wnids
    categories = part_categories()
    splits = {s: {"images": [], "annotations": []} for s in dict.fromkeys(SPLIT_OF_PATTERN.values())}
    next_id = 0
    for label in range(len(SHAPES) * len(PATTERNS)):
        s, p = label % len(SHAPES), label // len(SHAPES)
        split = splits[SPLIT_OF_PATTERN[PATTERNS[p]]]
        folder = root / "images" / SPLIT_OF_PATTERN[PATTERNS[p]] / wnids[label]
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = scene_rng(seed + SEED_OFFSET, label, i)
            image, mask = render_scene(sample_scene(label, rng), size, rng)
            name = f"{wnids[label]}_{i:05d}.JPEG"
            Image.fromarray(image).save(folder / name, quality=92)
            image_id = label * per_class + i
            split["images"].append({"id": image_id, "file_name": name, "width": size, "height": size})
            for value, part in ((1, 0), (2, p)):
                region = mask == value
                if value == 2 and p == 0 or not region.any():
                    continue
                split["annotations"].append({
                    "id": next_id, "image_id": image_id, "category_id": s * len(PATTERNS) + part,
                    "segmentation": encode_rle(region), "area": float(region.sum()), "bbox": mask_bbox(region),
                    "iscrowd": 0})
                next_id += 1
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for name, data in splits.items():
        doc = {"info": {"description": f"vitscope synthetic twin of PartImageNet ({name})"}, "licenses": [],
               "images": data["images"], "annotations": data["annotations"], "categories": categories}
        (root / "annotations" / f"{name}.json").write_text(json.dumps(doc))
    mark_complete(root, meta)
    return root


__all__ = ["part_categories", "write_partimagenet_twin"]

"""A synthetic twin of ROxford5k / RParis6k, written in the revisitop layout (``<root>/<name>/gnd_<name>.pkl``,
``<root>/<name>/jpg/<image>.jpg``) so :mod:`vitscope.data.revisitop` reads it exactly as it reads the real data.

A *landmark* is one object instance: one class of the synthetic generator (shape and part pattern) with its colours
and texture fixed, seen from many "viewpoints" (position, scale, rotation, flip, background). By construction:

- **easy** images show the landmark as the generator's scenes do (large, upright within ±30°);
- **hard** images show it small (radius 0.16-0.22 of the side), at any rotation, and partly occluded (a block
  covering ~40 % of its box);
- **junk** images show it so small (0.08-0.12) and occluded (~70 %) that it is barely recognisable, as revisitop's
  junk: ignored by every setup's ranking;
- **distractors** are scenes of other classes with random colours: negatives of every query.

Queries are further easy-style views of each landmark, with ``bbx`` the object's box (from its mask, padded). The same
arguments always write the same files; a complete twin (recorded in ``<root>/<name>/synthetic.json``) is left alone.
"""
from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from ...locks import one_writer_at_a_time
from ...validation import check_int
from ..stamps import is_complete, mark_complete
from ..synthetic import GENERATOR_VERSION, PATTERNS, SHAPES, render_scene, sample_scene, scene_rng

#: Bump when the twin's output changes (with the generator's own version it is part of every cache key).
TWIN_VERSION = 1
#: Object radius (fraction of the side) and occluded share of the object's box, per kind of database image.
HARD_RADIUS, JUNK_RADIUS = (0.16, 0.22), (0.08, 0.12)
HARD_OCCLUSION, JUNK_OCCLUSION = 0.4, 0.7
#: Pixels of margin around the object's mask in a query's box.
BOX_MARGIN = 2
_N_CLASSES = len(SHAPES) * len(PATTERNS)


def _occlude(image: np.ndarray, mask: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Cover a block of about ``share`` of the object's bounding box with a flat, noisy grey patch."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return image
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = max(1, round((y1 - y0) * np.sqrt(share))), max(1, round((x1 - x0) * np.sqrt(share)))
    top, left = int(rng.integers(y0, max(y0, y1 - h) + 1)), int(rng.integers(x0, max(x0, x1 - w) + 1))
    patch = rng.integers(60, 200) + rng.normal(0, 12, size=(h, w, 1))
    out = image.copy()
    out[top:top + h, left:left + w] = np.clip(patch, 0, 255).astype(np.uint8)
    return out


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return [float(max(0, xs.min() - BOX_MARGIN)), float(max(0, ys.min() - BOX_MARGIN)),
            float(min(width, xs.max() + 1 + BOX_MARGIN)), float(min(height, ys.max() + 1 + BOX_MARGIN))]


def _draw(label: int, identity: dict | None, kind: str, size: int, rng: np.random.Generator):
    """One scene of class ``label`` as ``kind`` (easy / hard / junk / query / distractor): (image, mask)."""
    spec = sample_scene(label, rng)
    if identity is not None:
        spec = replace(spec, **identity)
    if kind in ("hard", "junk"):
        lo, hi = HARD_RADIUS if kind == "hard" else JUNK_RADIUS
        radius = float(rng.uniform(lo, hi))
        spec = replace(spec, radius=radius, rotation=float(rng.uniform(-np.pi, np.pi)),
                       center=(float(rng.uniform(radius, 1 - radius)), float(rng.uniform(radius, 1 - radius))))
    image, mask = render_scene(spec, size, rng)
    if kind in ("hard", "junk"):
        image = _occlude(image, mask > 0, HARD_OCCLUSION if kind == "hard" else JUNK_OCCLUSION, rng)
    return image, mask


@one_writer_at_a_time
def write_revisitop_twin(root, name: str, *, landmarks: int = 10, easy: int = 8, hard: int = 6, junk: int = 3,
                         distractors: int = 30, queries_per_landmark: int = 2, size: int = 96, seed: int = 0) -> Path:
    """Write the twin ``<root>/<name>/`` (ground truth and images) and return that folder.

    Args:
        name: the benchmark name it stands in for (``roxford5k``, ``rparis6k``): the folder and ``gnd_<name>.pkl``.
        landmarks: landmark instances (distinct generator classes, chosen by ``seed``); at most 49.
        easy, hard, junk: database images of each kind per landmark (see the module docstring).
        distractors: database images of other classes, negatives of every query.
        queries_per_landmark: queries per landmark, each with its ``bbx``.
        size: image side in pixels. seed: everything random derives from it.

    With the defaults: 10 x 17 + 30 = 200 database images and 20 queries.
    """
    for arg, value in (("landmarks", landmarks), ("easy", easy), ("hard", hard), ("queries_per_landmark",
                                                                                  queries_per_landmark)):
        check_int(value, f"write_revisitop_twin: {arg}")
    if landmarks >= _N_CLASSES:
        raise ValueError(f"write_revisitop_twin: landmarks={landmarks}, but the generator has {_N_CLASSES} classes "
                         "and distractors need at least one other")
    folder = Path(root) / name
    meta = {"generator_version": GENERATOR_VERSION, "twin_version": TWIN_VERSION, "name": name,
            "landmarks": landmarks, "easy": easy, "hard": hard, "junk": junk, "distractors": distractors,
            "queries_per_landmark": queries_per_landmark, "size": size, "seed": seed}
    if is_complete(folder, meta):
        return folder
    classes = np.random.default_rng([seed, 1729]).permutation(_N_CLASSES)
    chosen, others = classes[:landmarks], classes[landmarks:]
    database, queries = [], []                 # (image name, kind, landmark or -1, label, index)
    for lm, label in enumerate(chosen):
        kinds = ["easy"] * easy + ["hard"] * hard + ["junk"] * junk
        database += [(f"landmark{lm:02d}_{i:06d}", kind, lm, int(label), i) for i, kind in enumerate(kinds)]
        queries += [(f"landmark{lm:02d}_query{j}", "query", lm, int(label), len(kinds) + j)
                    for j in range(queries_per_landmark)]
    database += [(f"distractor_{i:06d}", "distractor", -1, int(others[i % len(others)]), 10_000 + i)
                 for i in range(distractors)]
    order = np.random.default_rng([seed, 1730]).permutation(len(database))
    database = [database[i] for i in order]    # landmarks interleaved, as a real image list is

    identities = {}
    for lm in range(landmarks):                # a landmark keeps its colours and texture in every view
        rng = np.random.default_rng([seed, 1731, lm])
        probe = sample_scene(int(chosen[lm]), rng)
        identities[lm] = {"body_rgb": probe.body_rgb, "part_rgb": probe.part_rgb, "texture": probe.texture}
    (folder / "jpg").mkdir(parents=True, exist_ok=True)
    boxes = {}
    for im_name, kind, lm, label, index in database + queries:
        rng = scene_rng(seed, label, index)
        image, mask = _draw(label, identities.get(lm), kind, size, rng)
        Image.fromarray(image).save(folder / "jpg" / f"{im_name}.jpg", quality=92)
        if kind == "query":
            boxes[im_name] = _box(mask > 0)
    position = {im[0]: i for i, im in enumerate(database)}
    gnd = []
    for im_name, _, lm, _, _ in queries:
        groups = {k: sorted(position[d[0]] for d in database if d[2] == lm and d[1] == k)
                  for k in ("easy", "hard", "junk")}
        gnd.append({"bbx": boxes[im_name], **groups})
    truth = {"imlist": [d[0] for d in database], "qimlist": [q[0] for q in queries], "gnd": gnd}
    (folder / f"gnd_{name}.pkl").write_bytes(pickle.dumps(truth, protocol=2))
    mark_complete(folder, meta)
    return folder

"""A synthetic twin of SPair-71k, written in the real layout so :mod:`vitscope.data.spair` reads it unchanged.

Each category is one class of the scene generator (:mod:`vitscope.data.synthetic`: a shape with a part pattern).
Its keypoints sit at fixed positions in the object's own frame (the shape's vertices or arm ends, its centre, the
centre of an "eye" part), mapped to pixels exactly as :func:`~vitscope.data.synthetic.render_scene` maps object
coordinates: so keypoint j of one image and keypoint j of another image of the same category mark the same place on
the object, whatever its position, size, rotation and flip. The categories' part patterns ("cap", "eye") are not
mirror-symmetric, so a flipped object's keypoints are still told apart by what surrounds them, as an animal's left
and right eyes are.

Images are not square: each scene is rendered at a side drawn from ``sides`` and cropped to a random window whose
other side is 75-100 % as long, so the letterbox path of the protocol is exercised. A keypoint outside the crop is
not visible, and a pair lists only the keypoints visible in both images (as SPair's ``kps_ids`` do). Boxes are the
tight box of the object's pixels in the crop.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ...locks import one_writer_at_a_time
from ..stamps import is_complete, mark_complete
from ..synthetic import GENERATOR_VERSION, PATTERNS, SHAPES, SceneSpec, render_scene, sample_scene, scene_rng

#: Bump when this writer's output changes (it is part of the twin's stamp, so a stale twin is rewritten).
TWIN_VERSION = 1
#: The default categories: (shape, pattern) of the generator whose symmetry a rotation of at most 30 degrees (the
#: generator's range) cannot confuse, each with an asymmetric part pattern.
CATEGORIES = (("triangle", "cap"), ("square", "eye"), ("pentagon", "cap"), ("cross", "eye"), ("diamond", "eye"))
#: Keypoints in object coordinates (u, v) at unit radius (the frame of ``synthetic._shape_mask``); v points down.
_VERTICES = {
    "triangle": [(np.cos(a), np.sin(a)) for a in 2 * np.pi * np.arange(3) / 3],
    "pentagon": [(np.cos(a), np.sin(a)) for a in 2 * np.pi * np.arange(5) / 5],
    "square": [(0.78, 0.78), (-0.78, 0.78), (-0.78, -0.78), (0.78, -0.78)],
    "cross": [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)],
    "diamond": [(0.7, 0.0), (0.0, 1.0), (-0.7, 0.0), (0.0, -1.0)],
}
_EYE = (-0.1, -0.1)          # centre of the "eye" part (synthetic._part_mask)


def category_name(shape: str, pattern: str) -> str:
    """The twin's category folder name, e.g. ``triangle_cap`` (no ``-`` or ``:``, which pair names use)."""
    return f"{shape}_{pattern}"


def object_keypoints(shape: str, pattern: str) -> np.ndarray:
    """[K, 2] keypoints ``(u, v)`` of a category in object coordinates: vertices, centre, and the eye's centre."""
    if shape not in _VERTICES:
        raise ValueError(f"shape {shape!r} has no keypoints defined; choose from {sorted(_VERTICES)}")
    points = list(_VERTICES[shape]) + [(0.0, 0.0)] + ([_EYE] if pattern == "eye" else [])
    return np.asarray(points, dtype=np.float64)


def to_pixels(spec: SceneSpec, uv: np.ndarray, size: int) -> np.ndarray:
    """[K, 2] object coordinates -> ``(x, y)`` pixel indices of a ``size``-pixel render of ``spec``.

    The inverse of ``render_scene``: there a pixel centre ``(col + 0.5) / size`` becomes ``dx = (x - cx) / r``
    (negated if flipped), ``dy``, then ``u = c dx + s dy, v = -s dx + c dy``. Here ``dx = c u - s v, dy = s u + c v``.
    """
    c, s = np.cos(spec.rotation), np.sin(spec.rotation)
    dx, dy = c * uv[:, 0] - s * uv[:, 1], s * uv[:, 0] + c * uv[:, 1]
    if spec.flip:
        dx = -dx
    x = (spec.center[0] + spec.radius * dx) * size - 0.5
    y = (spec.center[1] + spec.radius * dy) * size - 0.5
    return np.stack([x, y], axis=1)


def _label(shape: str, pattern: str) -> int:
    return SHAPES.index(shape) + len(SHAPES) * PATTERNS.index(pattern)      # synthetic.class_of's inverse


def _render(label: int, seed: int, index: int, sides: tuple[int, int], uv: np.ndarray):
    """One image: (uint8 [h, w, 3], keypoints [K, 2] with NaN where outside, box [4])."""
    rng = scene_rng(seed, label, index)
    spec = sample_scene(label, rng)
    side = int(rng.integers(sides[0], sides[1] + 1))
    image, mask = render_scene(spec, side, rng)
    short = int(rng.integers(int(0.75 * side), side + 1))
    w, h = (side, short) if rng.integers(0, 2) else (short, side)
    x0, y0 = int(rng.integers(0, side - w + 1)), int(rng.integers(0, side - h + 1))
    image, mask = image[y0:y0 + h, x0:x0 + w], mask[y0:y0 + h, x0:x0 + w]
    kps = to_pixels(spec, uv, side) - [x0, y0]
    outside = (kps[:, 0] < 0) | (kps[:, 0] > w - 1) | (kps[:, 1] < 0) | (kps[:, 1] > h - 1)
    kps[outside] = np.nan
    rows, cols = np.nonzero(mask)
    box = [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]
    return image, kps, box


@one_writer_at_a_time
def write_spair_twin(root, *, categories=CATEGORIES, images_per_category: int = 8, pairs_per_category: int = 10,
                     sides: tuple[int, int] = (64, 96), seed: int = 71, split: str = "test") -> Path:
    """Write the twin under ``<root>/SPair-71k/`` (JPEGImages, ImageAnnotation, PairAnnotation/<split>,
    Layout/large/<split>.txt) and return ``root``. The same arguments always give the same files; a root already
    written with them (``<root>/SPair-71k/synthetic.json``) is left untouched.

    ``categories``: (shape, pattern) pairs of the generator; ``pairs_per_category`` distinct ordered pairs of
    different images, drawn from ``images_per_category`` images; ``sides``: range of the rendered side in pixels.
    """
    categories = [tuple(c) for c in categories]
    if pairs_per_category > images_per_category * (images_per_category - 1):
        raise ValueError(f"{images_per_category} images give at most {images_per_category * (images_per_category - 1)}"
                         f" ordered pairs; got pairs_per_category={pairs_per_category}")
    base = Path(root) / "SPair-71k"
    meta = {"twin_version": TWIN_VERSION, "generator_version": GENERATOR_VERSION, "categories": categories,
            "images_per_category": images_per_category, "pairs_per_category": pairs_per_category,
            "sides": list(sides), "seed": seed, "split": split}
    if is_complete(base, meta):
        return Path(root)
    lines, index = [], 0
    for shape, pattern in categories:
        cat, label, uv = category_name(shape, pattern), _label(shape, pattern), object_keypoints(shape, pattern)
        records = []
        for i in range(images_per_category):
            image, kps, box = _render(label, seed, i, sides, uv)
            stem = f"{cat}_{i:04d}"
            h, w = image.shape[:2]
            _save(base / "JPEGImages" / cat / f"{stem}.jpg", image)
            ann = {"filename": f"{stem}.jpg", "category": cat, "image_width": w, "image_height": h,
                   "image_depth": 3, "bndbox": box,
                   "kps": {str(j): None if np.isnan(p).any() else [round(float(v), 2) for v in p]
                           for j, p in enumerate(kps)}}
            _write_json(base / "ImageAnnotation" / cat / f"{stem}.json", ann)
            records.append((stem, image.shape, kps, box))
        rng = np.random.default_rng([seed, label, 7])
        ordered = [(a, b) for a in range(images_per_category) for b in range(images_per_category) if a != b]
        for k in np.sort(rng.choice(len(ordered), size=pairs_per_category, replace=False)):
            (s_stem, s_shape, s_kps, s_box), (t_stem, t_shape, t_kps, t_box) = (records[i] for i in ordered[k])
            both = [j for j in range(len(uv)) if not (np.isnan(s_kps[j]).any() or np.isnan(t_kps[j]).any())]
            if not both:
                continue
            index += 1
            name = f"{index:06d}-{s_stem}-{t_stem}:{cat}"
            _write_json(base / "PairAnnotation" / split / f"{name}.json", {
                "pair_id": index, "filename": name, "category": cat, "src_imname": f"{s_stem}.jpg",
                "trg_imname": f"{t_stem}.jpg", "src_imsize": [s_shape[1], s_shape[0], 3],
                "trg_imsize": [t_shape[1], t_shape[0], 3], "src_bndbox": s_box, "trg_bndbox": t_box,
                "kps_ids": [str(j) for j in both],
                "src_kps": [[round(float(v), 2) for v in s_kps[j]] for j in both],
                "trg_kps": [[round(float(v), 2) for v in t_kps[j]] for j in both],
                "mirror": 0, "viewpoint_variation": 0, "scale_variation": 0, "truncation": 0, "occlusion": 0})
            lines.append(name)
    layout = base / "Layout" / "large" / f"{split}.txt"
    layout.parent.mkdir(parents=True, exist_ok=True)
    layout.write_text("".join(f"{n}\n" for n in lines))
    mark_complete(base, meta)
    return Path(root)


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=92)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))

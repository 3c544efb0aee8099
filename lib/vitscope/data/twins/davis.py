"""The synthetic twin of DAVIS-2017 (semi-supervised, val), written in DAVIS's exact layout so the real loader
(:class:`vitscope.data.davis.DavisVideos`) reads it.

Each video is one or two objects of :mod:`vitscope.data.synthetic` moving over a fixed photographic background:
every frame renders the same scene with the object's ``center`` and ``rotation`` moved a little along a straight,
smooth path (``dataclasses.replace`` on its :class:`~vitscope.data.synthetic.SceneSpec`). Objects are smaller than
in the still-image twins (so two fit side by side); the second object, where there is one, passes in front of the
first. Annotations are palette PNGs with object ids 1 and 2 and the PASCAL VOC colour map that DAVIS uses, generated
here (:func:`voc_palette`), not downloaded.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from ...locks import one_writer_at_a_time
from ...validation import check_int
from ..stamps import is_complete, mark_complete
from ..synthetic import GENERATOR_VERSION, PATTERNS, SHAPES, render_scene, sample_scene, scene_rng

#: Bump when the twin's files change for the same arguments (the generator's own version is stamped too).
TWIN_VERSION = 1
#: Offsets the scenes' seed so the videos do not repeat the other twins' scenes.
SEED_OFFSET = 2000
#: Objects are this fraction of the still-image twins' size, so two of them fit in a frame.
RADIUS_SCALE = 0.55
#: Distance (fraction of the side) each object's centre travels over the whole video, and its turn (radians).
TRAVEL = (0.15, 0.3)
TURN = 0.5


def voc_palette(n: int = 256) -> np.ndarray:
    """uint8 ``[n, 3]``: the PASCAL VOC colour map (id bits spread over the high bits of R, G and B), as DAVIS's
    annotations use it: 0 black, 1 dark red, 2 dark green, 3 olive, ..."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


def _path(spec, rng: np.random.Generator, side: tuple[float, float]):
    """``spec`` shrunk, with a start inside ``side`` (x range) and an end ``TRAVEL`` away, both inside the image."""
    radius = spec.radius * RADIUS_SCALE
    lo, hi = radius, 1 - radius
    start = np.array([rng.uniform(max(lo, side[0]), min(hi, side[1])), rng.uniform(lo, hi)])
    angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(*TRAVEL)
    end = np.clip(start + dist * np.array([np.cos(angle), np.sin(angle)]), lo, hi)
    turn = rng.uniform(-TURN, TURN)
    return replace(spec, radius=radius), start, end, turn


def _frame(spec, start, end, turn, t: float, size: int, background_rng):
    centre = start + t * (end - start)
    moved = replace(spec, center=(float(centre[0]), float(centre[1])), rotation=spec.rotation + t * turn)
    return render_scene(moved, size, background_rng)


@one_writer_at_a_time
def write_davis_twin(root, n_videos: int = 4, n_frames: int = 8, size: int = 96, seed: int = 0, *,
                     split: str = "val") -> Path:
    """Write ``n_videos`` videos of ``n_frames`` frames (``size`` px square) under ``<root>/DAVIS/`` in DAVIS's
    layout: ``JPEGImages/480p/<video>/<00000>.jpg``, ``Annotations/480p/<video>/<00000>.png`` and
    ``ImageSets/2017/<split>.txt``. Even-numbered videos hold one object, odd-numbered ones two.

    Returns the root. A root already complete for the same arguments (recorded in ``<root>/synthetic.json``, written
    last) is left untouched, so calling this again is cheap.
    """
    for name, value, low in (("n_videos", n_videos, 1), ("n_frames", n_frames, 3), ("size", size, 16)):
        check_int(value, name, low)
    root = Path(root)
    meta = {"format": "davis", "twin_version": TWIN_VERSION, "generator_version": GENERATOR_VERSION,
            "n_videos": n_videos, "n_frames": n_frames, "size": size, "seed": seed, "split": split}
    if is_complete(root, meta):
        return root
    base, palette = root / "DAVIS", voc_palette().ravel().tolist()
    n_classes = len(SHAPES) * len(PATTERNS)
    names = []
    for v in range(n_videos):
        rng = scene_rng(seed + SEED_OFFSET, v, 0)
        first = sample_scene((7 * v + 3) % n_classes, rng)
        objects = [_path(first, rng, (0.0, 0.5 if v % 2 else 1.0))]
        if v % 2:
            second = replace(sample_scene((7 * v + 24) % n_classes, rng), background=first.background)
            objects.append(_path(second, rng, (0.5, 1.0)))
        name = f"{v:02d}-" + "-".join(spec.shape for spec, *_ in objects)
        names.append(name)
        frames, annotations = base / "JPEGImages" / "480p" / name, base / "Annotations" / "480p" / name
        frames.mkdir(parents=True, exist_ok=True)
        annotations.mkdir(parents=True, exist_ok=True)
        for t in range(n_frames):
            image, ids = None, np.zeros((size, size), np.uint8)
            for obj_id, (spec, start, end, turn) in enumerate(objects, 1):
                # the same background randomness every frame and for every object: a still background
                rendered, mask = _frame(spec, start, end, turn, t / (n_frames - 1), size,
                                        scene_rng(seed + SEED_OFFSET, v, 1))
                image = rendered if image is None else np.where(mask[..., None] > 0, rendered, image)
                ids[mask > 0] = obj_id
            Image.fromarray(image).save(frames / f"{t:05d}.jpg", quality=92)
            ann = Image.fromarray(ids, mode="P")
            ann.putpalette(palette)
            ann.save(annotations / f"{t:05d}.png")
    (base / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(names) + "\n")
    mark_complete(root, meta)
    return root


__all__ = ["voc_palette", "write_davis_twin"]

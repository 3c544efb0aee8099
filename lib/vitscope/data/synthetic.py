"""Deterministic synthetic scenes: the offline twin of ImageNet-style benchmarks.

Each class is a *shape* combined with a *part pattern* (10 shapes x 5 patterns = 50 classes, one per
ImageNet-50 wnid). Everything else is nuisance: object and part colours, a texture on the object, a
background cropped from a real photograph shipped inside scikit-image / scikit-learn, position, scale,
rotation and a horizontal flip. So a class is defined by shape and part structure, as object classes are,
and not by colour or background.

Scenes are written in the real format (``<root>/<split>/<wnid>/<wnid>_<index>.JPEG``) so the real loader
reads them; a per-pixel mask (0 background, 1 object body, 2 object part) goes beside it under
``<root>/masks/<wnid>/<same stem>.png`` for the analyses that need object or part masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..locks import one_writer_at_a_time
from .stamps import is_complete, mark_complete

SHAPES = ("circle", "square", "triangle", "pentagon", "hexagon", "star", "cross", "ring", "crescent", "diamond")
PATTERNS = ("plain", "stripes", "dots", "eye", "cap")
#: Bump when the generator's output changes: it is part of every cache key built on synthetic data.
GENERATOR_VERSION = 2

#: Photographs bundled with scikit-image / scikit-learn wheels (BSD / CC0 / public-domain sources; see
#: ``data_manifests/synthetic.yml``). Used only as backgrounds and textures.
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                "china.jpg", "flower.jpg")
#: Object radius as a fraction of the image side (uniform); centres keep the object's circumcircle in the image.
RADIUS_RANGE = (0.30, 0.46)
_TEXTURES = ("brick", "grass", "gravel", "moon", "camera")


@dataclass(frozen=True)
class SceneSpec:
    """The latent description of one scene (everything the pixels were drawn from)."""

    label: int
    shape: str
    pattern: str
    center: tuple[float, float]   # (x, y) in [0, 1] image coordinates
    radius: float                 # fraction of the image side
    rotation: float               # radians
    flip: bool
    body_rgb: tuple[int, int, int]
    part_rgb: tuple[int, int, int]
    background: str
    texture: str


def class_of(label: int) -> tuple[str, str]:
    """Map a label in [0, 50) to its (shape, pattern)."""
    if not 0 <= label < len(SHAPES) * len(PATTERNS):
        raise ValueError(f"label {label} outside [0, {len(SHAPES) * len(PATTERNS)})")
    return SHAPES[label % len(SHAPES)], PATTERNS[label // len(SHAPES)]


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A bundled photograph as float RGB [H, W, 3] in [0, 1]."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image
        img = load_sample_image(name)
    else:
        import skimage.data
        img = getattr(skimage.data, name)()
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3] / 255.0


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of ``photo`` resized to ``size`` (nearest-neighbour sampling, fast)."""
    h, w, _ = photo.shape
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    idx = (np.arange(size) * side / size).astype(int)
    return photo[y0 + idx][:, x0 + idx]


#: Version 2: backgrounds are slightly out of focus and lower in contrast (a shallow depth of field), so the
#: object, not the photograph's texture, is the most salient thing in the scene (blur sigma as a fraction of
#: the side; contrast kept around the crop's mean colour).
BACKGROUND_BLUR = 1 / 48
BACKGROUND_CONTRAST = 0.6


def _soften(image: np.ndarray, size: int) -> np.ndarray:
    """Background photo crop [size, size, 3] blurred (Gaussian) and pulled towards its mean colour."""
    from scipy.ndimage import gaussian_filter
    blurred = gaussian_filter(image, sigma=(BACKGROUND_BLUR * size, BACKGROUND_BLUR * size, 0), mode="reflect")
    mean = blurred.mean(axis=(0, 1), keepdims=True)
    return mean + BACKGROUND_CONTRAST * (blurred - mean)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test for a shape of unit radius in rotated object coordinates (u, v)."""
    r, t = np.hypot(u, v), np.arctan2(v, u)

    def polygon(n):
        return r * np.cos((t % (2 * np.pi / n)) - np.pi / n) <= np.cos(np.pi / n)

    if shape == "circle":
        return r <= 1.0
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.78
    if shape == "triangle":
        return polygon(3)
    if shape == "pentagon":
        return polygon(5)
    if shape == "hexagon":
        return polygon(6)
    if shape == "star":
        return r <= 0.55 + 0.45 * np.cos(5 * t) ** 2
    if shape == "cross":
        return ((abs(u) <= 0.33) & (abs(v) <= 1.0)) | ((abs(v) <= 0.33) & (abs(u) <= 1.0))
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "crescent":
        return (r <= 1.0) & (np.hypot(u - 0.45, v) >= 0.75)
    if shape == "diamond":
        return abs(u) / 0.7 + abs(v) <= 1.0
    raise ValueError(f"unknown shape {shape!r}")


def _part_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the part pattern is drawn, in object coordinates (intersected with the body by the caller)."""
    if pattern == "plain":
        return np.zeros_like(u, dtype=bool)
    if pattern == "stripes":
        return (np.floor((v + 1.0) * 3.0) % 2) == 1
    if pattern == "dots":
        return np.hypot((u * 2.5) % 1.0 - 0.5, (v * 2.5) % 1.0 - 0.5) <= 0.22
    if pattern == "eye":
        return np.hypot(u + 0.1, v + 0.1) <= 0.32
    if pattern == "cap":
        return v <= -0.35
    raise ValueError(f"unknown pattern {pattern!r}")


def sample_scene(label: int, rng: np.random.Generator) -> SceneSpec:
    """Draw the nuisance variables of one scene of class ``label``."""
    shape, pattern = class_of(label)
    # Version 2 made objects larger (0.22-0.40 before): at 64 px with 8 px patches, small objects left the
    # shape to 3-5 patches and even the supervised zoo model learned the part pattern but not the shape.
    radius = float(rng.uniform(RADIUS_RANGE[0], RADIUS_RANGE[1]))
    body = rng.integers(30, 226, size=3)
    # The part colour is pushed away from the body colour so the pattern stays visible.
    part = (body + rng.integers(90, 166, size=3) * rng.choice([-1, 1], size=3)) % 256
    return SceneSpec(
        label=label, shape=shape, pattern=pattern,
        center=(float(rng.uniform(radius, 1 - radius)), float(rng.uniform(radius, 1 - radius))),
        radius=radius, rotation=float(rng.uniform(-np.pi / 6, np.pi / 6)), flip=bool(rng.integers(0, 2)),
        body_rgb=tuple(int(c) for c in body), part_rgb=tuple(int(c) for c in part),
        background=str(rng.choice(BACKGROUNDS)), texture=str(rng.choice(_TEXTURES)),
    )


def render_scene(spec: SceneSpec, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene.

    Returns:
        image: uint8 [size, size, 3]; mask: uint8 [size, size] with 0 background, 1 body, 2 part.
    """
    ys, xs = (np.mgrid[0:size, 0:size] + 0.5) / size
    dx, dy = (xs - spec.center[0]) / spec.radius, (ys - spec.center[1]) / spec.radius
    if spec.flip:
        dx = -dx
    c, s = np.cos(spec.rotation), np.sin(spec.rotation)
    u, v = c * dx + s * dy, -s * dx + c * dy
    body = _shape_mask(spec.shape, u, v)
    part = body & _part_mask(spec.pattern, u, v)

    image = _soften(_crop(_photo(spec.background), size, rng), size)
    shade = 0.8 + 0.4 * _crop(_photo(spec.texture), size, rng)[..., :1]   # multiplicative texture on the object
    colour = np.where(part[..., None], np.array(spec.part_rgb), np.array(spec.body_rgb)) / 255.0
    image = np.where(body[..., None], np.clip(colour * shade, 0, 1), image)
    mask = body.astype(np.uint8) + part.astype(np.uint8)
    return (image * 255 + 0.5).astype(np.uint8), mask


def scene_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """Independent, order-free randomness per (seed, class, image): any subset can be regenerated alone."""
    return np.random.default_rng([seed, label, index])


@one_writer_at_a_time
def write_imagefolder_twin(root, wnids: list[str], per_class: int, *, split: str = "train", size: int = 96,
                           seed: int = 0, progress: bool = True) -> Path:
    """Write a synthetic twin of an ImageNet-style subset.

    Args:
        root: output root; images go to ``<root>/<split>/<wnid>/<wnid>_<index:05d>.JPEG``.
        wnids: class folder names in label order (e.g. ``manifest.wnids``); at most 50.
        per_class: images per class.
        size: image side in pixels.
        seed: generator seed; the same arguments always give the same files.

    Returns the root. Already complete roots (same arguments, recorded in ``<root>/synthetic.json``) are
    left untouched, so calling this again is cheap.
    """
    root = Path(root)
    meta = {"generator_version": GENERATOR_VERSION, "wnids": list(wnids), "per_class": per_class,
            "split": split, "size": size, "seed": seed}
    if is_complete(root, meta):
        return root
    if len(wnids) > len(SHAPES) * len(PATTERNS):
        raise ValueError(f"The generator has {len(SHAPES) * len(PATTERNS)} classes; got {len(wnids)} wnids.")
    jobs = [(label, wnid, i) for label, wnid in enumerate(wnids) for i in range(per_class)]
    for label, wnid, i in tqdm(jobs, desc=f"synthetic {split}", disable=not progress, unit="img"):
        rng = scene_rng(seed, label, i)
        image, mask = render_scene(sample_scene(label, rng), size, rng)
        stem = f"{wnid}_{i:05d}"
        for sub, arr, ext, kw in ((split, image, ".JPEG", {"quality": 92}), ("masks", mask, ".png", {})):
            out = root / sub / wnid / f"{stem}{ext}"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(out, **kw)
    mark_complete(root, meta)
    return root

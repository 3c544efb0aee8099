"""In-memory synthetic scene sets for training and evaluating the mini-zoo.

Scenes come from :mod:`vitscope.data.synthetic` (the same generator that writes the book's ImageNet-50 twin), are
rendered at ``render_size`` and resized to ``size`` with PIL bicubic (antialiased), as the book's eval transform
resizes its 96 px JPEGs to 64 px. A set is cached once under ``cache/zoo/data/`` as safetensors, keyed by every
argument and the generator version.

Seeds keep the splits disjoint: the book's demo data use seed 0, zoo training uses ``TRAIN_SEED`` and the held-out
evaluation set ``HELDOUT_SEED``. Because ``scene_rng(seed, label, index)`` is order-free, the k-NN reference split
(``TRAIN_SEED``, first ``per_class`` images of each class) is a subset of the training images, as ImageNet-train is
DINO's k-NN reference.
"""
from __future__ import annotations

import json
import multiprocessing
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from ..data import synthetic as syn
from ..models.registry import ZOO_PREPROCESS
from ..validation import check_int

TRAIN_SEED = 1000
HELDOUT_SEED = 2000
IMAGE_SIZE = ZOO_PREPROCESS.crop      # the registry's zoo preprocessing, defined once
RENDER_SIZE = 96
NUM_CLASSES = len(syn.SHAPES) * len(syn.PATTERNS)
#: The demo models' input normalisation (registry ``_DEMO_PRE``: mean = std = 0.5).
MEAN, STD = ZOO_PREPROCESS.mean, ZOO_PREPROCESS.std

# Attribute vocabularies stored per image as integer codes (captions are built from them).
BACKGROUNDS = syn.BACKGROUNDS
TEXTURES = syn._TEXTURES
#: Named colours for captions (nearest in RGB); nuisance words the image-text model can also learn.
COLOUR_NAMES = {"red": (200, 40, 40), "green": (50, 160, 60), "blue": (40, 60, 200), "yellow": (220, 210, 50),
                "cyan": (50, 200, 210), "magenta": (200, 50, 190), "orange": (230, 130, 30),
                "purple": (110, 50, 160), "brown": (120, 80, 40), "white": (230, 230, 230),
                "black": (25, 25, 25), "gray": (128, 128, 128), "pink": (240, 150, 180), "olive": (120, 120, 40)}


@dataclass
class SceneSet:
    """Rendered scenes: ``images`` uint8 [N, 3, S, S]; ``labels`` int64 [N]; ``attrs`` int64 [N, 6] holding
    (shape, pattern, body colour, part colour, background, texture) codes (see ``ATTR_VOCABS``); ``masks`` uint8
    [N, S, S] (0 background, 1 object body, 2 part; nearest-neighbour resized)."""

    images: Tensor
    labels: Tensor
    attrs: Tensor
    meta: dict
    masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


ATTR_NAMES = ("shape", "pattern", "body_colour", "part_colour", "background", "texture")
ATTR_VOCABS = (syn.SHAPES, syn.PATTERNS, tuple(COLOUR_NAMES), tuple(COLOUR_NAMES), BACKGROUNDS, TEXTURES)


def colour_name(rgb) -> int:
    """Index into ``COLOUR_NAMES`` of the named colour nearest to ``rgb`` (Euclidean in RGB)."""
    ref = np.array(list(COLOUR_NAMES.values()), dtype=np.float64)
    return int(np.argmin(((ref - np.asarray(rgb, dtype=np.float64)) ** 2).sum(1)))


def spec_attrs(spec: syn.SceneSpec) -> list[int]:
    """The integer attribute codes of one scene (order: ``ATTR_NAMES``)."""
    return [syn.SHAPES.index(spec.shape), syn.PATTERNS.index(spec.pattern), colour_name(spec.body_rgb),
            colour_name(spec.part_rgb), BACKGROUNDS.index(spec.background), TEXTURES.index(spec.texture)]


def render_one(label: int, index: int, seed: int, size: int, render_size: int):
    """Render scene (seed, label, index): uint8 image [3, size, size], its attribute codes and uint8 mask."""
    rng = syn.scene_rng(seed, label, index)
    spec = syn.sample_scene(label, rng)
    image, mask = syn.render_scene(spec, render_size, rng)
    if render_size != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return np.ascontiguousarray(image.transpose(2, 0, 1)), spec_attrs(spec), mask


def _render_job(job: tuple[int, int], *, seed: int, size: int, render_size: int):
    return render_one(job[0], job[1], seed, size, render_size)


def default_cache_dir() -> Path:
    """``<cache root>/zoo`` (:func:`vitscope.paths.cache_root`)."""
    from ..paths import cache_root
    return cache_root() / "zoo"


def render_set(per_class: int, seed: int, *, size: int = IMAGE_SIZE, render_size: int = RENDER_SIZE,
               num_classes: int = NUM_CLASSES, cache_dir: str | Path | None = None,
               progress: bool = True, workers: int = 1) -> SceneSet:
    """``per_class`` scenes of each of the first ``num_classes`` classes, class-major order (label, index).

    Cached at ``<cache_dir>/data/<key>.safetensors`` (``cache_dir=None``: :func:`default_cache_dir`); the key holds
    every argument and ``GENERATOR_VERSION``, so a changed generator never reuses stale pixels. ``workers`` > 1
    renders in that many processes (about 18 ms per scene on one core); every scene is a function of
    (seed, label, index) alone, so the pixels are the same for any number of workers.
    """
    if not 1 <= num_classes <= NUM_CLASSES:
        raise ValueError(f"num_classes must be in [1, {NUM_CLASSES}]; got {num_classes}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1; got {per_class}")
    check_int(workers, "workers")
    meta = {"generator_version": syn.GENERATOR_VERSION, "per_class": per_class, "seed": seed, "size": size,
            "render_size": render_size, "num_classes": num_classes}
    key = "scenes-v{generator_version}-s{seed}-n{per_class}-c{num_classes}-{render_size}to{size}".format(**meta)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "data" / f"{key}.safetensors"
    if path.is_file():
        t = load_file(str(path))
        if "masks" in t:   # files written before masks were stored are rendered again
            return SceneSet(t["images"], t["labels"], t["attrs"], meta, t["masks"])
    n = per_class * num_classes
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    attrs = np.empty((n, len(ATTR_NAMES)), dtype=np.int64)
    masks = np.empty((n, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(num_classes), per_class)
    jobs = [(label, i) for label in range(num_classes) for i in range(per_class)]
    render = partial(_render_job, seed=seed, size=size, render_size=render_size)
    with (multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else nullcontext()) as pool:
        results = pool.imap(render, jobs, chunksize=64) if pool is not None else map(render, jobs)
        for j, r in enumerate(tqdm(results, total=n, desc=f"render seed={seed}", disable=not progress, unit="img")):
            images[j], attrs[j], masks[j] = r
    out = SceneSet(torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(attrs), meta,
                   torch.from_numpy(masks))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"images": out.images, "labels": out.labels, "attrs": out.attrs, "masks": out.masks}, str(tmp),
              metadata={"meta": json.dumps(meta)})
    tmp.replace(path)   # atomic: a killed render never leaves a half-written cache entry
    return out


def to_model_input(images_u8: Tensor, device=None) -> Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, H, W] normalised with ``MEAN``/``STD`` (what the shipped models expect)."""
    x = images_u8.to(device=device, dtype=torch.float32) / 255.0
    return normalize(x)


def normalize(x: Tensor) -> Tensor:
    """[0, 1] float images -> model input: ``(x - MEAN) / STD`` per channel."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std

"""ImageNet-style folders selected by a manifest: ``<root>/<split>/<wnid>/<file>.JPEG``.

This is the loader for the real ImageNet-50 subset and for its synthetic twin: both are read by the same code.
Every image is read by :func:`read_rgb`, which turns any PIL mode into 8-bit RGB as a viewer would show it.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from torch.utils.data import Dataset

from .manifest import Manifest

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def select_files(class_dir: Path, per_class: int) -> list[Path]:
    """The manifest's selection rule: the first ``per_class`` image files of a folder, sorted lexically."""
    files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files[:per_class]


def _split_dir(root: Path, manifest: Manifest) -> Path:
    """Accept either the dataset root (holding ``<split>/``) or the split folder itself."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset root {root} does not exist. Expected the {manifest.title} layout "
                                f"<root>/{manifest.split}/<wnid>/<file>.JPEG (see {manifest.path}).")
    first = manifest.wnids[0]
    for candidate in (root / manifest.split, root):
        if (candidate / first).is_dir():
            return candidate
    found = sorted(p.name for p in root.iterdir())[:5]
    raise FileNotFoundError(
        f"Dataset root {root} is not in the {manifest.format!r} layout of manifest {manifest.name!r}: no folder "
        f"{manifest.split}/{first}/ (nor {first}/) under it; it holds {found or 'nothing'}. Point the root at the "
        f"folder that contains '{manifest.split}/', whose sub-folders are WordNet ids such as {first}.")


class ImageFolderSubset(Dataset):
    """The images a manifest selects, with integer labels in manifest class order.

    Args:
        root: dataset root (holding ``<split>/<wnid>/``) or the split folder itself.
        manifest: a :class:`Manifest` in ``imagefolder`` format.
        transform: callable applied to each RGB ``PIL.Image`` (e.g. :func:`vitscope.data.eval_transform`).
        per_class: override the manifest's N (smaller subsets for a quick look); ``None`` keeps the manifest's.
        num_classes: use only the first ``num_classes`` classes of the manifest; ``None`` uses all.

    Items are ``(image, label)``; ``samples`` lists ``(path, label)`` in a fixed, class-major order.
    """

    def __init__(self, root, manifest: Manifest, transform: Callable | None = None,
                 per_class: int | None = None, num_classes: int | None = None):
        if manifest.format != "imagefolder":
            raise ValueError(f"Manifest {manifest.name!r} has format {manifest.format!r}, not 'imagefolder'.")
        self.manifest = manifest
        self.per_class = manifest.per_class if per_class is None else int(per_class)
        n_cls = len(manifest.classes) if num_classes is None else int(num_classes)
        if not 1 <= n_cls <= len(manifest.classes):
            raise ValueError(f"num_classes={num_classes} but manifest {manifest.name!r} has "
                             f"{len(manifest.classes)} classes.")
        self.classes = manifest.classes[:n_cls]
        self.root = _split_dir(Path(root), manifest)
        self.transform = transform
        self.samples = self._collect()

    def _collect(self) -> list[tuple[Path, int]]:
        samples, short = [], []
        for label, (wnid, _) in enumerate(self.classes):
            class_dir = self.root / wnid
            if not class_dir.is_dir():
                raise FileNotFoundError(f"Class folder {class_dir} is missing: manifest {self.manifest.name!r} "
                                        f"lists {wnid}. Is the root complete?")
            files = select_files(class_dir, self.per_class)
            if len(files) < self.per_class:
                short.append(f"{wnid} ({len(files)})")
            samples += [(f, label) for f in files]
        if short:
            raise ValueError(f"{len(short)} class folder(s) under {self.root} hold fewer than per_class="
                             f"{self.per_class} images: {', '.join(short[:5])}. Pass a smaller per_class "
                             "or complete the dataset.")
        return samples

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = read_rgb(path)
        return (self.transform(image) if self.transform else image), label


#: The colour transparent pixels are composited on: white, the page such images are drawn to be seen on.
#: (torchvision's and timm's loaders, ``convert("RGB")``, keep the hidden colour of transparent pixels, often black.)
ALPHA_BACKGROUND = (255, 255, 255)
#: Modes holding 16-bit (or wider integer) grey levels, as PIL opens 16-bit PNG and TIFF files.
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: Modes with an alpha channel (premultiplied ``RGBa`` / ``La`` are un-premultiplied by ``convert("RGBA")``).
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: What a broken file raises inside PIL, besides OSError (its plugins use these for malformed headers and chunks).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


def read_rgb(path: Path, background: tuple[int, int, int] = ALPHA_BACKGROUND) -> Image.Image:
    """Open an image as 8-bit RGB, shown as an image viewer shows it.

    - EXIF orientation is applied (``ImageOps.exif_transpose``): a camera's rotated JPEG comes out upright.
    - 16-bit grey (``I;16*``, and ``I`` taken as 0-65535) is scaled to 8 bits, ``round(v / 257)`` (PIL's own
      ``convert`` clips every level above 255 to white).
    - CMYK (JPEG) uses PIL's conversion ``R = (255 - C)(255 - K) / 255`` (Adobe's inverted CMYK is undone by
      PIL's decoder); an embedded ICC profile is not applied.
    - Transparency (``RGBA``, ``LA``, ``PA``, premultiplied modes, palette or grey/RGB images with a transparent
      colour) is alpha-composited on ``background`` (default :data:`ALPHA_BACKGROUND`, white).
    - Every other mode (``1``, ``L``, ``P``, ``YCbCr``, ``F`` clipped to 0-255, ...) goes through ``convert("RGB")``.

    The whole file is decoded here, with PIL's ``LOAD_TRUNCATED_IMAGES`` off for the call even if another library
    switched it on: a truncated, corrupt or unreadable file raises ``OSError`` naming it, never a grey or black image.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im), background)
    except _DECODE_ERRORS as err:
        raise OSError(f"Cannot read image {path}: {type(err).__name__}: {err}. Re-download or delete the file "
                      "(the selection rule then takes the next file of its class).") from err
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _to_rgb(im: Image.Image, background) -> Image.Image:
    if im.mode in WIDE_GREY_MODES:
        grey = np.clip(np.rint(np.asarray(im, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return im.convert("RGB")

"""ImageNet-style folders selected by a manifest: ``<root>/<split>/<wnid>/<file>.JPEG``.

This is the loader for the real ImageNet-50 subset and for its synthetic twin: both are read by the same code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from PIL import Image, UnidentifiedImageError
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


def read_rgb(path: Path) -> Image.Image:
    """Open an image as RGB; a corrupt or unreadable file raises ``OSError`` naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise OSError(f"Cannot read image {path}: {err}. Re-download or delete the file "
                      "(the selection rule then takes the next file of its class).") from err

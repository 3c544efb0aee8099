"""DAVIS-2017 semi-supervised video object segmentation in its real layout (Teaching Matters §6.2).

Layout (the ``DAVIS-2017-trainval-480p.zip`` release, unpacked; ``root`` may be the folder holding ``DAVIS/`` or
``DAVIS/`` itself)::

    DAVIS/ImageSets/2017/val.txt                 one video name per line
    DAVIS/JPEGImages/480p/<video>/00000.jpg ...  frames
    DAVIS/Annotations/480p/<video>/00000.png ... palette PNGs: pixel value = object id (0 background)

Every frame has an annotation (the first is the semi-supervised input, the others are scored). Objects are the ids
``1 .. max`` of the first annotation, as ``davis2017-evaluation`` reads them. The colour palette is the first
annotation file's own (:meth:`DavisVideos.palette`), never fetched from elsewhere. The synthetic twin
(:func:`vitscope.data.twins.davis.write_davis_twin`) is written in this layout, so the demo runs this loader.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FETCH_HINT = "vitscope data fetch davis2017 --root {root}"
#: Pixel value DAVIS reserves for "void" (not an object id).
VOID = 255
_MODES = ("P", "L")    # palette PNGs (the release); single-channel indices are read the same way


@dataclass(frozen=True)
class Video:
    """One video: its name and its frame and annotation files, in frame order."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.frames)


def _missing(what: str, root: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"DAVIS root {root}: {what}. Expected DAVIS/ImageSets/2017/<split>.txt, DAVIS/JPEGImages/480p/<video>/*.jpg "
        f"and DAVIS/Annotations/480p/<video>/*.png; get them with `{FETCH_HINT.format(root=root)}` (or point the "
        "profile's root at a folder in that layout).")


def read_annotation(path) -> torch.Tensor:
    """int64 ``[H, W]`` object ids of a DAVIS annotation (a palette PNG: the pixel values are the ids)."""
    with Image.open(path) as im:
        if im.mode not in _MODES:
            raise ValueError(f"DAVIS annotation {path} is a {im.mode!r} image; DAVIS annotations are palette ('P') "
                             "PNGs whose pixel values are object ids. Re-extract the release, or save indices, "
                             "not colours.")
        return torch.from_numpy(np.asarray(im, dtype=np.int64).copy())


def read_frame(path) -> torch.Tensor:
    """float32 ``[3, H, W]`` RGB in [0, 1] of a frame."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class DavisVideos:
    """The videos of one DAVIS split (default: DAVIS-2017 val, 480p).

    Args:
        root: the folder holding ``DAVIS/`` (as ``vitscope data fetch davis2017`` unpacks it), or ``DAVIS/`` itself.
        split: the list under ``ImageSets/<year>/`` (``"val"``, ``"train"``).
        videos: keep only these names (in the split's order); ``None``: all.
        limit: keep the first ``limit`` videos of the split; ``None``: all.
    """

    def __init__(self, root, split: str = "val", *, year: str = "2017", resolution: str = "480p", videos=None,
                 limit: int | None = None):
        given = Path(root)
        base = given / "DAVIS" if (given / "DAVIS").is_dir() else given
        if not base.is_dir():
            raise _missing("the folder does not exist", given)
        self.base, self.split, self.year, self.resolution = base, split, year, resolution
        listing = base / "ImageSets" / year / f"{split}.txt"
        if not listing.is_file():
            raise _missing(f"no video list {listing.relative_to(base)}", given)
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if videos is not None:
            unknown = sorted(set(videos) - set(names))
            if unknown:
                raise ValueError(f"DAVIS {split} has no videos {unknown}; it lists {len(names)} (see {listing})")
            names = [n for n in names if n in set(videos)]
        if limit is not None:
            names = names[:limit]
        if not names:
            raise ValueError(f"DAVIS {split} selection is empty ({listing}, videos={videos}, limit={limit})")
        self.names = names
        self._videos = {n: self._index(n, given) for n in names}

    def _index(self, name: str, given: Path) -> Video:
        frame_dir = self.base / "JPEGImages" / self.resolution / name
        ann_dir = self.base / "Annotations" / self.resolution / name
        for d in (frame_dir, ann_dir):
            if not d.is_dir():
                raise _missing(f"video {name!r} is listed but {d.relative_to(self.base)} is missing", given)
        frames = tuple(sorted(frame_dir.glob("*.jpg")))
        annotations = tuple(sorted(ann_dir.glob("*.png")))
        if not frames:
            raise _missing(f"video {name!r} has no frames in {frame_dir.relative_to(self.base)}", given)
        if [f.stem for f in frames] != [a.stem for a in annotations]:
            missing = sorted({f.stem for f in frames} - {a.stem for a in annotations})[:5]
            raise ValueError(f"DAVIS video {name!r}: frames and annotations do not pair up (e.g. no annotation for "
                             f"{missing}); every frame of the semi-supervised val set has one. Re-extract the "
                             f"release: `{FETCH_HINT.format(root=given)}`.")
        return Video(name, frames, annotations)

    def __len__(self) -> int:
        return len(self.names)

    def video(self, name: str) -> Video:
        if name not in self._videos:
            raise KeyError(f"no video {name!r} in this selection; it has {self.names}")
        return self._videos[name]

    def frames(self, name: str):
        """``[3, H, W]`` frames of ``name``, lazily, in order."""
        return (read_frame(p) for p in self.video(name).frames)

    def annotations(self, name: str) -> torch.Tensor:
        """int64 ``[T, H, W]`` object ids of every frame of ``name``; each must match its frame's size."""
        video = self.video(name)
        masks = [read_annotation(p) for p in video.annotations]
        with Image.open(video.frames[0]) as im:
            w, h = im.size
        bad = [p.name for p, m in zip(video.annotations, masks) if tuple(m.shape) != (h, w)]
        if bad:
            raise ValueError(f"DAVIS video {name!r}: annotations {bad[:5]} differ in size from the frames ({h} x {w})")
        return torch.stack(masks)

    def object_ids(self, name: str) -> list[int]:
        """The objects of ``name``: ids ``1 .. max`` of its first annotation (void excluded)."""
        first = read_annotation(self.video(name).annotations[0])
        ids = first[first != VOID]
        top = int(ids.max()) if ids.numel() else 0
        if top == 0:
            raise ValueError(f"DAVIS video {name!r}: the first annotation holds no object; the semi-supervised task "
                             "starts from the first frame's objects")
        return list(range(1, top + 1))

    def palette(self, name: str | None = None) -> np.ndarray:
        """uint8 ``[n, 3]`` colours of the first annotation of ``name`` (default: the first video)."""
        path = self.video(name or self.names[0]).annotations[0]
        with Image.open(path) as im:
            flat = im.getpalette()
        if flat is None:     # a single-channel annotation: grey levels
            return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
        return np.asarray(flat, dtype=np.uint8).reshape(-1, 3)

    def video_digest(self, name: str) -> str:
        """16 hex digits of the names and bytes of a video's frames and annotations: its identity in cache keys."""
        h = hashlib.sha256()
        v = self.video(name)
        for p in (*v.frames, *v.annotations):
            h.update(f"{p.parent.parent.name}/{p.name}|".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
        return h.hexdigest()[:16]

    def identity(self) -> dict:
        """What identifies this selection in cache keys: split, resolution, videos and a digest of their files."""
        h = hashlib.sha256("|".join(self.video_digest(n) for n in self.names).encode())
        return {"dataset": "davis", "year": self.year, "split": self.split, "resolution": self.resolution,
                "videos": list(self.names), "files": h.hexdigest()[:16]}


__all__ = ["DavisVideos", "FETCH_HINT", "VOID", "Video", "read_annotation", "read_frame"]

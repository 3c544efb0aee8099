"""Evaluation preprocessing built from a model's registry entry (its ``preprocess``: mean, std and the rest)."""
from __future__ import annotations

from torchvision import transforms as T

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def eval_transform(preprocess) -> T.Compose:
    """Resize(short side) + CenterCrop + ToTensor + Normalize with the model's own mean/std.

    ``preprocess`` is a :class:`vitscope.models.Preprocess`; the output is a float tensor [3, crop, crop].
    """
    if preprocess.interpolation not in _INTERPOLATION:
        raise ValueError(f"Unknown interpolation {preprocess.interpolation!r}; choose from {sorted(_INTERPOLATION)}.")
    return T.Compose([
        T.Resize(preprocess.resize, interpolation=_INTERPOLATION[preprocess.interpolation]),
        T.CenterCrop(preprocess.crop),
        T.ToTensor(),
        T.Normalize(preprocess.mean, preprocess.std),
    ])


def transform_key(preprocess) -> dict:
    """The part of a cache key that describes the transform (everything that changes the pixels)."""
    return {"resize": preprocess.resize, "crop": preprocess.crop, "interpolation": preprocess.interpolation,
            "mean": list(preprocess.mean), "std": list(preprocess.std)}

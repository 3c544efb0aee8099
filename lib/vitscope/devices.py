"""Device choice shared by every layer: the same code runs on CPU and CUDA, the device is a parameter."""
from __future__ import annotations

import torch


def resolve_device(device: str | None) -> str:
    """``"auto"``/``None`` -> CUDA when available else CPU; an explicit CUDA request without CUDA is an error."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but torch sees no CUDA device; use device='cpu'.")
    return str(device)

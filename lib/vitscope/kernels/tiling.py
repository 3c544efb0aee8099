"""Dense features by tiling: the token grid of an image larger than the model's input (Teaching Matters 5.3, 6.2).

The paper's protocol (TM App. B.4): resize the image so its short side is twice the model's input size (448 for
ViT-B/16 at 224), cut it into input-sized windows, run the model on each window, drop the CLS (and any other
prefix) token, and lay the windows' spatial tokens side by side on one grid. Windows start every ``window`` pixels;
the last window of a row or column is aligned to the image's edge, so it may overlap its neighbour. Where windows
overlap, the first window (in row-major order) wins.

A window's tokens land on the image's token grid only if every window starts on a patch boundary. So the resized
sides are rounded to a multiple of the patch size (``tiled_size``); the edge-aligned last window then also starts
on a patch boundary. Shapes below: ``G_h x G_w`` is the whole image's token grid, ``g x g`` a window's
(``g = window // patch``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_int

#: TM: the short side becomes twice the model's input size (448 for a 224 model).
SHORT_SIDE_FACTOR = 2


def tiled_size(height: int, width: int, window: int, patch: int,
               short_side_factor: int = SHORT_SIDE_FACTOR) -> tuple[int, int]:
    """Size ``(H, W)`` in pixels to resize an image of ``height x width`` to before tiling.

    The short side becomes ``short_side_factor * window``; the long side keeps the aspect ratio and is rounded to
    the nearest multiple of ``patch`` (at least ``window``), so every window starts on a patch boundary.
    """
    height, width = check_int(height, "height"), check_int(width, "width")
    window, patch = check_int(window, "window"), check_int(patch, "patch")
    if window % patch:
        raise ValueError(f"window ({window} px) must be a multiple of patch ({patch} px)")
    short = check_int(short_side_factor, "short_side_factor") * window
    scale = short / min(height, width)

    def side(n: int) -> int:
        return max(window, int(round(n * scale / patch)) * patch)
    return (short, side(width)) if height <= width else (side(height), short)


def window_starts(length: int, window: int) -> list[int]:
    """Start offsets (pixels) of the windows along one side: ``0, window, 2 window, ...`` and, if the side is not a
    multiple of ``window``, one last window aligned to the edge (``length - window``)."""
    length, window = check_int(length, "length"), check_int(window, "window")
    if length < window:
        raise ValueError(f"the side ({length} px) is shorter than the window ({window} px); resize with tiled_size")
    starts = list(range(0, length - window + 1, window))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def window_grid(height: int, width: int, window: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every window of an image of ``height x width`` pixels, in row-major order."""
    return [(top, left) for top in window_starts(height, window) for left in window_starts(width, window)]


def assemble_windows(tokens: Tensor, origins: list[tuple[int, int]], image_size: tuple[int, int],
                     patch: int) -> Tensor:
    """Lay window token grids on the image's token grid; where windows overlap, the first window wins.

    Args:
        tokens: ``[n_windows, g, g, C]`` spatial tokens of each window (prefix tokens already dropped).
        origins: ``n_windows`` pixel offsets ``(top, left)``, multiples of ``patch`` (``window_grid``'s order).
        image_size: ``(H, W)`` of the resized image in pixels, multiples of ``patch``.
        patch: patch size in pixels.

    Returns ``[G_h, G_w, C]`` with ``G_h = H // patch``, ``G_w = W // patch``. Every token is covered (an error
    otherwise).
    """
    if tokens.ndim != 4 or tokens.shape[1] != tokens.shape[2]:
        raise ValueError(f"tokens must be [n_windows, g, g, C]; got {tuple(tokens.shape)}")
    if len(origins) != tokens.shape[0]:
        raise ValueError(f"{len(origins)} origins for {tokens.shape[0]} windows")
    patch = check_int(patch, "patch")
    H, W = image_size
    if H % patch or W % patch:
        raise ValueError(f"image_size {image_size} must be multiples of patch ({patch}); resize with tiled_size")
    g = tokens.shape[1]
    out = tokens.new_zeros(H // patch, W // patch, tokens.shape[-1])
    filled = torch.zeros(H // patch, W // patch, dtype=torch.bool, device=tokens.device)
    for win, (top, left) in zip(tokens, origins):
        if top % patch or left % patch:
            raise ValueError(f"window origin {(top, left)} is not on a patch boundary (patch {patch})")
        r, c = top // patch, left // patch
        if r + g > out.shape[0] or c + g > out.shape[1]:
            raise ValueError(f"window at {(top, left)} of {g * patch} px leaves the image {image_size}")
        free = ~filled[r:r + g, c:c + g]
        out[r:r + g, c:c + g][free] = win[free]
        filled[r:r + g, c:c + g] = True
    if not bool(filled.all()):
        raise ValueError("the windows do not cover the image; take origins from window_grid")
    return out

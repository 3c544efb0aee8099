"""Dense token grids of whole images by tiling (TM App. B.4), for object/part purity and video propagation.

``dense_tokens`` resizes an image with ``kernels.tiling.tiled_size``, runs the model once on all of its windows
(one batch), and assembles each requested block's spatial tokens into the image's token grid with
``kernels.tiling.assemble_windows``. Prefix tokens (CLS, registers) are dropped by timm's ``forward_intermediates``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels.tiling import SHORT_SIDE_FACTOR, assemble_windows, tiled_size, window_grid


def model_geometry(model) -> tuple[int, int]:
    """``(window, patch)`` in pixels of a timm ViT: its input size and patch size."""
    pe = getattr(model, "patch_embed", None)
    if pe is None or not hasattr(model, "forward_intermediates"):
        raise TypeError(f"{type(model).__name__} is not a timm VisionTransformer (no patch_embed / "
                        "forward_intermediates); dense tiling needs a ViT")
    window, patch = pe.img_size, pe.patch_size
    if window[0] != window[1] or patch[0] != patch[1]:
        raise ValueError(f"dense tiling needs square inputs and patches; got img_size {window}, patch {patch}")
    return int(window[0]), int(patch[0])


def resize_for_tiling(image: Tensor, window: int, patch: int, short_side_factor: int = SHORT_SIDE_FACTOR) -> Tensor:
    """``image [3, h, w]`` (float, un-normalised) resized bicubically (antialiased) to ``tiled_size``."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, h, w]; got {tuple(image.shape)}")
    size = tiled_size(image.shape[1], image.shape[2], window, patch, short_side_factor)
    return F.interpolate(image[None].float(), size=size, mode="bicubic", antialias=True, align_corners=False)[0]


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """An integer label mask ``[h, w]`` resized to ``size`` by nearest neighbour (labels are never blended)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be [h, w]; got {tuple(mask.shape)}")
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(mask.dtype)


@torch.no_grad()
def dense_tokens(model, image: Tensor, blocks: list[int], *, mean, std, device="cpu",
                 short_side_factor: int = SHORT_SIDE_FACTOR) -> Tensor:
    """Spatial tokens of whole ``image`` at every block in ``blocks``.

    Args:
        model: a timm VisionTransformer in eval mode.
        image: ``[3, h, w]`` float in [0, 1], not normalised.
        blocks: 0-based block indices.
        mean, std: the model's normalisation (3 values each).

    Returns ``[len(blocks), G_h, G_w, C]`` float32 on the CPU, ``G = side // patch`` of the resized image.
    """
    window, patch = model_geometry(model)
    resized = resize_for_tiling(image, window, patch, short_side_factor)
    origins = window_grid(resized.shape[1], resized.shape[2], window)
    norm = (resized - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    windows = torch.stack([norm[:, t:t + window, s:s + window] for t, s in origins]).to(device)
    feats = model.forward_intermediates(windows, indices=list(blocks), output_fmt="NCHW", intermediates_only=True)
    size = (resized.shape[1], resized.shape[2])
    return torch.stack([assemble_windows(f.permute(0, 2, 3, 1).float().cpu(), origins, size, patch) for f in feats])

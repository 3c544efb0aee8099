"""How invariant pooled features are to an augmentation (Objectives Matter 2.2, Fig. 3; App. I, Fig. 17).

OM shows with a diffusion model (RCDM) that joint-embedding features forget an image's horizontal orientation and
reconstruction features keep it. Here it is measured directly. For each image ``i``, ``f_i`` are its features and
``g_i`` those of its augmented copy (e.g. flipped). Both are centred on the dataset mean of the original features
``mu`` (so the direction all images share, large in untrained and late layers, does not count as similarity) and
L2-normalised: ``f^_i``, ``g^_i``. Then

* ``own_i    = <f^_i, g^_i>``: the image against its own augmented copy;
* ``others_i = mean_{j != i} <f^_i, g^_j>``: the image against the augmented copies of every other image, the
  reference level (what mere membership of the dataset gives);
* ``index_i  = (own_i - others_i) / (1 - others_i)``: 1 when the augmented copy's features equal the original's
  (invariance; e.g. a mean over a flip-equivariant token map), 0 when the copy is no closer than another image.

``others`` needs no N x N matrix: ``sum_{j != i} <f^_i, g^_j> = <f^_i, sum_j g^_j> - own_i``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .validation import check_finite


def _check_pair(original, augmented) -> None:
    for name, x in (("original", original), ("augmented", augmented)):
        if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
            got = (tuple(x.shape), x.dtype) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a floating-point tensor [N, ..., D] (images first, features last); "
                             f"got {got}")
        check_finite(x, name)
    if original.shape != augmented.shape:
        raise ValueError(f"original {tuple(original.shape)} and augmented {tuple(augmented.shape)} must have the same "
                         "shape: row i of both is the same image, before and after the augmentation")
    if original.shape[0] < 2:
        raise ValueError(f"original has {original.shape[0]} image(s); the reference level compares each image with "
                         "the others, so at least 2 are needed")


def augmentation_similarity(original: Tensor, augmented: Tensor) -> dict[str, Tensor]:
    """Per image (and per any middle axes, e.g. blocks), the similarity of features to their augmented copy's.

    Args:
        original: [N, ..., D] features of N images (e.g. [N, L, D]: one pooled vector per block).
        augmented: [N, ..., D] the same images' features after the augmentation, row for row.

    Returns ``{"own", "others", "index"}``, each float64 [N, ...] (see the module docstring). Computed in float64.
    """
    _check_pair(original, augmented)
    f, g = original.double(), augmented.double()
    mu = f.mean(0, keepdim=True)
    f_hat = F.normalize(f - mu, dim=-1)
    g_hat = F.normalize(g - mu, dim=-1)
    own = (f_hat * g_hat).sum(-1)                                              # [N, ...]
    n = f.shape[0]
    others = ((f_hat * g_hat.sum(0, keepdim=True)).sum(-1) - own) / (n - 1)    # [N, ...]
    index = (own - others) / (1 - others)
    return {"own": own, "others": others, "index": index}

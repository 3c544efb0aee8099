"""Input checks shared by every kernel (one place, as scikit-learn's ``utils.validation``).

Each check raises ``ValueError`` whose message names the argument, what was expected, what was given and, where
there is one, the fix. Checks return the (possibly reshaped) input so callers can chain them.
"""
from __future__ import annotations

import torch
from torch import Tensor

# The scalar checks live below every layer (the data writers use them too); kernels import them from here.
from ..validation import check_choice, check_int, check_positive  # noqa: F401


def _describe(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def check_finite(x: Tensor, name: str) -> Tensor:
    """``x`` holds no NaN or Inf (a diverged model or a corrupt cache gives such features)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} (shape {tuple(x.shape)}) holds NaN or Inf values; check the model's outputs or "
                         "recompute the cached features")
    return x


def check_features(x, name: str, *, flatten: bool = False, min_rows: int = 1) -> Tensor:
    """A finite floating-point feature matrix ``[n, D]`` (or ``[n, ...]`` flattened to ``[n, D]`` with ``flatten``)."""
    if not isinstance(x, Tensor) or (x.ndim != 2 and not (flatten and x.ndim >= 2)):
        expected = "[n, D] (or [n, ...])" if flatten else "[n, D]"
        raise ValueError(f"{name} must be a tensor {expected}; got {_describe(x)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {x.dtype} (convert with .float())")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} rows (shape {tuple(x.shape)}); at least {min_rows} needed")
    check_finite(x, name)
    return x.reshape(x.shape[0], -1) if flatten else x


def check_same_rows(a: Tensor, b: Tensor, names: tuple[str, str]) -> int:
    """``a`` and ``b`` hold the same examples (same first dimension); returns that n."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same n "
                         "(examples, first dimension)")
    return a.shape[0]


def check_labels(y, n: int, name: str, num_classes: int | None = None) -> Tensor:
    """Integer class labels ``[n]`` in ``[0, num_classes)``."""
    if not isinstance(y, Tensor) or y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        got = (tuple(y.shape), y.dtype) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name} must be an integer tensor [n]; got {got}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but its features have {n} rows")
    if n and int(y.min()) < 0:
        raise ValueError(f"{name} holds negative labels (min {int(y.min())})")
    if num_classes is not None and n and int(y.max()) >= num_classes:
        raise ValueError(f"{name} holds label {int(y.max())} >= num_classes={num_classes}")
    return y

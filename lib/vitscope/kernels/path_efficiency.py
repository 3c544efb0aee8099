"""Path efficiency of fine-tuning (Objectives Matter §2.3, App. G, Fig. 14).

For a group of parameters (one layer type, e.g. every block's ``attn.qkv``), with θ_0 = θ_PT the pre-trained and
θ_E = θ_FT the fine-tuned values and θ_e the values after epoch e:

    efficiency = ‖θ_FT − θ_PT‖ / Σ_{e=1..E} ‖θ_e − θ_{e−1}‖

where ‖·‖ is the L2 norm over every parameter of the group together. By the triangle inequality it lies in [0, 1]:
1 for a straight path (every epoch moves the same way), closer to 0 for a path that wanders or comes back.
Every function here is pure (tensors in, tensors or floats out) and computes in float64.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

#: Layer types of a timm ViT, read from the parameter name (``blocks.3.attn.qkv.weight`` -> ``qkv``).
LAYER_TYPES = ("patch_embed", "pos_embed", "cls_token", "norm1", "qkv", "proj", "norm2", "fc1", "fc2", "norm")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_type(name: str) -> str:
    """The layer type of a timm ViT parameter name: one of :data:`LAYER_TYPES`, else ``"other"``.

    ``blocks.i.attn.qkv.*`` -> ``qkv``; ``blocks.i.attn.proj.*`` -> ``proj``; ``blocks.i.mlp.fc1.*`` -> ``fc1``;
    ``blocks.i.norm1.*`` -> ``norm1``; the final ``norm.*`` / ``fc_norm.*`` -> ``norm``; ``patch_embed.*``,
    ``pos_embed``, ``cls_token`` as named. LayerScale (``ls1``/``ls2``) and anything else -> ``"other"``.
    """
    parts = name.split(".")
    if parts[0] in ("patch_embed", "pos_embed", "cls_token"):
        return parts[0]
    if parts[0] in ("norm", "fc_norm"):
        return "norm"
    if _BLOCK.search(name):
        for kind in ("qkv", "proj", "fc1", "fc2", "norm1", "norm2"):
            if kind in parts:
                return kind
    return "other"


def block_index(name: str) -> int | None:
    """The 1-based block of a parameter name (``blocks.0.*`` -> 1), ``None`` outside the blocks."""
    m = _BLOCK.search(name)
    return int(m.group(1)) + 1 if m else None


def _check_state(theta: Mapping, name: str) -> None:
    if not isinstance(theta, Mapping) or not theta:
        raise ValueError(f"{name} must be a non-empty mapping parameter name -> tensor; got {type(theta).__name__}")
    bad = [k for k, v in theta.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{name}: values of {bad[:3]} are not tensors")


def step_norms(thetas: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Per parameter, the L2 norm of each epoch's step: ``{name: float64 [E]}`` with entry ``e - 1`` =
    ‖θ_e − θ_{e−1}‖ for a trajectory ``thetas`` = [θ_0 (pre-trained), θ_1, ..., θ_E] of state dicts."""
    if len(thetas) < 2:
        raise ValueError(f"thetas must hold the pre-trained state and at least one epoch; got {len(thetas)} state(s)")
    for i, t in enumerate(thetas):
        _check_state(t, f"thetas[{i}]")
    names = list(thetas[0])
    for i, t in enumerate(thetas[1:], 1):
        if set(t) != set(names):
            raise ValueError(f"thetas[{i}] has other parameter names than thetas[0] (differ: "
                             f"{sorted(set(t) ^ set(names))[:5]}); pass state dicts of one architecture")
    return {n: torch.stack([(b[n].double() - a[n].double()).norm() for a, b in zip(thetas[:-1], thetas[1:])])
            for n in names}


def group_by_type(name: str) -> str:
    """Grouping key of :func:`path_efficiency`: the layer type alone (every block's qkv together)."""
    return layer_type(name)


def group_by_type_and_block(name: str) -> str:
    """Grouping key of :func:`path_efficiency`: ``"<type>@<block>"`` (``qkv@3``), or the type outside the blocks."""
    block = block_index(name)
    return layer_type(name) if block is None else f"{layer_type(name)}@{block}"


def path_efficiency(theta_pt: Mapping[str, Tensor], theta_ft: Mapping[str, Tensor],
                    step_norms: Mapping[str, Tensor],
                    group: Callable[[str], str] = group_by_type) -> dict[str, dict[str, float]]:
    """‖θ_FT − θ_PT‖ / Σ_epochs ‖θ_e − θ_{e−1}‖ per parameter group (OM Fig. 14).

    ``theta_pt``, ``theta_ft``: state dicts ``{name: Tensor}`` (same names, same shapes); ``step_norms``:
    ``{name: [E]}`` per-parameter norms of each epoch's step (:func:`step_norms`), E >= 1. ``group`` maps a parameter
    name to its group (default: its layer type, :func:`layer_type`).

    A group's step in epoch e has norm sqrt(Σ_params step_norms[p][e]²) (the norm of the concatenated step), and its
    displacement is the norm of the concatenated θ_FT − θ_PT. Returns ``{group: {"efficiency", "displacement",
    "path_length", "n_params"}}``; a group that never moved (path length 0) gets efficiency NaN.
    """
    _check_state(theta_pt, "theta_pt")
    _check_state(theta_ft, "theta_ft")
    if set(theta_pt) != set(theta_ft) or set(step_norms) != set(theta_pt):
        raise ValueError("theta_pt, theta_ft and step_norms must name the same parameters (differ: "
                         f"{sorted((set(theta_pt) ^ set(theta_ft)) | (set(theta_pt) ^ set(step_norms)))[:5]})")
    epochs = {tuple(torch.as_tensor(v).shape) for v in step_norms.values()}
    if len(epochs) != 1 or len(next(iter(epochs))) != 1 or next(iter(epochs))[0] < 1:
        raise ValueError(f"step_norms must hold one [E] vector (E >= 1) per parameter, the same E for all; got shapes "
                         f"{sorted(epochs)}")
    disp2: dict[str, Tensor] = {}
    steps2: dict[str, Tensor] = {}
    count: dict[str, int] = {}
    for name, pt in theta_pt.items():
        ft = theta_ft[name]
        if ft.shape != pt.shape:
            raise ValueError(f"parameter {name!r}: theta_ft has shape {tuple(ft.shape)}, theta_pt {tuple(pt.shape)}")
        s = torch.as_tensor(step_norms[name], dtype=torch.float64)
        if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
            raise ValueError(f"step_norms[{name!r}] must be finite and >= 0 (norms); got {s.tolist()}")
        g = group(name)
        disp2[g] = disp2.get(g, 0.0) + (ft.double() - pt.double()).pow(2).sum()
        steps2[g] = steps2.get(g, 0.0) + s.pow(2)
        count[g] = count.get(g, 0) + pt.numel()
    out = {}
    for g in disp2:
        displacement = float(disp2[g].sqrt())
        length = float(steps2[g].sqrt().sum())
        out[g] = {"efficiency": displacement / length if length > 0 else float("nan"),
                  "displacement": displacement, "path_length": length, "n_params": count[g]}
    return out

"""Capture the residual-block outputs of a timm CNN (ResNet, ConvNeXt) in one forward pass, as tokens.

Objectives Matter compares ViT blocks with CNN layers by CKA (Fig. 11, App. B.6). So that a CNN layer enters minibatch
CKA exactly as a ViT block does, each block output [B, C, H, W] is handed to the products as a token sequence
[B, H*W, C] with no prefix token (``n_prefix = 0``): :class:`~vitscope.extract.products.GramMatrices` with
``tokens="all"`` then flattens every spatial position of an image into one vector (as it flattens every ViT token),
and ``tokens="mean"`` is the global average pool. A CNN has no CLS token, so ``tokens="cls"`` is refused.

Site ``block`` is the output of every residual block, in forward order (ResNet-50: 3+4+6+3 = 16, ConvNeXt-B:
3+3+27+3 = 36). A *stage* output is its last block's output (a timm stage is its optional downsampling followed by
its blocks), so the stage outputs are the rows ``geometry["stage_ends"]`` of the block rows: :func:`stage_rows`.
"""
from __future__ import annotations

from torch import nn

from .capture import Capture, vit_geometry

#: Capture sites of a CNN (see the module docstring): every residual block's output.
CNN_SITES = ("block",)


def cnn_stages(model: nn.Module) -> list[nn.Sequential]:
    """The residual stages of a timm CNN, each a sequence of blocks: ConvNeXt's ``stages[i].blocks`` or ResNet's
    ``layer1..layer4``."""
    if hasattr(model, "stages") and all(hasattr(s, "blocks") for s in model.stages):
        return [s.blocks for s in model.stages]
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [getattr(model, f"layer{i}") for i in range(1, 5)]
    raise TypeError(f"{type(model).__name__} is neither a timm ViT (.blocks, .patch_embed) nor a timm CNN with "
                    "residual stages (.stages[i].blocks as ConvNeXt, .layer1-.layer4 as ResNet); capture supports "
                    "those families.")


def is_cnn(model: nn.Module) -> bool:
    """True for the timm CNNs :func:`cnn_stages` understands (a ViT has ``.blocks`` and ``.patch_embed``)."""
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return False
    try:
        cnn_stages(model)
    except TypeError:
        return False
    return True


def cnn_geometry(model: nn.Module) -> dict:
    """Layer layout of a timm CNN, in the keys products read from a ViT's geometry: ``depth`` (residual blocks),
    ``n_prefix`` 0 (no CLS), ``embed_dim`` (channels of the last block), and ``stage_ends`` (0-based index of each
    stage's last block) and ``stage_blocks`` (blocks per stage)."""
    stages = cnn_stages(model)
    sizes = [len(s) for s in stages]
    ends = [sum(sizes[:i + 1]) - 1 for i in range(len(sizes))]
    return {"kind": "cnn", "depth": sum(sizes), "n_prefix": 0, "embed_dim": int(model.num_features),
            "stage_ends": tuple(ends), "stage_blocks": tuple(sizes)}


def stage_rows(geometry: dict) -> list[int]:
    """0-based block rows that are stage outputs (each stage's last block), from :func:`cnn_geometry`."""
    return list(geometry["stage_ends"])


class CnnCapture(Capture):
    """:class:`~vitscope.extract.capture.Capture` for a timm CNN: the same interface (``sink``, ``collect``), site
    ``block`` only, each output handed on as tokens [B, H*W, C] (a view: no copy)."""

    def __init__(self, model: nn.Module, sites, sink=None):
        unknown = set(sites) - set(CNN_SITES)
        if unknown:
            raise ValueError(f"capture site(s) {sorted(unknown)} do not exist in a CNN; CNN sites: {CNN_SITES} "
                             "(stage outputs are block rows: stage_rows(geometry))")
        self._blocks = [b for stage in cnn_stages(model) for b in stage]
        self.model, self.sites = model, tuple(sorted(sites))
        self.depth = len(self._blocks)
        self.outputs, self.sink, self._fired, self._handles, self._unfuse = {}, sink, {}, [], None

    def _hook(self, site, block):
        record = super()._hook(site, block)

        def as_tokens(module, inputs, output):
            return record(module, inputs, output.flatten(2).transpose(1, 2))     # [B, C, H, W] -> [B, H*W, C]
        return as_tokens

    def __enter__(self):
        for site in self.sites:
            for i, block in enumerate(self._blocks):
                self._handles.append(block.register_forward_hook(self._hook(site, i)))
        self.reset()
        return self


def capture_for(model: nn.Module, products) -> tuple[type[Capture], dict]:
    """``(capture class, geometry)`` for ``model``: the ViT capture and :func:`vit_geometry` for a timm ViT, the CNN
    capture and :func:`cnn_geometry` for a timm CNN. ``products`` are checked against what a CNN can give."""
    if not is_cnn(model):
        return Capture, vit_geometry(model)
    for product in products:
        if getattr(product, "tokens", None) == "cls":
            raise ValueError(f"product {type(product).__name__} asks for tokens='cls', but "
                             f"{type(model).__name__} is a CNN and has no CLS token; use tokens='all' (every "
                             "spatial position) or 'mean' (global average pool)")
        unknown = set(product.sites) - set(CNN_SITES)
        if unknown:
            raise ValueError(f"product {type(product).__name__} needs site(s) {sorted(unknown)}, which "
                             f"{type(model).__name__} (a CNN) does not have; CNN sites: {CNN_SITES}")
    return CnnCapture, cnn_geometry(model)

"""Capture intermediates of a timm ViT in one forward pass: block outputs, sub-layers, attention maps.

Sites are named uniformly across timm ``VisionTransformer`` and ``Beit`` (the two families the papers use):

=========  ==========================================  ==================
site       module                                      tensor
=========  ==========================================  ==================
``block``  ``blocks[i]`` output                        [B, T, D]
``norm1``  ``blocks[i].norm1`` output (pre-attention)  [B, T, D]
``qkv``    ``blocks[i].attn.qkv`` output               [B, T, 3D]
``fc1``    ``blocks[i].mlp.fc1`` output                [B, T, 4D]
``norm2``  ``blocks[i].norm2`` output (pre-MLP)        [B, T, D]
``attn``   post-softmax attention (``attn_drop`` out)  [B, H, T, T]
=========  ==========================================  ==================

Attention probabilities do not exist under fused attention (``scaled_dot_product_attention``), so capture
switches ``fused_attn`` off for the duration and restores it afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

SITES = {
    "block": "",
    "norm1": "norm1",
    "qkv": "attn.qkv",
    "fc1": "mlp.fc1",
    "norm2": "norm2",
    "attn": "attn.attn_drop",
}


def vit_geometry(model: nn.Module) -> dict:
    """Token layout of a timm ViT: number of blocks, heads, prefix tokens, patch grid and patch size."""
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise TypeError(f"{type(model).__name__} is not a timm ViT (no .blocks / .patch_embed); "
                        "token-level capture supports timm VisionTransformer and Beit models.")
    grid = tuple(model.patch_embed.grid_size)
    patch = model.patch_embed.patch_size
    return {
        "depth": len(model.blocks),
        "num_heads": model.blocks[0].attn.num_heads,
        "embed_dim": model.embed_dim,
        "n_prefix": int(getattr(model, "num_prefix_tokens", 1)),
        "grid": grid,
        "patch_size": int(patch[0] if isinstance(patch, (tuple, list)) else patch),
    }


def has_cls_token(model: nn.Module) -> bool:
    """Whether a timm ViT has a CLS token (token 0; timm ``class_token=False`` models have none, and
    ``num_prefix_tokens`` then counts register tokens only)."""
    return bool(getattr(model, "has_class_token", getattr(model, "cls_token", None) is not None))


@contextmanager
def unfused_attention(model: nn.Module):
    """Temporarily route every attention module through the explicit softmax path."""
    switched = [m for m in model.modules() if hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]
    previous = [m.fused_attn for m in switched]
    try:
        for m in switched:
            m.fused_attn = False
        yield
    finally:
        for m, p in zip(switched, previous):
            m.fused_attn = p


class Capture:
    """Hooks that record the requested sites of every block during one forward pass.

    Usage::

        with Capture(model, {"block", "attn"}) as cap:
            model.forward_features(x)
        cap.outputs["attn"]   # list of [B, H, T, T], one per block

    After each forward, ``outputs[site]`` holds one tensor per block; a site that did not fire once per
    block raises (e.g. BEiT computes qkv with ``F.linear`` and never calls ``attn.qkv``).

    With ``sink``, each output is handed to ``sink(site, block_index, tensor)`` the moment its module returns
    and is not kept: memory then holds one block's tensors, not the whole network's (``collect`` still checks
    that every site fired once per block, and returns empty lists).
    """

    def __init__(self, model: nn.Module, sites, sink=None):
        unknown = set(sites) - set(SITES)
        if unknown:
            raise ValueError(f"Unknown capture site(s) {sorted(unknown)}; known: {sorted(SITES)}.")
        self.model, self.sites = model, tuple(sorted(sites))
        self.depth = len(model.blocks)
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self.sink = sink
        self._fired: dict[str, int] = {}
        self._handles = []
        self._unfuse = unfused_attention(model) if "attn" in self.sites else None

    def _hook(self, site, block):
        def record(_module, _inputs, output):
            output = output[0] if isinstance(output, tuple) else output
            self._fired[site] += 1
            if self.sink is None:
                self.outputs[site].append(output)
            else:
                self.sink(site, block, output)
        return record

    def __enter__(self):
        if self._unfuse is not None:
            self._unfuse.__enter__()
        for site in self.sites:
            for i, block in enumerate(self.model.blocks):
                module = block.get_submodule(SITES[site]) if SITES[site] else block
                self._handles.append(module.register_forward_hook(self._hook(site, i)))
        self.reset()
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._unfuse is not None:
            self._unfuse.__exit__(*exc)
        return False

    def reset(self):
        self.outputs = {site: [] for site in self.sites}
        self._fired = {site: 0 for site in self.sites}

    def collect(self) -> dict[str, list[torch.Tensor]]:
        """The outputs of the last forward pass, checked to hold exactly one tensor per block."""
        for site, fired in self._fired.items():
            if fired != self.depth:
                raise RuntimeError(f"Capture site {site!r} fired {fired} times for {self.depth} blocks; "
                                   f"{type(self.model).__name__} does not expose it as a module call.")
        out = self.outputs
        self.reset()
        return out

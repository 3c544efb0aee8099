"""What every zoo objective shares: the backbone, a token-level forward pass, the Objective interface, EMA.

All six objectives train the SAME timm ``VisionTransformer`` (``BACKBONE_ARCH`` + ``BACKBONE_KWARGS``); heads,
decoders, teachers and text encoders live outside it, so the shipped state dict is the backbone alone and loads
with ``strict=True`` into exactly that configuration (the registry's ``_DEMO_VIT``).

The backbone is built with a fixed 64 px input. Instead of ``dynamic_img_size=True`` (which changes the patch
embedding's output format, though not its keys), objectives call :func:`embed` / :func:`encode`, which run the
backbone's own modules by hand: patch projection, position embedding (bicubically resampled by timm's
``resample_abs_pos_embed`` for other grids, e.g. DINO's 32 px local crops), blocks, final norm. At 64 px this is
exactly ``backbone.forward_features`` (tested).
"""
from __future__ import annotations

import copy
import math

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from ...models.registry import ZOO_ARCH, ZOO_VIT

BACKBONE_ARCH = ZOO_ARCH                   # the registry defines the zoo's architecture once
BACKBONE_KWARGS = dict(ZOO_VIT)
EMBED_DIM = BACKBONE_KWARGS["embed_dim"]
PATCH = BACKBONE_KWARGS["patch_size"]


def create_backbone(**overrides) -> nn.Module:
    """A randomly initialised zoo backbone (timm init, drawn from the global torch RNG). ``overrides`` are for
    tests (e.g. a smaller depth); the shipped models never use them."""
    return timm.create_model(BACKBONE_ARCH, **{**BACKBONE_KWARGS, **overrides})


def embed(backbone: nn.Module, x: Tensor) -> Tensor:
    """Patch embeddings with position embedding added, no CLS: [B, 3, H, W] -> [B, (H/P)*(W/P), D]."""
    tok = backbone.patch_embed.proj(x)                        # [B, D, h, w]
    h, w = tok.shape[-2:]
    tok = backbone.patch_embed.norm(tok.flatten(2).transpose(1, 2))
    return tok + patch_pos_embed(backbone, (h, w))


def patch_pos_embed(backbone: nn.Module, grid: tuple[int, int]) -> Tensor:
    """The patch part of ``pos_embed`` for a ``grid`` of (h, w) tokens: [1, h*w, D] (resampled if needed)."""
    pos = backbone.pos_embed
    if tuple(grid) != tuple(backbone.patch_embed.grid_size):
        pos = resample_abs_pos_embed(pos, new_size=list(grid), old_size=list(backbone.patch_embed.grid_size),
                                     num_prefix_tokens=backbone.num_prefix_tokens)
    return pos[:, backbone.num_prefix_tokens:]


def with_cls(backbone: nn.Module, tokens: Tensor) -> Tensor:
    """Prepend the CLS token (+ its position embedding): [B, L, D] -> [B, 1+L, D]."""
    cls = (backbone.cls_token + backbone.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
    return torch.cat([cls, tokens], dim=1)


def blocks(backbone: nn.Module, x: Tensor) -> Tensor:
    """Transformer blocks + final norm on a token sequence [B, T, D] -> [B, T, D]."""
    return backbone.norm(backbone.blocks(backbone.norm_pre(x)))


def encode(backbone: nn.Module, x: Tensor) -> Tensor:
    """Final normed tokens for images of any size divisible by the patch size: [B,3,H,W] -> [B, 1+L, D]."""
    return blocks(backbone, with_cls(backbone, embed(backbone, x)))


#: Attribute by which a backbone that is not a ViT says how its image embedding is read: ``"gap"`` (set by
#: :func:`vitscope.zoo.cnn.create_cnn_backbone`) makes :func:`cls_token` return the global average pool, so the
#: supervised and MoCo-v3 objectives train a CNN unchanged. ViT backbones do not carry it.
READOUT_ATTR = "zoo_readout"


def cls_token(backbone: nn.Module, x: Tensor) -> Tensor:
    """The CLS token of the final normed output: [B, 3, H, W] -> [B, D] (what the zoo's k-NN / probe use); for a
    CNN backbone (``READOUT_ATTR`` = "gap") its global average pool [B, C] instead."""
    if getattr(backbone, READOUT_ATTR, None) == "gap":
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)
    return encode(backbone, x)[:, 0]


def patchify(x: Tensor, patch: int = PATCH) -> Tensor:
    """[B, C, H, W] -> [B, L, patch*patch*C] in row-major token order (MAE's layout: (p, q, c) per patch)."""
    B, C, H, W = x.shape
    h, w = H // patch, W // patch
    x = x.reshape(B, C, h, patch, w, patch)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(B, h * w, patch * patch * C)


def mlp(dims: list[int], bn: bool = False, last_bn: bool = False) -> nn.Sequential:
    """Linear layers of ``dims`` with GELU (and BatchNorm if ``bn``) between them; ``last_bn`` adds an
    affine-free BatchNorm after the last layer (MoCo-v3's projector)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=not (bn and (not last or last_bn))))
        if not last:
            layers += [nn.BatchNorm1d(b)] if bn else []
            layers.append(nn.GELU())
        elif last_bn:
            layers.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*layers)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off (EMA teacher / momentum encoder)."""
    twin = copy.deepcopy(module)
    twin.zoo_frozen = True   # the trainer leaves these out of the optimiser
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * source, parameter by parameter (buffers copied)."""
    # One fused call per list instead of two kernels per tensor: the same arithmetic, a fraction of the launches.
    targets, sources = list(target.parameters()), [s.detach() for s in source.parameters()]
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, sources, alpha=1 - momentum)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)


def cosine_to_one(base: float, progress: float) -> float:
    """DINO / MoCo-v3 momentum schedule: ``base`` at progress 0 rising to 1.0 at progress 1 (half cosine)."""
    return 1 - (1 - base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2


def ramped_view_kw(progress: float, bg_swap_p: float, hue: float, hue_start: float, ramp: float) -> dict:
    """Curriculum for the joint-embedding views: background-swap probability 0 -> ``bg_swap_p`` and hue range
    ``hue_start`` -> ``hue`` linearly over the first ``ramp`` fraction of training (kwargs of ``augment.ssl_view``)."""
    r = min(1.0, progress / ramp) if ramp > 0 else 1.0
    return dict(bg_swap_p=bg_swap_p * r, hue=hue_start + (hue - hue_start) * r)


class Objective(nn.Module):
    """A training objective around a zoo backbone.

    Subclasses set ``name``, ``family`` and ``HPARAMS`` (their named constants, recorded in the model card) and
    implement :meth:`loss`. ``self.backbone`` is the shipped network; every other submodule is training-only.
    ``loss`` draws all its randomness from ``gen`` (a CPU generator private to the step).
    """

    name = "objective"
    family = ""
    HPARAMS: dict = {}
    #: The feature the card's headline k-NN / probe numbers read (``zoo.evaluate.READOUTS``). The masked-image
    #: models override it with "gap": their losses sit on patch tokens, so the CLS output is never trained as an
    #: image summary (BEiT probes mean-pooled tokens; OM reports CLS and GAP). Every card records both readouts.
    readout = "cls"
    #: What was tried for this recipe, with measured effects (the module's ``TRIED``, where it has one): the zoo
    #: page quotes it while the model misses its goal.
    tried = ""

    def __init__(self, backbone: nn.Module, data_meta: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.data_meta = data_meta or {}

    def loss(self, images: Tensor, labels: Tensor, attrs: Tensor, gen: torch.Generator,
             progress: float, masks: Tensor | None = None) -> Tensor:
        """Scalar loss for a batch: ``images`` float [B, 3, 64, 64] in [0, 1] (not yet normalised), ``labels``
        [B], ``attrs`` [B, 6] (see ``zoo.data.ATTR_NAMES``), ``masks`` [B, 64, 64] object masks (only the
        background augmentation of the joint-embedding objectives reads them); ``progress`` = step / total steps."""
        raise NotImplementedError

    def prepare(self, train_set, cache_dir) -> None:
        """Called once before training with the training ``SceneSet`` (BEiT fits its tokenizer here)."""

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step (EMA updates)."""

    def hparams(self) -> dict:
        return dict(self.HPARAMS)

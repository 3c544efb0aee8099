"""Masked autoencoder (MAE, He et al. 2022), scaled down to 64 px scenes (8 x 8 patches of 8 px).

``MASK_RATIO`` of the patches are dropped per image (random shuffle drawn from the step's generator); the encoder
(the shipped backbone, run by hand through its patch embedding, position embedding, blocks and norm) sees only the
visible patches plus CLS; a light decoder (``DECODER_DEPTH`` timm blocks of width ``DECODER_DIM``, learned
position embedding) gets mask tokens at the dropped positions and predicts pixels; the loss is the MSE on
per-patch normalised pixels (MAE's ``norm_pix_loss``) over masked patches only. As in MAE, the CLS token receives
no direct training signal.
"""
from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from .. import augment
from ..data import normalize
from .common import EMBED_DIM, PATCH, Objective, blocks, embed, patchify, with_cls

MASK_RATIO = 0.75
CROP_SCALE = (0.2, 1.0)
DECODER_DIM, DECODER_DEPTH, DECODER_HEADS = 128, 2, 4
NORM_PIX_EPS = 1e-6


def random_keep(B: int, L: int, keep: int, gen: torch.Generator):
    """MAE's per-sample random masking: (ids_keep [B, keep], mask [B, L] with 1 = dropped), from ``gen``."""
    ids_shuffle = torch.argsort(torch.rand(B, L, generator=gen), dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(B, L)
    mask.scatter_(1, ids_keep, 0.0)
    return ids_keep, mask


class MAE(Objective):
    name = "mae"
    family = "masked-reconstruction"
    readout = "gap"
    HPARAMS = dict(mask_ratio=MASK_RATIO, crop_scale=CROP_SCALE, decoder_dim=DECODER_DIM,
                   decoder_depth=DECODER_DEPTH, decoder_heads=DECODER_HEADS, norm_pix_loss=True)

    def __init__(self, backbone, data_meta=None):
        super().__init__(backbone, data_meta)
        n_patches = backbone.patch_embed.num_patches
        self.decoder_embed = nn.Linear(EMBED_DIM, DECODER_DIM)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DECODER_DIM))
        self.decoder_pos = nn.Parameter(torch.randn(1, 1 + n_patches, DECODER_DIM) * 0.02)
        self.decoder = nn.Sequential(*[Block(DECODER_DIM, DECODER_HEADS, mlp_ratio=4.0, qkv_bias=True)
                                       for _ in range(DECODER_DEPTH)])
        self.decoder_norm = nn.LayerNorm(DECODER_DIM)
        self.decoder_pred = nn.Linear(DECODER_DIM, PATCH * PATCH * 3)
        nn.init.normal_(self.mask_token, std=0.02)

    def loss(self, images, labels, attrs, gen, progress, masks=None):
        x = augment.random_resized_crop(images, images.shape[-1], gen, scale=CROP_SCALE)
        tokens = embed(self.backbone, normalize(x))                          # [B, L, D]
        B, L, D = tokens.shape
        ids_keep, mask = random_keep(B, L, int(round(L * (1 - MASK_RATIO))), gen)
        ids_keep, mask = ids_keep.to(x.device), mask.to(x.device)
        visible = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))
        latent = blocks(self.backbone, with_cls(self.backbone, visible))     # [B, 1+keep, D]

        dec = self.decoder_embed(latent)
        full = self.mask_token.to(dec.dtype).expand(B, L, -1).clone()        # mask tokens everywhere ...
        full.scatter_(1, ids_keep.unsqueeze(-1).expand(-1, -1, DECODER_DIM), dec[:, 1:])  # ... but the visible
        dec = torch.cat([dec[:, :1], full], dim=1) + self.decoder_pos
        pred = self.decoder_pred(self.decoder_norm(self.decoder(dec)))[:, 1:]   # [B, L, P*P*3]

        target = patchify(x)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + NORM_PIX_EPS).sqrt()
        per_patch = ((pred.float() - target) ** 2).mean(-1)
        return (per_patch * mask).sum() / mask.sum()

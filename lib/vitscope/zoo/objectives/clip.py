"""Image-text contrastive learning (the CLIP analogue) with captions written from each scene's attributes.

A caption always names the class (shape + part pattern) and, each with probability ``NUISANCE_P``, some nuisance
attributes (body colour, part colour, background photo, texture), in one of a few templates, e.g.
"a photo of a red star with dots on a coffee background". A small text transformer (word embeddings, learned
positions, ``TEXT_LAYERS`` pre-norm layers, mean pooling over words) and linear projections map both sides to a
``JOINT_DIM`` space; the loss is CLIP's symmetric InfoNCE with a learnable temperature (init 0.07, logit scale
capped at 100). Images get a mild crop + flip only: captions describe colours, so no colour jitter.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import augment
from ..data import ATTR_VOCABS, normalize
from .common import EMBED_DIM, Objective, cls_token

CROP_SCALE = (0.5, 1.0)
NUISANCE_P = 0.5
TEXT_DIM, TEXT_LAYERS, TEXT_HEADS, MAX_WORDS = 128, 2, 4, 16
JOINT_DIM = 128
INIT_TEMPERATURE, MAX_LOGIT_SCALE = 0.07, 100.0

PATTERN_WORDS = {"plain": "plain", "stripes": "with stripes", "dots": "with dots", "eye": "with an eye",
                 "cap": "with a cap"}
BACKGROUND_WORDS = {"astronaut": "astronaut", "coffee": "coffee", "chelsea": "cat", "rocket": "rocket",
                    "hubble_deep_field": "space", "immunohistochemistry": "cells", "china.jpg": "temple",
                    "flower.jpg": "flower"}
TEMPLATES = ("a {body} {shape} {pattern} {part} {background} {texture}",
             "a photo of a {shape} {pattern} {body} {part} {texture} {background}",
             "{background} {body} {shape} {pattern} {texture} {part}")
PAD = "<pad>"


def _vocabulary() -> list[str]:
    words = {w for t in TEMPLATES for w in t.split() if not w.startswith("{")}
    words |= {"on", "background", "texture", "parts", "body", "a", "photo", "of"}
    words |= set(ATTR_VOCABS[0]) | set(ATTR_VOCABS[2]) | set(ATTR_VOCABS[5])
    words |= {w for p in PATTERN_WORDS.values() for w in p.split()} | set(BACKGROUND_WORDS.values())
    return [PAD] + sorted(words)


VOCAB = _vocabulary()
WORD_ID = {w: i for i, w in enumerate(VOCAB)}


def caption(attrs: list[int], template: int, keep: list[bool]) -> str:
    """The caption of one scene: ``attrs`` as in ``zoo.data.ATTR_NAMES``; ``keep`` = [body colour, part colour,
    background, texture] switches; ``template`` indexes ``TEMPLATES``."""
    shape, pattern, body, part, bg, tex = (vocab[a] for vocab, a in zip(ATTR_VOCABS, attrs))
    fill = dict(shape=shape, pattern=PATTERN_WORDS[pattern], body=body if keep[0] else "",
                part=f"{part} parts" if keep[1] and pattern != "plain" else "",
                background=f"on {BACKGROUND_WORDS[bg]} background" if keep[2] else "",
                texture=f"{tex} texture" if keep[3] else "")
    return " ".join(TEMPLATES[template].format(**fill).split())


def tokenize(captions: list[str]) -> torch.Tensor:
    """Word ids [B, MAX_WORDS], 0-padded (captions are short by construction; longer ones are cut)."""
    ids = torch.zeros(len(captions), MAX_WORDS, dtype=torch.long)
    for i, c in enumerate(captions):
        words = [WORD_ID[w] for w in c.split()][:MAX_WORDS]
        ids[i, :len(words)] = torch.tensor(words)
    return ids


def sample_captions(attrs: torch.Tensor, gen: torch.Generator) -> list[str]:
    """One caption per row of ``attrs`` [B, 6], template and nuisance words drawn from ``gen``."""
    B = attrs.shape[0]
    templates = torch.randint(len(TEMPLATES), (B,), generator=gen).tolist()
    keep = (torch.rand(B, 4, generator=gen) < NUISANCE_P).tolist()
    return [caption(a, t, k) for a, t, k in zip(attrs.tolist(), templates, keep)]


class TextEncoder(nn.Module):
    """Word ids [B, T] -> text embedding [B, TEXT_DIM] (pre-norm transformer, mean over non-pad words)."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(len(VOCAB), TEXT_DIM, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(1, MAX_WORDS, TEXT_DIM) * 0.02)
        layer = nn.TransformerEncoderLayer(TEXT_DIM, TEXT_HEADS, 2 * TEXT_DIM, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.layers = nn.TransformerEncoder(layer, TEXT_LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(TEXT_DIM)

    def forward(self, ids):
        pad = ids == 0
        x = self.layers(self.tok(ids) + self.pos[:, :ids.shape[1]], src_key_padding_mask=pad)
        w = (~pad).unsqueeze(-1).float()
        return self.norm((x * w).sum(1) / w.sum(1).clamp(min=1))


class CLIP(Objective):
    name = "clip"
    family = "image-text"
    HPARAMS = dict(crop_scale=CROP_SCALE, nuisance_p=NUISANCE_P, text_dim=TEXT_DIM, text_layers=TEXT_LAYERS,
                   text_heads=TEXT_HEADS, max_words=MAX_WORDS, joint_dim=JOINT_DIM,
                   init_temperature=INIT_TEMPERATURE, max_logit_scale=MAX_LOGIT_SCALE, vocab_size=len(VOCAB),
                   templates=list(TEMPLATES))

    def __init__(self, backbone, data_meta=None):
        super().__init__(backbone, data_meta)
        self.text = TextEncoder()
        self.image_proj = nn.Linear(EMBED_DIM, JOINT_DIM, bias=False)
        self.text_proj = nn.Linear(TEXT_DIM, JOINT_DIM, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / INIT_TEMPERATURE)))

    def loss(self, images, labels, attrs, gen, progress, masks=None):
        x = augment.random_resized_crop(images, images.shape[-1], gen, scale=CROP_SCALE)
        img = F.normalize(self.image_proj(cls_token(self.backbone, normalize(x))), dim=-1)
        ids = tokenize(sample_captions(attrs.cpu(), gen)).to(images.device)
        txt = F.normalize(self.text_proj(self.text(ids)), dim=-1)
        scale = self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
        logits = scale * img @ txt.T                              # [B, B]; the diagonal holds the true pairs
        target = torch.arange(len(logits), device=logits.device)
        # Two images of one class may draw the same caption (no nuisance words); CLIP's loss still treats only the
        # diagonal as positive, and so do we.
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

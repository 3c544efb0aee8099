"""Fully supervised (the FS analogue): cross-entropy on the class label from a linear head on the CLS token.

As DeiT/augreg-style supervised ViT training, scaled down: random resized crop + flip + light colour jitter,
label smoothing. The head is training-only; the shipped backbone ends at the final norm (``num_classes=0``).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .. import augment
from ..data import NUM_CLASSES, normalize
from .common import EMBED_DIM, Objective, cls_token

CROP_SCALE = (0.35, 1.0)       # RandomResizedCrop area range (ImageNet recipes use 0.08-1 on 224 px images)
JITTER_P = 0.5                 # colour jitter probability: colour is a nuisance variable of the classes
LABEL_SMOOTHING = 0.1


class Supervised(Objective):
    name = "supervised"
    family = "supervised"
    HPARAMS = dict(crop_scale=CROP_SCALE, jitter_p=JITTER_P, label_smoothing=LABEL_SMOOTHING, head="linear on CLS")

    def __init__(self, backbone, data_meta=None):
        super().__init__(backbone, data_meta)
        self.head = nn.Linear(EMBED_DIM, (data_meta or {}).get("num_classes", NUM_CLASSES))

    def loss(self, images, labels, attrs, gen, progress, masks=None):
        x = augment.random_resized_crop(images, images.shape[-1], gen, scale=CROP_SCALE)
        x = augment.color_jitter(x, gen, p=JITTER_P)
        logits = self.head(cls_token(self.backbone, normalize(x)))
        return F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)

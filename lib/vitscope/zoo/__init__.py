"""The mini-zoo: small ViTs trained by vitscope on its synthetic scenes, one per supervision family.

All six share one timm ``VisionTransformer`` configuration (``BACKBONE_ARCH`` + ``BACKBONE_KWARGS``: 64 px input,
8 px patches, width 192, depth 6, 6 heads, no classifier), so only the training objective differs:

=================  =========================  ==============================================
name               family                     objective (``vitscope.zoo.objectives``)
=================  =========================  ==============================================
zoo-supervised     supervised                 cross-entropy on labels (FS analogue)
zoo-clip           image-text                 symmetric InfoNCE with attribute captions
zoo-dino           self-distillation          DINO multi-crop self-distillation
zoo-mocov3         contrastive                MoCo-v3 momentum contrast
zoo-mae            masked-reconstruction      MAE, 75 % masking, normalised-pixel MSE
zoo-beit           masked-token-prediction    BEiT-style code prediction (k-means tokenizer)
=================  =========================  ==============================================

Weights ship as ``weights/zoo-<name>.safetensors`` (fp16 backbone state dict, strict-loadable) with a JSON model
card beside each. Retrain with ``vitscope zoo train --all`` (:func:`vitscope.zoo.train.main`; about 88 minutes on
2 CPU cores). The page *The mini-zoo* of the book renders the cards; :mod:`vitscope.zoo.cards` reads them.
"""
from __future__ import annotations

from pathlib import Path

from .objectives import BACKBONE_ARCH, BACKBONE_KWARGS, OBJECTIVES, create_backbone

MODEL_NAMES = [f"zoo-{n}" for n in OBJECTIVES]


def weights_dir() -> Path:
    """The package folder holding the shipped zoo weights and cards."""
    return Path(__file__).resolve().parent / "weights"


def weights_path(name: str) -> Path:
    """``weights/zoo-<name>.safetensors`` for ``name`` given with or without the ``zoo-`` prefix."""
    return weights_dir() / f"zoo-{name.removeprefix('zoo-')}.safetensors"


__all__ = ["BACKBONE_ARCH", "BACKBONE_KWARGS", "MODEL_NAMES", "OBJECTIVES", "create_backbone", "weights_dir",
           "weights_path"]

"""The zoo's training objectives, one per supervision family of the papers.

``OBJECTIVES`` maps a zoo model name to its :class:`~.common.Objective` class; each module names its constants at
the top (as the official DINO / MAE scripts do) and records them in the model card via ``HPARAMS``.
"""
from .beit import BEiT
from .clip import CLIP
from .common import BACKBONE_ARCH, BACKBONE_KWARGS, Objective, cls_token, create_backbone, encode
from .dino import DINO
from .mae import MAE
from .mocov3 import MoCoV3
from .supervised import Supervised

OBJECTIVES: dict[str, type[Objective]] = {c.name: c for c in (Supervised, CLIP, DINO, MoCoV3, MAE, BEiT)}

__all__ = ["BACKBONE_ARCH", "BACKBONE_KWARGS", "OBJECTIVES", "Objective", "cls_token", "create_backbone", "encode"]

"""Detection training recipes: ViTDet's COCO recipe (the paper profile) and the offline demo's.

A recipe is data: every value that changes the trained detector is a field, so its digest (with the backbone's
weights identity, the mode and the data) names the run's cache folder.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

# ------------------------------------------ ViTDet, Mask R-CNN ViT-B, 100 epochs (Li et al. 2022, App. A.2 and the
# detectron2 config projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py), which OM App. B.7 uses
VITDET_ITERS = 184375                 # 100 epochs of COCO train2017 at batch 64
VITDET_BATCH = 64
VITDET_LR = 1e-4
VITDET_WEIGHT_DECAY = 0.1
VITDET_LAYER_DECAY = 0.7
VITDET_DROP_PATH = 0.1
VITDET_WARMUP_ITERS = 250
VITDET_LR_STEPS = (163889 / VITDET_ITERS, 177546 / VITDET_ITERS)   # x0.1 at 88.9 % and 96.3 % of training
VITDET_IMAGE = 1024
VITDET_LSJ = (0.1, 2.0)               # large-scale jitter: resize by U(0.1, 2.0) of 1024 / longer side, crop 1024
VITDET_ANCHORS = (32 / 1024, 64 / 1024, 128 / 1024, 256 / 1024, 512 / 1024)   # anchor side / image side


@dataclass(frozen=True)
class Recipe:
    """Mask R-CNN training on a ViTDet pyramid (:func:`vitscope.detection.vitdet.build_detector` takes the head
    fields). AdamW; the learning rate warms up linearly over ``warmup_iters`` then drops x0.1 at each fraction of
    ``lr_steps``; ``layer_decay`` scales ViT block i's rate by ``layer_decay ** (depth + 1 - i)`` (fine-tuned mode
    only; the frozen backbone has no rate). ``lsj``: large-scale jitter range, or ``None`` (flips only).
    ``train_images``: use the first N training images (``None``: all)."""

    name: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    layer_decay: float
    drop_path: float
    warmup_iters: int
    lr_steps: tuple[float, ...]
    image_size: int
    lsj: tuple[float, float] | None
    hflip: float
    channels: int
    box_convs: int
    box_fc: int
    mask_convs: int
    anchor_fractions: tuple[float, ...]
    rpn_pre_nms: tuple[int, int]
    rpn_post_nms: tuple[int, int]
    rpn_batch: int
    box_batch: int
    detections: int
    sampling_ratio: int
    betas: tuple[float, float] = (0.9, 0.999)
    train_images: int | None = None
    workers: int = 0
    autocast: str | None = None       # "bfloat16" on a GPU for the paper recipe (ViTDet trains in mixed precision)
    seed: int = 0

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def head_kwargs(self) -> dict:
        """The arguments of :func:`~vitscope.detection.vitdet.build_detector` this recipe fixes."""
        return {k: getattr(self, k) for k in ("image_size", "channels", "box_convs", "box_fc", "mask_convs",
                                             "anchor_fractions", "rpn_pre_nms", "rpn_post_nms", "rpn_batch",
                                             "box_batch", "detections", "sampling_ratio")}


#: ViTDet's Mask R-CNN recipe as its config gives it (COCO train2017, 100 epochs, 1024 px LSJ), for the paper
#: profile on a GPU. Heads: 256 channels, 4 conv + 1 fc (1024) box head, 4 conv mask head; RPN 2000/1000 proposals
#: (train) and 1000/1000 (test), as detectron2's defaults that ViTDet keeps.
PAPER = Recipe(name="vitdet-b-100ep", epochs=100, batch_size=VITDET_BATCH, lr=VITDET_LR,
               weight_decay=VITDET_WEIGHT_DECAY, layer_decay=VITDET_LAYER_DECAY, drop_path=VITDET_DROP_PATH,
               warmup_iters=VITDET_WARMUP_ITERS, lr_steps=VITDET_LR_STEPS, image_size=VITDET_IMAGE,
               lsj=VITDET_LSJ, hflip=0.5, channels=256, box_convs=4, box_fc=1024, mask_convs=4,
               anchor_fractions=VITDET_ANCHORS, rpn_pre_nms=(2000, 1000), rpn_post_nms=(1000, 1000), rpn_batch=256,
               box_batch=512, detections=100, sampling_ratio=0, workers=8, autocast="bfloat16")

#: The offline demo: a few epochs of the synthetic COCO twin at the zoo's 64 px, ViTDet's optimiser, schedule shape,
#: layer decay and drop path, with light heads (64 channels, 2 conv + fc 256 box head, 2 conv mask head) and light
#: RPN/RoI sampling, so that one (model, mode) trains in about two minutes on one CPU thread. The twin's objects
#: span half to nine tenths of the image, so the anchors run from 1/16 of the image to all of it. The learning rate
#: is ten times ViTDet's: the heads start from scratch. One epoch of the first 240 scenes (30 steps) keeps the page
#: within the book's cold-build budget (six runs: 50 s each at two epochs, 300 s for the page); three epochs of 400
#: cost 5x as much and still gave AP of a few points, so the demo's AP is a smoke test of the pipeline.
DEMO = Recipe(name="demo", epochs=1, train_images=240, batch_size=8, lr=1e-3, weight_decay=VITDET_WEIGHT_DECAY,
              layer_decay=VITDET_LAYER_DECAY, drop_path=VITDET_DROP_PATH, warmup_iters=20, lr_steps=VITDET_LR_STEPS,
              image_size=64, lsj=None, hflip=0.5, channels=64, box_convs=2, box_fc=256, mask_convs=2,
              anchor_fractions=(1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0), rpn_pre_nms=(200, 100), rpn_post_nms=(100, 50),
              rpn_batch=64, box_batch=32, detections=20, sampling_ratio=2)

#: Tests: one epoch of a few images at 32 px with tiny heads.
QUICK = replace(DEMO, name="quick", epochs=1, batch_size=2, warmup_iters=1, image_size=32, channels=16, box_fc=32,
                box_convs=1, mask_convs=1, rpn_pre_nms=(50, 50), rpn_post_nms=(20, 20), rpn_batch=16, box_batch=8,
                detections=10, train_images=4)

RECIPES = {r.name: r for r in (PAPER, DEMO, QUICK)}


def get_recipe(name) -> Recipe:
    if isinstance(name, Recipe):
        return name
    if name not in RECIPES:
        from ..hints import did_you_mean
        raise KeyError(f"unknown detection recipe {name!r}; choose from {sorted(RECIPES)}."
                       + did_you_mean(str(name), RECIPES))
    return RECIPES[name]


__all__ = ["DEMO", "PAPER", "QUICK", "RECIPES", "Recipe", "get_recipe"]

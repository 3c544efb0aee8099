"""Objectives Matter App. C: frozen vs fine-tuned ViT backbones for COCO detection and instance segmentation.

``vitdet``    ViTDet's simple feature pyramid on a timm ViT inside torchvision's Mask R-CNN — :func:`build_detector`
``recipes``   ViTDet's COCO recipe (the paper profile) and the demo's — :data:`PAPER`, :data:`DEMO`, :data:`QUICK`
``train``     the training loop and the cached (model, mode) runs — :func:`run`, :data:`MODES`
``evaluate``  COCO AP (box, mask) with pycocotools and AP on bootstrap resamples — :func:`summary`

The page's pipeline (profile section ``detection``) is :mod:`vitscope.sections.detection`.
"""
from .recipes import DEMO, PAPER, QUICK, RECIPES, Recipe, get_recipe
from .train import MODES, make_detector, run, train_detector
from .vitdet import SimpleFeaturePyramid, ViTDetBackbone, build_detector

__all__ = ["DEMO", "MODES", "PAPER", "QUICK", "RECIPES", "Recipe", "SimpleFeaturePyramid", "ViTDetBackbone",
           "build_detector", "get_recipe", "make_detector", "run", "train_detector"]

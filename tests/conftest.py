"""Shared fixtures: a tiny synthetic ImageNet-style root and a tiny timm ViT."""
from __future__ import annotations

import pytest
import timm
import torch

from vitscope.data import load_manifest, write_imagefolder_twin

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=0)


@pytest.fixture(scope="session")
def manifest():
    return load_manifest("imagenet50")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory, manifest):
    """5 classes x 6 images at 48 px, written in the ImageNet folder layout."""
    root = tmp_path_factory.mktemp("synthetic")
    return write_imagefolder_twin(root, manifest.wnids[:5], 6, size=48, seed=0, progress=False)


@pytest.fixture
def tiny_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", **TINY_VIT).eval()

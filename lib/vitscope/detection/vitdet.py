"""ViTDet's simple feature pyramid on a timm ViT, plugged into torchvision's Mask R-CNN (Objectives Matter App. B.7).

Li et al. 2022 ("Exploring plain vision transformer backbones for object detection", Sec. 3 and Fig. 2c) build a
pyramid from the last block alone: its spatial tokens reshaped to one map at stride ``patch``, then, per level,

* stride patch/4: ConvTranspose(2x2, s2) -> LN -> GELU -> ConvTranspose(2x2, s2)   (D -> D/2 -> D/4 channels)
* stride patch/2: ConvTranspose(2x2, s2)                                              (D -> D/2)
* stride patch:   nothing
* stride 2*patch: MaxPool(2x2, s2)

each followed by Conv1x1 -> LN -> Conv3x3 -> LN to ``out_channels`` (no conv bias where a norm follows), plus a
stride-4*patch level subsampled from the last (detectron2's ``LastLevelMaxPool``). With ViT-B/16 the strides are
4, 8, 16, 32, 64, as B.7 says. The heads follow ViTDet's Mask R-CNN: a two-conv RPN head, a 4-conv + 1-fc box head
and a 4-conv mask head, all with LayerNorm. ViTDet's window attention and relative positions are not reproduced:
the backbone is the registry's plain ViT with global attention in every block, its position embedding resampled
to the input's grid (timm's ``dynamic_img_size``).

``blocks`` (default: the last) may name several blocks: their maps are concatenated along channels before the
pyramid, as OM App. C does with blocks 9, 10 and 11 for Fig. 7.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

#: ViTDet's scale factors (input stride / output stride), one per pyramid level before the extra pooled level.
SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)
LEVEL_NAMES = ("p2", "p3", "p4", "p5")
POOLED_LEVEL = "p6"


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (ViTDet's "LN" in its conv layers)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _conv_ln(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), LayerNorm2d(cout)]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's pyramid: float [B, D, h, w] at stride ``patch`` -> ``{"p2" ... "p6"}`` maps [B, out_channels, ., .]
    at strides patch/4, patch/2, patch, 2*patch and 4*patch (see the module docstring)."""

    def __init__(self, dim: int, out_channels: int, scale_factors: Sequence[float] = SCALE_FACTORS):
        super().__init__()
        if dim % 4:
            raise ValueError(f"the ViT's width {dim} must be divisible by 4 (the stride-patch/4 level has D/4 "
                             "channels)")
        stages = []
        for scale in scale_factors:
            if scale == 4.0:
                layers, width = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                                 nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)], dim // 4
            elif scale == 2.0:
                layers, width = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)], dim // 2
            elif scale == 1.0:
                layers, width = [], dim
            elif scale == 0.5:
                layers, width = [nn.MaxPool2d(2, stride=2)], dim
            else:
                raise ValueError(f"scale factor {scale} is not one of ViTDet's (4, 2, 1, 0.5)")
            stages.append(nn.Sequential(*layers, *_conv_ln(width, out_channels, 1), *_conv_ln(out_channels,
                                                                                             out_channels, 3)))
        self.stages = nn.ModuleList(stages)
        self.names = LEVEL_NAMES[:len(stages)]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        out = OrderedDict((name, stage(x)) for name, stage in zip(self.names, self.stages))
        # detectron2's LastLevelMaxPool: a 1x1 max pool of stride 2, i.e. every other position of the last level
        out[POOLED_LEVEL] = nn.functional.max_pool2d(out[self.names[-1]], kernel_size=1, stride=2)
        return out


class ViTDetBackbone(nn.Module):
    """A timm ``VisionTransformer`` + :class:`SimpleFeaturePyramid`, with ``out_channels`` as torchvision's detectors
    expect of a ``BackboneWithFPN``.

    ``frozen``: the ViT's parameters get ``requires_grad=False``, it stays in eval mode even when the detector is
    put in training mode (no drop path, norms as pre-trained) and runs under ``torch.no_grad``: only the pyramid
    and the heads learn (OM Table 6). Otherwise the ViT is fine-tuned with them (Table 7).
    """

    def __init__(self, vit: nn.Module, out_channels: int, *, frozen: bool, blocks: Sequence[int] = (-1,)):
        super().__init__()
        for attr in ("patch_embed", "blocks", "forward_intermediates", "embed_dim"):
            if not hasattr(vit, attr):
                raise TypeError(f"ViTDetBackbone needs a timm VisionTransformer (it lacks .{attr}); got "
                                f"{type(vit).__name__}. Load the backbone with vitscope.models.load_model(name, "
                                "dynamic_img_size=True)")
        if not getattr(vit, "dynamic_img_size", False):
            raise ValueError("the ViT was built for one input size; load it with dynamic_img_size=True so its "
                             "position embedding follows the detector's input size")
        depth = len(vit.blocks)
        self.blocks = sorted({b % depth for b in blocks})
        self.body, self.frozen = vit, frozen
        self.patch = int(vit.patch_embed.patch_size[0])
        self.pyramid = SimpleFeaturePyramid(vit.embed_dim * len(self.blocks), out_channels)
        self.out_channels = out_channels
        if frozen:
            vit.requires_grad_(False)
            vit.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.body.eval()
        return self

    def spatial_map(self, images: torch.Tensor) -> torch.Tensor:
        """float [B, 3, H, W] (H, W multiples of ``patch``) -> float [B, D * len(blocks), H/patch, W/patch]: the
        chosen blocks' spatial tokens (prefix tokens dropped, no final norm, as ViTDet), concatenated."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.body.forward_intermediates(images, indices=self.blocks, norm=False, output_fmt="NCHW",
                                                   intermediates_only=True)
        return torch.cat(maps, dim=1)

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.pyramid(self.spatial_map(images))


def anchor_sizes(image_size: int, fractions: Sequence[float]) -> tuple[tuple[int, ...], ...]:
    """One anchor size per pyramid level: ``fraction * image_size`` pixels (ViTDet: 32 ... 512 px at 1024 px,
    i.e. fractions 1/32 ... 1/2), at least 1 px."""
    return tuple((max(1, round(f * image_size)),) for f in fractions)


def build_detector(vit: nn.Module, num_classes: int, *, frozen: bool, image_size: int, mean, std,
                   channels: int = 256, box_convs: int = 4, box_fc: int = 1024, mask_convs: int = 4,
                   anchor_fractions: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2),
                   aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), blocks: Sequence[int] = (-1,),
                   rpn_pre_nms: tuple[int, int] = (2000, 1000), rpn_post_nms: tuple[int, int] = (1000, 1000),
                   rpn_batch: int = 256, box_batch: int = 512, detections: int = 100, sampling_ratio: int = 0):
    """torchvision's ``MaskRCNN`` on :class:`ViTDetBackbone` (no torchvision weights anywhere).

    ``num_classes``: object categories (background is added). ``image_size``: the input's longer side after
    torchvision's resize (``min_size = max_size = image_size``); ``mean``/``std``: the backbone's preprocessing.
    ``rpn_pre_nms`` / ``rpn_post_nms``: (train, test) proposal counts; ``rpn_batch`` / ``box_batch``: sampled
    anchors / RoIs per image; ``detections``: the most kept per image. Heads are as ViTDet's (module docstring);
    the demo shrinks ``channels``, ``box_convs``, ``box_fc`` and ``mask_convs``.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = ViTDetBackbone(vit, channels, frozen=frozen, blocks=blocks)
    n_levels = len(LEVEL_NAMES) + 1
    if len(anchor_fractions) != n_levels:
        raise ValueError(f"anchor_fractions has {len(anchor_fractions)} entries; give one per pyramid level "
                         f"({n_levels}: {', '.join((*LEVEL_NAMES, POOLED_LEVEL))})")
    anchors = AnchorGenerator(anchor_sizes(image_size, anchor_fractions), (tuple(aspect_ratios),) * n_levels)
    # ViTDet pools RoIs from p2-p5 (not the pooled p6)
    canonical = 14 * backbone.patch
    box_pool = MultiScaleRoIAlign(list(LEVEL_NAMES), output_size=7, sampling_ratio=sampling_ratio,
                                  canonical_scale=canonical)
    mask_pool = MultiScaleRoIAlign(list(LEVEL_NAMES), output_size=14, sampling_ratio=sampling_ratio,
                                   canonical_scale=canonical)
    box_head = FastRCNNConvFCHead((channels, 7, 7), [channels] * box_convs, [box_fc], norm_layer=LayerNorm2d)
    mask_head = MaskRCNNHeads(channels, [channels] * mask_convs, 1, norm_layer=LayerNorm2d)
    return MaskRCNN(backbone, num_classes=None, min_size=image_size, max_size=image_size, image_mean=list(mean),
                    image_std=list(std), rpn_anchor_generator=anchors,
                    rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0], conv_depth=2),
                    rpn_pre_nms_top_n_train=rpn_pre_nms[0], rpn_pre_nms_top_n_test=rpn_pre_nms[1],
                    rpn_post_nms_top_n_train=rpn_post_nms[0], rpn_post_nms_top_n_test=rpn_post_nms[1],
                    rpn_batch_size_per_image=rpn_batch, box_roi_pool=box_pool, box_head=box_head,
                    box_predictor=FastRCNNPredictor(box_fc, num_classes + 1), box_batch_size_per_image=box_batch,
                    box_detections_per_img=detections, mask_roi_pool=mask_pool, mask_head=mask_head,
                    mask_predictor=MaskRCNNPredictor(channels, channels, num_classes + 1),
                    size_divisible=backbone.patch * 2)


__all__ = ["LEVEL_NAMES", "SCALE_FACTORS", "LayerNorm2d", "SimpleFeaturePyramid", "ViTDetBackbone", "anchor_sizes",
           "build_detector"]

"""Streamed attention IoU with object masks (Teaching Matters 4.4), from the same single forward pass.

Each block's attention is reduced as it streams past to two maps per image and head over the patch grid, the CLS
row and the mean of the spatial rows (both over spatial keys, renormalised), then to their 60 %-mass masks
(:func:`vitscope.kernels.attention_iou.mass_mask`) and to their IoU with the image's object mask. Only the IoUs
are kept: float32 [N, L, H] per map and object-mask rule. No attention map is stored.

The object masks come with the batch: the dataset returns ``{"object_mask": bool [B, crop, crop]}`` as a third
item (:class:`vitscope.data.coco.CocoInstances`), which the extraction hands to ``product.extras``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import attention_iou as iou_k
from ..kernels import attention_maps as maps_k
from .products import Product

#: The stored tensors: (attention map) x (object-mask rule of :mod:`vitscope.kernels.attention_iou`).
MAPS = ("cls", "spatial")
RULES = {"": "token", "_pixel": "pixel"}       # suffix -> rule: tokens >= OBJECT_FRACTION object, or pixel IoU
MASK_KEY = "object_mask"


def spatial_mean_maps(attn: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """The mean over spatial queries of their rows over spatial keys (each renormalised): [B, H, G, G]."""
    rows = maps_k.spatial_rows(attn, n_prefix)                                     # [B, H, Q, K]
    G = int(round(rows.shape[-1] ** 0.5))
    return rows.mean(2).reshape(*rows.shape[:2], G, G)


@dataclass
class AttentionIoU(Product):
    """Per image, block and head: IoU of the ``mass`` mask of the CLS map (``cls``) and of the spatial-mean map
    (``spatial``) with the object mask on the token grid (a token is object when >= ``OBJECT_FRACTION`` of its
    pixels are), and the same against the pixel mask (``cls_pixel``, ``spatial_pixel``): float32 [N, L, H] each.
    Also ``object_share`` float32 [N]: the share of tokens that are object (what a uniform map would score near).

    ``masks``: an identity of the masks (e.g. the annotation file's digest): part of the cache key, since the same
    images with other masks give other numbers.
    """

    mass: float = iou_k.MASS
    masks: str = ""
    name = "attention_iou"
    sites = ("attn",)
    reads_cls = True
    state_fields = ("_rows",)

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._rows = {f"{m}{s}": [] for m in MAPS for s in RULES} | {"object_share": []}

    def begin_batch(self, batch_size):
        super().begin_batch(batch_size)
        extras = getattr(self, "extras", None) or {}
        if MASK_KEY not in extras:
            raise ValueError(f"{type(self).__name__} needs object masks: the dataset must return (image, label, "
                             f"{{'{MASK_KEY}': mask}}) items, as vitscope.data.coco.CocoInstances does with a "
                             "mask_transform; this dataset returns none")
        mask = extras[MASK_KEY]
        if mask.shape[0] != batch_size:
            raise ValueError(f"{MASK_KEY} holds {mask.shape[0]} masks for a batch of {batch_size} images")
        fraction = iou_k.object_fraction(mask, tuple(self.geometry["grid"]))          # [B, G, G] float64
        self._targets = {"": fraction >= iou_k.OBJECT_FRACTION, "_pixel": fraction}
        self._share = self._targets[""].double().mean((-2, -1))
        self._batch = {k: [None] * self.geometry["depth"] for k in self._rows if k != "object_share"}

    def consume(self, site, block, x):
        P = self.geometry["n_prefix"]
        maps = {"cls": maps_k.cls_maps(x, P), "spatial": spatial_mean_maps(x, P)}          # [B, H, G, G]
        for m, a in maps.items():
            pred = iou_k.mass_mask(a, self.mass)
            for suffix, target in self._targets.items():
                self._batch[f"{m}{suffix}"][block] = iou_k.iou(pred, target[:, None]).float()   # [B, H]

    def end_batch(self):
        for key, per_block in self._batch.items():
            self._rows[key].append(torch.stack(per_block, dim=1).cpu())                   # [B, L, H]
        self._rows["object_share"].append(self._share.float().cpu())

    def finish(self):
        return {k: torch.cat(v) for k, v in self._rows.items()}


__all__ = ["AttentionIoU", "MAPS", "RULES", "spatial_mean_maps"]

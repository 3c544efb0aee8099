"""Held-out evaluation of zoo backbones: DINO weighted k-NN and the OM 2.2 linear probe, on two readouts.

The protocol (``EVAL_PROTOCOL``) is recorded verbatim in every model card, so
:func:`knn_accuracy_for_weights` can rebuild the same data and reproduce the card's number from the shipped file:
reference split = the first ``ref_per_class`` training scenes of each class (``TRAIN_SEED``; the labelled set the
neighbours come from, as ImageNet-train is DINO's), test split = ``heldout_per_class`` scenes per class from
``HELDOUT_SEED`` (never trained on).

Readouts (``READOUTS``), both from the backbone's final normed tokens (``forward_features``, the timm path the
book's extraction uses): ``"cls"`` the CLS token, ``"gap"`` the mean of the patch tokens. A card's headline
numbers use its objective's ``readout`` (CLS for the joint-embedding and supervised models, GAP for MAE/BEiT).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..kernels.knn import knn_accuracy
from ..kernels.probes import DEFAULT_RECIPE, linear_probe
from .data import HELDOUT_SEED, IMAGE_SIZE, NUM_CLASSES, RENDER_SIZE, TRAIN_SEED, render_set, to_model_input

#: Any zoo entry loads any zoo file: they share one architecture and one converter.
ZOO_ENTRY = "zoo-supervised"
READOUTS = {"cls": "CLS token of the final normed output (forward_features(x)[:, 0])",
            "gap": "mean of the patch tokens of the final normed output (forward_features(x)[:, 1:].mean(1))"}
EVAL_PROTOCOL = dict(
    ref_seed=TRAIN_SEED, ref_per_class=60, heldout_seed=HELDOUT_SEED, heldout_per_class=20,
    size=IMAGE_SIZE, render_size=RENDER_SIZE, num_classes=NUM_CLASSES,
    readouts=READOUTS, normalisation="mean=std=0.5",
    knn=dict(k=20, temperature=0.07),
    # The probe library's default recipe (tested within 1 point of a converged logistic regression); the first zoo's
    # cards used AdamW at lr 1e-3, batch 256, which under-trains (0.71 where logistic regression reaches 0.99).
    probe=dict(head="BatchNorm1d(affine=False, eps=1e-6) + Linear", **DEFAULT_RECIPE, seed=0),
)
#: Quick (test) protocol: tiny splits; k must not exceed the reference size.
QUICK_PROTOCOL = {**EVAL_PROTOCOL, "ref_per_class": 1, "heldout_per_class": 1, "knn": dict(k=20, temperature=0.07),
                  "probe": {**EVAL_PROTOCOL["probe"], "epochs": 5}}


def load_backbone(path: str | Path, device="cpu") -> nn.Module:
    """A zoo safetensors file (fp16 backbone state dict) loaded strictly as float32, through the registry's loader
    (every zoo entry shares one architecture, :data:`vitscope.models.registry.ZOO_VIT`)."""
    from ..models import load_model

    return load_model(ZOO_ENTRY, weights=path, device=device)


@torch.no_grad()
def extract_readouts(backbone: nn.Module, images_u8: Tensor, batch_size: int = 250, device="cpu") -> dict:
    """``{"cls": [N, D], "gap": [N, D]}`` (float32, CPU) of uint8 images [N, 3, H, W] through ``forward_features``."""
    backbone = backbone.to(device).eval()
    cls, gap = [], []
    for i in range(0, len(images_u8), batch_size):
        tokens = backbone.forward_features(to_model_input(images_u8[i:i + batch_size], device)).float()
        cls.append(tokens[:, 0].cpu())
        gap.append(tokens[:, 1:].mean(1).cpu())
    return {"cls": torch.cat(cls), "gap": torch.cat(gap)}


def eval_splits(protocol: dict, cache_dir=None, progress: bool = False):
    """(reference SceneSet, held-out SceneSet) for ``protocol``."""
    kw = dict(size=protocol["size"], render_size=protocol["render_size"], num_classes=protocol["num_classes"],
              cache_dir=cache_dir, progress=progress)
    return (render_set(protocol["ref_per_class"], protocol["ref_seed"], **kw),
            render_set(protocol["heldout_per_class"], protocol["heldout_seed"], **kw))


def evaluate_backbone(backbone: nn.Module, protocol: dict | None = None, cache_dir=None, device="cpu",
                      splits=None, knn_only: bool = False, readouts=tuple(READOUTS)) -> dict:
    """``{readout: {"knn_top1", "linear_probe_top1"}}`` (fractions in [0, 1]) of ``backbone`` under ``protocol``
    for each of ``readouts`` (``knn_only``: skip the probe)."""
    protocol = protocol or EVAL_PROTOCOL
    ref, test = splits or eval_splits(protocol, cache_dir)
    f_ref, f_test = extract_readouts(backbone, ref.images, device=device), extract_readouts(backbone, test.images,
                                                                                           device=device)
    out = {}
    for r in readouts:
        out[r] = {"knn_top1": knn_accuracy(f_ref[r], ref.labels, f_test[r], test.labels,
                                           num_classes=protocol["num_classes"], **protocol["knn"])}
        if not knn_only:
            p = protocol["probe"]
            out[r]["linear_probe_top1"] = linear_probe(
                f_ref[r], ref.labels, f_test[r], test.labels, num_classes=protocol["num_classes"],
                **{k: p[k] for k in (*DEFAULT_RECIPE, "seed") if k in p})
    return out


def _card_for(path: Path) -> dict:
    card = path.with_suffix(".json")
    if not card.is_file():
        raise FileNotFoundError(f"no model card {card} beside {path}; pass protocol= and readout= explicitly")
    return json.loads(card.read_text())


def knn_accuracy_for_weights(path: str | Path, protocol: dict | None = None, readout: str | None = None,
                             cache_dir=None, device="cpu", splits=None) -> float:
    """Held-out weighted k-NN top-1 of a shipped zoo file, recomputed exactly as its card's headline
    ``eval.trained[readout].knn_top1`` (``None`` arguments: the protocol and readout recorded in the card;
    ``splits``: the protocol's (reference, held-out) sets if already loaded)."""
    path = Path(path)
    if protocol is None or readout is None:
        card = _card_for(path)
        protocol = protocol if protocol is not None else card["eval"]["protocol"]
        readout = readout if readout is not None else card["eval"]["readout"]
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; choose from {sorted(READOUTS)}")
    return evaluate_backbone(load_backbone(path, device), protocol, cache_dir, device, splits=splits, knn_only=True,
                             readouts=(readout,))[readout]["knn_top1"]

"""The mini-zoo's CNNs: a small ResNet trained with two of the zoo's objectives (Objectives Matter Fig. 11 on the demo).

Objectives Matter asks whether the objective or the architecture drives representational similarity, comparing a
ViT and a CNN trained with the same objective (DINO / MoCo-v3 ResNet-50, FCMAE ConvNeXt-V2) against two ViTs
trained with different ones. The demo needs the same contrast on the zoo: these CNNs are trained by the zoo's own
objectives (:mod:`vitscope.zoo.objectives`), on the same scenes, with the same optimiser and schedule code
(:func:`vitscope.zoo.train.train_model` with this module's backbone and tables).

Backbone: the registry's ``ZOO_CNN_ARCH`` + ``ZOO_CNN`` (a ResNet-18 layout with widths 32-64-128-192; see
:mod:`vitscope.models.registry`). Its image embedding is the global average pool of the last stage, 192 wide as
the zoo ViT's CLS token, so the objectives' heads (built for ``EMBED_DIM``) fit unchanged; the backbone carries
``zoo_readout = "gap"``, which makes the objectives' :func:`~vitscope.zoo.objectives.common.cls_token` return that
pool. Objectives: the supervised one (cross-entropy) and MoCo-v3 (joint-embedding), the two whose loss reads only
an image embedding (DINO's multi-crop and the masked-image objectives need tokens and positions a ResNet lacks).

Evaluation reads tokens (:mod:`vitscope.zoo.evaluate`), so the CNN is evaluated through :class:`GapTokens`: token 0
is the global average pool and tokens 1.. are the spatial positions, so both readouts ("cls" and "gap") are the
global average pool; the cards' headline readout is "gap".

Usage: ``python -m vitscope.zoo.cnn --model supervised|mocov3|--all [--quick] [--steps N] [--threads 1]``.
Weights go to ``vitscope/zoo/weights/zoo-cnn-<objective>.safetensors`` (``--quick``: the cache).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from ..models.registry import ZOO_CNN, ZOO_CNN_ARCH
from .data import default_cache_dir
from .objectives.common import EMBED_DIM, READOUT_ATTR
from .objectives.mocov3 import MoCoV3
from .objectives.supervised import Supervised
from .train import Backbone, train_model

CNN_KWARGS = dict(ZOO_CNN)


def create_cnn_backbone(**overrides) -> nn.Module:
    """A randomly initialised zoo CNN (timm init from the global RNG) whose objectives read its global average pool."""
    model = timm.create_model(ZOO_CNN_ARCH, **{**CNN_KWARGS, **overrides})
    if model.num_features != EMBED_DIM and not overrides:
        raise ValueError(f"the zoo CNN ends with {model.num_features} channels but the objectives' heads take "
                         f"{EMBED_DIM}; make the last of ZOO_CNN's channels {EMBED_DIM}")
    setattr(model, READOUT_ATTR, "gap")
    return model


class GapTokens(nn.Module):
    """A CNN seen as a token model for :mod:`vitscope.zoo.evaluate`: ``forward_features(x)`` is [B, 1 + h*w, C],
    token 0 the global average pool of the last stage and tokens 1.. its spatial positions."""

    def __init__(self, cnn: nn.Module):
        super().__init__()
        self.cnn = cnn

    def forward_features(self, x: Tensor) -> Tensor:
        tokens = self.cnn.forward_features(x).flatten(2).transpose(1, 2)      # [B, C, h, w] -> [B, h*w, C]
        return torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)


def load_cnn(path, device="cpu") -> nn.Module:
    """A shipped zoo CNN file loaded strictly through the registry (``zoo-cnn-supervised``'s entry: every zoo CNN
    shares one architecture), as :class:`GapTokens`."""
    from ..models import load_model

    return GapTokens(load_model("zoo-cnn-supervised", weights=path, device=device))


CNN_BACKBONE = Backbone(ZOO_CNN_ARCH, CNN_KWARGS, create_cnn_backbone, load_cnn, evaluable=GapTokens)


class CnnSupervised(Supervised):
    name = "cnn-supervised"
    readout = "gap"
    HPARAMS = {**Supervised.HPARAMS, "head": "linear on the global average pool"}


class CnnMoCoV3(MoCoV3):
    name = "cnn-mocov3"
    readout = "gap"
    HPARAMS = {**MoCoV3.HPARAMS, "embedding": "global average pool"}


CNN_OBJECTIVES = {c.name: c for c in (CnnSupervised, CnnMoCoV3)}
#: Seeds of the zoo CNNs: none is a zoo ViT's (``train.SEEDS``) or an untrained baseline's (registry).
CNN_SEEDS = {"cnn-supervised": 21, "cnn-mocov3": 24}
#: Budgets for about 15 minutes per CNN on one thread of the 2-core machine. Measured per step (bf16 autocast, one
#: thread, while two niced zoo runs held both cores): CNN supervised 1.31 s at batch 128, CNN MoCo-v3 2.08 s at 64,
#: the zoo ViT's supervised step 4.66 s at 128 -- 0.28x and 0.45x of the ViT step, which the idle machine runs in
#: about 1 s on one thread (the ViT budgets' note), hence about 0.3 s and 0.5 s per CNN step when idle. ResNets from
#: scratch take a higher AdamW learning rate than the zoo ViTs (BatchNorm keeps the steps stable).
CNN_BUDGETS = {
    "cnn-supervised": dict(steps=1500, batch_size=128, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999)),
    "cnn-mocov3": dict(steps=1600, batch_size=64, lr=5e-4, weight_decay=0.1, betas=(0.9, 0.999)),
}
CNN_MODEL_NAMES = [f"zoo-{n}" for n in CNN_OBJECTIVES]


def train_cnn(objective: str, **kwargs) -> dict | None:
    """Train zoo CNN ``objective`` ("supervised", "mocov3", or "cnn-..."/"zoo-cnn-...") with
    :func:`vitscope.zoo.train.train_model` (same keyword arguments); returns its card."""
    name = "cnn-" + objective.removeprefix("zoo-").removeprefix("cnn-")
    return train_model(name, backbone=CNN_BACKBONE, objectives=CNN_OBJECTIVES, seeds=CNN_SEEDS,
                       budgets=CNN_BUDGETS, **kwargs)


def main(argv=None) -> int:
    """``python -m vitscope.zoo.cnn``: train the zoo CNNs (resumable, as ``vitscope zoo train``)."""
    p = argparse.ArgumentParser(prog="python -m vitscope.zoo.cnn", description=__doc__.split("\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", choices=sorted(n.removeprefix("cnn-") for n in CNN_OBJECTIVES))
    which.add_argument("--all", action="store_true")
    p.add_argument("--steps", type=int)
    p.add_argument("--out")
    p.add_argument("--cache")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--quick", action="store_true", help="a few steps on tiny data (tests, CI)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out
    if out is None and args.quick:   # never overwrite shipped weights with a smoke run
        out = (Path(args.cache) if args.cache else default_cache_dir() / "quick") / "weights"
    for name in (list(CNN_OBJECTIVES) if args.all else [args.model]):
        train_cnn(name, out_dir=out, cache_dir=args.cache, device=args.device, steps=args.steps, quick=args.quick,
                  force=args.force, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

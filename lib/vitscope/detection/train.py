"""Train a ViTDet Mask R-CNN on a registry backbone, frozen or fine-tuned (OM App. C, Tables 6 and 7), and cache it.

:func:`train_detector` is the loop (AdamW, warmup then step decay, flips and, for the paper recipe, large-scale
jitter). It is deterministic for the recipe's seed on one machine with one thread count: the heads are initialised
from the seed, each epoch's order and augmentations come from generators seeded by (seed, epoch, image), and
nothing else draws random numbers except drop path, seeded per epoch.

:func:`run` trains (or finds) one (model, mode) and evaluates it; results live in
``<cache>/detection/<model>/<mode>/<recipe>-<digest>/`` (``detector.safetensors``, ``predictions.json`` in COCO's
results format, ``card.json``), where the digest covers the backbone's weights identity, the recipe and the
training and evaluation data's annotation digests.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..devices import resolve_device
from .recipes import Recipe, get_recipe

#: The modes of OM App. C: the ViT frozen (Table 6) or trained with the detector (Table 7); "frozen-multi" feeds the
#: pyramid the last block and blocks 9-11 of a 12-block ViT (the last four blocks), frozen (Fig. 7).
MODES = {"frozen": {"frozen": True, "blocks": (-1,)}, "finetuned": {"frozen": False, "blocks": (-1,)},
         "frozen-multi": {"frozen": True, "blocks": (-4, -3, -2, -1)}}
#: Bump when a cached run would change for the same inputs (the loop, the evaluation, the file layout).
RUN_VERSION = 1
DETECTOR, PREDICTIONS, CARD = "detector.safetensors", "predictions.json", "card.json"


def check_mode(mode: str) -> dict:
    if mode not in MODES:
        raise ValueError(f"detection mode {mode!r}: choose from {sorted(MODES)} (frozen: OM Table 6, finetuned: "
                         "Table 7, frozen-multi: Fig. 7)")
    return MODES[mode]


# ---------------------------------------------------------------- data
class InstanceTargets(torch.utils.data.Dataset):
    """A :class:`~vitscope.data.coco.CocoInstances` as torchvision detection items: ``(image float [3, H, W] in
    [0, 1], {"boxes": float [N, 4] xyxy, "labels": int64 [N] in 1..K, "masks": uint8 [N, H, W]})``. Crowd and
    degenerate (under 1 px) instances are left out, as detectron2 does for training."""

    def __init__(self, coco, recipe: Recipe | None = None, seed: int = 0, train: bool = False):
        self.coco, self.recipe, self.seed, self.train, self.epoch = coco, recipe, seed, train, 0
        self.cat_ids = [cid for cid, _ in coco.classes]

    def __len__(self) -> int:
        return len(self.coco)

    def image_id(self, index: int) -> int:
        return int(self.coco.image_ids[index])

    def __getitem__(self, index: int):
        from PIL import Image

        path, _ = self.coco.samples[index]
        image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
        keep = [a for a in self.coco.instances(index) if not a["iscrowd"] and a["bbox"][2] >= 1 and a["bbox"][3] >= 1]
        h, w = image.shape[1:]
        boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in keep)],
                             dtype=torch.float32).reshape(-1, 4)
        masks = (torch.from_numpy(np.stack([a["mask"] for a in keep])).to(torch.uint8) if keep
                 else torch.zeros(0, h, w, dtype=torch.uint8))
        labels = torch.tensor([a["label"] + 1 for a in keep], dtype=torch.int64)
        if self.train:
            gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index) % 2**63)
            image, boxes, masks, labels = augment(image, boxes, masks, labels, self.recipe, gen)
        return image.float() / 255, {"boxes": boxes, "labels": labels, "masks": masks}


def augment(image, boxes, masks, labels, recipe: Recipe, gen: torch.Generator):
    """A horizontal flip with probability ``recipe.hflip``; with ``recipe.lsj``, large-scale jitter: resize by
    U(lo, hi) times ``image_size / longer side``, crop a random ``image_size`` square where larger, pad with the
    mean grey where smaller (ViTDet pads to a fixed square), dropping instances left with no pixel."""
    if float(torch.rand((), generator=gen)) < recipe.hflip:
        w = image.shape[-1]
        image, masks = image.flip(-1), masks.flip(-1)
        boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    if recipe.lsj is None:
        return image, boxes, masks, labels
    lo, hi = recipe.lsj
    size = recipe.image_size
    scale = (lo + (hi - lo) * float(torch.rand((), generator=gen))) * size / max(image.shape[1:])
    nh, nw = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[2] * scale))
    image = nn.functional.interpolate(image[None].float(), (nh, nw), mode="bilinear", align_corners=False)[0]
    masks = nn.functional.interpolate(masks[None].float(), (nh, nw), mode="nearest")[0].to(torch.uint8)
    y0 = int(torch.randint(0, max(1, nh - size + 1), (), generator=gen))
    x0 = int(torch.randint(0, max(1, nw - size + 1), (), generator=gen))
    image, masks = image[:, y0:y0 + size, x0:x0 + size], masks[:, y0:y0 + size, x0:x0 + size]
    canvas = torch.full((3, size, size), 127.0)
    canvas[:, :image.shape[1], :image.shape[2]] = image
    padded = torch.zeros((len(masks), size, size), dtype=torch.uint8)
    padded[:, :masks.shape[1], :masks.shape[2]] = masks
    keep = padded.flatten(1).any(1)
    padded, labels = padded[keep], labels[keep]
    boxes = torch.stack([_mask_box(m) for m in padded]) if len(padded) else torch.zeros(0, 4)
    return canvas.round().clamp(0, 255).to(torch.uint8), boxes, padded, labels


def _mask_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


def _collate(batch):
    return tuple(zip(*batch))


# ---------------------------------------------------------------- the detector
def make_detector(model: str, mode: str, num_classes: int, recipe: Recipe, *, weights=None) -> nn.Module:
    """The registry backbone ``model`` (its position embedding following the input size) in a ViTDet Mask R-CNN,
    frozen or not per ``mode``; heads initialised from ``recipe.seed``."""
    from ..models import get_cfg, load_model
    from .vitdet import build_detector

    spec = check_mode(mode)
    cfg = get_cfg(model)
    drop = 0.0 if spec["frozen"] else recipe.drop_path
    vit = load_model(model, weights=weights, device="cpu", dynamic_img_size=True, drop_path_rate=drop).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return build_detector(vit, num_classes, frozen=spec["frozen"], mean=cfg.preprocess.mean,
                              std=cfg.preprocess.std, blocks=spec["blocks"], **recipe.head_kwargs())


def param_groups(detector: nn.Module, recipe: Recipe) -> list[dict]:
    """AdamW groups with ``lr_scale``: ViTDet's layer-wise decay on the ViT (embeddings at depth 0, block i at
    i + 1, the rest at depth + 1; scale ``layer_decay ** (depth + 1 - layer)``), rate 1 for the pyramid and heads;
    no weight decay on 1-D parameters and the position embedding. Frozen parameters are left out."""
    body = detector.backbone.body
    depth = len(body.blocks)
    groups: dict[tuple, dict] = {}
    for name, p in detector.named_parameters():
        if not p.requires_grad:
            continue
        layer = depth + 1
        if name.startswith("backbone.body."):
            sub = name[len("backbone.body."):]
            if sub.startswith(("cls_token", "reg_token", "pos_embed", "patch_embed")):
                layer = 0
            elif sub.startswith("blocks."):
                layer = int(sub.split(".")[1]) + 1
        decay = 0.0 if p.ndim == 1 or name.endswith("pos_embed") else recipe.weight_decay
        scale = recipe.layer_decay ** (depth + 1 - layer)
        groups.setdefault((scale, decay), {"params": [], "weight_decay": decay, "lr_scale": scale})["params"].append(p)
    return list(groups.values())


def lr_at(step: int, total: int, recipe: Recipe) -> float:
    """Linear warmup from 0.1 % of the rate over ``warmup_iters`` (detectron2's factor 0.001), then x0.1 at each
    fraction of ``lr_steps`` of ``total`` steps."""
    drops = sum(step >= f * total for f in recipe.lr_steps)
    warm = min(1.0, 0.001 + (1 - 0.001) * step / recipe.warmup_iters) if recipe.warmup_iters else 1.0
    return recipe.lr * warm * 0.1 ** drops


def train_detector(detector: nn.Module, data: InstanceTargets, recipe: Recipe, *, device="cpu",
                   progress: bool = True, max_steps: int | None = None, desc: str = "detection") -> list[dict]:
    """Train ``detector`` in place on ``data`` (``train=True``); returns the per-epoch mean losses. ``max_steps``
    stops early (tests)."""
    dev = torch.device(resolve_device(device))
    detector.to(dev).train()
    opt = torch.optim.AdamW(param_groups(detector, recipe), lr=recipe.lr, betas=recipe.betas)
    n = len(data) if recipe.train_images is None else min(recipe.train_images, len(data))
    subset = torch.utils.data.Subset(data, range(n))
    per_epoch = n // recipe.batch_size
    if per_epoch < 1:
        raise ValueError(f"recipe {recipe.name!r}: batch size {recipe.batch_size} exceeds the {n} training images")
    total = recipe.epochs * per_epoch
    amp = dict(device_type=dev.type, dtype=getattr(torch, recipe.autocast or "float32"),
               enabled=recipe.autocast is not None)
    bar = tqdm(total=total if max_steps is None else min(total, max_steps), desc=desc, disable=not progress,
               mininterval=2.0)
    history, step = [], 0
    for epoch in range(recipe.epochs):
        data.epoch = epoch
        seed = recipe.seed * 1_000_003 + epoch
        torch.manual_seed(seed)     # drop path
        loader = torch.utils.data.DataLoader(subset, batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(seed), collate_fn=_collate,
                                             num_workers=recipe.workers)
        losses = []
        for images, targets in loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, recipe) * g["lr_scale"]
            images = [im.to(dev) for im in images]
            targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
            with torch.autocast(**amp):
                parts = detector(images, targets)
            loss = sum(v.float() for v in parts.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss {loss.item()} at step {step}; lower the recipe's lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append({"loss": loss.item(), **{k: v.item() for k, v in parts.items()}})
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]['loss']:.3f}")
            if max_steps is not None and step >= max_steps:
                break
        history.append({"epoch": epoch + 1, **{k: float(np.mean([x[k] for x in losses])) for k in losses[0]}})
        if max_steps is not None and step >= max_steps:
            break
    bar.close()
    detector.eval()
    return history


# ---------------------------------------------------------------- a cached run
def run_dir(model: str, mode: str, recipe: Recipe, train_ident: dict, val_ident: dict, weights=None) -> Path:
    """``<cache>/detection/<model>/<mode>/<recipe>-<digest>``."""
    from ..models import get_cfg
    from ..paths import cache_root

    key = json.dumps({"identity": get_cfg(model).identity(weights), "mode": mode, "recipe": recipe.as_dict(),
                      "train": train_ident, "val": val_ident, "version": RUN_VERSION}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / "detection" / model / mode / f"{recipe.name}-{digest}"


def run(model: str, mode: str, recipe, train_coco, val_coco, *, weights=None, device="cpu", progress=True,
        force: bool = False) -> dict:
    """Train ``model`` in ``mode`` on ``train_coco`` and predict ``val_coco`` (both
    :class:`~vitscope.data.coco.CocoInstances` with the same categories), or read the cached run. Returns the card:
    ``{"model", "mode", "recipe", "history", "wall_time_s", ..., "dir"}``; the predictions are in the folder's
    ``predictions.json``."""
    from safetensors.torch import save_file

    from .evaluate import predict

    recipe = get_recipe(recipe)
    check_mode(mode)
    if train_coco.classes != val_coco.classes:
        raise ValueError("the training and evaluation data have different categories; give both splits of one "
                         "dataset")
    ident = lambda c: {"name": c.manifest.name, "annotations": c.manifest.annotations, "n": len(c)}  # noqa: E731
    folder = run_dir(model, mode, recipe, ident(train_coco), ident(val_coco), weights)
    if (folder / CARD).is_file() and not force:
        return {**json.loads((folder / CARD).read_text()), "dir": str(folder)}
    folder.mkdir(parents=True, exist_ok=True)
    detector = make_detector(model, mode, len(train_coco.classes), recipe, weights=weights)
    t0 = time.time()
    history = train_detector(detector, InstanceTargets(train_coco, recipe, recipe.seed, train=True), recipe,
                             device=device, progress=progress, desc=f"detection {model} {mode}")
    train_s = time.time() - t0
    results = predict(detector, InstanceTargets(val_coco), device=device, progress=progress)
    save_file({k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}, str(folder / DETECTOR))
    (folder / PREDICTIONS).write_text(json.dumps(results))
    card = {"model": model, "mode": mode, "recipe": recipe.as_dict(), "history": history,
            "train_images": min(len(train_coco), recipe.train_images or math.inf), "val_images": len(val_coco),
            "wall_time_s": round(time.time() - t0, 1), "train_time_s": round(train_s, 1),
            "device": str(resolve_device(device)), "threads": torch.get_num_threads(),
            "host": platform.processor() or platform.machine(), "torch": torch.__version__}
    (folder / CARD).write_text(json.dumps(card, indent=1))
    return {**card, "dir": str(folder)}


def predictions(card: dict) -> list[dict]:
    """The COCO-format results of a run's card (:func:`run`)."""
    return json.loads((Path(card["dir"]) / PREDICTIONS).read_text())


__all__ = ["MODES", "InstanceTargets", "augment", "lr_at", "make_detector", "param_groups", "predictions", "run",
           "run_dir", "train_detector"]

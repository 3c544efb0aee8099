"""``vitscope finetune MODEL``: supervised fine-tuning of a registry backbone with a linear head (OM §2.3, App. B.5).

The backbone is the registry model as the analyses load it (same timm build, plus the recipe's drop path, which has
no parameters); the head is a Linear on its pooled output (the CLS token for the zoo and the papers' ViT-B builds).
AdamW with layer-wise learning-rate decay, linear warmup + cosine decay per step, label smoothing, optional
Mixup/CutMix and RandAugment (the paper recipe), flips.

Every epoch ends with ``epoch-<e>.safetensors`` (the float32 backbone, the key names of the base entry, so it loads
strictly into the base's architecture) and ``state.pt`` (head, optimiser, losses), both written atomically; a run
resumes from the last finished epoch. All randomness of epoch ``e`` (batch order, flips, drop path) comes from
generators seeded by (seed, e), so an interrupted and resumed run ends with the same weights as an uninterrupted one
(bit for bit on one machine with one thread count; other thread counts or a GPU change the reduction order).
The finished run writes ``card.json`` (recipe, losses and accuracies per epoch, wall time, host, versions).

Runs live in ``<cache>/finetune/<model>/<recipe>-<digest>/``; the digest covers the pre-trained weights' identity
(sha256 of the file for shipped and local weights), the recipe and any build overrides, so new zoo weights or a
changed recipe train anew. ``<model>+ft`` names the finished run of the default recipe in the registry
(:mod:`vitscope.finetune`).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..devices import resolve_device
from .recipes import Recipe

STATE, CARD = "state.pt", "card.json"


def epoch_file(run: Path, epoch: int) -> Path:
    """The backbone after ``epoch`` (1-based) of a run folder."""
    return Path(run) / f"epoch-{epoch:03d}.safetensors"


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warmup over ``warmup`` steps, then half-cycle cosine from ``lr`` to ``min_lr`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def param_groups(backbone: nn.Module, head: nn.Module, recipe: Recipe) -> list[dict]:
    """AdamW groups with ``lr_scale``: timm's layer-wise decay groups of the backbone (no weight decay on 1-D
    parameters and the model's ``no_weight_decay`` names) and the head at scale 1."""
    from timm.optim._param_groups import param_groups_layer_decay

    skip = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
    groups = param_groups_layer_decay(backbone, weight_decay=recipe.weight_decay, no_weight_decay_list=skip,
                                      layer_decay=recipe.layer_decay)
    return [*groups, {"params": list(head.parameters()), "weight_decay": recipe.weight_decay, "lr_scale": 1.0}]


# ---------------------------------------------------------------- data
class _SyntheticData:
    """The zoo's synthetic scenes in memory (uint8 [N, 3, S, S]), batches drawn per epoch from seeded generators."""

    def __init__(self, recipe: Recipe, preprocess, progress: bool):
        from ..zoo.data import HELDOUT_SEED, NUM_CLASSES, render_set

        k = recipe.num_classes or NUM_CLASSES
        self.train = render_set(recipe.per_class, recipe.data_seed, num_classes=k, progress=progress)
        self.heldout = render_set(recipe.heldout_per_class, HELDOUT_SEED, num_classes=k, progress=progress)
        self.num_classes = k
        self.mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
        self.recipe = recipe

    def steps_per_epoch(self) -> int:
        return len(self.train) // self.recipe.batch_size     # drop the last partial batch, as MAE's loader does

    def _norm(self, u8: torch.Tensor) -> torch.Tensor:
        return (u8.float() / 255 - self.mean) / self.std

    def epoch(self, gen: torch.Generator):
        b = self.recipe.batch_size
        perm = torch.randperm(len(self.train), generator=gen)
        for s in range(self.steps_per_epoch()):
            idx = perm[s * b:(s + 1) * b]
            x = self.train.images[idx]
            flip = torch.rand(len(idx), generator=gen) < self.recipe.hflip
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            yield self._norm(x), self.train.labels[idx]

    def evaluation(self):
        for i in range(0, len(self.heldout), 256):
            yield self._norm(self.heldout.images[i:i + 256]), self.heldout.labels[i:i + 256]


class _ImageFolderData:
    """``<root>/train`` (and ``<root>/val`` if present) as ImageFolders with timm's training transform (RandAugment,
    random resized crop, flips) and a per-epoch seeded loader."""

    def __init__(self, recipe: Recipe, preprocess, root: Path, workers: int = 8):
        from timm.data import create_transform
        from torchvision.datasets import ImageFolder

        root = Path(root)
        if not (root / "train").is_dir():
            raise FileNotFoundError(f"fine-tuning data: {root / 'train'} is not a folder; set the profile's dataset "
                                    "root (e.g. export IMAGENET_ROOT=/data/imagenet, holding train/<wnid>/*.JPEG)")
        aa = None if recipe.randaug is None else f"rand-m{recipe.randaug[0]}-mstd{recipe.randaug[1]}-inc1"
        common = dict(input_size=preprocess.crop, mean=preprocess.mean, std=preprocess.std,
                      interpolation=preprocess.interpolation)
        self.train = ImageFolder(root / "train", create_transform(is_training=True, auto_augment=aa,
                                                                  hflip=recipe.hflip, **common))
        val = root / "val"
        self.val = ImageFolder(val, create_transform(is_training=False, crop_pct=preprocess.crop / preprocess.resize,
                                                     **common)) if val.is_dir() else None
        self.num_classes = recipe.num_classes or len(self.train.classes)
        self.recipe, self.workers = recipe, workers

    def steps_per_epoch(self) -> int:
        return len(self.train) // self.recipe.batch_size

    def epoch(self, gen: torch.Generator):
        loader = torch.utils.data.DataLoader(self.train, batch_size=self.recipe.batch_size, shuffle=True,
                                             generator=gen, num_workers=self.workers, drop_last=True,
                                             pin_memory=True, persistent_workers=False)
        yield from loader

    def evaluation(self):
        if self.val is None:
            return
        yield from torch.utils.data.DataLoader(self.val, batch_size=256, num_workers=self.workers)


# ---------------------------------------------------------------- the run
def _mixup(recipe: Recipe, num_classes: int):
    if recipe.mixup <= 0 and recipe.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, label_smoothing=recipe.label_smoothing,
                 num_classes=num_classes)


def _save_atomic(obj, path: Path, saver) -> None:
    tmp = path.with_name(path.name + ".tmp")
    saver(obj, tmp)
    tmp.replace(path)    # an interrupted save keeps the previous file


def _backbone_state(backbone: nn.Module) -> dict:
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in backbone.state_dict().items()}


@torch.no_grad()
def _accuracy(backbone, head, data, dev) -> float | None:
    was = backbone.training
    backbone.eval()
    hits = n = 0
    for x, y in data.evaluation():
        hits += int((head(backbone(x.to(dev))).argmax(1).cpu() == y).sum())
        n += len(y)
    backbone.train(was)
    return hits / n if n else None


def train_run(base: str, run: Path, recipe: Recipe, *, device="cpu", data_root=None, arch_overrides=None,
              identity: dict, progress: bool = True, stop_after_epoch: int | None = None) -> dict | None:
    """Fine-tune registry model ``base`` with ``recipe`` into folder ``run`` (resuming from its last epoch).

    Returns the card, or ``None`` when ``stop_after_epoch`` stopped the run early (resume tests).
    """
    from ..models import get_cfg, load_model

    cfg = get_cfg(base)
    dev = torch.device(resolve_device(device))
    run.mkdir(parents=True, exist_ok=True)
    data = (_SyntheticData(recipe, cfg.preprocess, progress) if recipe.data == "synthetic"
            else _ImageFolderData(recipe, cfg.preprocess, data_root))
    overrides = {**(arch_overrides or {}), "drop_path_rate": recipe.drop_path}
    backbone = load_model(base, device="cpu", **overrides).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        head = nn.Linear(backbone.num_features, data.num_classes)
        nn.init.trunc_normal_(head.weight, std=2e-5)    # MAE's fine-tuning head init
        nn.init.zeros_(head.bias)
    state = json.loads(json.dumps({"identity": identity, "recipe": recipe.as_dict()}))
    start, history, elapsed = 0, [], 0.0
    opt_state = None
    if (run / STATE).is_file():
        ck = torch.load(run / STATE, map_location="cpu", weights_only=True)
        if ck["config"] == state and epoch_file(run, ck["epoch"]).is_file():
            backbone.load_state_dict(load_file(str(epoch_file(run, ck["epoch"]))), strict=True)
            head.load_state_dict(ck["head"])
            opt_state, start, history, elapsed = ck["optimizer"], ck["epoch"], ck["history"], ck["elapsed"]
            print(f"[finetune] {base}: resuming {run} after epoch {start}")
        else:
            print(f"[finetune] {base}: {run / STATE} has another configuration; starting afresh")
    backbone.to(dev).train()
    head.to(dev).train()
    groups = param_groups(backbone, head, recipe)
    opt = torch.optim.AdamW(groups, lr=recipe.lr, betas=recipe.betas)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    mixup = _mixup(recipe, data.num_classes)
    criterion = (timm.loss.SoftTargetCrossEntropy() if mixup is not None
                 else nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing))
    per_epoch = data.steps_per_epoch()
    if per_epoch < 1:
        raise ValueError(f"recipe {recipe.name!r}: batch size {recipe.batch_size} exceeds the training set")
    total, warmup = recipe.epochs * per_epoch, int(round(recipe.warmup_epochs * per_epoch))
    t0 = time.time()
    bar = tqdm(total=total, initial=start * per_epoch, desc=f"finetune {base}", disable=not progress,
               mininterval=2.0)
    amp = dict(device_type=dev.type, dtype=getattr(torch, recipe.autocast or "float32"),
               enabled=recipe.autocast is not None)
    for epoch in range(start, recipe.epochs):
        seed = recipe.seed * 1_000_003 + epoch
        torch.manual_seed(seed)         # drop path and anything else drawn from the global generator
        np.random.seed(seed % 2**32)    # timm's Mixup draws from NumPy's global generator
        gen = torch.Generator().manual_seed(seed)
        losses, hits, seen = [], 0, 0
        for s, (x, y) in enumerate(data.epoch(gen)):
            step = epoch * per_epoch + s
            lr = lr_at(step, total, warmup, recipe.lr, recipe.min_lr)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            target = y
            if mixup is not None:
                x, target = mixup(x, y)
            with torch.autocast(**amp):
                logits = head(backbone(x))
                loss = criterion(logits.float(), target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"finetune {base}: loss {loss.item()} at step {step}; lower base_lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip_grad:
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], recipe.clip_grad)
            opt.step()
            losses.append(loss.item())
            hits += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}", lr=f"{lr:.1e}")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_top1": hits / max(1, seen),
                        "heldout_top1": _accuracy(backbone, head, data, dev)})
        _save_atomic(_backbone_state(backbone), epoch_file(run, epoch + 1),
                     lambda sd, p: save_file(sd, str(p), metadata={"vitscope_finetune": base}))
        _save_atomic({"epoch": epoch + 1, "head": head.state_dict(), "optimizer": opt.state_dict(),
                      "history": history, "elapsed": elapsed + time.time() - t0, "config": state},
                     run / STATE, torch.save)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < recipe.epochs:
            bar.close()
            return None
    bar.close()
    card = {"name": f"{base}+ft", "base": base, "pretrained": identity, "recipe": recipe.as_dict(),
            "lr": recipe.lr, "epochs": recipe.epochs, "steps_per_epoch": per_epoch, "num_classes": data.num_classes,
            "history": history, "final_heldout_top1": history[-1]["heldout_top1"] if history else None,
            "wall_time_s": round(elapsed + time.time() - t0, 1), "device": str(dev),
            "host": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
            "versions": {"torch": torch.__version__, "timm": timm.__version__},
            "weights": [epoch_file(run, e).name for e in range(1, recipe.epochs + 1)]}
    _save_atomic(json.dumps(card, indent=1), run / CARD, lambda text, p: p.write_text(text))
    return card


def main(argv=None) -> int:
    """Entry point of ``vitscope finetune`` (also ``python -m vitscope.finetune.train``)."""
    from . import finetune

    p = argparse.ArgumentParser(prog="vitscope finetune", description=__doc__.split("\n")[0])
    p.add_argument("model", help="registry name of the pre-trained model (e.g. zoo-mae, mae)")
    p.add_argument("--profile", default="demo", help="profile: its device and, for the paper recipe, the ImageNet "
                                                      "root of its finetune.dataset (default: demo)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"], help="default: the profile's")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (a different run folder)")
    p.add_argument("--recipe", help="recipe name (default: demo for demo models, om-table5 for the papers')")
    p.add_argument("--force", action="store_true", help="discard the run folder and train again")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    card = finetune(args.model, profile=args.profile, device=args.device, epochs=args.epochs, recipe=args.recipe,
                    force=args.force, progress=not args.no_progress)
    acc = card.get("final_heldout_top1")
    print(f"[finetune] {card['name']}: {card['epochs']} epochs in {card['wall_time_s'] / 60:.1f} min"
          + (f", held-out top-1 {acc:.3f}" if acc is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a zoo model learned beyond its accuracy, recorded in its card (issue 10's goals).

- **Attention structure**: per block, the mean attention distance (TM 4.3, unit square) and the mean attention
  entropy (nats) of the spatial rows, each next to its uniform level (``uniform_attention_distance``, ``ln(G*G)``).
  A model whose attention is still uniform has nothing for TM 4.1, 4.2 and 4.4 to show.
- **Movement from its initialisation**: per block, linear CKA between the trained model and its own random
  initialisation (the card's seed), all tokens of an image flattened (the TM code's ``tokens=all``). A shared or
  barely moved start makes cross-model CKA measure the start, not the objectives.
- **Where training plateaued**: the step by which ``PLATEAU_FRACTION`` of the loss decrease of the run was done.

``vitscope zoo card --model NAME | --all`` re-evaluates a shipped model (its ``eval`` block, with today's
``EVAL_PROTOCOL``) and writes this ``structure`` block into its card; tests recompute both from the shipped files.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ..extract.capture import Capture, vit_geometry
from ..kernels.attention import attention_distances, attention_entropy, uniform_attention_distance
from ..kernels.cka import linear_cka
from . import MODEL_NAMES, weights_dir
from .data import HELDOUT_SEED, IMAGE_SIZE, NUM_CLASSES, RENDER_SIZE, render_set, to_model_input
from .evaluate import EVAL_PROTOCOL, eval_splits, evaluate_backbone, load_backbone
from .objectives import create_backbone

#: The images the structure statistics are computed on: held-out scenes (never trained on), 4 per class.
STRUCTURE_PROTOCOL = dict(seed=HELDOUT_SEED, per_class=4, size=IMAGE_SIZE, render_size=RENDER_SIZE,
                          num_classes=NUM_CLASSES, attention_distance="unit_square",
                          cka="linear CKA (HSIC_0), all tokens of each block output flattened per image")
#: The plateau is the step by which this fraction of the run's total loss decrease was done.
PLATEAU_FRACTION = 0.9


def structure_images(protocol: dict = STRUCTURE_PROTOCOL, cache_dir=None) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` held-out scenes of ``protocol``."""
    return render_set(protocol["per_class"], protocol["seed"], size=protocol["size"],
                      render_size=protocol["render_size"], num_classes=protocol["num_classes"], cache_dir=cache_dir,
                      progress=False).images


@torch.no_grad()
def _blocks_and_attention(model, images_u8, device, batch_size: int = 100):
    """Per block: token outputs ``[N, T, D]`` and per-image-and-head (distance, entropy) ``[N, H]`` each."""
    model = model.to(device).eval()
    n_prefix = vit_geometry(model)["n_prefix"]
    tokens, dist, ent = None, None, None
    with Capture(model, {"block", "attn"}) as cap:
        for i in range(0, len(images_u8), batch_size):
            model.forward_features(to_model_input(images_u8[i:i + batch_size], device))
            out = cap.collect()
            t = [b.float().cpu() for b in out["block"]]
            d = [attention_distances(a.float(), n_prefix)["unit_square"].cpu() for a in out["attn"]]
            e = [attention_entropy(a.float(), n_prefix).cpu() for a in out["attn"]]
            tokens = t if tokens is None else [torch.cat(p) for p in zip(tokens, t)]
            dist = d if dist is None else [torch.cat(p) for p in zip(dist, d)]
            ent = e if ent is None else [torch.cat(p) for p in zip(ent, e)]
    return tokens, dist, ent


def attention_structure(model, images_u8, device="cpu") -> dict:
    """``{"distance", "entropy"}``: per block the mean over images and heads (lists), and their uniform levels."""
    _, dist, ent = _blocks_and_attention(model, images_u8, device)
    grid = vit_geometry(model)["grid"][0]
    return {"distance": [float(d.double().mean()) for d in dist],
            "entropy": [float(e.double().mean()) for e in ent],
            "distance_per_head": [[float(v) for v in d.double().mean(0)] for d in dist],
            "uniform_distance": uniform_attention_distance(grid),
            "uniform_entropy": math.log(grid * grid)}


def cka_to_init(model, init, images_u8, device="cpu") -> list[float]:
    """Per block, linear CKA between ``model`` and ``init`` (all tokens flattened per image)."""
    a, _, _ = _blocks_and_attention(model, images_u8, device)
    b, _, _ = _blocks_and_attention(init, images_u8, device)
    return [linear_cka(x.flatten(1).double(), y.flatten(1).double()) for x, y in zip(a, b)]


def plateau_step(values: list[float], every: int, fraction: float = PLATEAU_FRACTION) -> int | None:
    """The step by which ``fraction`` of the loss decrease from the first window to the best was done.

    ``values``: mean loss of consecutive windows of ``every`` steps (a card's ``loss_curve``). ``None`` when the
    loss never decreased.
    """
    if not values:
        return None
    start, best = values[0], min(values)
    if not best < start:
        return None
    target = start - fraction * (start - best)
    return next((i + 1) * every for i, v in enumerate(values) if v <= target)


def structure_record(name: str, card: dict, weights: Path, device="cpu", cache_dir=None) -> dict:
    """The card's ``structure`` block for zoo model ``name`` (weights file ``weights``)."""
    images = structure_images(cache_dir=cache_dir)
    model = load_backbone(weights, device)
    torch.manual_seed(card["seed"])
    init = create_backbone()
    init_attention = attention_structure(init, images, device)
    curve = card["loss_curve"]
    return {"protocol": STRUCTURE_PROTOCOL, "n_images": len(images),
            "attention": attention_structure(model, images, device),
            "init_attention": {k: init_attention[k] for k in ("distance", "entropy")},
            "cka_to_init": cka_to_init(model, init, images, device),
            "plateau": {"fraction": PLATEAU_FRACTION, "step": plateau_step(curve["values"], curve["every"]),
                        "of_steps": card["steps"]}}


def refresh_card(name: str, directory: Path | None = None, device="cpu", cache_dir=None) -> dict:
    """Re-evaluate shipped model ``name`` with today's ``EVAL_PROTOCOL`` and write its ``structure``; returns the
    card (written back atomically)."""
    name = name.removeprefix("zoo-")
    directory = Path(directory) if directory is not None else weights_dir()
    card_path, weights = directory / f"zoo-{name}.json", directory / f"zoo-{name}.safetensors"
    card = json.loads(card_path.read_text())
    splits = eval_splits(EVAL_PROTOCOL, cache_dir)
    trained = evaluate_backbone(load_backbone(weights, device), EVAL_PROTOCOL, device=device, splits=splits)
    torch.manual_seed(card["seed"])
    random_init = evaluate_backbone(create_backbone(), EVAL_PROTOCOL, device=device, splits=splits)
    card["eval"] = {**card["eval"], "protocol": EVAL_PROTOCOL, "trained": trained, "random_init": random_init}
    card["structure"] = structure_record(name, card, weights, device, cache_dir)
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=1))
    tmp.replace(card_path)
    return card


def main(argv=None) -> int:
    """``vitscope zoo card``: refresh the evaluation and structure blocks of shipped zoo cards."""
    p = argparse.ArgumentParser(prog="vitscope zoo card", description=main.__doc__)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", choices=sorted(MODEL_NAMES + [n.removeprefix("zoo-") for n in MODEL_NAMES]))
    which.add_argument("--all", action="store_true")
    p.add_argument("--dir", help="weights/card directory (default: the package's zoo/weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.removeprefix("zoo-") for n in MODEL_NAMES] if args.all else [args.model]
    for name in names:
        card = refresh_card(name, args.dir, args.device)
        s, r = card["structure"], card["eval"]["readout"]
        print(f"[zoo] {name}: k-NN {card['eval']['trained'][r]['knn_top1']:.3f}; attention distance "
              f"{min(s['attention']['distance']):.3f}-{max(s['attention']['distance']):.3f} "
              f"(uniform {s['attention']['uniform_distance']:.3f}); CKA to init "
              f"{', '.join(f'{v:.2f}' for v in s['cka_to_init'])}; plateau at step {s['plateau']['step']}")
    return 0

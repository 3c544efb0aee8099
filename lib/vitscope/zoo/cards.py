"""Model cards of the shipped mini-zoo, as tables the book renders.

A card is the JSON file ``train.py`` writes beside each ``zoo-<name>.safetensors`` (configuration, data seeds,
steps, wall time, loss curve, held-out k-NN / probe accuracy of the trained model and of its random init, for both
readouts). These helpers only read cards; :func:`recheck` recomputes the headline k-NN from the shipped weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import MODEL_NAMES, weights_dir
from .evaluate import eval_splits, knn_accuracy_for_weights


#: A zoo model "learned" when its headline held-out k-NN beats its random init's by at least this much (a fraction:
#: 3 points, about four standard errors of the difference of two accuracies near 5 % on the 1,000 held-out scenes).
LEARNED_MARGIN = 0.03


class MissingCardError(FileNotFoundError):
    """A zoo model's card or weights are not where the package expects them."""


def load_cards(names=None, directory: str | Path | None = None) -> dict[str, dict]:
    """``{name: card}`` for ``names`` (default: every zoo model, in the table order of ``vitscope.zoo``)."""
    directory = Path(directory) if directory is not None else weights_dir()
    cards = {}
    for name in names or MODEL_NAMES:
        name = f"zoo-{name.removeprefix('zoo-')}"
        path = directory / f"{name}.json"
        if not path.is_file():
            raise MissingCardError(f"no model card {path}; train it with `vitscope zoo train --model {name}`")
        cards[name] = json.loads(path.read_text())
    return cards


def summary_table(cards: dict[str, dict]) -> pd.DataFrame:
    """One row per model: objective, family, budget, wall time (and the CPU threads it ran on: a run sharing the
    cores with another takes longer), final loss and the headline held-out numbers
    (trained vs random init, on the card's readout), plus k-NN on the other readout. Accuracies are fractions."""
    rows = []
    for name, c in cards.items():
        ev, r = c["eval"], c["eval"]["readout"]
        other = "gap" if r == "cls" else "cls"
        rows.append({
            "model": name, "objective": c["objective"], "family": c["family"],
            "steps x batch": f"{c['steps']} x {c['batch_size']}", "lr": c["optimizer"]["lr"],
            "wall (min)": round(c["wall_time_s"] / 60, 1), "threads": c["host"]["threads"],
            "final loss": round(c["final_loss"], 3),
            "readout": r,
            "k-NN": ev["trained"][r]["knn_top1"], "k-NN random init": ev["random_init"][r]["knn_top1"],
            "probe": ev["trained"][r]["linear_probe_top1"],
            "probe random init": ev["random_init"][r]["linear_probe_top1"],
            f"k-NN ({other})": ev["trained"][other]["knn_top1"],
            "learned": learned(c),
        })
    return pd.DataFrame(rows).set_index("model")


def knn_gain(card: dict) -> float:
    """Headline held-out k-NN of the trained model minus that of its random init (a fraction)."""
    r = card["eval"]["readout"]
    return card["eval"]["trained"][r]["knn_top1"] - card["eval"]["random_init"][r]["knn_top1"]


def learned(card: dict, margin: float = LEARNED_MARGIN) -> bool:
    """Whether the card shows learning: k-NN gain over the random init of at least ``margin``."""
    return knn_gain(card) >= margin


def not_learned(names, directory: str | Path | None = None) -> list[str]:
    """The zoo models among ``names`` (other registry names are ignored) whose card does not show learning."""
    zoo = [n for n in names if n in MODEL_NAMES]
    return [n for n, c in load_cards(zoo, directory).items() if not learned(c)] if zoo else []


def curves_table(cards: dict[str, dict], kind: str = "loss") -> pd.DataFrame:
    """Long table (model, step, value) of the cards' training-loss curves (``kind="loss"``; each value the mean
    of a window of ``loss_curve.every`` steps, placed at the window's end) or k-NN monitor curves (``"knn"``)."""
    if kind not in ("loss", "knn"):
        raise ValueError(f"kind must be 'loss' or 'knn'; got {kind!r}")
    rows = []
    for name, c in cards.items():
        if kind == "loss":
            every = c["loss_curve"]["every"]
            rows += [{"model": name, "step": (i + 1) * every, "value": v}
                     for i, v in enumerate(c["loss_curve"]["values"])]
        else:
            rows += [{"model": name, "step": s, "value": v} for s, v in c["knn_curve"]["values"]]
    return pd.DataFrame(rows, columns=["model", "step", "value"])


def hparams_table(card: dict) -> pd.DataFrame:
    """The card's objective constants and optimiser settings as a two-column table (values as text)."""
    items = {**{f"objective.{k}": v for k, v in card["objective_hparams"].items()},
             **{f"optimizer.{k}": v for k, v in card["optimizer"].items()},
             "train images": card["train_data"]["images"], "train seed": card["train_data"]["seed"],
             "generator version": card["train_data"]["generator_version"], "seed": card["seed"],
             "device": card["device"], "torch": card["versions"]["torch"], "timm": card["versions"]["timm"]}
    return pd.DataFrame({"setting": list(items), "value": [str(v) for v in items.values()]}).set_index("setting")


def recheck(cards: dict[str, dict], directory: str | Path | None = None, cache_dir=None,
            device: str = "cpu") -> pd.DataFrame:
    """Recompute every card's headline k-NN from its shipped weights (same protocol, same readout).

    Returns a table with the card's value, the recomputed one and their absolute difference (fractions)."""
    directory = Path(directory) if directory is not None else weights_dir()
    rows, protocols, splits = [], [], []   # cards usually share one protocol: render / load its scenes once
    for name, c in cards.items():
        path = directory / c["weights"]
        if not path.is_file():
            raise MissingCardError(f"{name}: weights {path} are missing; "
                                   f"retrain with `vitscope zoo train --model {name}`")
        protocol, readout = c["eval"]["protocol"], c["eval"]["readout"]
        if protocol not in protocols:
            protocols.append(protocol)
            splits.append(eval_splits(protocol, cache_dir))
        now = knn_accuracy_for_weights(path, protocol, readout, device=device,
                                       splits=splits[protocols.index(protocol)])
        card_value = c["eval"]["trained"][readout]["knn_top1"]
        rows.append({"model": name, "card k-NN": card_value, "recomputed k-NN": now, "|diff|": abs(now - card_value)})
    return pd.DataFrame(rows).set_index("model")


def parameter_counts() -> dict[str, int]:
    """Parameters of the zoo backbone and of the papers' ViT-B/16 backbone (both without a classifier head)."""
    import timm

    from .objectives import create_backbone

    papers = timm.create_model("vit_base_patch16_224", num_classes=0, pretrained=False)
    return {"zoo": sum(p.numel() for p in create_backbone().parameters()),
            "vit_b16": sum(p.numel() for p in papers.parameters())}

"""Model cards of the shipped mini-zoo, as tables the book renders.

A card is the JSON file ``train.py`` writes beside each ``zoo-<name>.safetensors`` (configuration, data seeds,
steps, wall time, loss curve, held-out k-NN / probe accuracy of the trained model and of its random init, for both
readouts). These helpers only read cards; :func:`recheck` recomputes the headline k-NN from the shipped weights.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from ..paths import cache_root
from . import MODEL_NAMES, weights_dir
from .evaluate import eval_splits, knn_accuracy_for_weights

#: A zoo model "learned" when its headline held-out k-NN beats its random init's by at least this much (a fraction:
#: 3 points, about four standard errors of the difference of two accuracies near 5 % on the 1,000 held-out scenes).
LEARNED_MARGIN = 0.03
#: A gain under this (twice the margin) means the model "learned little": pages say so, with the gain.
WEAK_GAIN = 2 * LEARNED_MARGIN


#: A final loss within this fraction of its objective's trivial level (see ``TRIVIAL_LOSS``) "sits at" that level:
#: the objective itself was barely optimised, whatever else (e.g. an added regulariser) the model learned.
TRIVIAL_LOSS_TOLERANCE = 0.05

#: Per objective, ``card -> (level, formula)``: the loss of a network whose output ignores its input (a uniform or
#: constant prediction), from the card's own settings, and the formula with its values as text. The losses are
#: those of ``vitscope.zoo.objectives.<name>``:
#: cross-entropy over C classes (label smoothing keeps a uniform guess at ln C); CLIP's symmetric InfoNCE over a
#: batch of B pairs; DINO's cross-entropy over K prototypes (the KoLeo term, when on, adds a small offset); MoCo-v3's
#: two InfoNCE terms over B keys, each scaled by 2T as in the official code; MAE's MSE on per-patch normalised
#: pixels (predicting each patch's mean scores ~1); BEiT's cross-entropy over the tokenizer's codes (uniform guess:
#: an upper bound, a guess of the codes' frequencies scores lower).
TRIVIAL_LOSS = {
    "supervised": lambda c: (math.log(c["train_data"]["num_classes"]),
                             f"ln C with C = {c['train_data']['num_classes']} classes"),
    "clip": lambda c: (math.log(c["batch_size"]), f"ln B with B = {c['batch_size']} pairs per batch"),
    "dino": lambda c: (math.log(c["objective_hparams"]["prototypes"]),
                       f"ln K with K = {c['objective_hparams']['prototypes']} prototypes"),
    "mocov3": lambda c: (4 * c["objective_hparams"]["temperature"] * math.log(c["batch_size"]),
                         f"2 terms x 2T ln B with T = {c['objective_hparams']['temperature']}, B = {c['batch_size']}"),
    "mae": lambda c: ((1.0, "1 (normalised-pixel MSE of predicting each patch's mean)")
                      if c["objective_hparams"].get("norm_pix_loss") else (math.nan, "none (raw-pixel MSE)")),
    "beit": lambda c: (math.log(c["objective_hparams"]["n_codes"]),
                       f"ln V with V = {c['objective_hparams']['n_codes']} codes (uniform guess)"),
}
# The zoo CNNs (``vitscope.zoo.cnn``) train the same losses as their ViT namesakes.
TRIVIAL_LOSS.update({f"cnn-{name}": TRIVIAL_LOSS[name] for name in ("supervised", "mocov3")})


#: Issue 10's learning goals: held-out k-NN (the card's headline readout) each objective should reach. They are
#: goals for learning, not for the papers' claims: training is never tuned until a claim holds.
GOALS = {"supervised": 0.40, "clip": 0.30, "dino": 0.20, "mocov3": 0.20, "mae": 0.12, "beit": 0.12}


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
            "final loss": c["final_loss"], "trivial loss": trivial_loss(c),
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


def trivial_loss(card: dict) -> float:
    """The card's objective's trivial loss level (``TRIVIAL_LOSS``; NaN when the objective has none)."""
    return trivial_loss_formula(card)[0]


def trivial_loss_formula(card: dict) -> tuple[float, str]:
    """``(level, formula)`` of the card's objective (``TRIVIAL_LOSS``; ``(nan, "unknown")`` for another one)."""
    if card["objective"] not in TRIVIAL_LOSS:
        return math.nan, "unknown"
    level, formula = TRIVIAL_LOSS[card["objective"]](card)
    return float(level), formula


def at_trivial_loss(card: dict, tolerance: float = TRIVIAL_LOSS_TOLERANCE) -> bool:
    """Whether the card's final loss sits within ``tolerance`` (a fraction) of its objective's trivial level."""
    level = trivial_loss(card)
    return bool(level > 0 and card["final_loss"] >= (1 - tolerance) * level)


def not_learned(names, directory: str | Path | None = None) -> list[str]:
    """The zoo models among ``names`` (other registry names are ignored) whose card does not show learning."""
    zoo = [n for n in names if n in MODEL_NAMES]
    return [n for n, c in load_cards(zoo, directory).items() if not learned(c)] if zoo else []


def card_flags(names, directory: str | Path | None = None) -> dict[str, dict]:
    """What the cards say a page must disclose about the zoo models among ``names`` (others are ignored):
    ``{name: {"not_learned", "learned_little", "knn_gain", "at_trivial_loss", "final_loss", "trivial_loss",
    "trivial_formula"}}``, only for models with at least one flag set (``learned_little``: learned, but with a
    gain under ``WEAK_GAIN``)."""
    zoo = [n for n in names if n in MODEL_NAMES]
    flags = {}
    for name, c in (load_cards(zoo, directory).items() if zoo else []):
        entry = {"not_learned": not learned(c), "learned_little": learned(c) and knn_gain(c) < WEAK_GAIN,
                 "knn_gain": knn_gain(c), "at_trivial_loss": at_trivial_loss(c),
                 "final_loss": c["final_loss"], "trivial_loss": trivial_loss(c),
                 "trivial_formula": trivial_loss_formula(c)[1]}
        if entry["not_learned"] or entry["learned_little"] or entry["at_trivial_loss"]:
            flags[name] = entry
    return flags


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


def recipe_of(card: dict) -> str:
    """Which zoo recipe a ViT card was trained with: "second zoo" (``train.BUDGETS`` steps and batch, the objective's
    own seed in ``train.SEEDS``), "first zoo" (``train.FIRST_ZOO_BUDGETS``, seed 0) or "other" (e.g. ``--steps``)."""
    from .train import BUDGETS, FIRST_ZOO_BUDGETS, FIRST_ZOO_SEED, SEEDS

    objective, got = card["objective"], (card["steps"], card["batch_size"], card["seed"])
    if objective in BUDGETS and got == (BUDGETS[objective]["steps"], BUDGETS[objective]["batch_size"],
                                        SEEDS[objective]):
        return "second zoo"
    first = FIRST_ZOO_BUDGETS.get(objective)
    if first and got == (first["steps"], first["batch_size"], FIRST_ZOO_SEED):
        return "first zoo"
    return "other"


def goals_table(cards: dict[str, dict]) -> pd.DataFrame:
    """Per model: the k-NN goal (``GOALS``), the card's k-NN, whether it is met, the shortfall in points, the final
    loss against the trivial level, the plateau step (from the card's ``structure``, if recorded), the recipe
    (:func:`recipe_of`) and the device it was trained on."""
    rows = []
    for name, c in cards.items():
        r = c["eval"]["readout"]
        knn, goal = c["eval"]["trained"][r]["knn_top1"], GOALS.get(c["objective"], math.nan)
        plateau = c.get("structure", {}).get("plateau", {}).get("step")
        rows.append({"model": name, "goal k-NN": goal, "k-NN": knn, "met": bool(knn >= goal),
                     "shortfall (points)": max(0.0, 100 * (goal - knn)), "final loss": c["final_loss"],
                     "trivial loss": trivial_loss(c), "plateau step": plateau, "steps": c["steps"],
                     "recipe": recipe_of(c), "trained on": c["device"]})
    return pd.DataFrame(rows).set_index("model")


def what_was_tried(card: dict) -> str:
    """The objective's ``tried`` note (recipe experiments and their measured effects, recorded while the recipe was
    developed; not recomputed), or "" if it has none or the card's objective is not a zoo objective."""
    from .objectives import OBJECTIVES

    objective = OBJECTIVES.get(card["objective"])
    return objective.tried if objective else ""


def structure_table(cards: dict[str, dict]) -> pd.DataFrame:
    """Long table (model, block, attention distance, attention entropy, their uniform levels and the untrained
    init's values, CKA to init) of the cards that record a ``structure`` block (see :mod:`vitscope.zoo.structure`);
    blocks are 1-based."""
    rows = []
    for name, c in cards.items():
        s = c.get("structure")
        if not s:
            continue
        a, init = s["attention"], s["init_attention"]
        for i, (d, e, cka) in enumerate(zip(a["distance"], a["entropy"], s["cka_to_init"])):
            rows.append({"model": name, "block": i + 1, "attention distance": d, "attention entropy": e,
                         "init distance": init["distance"][i], "init entropy": init["entropy"][i],
                         "uniform distance": a["uniform_distance"], "uniform entropy": a["uniform_entropy"],
                         "CKA to init": cka})
    return pd.DataFrame(rows)


def hparams_table(card: dict) -> pd.DataFrame:
    """The card's objective constants and optimiser settings as a two-column table (values as text)."""
    items = {**{f"objective.{k}": v for k, v in card["objective_hparams"].items()},
             **{f"optimizer.{k}": v for k, v in card["optimizer"].items()},
             "train images": card["train_data"]["images"], "train seed": card["train_data"]["seed"],
             "generator version": card["train_data"]["generator_version"], "seed": card["seed"],
             "device": card["device"], "torch": card["versions"]["torch"], "timm": card["versions"]["timm"]}
    return pd.DataFrame({"setting": list(items), "value": [str(v) for v in items.values()]}).set_index("setting")


#: Bump when the recheck's meaning changes in a way the source hash below cannot see.
RECHECK_VERSION = 1


def _eval_code_version() -> str:
    """A digest of the code that computes a card's k-NN (the evaluation, the k-NN kernel, the scene renderer)."""
    from ..data import synthetic
    from ..kernels import knn
    from . import data, evaluate

    h = hashlib.sha256(f"recheck-v{RECHECK_VERSION}".encode())
    for module in (evaluate, knn, data, synthetic):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def recheck_key(card: dict, path: Path, device: str) -> dict:
    """The cache key of one card's recheck: weights sha256 + the card's protocol and readout + evaluation code."""
    from ..models.registry import file_digest

    return {"weights": "sha256:" + file_digest(path), "protocol": card["eval"]["protocol"],
            "readout": card["eval"]["readout"], "eval_code": _eval_code_version(), "device": str(device)}


def _cached(store: Path | None, name: str, key: dict) -> float | None:
    if store is None:
        return None
    path = store / f"{name}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"
    if not path.is_file():
        return None
    entry = json.loads(path.read_text())
    return entry["knn_top1"] if entry.get("key") == json.loads(json.dumps(key, sort_keys=True)) else None


def _store(store: Path | None, name: str, key: dict, value: float) -> None:
    if store is None:
        return
    store.mkdir(parents=True, exist_ok=True)
    path = store / f"{name}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"
    path.write_text(json.dumps({"key": key, "knn_top1": value}, indent=1, sort_keys=True))


def recheck(cards: dict[str, dict], directory: str | Path | None = None, cache_dir=None,
            device: str = "cpu", result_cache: str | Path | bool | None = None) -> pd.DataFrame:
    """Recompute every card's headline k-NN from its shipped weights (same protocol, same readout).

    Results are cached like features, under ``result_cache`` (default ``<cache root>/zoo_recheck``; ``False``:
    no cache), keyed by the weights' sha256, the card's protocol and readout, the evaluation code's digest and the
    device, so a changed weights file or evaluation code recomputes. ``cache_dir``: where the scenes are cached.
    Returns the card's value, the recomputed one, their absolute difference (fractions) and whether the value came
    from the cache."""
    directory = Path(directory) if directory is not None else weights_dir()
    store = None if result_cache is False else Path(result_cache or cache_root() / "zoo_recheck")
    rows, protocols, splits = [], [], []   # cards usually share one protocol: render / load its scenes once
    for name, c in cards.items():
        path = directory / c["weights"]
        if not path.is_file():
            raise MissingCardError(f"{name}: weights {path} are missing; "
                                   f"retrain with `vitscope zoo train --model {name}`")
        protocol, readout = c["eval"]["protocol"], c["eval"]["readout"]
        key = recheck_key(c, path, device)
        now = _cached(store, name, key)
        cached = now is not None
        if not cached:
            if protocol not in protocols:
                protocols.append(protocol)
                splits.append(eval_splits(protocol, cache_dir))
            now = knn_accuracy_for_weights(path, protocol, readout, device=device,
                                           splits=splits[protocols.index(protocol)])
            _store(store, name, key, now)
        card_value = c["eval"]["trained"][readout]["knn_top1"]
        rows.append({"model": name, "card k-NN": card_value, "recomputed k-NN": now, "|diff|": abs(now - card_value),
                     "cached": cached})
    return pd.DataFrame(rows).set_index("model")


def parameter_counts() -> dict[str, int]:
    """Parameters of the zoo backbone and of the papers' ViT-B/16 backbone (both without a classifier head)."""
    import timm

    from .objectives import create_backbone

    papers = timm.create_model("vit_base_patch16_224", num_classes=0, pretrained=False)
    return {"zoo": sum(p.numel() for p in create_backbone().parameters()),
            "vit_b16": sum(p.numel() for p in papers.parameters())}

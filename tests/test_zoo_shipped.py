"""The shipped mini-zoo: every registered zoo model has strict-loadable weights and a card whose numbers hold.

The card's held-out k-NN accuracy is recomputed from the shipped fp16 file under the protocol recorded in the card
(3,000 reference and 1,000 held-out scenes, rendered once into a temporary cache). The tolerance covers float
reduction-order differences between machines and thread counts (the training host is recorded in the card); on
the training machine the number is reproduced exactly.
"""
import numpy as np
import pytest
import torch

from vitscope.models import MODELS, list_models
from vitscope.zoo import MODEL_NAMES, cards, weights_dir
from vitscope.zoo.data import NUM_CLASSES
from vitscope.zoo.evaluate import knn_accuracy_for_weights, load_backbone
from vitscope.zoo.objectives import BACKBONE_ARCH, BACKBONE_KWARGS

KNN_TOLERANCE = 0.005          # absolute, on a fraction; = 5 of the 1,000 held-out images
SIZE_LIMIT_MB = 40             # all shipped weights together (issue 3)
CHANCE = 1 / NUM_CLASSES


@pytest.fixture(scope="module")
def shipped():
    return cards.load_cards()


def test_every_zoo_model_is_registered_and_ships(shipped):
    assert [n for n in list_models("demo") if n.startswith("zoo-") and not n.startswith("zoo-cnn-")] == MODEL_NAMES
    total = 0
    for name in MODEL_NAMES:
        cfg = MODELS[name]
        assert cfg.source == "package" and cfg.arch == BACKBONE_ARCH and dict(cfg.arch_kwargs) == BACKBONE_KWARGS
        assert cfg.family == shipped[name]["family"]
        path = weights_dir() / cfg.filename
        total += path.stat().st_size
        assert shipped[name]["weights"] == cfg.filename and not shipped[name]["quick"]
    assert total <= SIZE_LIMIT_MB * 2 ** 20, f"zoo weights take {total / 2 ** 20:.1f} MB"



@pytest.mark.parametrize("name", MODEL_NAMES)
def test_card_shows_learning(name, shipped):
    """Held-out k-NN at least twice chance and ``LEARNED_MARGIN`` above the model's own random init."""
    card = shipped[name]
    r = card["eval"]["readout"]
    trained, random_init = card["eval"]["trained"][r], card["eval"]["random_init"][r]
    assert card["loss_curve"]["values"][-1] < card["loss_curve"]["values"][0], name
    assert trained["knn_top1"] >= 2 * CHANCE, (name, trained)
    assert trained["knn_top1"] - random_init["knn_top1"] >= cards.LEARNED_MARGIN, (name, trained, random_init)
    assert cards.learned(card) and name not in cards.not_learned(MODEL_NAMES)


def test_shipped_weights_reproduce_their_card_knn(shipped, tmp_path_factory):
    cache = tmp_path_factory.mktemp("zoo_eval_cache")
    table = cards.recheck(shipped, cache_dir=cache, result_cache=False)   # recompute, never read a cached result
    assert (table["|diff|"] <= KNN_TOLERANCE).all(), table
    # an independent path: the same number straight from evaluate, with the readout named explicitly
    name = MODEL_NAMES[0]
    card = shipped[name]
    direct = knn_accuracy_for_weights(weights_dir() / card["weights"], readout=card["eval"]["readout"], cache_dir=cache)
    assert direct == pytest.approx(table.loc[name, "recomputed k-NN"])


def test_missing_card_names_the_fix(tmp_path, shipped):
    with pytest.raises(cards.MissingCardError, match="vitscope zoo train --model zoo-dino"):
        cards.load_cards(["dino"], directory=tmp_path)
    # a card whose weights file is gone: the recheck names the file and the fix instead of a KeyError/IOError
    with pytest.raises(cards.MissingCardError, match=r"zoo-dino\.safetensors are missing; retrain with"):
        cards.recheck({"zoo-dino": shipped["zoo-dino"]}, directory=tmp_path, result_cache=False)


def test_cards_match_the_code_that_retrains_them(shipped):
    """`vitscope zoo train --model X --force` must rebuild what ships: same objective constants and budget."""
    import json

    from vitscope.zoo.objectives import OBJECTIVES
    from vitscope.zoo.train import BUDGETS, COMMON
    for name, card in shipped.items():
        objective = card["objective"]
        assert card["objective_hparams"] == json.loads(json.dumps(OBJECTIVES[objective].HPARAMS)), name
        budget = {**BUDGETS[objective], **COMMON}
        # the second zoo replaces the first one model at a time; a card must be one of the two recipes
        assert cards.recipe_of(card) in ("first zoo", "second zoo"), f"{name}: steps / batch / seed match neither"
        for key in ("lr", "weight_decay", "warmup_frac", "min_lr_frac", "clip_grad", "autocast"):
            assert card["optimizer"][key] == budget[key], (name, key)
        assert card["eval"]["readout"] == OBJECTIVES[objective].readout, name


def test_a_card_under_the_margin_is_flagged_on_every_page(shipped, tmp_path, monkeypatch):
    """A retrain that falls short (say ``--steps 50``) must not pass silently: the card fails ``learned`` and every
    page that uses the model opens with a "Not learned yet" warning."""
    import copy
    import json

    from vitscope.book.pages import page_notice
    from vitscope.profiles import load_profile
    weak = copy.deepcopy(shipped["zoo-dino"])
    r = weak["eval"]["readout"]
    weak["eval"]["trained"][r]["knn_top1"] = weak["eval"]["random_init"][r]["knn_top1"] + cards.LEARNED_MARGIN / 2
    for name, card in shipped.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(weak if name == "zoo-dino" else card))
    assert not cards.learned(weak) and cards.learned(shipped["zoo-dino"])
    assert cards.not_learned(["zoo-dino", "zoo-mae", "random-a"], tmp_path) == ["zoo-dino"]
    demo = load_profile("demo")
    assert "Not learned yet" not in page_notice(demo, ["zoo-dino", "zoo-mae"]).data
    monkeypatch.setattr(cards, "weights_dir", lambda: tmp_path)
    notice = page_notice(demo, ["zoo-dino", "zoo-mae"]).data
    assert notice.startswith("```{warning}") and "Not learned yet: `zoo-dino`." in notice and "`zoo-mae`." not in notice


@pytest.mark.parametrize("name", ["zoo-cnn-supervised", "zoo-cnn-mocov3"])
def test_shipped_zoo_cnn_loads_and_its_card_shows_learning(name):
    """The zoo CNNs (OM Fig. 11 on the demo) ship as they finish training; a shipped one loads strictly through the
    registry and its card beats its own random init by the zoo's margin."""
    import json

    from vitscope.models import load_model
    path = weights_dir() / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"{name} is not trained yet (python -m vitscope.zoo.cnn --model {name.removeprefix('zoo-cnn-')})")
    card = json.loads(path.with_suffix(".json").read_text())
    model = load_model(name)
    assert sum(p.numel() for p in model.parameters()) > 0 and card["name"] == name
    r = card["eval"]["readout"]
    assert card["eval"]["trained"][r]["knn_top1"] - card["eval"]["random_init"][r]["knn_top1"] >= cards.LEARNED_MARGIN
    assert cards.trivial_loss(card) > card["final_loss"]      # the zoo page draws its objective's trivial level


def test_shipped_zoo_cnn_weights_reproduce_their_card_knn():
    """What the zoo page reports for the CNNs comes from their cards: recompute each card's k-NN from the shipped
    fp16 file with the card's own protocol and readout."""
    import json

    from vitscope.zoo.cnn import CNN_BACKBONE, CNN_MODEL_NAMES
    from vitscope.zoo.evaluate import evaluate_backbone
    for name in CNN_MODEL_NAMES:
        path = weights_dir() / f"{name}.safetensors"
        card = json.loads(path.with_suffix(".json").read_text())
        r = card["eval"]["readout"]
        now = evaluate_backbone(CNN_BACKBONE.load(path, "cpu"), card["eval"]["protocol"], knn_only=True,
                                readouts=(r,))[r]["knn_top1"]
        assert abs(now - card["eval"]["trained"][r]["knn_top1"]) <= 2e-3, name


def test_recipe_of_tells_the_two_zoos_apart():
    from vitscope.zoo.train import BUDGETS, FIRST_ZOO_BUDGETS, FIRST_ZOO_SEED, SEEDS
    second = {"objective": "mae", "steps": BUDGETS["mae"]["steps"], "batch_size": BUDGETS["mae"]["batch_size"],
              "seed": SEEDS["mae"]}
    first = {**second, **FIRST_ZOO_BUDGETS["mae"], "seed": FIRST_ZOO_SEED}
    assert cards.recipe_of(second) == "second zoo" and cards.recipe_of(first) == "first zoo"
    assert cards.recipe_of({**second, "seed": FIRST_ZOO_SEED}) == "other"      # second budget, shared seed
    assert cards.recipe_of({**second, "steps": 50}) == "other"                   # a --steps run


def test_every_missed_goal_says_what_was_tried():
    """Issue 10: a model that misses its goal ships with what was tried; the note is its objective module's TRIED."""
    from vitscope.zoo.objectives import beit, dino
    assert cards.what_was_tried({"objective": "dino"}) == dino.TRIED
    assert cards.what_was_tried({"objective": "beit"}) == beit.TRIED
    assert cards.what_was_tried({"objective": "mae"}) == ""                 # mae.py records none
    assert cards.what_was_tried({"objective": "resnet-something"}) == ""    # not a zoo objective
    goals = cards.goals_table(cards.load_cards())
    for name in goals.index[~goals.met]:
        assert cards.what_was_tried(cards.load_cards([name])[name]), f"{name} misses its goal with nothing recorded"


def test_every_card_records_structure_and_one_model_reproduces_it(shipped):
    """Issue 10: each card records per-block attention distance and entropy against uniform, and the CKA to its own
    initialisation (``vitscope zoo card --all``); the shipped weights reproduce them (one model recomputed here)."""
    from vitscope.zoo.objectives import create_backbone
    from vitscope.zoo.structure import attention_structure, cka_to_init, structure_images
    depth = BACKBONE_KWARGS["depth"]
    for name, card in shipped.items():
        s = card.get("structure")
        assert s, f"{name}: no structure block; run `vitscope zoo card --model {name}`"
        assert len(s["attention"]["distance"]) == len(s["attention"]["entropy"]) == len(s["cka_to_init"]) == depth
        assert all(0 < e <= s["attention"]["uniform_entropy"] + 1e-6 for e in s["attention"]["entropy"]), name
    name = "zoo-supervised"
    card = shipped[name]
    images = structure_images()
    model = load_backbone(weights_dir() / card["weights"])
    now = attention_structure(model, images)
    np.testing.assert_allclose(now["distance"], card["structure"]["attention"]["distance"], atol=1e-3)
    np.testing.assert_allclose(now["entropy"], card["structure"]["attention"]["entropy"], atol=1e-3)
    torch.manual_seed(card["seed"])
    np.testing.assert_allclose(cka_to_init(model, create_backbone(), images), card["structure"]["cka_to_init"],
                               atol=1e-3)

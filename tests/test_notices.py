"""Honest notices from the model cards (trivial loss, little learning) and the cached card recheck."""
from __future__ import annotations

import copy
import json
import math

import pytest

from vitscope.book.pages import page_notice
from vitscope.profiles import load_profile
from vitscope.zoo import cards


@pytest.fixture(scope="module")
def shipped():
    return cards.load_cards()


def test_trivial_levels_from_each_objective_definition(shipped):
    """Hand-derived: a constant output scores ln C, ln B, ln K, 2 x 2T ln B, 1 (normalised MSE), ln V."""
    expected = {"zoo-supervised": math.log(50), "zoo-clip": math.log(128), "zoo-dino": math.log(256),
                "zoo-mocov3": 2 * 2 * 0.2 * math.log(64), "zoo-mae": 1.0, "zoo-beit": math.log(256)}
    # the constants above are the shipped cards' settings; a retrain with other settings must update this test
    assert shipped["zoo-dino"]["objective_hparams"]["prototypes"] == 256 and shipped["zoo-mocov3"]["batch_size"] == 64
    for name, level in expected.items():
        assert cards.trivial_loss(shipped[name]) == pytest.approx(level), name
    table = cards.summary_table(shipped)
    assert table.loc["zoo-dino", "trivial loss"] == pytest.approx(math.log(256))


def write_cards(directory, shipped, **doctored):
    for name, card in shipped.items():
        (directory / f"{name}.json").write_text(json.dumps(doctored.get(name.replace("-", "_"), card)))


def test_a_card_at_trivial_loss_is_flagged_on_every_page_and_a_good_one_is_not(shipped, tmp_path, monkeypatch):
    at_trivial = copy.deepcopy(shipped["zoo-mae"])
    at_trivial["final_loss"] = 0.99                             # MSE of normalised pixels: the constant guess is 1
    good_dino = copy.deepcopy(shipped["zoo-dino"])
    good_dino["final_loss"] = 0.5 * cards.trivial_loss(good_dino)
    write_cards(tmp_path, shipped, zoo_mae=at_trivial, zoo_dino=good_dino)
    assert cards.at_trivial_loss(at_trivial) and not cards.at_trivial_loss(good_dino)
    assert not cards.at_trivial_loss(shipped["zoo-supervised"])
    monkeypatch.setattr(cards, "weights_dir", lambda: tmp_path)
    flags = cards.card_flags(["zoo-mae", "zoo-dino", "zoo-supervised", "random-a"])
    assert flags["zoo-mae"]["at_trivial_loss"] and "zoo-supervised" not in flags
    assert "zoo-dino" not in flags or not flags["zoo-dino"]["at_trivial_loss"]
    demo = load_profile("demo")
    notice = page_notice(demo, ["zoo-mae", "zoo-supervised"]).data
    assert notice.startswith("```{warning}") and "Loss at its trivial level: `zoo-mae` final loss 0.990" in notice
    assert "`zoo-supervised` final loss" not in notice
    assert "Loss at its trivial level" not in page_notice(demo, ["zoo-supervised", "random-a"]).data


def test_a_small_knn_gain_is_disclosed_with_its_size(shipped, tmp_path, monkeypatch):
    little = copy.deepcopy(shipped["zoo-clip"])
    r = little["eval"]["readout"]
    little["eval"]["trained"][r]["knn_top1"] = little["eval"]["random_init"][r]["knn_top1"] + cards.WEAK_GAIN - 0.01
    write_cards(tmp_path, shipped, zoo_clip=little)
    monkeypatch.setattr(cards, "weights_dir", lambda: tmp_path)
    assert cards.learned(little) and cards.card_flags(["zoo-clip"])["zoo-clip"]["learned_little"]
    gain = 100 * (cards.WEAK_GAIN - 0.01)
    assert f"`zoo-clip` {gain:+.1f} points" in page_notice(load_profile("demo"), ["zoo-clip"]).data


def test_recheck_is_cached_by_weights_and_evaluation_code(shipped, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cards, "eval_splits", lambda protocol, cache_dir=None: ("ref", "test"))
    monkeypatch.setattr(cards, "knn_accuracy_for_weights",
                        lambda path, protocol, readout, device="cpu", splits=None: calls.append(path) or 0.5)
    card = shipped["zoo-supervised"]
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / card["weights"]).write_bytes(b"first weights")
    store = tmp_path / "recheck"
    run = lambda: cards.recheck({"zoo-supervised": card}, directory=weights, result_cache=store)
    first, second = run(), run()
    assert len(calls) == 1 and not first.loc["zoo-supervised", "cached"] and second.loc["zoo-supervised", "cached"]
    assert second.loc["zoo-supervised", "recomputed k-NN"] == 0.5
    (weights / card["weights"]).write_bytes(b"retrained weights")          # a new weights file misses
    assert not run().loc["zoo-supervised", "cached"] and len(calls) == 2
    monkeypatch.setattr(cards, "_eval_code_version", lambda: "changed")    # so does changed evaluation code
    assert not run().loc["zoo-supervised", "cached"] and len(calls) == 3
    cards.recheck({"zoo-supervised": card}, directory=weights, result_cache=False)   # no cache: always computes
    assert len(calls) == 4

"""``vitscope finetune``: a resumed run equals an uninterrupted one; ``+ft`` names resolve in the registry."""
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import vitscope.finetune as ft
from vitscope.finetune import recipes
from vitscope.finetune.train import epoch_file, lr_at
from vitscope.models import get_cfg, load_model

TINY = {"depth": 2, "embed_dim": 48, "num_heads": 2}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(run, epoch):
    return load_file(str(epoch_file(run, epoch)))


def test_resume_after_epoch_one_equals_uninterrupted_run(tmp_path, monkeypatch, one_thread):
    recipe = replace(recipes.QUICK, epochs=3)
    monkeypatch.setenv("VITSCOPE_CACHE", str(tmp_path / "a"))
    whole = ft.finetune("random-a", recipe=recipe, arch_overrides=TINY, progress=False)
    run_a = ft.run_dir("random-a", recipe, arch_overrides=TINY)
    monkeypatch.setenv("VITSCOPE_CACHE", str(tmp_path / "b"))
    assert ft.finetune("random-a", recipe=recipe, arch_overrides=TINY, progress=False, stop_after_epoch=1) is None
    run_b = ft.run_dir("random-a", recipe, arch_overrides=TINY)
    assert epoch_file(run_b, 1).is_file() and not epoch_file(run_b, 2).exists()
    resumed = ft.finetune("random-a", recipe=recipe, arch_overrides=TINY, progress=False)
    for e in (1, 2, 3):
        a, b = _weights(run_a, e), _weights(run_b, e)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"epoch {e}, {k} differs after resume"
    assert [h["loss"] for h in whole["history"]] == [h["loss"] for h in resumed["history"]]
    # the weights moved, and the saved backbone has the base's keys (no head)
    base = load_model("random-a", **TINY).state_dict()
    assert set(a) == set(base)
    assert any(not torch.equal(a[k], base[k].float()) for k in a)


def test_ft_names_resolve_after_the_command_and_name_it_before(tmp_path, monkeypatch, one_thread, capsys):
    monkeypatch.setenv("VITSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(ft, "default_recipe", lambda cfg: recipes.QUICK)
    with pytest.raises(ft.FinetuneMissingError, match="vitscope finetune random-b --profile demo"):
        get_cfg("random-b+ft")
    from vitscope.cli import main

    assert main(["finetune", "random-b", "--recipe", "quick", "--no-progress"]) == 0
    cfg, base = get_cfg("random-b+ft"), get_cfg("random-b")
    assert (cfg.arch, dict(cfg.arch_kwargs), cfg.preprocess) == (base.arch, dict(base.arch_kwargs), base.preprocess)
    assert cfg.identity()["weights"] != base.identity()["weights"]
    run = ft.run_dir("random-b")
    last = load_model("random-b+ft").state_dict()
    assert all(torch.equal(last[k], v) for k, v in _weights(run, 2).items())
    first = load_model("random-b+ft@1").state_dict()
    assert any(not torch.equal(first[k], last[k]) for k in last)
    assert get_cfg("random-b+ft@2").identity()["weights"] == cfg.identity()["weights"]
    with pytest.raises(ValueError, match="outside"):
        get_cfg("random-b+ft@3")
    card = json.loads((run / "card.json").read_text())
    assert card["base"] == "random-b" and card["epochs"] == 2 and len(card["history"]) == 2
    assert ft.card("random-b+ft")["pretrained"] == json.loads(json.dumps(base.identity()))


def test_run_folder_changes_with_recipe_and_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSCOPE_CACHE", str(tmp_path))
    a = ft.run_dir("random-a", recipes.QUICK)
    assert a != ft.run_dir("random-a", recipes.QUICK.with_epochs(3))
    assert a != ft.run_dir("random-b", recipes.QUICK)
    assert a != ft.run_dir("random-a", recipes.QUICK, arch_overrides=TINY)
    assert a.parent == tmp_path / "finetune" / "random-a"


def test_paper_recipe_is_om_table5():
    p = recipes.PAPER
    assert (p.base_lr, p.weight_decay, p.betas, p.layer_decay, p.batch_size) == (1e-3, 0.05, (0.9, 0.999), 0.75, 1024)
    assert (p.warmup_epochs, p.epochs, p.randaug, p.label_smoothing) == (5, 100, (9, 0.5), 0.1)
    assert (p.mixup, p.cutmix, p.drop_path) == (0.8, 1.0, 0.1)
    assert p.lr == pytest.approx(1e-3 * 1024 / 256)
    assert recipes.default_recipe(get_cfg("zoo-mae")) is recipes.DEMO
    assert recipes.default_recipe(get_cfg("mae")) is recipes.PAPER


def test_schedule_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0, 0.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_parse_names():
    assert ft.parse("zoo-mae+ft") == ("zoo-mae", None)
    assert ft.parse("zoo-mae+ft@3") == ("zoo-mae", 3)
    assert ft.parse("zoo-mae") is None

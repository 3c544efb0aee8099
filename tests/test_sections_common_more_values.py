"""vitscope.sections.common (issue 17): load_for_analysis returns the loaded model, its registry entry and its cache
identity, and asks the loader for the right model, weights and device (the loader is faked: no weights are read)."""
from __future__ import annotations

from vitscope import models
from vitscope.models import get_cfg
from vitscope.sections import common


def test_model_identity_is_the_registry_identity():
    assert common.model_identity("zoo-dino") == get_cfg("zoo-dino").identity()
    assert common.model_identity("random-b") == get_cfg("random-b").identity(None)
    assert common.model_identity("random-b")["weights"] == "random:seed=" + str(get_cfg("random-b").seed)
    assert common.model_identity("zoo-dino")["name"] == "zoo-dino"
    assert common.model_identity("random-a") != common.model_identity("random-b")


def test_load_for_analysis_loads_with_weights_and_device(monkeypatch):
    calls = []
    monkeypatch.setattr(models, "load_model", lambda name, weights=None, device="cpu": calls.append(
        (name, weights, device)) or f"net:{name}")
    net, cfg, ident = common.load_for_analysis("random-b", device="meta")
    assert (net, cfg, ident) == ("net:random-b", get_cfg("random-b"), get_cfg("random-b").identity())
    assert calls == [("random-b", None, "meta")]
    common.load_for_analysis("random-a")
    assert calls[-1] == ("random-a", None, "cpu")
    seen = []
    monkeypatch.setattr(common, "model_identity", lambda name, weights=None: seen.append((name, weights)) or "id")
    assert common.load_for_analysis("zoo-mae", "some.pt", "cuda:1")[2] == "id"
    assert calls[-1] == ("zoo-mae", "some.pt", "cuda:1") and seen == [("zoo-mae", "some.pt")]

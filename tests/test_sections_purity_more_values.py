"""sections.purity: ``_pooled`` (the cached pooled-token extraction behind cluster_model and seed_spread) with
model loading, the dataset and the extraction replaced by recorders: what each is given and what comes back."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from vitscope.extract import PooledTokens
from vitscope.profiles import Profile
from vitscope.sections import purity

PRE = SimpleNamespace(resize=40, crop=32, interpolation="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))


def _record(monkeypatch, tmp_path):
    calls = {"load": [], "dataset": [], "extract": []}
    net = object()
    pooled = {"cls": torch.arange(12.0).reshape(2, 2, 3), "mean": -torch.arange(12.0).reshape(2, 2, 3)}

    def load(model, weights, device):
        calls["load"].append((model, weights, device))
        return net, SimpleNamespace(preprocess=PRE), {"model": model}

    def dataset(self, name, preprocess):
        calls["dataset"].append((name, preprocess))
        return SimpleNamespace(classes=["a", "b", "c", "d"])

    def extract(n, ident, data, products, *, transform_id, store, device, progress):
        calls["extract"].append((n, ident, data, products, transform_id, store, device, progress))
        return {"pooled": pooled, "_meta": {"labels": torch.tensor([3, 1], dtype=torch.int32)}}

    monkeypatch.setattr(purity, "load_for_analysis", load)
    monkeypatch.setattr(Profile, "dataset", dataset)
    monkeypatch.setattr(purity, "extract", extract)
    monkeypatch.setattr(purity, "FeatureStore", lambda root=None: ("default store", root))
    return calls, net, pooled


def test_pooled_extracts_block_pooled_tokens_of_the_sections_dataset(monkeypatch, tmp_path):
    calls, net, pooled = _record(monkeypatch, tmp_path)
    profile = Profile("t", {"models": ["zoo-dino"], "device": "meta", "purity": {"dataset": "inet"}})
    got, labels, n_classes = purity._pooled("zoo-dino", profile, "w.pt", None, "S", True)
    assert got is pooled and n_classes == 4
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 1]
    assert calls["load"] == [("zoo-dino", "w.pt", "meta")] and calls["dataset"] == [("inet", PRE)]
    n, ident, data, products, transform_id, store, device, progress = calls["extract"][0]
    assert n is net and ident == {"model": "zoo-dino"} and data.classes == ["a", "b", "c", "d"]
    assert products == {"pooled": PooledTokens(site="block")} and products["pooled"].site == "block"
    assert transform_id == {"resize": 40, "crop": 32, "interpolation": "bicubic", "mean": [0.5, 0.4, 0.3],
                            "std": [0.2, 0.3, 0.4]}
    assert (store, device, progress) == ("S", "meta", True)
    purity._pooled("zoo-mae", profile, None, "cpu", None, False)                 # explicit device, default store
    assert calls["load"][-1] == ("zoo-mae", None, "cpu")
    assert calls["extract"][-1][5:] == (("default store", None), "cpu", False)

"""Section reductions and book orchestration that need no model: hand-made tables, TOC and page titles."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from vitscope.book.build import PAGES, personalise, toc
from vitscope.profiles import load_profile
from vitscope.sections.attention_distance import late_layer_claim, layer_summary


def _table(model, per_block):
    return pd.DataFrame([{"model": model, "variant": "unit_square", "block": b + 1, "head": h, "distance": d + 0.01 * h,
                          "uniform": 0.5} for b, d in enumerate(per_block) for h in range(3)])


def test_layer_summary_by_hand():
    s = layer_summary(_table("random-a", [0.4, 0.2, 0.3, 0.35])).iloc[0]
    # per-layer means are d + 0.01 (heads add 0, 0.01, 0.02)
    assert s["first"] == pytest.approx(0.41) and s["dip_block"] == 2 and s["dip"] == pytest.approx(0.21)
    assert s["last"] == pytest.approx(0.36) and s["late_rise"] == pytest.approx(0.15) and s["depth"] == 4


def test_late_layer_claim_needs_both_groups_and_orders_them():
    only_random = layer_summary(pd.concat([_table("random-a", [0.3, 0.4]), _table("random-b", [0.3, 0.2])]))
    assert late_layer_claim(only_random) is None
    s = layer_summary(pd.concat([_table("dino", [0.3, 0.5]), _table("mae", [0.3, 0.2]), _table("fs", [0.3, 0.4])]))
    claim = late_layer_claim(s)
    assert claim["holds"] and claim["reconstruction_models"] == ["mae"]
    assert claim["global_late_last"] == pytest.approx((0.51 + 0.41) / 2)
    flipped = layer_summary(pd.concat([_table("dino", [0.3, 0.1]), _table("mae", [0.3, 0.6])]))
    assert not late_layer_claim(flipped)["holds"]


def test_toc_nests_per_model_pages_under_their_overview():
    profile = load_profile("demo")
    parts = {p["caption"]: p["chapters"] for p in toc(profile)["parts"]}
    tm = next(iter(parts.values()))
    assert tm[0]["file"] == "book/generated/tm_4_3_overview"
    assert [s["file"].rsplit("/", 1)[1] for s in tm[0]["sections"]] == profile.models
    names = [p.notebook for p in PAGES]
    assert len(names) == len(set(names))


def test_personalise_sets_the_title_and_hides_parameters(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Template title\nbody"},
                    {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "model = 'x'"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "page.ipynb"
    path.write_text(json.dumps(nb))
    personalise(path, "4.3 Average attention distance: DINO")
    out = json.loads(path.read_text())
    assert out["cells"][0]["source"] == "# 4.3 Average attention distance: DINO\nbody"
    assert "remove-cell" in out["cells"][1]["metadata"]["tags"]


def test_cli_lists_every_registry_model(capsys):
    from vitscope.cli import main
    from vitscope.models import MODELS

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODELS)


def test_unknown_profile_suggests_the_closest():
    with pytest.raises(FileNotFoundError, match="Did you mean 'demo'"):
        load_profile("dmeo")


def test_resolve_device():
    import torch

    from vitscope.devices import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def _cka_rows(pairs: dict, depth: int = 3) -> pd.DataFrame:
    """A CKA table with same-depth values per pair (and off-diagonal noise that must be ignored)."""
    rows = []
    for (a, b), values in pairs.items():
        for i in range(1, depth + 1):
            for j in range(1, depth + 1):
                rows.append({"model_a": a, "model_b": b, "site_a": "block", "site_b": "block", "index_a": i,
                             "index_b": j, "cka": values[i - 1] if i == j else 0.0, "mode": "reference"})
    rows.append({"model_a": "zoo-dino", "model_b": "zoo-dino", "site_a": "block", "site_b": "block",
                 "index_a": 1, "index_b": 1, "cka": 1.0, "mode": "reference"})
    return pd.DataFrame(rows)


def test_joint_embedding_claim_by_hand():
    from vitscope.sections.cka import joint_embedding_claim, same_depth
    table = _cka_rows({("zoo-mocov3", "zoo-dino"): [0.9, 0.8, 0.7], ("zoo-mocov3", "zoo-mae"): [0.6, 0.3, 0.3],
                       ("zoo-dino", "zoo-mae"): [0.9, 0.3, 0.0], ("zoo-dino", "random-a"): [1.0, 1.0, 1.0]})
    assert len(same_depth(table)) == 12   # the self-pair and every off-diagonal entry are left out
    claim = joint_embedding_claim(table)
    assert claim["joint_embedding_pairs"] == {"zoo-mocov3 vs zoo-dino": pytest.approx(0.8)}
    assert claim["mixed_pairs"] == {"zoo-mocov3 vs zoo-mae": pytest.approx(0.4), "zoo-dino vs zoo-mae": pytest.approx(0.4)}
    assert claim["mixed_mean"] == pytest.approx(0.4) and claim["holds"]   # random-a belongs to neither group
    flipped = _cka_rows({("zoo-mocov3", "zoo-dino"): [0.1, 0.1, 0.1], ("zoo-dino", "zoo-mae"): [0.5, 0.5, 0.5]})
    assert not joint_embedding_claim(flipped)["holds"]
    assert joint_embedding_claim(_cka_rows({("zoo-dino", "zoo-mae"): [0.5, 0.5, 0.5]})) is None

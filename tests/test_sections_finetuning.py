"""OM 2.3 section: the claims' logic on constructed tables (known answers), and path efficiency of a real run."""
import numpy as np
import pandas as pd
import pytest
import torch

import vitscope.finetune as ft
from vitscope.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.finetune import recipes
from vitscope.sections import cka, finetuning

BASES = ["zoo-mae", "zoo-mocov3", "random-a"]   # reconstruction, joint-embedding, the untrained baseline
SITES = ("block", "norm1", "qkv", "fc1")


def _grams(seed=0, batches=8, b=16, d=12, depth=2):
    """Gram stacks of constructed features: zoo-mae+ft is zoo-mocov3 plus a little noise at every site except fc1;
    zoo-mae, random-a(+ft) and zoo-mocov3+ft's fc1 are independent of zoo-mocov3."""
    g = torch.Generator().manual_seed(seed)
    labels = [(s, i) for s in SITES for i in range(1, depth + 1)]
    names = ["zoo-mae", "zoo-mocov3", "random-a", "zoo-mae+ft", "zoo-mocov3+ft", "random-a+ft"]
    out = {m: [] for m in names}
    for _ in range(batches):
        feats = {m: torch.randn(len(labels), b, d, generator=g, dtype=torch.float64) for m in names}
        feats["zoo-mocov3+ft"] = feats["zoo-mocov3"] + 0.1 * feats["zoo-mocov3+ft"]
        near = feats["zoo-mocov3"] + 0.1 * feats["zoo-mae+ft"]
        fc1 = torch.tensor([s == "fc1" for s, _ in labels]).view(-1, 1, 1)
        feats["zoo-mae+ft"] = torch.where(fc1, feats["zoo-mae+ft"], near)
        for m in names:
            out[m].append(feats[m] @ feats[m].transpose(1, 2))
    return {m: (v, labels) for m, v in out.items()}


def test_cka_claims_hold_on_features_built_to_match_the_paper():
    results = finetuning.cka_checks(cka.batch_terms(_grams()), BASES)
    by_claim = {}
    for r in results:
        by_claim.setdefault(r.claim, []).append(r)
    assert [r.verdict for r in by_claim["OM-2.3a"]] == [HOLDS, HOLDS]
    assert by_claim["OM-2.3a"][0].effect.estimate > 0.5
    assert [r.verdict for r in by_claim["OM-2.3b"]] == [HOLDS]
    assert by_claim["OM-2.3b"][0].baseline_model == "random-a"


def _path_table(eff):
    rows = [{"model": m, "type": "qkv", "block": blk, "efficiency": e + 0.01 * blk, "displacement": 1.0,
             "path_length": 1.0, "n_params": 1} for m, e in eff.items() for blk in range(1, 7)]
    return pd.DataFrame(rows)


def test_path_check_sign_and_baseline():
    holds = finetuning.path_check(_path_table({"zoo-mae": 0.8, "zoo-mocov3": 0.4, "random-a": 0.3}))
    assert [r.verdict for r in holds] == [HOLDS]
    reverse = finetuning.path_check(_path_table({"zoo-mae": 0.4, "zoo-mocov3": 0.8, "random-a": 0.6}))
    assert [r.verdict for r in reverse] == [DOES_NOT_HOLD]
    explained = finetuning.path_check(_path_table({"zoo-mae": 0.8, "zoo-mocov3": 0.4, "random-a": 0.9}))
    assert [r.verdict for r in explained] == [INCONCLUSIVE]


def _flips(values):
    rows = []
    for m, v in values.items():
        for i, x in enumerate(v):
            rows += [{"model": m, "augmentation": "hflip", "pooling": "cls", "block": b, "image": i, "index": x}
                     for b in (1, 2)]
    return pd.DataFrame(rows)


def test_flip_check_needs_more_than_the_untrained_models_rise():
    rng = np.random.default_rng(0)
    noise = lambda: 0.01 * rng.normal(size=40)   # noqa: E731
    table = _flips({"zoo-mae": 0.2 + noise(), "zoo-mae+ft": 0.9 + noise(), "zoo-mocov3": 0.8 + noise(),
                    "zoo-mocov3+ft": 0.9 + noise(), "random-a": 0.3 + noise(), "random-a+ft": 0.5 + noise()})
    assert [r.verdict for r in finetuning.flip_check(table, BASES)] == [HOLDS]
    table = _flips({"zoo-mae": 0.2 + noise(), "zoo-mae+ft": 0.5 + noise(), "zoo-mocov3": 0.8 + noise(),
                    "zoo-mocov3+ft": 0.9 + noise(), "random-a": 0.1 + noise(), "random-a+ft": 0.9 + noise()})
    assert [r.verdict for r in finetuning.flip_check(table, BASES)] == [INCONCLUSIVE]


def test_marginal_check_and_table():
    rng = np.random.default_rng(1)

    def correct(lin, multi):
        c = {("linear", 0, 0): torch.tensor((rng.random(200) < lin).astype(float))}
        c.update({("multi-layer", 0, k): torch.tensor((rng.random(200) < multi).astype(float)) for k in (1, 2)})
        return c

    results = {"correct": {"zoo-mae": correct(0.3, 0.6), "zoo-mae+ft": correct(0.8, 0.8),
                           "zoo-mocov3": correct(0.7, 0.7), "zoo-mocov3+ft": correct(0.8, 0.8),
                           "random-a": correct(0.1, 0.1), "random-a+ft": correct(0.5, 0.5)}}
    assert [r.verdict for r in finetuning.marginal_check(results, BASES)] == [HOLDS]
    summary = pd.DataFrame([{"model": "m", "probe": "linear", "depth": 0, "layer": 0, "mean": 0.5, "std": 0.0},
                            {"model": "m", "probe": "multi-layer", "depth": 0, "layer": 1, "mean": 0.7, "std": 0.0}])
    table = finetuning.marginal_table({"summary": summary})
    assert table.gain.tolist() == pytest.approx([0.2])


def test_path_table_of_a_real_run_lies_in_unit_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(ft, "default_recipe", lambda cfg: recipes.QUICK)
    ft.finetune("random-a", progress=False)
    table = finetuning.path_table(["random-a"])
    whole = table[table.block == 0]
    assert set(whole.type) == set(finetuning.PATH_TYPES)
    assert ((table.efficiency > 0) & (table.efficiency <= 1 + 1e-9)).all()
    assert set(table[table.type == "qkv"].block) == {0, 1, 2, 3, 4, 5, 6}
    # the whole type's displacement is the root sum of squares of its blocks'
    q = table[table.type == "qkv"]
    assert float(q[q.block == 0].displacement.iloc[0]) == pytest.approx(
        float(np.sqrt((q[q.block > 0].displacement ** 2).sum())))

"""TM 6.2 DAVIS (sections.propagation), values: ``compute``, ``per_object_all`` and ``check_claims`` with
``per_object`` (model loading and propagation) replaced by recorded hand-made tables; the claim rows' estimates,
measure strings and floors; and the exact messages."""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from vitscope.claims.verdict import CANNOT_CHECK, HOLDS, INCONCLUSIVE
from vitscope.profiles import Profile
from vitscope.sections import propagation as sec

SEEDS = ("random-a", "random-b", "random-c")


def _objects(model: str, per_block: list[float], n_videos=3, n_objects=4, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for b, v in enumerate(per_block, 1):
        for vid in range(n_videos):
            for o in range(1, n_objects + 1 - (vid == 0)):
                j = v + 0.02 * rng.standard_normal()
                f = v + 0.02 * rng.standard_normal()
                rows.append({"model": model, "block": b, "video": f"v{vid}", "object": o, "j": j, "f": f,
                             "jf": (j + f) / 2})
    return pd.DataFrame(rows)


def test_compute_summarises_per_object(monkeypatch):
    run = Profile("t", {"models": ["zoo-dino"], "davis": {"dataset": "d"}})
    table = pd.concat([_objects("zoo-dino", [0.3, 0.6]), _objects("other", [0.1, 0.1])], ignore_index=True)
    calls = []
    monkeypatch.setattr(sec, "per_object", lambda m, p, **kw: calls.append((m, p, kw)) or table)
    store = object()
    out = sec.compute("zoo-dino", run, weights="w", device="dev", store=store)
    assert calls == [("zoo-dino", run, {"weights": "w", "device": "dev", "store": store})]
    assert list(out.columns) == ["model", "block", "jf", "j", "f", "n_objects", "n_videos"]
    assert out.model.tolist() == ["zoo-dino", "zoo-dino", "other", "other"] and out.block.tolist() == [1, 2, 1, 2]
    sel = table[(table.model == "zoo-dino") & (table.block == 2)]
    row = out.iloc[1]
    assert (row.jf, row.j, row.f) == pytest.approx((sel.jf.mean(), sel.j.mean(), sel.f.mean()))
    assert (row.n_objects, row.n_videos) == (11, 3)


def test_per_object_all_and_check_claims_add_the_seeds(monkeypatch):
    run = Profile("t", {"models": ["zoo-dino", "zoo-mae"], "baselines": list(SEEDS), "davis": {"dataset": "d"}})
    calls = []

    def fake(m, profile, *, weights=None, device=None, store=None):
        calls.append((m, weights, device, store))
        return _objects(m, [0.4, 0.5], seed=len(calls))

    monkeypatch.setattr(sec, "per_object", fake)
    store = object()
    table, seeds = sec.per_object_all(["zoo-dino", "random-a"], run, weights={"zoo-dino": "w"}, device="d",
                                      store=store)
    assert calls == [("zoo-dino", "w", "d", store), *((s, None, "d", store) for s in SEEDS)]
    assert seeds == list(SEEDS) and list(dict.fromkeys(table.model)) == ["zoo-dino", *SEEDS]
    assert table.index.tolist() == list(range(len(table)))
    calls.clear()
    got = {}
    monkeypatch.setattr(sec, "tm_check", lambda t, s: got.update(models=list(dict.fromkeys(t.model)), seeds=s)
                        or ["rows"])
    assert sec.check_claims(None, run, device="x") == ["rows"]
    assert calls == [("zoo-dino", None, "x", None), ("zoo-mae", None, "x", None),
                     *((s, None, "x", None) for s in SEEDS)]
    assert got == {"models": ["zoo-dino", "zoo-mae", *SEEDS], "seeds": list(SEEDS)}
    calls.clear()
    sec.check_claims(["zoo-clip"], run, weights={"zoo-clip": "c"}, store=store)
    assert calls[0] == ("zoo-clip", "c", None, store) and len(calls) == 4


def _jf(table, model, block):
    sel = table[(table.model == model) & (table.block == block)]
    return sel.jf.mean()


def test_tm_check_rows_estimates_and_measures():
    curves = {"zoo-dino": [0.5, 0.7, 0.65], "zoo-supervised": [0.4, 0.45, 0.3], "zoo-mae": [0.3, 0.35, 0.33],
              "random-a": [0.2, 0.2, 0.21], "random-b": [0.22, 0.2, 0.2], "random-c": [0.25, 0.19, 0.2]}
    table = pd.concat([_objects(m, c, seed=i) for i, (m, c) in enumerate(curves.items())], ignore_index=True)
    rows = sec.tm_check(table, SEEDS)
    best = {m: max(range(1, 4), key=lambda b, m=m: _jf(table, m, b)) for m in curves}
    at_best = {m: _jf(table, m, best[m]) for m in curves}
    assert best == {"zoo-dino": 2, "zoo-supervised": 2, "zoo-mae": 2, "random-a": 3, "random-b": 1, "random-c": 1}
    assert [(r.claim, r.subject) for r in rows] == [
        ("TM-6.2a", "mean of zoo-dino minus mean of zoo-supervised, zoo-mae"),
        ("TM-6.2a", "zoo-supervised: drop in the later layers"),
        ("TM-6.2a", "zoo-mae above the untrained model"),
        ("TM-T1b", "DAVIS, mean of zoo-dino, zoo-supervised, zoo-mae"),
        ("TM-T1b", "DAVIS, zoo-dino"), ("TM-T1b", "DAVIS, zoo-supervised"), ("TM-T1b", "DAVIS, zoo-mae")]
    g = rows[0]
    assert g.measure == "J&F at each model's best block" and g.effect.unit == "objects" and g.effect.n == 11
    others = (at_best["zoo-supervised"] + at_best["zoo-mae"]) / 2
    assert g.effect.estimate == pytest.approx(at_best["zoo-dino"] - others)
    assert g.baseline.estimate == pytest.approx(at_best["zoo-dino"] - at_best["random-a"])
    seed_best = [at_best[s] for s in SEEDS]
    assert g.floor == pytest.approx(max(seed_best) - min(seed_best)) and g.verdict == HOLDS
    d = rows[1]
    assert d.measure == "J&F, last block minus best (2)" and d.expected == -1
    assert d.effect.estimate == pytest.approx(_jf(table, "zoo-supervised", 3) - _jf(table, "zoo-supervised", 2))
    m = rows[2]
    assert m.measure == "J&F at each model's best block, minus `random-a`'s" and m.baseline_model == "random-a"
    assert m.effect.estimate == pytest.approx(at_best["zoo-mae"] - at_best["random-a"]) and m.verdict == HOLDS
    local = rows[3]
    assert local.measure == "J&F, best block before the last minus the last block"
    want = np.mean([_jf(table, x, 2) - _jf(table, x, 3) for x in ("zoo-dino", "zoo-supervised", "zoo-mae")])
    assert local.effect.estimate == pytest.approx(want)
    base_local = max((1, 2), key=lambda b: _jf(table, "random-a", b))
    assert local.baseline.estimate == pytest.approx(want - (_jf(table, "random-a", base_local)
                                                            - _jf(table, "random-a", 3)))
    assert rows[4].measure == "J&F, best block before the last minus the last block (2 vs 3)"
    assert rows[4].effect.estimate == pytest.approx(_jf(table, "zoo-dino", 2) - _jf(table, "zoo-dino", 3))
    assert local.seeds == SEEDS and local.floor is not None and local.floor == local.baseline_floor


def test_tm_check_cannot_check_reasons():
    table = _objects("zoo-mae", [0.3, 0.4])
    rows = sec.tm_check(table)
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows[:2]] == [
        ("TM-6.2a", "DINO and MoCo minus the others", CANNOT_CHECK,
         "the profile lacks a joint-embedding model or another trained model"),
        ("TM-6.2a", "zoo-mae competitive", CANNOT_CHECK, "no untrained baseline of the same architecture")]
    assert rows[2].floor is None and rows[2].baseline is None and rows[2].seeds == ()
    rows = sec.tm_check(_objects("random-a", [0.3, 0.4]))
    assert [(r.claim, r.subject, r.reason) for r in rows] == [
        ("TM-6.2a", "DINO and MoCo minus the others",
         "the profile lacks a joint-embedding model or another trained model"),
        ("TM-T1b", "DAVIS, trained models", "the profile has no trained model")]
    base = _objects("random-a", [0.3, 0.3, 0.3], seed=2)
    drop = pd.concat([_objects("zoo-dino", [0.6, 0.6, 0.4]), _objects("zoo-clip", [0.5, 0.7, 0.3], seed=1), base])
    row = sec.tm_check(drop)[1]
    assert (row.subject, row.verdict) == ("zoo-clip: drop in the later layers", HOLDS)     # expected < 0
    rise = pd.concat([_objects("zoo-dino", [0.6, 0.6, 0.4]), _objects("zoo-clip", [0.3, 0.6, 0.5], seed=1),
                      _objects("random-a", [0.3, 0.7, 0.3], seed=2)])
    row = sec.tm_check(rise)[1]
    assert row.verdict == INCONCLUSIVE                     # the untrained model drops more after its best
    assert row.baseline.estimate == pytest.approx((_jf(rise, "zoo-clip", 3) - _jf(rise, "zoo-clip", 2))
                                                  - (_jf(rise, "random-a", 3) - _jf(rise, "random-a", 2)))


def test_best_and_last_and_blocks():
    t = _objects("m", [0.3, 0.6, 0.5, 0.7])
    assert sec._best_and_last(t, "m") == (4, 2, 4)
    assert sec._best_and_last(_objects("m", [0.3]), "m") == (1, 1, 1)
    net = types.SimpleNamespace(blocks=[None] * 3)
    assert sec._blocks(net, {"blocks": None}) == [1, 2, 3]
    assert sec._blocks(net, {"blocks": [1, 3]}) == [1, 3]
    with pytest.raises(ValueError) as err:
        sec._blocks(net, {"blocks": [0, 2, 4]})
    assert str(err.value) == "davis.blocks [0, 4] outside 1..3 (the model's blocks, 1-based)"


def test_videos_refuses_unknown_twin_keys(tmp_path):
    run = Profile("t", {"models": ["zoo-dino"], "davis": {"dataset": "d"},
                        "datasets": {"d": {"manifest": "davis2017", "root": str(tmp_path / "d"),
                                           "synthetic": {"n_videos": 1, "frames": 3, "colour": 1}}}})
    with pytest.raises(ValueError) as err:
        sec.videos(run)
    assert str(err.value) == ("Profile 't': dataset 'd' synthetic keys ['colour', 'frames'] are unknown; known: "
                              "('n_videos', 'n_frames', 'size', 'seed')")


def test_protocol_casts_and_keeps_settings():
    run = Profile("t", {"davis": {"dataset": "d", "n_last_frames": "3", "topk": 2.0, "temperature": 1,
                                  "blocks": ["2", 3], "neighbourhood": None}})
    p = sec.protocol(run)
    assert p == {"dataset": "d", "n_last_frames": 3, "neighbourhood": None, "topk": 2, "temperature": 1.0,
                 "blocks": [2, 3], "bound_th": sec.seg.BOUND_TH}
    assert type(p["temperature"]) is float and type(p["topk"]) is int

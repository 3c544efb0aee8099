"""TM 4.2 (sections.aaam) pinned down (issue 17): the head table's every column against the kernels, the type
counts and the gallery on hand-made tables, the offset head's unit direction, the held-out split, and the claim rows'
order, texts and values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.claims.verdict import paired_contrast
from vitscope.kernels import attention_maps as am
from vitscope.profiles import Profile
from vitscope.sections import aaam, cls_attention

G = 3


def _maps(model, moment=None, mean_first=None, mean=None, n=4):
    moment = torch.zeros(n, 2, 2, 2) if moment is None else moment
    mean_first = torch.zeros(2, 2, 2 * G - 1, 2 * G - 1) if mean_first is None else mean_first
    products = {"aaam": {"mean": mean_first if mean is None else mean, "mean_first": mean_first, "moment": moment}}
    return cls_attention.AttentionMaps(model, {"grid": (G, G), "depth": 2, "num_heads": 2, "n_prefix": 1}, products,
                                       torch.arange(moment.shape[0]), "x")


def test_head_table_every_row_and_column_against_the_kernels():
    canvas = torch.zeros(2, 2, 2 * G - 1, 2 * G - 1, dtype=torch.float64)
    canvas[0, 0, G - 1, G - 1] = 1.0                        # block 1 head 0: strict
    canvas[0, 1, G - 2, G - 1] = 1.0                        # block 1 head 1: one patch up
    canvas[1, 0, G - 1, G - 2] = 1.0                        # block 2 head 0: one patch left
    canvas[1, 1, G, G - 1] = 1.0                            # block 2 head 1: one patch down
    table = aaam.head_table(_maps("zoo-dino", mean=canvas))
    f = am.head_features(canvas)
    assert table.model.tolist() == ["zoo-dino"] * 4
    assert table.block.tolist() == [1, 1, 2, 2] and table["head"].tolist() == [0, 1, 0, 1]
    assert table.type.tolist() == ["strict local", "offset local", "offset local", "offset local"]
    assert table.direction.tolist() == ["", "up", "left", "down"]
    assert list(table.columns) == ["model", "block", "head", "type", "direction", *f]
    for k, v in f.items():
        assert table[k].tolist() == v.reshape(-1).tolist()
    assert table.offset_y.tolist() == [0.0, -1.0, 0.0, 1.0] and table.offset_x.tolist() == [0.0, 0.0, -1.0, 0.0]


def test_type_counts_fill_missing_types_with_zero_per_model_and_block():
    table = pd.DataFrame({"model": ["b", "b", "a", "b"], "block": [1, 2, 1, 1],
                          "type": ["global", "strict local", "global", "global"]})
    counts = aaam.type_counts(table)
    assert list(counts.columns) == list(am.HEAD_TYPES) and list(counts.index) == ["b", "a"]
    assert counts.loc["b"].tolist() == [1, 0, 0, 0, 2] and counts.loc["a"].tolist() == [0, 0, 0, 0, 1]
    by_block = aaam.type_counts(table, by=("model", "block"))
    assert list(by_block.index) == [("b", 1), ("b", 2), ("a", 1)]
    assert by_block.to_numpy().tolist() == [[0, 0, 0, 0, 2], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]


def _gallery_table():
    rows = []
    for i, (m, kind, centre, offset, local, aniso, cross) in enumerate([
            ("a", "strict local", 0.6, 0.0, 0.9, 0.1, 0.1), ("a", "strict local", 0.9, 0.0, 0.9, 0.1, 0.1),
            ("b", "strict local", 0.7, 0.0, 0.9, 0.1, 0.1), ("b", "strict local", 0.8, 0.0, 0.9, 0.1, 0.1),
            ("a", "offset local", 0.1, 0.6, 0.8, 0.1, 0.1), ("a", "offset local", 0.1, 1.5, 0.8, 0.1, 0.1),
            ("a", "offset local", 0.1, 1.0, 0.8, 0.1, 0.1), ("a", "offset local", 0.1, 0.7, 0.8, 0.1, 0.1),
            ("a", "global", 0.0, 0.0, 0.3, 0.1, 0.1), ("b", "global", 0.0, 0.0, 0.1, 0.1, 0.1),
            ("c", "global", 0.0, 0.0, 0.2, 0.1, 0.1), ("c", "global", 0.0, 0.0, 0.05, 0.1, 0.1),
            ("a", "axial local", 0.1, 0.1, 0.7, 0.9, 0.2), ("b", "axial local", 0.1, 0.1, 0.7, 0.3, 0.95),
            ("c", "axial local", 0.1, 0.1, 0.7, 0.6, 0.1), ("a", "soft local", 0.2, 0.1, 0.6, 0.1, 0.1),
            ("b", "soft local", 0.2, 0.1, 0.7, 0.1, 0.1)]):
        rows.append({"model": m, "block": 1, "head": i, "type": kind, "centre_mass": centre, "offset": offset,
                     "local_mass": local, "anisotropy": aniso, "cross": cross})
    return pd.DataFrame(rows)


def test_gallery_clearest_first_one_model_each_then_the_rest():
    table = _gallery_table()
    g = aaam.gallery(table)
    assert list(g.columns) == list(table.columns)
    assert list(zip(g.type, g["head"])) == [
        ("strict local", 1), ("strict local", 3), ("strict local", 2),     # a 0.9, b 0.8, then a's next best, not b's
        ("soft local", 16), ("soft local", 15),
        ("axial local", 13), ("axial local", 12), ("axial local", 14),      # by max(anisotropy, cross)
        ("offset local", 5), ("offset local", 6), ("offset local", 7),      # one model: the three largest offsets
        ("global", 11), ("global", 9), ("global", 8)]                       # the lowest local mass first, per model
    one = aaam.gallery(table, per_type=1)
    assert list(one["head"]) == [1, 16, 13, 5, 11]
    assert aaam.gallery(table[table.type == "global"], per_type=2)["head"].tolist() == [11, 9]
    empty = aaam.gallery(table.head(0))
    assert empty.empty and list(empty.columns) == list(table.columns)


def test_offset_head_unit_direction_for_a_small_moment_and_zero_moment():
    first = torch.zeros(2, 2, 2 * G - 1, 2 * G - 1)
    first[1, 1, G - 1, G - 1] = 0.7
    first[1, 1, G, G - 1] = 0.3                     # block 2 head 1: 0.3 one patch down, moment (0.3, 0)
    first[0, 0, G - 1, G] = 0.2                     # block 1 head 0: moment (0, 0.2)
    b, h, u = aaam.offset_head(_maps("m", mean_first=first))
    assert (b, h) == (2, 1)
    assert u.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)
    b, h, u = aaam.offset_head(_maps("m"))
    assert (b, h) == (1, 0) and u.tolist() == [0.0, 0.0]


def test_offset_head_on_more_blocks_than_heads():
    first = torch.zeros(3, 2, 2 * G - 1, 2 * G - 1)
    first[1, 0, G - 1, G - 2] = 0.8                 # block 2 head 0: 0.8 one patch left
    first[2, 1, G - 1, G] = 0.4                     # block 3 head 1: 0.4 one patch right
    b, h, u = aaam.offset_head(_maps("m", mean_first=first))
    assert (b, h) == (2, 0) and u.tolist() == pytest.approx([0.0, -1.0], abs=1e-12)


def test_held_out_offset_uses_the_second_half_and_projects_on_u():
    n = 7                                           # reference_count(7) = 3: images 3..6 measure
    first = torch.zeros(2, 2, 2 * G - 1, 2 * G - 1)
    first[0, 1, G, G] = 1.0                         # block 1 head 1: diagonal, u = (1, 1) / sqrt 2
    moment = torch.zeros(n, 2, 2, 2)
    moment[:, 0, 1, 0] = torch.arange(n, dtype=torch.float32)
    moment[:, 0, 1, 1] = 2.0
    moment[:, 1, 1] = 100.0                         # another block: never read
    values, (b, h, u) = aaam.held_out_offset(_maps("m", moment, first))
    assert (b, h) == (1, 1) and values.dtype == torch.float64
    assert values.tolist() == pytest.approx([(k + 2.0) / np.sqrt(2) for k in range(3, n)], abs=1e-6)


def _offset(model, values, n=8, block=1, head=0, dy=0, dx=1):
    """Block ``block`` head ``head`` looks one patch along (dy, dx); its second-half moments along that are
    ``values``."""
    first = torch.zeros(2, 2, 2 * G - 1, 2 * G - 1)
    first[block - 1, head, G - 1 + dy, G - 1 + dx] = 1.0
    moment = torch.zeros(n, 2, 2, 2)
    moment[n // 2:, block - 1, head, 0 if dy else 1] = torch.tensor(values, dtype=torch.float32) * (dy or dx)
    return _maps(model, moment, first)


def test_claims_rows_sorted_least_favourable_first_then_by_baseline_low():
    base = [0.0, 0.02, -0.02, 0.01]
    results = {"zoo-dino": _offset("zoo-dino", [0.9, 0.92, 0.88, 0.9], block=2, head=1, dy=1, dx=0),
               "zoo-mae": _offset("zoo-mae", [-0.2, -0.19, -0.21, -0.2], dy=-1, dx=0),
               "zoo-mocov3": _offset("zoo-mocov3", [0.6, 0.62, 0.58, 0.6]),
               "zoo-beit": _offset("zoo-beit", [0.1, 0.6, 0.3, 0.5], dx=-1),
               "random-a": _offset("random-a", base)}
    rows = aaam.claims_from_maps(results)
    assert [(r.claim, r.subject, r.verdict) for r in rows] == [
        ("TM-4.2b", "zoo-mae", DOES_NOT_HOLD), ("TM-4.2b", "zoo-beit", INCONCLUSIVE),
        ("TM-4.2b", "zoo-mocov3", HOLDS), ("TM-4.2b", "zoo-dino", HOLDS)]
    towards = {"zoo-dino": "block 2 head 1, towards down", "zoo-mae": "block 1 head 0, towards up",
               "zoo-mocov3": "block 1 head 0, towards right", "zoo-beit": "block 1 head 0, towards left"}
    values = {m: np.array(v) - aaam.OFFSET_MOMENT_MIN for m, v in
              (("zoo-dino", [0.9, 0.92, 0.88, 0.9]), ("zoo-mae", [-0.2, -0.19, -0.21, -0.2]),
               ("zoo-mocov3", [0.6, 0.62, 0.58, 0.6]), ("zoo-beit", [0.1, 0.6, 0.3, 0.5]), ("random-a", base))}
    for r in rows:
        assert r.measure == (f"held-out local moment of its most offset head ({towards[r.subject]}) minus 0.25, the "
                             "least an offset local head has (patches)")
        assert (r.expected, r.baseline_model) == (1, "random-a")
        eff = paired_contrast(values, {r.subject: 1.0})
        beyond = paired_contrast(values, {r.subject: 1.0, "random-a": -1.0})
        for got, want in ((r.effect, eff), (r.baseline, beyond)):
            assert (got.estimate, got.low, got.high) == pytest.approx((want.estimate, want.low, want.high), abs=1e-6)
            assert (got.n, got.unit) == (4, "images")
    assert rows[0].effect.estimate == pytest.approx(-0.45, abs=1e-6)
    assert rows[-1].baseline.estimate == pytest.approx(0.9 - 0.0025, abs=1e-6)
    assert rows[2].baseline.low < rows[3].baseline.low


def test_claims_cannot_check_rows_and_the_compute_entry(monkeypatch):
    (r,) = aaam.claims_from_maps({"random-a": _offset("random-a", [0.0] * 4)})
    assert (r.claim, r.subject, r.verdict, r.reason) == ("TM-4.2b", "every model", CANNOT_CHECK,
                                                         "the profile has no trained model")
    rows = aaam.claims_from_maps({"zoo-mae": _offset("zoo-mae", [0.0] * 4), "zoo-dino": _offset("zoo-dino", [1] * 4)})
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows] == [
        ("TM-4.2b", m, CANNOT_CHECK, "no untrained baseline of the same architecture in this profile")
        for m in ("zoo-mae", "zoo-dino")]
    calls = []

    def fake(model, profile, section, **kw):
        calls.append((model, profile, section, kw))
        return _offset(model, [0.9, 0.9, 0.9, 0.9] if model == "zoo-dino" else [0.0, 0.01, -0.01, 0.0])
    monkeypatch.setattr(aaam, "extract_maps", fake)
    profile = Profile("t", {"models": ["zoo-dino", "random-a"]})
    assert aaam.compute("zoo-mae", profile, device="d", k=1).model == "zoo-mae"
    assert calls == [("zoo-mae", profile, "aaam", {"device": "d", "k": 1})]
    calls.clear()
    rows = aaam.check_claims(None, profile, weights={"random-a": "w"}, device="dev", store="s", progress=True)
    assert calls == [(m, profile, "aaam", {"weights": w, "device": "dev", "store": "s", "progress": True})
                     for m, w in (("zoo-dino", None), ("random-a", "w"))]
    assert [(r.subject, r.verdict) for r in rows] == [("zoo-dino", HOLDS)]
    calls.clear()
    aaam.check_claims(["zoo-mae"], profile)
    assert calls == [("zoo-mae", profile, "aaam", {"weights": None, "device": None, "store": None,
                                                   "progress": False})]

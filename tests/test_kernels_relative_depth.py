"""kernels.relative_depth: CKA binned by the distance between relative depths, checked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitscope.kernels.relative_depth import bin_edges, cka_by_depth, distance_mask, relative_depths


def test_relative_depths_end_at_one():
    assert relative_depths(4).tolist() == [0.25, 0.5, 0.75, 1.0]


def test_hand_computed_case():
    # a: 2 layers (depths 0.5, 1); b: 4 layers (0.25, 0.5, 0.75, 1). Distances |da - db|:
    #   row 0.5: 0.25, 0, 0.25, 0.5      row 1: 0.75, 0.5, 0.25, 0
    cka = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    out = cka_by_depth(cka, relative_depths(2), relative_depths(4), bins=2)   # [0, 0.5), [0.5, 1]
    # bin 0 (d < 0.5): 1, 2, 3 (row 0), 7, 8 (row 1) -> mean 21/5; bin 1: 4 (d=0.5), 5 (0.75), 6 (0.5) -> 5
    assert out["count"].tolist() == [5.0, 3.0]
    assert out["mean"].tolist() == pytest.approx([21 / 5, 5.0])
    assert out["low"].tolist() == [0.0, 0.5] and out["high"].tolist() == [0.5, 1.0]


def test_matches_a_numpy_loop_and_marks_empty_bins():
    rng = np.random.default_rng(0)
    cka = rng.random((6, 16))
    da, db = np.arange(1, 7) / 6, np.arange(1, 17) / 16
    edges = [0.0, 0.1, 0.2, 0.3, 0.95, 1.0]
    out = cka_by_depth(torch.tensor(cka), torch.tensor(da), torch.tensor(db), bins=edges)
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = b == len(edges) - 2
        sel = [cka[i, j] for i in range(6) for j in range(16)
               if lo <= abs(da[i] - db[j]) < hi or (last and abs(da[i] - db[j]) == hi)]
        assert out["count"][b] == len(sel)
        if sel:
            assert float(out["mean"][b]) == pytest.approx(float(np.mean(sel)), abs=1e-12)
        else:
            assert math.isnan(float(out["mean"][b]))
    assert float(out["count"].sum()) == 6 * 16       # every pair lands in exactly one bin


def test_distance_mask():
    m = distance_mask(relative_depths(2), relative_depths(4), 0.5)
    assert m.tolist() == [[False, False, False, True], [True, True, False, False]]


@pytest.mark.parametrize("bad, match", [
    (dict(cka=torch.ones(3, 4)), "cka must be"),
    (dict(depth_a=torch.tensor([1.0, 2.0])), "outside"),
    (dict(bins=[0.2, 1.0]), "cover"),
    (dict(bins=[0.0, 0.6, 0.4, 1.0]), "increasing"),
    (dict(bins=0), "bins"),
])
def test_bad_inputs_name_the_thing(bad, match):
    kw = dict(cka=torch.ones(2, 4), depth_a=relative_depths(2), depth_b=relative_depths(4), bins=2)
    with pytest.raises(ValueError, match=match):
        cka_by_depth(**{**kw, **bad})


def test_int_bins_are_equal():
    assert bin_edges(4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]

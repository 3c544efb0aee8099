"""vitscope.kernels relative_depth / path_efficiency: messages, bounds, defaults and precision checked exactly.

Issue 17: mutants survived where a message was matched loosely, a bound was never tried at the bound, a default was
never left out, or inputs were float64 already. Each message here is the whole text it must be, written out by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitscope.kernels.path_efficiency import (
    block_index,
    group_by_type,
    group_by_type_and_block,
    layer_type,
    path_efficiency,
    step_norms,
)
from vitscope.kernels.relative_depth import bin_edges, cka_by_depth, distance_bins, distance_mask, relative_depths

NAN_TAIL = " holds NaN or Inf values; check the model's outputs or recompute the cached features"


def f64(*values):
    return torch.tensor(values, dtype=torch.float64)


def raises(msg, fn, *args, **kwargs):
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    assert str(err.value) == msg


# ================================================================ relative_depth.py
def test_relative_depths_values_dtype_and_message():
    assert relative_depths(1).tolist() == [1.0]
    d = relative_depths(3)
    assert d.dtype == torch.float64 and d.tolist() == [1 / 3, 2 / 3, 1.0]
    raises("n_layers must be an int >= 1; got 0", relative_depths, 0)
    raises("n_layers must be an int >= 1; got 2.5", relative_depths, 2.5)


@pytest.mark.parametrize("call", [
    lambda a, b: cka_by_depth(torch.zeros(2, 3), a, b),          # the depths are checked before cka's shape
    lambda a, b: distance_bins(a, b),
    lambda a, b: distance_mask(a, b, 0.0),
], ids=["cka_by_depth", "distance_bins", "distance_mask"])
def test_depth_vectors_are_checked_by_name(call):
    ok = torch.tensor([0.5, 1.0])
    raises("depth_a must be a 1-D tensor of relative depths in [0, 1]; got shape (2, 2)", call, torch.ones(2, 2), ok)
    raises("depth_b must be a 1-D tensor of relative depths in [0, 1]; got shape ()", call, ok, torch.tensor(0.5))
    raises("depth_a (shape (2,))" + NAN_TAIL, call, torch.tensor([0.5, float("nan")]), ok)
    raises("depth_b (shape (2,))" + NAN_TAIL, call, ok, torch.tensor([float("inf"), 0.5]))
    raises("depth_a holds values outside [0, 1] (min 0.5, max 2); pass relative depths (relative_depths(n_layers)), "
           "not block indices", call, torch.tensor([0.5, 2.0]), ok)
    raises("depth_b holds values outside [0, 1] (min -0.125, max 1); pass relative depths "
           "(relative_depths(n_layers)), not block indices", call, ok, torch.tensor([-0.125, 1.0]))
    raises("depth_b holds values outside [0, 1] (min 0, max 1); pass relative depths "
           "(relative_depths(n_layers)), not block indices", call, ok, f64(0.0, 1.0 + 1e-9))
    call(torch.tensor([0.0, 1.0]), [0.0, 0.25, 1.0])            # both ends of [0, 1] are allowed; lists too


def test_empty_depth_vectors_have_no_range_to_check():
    assert distance_mask(relative_depths(2), [], 0.0).shape == (2, 0)
    assert distance_bins([], relative_depths(3)).shape == (0, 3)
    out = cka_by_depth(torch.zeros(0, 3), [], relative_depths(3), bins=2)
    assert out["count"].tolist() == [0.0, 0.0] and bool(out["mean"].isnan().all())


def test_bin_edges_messages_and_bounds():
    assert bin_edges(1).tolist() == [0.0, 1.0]
    assert bin_edges(5).dtype == torch.float64
    raises("bins must be an int >= 1; got 0", bin_edges, 0)
    raises("bins must be an int >= 1 or increasing edges (at least two); got True", bin_edges, True)
    raises("bins must be an int >= 1 or increasing edges (at least two); got [1.0]", bin_edges, [1.0])
    raises("bins must be an int >= 1 or increasing edges (at least two); got [0.0, 0.5, 0.5, 1.0]", bin_edges,
           [0.0, 0.5, 0.5, 1.0])
    raises("bins must be an int >= 1 or increasing edges (at least two); got [[0.0, 1.0]]", bin_edges, [[0.0, 1.0]])
    raises("bin edges [0.0, 0.9] must cover [0, 1] (start at or below 0, end at or above 1), or some layer pairs "
           "would fall outside every bin", bin_edges, [0.0, 0.9])
    raises("bin edges [0.25, 1.0] must cover [0, 1] (start at or below 0, end at or above 1), or some layer pairs "
           "would fall outside every bin", bin_edges, (0.25, 1.0))
    assert bin_edges([0.0, 1.0]).tolist() == [0.0, 1.0]
    assert bin_edges([-0.5, 0.3, 1.5]).tolist() == [-0.5, 0.3, 1.5]
    assert bin_edges(np.array([0.0, 0.5, 1.0])).dtype == torch.float64


def test_cka_by_depth_default_bins_is_five_equal_bins():
    da, db = relative_depths(4), relative_depths(10)
    cka = torch.arange(40, dtype=torch.float64).reshape(4, 10) / 40
    default = cka_by_depth(cka, da, db)
    for other in (cka_by_depth(cka, da, db, bins=5), cka_by_depth(cka, da, db, bins=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])):
        for key in ("low", "high", "count"):
            assert torch.equal(default[key], other[key])
        torch.testing.assert_close(default["mean"], other["mean"], rtol=0, atol=1e-15, equal_nan=True)
    assert default["low"].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    dist = (da[:, None] - db[None, :]).abs()
    assert torch.equal(distance_bins(da, db), (dist * 5).floor().long().clamp(max=4))
    assert distance_bins(da, db).dtype == torch.int64


def test_cka_by_depth_messages():
    da, db = relative_depths(2), relative_depths(3)
    raises("cka must be [La, Lb] = [2, 3] (one row per depth_a, one column per depth_b); got (3, 2)", cka_by_depth,
           torch.zeros(3, 2), da, db)
    raises("cka must be [La, Lb] = [2, 3] (one row per depth_a, one column per depth_b); got (6,)", cka_by_depth,
           torch.zeros(6), da, db)
    bad = torch.zeros(2, 3)
    bad[1, 2] = float("nan")
    raises("cka (shape (2, 3))" + NAN_TAIL, cka_by_depth, bad, da, db)


def test_cka_by_depth_float32_cka_is_averaged_in_float64():
    rng = np.random.default_rng(0)
    da, db = relative_depths(40), relative_depths(50)
    cka32 = torch.from_numpy(rng.uniform(0.3, 0.9, (40, 50))).float()
    out = cka_by_depth(cka32, da, db, bins=[0.0, 0.5, 1.0])
    c = cka32.double().numpy()
    d = np.abs(da.numpy()[:, None] - db.numpy()[None, :])
    for b, sel in enumerate((d < 0.5, d >= 0.5)):
        assert out["count"][b] == sel.sum()
        assert float(out["mean"][b]) == pytest.approx(c[sel].sum() / sel.sum(), rel=1e-14, abs=0)
    for key in ("low", "high", "mean", "count"):
        assert out[key].dtype == torch.float64


def test_bins_are_half_open_and_the_last_includes_one():
    # distances 0, 0.5 and 1 on edges [0, 0.5, 1]: 0 and 0.5 start bins, 1 closes the last one
    da, db = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0.0])
    assert distance_bins(da, db, [0.0, 0.5, 1.0]).reshape(-1).tolist() == [0, 1, 1]
    assert distance_bins(da, db, [-1.0, 0.5, 2.0]).reshape(-1).tolist() == [0, 1, 1]
    out = cka_by_depth(torch.tensor([[1.0], [2.0], [4.0]]), da, db, bins=[0.0, 0.5, 1.0])
    assert out["count"].tolist() == [1.0, 2.0] and out["mean"].tolist() == [1.0, 3.0]


def test_distance_mask_bounds_default_and_rounding_tolerance():
    da, db = relative_depths(2), relative_depths(4)                 # distances: [0.25, 0, 0.25, 0.5], [0.75, ...]
    full = distance_mask(da, db, 0.0)
    assert full.dtype == torch.bool and bool(full.all())           # default high = 1: every pair
    assert torch.equal(distance_mask(da, db, 0.5), distance_mask(da, db, 0.5, 1.0))
    assert distance_mask(da, db, 0.5, 0.5).tolist() == [[False, False, False, True], [False, True, False, False]]
    assert distance_mask(torch.tensor([1.0]), torch.tensor([0.0]), 1.0, 1.0).tolist() == [[True]]
    assert distance_mask(da, db, 0.0, 0.0).tolist() == [[False, True, False, False], [False, False, False, True]]
    for low, high in ((-0.1, 0.5), (0.6, 0.5), (0.0, 1.5)):
        raises(f"need 0 <= low <= high <= 1; got low={low!r}, high={high!r}", distance_mask, da, db, low, high)
    raises("need 0 <= low <= high <= 1; got low=1.25, high=1.0", distance_mask, da, db, 1.25)
    # 0.3 - 0.1 = 0.19999999999999998 and 0.7 - 0.4 = 0.29999999999999993 in float64: the 1e-12 slack keeps them in
    a, b = f64(0.3, 0.7), f64(0.1, 0.4)
    assert distance_mask(a, b, 0.2, 0.3).tolist() == [[True, False], [False, True]]
    # ... but a real gap of 1e-9 is outside
    assert distance_mask(f64(0.5), f64(0.3 + 1e-9), 0.2).tolist() == [[False]]
    assert distance_mask(f64(0.5), f64(0.2 - 1e-9), 0.0, 0.3).tolist() == [[False]]
    # the slack is 1e-12 and both of its ends are in: distances of exactly low - 1e-12 and high + 1e-12
    edge_low, edge_high = 0.5 - 1e-12, 0.5 + 1e-12
    assert distance_mask(f64(edge_low, edge_high), f64(0.0), 0.5, 0.5).tolist() == [[True], [True]]


def test_depths_are_read_in_float64_whatever_comes_in():
    """Lists are read as float64 (not torch's float32 default) and float32 tensors are widened before subtracting:
    in float32, 1 - 0.1 rounds to 0.89999998 and falls below an edge at 0.89999999."""
    edges = [0.0, 0.89999999, 1.0]
    assert distance_mask([1.0], [0.1], 0.89999999).tolist() == [[True]]
    assert distance_bins([1.0], [0.1], edges).tolist() == [[1]]
    a32, b32 = torch.tensor([1.0]), torch.tensor([0.1])                 # float32 tensors
    d = float(torch.tensor(1.0, dtype=torch.float64) - b32.double())   # 0.8999999985, the float64 distance
    assert d > 0.89999999
    assert distance_mask(a32, b32, 0.89999999).tolist() == [[True]]
    assert distance_bins(a32, b32, edges).tolist() == [[1]]
    assert cka_by_depth(torch.ones(1, 1), a32, b32, edges)["count"].tolist() == [0.0, 1.0]


# ================================================================ path_efficiency.py
def test_layer_type_and_block_index_of_every_kind_of_name():
    cases = {
        "patch_embed.proj.weight": ("patch_embed", None), "pos_embed": ("pos_embed", None),
        "cls_token": ("cls_token", None), "norm.weight": ("norm", None), "fc_norm.bias": ("norm", None),
        "blocks.0.norm1.weight": ("norm1", 1), "blocks.11.norm2.bias": ("norm2", 12),
        "blocks.3.attn.qkv.weight": ("qkv", 4), "blocks.3.attn.proj.bias": ("proj", 4),
        "blocks.5.mlp.fc1.weight": ("fc1", 6), "blocks.5.mlp.fc2.bias": ("fc2", 6),
        "blocks.2.ls1.gamma": ("other", 3), "head.weight": ("other", None), "head.qkv.weight": ("other", None),
        "encoder.blocks.7.attn.qkv.weight": ("qkv", 8), "xblocks.7.attn.qkv.weight": ("other", None),
        "blocks.7": ("other", None), "blocks.x.attn.qkv.weight": ("other", None), "reg_token": ("other", None),
    }
    for name, (kind, block) in cases.items():
        assert (layer_type(name), block_index(name)) == (kind, block), name
    assert group_by_type("blocks.3.attn.qkv.weight") == "qkv"
    assert group_by_type_and_block("blocks.3.attn.qkv.weight") == "qkv@4"
    assert group_by_type_and_block("blocks.0.ls1.gamma") == "other@1"
    assert group_by_type_and_block("norm.weight") == "norm"
    assert group_by_type_and_block("cls_token") == "cls_token"


def test_step_norms_messages_and_bounds():
    a = {"w": torch.zeros(2)}
    raises("thetas must hold the pre-trained state and at least one epoch; got 1 state(s)", step_norms, [a])
    raises("thetas must hold the pre-trained state and at least one epoch; got 0 state(s)", step_norms, [])
    raises("thetas[1] must be a non-empty mapping parameter name -> tensor; got dict", step_norms, [a, {}])
    raises("thetas[0] must be a non-empty mapping parameter name -> tensor; got list", step_norms, [[1], a])
    raises("thetas[2]: values of ['w'] are not tensors", step_norms, [a, a, {"w": [0.0, 0.0]}])
    raises("thetas[1]: values of ['a', 'b', 'c'] are not tensors", step_norms,
           [a, {"a": 1, "b": 2, "c": 3, "d": 4, "w": torch.zeros(2)}])
    many = {k: torch.zeros(1) for k in "abcdefg"}
    raises("thetas[2] has other parameter names than thetas[0] (differ: ['a', 'b', 'c', 'd', 'e']); pass state "
           "dicts of one architecture", step_norms, [{**many, "w": torch.zeros(1)}, {**many, "w": torch.zeros(1)},
                                                     {"w": torch.zeros(1)}])
    raises("thetas[1] has other parameter names than thetas[0] (differ: ['v']); pass state dicts of one "
           "architecture", step_norms, [a, {"w": torch.zeros(2), "v": torch.zeros(1)}])
    # the names and their order come from thetas[0]
    first = {"b": torch.zeros(1), "a": torch.zeros(2)}
    later = {"a": torch.tensor([0.0, 2.0]), "b": torch.tensor([1.0])}
    assert list(step_norms([first, later])) == ["b", "a"]
    assert list(step_norms([later, first])) == ["a", "b"]
    out = step_norms([a, {"w": torch.tensor([3.0, 4.0])}])           # two states: one epoch
    assert list(out) == ["w"] and out["w"].dtype == torch.float64 and out["w"].tolist() == [5.0]


def test_step_norms_float32_states_in_float64():
    rng = np.random.default_rng(1)
    pts = [rng.normal(size=4000).astype(np.float32) * 1e-3 + 1.0 for _ in range(4)]
    out = step_norms([{"p": torch.from_numpy(p)} for p in pts])["p"]
    ref = [np.linalg.norm(b.astype(np.float64) - a.astype(np.float64)) for a, b in zip(pts[:-1], pts[1:])]
    assert out.shape == (3,)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-13)


def test_path_efficiency_messages():
    a = {"x": torch.zeros(2)}
    raises("theta_pt must be a non-empty mapping parameter name -> tensor; got dict", path_efficiency, {}, a,
           {"x": torch.ones(1)})
    raises("theta_ft must be a non-empty mapping parameter name -> tensor; got NoneType", path_efficiency, a, None,
           {"x": torch.ones(1)})
    raises("theta_ft: values of ['x'] are not tensors", path_efficiency, a, {"x": 1.0}, {"x": torch.ones(1)})
    pt, ft = {"a": torch.zeros(1), "b": torch.zeros(1)}, {"a": torch.zeros(1), "c": torch.zeros(1)}
    raises("theta_pt, theta_ft and step_norms must name the same parameters (differ: ['b', 'c', 'd'])",
           path_efficiency, pt, ft, {"a": torch.ones(1), "b": torch.ones(1), "d": torch.ones(1)})
    raises("theta_pt, theta_ft and step_norms must name the same parameters (differ: ['z'])",
           path_efficiency, pt, pt, {"a": torch.ones(1), "b": torch.ones(1), "z": torch.ones(1)})
    many = {k: torch.zeros(1) for k in "abcdefg"}
    raises("theta_pt, theta_ft and step_norms must name the same parameters (differ: ['a', 'b', 'c', 'd', 'e'])",
           path_efficiency, many, {"w": torch.zeros(1)}, {"w": torch.ones(1)})
    raises("step_norms must hold one [E] vector (E >= 1) per parameter, the same E for all; got shapes [(2,), (3,)]",
           path_efficiency, pt, pt, {"a": torch.ones(2), "b": torch.ones(3)})
    raises("step_norms must hold one [E] vector (E >= 1) per parameter, the same E for all; got shapes [(0,)]",
           path_efficiency, a, a, {"x": torch.ones(0)})
    raises("step_norms must hold one [E] vector (E >= 1) per parameter, the same E for all; got shapes [(1, 2)]",
           path_efficiency, a, a, {"x": torch.ones(1, 2)})
    raises("step_norms must hold one [E] vector (E >= 1) per parameter, the same E for all; got shapes [()]",
           path_efficiency, a, a, {"x": torch.tensor(1.0)})
    raises("parameter 'x': theta_ft has shape (3,), theta_pt (2,)", path_efficiency, a, {"x": torch.zeros(3)},
           {"x": torch.ones(1)})
    raises("step_norms['x'] must be finite and >= 0 (norms); got [1.0, -0.5]", path_efficiency, a, a,
           {"x": torch.tensor([1.0, -0.5])})
    raises("step_norms['x'] must be finite and >= 0 (norms); got [inf]", path_efficiency, a, a,
           {"x": torch.tensor([float("inf")])})
    raises("step_norms['x'] must be finite and >= 0 (norms); got [nan]", path_efficiency, a, a,
           {"x": [float("nan")]})


def test_path_efficiency_bounds_default_group_and_float32():
    a = {"blocks.0.attn.qkv.weight": torch.zeros(2), "blocks.1.attn.qkv.weight": torch.zeros(3)}
    b = {"blocks.0.attn.qkv.weight": torch.tensor([3.0, 0.0]), "blocks.1.attn.qkv.weight": torch.tensor([0, 4.0, 0])}
    # a zero step norm is allowed (>= 0); one epoch (E = 1) is allowed; lists are read as tensors
    res = path_efficiency(a, b, {"blocks.0.attn.qkv.weight": [0.0], "blocks.1.attn.qkv.weight": [10.0]})
    assert res == {"qkv": {"efficiency": 0.5, "displacement": 5.0, "path_length": 10.0, "n_params": 5}}
    by_block = path_efficiency(a, b, {"blocks.0.attn.qkv.weight": [3.0], "blocks.1.attn.qkv.weight": [8.0]},
                               group=group_by_type_and_block)
    assert by_block == {"qkv@1": {"efficiency": 1.0, "displacement": 3.0, "path_length": 3.0, "n_params": 2},
                        "qkv@2": {"efficiency": 0.5, "displacement": 4.0, "path_length": 8.0, "n_params": 3}}
    tiny = path_efficiency(a, b, {"blocks.0.attn.qkv.weight": [0.0], "blocks.1.attn.qkv.weight": [1e-100]})
    assert tiny["qkv"]["path_length"] == 1e-100 and tiny["qkv"]["efficiency"] == pytest.approx(5e100)
    # float32 states: the displacement is a float64 norm over all parameters of the group
    rng = np.random.default_rng(2)
    p0 = rng.normal(size=5000).astype(np.float32)
    p1 = (p0 + rng.normal(size=5000).astype(np.float32) * 1e-2).astype(np.float32)
    out = path_efficiency({"fc": torch.from_numpy(p0)}, {"fc": torch.from_numpy(p1)}, {"fc": [0.25, 0.5]})["other"]
    disp = np.linalg.norm(p1.astype(np.float64) - p0.astype(np.float64))
    assert out["displacement"] == pytest.approx(disp, rel=1e-13, abs=0)
    assert out["path_length"] == 0.75 and out["efficiency"] == pytest.approx(disp / 0.75, rel=1e-13, abs=0)
    assert out["n_params"] == 5000
    assert math.isnan(path_efficiency({"fc": torch.zeros(1)}, {"fc": torch.zeros(1)}, {"fc": [0.0, 0.0]})["other"][
        "efficiency"])

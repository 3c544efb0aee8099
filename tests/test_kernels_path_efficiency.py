"""Path efficiency (OM Fig. 14): straight paths give 1, detours less, hand-computed cases and name grouping."""
import math

import numpy as np
import pytest
import torch

from vitscope.kernels.path_efficiency import (
    group_by_type_and_block,
    layer_type,
    path_efficiency,
    step_norms,
)


def _trajectory(points):
    """State dicts of one 2-parameter group ``blocks.0.attn.qkv.{weight,bias}`` from [E+1, 3] points."""
    return [{"blocks.0.attn.qkv.weight": torch.tensor(p[:2], dtype=torch.float32),
             "blocks.0.attn.qkv.bias": torch.tensor(p[2:], dtype=torch.float32)} for p in points]


def _efficiency(points, **kw):
    thetas = _trajectory(points)
    return path_efficiency(thetas[0], thetas[-1], step_norms(thetas), **kw)


def test_straight_path_is_one_for_any_number_of_equal_steps():
    direction = np.array([0.3, -1.2, 2.0])
    for n in (1, 2, 5, 17):
        points = [direction * k / n for k in range(n + 1)]
        assert _efficiency(points)["qkv"]["efficiency"] == pytest.approx(1.0, abs=1e-6)


def test_there_and_back_is_below_one_and_hand_case():
    # (0,0,0) -> (3,4,0) -> (3,4,12): displacement 13, path 5 + 12 = 17.
    res = _efficiency([[0, 0, 0], [3, 4, 0], [3, 4, 12]])["qkv"]
    assert res["displacement"] == pytest.approx(13.0)
    assert res["path_length"] == pytest.approx(17.0)
    assert res["efficiency"] == pytest.approx(13 / 17)
    # out and back by 1, then out by 2: displacement 2, path 1 + 1 + 2 = 4.
    assert _efficiency([[0, 0, 0], [1, 0, 0], [0, 0, 0], [2, 0, 0]])["qkv"]["efficiency"] == pytest.approx(0.5)


def test_group_norm_is_the_norm_of_the_concatenated_step_not_a_sum_of_parameter_norms():
    # Each epoch moves weight and bias together: per-epoch group step (1,1,1) -> norm sqrt(3); straight -> 1.
    res = _efficiency([[0, 0, 0], [1, 1, 1], [2, 2, 2]])["qkv"]
    assert res["path_length"] == pytest.approx(2 * math.sqrt(3))
    assert res["efficiency"] == pytest.approx(1.0)
    assert res["n_params"] == 3


def test_independent_float64_reference_on_random_walk():
    rng = np.random.default_rng(0)
    pts = np.cumsum(rng.normal(size=(6, 3)), axis=0)
    expected = np.linalg.norm(pts[-1] - pts[0]) / np.linalg.norm(np.diff(pts, axis=0), axis=1).sum()
    assert _efficiency(pts.tolist())["qkv"]["efficiency"] == pytest.approx(expected, rel=1e-6)
    assert 0 < expected < 1


def test_grouping_by_parameter_name():
    assert layer_type("blocks.3.attn.qkv.weight") == "qkv"
    assert layer_type("blocks.0.attn.proj.bias") == "proj"
    assert layer_type("blocks.11.mlp.fc1.weight") == "fc1"
    assert layer_type("blocks.2.mlp.fc2.weight") == "fc2"
    assert layer_type("blocks.2.norm1.weight") == "norm1"
    assert layer_type("blocks.2.norm2.bias") == "norm2"
    assert layer_type("norm.weight") == "norm"
    assert layer_type("patch_embed.proj.weight") == "patch_embed"
    assert layer_type("cls_token") == "cls_token"
    assert group_by_type_and_block("blocks.3.attn.qkv.weight") == "qkv@4"
    # two blocks' qkv: one group by type, two by block
    a = {"blocks.0.attn.qkv.weight": torch.zeros(2), "blocks.1.attn.qkv.weight": torch.zeros(2)}
    b = {"blocks.0.attn.qkv.weight": torch.tensor([1.0, 0.0]), "blocks.1.attn.qkv.weight": torch.tensor([0.0, 1.0])}
    steps = step_norms([a, b])
    assert set(path_efficiency(a, b, steps)) == {"qkv"}
    assert set(path_efficiency(a, b, steps, group=group_by_type_and_block)) == {"qkv@1", "qkv@2"}


def test_errors_name_the_argument():
    a = {"x": torch.zeros(2)}
    with pytest.raises(ValueError, match="step_norms"):
        path_efficiency(a, a, {"x": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="same parameters"):
        path_efficiency(a, {"y": torch.zeros(2)}, {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="thetas"):
        step_norms([a])
    assert math.isnan(path_efficiency(a, a, {"x": torch.zeros(1)})["other"]["efficiency"])

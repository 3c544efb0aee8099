"""vitscope.kernels.attention_iou and .tiling: exact messages, bounds, defaults, dtypes and batched values (issue 17:
mutants in them survived the behavioural tests).

Every validation message is compared whole with the text it must be, written out by hand; each documented bound is
tried at the bound and just past it; values are checked against float64 NumPy loops or hand cases.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitscope.kernels import attention_iou as k
from vitscope.kernels.tiling import SHORT_SIDE_FACTOR, assemble_windows, tiled_size, window_grid, window_starts


def _raises(fn, message: str):
    """``fn()`` raises ValueError whose whole message is ``message``."""
    with pytest.raises(ValueError) as err:
        fn()
    assert str(err.value) == message


# ================================================================================================= attention_iou
def _np_mass_mask(flat, mass):
    """DINO's rule for one flat map by a loop: the most attended first (ties: lower index), until ``mass`` is held."""
    order = sorted(range(flat.size), key=lambda i: (-flat[i], i))
    out, held, total = np.zeros(flat.size, dtype=bool), 0.0, flat.sum()
    for i in order:
        if total == 0 or held >= mass - 1e-12:
            break
        out[i] = True
        held += flat[i] / total
    return out


def test_grid_map_messages_name_the_argument():
    for name, fn in (("maps", lambda x: k.mass_mask(x)), ("pred", lambda x: k.iou(x, torch.ones(2, 2, dtype=bool))),
                     ("target", lambda x: k.iou(torch.ones(2, 2, dtype=bool), x))):
        _raises(lambda: fn([[1.0]]), f"{name} must be a tensor [..., G, G] (one map per leading index); got list")
        _raises(lambda: fn(torch.ones(4, dtype=torch.bool)),
                f"{name} must be a tensor [..., G, G] (one map per leading index); got (4,)")


def test_mass_mask_bounds_default_and_message():
    maps = torch.tensor([[0.5, 0.3], [0.0, 0.2]], dtype=torch.float64)
    assert k.MASS == 0.6
    assert k.mass_mask(maps).tolist() == [[True, True], [False, False]]
    assert torch.equal(k.mass_mask(maps), k.mass_mask(maps, 0.6))
    assert k.mass_mask(maps, 0.5).tolist() == [[True, False], [False, False]]
    assert k.mass_mask(maps, 1).tolist() == [[True, True], [False, True]]        # mass 1 (the bound): every token
    assert k.mass_mask(maps, 1.0).tolist() == [[True, True], [False, True]]      # that holds mass, no zero token
    for bad in (0, 0.0, 1.01, -0.5, True, "0.6", None):
        _raises(lambda: k.mass_mask(maps, bad),
                f"mass must be a number in (0, 1] (the share of attention the mask keeps); got {bad!r}")


def test_mass_mask_value_messages():
    msg = ("maps must be finite and non-negative (attention probabilities or |attributions|); take .abs() of signed "
           "attributions first")
    for bad in (-0.1, float("nan"), float("inf")):
        _raises(lambda: k.mass_mask(torch.tensor([[0.5, bad], [0.2, 0.3]])), msg)


def test_mass_mask_batched_non_square_against_loops():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) ** 3
    maps[1, 2] = 0.0                                           # a zero map: empty mask
    for mass in (0.25, 0.6, 0.9):
        got = k.mass_mask(maps, mass)
        assert got.shape == (2, 3, 4, 5) and got.dtype == torch.bool
        ref = np.stack([_np_mass_mask(m, mass) for m in maps.reshape(6, 20).numpy()]).reshape(2, 3, 4, 5)
        assert np.array_equal(got.numpy(), ref), mass
    assert not k.mass_mask(maps)[1, 2].any()


def test_mass_mask_float32_maps_are_summed_in_float64():
    # a / (a + b) is 0.59999998 in float64 (short of 0.6: the second token is needed) but rounds to 0.60000002 in
    # float32 (which would stop after the first token).
    a, b = 0.5999990701675415, 0.3999994099140167
    maps = torch.tensor([[a, b]], dtype=torch.float32)
    assert a / (a + b) < 0.6 - 1e-12 <= float((maps[0, 0] / maps.sum()))                    # the premise
    assert k.mass_mask(maps).tolist() == [[True, True]]


def test_object_fraction_messages_bounds_and_values():
    _raises(lambda: k.object_fraction([[1, 0]], 1), "mask must be a tensor [..., H, W]; got list")
    _raises(lambda: k.object_fraction(torch.ones(4), 1), "mask must be a tensor [..., H, W]; got Tensor")
    mask = torch.ones(4, 6)
    for grid, msg in ((0, "grid rows must be an int >= 1; got 0"), ((2, 0), "grid columns must be an int >= 1; got 0"),
                      ((-1, 2), "grid rows must be an int >= 1; got -1"),
                      ((2, 2.0), "grid columns must be an int >= 1; got 2.0")):
        _raises(lambda: k.object_fraction(mask, grid), msg)
    for grid in ((5, 6), (4, 7), 5):
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        _raises(lambda: k.object_fraction(mask, grid),
                f"mask is 4x6 pixels, smaller than the {gh}x{gw} token grid; pass the mask at the model's input "
                "resolution")
    assert k.object_fraction(mask, (4, 6)).shape == (4, 6)     # one pixel per token: the bound
    # batched integer masks (non-zero = object, whatever the label), non-square grid
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, size=(2, 3, 6, 8))
    got = k.object_fraction(torch.from_numpy(labels), (3, 2))
    assert got.shape == (2, 3, 3, 2) and got.dtype == torch.float64
    ref = (labels != 0).reshape(2, 3, 3, 2, 2, 4).mean((3, 5))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-15)


def test_mask_to_grid_threshold_bounds_and_default():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0:2, 0:2] = True                                      # patch (0, 0): 4/4
    mask[0, 2:4] = True                                        # patch (0, 1): 2/4
    mask[2, 0] = True                                          # patch (1, 0): 1/4
    assert k.OBJECT_FRACTION == 0.5
    assert k.mask_to_grid(mask, 2).tolist() == [[True, True], [False, False]]
    assert torch.equal(k.mask_to_grid(mask, 2), k.mask_to_grid(mask, 2, 0.5))
    assert k.mask_to_grid(mask, 2, 1).tolist() == [[True, False], [False, False]]   # threshold 1: full patches
    assert k.mask_to_grid(mask, 2, 0.25).tolist() == [[True, True], [True, False]]
    for bad in (0, 1.5, -0.2):
        _raises(lambda: k.mask_to_grid(mask, 2, bad),
                f"threshold must be in (0, 1] (share of a patch's pixels); got {bad!r}")


def test_iou_messages_dtype_and_float_target_bounds():
    pred = torch.tensor([[True, False], [True, True]])
    _raises(lambda: k.iou(pred.float(), pred), "pred must be a boolean mask (e.g. mass_mask(maps)); got torch.float32")
    msg = "a float target must hold per-token object fractions in [0, 1] (object_fraction)"
    for bad in (-0.01, 1.01):
        _raises(lambda: k.iou(pred, torch.tensor([[0.5, bad], [0.0, 1.0]])), msg)
    target = torch.tensor([[0.0, 1.0], [0.5, 1.0]], dtype=torch.float32)      # 0 and 1 themselves are fractions
    got = k.iou(pred, target)
    assert got.dtype == torch.float64 and got.shape == ()
    assert float(got) == pytest.approx(1.5 / (3 + 2.5 - 1.5), rel=1e-15)
    assert float(k.iou(pred, pred)) == 1.0 and k.iou(pred, pred).dtype == torch.float64
    assert float(k.iou(pred, target.to(torch.uint8))) == 0.25      # integer 0/1 target [[0, 1], [0, 1]]: 1 / 4


def test_iou_batched_fractions_against_numpy():
    rng = np.random.default_rng(5)
    p = rng.random((2, 3, 3, 4)) > 0.5
    f = rng.random((2, 1, 3, 4))
    got = k.iou(torch.from_numpy(p), torch.from_numpy(f).float())
    f32 = f.astype(np.float32).astype(np.float64)
    inter = (p * f32).sum((-2, -1))
    ref = inter / (p.sum((-2, -1)) + f32.sum((-2, -1)) - inter)
    assert got.shape == (2, 3) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-14)


def test_patch_sums_messages_and_float64_values():
    _raises(lambda: k.patch_sums([[1.0]], 2),
            "attributions must be a tensor [B, C, H, W] (captum's output for an image batch); got <class 'list'>")
    _raises(lambda: k.patch_sums(torch.zeros(3, 4, 4), 2),
            "attributions must be a tensor [B, C, H, W] (captum's output for an image batch); got (3, 4, 4)")
    for shape, grid, gh, gw in (((1, 1, 4, 6), 4, 4, 4), ((1, 1, 6, 4), 4, 4, 4), ((1, 3, 4, 6), (2, 4), 2, 4),
                                ((1, 3, 4, 6), (3, 3), 3, 3)):
        _raises(lambda: k.patch_sums(torch.zeros(shape), grid),
                f"attributions are {shape[2]}x{shape[3]} pixels, not a multiple of the {gh}x{gw} token grid")
    rng = np.random.default_rng(6)
    a = rng.normal(size=(2, 3, 8, 12)) * 1e3
    a32 = torch.from_numpy(a).float()
    got = k.patch_sums(a32, (2, 3))
    assert got.shape == (2, 2, 3) and got.dtype == torch.float64
    ref = np.zeros((2, 2, 3))
    a64 = a32.double().numpy()
    for b in range(2):
        for r in range(2):
            for c in range(3):
                ref[b, r, c] = np.abs(a64[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]).sum()
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-13)            # float32 sums of 48 terms miss this
    assert k.patch_sums(a32, 4).shape == (2, 4, 4)                      # an int grid: square


def test_score_checks_messages_and_float64():
    msg = "iou must be a tensor [N images, L layers, H heads]; got {}"
    for fn in (k.best_head_per_image, lambda s: k.held_out_best_head(s, 0)):
        _raises(lambda: fn(torch.zeros(4, 2)), msg.format("(4, 2)"))
        _raises(lambda: fn([[[0.5]]]), msg.format("list"))
        for bad in (float("nan"), float("inf")):
            s = torch.zeros(4, 1, 2)
            s[2, 0, 1] = bad
            _raises(lambda: fn(s),
                    "iou holds NaN or Inf (an image without object and an empty mask); drop such images first")
    s32 = torch.rand(4, 2, 3, generator=torch.Generator().manual_seed(7))
    best = k.best_head_per_image(s32)
    assert best.dtype == torch.float64 and best.shape == (4, 2)
    assert torch.equal(best, s32.double().amax(-1))
    assert k.held_out_best_head(s32, 1)["iou"].dtype == torch.float64


def test_split_halves_bounds_and_seeds():
    _raises(lambda: k.split_halves(1, 0), "number of images must be an int >= 2; got 1")
    _raises(lambda: k.held_out_best_head(torch.zeros(1, 2, 3), 0), "number of images must be an int >= 2; got 1")
    a, b = k.split_halves(2, 0)                                 # the bound: one image each
    assert len(a) == 1 and len(b) == 1 and sorted(a.tolist() + b.tolist()) == [0, 1]
    for n in (7, 10):
        a, b = k.split_halves(n, 5)
        assert len(a) == n // 2 and len(b) == n - n // 2
        assert sorted(a.tolist() + b.tolist()) == list(range(n))
        assert a.tolist() == sorted(a.tolist()) and b.tolist() == sorted(b.tolist())
    assert any(not torch.equal(k.split_halves(20, 0)[0], k.split_halves(20, s)[0]) for s in (1, 2, 3))


def test_held_out_best_head_against_loops():
    g = torch.Generator().manual_seed(8)
    s = torch.rand(9, 3, 4, generator=g, dtype=torch.float64)
    s[:, 2] = 0.5                                               # layer 2: all heads tie -> head 0
    out = k.held_out_best_head(s, 11)
    choose, score = k.split_halves(9, 11)
    assert torch.equal(out["choose"], choose) and torch.equal(out["score"], score)
    sn = s.numpy()
    heads = [int(np.argmax(sn[choose.numpy(), layer].mean(0))) for layer in range(3)]
    assert out["head"].tolist() == heads and heads[2] == 0 and out["head"].dtype == torch.int64
    ref = np.array([[sn[i, layer, heads[layer]] for layer in range(3)] for i in score.tolist()])
    assert out["iou"].shape == (len(score), 3)
    np.testing.assert_array_equal(out["iou"].numpy(), ref)


# ========================================================================================================== tiling
def test_tiled_size_messages_name_each_argument():
    for args, name, bad in (((0, 10, 4, 2), "height", 0), ((10, 0, 4, 2), "width", 0), ((10, 10, 0, 2), "window", 0),
                            ((10, 10, 4, 0), "patch", 0), ((10.0, 10, 4, 2), "height", 10.0),
                            ((10, 10, 4, 2, 0), "short_side_factor", 0)):
        _raises(lambda: tiled_size(*args), f"{name} must be an int >= 1; got {bad!r}")
    _raises(lambda: tiled_size(100, 100, 60, 16), "window (60 px) must be a multiple of patch (16 px)")


def test_tiled_size_default_factor_and_rounding():
    assert SHORT_SIDE_FACTOR == 2
    assert tiled_size(300, 500, 32, 8) == tiled_size(300, 500, 32, 8, 2) == (64, 104)   # 500*64/300=106.7 -> 104
    assert tiled_size(300, 500, 32, 8, 3) == (96, 160)
    assert tiled_size(500, 300, 32, 8, 1) == (56, 32)           # 500*32/300 = 53.3 -> 56 (nearest multiple of 8)
    assert tiled_size(100, 100, 16, 4) == (32, 32)
    assert tiled_size(10, 1000, 4, 2, 1) == (4, 400)
    assert tiled_size(7, 7, 7, 7) == (14, 14)


def test_window_starts_bounds_and_messages():
    assert window_starts(224, 224) == [0]                        # length == window: the bound
    assert window_starts(225, 224) == [0, 1]
    assert window_starts(10, 3) == [0, 3, 6, 7]
    assert window_starts(9, 3) == [0, 3, 6]
    assert window_starts(5, 1) == [0, 1, 2, 3, 4]
    _raises(lambda: window_starts(223, 224),
            "the side (223 px) is shorter than the window (224 px); resize with tiled_size")
    _raises(lambda: window_starts(0, 4), "length must be an int >= 1; got 0")
    _raises(lambda: window_starts(4, 0), "window must be an int >= 1; got 0")


def test_window_grid_row_major():
    assert window_grid(4, 6, 4) == [(0, 0), (0, 2)]
    assert window_grid(6, 4, 4) == [(0, 0), (2, 0)]
    assert window_grid(5, 5, 3) == [(0, 0), (0, 2), (2, 0), (2, 2)]


def test_assemble_windows_messages():
    ok = torch.zeros(1, 2, 2, 1)
    _raises(lambda: assemble_windows(torch.zeros(1, 2, 2), [(0, 0)], (4, 4), 2),
            "tokens must be [n_windows, g, g, C]; got (1, 2, 2)")
    _raises(lambda: assemble_windows(torch.zeros(1, 2, 3, 1), [(0, 0)], (4, 6), 2),
            "tokens must be [n_windows, g, g, C]; got (1, 2, 3, 1)")
    _raises(lambda: assemble_windows(ok, [(0, 0), (0, 2)], (4, 4), 2), "2 origins for 1 windows")
    _raises(lambda: assemble_windows(ok, [(0, 0)], (4, 4), 0), "patch must be an int >= 1; got 0")
    _raises(lambda: assemble_windows(ok, [(0, 0)], (5, 4), 2),
            "image_size (5, 4) must be multiples of patch (2); resize with tiled_size")
    _raises(lambda: assemble_windows(ok, [(0, 0)], (4, 5), 2),
            "image_size (4, 5) must be multiples of patch (2); resize with tiled_size")
    _raises(lambda: assemble_windows(ok, [(0, 1)], (4, 4), 2),
            "window origin (0, 1) is not on a patch boundary (patch 2)")
    _raises(lambda: assemble_windows(ok, [(2, 0)], (4, 4), 2), "window at (2, 0) of 4 px leaves the image (4, 4)")
    _raises(lambda: assemble_windows(ok, [(0, 4)], (4, 6), 2), "window at (0, 4) of 4 px leaves the image (4, 6)")
    _raises(lambda: assemble_windows(ok, [(0, 0)], (6, 4), 2),
            "the windows do not cover the image; take origins from window_grid")


def test_assemble_windows_values_dtype_and_patch_size():
    # 2 x 3-token windows of 3 channels on an image of 3 x 5 tokens, patch 4 px; the last column and row overlap.
    origins = window_grid(12, 20, 8)
    assert origins == [(0, 0), (0, 8), (0, 12), (4, 0), (4, 8), (4, 12)]
    rng = np.random.default_rng(9)
    tokens = torch.from_numpy(rng.normal(size=(len(origins), 2, 2, 3)))
    got = assemble_windows(tokens, origins, (12, 20), 4)
    assert got.shape == (3, 5, 3) and got.dtype == torch.float64
    ref = np.full((3, 5, 3), np.nan)
    for w, (top, left) in enumerate(origins):
        for i in range(2):
            for j in range(2):
                if np.isnan(ref[top // 4 + i, left // 4 + j, 0]):          # the first window wins
                    ref[top // 4 + i, left // 4 + j] = tokens[w, i, j].numpy()
    np.testing.assert_array_equal(got.numpy(), ref)
    ints = assemble_windows(torch.arange(4).view(1, 2, 2, 1), [(0, 0)], (2, 2), 1)
    assert ints.dtype == torch.int64 and ints[..., 0].tolist() == [[0, 1], [2, 3]]
    assert not math.isnan(float(got.sum()))

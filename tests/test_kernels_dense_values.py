"""The dense kernels value by value (issue 17: their surviving mutants): correspondence, propagation, region pooling
and the DAVIS J/F scores.

Every error message is compared whole with the text it must be (a mutant that renames an argument, drops a shape
from the message or raises an empty error changes the string); every documented bound is tried at the bound and
just past it; every default is compared with the documented value passed explicitly and with an independent
float64 NumPy reference; batched, non-square inputs exercise the axes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.kernels import correspondence as kc
from vitscope.kernels import propagation as prop
from vitscope.kernels import region_pooling as rp
from vitscope.kernels import segmentation_metrics as sm


def _refuses(message, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises ValueError whose message is exactly ``message``."""
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    assert str(err.value) == message


# ================================================================================================ correspondence

_POINTS = "{} must be [K, 2] (x, y) pixel coordinates; got shape {}"
_MAP = "{} must be a float tensor [C, h, w] (one block's spatial tokens on their grid); got {}"


def test_letterbox_geometry_exact_fields():
    assert kc.letterbox_geometry(10, 13, 20) == kc.Letterbox(20 / 13, 15, 20, 2, 0, 20)   # 200/13 = 15.4; 5 // 2
    assert kc.letterbox_geometry(13, 10, 20) == kc.Letterbox(20 / 13, 20, 15, 0, 2, 20)
    assert kc.letterbox_geometry(3, 3, 5) == kc.Letterbox(5 / 3, 5, 5, 0, 0, 5)          # square: no padding
    # an extreme aspect: the short side would round to 0 pixels, it keeps 1
    assert kc.letterbox_geometry(1, 1000, 64) == kc.Letterbox(0.064, 1, 64, 31, 0, 64)
    assert kc.letterbox_geometry(1000, 1, 64) == kc.Letterbox(0.064, 64, 1, 0, 31, 64)
    assert kc.letterbox_geometry(1, 1, 1) == kc.Letterbox(1.0, 1, 1, 0, 0, 1)            # every minimum accepted
    box = kc.letterbox_geometry(10, 13, 20)
    assert type(box.pad_top) is int and type(box.new_h) is int


@pytest.mark.parametrize("args, message", [((0, 5, 8), "h must be an int >= 1; got 0"),
                                           ((5, 0, 8), "w must be an int >= 1; got 0"),
                                           ((5, 5, 0), "size must be an int >= 1; got 0"),
                                           ((5.0, 5, 8), "h must be an int >= 1; got 5.0")])
def test_letterbox_geometry_messages(args, message):
    _refuses(message, kc.letterbox_geometry, *args)


def test_letterbox_points_and_bbox_in_float64():
    box = kc.Letterbox(scale=1 / 3, new_h=7, new_w=9, pad_top=3, pad_left=7, size=11)   # both pads, distinct
    pts = np.array([[2, 4], [10, 1], [0.5, 0.25]], dtype=np.float32)
    got = kc.letterbox_points(torch.from_numpy(pts), box)
    assert got.dtype == torch.float64
    want = np.stack([pts[:, 0].astype(np.float64) / 3 + 7, pts[:, 1].astype(np.float64) / 3 + 3], axis=1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-15, atol=0)
    b = kc.letterbox_bbox([[0, 0], [100, 50]], box)                                      # any layout of 4 numbers
    assert b.dtype == torch.float64 and b.shape == (4,)
    np.testing.assert_allclose(b.numpy(), [7, 3, 100 / 3 + 7, 50 / 3 + 3], rtol=1e-15, atol=0)
    _refuses("bbox must be [x1, y1, x2, y2]; got shape (3,)", kc.letterbox_bbox, [1, 2, 3], box)
    _refuses("bbox must be [x1, y1, x2, y2]; got shape (6,)", kc.letterbox_bbox, [[1, 2, 3], [4, 5, 6]], box)
    _refuses(_POINTS.format("points", "(3,)"), kc.letterbox_points, torch.zeros(3), box)
    _refuses(_POINTS.format("points", "(2, 3)"), kc.letterbox_points, torch.zeros(2, 3), box)
    _refuses("points holds NaN or Inf coordinates", kc.letterbox_points, [[0.0, float("nan")]], box)
    _refuses("points holds NaN or Inf coordinates", kc.letterbox_points, [[float("inf"), 0.0]], box)


def _upsample_reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resampling, half-pixel centres (align_corners=False), written out: [C, h, w] -> [C, out_h, out_w]."""
    _, h, w = x.shape

    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo
    y0, y1, fy = taps(h, out_h)
    x0, x1, fx = taps(w, out_w)
    rows = x[:, y0] * (1 - fy)[None, :, None] + x[:, y1] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


def _unit(x, axis=0):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


@pytest.mark.parametrize("size", [7, 2])            # up- and down-sampling of a non-square grid
def test_upsampled_unit_tokens_against_numpy(size):
    feats = np.random.default_rng(3).normal(size=(4, 3, 5)) * np.arange(1, 6)           # unequal token norms
    got = kc.upsampled_unit_tokens(torch.from_numpy(feats), size)
    assert got.shape == (4, size, size) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _upsample_reference(_unit(feats), size, size), rtol=0, atol=1e-12)


def test_map_messages():
    x = torch.randn(2, 3, 3)
    _refuses(_MAP.format("feats", "list"), kc.upsampled_unit_tokens, [[[1.0]]], 4)
    _refuses(_MAP.format("feats", "((3, 3), torch.float32)"), kc.upsampled_unit_tokens, x[0], 4)
    _refuses(_MAP.format("feats", "((2, 3, 3), torch.int64)"), kc.upsampled_unit_tokens, x.long(), 4)
    bad = x.clone()
    bad[1, 2, 0] = float("inf")
    _refuses("feats (shape (2, 3, 3)) holds NaN or Inf; check the model's outputs", kc.upsampled_unit_tokens, bad, 4)
    kps = torch.zeros(1, 2)
    _refuses(_MAP.format("src_feats", "((3, 3), torch.float32)"), kc.nearest_neighbour_keypoints, x[0], x, kps, size=6)
    _refuses(_MAP.format("trg_feats", "list"), kc.nearest_neighbour_keypoints, x, [1.0], kps, size=6)
    _refuses("src_feats (shape (2, 3, 3)) holds NaN or Inf; check the model's outputs",
             kc.nearest_neighbour_keypoints, bad, x, kps, size=6)
    _refuses("trg_feats (shape (2, 3, 3)) holds NaN or Inf; check the model's outputs",
             kc.nearest_neighbour_keypoints, x, bad * float("nan"), kps, size=6)


def test_matching_messages():
    x = torch.randn(4, 3, 3)
    kps = torch.zeros(1, 2)
    _refuses("similarity='dot' is unknown; choose from ('cosine', 'teaching-matters')",
             kc.nearest_neighbour_keypoints, x, x, kps, size=6, similarity="dot")
    _refuses("size must be an int >= 1; got 0", kc.nearest_neighbour_keypoints, x, x, kps, size=0)
    _refuses(_POINTS.format("src_kps", "(2,)"), kc.nearest_neighbour_keypoints, x, x, torch.zeros(2), size=6)
    _refuses("src_kps holds NaN or Inf coordinates", kc.nearest_neighbour_keypoints, x, x, [[0, float("nan")]],
             size=6)
    _refuses("src_feats (4, 3, 3) and trg_feats (2, 3, 3) must have the same number of channels C (features of "
             "the same block of the same model)", kc.nearest_neighbour_keypoints, x, x[:2], kps, size=6)
    assert kc.nearest_neighbour_keypoints(x, x, kps, size=1).tolist() == [[0, 0]]      # size 1 is accepted


def _match_reference(src, trg, kps, size, similarity):
    """The protocol in float64 NumPy: unit tokens, resample, (re-normalise), argmax over target pixels."""
    s = _upsample_reference(_unit(src), size, size)
    t = _upsample_reference(_unit(trg), size, size).reshape(src.shape[0], -1)
    if similarity == "cosine":
        t = _unit(t)
    out = []
    for x, y in np.clip(np.rint(kps), 0, size - 1).astype(int):
        out.append(divmod(int(np.argmax(s[:, y, x] @ t)), size)[::-1])
    return np.array(out)


@pytest.mark.parametrize("size", [4, 13])
@pytest.mark.parametrize("similarity", kc.SIMILARITIES)
def test_matching_out_of_image_keypoints_and_small_sizes(similarity, size):
    # size 4 < the 6 x 7 token grid: the clamp of keypoints outside the image to its last pixel matters there
    rng = np.random.default_rng(size)
    src, trg = rng.normal(size=(5, 6, 7)), rng.normal(size=(5, 6, 7))
    kps = np.array([[-3.0, 10.0], [9.0, -2.0], [100.0, 100.0], [2.6, 1.4], [-0.4, 3.5]])
    got = kc.nearest_neighbour_keypoints(torch.from_numpy(src), torch.from_numpy(trg), torch.from_numpy(kps),
                                         size=size, similarity=similarity)
    assert got.dtype == torch.int64 and got.shape == (5, 2)
    np.testing.assert_array_equal(got.numpy(), _match_reference(src, trg, kps, size, similarity))


def test_matching_default_similarity_is_cosine():
    gen = torch.Generator().manual_seed(4)
    src = torch.randn(6, 4, 5, generator=gen, dtype=torch.float64)
    trg = torch.randn(6, 4, 5, generator=gen, dtype=torch.float64)
    kps = torch.rand(20, 2, generator=gen, dtype=torch.float64) * 15
    default = kc.nearest_neighbour_keypoints(src, trg, kps, size=16)
    assert torch.equal(default, kc.nearest_neighbour_keypoints(src, trg, kps, size=16, similarity="cosine"))
    want = _match_reference(src.double().numpy(), trg.double().numpy(), kps.double().numpy(), 16, "cosine")
    np.testing.assert_array_equal(default.numpy(), want)


def test_keypoint_hits_bounds_axes_and_defaults():
    pred = torch.tensor([[3.0, 4.0], [0.0, 5.0001], [6.0, 0.0]])                    # distances 5, 5.0001, 6
    gt = torch.zeros(3, 2)
    # x2 below y1 in the last box: each coordinate is compared with its own partner only
    for bbox in ([2, 3, 12, 7], [3, 2, 7, 12], [5, 5, 5, 15], [5, 5, 15, 5], [0, 20, 10, 25]):
        hits = kc.keypoint_hits(pred, gt, bbox, alphas=(0.5, 0.6))                   # thresholds 5 and 6
        assert hits.tolist() == [[True, False, False], [True, True, True]], bbox
    pred = torch.tensor([[1.0, 0.0], [0.0, 5.0], [6.0, 8.0], [10.5, 0.0], [0.0, 1.5]])   # 1, 5, 10, 10.5, 1.5
    gt = torch.zeros(5, 2)
    want = [[True, True, True, False, True], [True, True, False, False, True], [True, False, False, False, False]]
    assert kc.keypoint_hits(pred, gt, [0, 0, 100, 30]).tolist() == want              # alphas 0.1, 0.05, 0.01
    assert kc.keypoint_hits(pred, gt, [0, 0, 100, 30], alphas=(0.1, 0.05, 0.01)).tolist() == want
    got = kc.pck(pred, gt, [0, 0, 100, 30])
    assert got.dtype == torch.float64 and got.tolist() == [0.8, 0.6, 0.2]
    assert kc.pck(pred, gt, [0, 0, 100, 30], alphas=[0.2]).tolist() == [1.0]


def test_keypoint_hits_messages():
    p, g = torch.zeros(2, 2), torch.zeros(2, 2)
    box = [0, 0, 10, 10]
    _refuses(_POINTS.format("pred", "(3,)"), kc.keypoint_hits, torch.zeros(3), g, box)
    _refuses(_POINTS.format("gt", "(3,)"), kc.keypoint_hits, p, torch.zeros(3), box)
    _refuses("gt holds NaN or Inf coordinates", kc.keypoint_hits, p, [[0, 0], [0, float("inf")]], box)
    _refuses("pred (2, 2) and gt (3, 2) must both be [K, 2], one row per keypoint", kc.keypoint_hits, p,
             torch.zeros(3, 2), box)
    base = "bbox must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1; got "
    _refuses(base + "[5.0, 5.0, 4.0, 10.0]", kc.keypoint_hits, p, g, [5, 5, 4, 10])
    _refuses(base + "[5.0, 5.0, 10.0, 4.0]", kc.keypoint_hits, p, g, [5, 5, 10, 4])
    _refuses(base + "[1.0, 2.0, 3.0]", kc.keypoint_hits, p, g, [1, 2, 3])
    _refuses(base + "[1.0, 2.0, 3.0, 4.0, 5.0]", kc.keypoint_hits, p, g, [1, 2, 3, 4, 5])
    alphas = "alphas must be numbers > 0 (fractions of the bounding box, e.g. (0.1, 0.05, 0.01)); got "
    _refuses(alphas + "[0.0]", kc.keypoint_hits, p, g, box, alphas=[0.0])
    _refuses(alphas + "[]", kc.keypoint_hits, p, g, box, alphas=[])
    _refuses(alphas + "[0.1, -0.1]", kc.keypoint_hits, p, g, box, alphas=[0.1, -0.1])


def test_pair_values_and_category_mean_by_hand():
    correct, total, cats = [1, 2, 0, 3], [2, 2, 4, 5], ["a", "a", "b", "c"]
    # P = 4 pairs, C = 3 categories, keypoints a 4, b 4, c 5: value = P / (C T_c) * correct
    values = kc.pair_values(correct, total, cats)
    assert values.dtype == torch.float64
    np.testing.assert_allclose(values.numpy(), [4 / 12, 8 / 12, 0.0, 12 / 15], rtol=1e-15, atol=0)
    assert kc.category_mean(correct, total, cats) == pytest.approx((3 / 4 + 0 + 3 / 5) / 3, rel=1e-15)
    assert kc.category_mean([2, 0], [2, 3], ["x", "y"]) == 0.5                       # correct = total and 0 accepted
    assert kc.category_mean([1], [1], ["x"]) == 1.0                                  # total 1 accepted


def test_pair_checks_messages():
    shape = "correct {}, total {} and category ({}) must be vectors of the same length, one entry per image pair"
    _refuses(shape.format("(1, 2)", "(1, 2)", 1), kc.pair_values, [[1, 2]], [[2, 2]], ["a"])
    _refuses(shape.format("(2,)", "(3,)", 2), kc.pair_values, [1, 2], [2, 2, 2], ["a", "b"])
    _refuses(shape.format("(2,)", "(2,)", 1), kc.pair_values, [1, 2], [2, 2], ["a"])
    counts = "every pair needs total > 0 keypoints and 0 <= correct <= total"
    _refuses(counts, kc.pair_values, [0, 1], [0, 2], ["a", "b"])
    _refuses(counts, kc.pair_values, [-1], [2], ["a"])
    _refuses(counts, kc.category_mean, [3], [2], ["a"])


# =================================================================================================== propagation

def _neighbourhood_reference(h, w, radius):
    idx = np.arange(h * w)
    r, c = idx // w, idx % w
    if radius is None:
        return np.ones((h * w, h * w), bool)
    return (np.abs(r[:, None] - r[None]) <= radius) & (np.abs(c[:, None] - c[None]) <= radius)


def _weights_reference(target, sources, allowed, temperature, topk):
    """float64: softmax of cos / T over the allowed sources at or above the row's k-th largest, zero elsewhere."""
    S, M, _ = sources.shape
    logits = _unit(target, 1) @ _unit(sources.reshape(S * M, -1), 1).T / temperature
    if allowed is not None:
        logits = np.where(np.tile(allowed, (1, S)), logits, -np.inf)
    out = np.zeros_like(logits)
    for n, row in enumerate(logits):
        finite = np.sort(row[np.isfinite(row)])[::-1]
        keep = np.isfinite(row) & (row >= finite[min(topk, finite.size) - 1])
        e = np.exp(row[keep] - row[keep].max())
        out[n, keep] = e / e.sum()
    return out


def _step_reference(target, sources, labels, temperature, topk, radius):
    """[B, K1, h, w] float64 from [B, h, w, C], [B, S, h, w, C], [B, S, K1, h, w]."""
    B, h, w, C = target.shape
    S, K1 = labels.shape[1:3]
    allowed = _neighbourhood_reference(h, w, radius)
    out = []
    for b in range(B):
        wts = _weights_reference(target[b].reshape(h * w, C), sources[b].reshape(S, h * w, C), allowed,
                                 temperature, topk)
        lab = labels[b].transpose(0, 2, 3, 1).reshape(S * h * w, K1)
        out.append((wts @ lab).T.reshape(K1, h, w))
    return np.stack(out)


@pytest.mark.parametrize("grid", [(3, 5), (4, 2), (1, 6)])
@pytest.mark.parametrize("radius", [None, 0, 1, 2])
def test_neighbourhood_against_numpy(grid, radius):
    got = prop.neighbourhood(grid, radius)
    assert got.dtype == torch.bool
    np.testing.assert_array_equal(got.numpy(), _neighbourhood_reference(*grid, radius))


def test_neighbourhood_messages():
    _refuses("grid side must be an int >= 1; got 0", prop.neighbourhood, (0, 3), 1)
    _refuses("grid side must be an int >= 1; got 0", prop.neighbourhood, (3, 0), None)
    _refuses("radius must be an int >= 0; got -1", prop.neighbourhood, (3, 3), -1)


def test_weights_defaults_and_few_allowed_sources():
    rng = np.random.default_rng(5)
    target, sources = rng.normal(size=(4, 3)), rng.normal(size=(3, 4, 3))          # N 4, S 3, M 4: 12 sources
    t, s = torch.from_numpy(target), torch.from_numpy(sources)
    default = prop.propagation_weights(t, s, None)
    torch.testing.assert_close(default, prop.propagation_weights(t, s, None, temperature=0.1, topk=5))
    np.testing.assert_allclose(default.double().numpy(), _weights_reference(target, sources, None, 0.1, 5),
                               atol=1e-5)
    for other in (_weights_reference(target, sources, None, 0.2, 5), _weights_reference(target, sources, None, 0.1, 4),
                  _weights_reference(target, sources, None, 0.1, 6)):
        assert not np.allclose(default.double().numpy(), other, atol=1e-3)      # the defaults are told apart
    # one allowed position per target (x 3 frames) but topk 5: the 3 allowed sources share the weight
    allowed = torch.zeros(4, 4, dtype=torch.bool)
    allowed[[0, 1, 2, 3], [2, 0, 3, 3]] = True
    got = prop.propagation_weights(t, s, allowed, topk=5)
    np.testing.assert_allclose(got.double().numpy(), _weights_reference(target, sources, allowed.numpy(), 0.1, 5),
                               atol=1e-5)
    assert (got > 0).sum(1).tolist() == [3, 3, 3, 3]
    # topk beyond all S * M sources: all of them, a plain softmax
    got = prop.propagation_weights(t, s, None, topk=100, temperature=1.0)
    np.testing.assert_allclose(got.double().numpy(), _weights_reference(target, sources, None, 1.0, 12), atol=1e-6)
    assert bool((got > 0).all())


def test_weights_messages():
    t, s = torch.randn(2, 4), torch.randn(3, 3, 4)
    _refuses("temperature must be a number > 0; got 0", prop.propagation_weights, t, s, None, temperature=0)
    _refuses("topk must be an int >= 1; got 0", prop.propagation_weights, t, s, None, topk=0)
    shapes = "target must be [N, C] and sources [S, M, C] with the same C; got {} and {}"
    _refuses(shapes.format("(1, 2, 4)", "(3, 3, 4)"), prop.propagation_weights, t[None], s, None)
    _refuses(shapes.format("(2, 4)", "(3, 4)"), prop.propagation_weights, t, s[0], None)
    _refuses(shapes.format("(2, 4)", "(3, 3, 5)"), prop.propagation_weights, t, torch.randn(3, 3, 5), None)
    _refuses("allowed must be [N, M] = (2, 3); got (3, 2)", prop.propagation_weights, t, s,
             torch.ones(3, 2, dtype=torch.bool))
    _refuses("a target token has no allowed source; use radius >= 0 (its own position is always allowed)",
             prop.propagation_weights, t, s, torch.tensor([[True, False, False], [False, False, False]]))
    assert prop.propagation_weights(t, s, None, topk=1, temperature=1e-3).sum(1).tolist() == [1.0, 1.0]


def test_step_defaults_batched_non_square_float64():
    rng = np.random.default_rng(6)
    B, S, h, w, C, K1 = 2, 2, 2, 15, 6, 3
    target = rng.normal(size=(B, h, w, C))
    sources = rng.normal(size=(B, S, h, w, C))
    # the radius default (12) is told apart from 11 and 13: target (0, 0) equals a source 13 columns away and
    # target (1, 0) one 12 columns away
    sources[:, 0, 0, 13] = target[:, 0, 0]
    sources[:, 1, 1, 12] = target[:, 1, 0]
    labels = rng.dirichlet(np.ones(K1), size=(B, S, h, w)).transpose(0, 1, 4, 2, 3).copy()   # [B, S, K1, h, w]
    args = [torch.from_numpy(a) for a in (target, sources, labels)]
    got = prop.propagation_step(*args)
    assert got.shape == (B, K1, h, w) and got.dtype == torch.float32
    torch.testing.assert_close(got, prop.propagation_step(*args, temperature=0.1, topk=5, radius=12))
    want = _step_reference(target, sources, labels, 0.1, 5, 12)
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5)
    for other in ((0.1, 5, 11), (0.1, 5, 13), (0.1, 5, None), (0.1, 4, 12), (0.1, 6, 12), (0.2, 5, 12)):
        assert not np.allclose(want, _step_reference(target, sources, labels, *other), atol=1e-3), other
    got = prop.propagation_step(*args, temperature=0.5, topk=3, radius=0)
    np.testing.assert_allclose(got.double().numpy(), _step_reference(target, sources, labels, 0.5, 3, 0), atol=1e-5)


def test_step_messages():
    t, s, lab = torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 2, 4), torch.rand(1, 2, 3, 2, 2)
    shapes = "target [B, h, w, C], sources [B, S, h, w, C], source_labels [B, S, K1, h, w] expected; got {}, {}, {}"
    _refuses(shapes.format("(2, 2, 4)", "(1, 2, 2, 2, 4)", "(1, 2, 3, 2, 2)"), prop.propagation_step, t[0], s, lab)
    _refuses(shapes.format("(1, 2, 2, 4)", "(2, 2, 2, 4)", "(1, 2, 3, 2, 2)"), prop.propagation_step, t, s[0], lab)
    _refuses(shapes.format("(1, 2, 2, 4)", "(1, 2, 2, 2, 4)", "(2, 3, 2, 2)"), prop.propagation_step, t, s, lab[0])
    mismatch = "sources {} do not match target (1, 2, 2, 4)"
    _refuses(mismatch.format("(2, 2, 2, 2, 4)"), prop.propagation_step, t, torch.randn(2, 2, 2, 2, 4), lab)
    _refuses(mismatch.format("(1, 2, 2, 3, 4)"), prop.propagation_step, t, torch.randn(1, 2, 2, 3, 4), lab)
    _refuses(mismatch.format("(1, 2, 2, 2, 5)"), prop.propagation_step, t, torch.randn(1, 2, 2, 2, 5), lab)
    labels = "source_labels {} must be [B=1, S=2, K1, 2, 2]"
    _refuses(labels.format("(2, 2, 3, 2, 2)"), prop.propagation_step, t, s, torch.rand(2, 2, 3, 2, 2))
    _refuses(labels.format("(1, 1, 3, 2, 2)"), prop.propagation_step, t, s, lab[:, :1])
    _refuses(labels.format("(1, 2, 3, 2, 3)"), prop.propagation_step, t, s, torch.rand(1, 2, 3, 2, 3))
    finite = "target features (shape (1, 2, 2, 4)) holds NaN or Inf values; check the model's outputs or recompute " \
             "the cached features"
    _refuses(finite, prop.propagation_step, t * float("nan"), s, lab)
    _refuses(finite, prop.propagation_step, t * float("inf"), s, lab)
    _refuses("topk must be an int >= 1; got 0", prop.propagation_step, t, s, lab, topk=0)
    _refuses("temperature must be a number > 0; got -0.1", prop.propagation_step, t, s, lab, temperature=-0.1)
    _refuses("radius must be an int >= 0; got -1", prop.propagation_step, t, s, lab, radius=-1)


def test_one_hot_labels_values_and_messages():
    got = prop.one_hot_labels(torch.tensor([[0, 2], [5, 1]]), 3)                    # 5 >= 3: no channel
    assert got.dtype == torch.float32
    assert got.tolist() == [[[1, 0], [0, 0]], [[0, 0], [0, 1]], [[0, 1], [0, 0]]]
    assert prop.one_hot_labels(torch.tensor([[0, 1]]), 1).tolist() == [[[1.0, 0.0]]]
    _refuses("mask must be an integer tensor [h, w]; got (2, 2, 2) torch.int64", prop.one_hot_labels,
             torch.zeros(2, 2, 2, dtype=torch.long), 2)
    _refuses("mask must be an integer tensor [h, w]; got (2, 2) torch.float32", prop.one_hot_labels,
             torch.zeros(2, 2), 2)
    _refuses("num_labels must be an int >= 1; got 0", prop.one_hot_labels, torch.zeros(2, 2, dtype=torch.long), 0)


def _video_reference(frames, first, n_last, temperature, topk, radius):
    B = frames[0].shape[0]
    first_soft = np.broadcast_to(first, (B, *first.shape)).astype(np.float64)
    out, recent = [first_soft], []
    for feats in frames[1:]:
        ctx = np.stack([frames[0]] + [f for f, _ in recent], axis=1)
        ctx_lab = np.stack([first_soft] + [lab for _, lab in recent], axis=1)
        soft = _step_reference(feats, ctx, ctx_lab, temperature, topk, radius)
        out.append(soft)
        recent = (recent + [(feats, soft)])[-n_last:] if n_last else []
    return out


def test_video_default_context_and_passed_settings():
    rng = np.random.default_rng(7)
    B, h, w, C = 2, 2, 3, 5
    frames = [rng.normal(size=(B, h, w, C)) for _ in range(10)]
    frames[9] = frames[1].copy()                     # frame 1 is in frame 9's context only when n_last_frames >= 8
    frames[2] = frames[9] + 0.05 * rng.normal(size=frames[9].shape)     # frame 2: only when n_last_frames >= 7
    first = rng.dirichlet(np.ones(3), size=(h, w)).transpose(2, 0, 1).copy()        # [K1, h, w] soft labels
    feats = [torch.from_numpy(f).float() for f in frames]
    got = list(prop.propagate_video(feats, torch.from_numpy(first)))
    assert len(got) == 10 and got[0].dtype == torch.float32 and got[0].shape == (B, 3, h, w)
    explicit = list(prop.propagate_video(feats, torch.from_numpy(first), n_last_frames=7, temperature=0.1, topk=5,
                                         radius=12))
    f64 = [f.double().numpy() for f in feats]
    want = _video_reference(f64, first, 7, 0.1, 5, 12)
    for g, e, r in zip(got, explicit, want):
        torch.testing.assert_close(g, e)
        np.testing.assert_allclose(g.double().numpy(), r, atol=1e-5)
    for n in (6, 8):
        assert not np.allclose(want[9], _video_reference(f64, first, n, 0.1, 5, 12)[9], atol=1e-3), n
    got = list(prop.propagate_video(feats[:5], torch.from_numpy(first), n_last_frames=2, temperature=0.5, topk=2,
                                    radius=0))
    for g, r in zip(got, _video_reference(f64[:5], first, 2, 0.5, 2, 0)):
        np.testing.assert_allclose(g.double().numpy(), r, atol=1e-5)
    got = list(prop.propagate_video(feats[:4], torch.from_numpy(first), n_last_frames=0))
    for g, r in zip(got, _video_reference(f64[:4], first, 0, 0.1, 5, 12)):
        np.testing.assert_allclose(g.double().numpy(), r, atol=1e-5)


def test_video_messages():
    f, first = torch.randn(1, 2, 2, 4), torch.rand(3, 2, 2)
    _refuses("n_last_frames must be an int >= 0; got -1", next, prop.propagate_video([f], first, n_last_frames=-1))
    _refuses("features is empty: a video needs at least its first frame", next, prop.propagate_video([], first))
    shapes = "first frame features [B, h, w, C] and first_labels [K1, h, w] on the same grid expected; got {} and {}"
    _refuses(shapes.format("(2, 2, 4)", "(3, 2, 2)"), next, prop.propagate_video([f[0]], first))
    _refuses(shapes.format("(1, 2, 2, 4)", "(2, 2)"), next, prop.propagate_video([f], first[0]))
    _refuses(shapes.format("(1, 2, 2, 4)", "(3, 2, 3)"), next, prop.propagate_video([f], torch.rand(3, 2, 3)))
    _refuses(shapes.format("(1, 2, 2, 4)", "(3, 3, 2)"), next, prop.propagate_video([f], torch.rand(3, 3, 2)))


def _labels_to_mask_reference(soft, patch, size):
    K1, h, w = soft.shape
    up = _upsample_reference(soft, h * patch, w * patch).reshape(K1, -1)
    for k in range(K1):
        if up[k].max() > 0:
            up[k] = (up[k] - up[k].min()) / max(up[k].max() - up[k].min(), 1e-12)
    labels = up.argmax(0).reshape(h * patch, w * patch)
    rows = np.minimum(np.floor((np.arange(size[0]) + 0.5) * h * patch / size[0]).astype(int), h * patch - 1)
    cols = np.minimum(np.floor((np.arange(size[1]) + 0.5) * w * patch / size[1]).astype(int), w * patch - 1)
    return labels[rows][:, cols]


@pytest.mark.parametrize("size", [(12, 20), (7, 30), (25, 9)])
def test_labels_to_mask_against_numpy(size):
    rng = np.random.default_rng(8)
    soft = np.zeros((4, 3, 5))
    soft[0] = rng.uniform(0.0, 0.2, size=(3, 5))          # small but rescaled to [0, 1]: wins where it is high
    soft[1] = rng.uniform(0.3, 0.5, size=(3, 5))          # larger everywhere before the rescale
    soft[3] = 0.25                                        # constant: rescaled to 0 everywhere; channel 2 is empty
    got = prop.labels_to_mask(torch.from_numpy(soft), 4, size)
    assert got.dtype == torch.int64 and got.shape == size
    want = _labels_to_mask_reference(soft, 4, size)
    np.testing.assert_array_equal(got.numpy(), want)
    assert set(np.unique(want)) == {0, 1}


def test_labels_to_mask_messages():
    _refuses("soft labels must be [K1, h, w]; got (3, 5)", prop.labels_to_mask, torch.rand(3, 5), 4, (12, 20))
    _refuses("patch must be an int >= 1; got 0", prop.labels_to_mask, torch.rand(2, 3, 5), 0, (12, 20))
    soft = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    want = _labels_to_mask_reference(soft.numpy(), 1, (3, 5))                            # patch 1 accepted
    np.testing.assert_array_equal(prop.labels_to_mask(soft, 1, (3, 5)).numpy(), want)


# ========================================================================================== segmentation metrics

def test_region_similarity_reads_any_nonzero_as_foreground():
    gt = [[0, 255], [2, 0]]
    pred = [[0, 1], [0, -1]]
    assert sm.region_similarity(gt, pred) == 1 / 3
    assert sm.region_similarity(torch.tensor(gt), np.array(pred)) == 1 / 3
    # DAVIS annotations are palette PNGs: a PIL image is read through NumPy
    assert sm.region_similarity(Image.fromarray(np.array([[0, 255], [2, 0]], np.uint8)), pred) == 1 / 3


def test_metric_messages():
    z = np.zeros((4, 4))
    _refuses("annotation must be a 2-D mask [H, W]; got shape (2, 4, 4)", sm.region_similarity, np.zeros((2, 4, 4)), z)
    _refuses("prediction must be a 2-D mask [H, W]; got shape (4,)", sm.region_similarity, z, np.zeros(4))
    _refuses("mask must be a 2-D mask [H, W]; got shape (4,)", sm.seg2bmap, np.zeros(4))
    _refuses("annotation must be a 2-D mask [H, W]; got shape (1, 4, 4)", sm.boundary_f_measure,
             np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    size = "annotation (4, 4) and prediction (4, 5) must have the same size; resize the prediction to the " \
           "annotation's size (nearest neighbour)"
    _refuses(size, sm.region_similarity, z, np.zeros((4, 5)))
    _refuses(size, sm.boundary_f_measure, z, np.zeros((4, 5)))
    _refuses("bound_th must be > 0 (a fraction of the diagonal, or pixels if >= 1); got 0", sm.boundary_tolerance,
             (4, 4), 0)
    _refuses("bound_th must be > 0 (a fraction of the diagonal, or pixels if >= 1); got -0.5",
             sm.boundary_f_measure, z, z, -0.5)
    _refuses("3 annotated frames but 2 predicted ones", sm.video_scores, np.zeros((3, 4, 4)), np.zeros((2, 4, 4)),
             [1])
    _refuses("per_frame must be [K, T] with T >= 3 frames (the first and last are skipped); got (2, 2)",
             sm.object_means, torch.zeros(2, 2))
    _refuses("per_frame must be [K, T] with T >= 3 frames (the first and last are skipped); got (5,)",
             sm.object_means, torch.zeros(5))


def _seg2bmap_reference(seg):
    """davis2017-evaluation's seg2bmap for a mask of the image's own size, transcribed in NumPy."""
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


@pytest.mark.parametrize("seed", range(4))
def test_seg2bmap_against_numpy(seed):
    rng = np.random.default_rng(seed)
    seg = (rng.random((7, 11)) < 0.4).astype(np.int64) * 3                           # non-square, values 0 and 3
    got = sm.seg2bmap(seg)
    assert got.dtype == torch.bool
    np.testing.assert_array_equal(got.numpy(), _seg2bmap_reference(seg))


def test_tolerance_and_disk_exact():
    assert sm.boundary_tolerance((100, 240)) == 3            # ceil(0.008 * 260 = 2.08)
    assert sm.boundary_tolerance((100, 240), 0.008) == 3
    assert sm.boundary_tolerance((240, 100), 0.004) == 2     # ceil(1.04)
    assert sm.boundary_tolerance((30, 40), 0.999) == 50      # ceil(49.95): below 1 still a fraction
    assert sm.boundary_tolerance((30, 40), 1) == 1           # 1 is pixels
    assert sm.boundary_tolerance((30, 40), 2.9) == 2
    d = [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
    assert torch.equal(sm.disk(2), torch.tensor(d, dtype=torch.bool))
    assert sm.disk(0).tolist() == [[True]]
    assert sm.disk(3).sum(1).tolist() == [1, 5, 5, 7, 5, 5, 1]                    # dy 3: dx 0; dy 2: |dx| <= 2


def _rectangle(h, w, shift=0):
    m = np.zeros((h, w), bool)
    m[20:70, 40 + shift:150 + shift] = True
    return m


def test_boundary_f_default_tolerance_and_empty_cases():
    gt, pred = _rectangle(100, 240), _rectangle(100, 240, shift=3)                   # tolerance 3 px by default
    assert sm.boundary_f_measure(gt, pred) == 1.0
    assert sm.boundary_f_measure(gt, pred, 0.008) == 1.0
    assert sm.boundary_f_measure(gt, pred, 2) < 1.0
    empty, full = np.zeros((100, 240), bool), np.ones((100, 240), bool)
    assert sm.boundary_f_measure(empty, empty) == 1.0
    assert sm.boundary_f_measure(full, full) == 1.0                                  # no boundary in either
    assert sm.boundary_f_measure(empty, gt) == 0.0
    assert sm.boundary_f_measure(gt, empty) == 0.0
    corner = np.ones((3, 3), bool)
    corner[0, 0] = False                                                             # a one-pixel boundary
    assert int(sm.seg2bmap(corner).sum()) == 1
    assert sm.boundary_f_measure(np.zeros((3, 3)), corner) == 0.0
    assert sm.boundary_f_measure(corner, np.zeros((3, 3))) == 0.0
    far = np.zeros((100, 240), bool)
    far[80:95, 200:230] = True
    assert sm.boundary_f_measure(gt, far) == 0.0                                     # no boundary pixel matched


def test_video_scores_per_object_and_passed_tolerance():
    gt = np.zeros((3, 100, 240), np.uint8)
    gt[:, 20:70, 40:150] = 2
    gt[:, 75:95, 180:220] = 1
    pred = gt.copy()
    pred[1] = 0
    pred[1][_rectangle(100, 240, shift=3)] = 2                                       # object 2 moved 3 px, 1 lost
    J, F = sm.video_scores(list(gt), list(pred), [2, 1, 5])                          # 5: absent from both
    assert J.dtype == F.dtype == torch.float64 and J.shape == F.shape == (3, 3)
    assert J[:, 1].tolist() == [(50 * 107) / (50 * 113), 0.0, 1.0]
    assert F[:, 1].tolist() == [1.0, 0.0, 1.0] and bool((J[:, [0, 2]] == 1).all())
    _, F2 = sm.video_scores(gt, pred, [2], bound_th=2)
    assert F2[0, 1] < 1.0 and F2[0, 0] == 1.0


def test_object_means_and_summarise_in_float64():
    x = torch.tensor([[0.9, 0.1, 0.2, 0.7, 0.3], [0.5, 0.3, 0.6, 0.1, 0.0]], dtype=torch.float32)
    got = sm.object_means(x)
    assert got.dtype == torch.float64
    want = x.numpy().astype(np.float64)[:, 1:-1].mean(axis=1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-15, atol=0)
    assert sm.object_means(x[:, :3]).tolist() == [float(np.float32(0.1)), float(np.float32(0.3))]   # T = 3 accepted
    j = torch.tensor([0.1, 0.2, 0.4], dtype=torch.float32)
    f = torch.tensor([0.7, 0.3], dtype=torch.float32)
    out = sm.summarise(j, f)
    jm, fm = j.numpy().astype(np.float64).mean(), f.numpy().astype(np.float64).mean()
    assert set(out) == {"j", "f", "jf"}
    assert out["j"] == pytest.approx(jm, rel=1e-15) and out["f"] == pytest.approx(fm, rel=1e-15)
    assert out["jf"] == pytest.approx((jm + fm) / 2, rel=1e-15)


# ================================================================================================ region pooling

def _coverage_reference(masks, patch):
    R, H, W = masks.shape
    return masks.astype(np.float64).reshape(R, H // patch, patch, W // patch, patch).mean(axis=(2, 4))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.uint8, torch.float32])
def test_coverage_non_square_and_every_mask_dtype(dtype):
    masks = torch.rand(2, 6, 9, generator=torch.Generator().manual_seed(9)) > 0.5   # a 2 x 3 grid of 3 px patches
    got = rp.coverage(masks.to(dtype), 3)
    assert got.dtype == torch.float64 and got.shape == (2, 2, 3)
    np.testing.assert_allclose(got.numpy(), _coverage_reference(masks.numpy(), 3), rtol=0, atol=1e-15)


def test_coverage_messages():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    _refuses("patch must be an int >= 1; got 0", rp.coverage, m, 0)
    shape = "masks must be a tensor [R, H, W] (one mask per region); got {}"
    _refuses(shape.format("list"), rp.coverage, [[[True]]], 1)
    _refuses(shape.format("(4, 4)"), rp.coverage, m[0], 2)
    _refuses(shape.format("(1, 1, 4, 4)"), rp.coverage, m[None], 2)
    grid = "masks are {}x{} px, not multiples of patch (2); resize them to the tiled image's size " \
           "(vitscope.extract.dense.resize_mask)"
    _refuses(grid.format(5, 4), rp.coverage, torch.zeros(1, 5, 4, dtype=torch.bool), 2)
    _refuses(grid.format(4, 5), rp.coverage, torch.zeros(1, 4, 5, dtype=torch.bool), 2)
    values = "masks must be boolean or 0/1; got other values (a label map? compare it with each label)"
    for bad in (2, -1, 0.5):
        x = torch.zeros(1, 4, 4, dtype=torch.float32 if isinstance(bad, float) else torch.int64)
        x[0, 1, 1] = bad
        _refuses(values, rp.coverage, x, 2)
    assert rp.coverage(m, 1).shape == (1, 4, 4)                                        # patch 1 accepted


def test_region_weights_default_rule_and_bounds():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True             # token (0, 0) a quarter covered
    masks[0, 0:2, 2:4] = True         # token (0, 1) fully covered; mask 1 empty
    default = rp.region_weights(masks, 2)
    assert default.dtype == torch.float64
    assert default.tolist() == [[[0.5, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
    assert torch.equal(default, rp.region_weights(masks, 2, "any"))
    assert rp.region_weights(masks, 2, "weighted")[0].tolist() == [[0.2, 0.8], [0.0, 0.0]]
    assert rp.region_weights(masks, 2, "fraction", 1)[0].tolist() == [[0.0, 1.0], [0.0, 0.0]]    # 1 accepted
    assert rp.region_weights(masks, 2, "fraction", 1).dtype == rp.region_weights(masks, 2, "weighted").dtype \
        == torch.float64
    assert rp.region_weights(masks, 2, "fraction", 0.25)[0].tolist() == [[0.5, 0.5], [0.0, 0.0]]  # >= the share
    assert rp.region_weights(masks, 2, "fraction", 0.2500001)[0].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    one_pixel = torch.zeros(1, 4, 4, dtype=torch.bool)
    one_pixel[0, 3, 0] = True                                     # coverages summing to 1/4: still normalised to 1
    assert rp.region_weights(one_pixel, 2, "weighted").tolist() == [[[0.0, 0.0], [1.0, 0.0]]]


def test_region_weights_messages():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    _refuses("rule (token overlap)='majority' is unknown; choose from ('any', 'fraction', 'weighted')",
             rp.region_weights, m, 2, "majority")
    needs = "rule='fraction' needs min_fraction in (0, 1] (the share of a patch inside the mask); got {}"
    for bad in (None, True, 0, 0.0, -0.1, 1.0000001, 1.5, 2):
        _refuses(needs.format(repr(bad)), rp.region_weights, m, 2, "fraction", bad)
    _refuses("min_fraction=0.5 applies only to rule='fraction'; got rule='any'", rp.region_weights, m, 2,
             min_fraction=0.5)
    _refuses("min_fraction=0.0 applies only to rule='fraction'; got rule='weighted'", rp.region_weights, m, 2,
             "weighted", 0.0)


def test_pool_regions_leading_dims_default_rule_and_dtype():
    gen = torch.Generator().manual_seed(10)
    tokens = torch.randn(2, 3, 2, 3, 4, generator=gen) * 1e3 + 1e4                  # [2, 3] leading, 2 x 3 grid
    masks = torch.rand(3, 4, 6, generator=gen) > 0.6
    masks[1] = False
    feats, kept = rp.pool_regions(tokens, masks, 2)
    assert kept.tolist() == [True, False, True] and kept.dtype == torch.bool
    assert feats.shape == (2, 3, 2, 4) and feats.dtype == torch.float32
    f2, _ = rp.pool_regions(tokens, masks, 2, "any", None)
    assert torch.equal(feats, f2)
    w = (_coverage_reference(masks.numpy(), 2) > 0).astype(np.float64)[[0, 2]]
    w /= w.sum(axis=(1, 2), keepdims=True)
    want = np.einsum("rhw,abhwc->abrc", w, tokens.double().numpy())
    np.testing.assert_allclose(feats.double().numpy(), want, rtol=1e-7, atol=0)
    cov = _coverage_reference(masks.numpy(), 2)
    f3, k3 = rp.pool_regions(tokens.double(), masks, 2, "fraction", 0.5)              # min_fraction passed on
    w3 = (cov >= 0.5).astype(np.float64)[k3.numpy()]
    want = np.einsum("rhw,abhwc->abrc", w3 / w3.sum(axis=(1, 2), keepdims=True), tokens.double().numpy())
    np.testing.assert_allclose(f3.numpy(), want, rtol=1e-14, atol=0)
    assert k3.tolist() == (cov >= 0.5).any(axis=(1, 2)).tolist()
    f64, _ = rp.pool_regions(tokens.double(), masks, 2, "weighted")
    cov = _coverage_reference(masks.numpy(), 2)[[0, 2]]
    want = np.einsum("rhw,abhwc->abrc", cov / cov.sum(axis=(1, 2), keepdims=True), tokens.double().numpy())
    assert f64.dtype == torch.float64
    np.testing.assert_allclose(f64.numpy(), want, rtol=1e-14, atol=0)


def test_pool_regions_messages():
    tokens, masks = torch.randn(2, 2, 2), torch.ones(1, 4, 4, dtype=torch.bool)
    shape = "tokens must be a floating-point tensor [..., G_h, G_w, C]; got {}"
    _refuses(shape.format("list"), rp.pool_regions, [[[1.0]]], masks, 2)
    _refuses(shape.format("((2, 2), torch.float32)"), rp.pool_regions, tokens[0], masks, 2)
    _refuses(shape.format("((2, 2, 2), torch.int64)"), rp.pool_regions, tokens.long(), masks, 2)
    bad = tokens.clone()
    bad[1, 0, 1] = float("nan")
    _refuses("tokens (shape (2, 2, 2)) holds NaN or Inf values; check the model's outputs or recompute the cached "
             "features", rp.pool_regions, bad, masks, 2)
    _refuses("masks cover a 2x3 token grid (at patch 2) but the tokens are a 3x2 grid; resize the masks to the "
             "tiled image's size", rp.pool_regions, torch.randn(3, 2, 5), torch.ones(1, 4, 6, dtype=torch.bool), 2)
    _refuses("patch must be an int >= 1; got 0", rp.pool_regions, tokens, masks, 0)
    feats, kept = rp.pool_regions(tokens, masks, 2)                                   # [G_h, G_w, C]: no leading dim
    assert feats.shape == (1, 2) and kept.tolist() == [True]
    torch.testing.assert_close(feats[0], tokens.mean(dim=(0, 1)))
    assert not math.isnan(float(feats.sum()))


def test_propagation_refuses_nan_in_the_first_frame_it_only_reads_as_a_source():
    from vitscope.kernels import propagation as prop

    target = torch.randn(1, 2, 2, 3)
    sources = torch.randn(1, 1, 2, 2, 3)
    sources[0, 0, 1, 1, 2] = float("nan")
    labels = torch.ones(1, 1, 2, 2, 2)
    with pytest.raises(ValueError) as err:
        prop.propagation_step(target, sources, labels, topk=1, radius=None)
    assert str(err.value).startswith("source features ")


def test_ground_truth_groups_are_sets_as_in_revisitop():
    from vitscope.kernels import retrieval as ret

    # image 2 is both easy and hard: one positive under "medium"; image 0 both easy and junk: junk once under "hard"
    gnd = [{"easy": [0, 2], "hard": [2, 3], "junk": [0, 4]}]
    (pos, junk), = ret.setup_ground_truth(gnd, "medium", 6)
    assert pos.tolist() == [0, 2, 3] and junk.tolist() == [0, 4]
    (pos, junk), = ret.setup_ground_truth(gnd, "hard", 6)
    assert pos.tolist() == [2, 3] and junk.tolist() == [0, 2, 4]

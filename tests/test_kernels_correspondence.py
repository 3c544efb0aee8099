"""Keypoint correspondence kernels (TM 6.2): letterbox geometry by hand, matching against a float64 NumPy
transcription of the protocol, a known shift that must give PCK 1, PCK and the category mean by hand."""
import numpy as np
import pytest
import torch

from vitscope.kernels import correspondence as kc


def test_letterbox_geometry_by_hand():
    land = kc.letterbox_geometry(50, 100, 64)                   # landscape: width is the long side
    assert (land.scale, land.new_h, land.new_w, land.pad_top, land.pad_left) == (0.64, 32, 64, 16, 0)
    port = kc.letterbox_geometry(100, 75, 224)                  # portrait: 75 * 2.24 = 168, (224 - 168) // 2 = 28
    assert (port.new_h, port.new_w, port.pad_top, port.pad_left) == (224, 168, 0, 28)
    odd = kc.letterbox_geometry(91, 73, 64)                     # 64 * 73 / 91 = 51.34 -> 51, (64 - 51) // 2 = 6
    assert (odd.new_w, odd.pad_left, odd.pad_top) == (51, 6, 0)
    pts = kc.letterbox_points(torch.tensor([[10.0, 20.0]]), land)
    assert pts.tolist() == [[6.4, 20 * 0.64 + 16]]
    assert kc.letterbox_bbox([0, 0, 100, 50], land).tolist() == [0.0, 16.0, 64.0, 48.0]
    with pytest.raises(ValueError, match="size must be an int"):
        kc.letterbox_geometry(10, 10, 0)


def _upsample_reference(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling with half-pixel centres (align_corners=False), written out: [C, h, w] -> [C, S, S]."""
    c, h, w = x.shape

    def taps(n_in):
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo
    y0, y1, fy = taps(h)
    x0, x1, fx = taps(w)
    rows = x[:, y0] * (1 - fy)[None, :, None] + x[:, y1] * fy[None, :, None]          # [C, S, w]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


def _match_reference(src, trg, kps, size, similarity):
    """The protocol in float64 NumPy: unit tokens, upsample, (re-normalise), argmax."""
    def unit(x):
        return x / np.linalg.norm(x, axis=0, keepdims=True)
    s, t = _upsample_reference(unit(src), size), _upsample_reference(unit(trg), size).reshape(src.shape[0], -1)
    if similarity == "cosine":
        t = unit(t)
    out = []
    for x, y in np.clip(np.rint(kps), 0, size - 1).astype(int):
        q = s[:, y, x]
        if similarity == "cosine":
            q = q / np.linalg.norm(q)
        best = int(np.argmax(q @ t))
        out.append((best % size, best // size))
    return np.array(out)


@pytest.mark.parametrize("similarity", kc.SIMILARITIES)
def test_matching_equals_a_float64_numpy_reference(similarity):
    rng = np.random.default_rng(0)
    src, trg = rng.normal(size=(6, 4, 5)), rng.normal(size=(6, 4, 5))       # non-square grid
    kps = rng.uniform(0, 19, size=(12, 2))
    got = kc.nearest_neighbour_keypoints(torch.from_numpy(src), torch.from_numpy(trg), torch.from_numpy(kps),
                                         size=20, similarity=similarity)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), _match_reference(src, trg, kps, 20, similarity))


@pytest.mark.parametrize("similarity", kc.SIMILARITIES)
def test_a_target_shifted_by_whole_tokens_gives_pck_one(similarity):
    gen = torch.Generator().manual_seed(1)
    grid, patch, shift = 12, 8, (3, 2)                          # target = source moved 3 tokens right, 2 down
    src = torch.randn(32, grid, grid, generator=gen)
    trg = torch.randn(32, grid, grid, generator=gen)
    trg[:, shift[1]:, shift[0]:] = src[:, :grid - shift[1], :grid - shift[0]]
    size = grid * patch
    kps = torch.tensor([[20.0, 13.0], [35.0, 40.0], [50.0, 22.0], [44.0, 57.0]])   # away from the borders
    gt = kps + torch.tensor([shift[0] * patch, shift[1] * patch], dtype=torch.float32)
    pred = kc.nearest_neighbour_keypoints(src, trg, kps, size=size, similarity=similarity)
    if similarity == "cosine":                                  # the identical upsampled vector is found exactly
        assert pred.tolist() == gt.long().tolist()
    bbox = [0, 0, 60, 60]                                       # α = 0.1 -> 6 pixels
    assert kc.pck(pred, gt, bbox, alphas=[0.1]).tolist() == [1.0]
    # an unrelated target is not matched as well (the test can fail)
    other = torch.randn(32, grid, grid, generator=gen)
    miss = kc.nearest_neighbour_keypoints(src, other, kps, size=size, similarity=similarity)
    assert kc.pck(miss, gt, bbox, alphas=[0.1]).item() < 1.0


def test_keypoint_hits_and_pck_by_hand():
    pred = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    gt = torch.zeros(3, 2)
    bbox = [10, 5, 60, 25]                                      # w 50, h 20: threshold α · 50
    hits = kc.keypoint_hits(pred, gt, bbox, alphas=(0.1, 0.05, 0.2))
    assert hits.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert kc.pck(pred, gt, bbox, alphas=(0.1,)).tolist() == pytest.approx([2 / 3])
    with pytest.raises(ValueError, match="bbox"):
        kc.keypoint_hits(pred, gt, [10, 5, 0, 25])
    with pytest.raises(ValueError, match="pred .* and gt"):
        kc.keypoint_hits(pred[:2], gt, bbox)
    with pytest.raises(ValueError, match="alphas"):
        kc.keypoint_hits(pred, gt, bbox, alphas=(0.0,))


def test_category_mean_pools_keypoints_within_a_category_then_averages_categories():
    correct, total, cats = [1, 2, 0], [2, 2, 4], ["a", "a", "b"]
    # category a: 3 of 4 keypoints, category b: 0 of 4 -> (0.75 + 0) / 2; the mean of per-pair PCKs would be 0.5
    assert kc.category_mean(correct, total, cats) == pytest.approx(0.375)
    values = kc.pair_values(correct, total, cats)
    assert values.dtype == torch.float64 and float(values.mean()) == pytest.approx(0.375)
    with pytest.raises(ValueError, match="0 <= correct <= total"):
        kc.category_mean([3], [2], ["a"])


def test_matching_checks_its_inputs():
    x = torch.randn(4, 3, 3)
    with pytest.raises(ValueError, match=r"src_feats must be a float tensor \[C, h, w\]"):
        kc.nearest_neighbour_keypoints(x[0], x, torch.zeros(1, 2), size=12)
    with pytest.raises(ValueError, match="same number of channels"):
        kc.nearest_neighbour_keypoints(x, x[:2], torch.zeros(1, 2), size=12)
    with pytest.raises(ValueError, match="similarity"):
        kc.nearest_neighbour_keypoints(x, x, torch.zeros(1, 2), size=12, similarity="dot")
    with pytest.raises(ValueError, match=r"src_kps must be \[K, 2\]"):
        kc.nearest_neighbour_keypoints(x, x, torch.zeros(2), size=12)

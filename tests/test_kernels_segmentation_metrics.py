"""J and F as davis2017-evaluation defines them: hand-computed masks, boundaries and F values, and a check of the
boundary match against scipy's binary dilation with scikit-image's disk (an independent implementation)."""
import numpy as np
import pytest
import torch

from vitscope.kernels import segmentation_metrics as sm


def test_region_similarity_by_hand():
    gt = np.zeros((4, 4), bool)
    gt[0, :3] = True                               # 3 pixels
    pred = np.zeros((4, 4), bool)
    pred[0, 1:] = True
    pred[1, 0:2] = True                            # 5 pixels, 2 shared
    assert sm.region_similarity(gt, pred) == pytest.approx(2 / 6)
    assert sm.region_similarity(gt, gt) == 1.0
    assert sm.region_similarity(gt, ~gt) == 0.0
    assert sm.region_similarity(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0      # both empty


def test_seg2bmap_by_hand():
    seg = np.zeros((5, 5), bool)
    seg[1:3, 1:4] = True                           # rows 1-2, columns 1-3
    want = np.zeros((5, 5), bool)
    want[0, 0:4] = True                            # above the top edge: the lower (or lower-right) neighbour differs
    want[1:3, 0] = True                            # left of the left edge
    want[1, 3] = True                              # right column of the mask: its right neighbour differs
    want[2, 1:4] = True                            # bottom row: the lower neighbour differs
    assert torch.equal(sm.seg2bmap(seg), torch.as_tensor(want))
    full = np.ones((4, 4), bool)
    assert not bool(sm.seg2bmap(full).any())       # no boundary inside a full image


def test_tolerance_follows_the_diagonal():
    assert sm.boundary_tolerance((480, 854)) == 8          # ceil(0.008 * 979.7)
    assert sm.boundary_tolerance((96, 96)) == 2            # ceil(1.086)
    assert sm.boundary_tolerance((96, 96), 3) == 3         # >= 1: pixels
    assert torch.equal(sm.disk(1), torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool))


def _half(h, w, row):
    m = np.zeros((h, w), bool)
    m[:row] = True
    return m


def test_boundary_f_hand_case():
    # Annotation: rows 0-9 of a 20 x 20 image (boundary: row 9, 20 px). Prediction: columns 0-9 as the annotation,
    # columns 10-19 down to row 14; its boundary is row 9 cols 0-9, col 9 rows 10-14 and row 14 cols 10-19 (25 px).
    # Tolerance 1 px (a cross): 11 predicted pixels lie near the annotation's boundary (row 9 cols 0-9 and (10, 9)),
    # 11 annotated ones near the prediction's (cols 0-10 of row 9). P = 11/25, R = 11/20, F = 2PR / (P + R) = 22/45.
    gt = _half(20, 20, 10)
    pred = gt.copy()
    pred[10:15, 10:] = True
    assert int(sm.seg2bmap(pred).sum()) == 25
    assert sm.boundary_f_measure(gt, pred, bound_th=1) == pytest.approx(22 / 45)


def test_shift_within_the_tolerance_scores_one_and_far_beyond_below_one():
    h, w = 480, 854                                # tolerance 8 px
    gt = np.zeros((h, w), bool)
    gt[100:300, 200:500] = True
    checks = ((5, lambda f: f == 1.0), (8, lambda f: f == 1.0), (9, lambda f: f < 1.0), (60, lambda f: f < 0.6))
    for shift, check in checks:
        pred = np.roll(gt, shift, axis=1)          # the vertical edges move by `shift` px
        assert check(sm.boundary_f_measure(gt, pred)), shift
    assert sm.boundary_f_measure(gt, np.zeros_like(gt)) == 0.0           # nothing predicted
    assert sm.boundary_f_measure(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_boundary_match_equals_scipy_dilation_with_skimage_disk():
    from scipy.ndimage import binary_dilation
    from skimage.morphology import disk

    rng = np.random.default_rng(0)
    gt = np.zeros((60, 80), bool)
    gt[10:40, 15:50] = True
    pred = gt ^ (rng.random(gt.shape) < 0.02)
    pred[35:55, 40:70] = True
    r = 3
    gb, pb = sm.seg2bmap(gt).numpy(), sm.seg2bmap(pred).numpy()
    precision = (pb & binary_dilation(gb, disk(r))).sum() / pb.sum()
    recall = (gb & binary_dilation(pb, disk(r))).sum() / gb.sum()
    assert sm.boundary_f_measure(gt, pred, bound_th=r) == pytest.approx(2 * precision * recall / (precision + recall))


def test_video_scores_and_summary_skip_first_and_last_frames():
    gt = np.zeros((4, 10, 10), np.uint8)
    gt[:, 2:6, 2:6] = 1
    gt[:, 7:9, 7:9] = 2
    pred = gt.copy()
    pred[1, 7:9, 7:9] = 0                          # object 2 lost in frame 1
    pred[3] = 0                                    # last frame all wrong: skipped by the benchmark
    J, F = sm.video_scores(gt, pred, [1, 2])
    assert J.shape == (2, 4) and J[1, 1] == 0.0 and J[0, 3] == 0.0
    Jm, Fm = sm.object_means(J), sm.object_means(F)
    assert Jm.tolist() == [1.0, 0.5] and Fm.tolist() == [1.0, 0.5]
    assert sm.summarise(Jm, Fm) == {"j": 0.75, "f": 0.75, "jf": 0.75}
    with pytest.raises(ValueError, match="T >= 3"):
        sm.object_means(J[:, :2])


@pytest.mark.reliability("bad input", "J and F reject masks of different sizes")
def test_size_mismatch_is_named():
    with pytest.raises(ValueError, match="same size"):
        sm.region_similarity(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2-D"):
        sm.boundary_f_measure(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))

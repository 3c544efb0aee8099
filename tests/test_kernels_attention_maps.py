"""AAAM and head types (Teaching Matters 4.2), CLS-map statistics (4.1): hand cases, float64 NumPy references,
and attention maps of every head type built by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitscope.kernels import attention_maps as am


def _rows_to_attn(rows: np.ndarray, cls_share: float = 0.0) -> torch.Tensor:
    """Spatial rows ``[B, H, Q, K]`` (each summing to 1) -> attention ``[B, H, 1+Q, 1+K]`` with a CLS token that
    takes ``cls_share`` of every row (the kernels renormalise it away)."""
    B, H, Q, K = rows.shape
    attn = np.zeros((B, H, Q + 1, K + 1))
    attn[:, :, 0, 0] = cls_share
    attn[:, :, 0, 1:] = (1 - cls_share) / K
    attn[:, :, 1:, 0] = cls_share
    attn[:, :, 1:, 1:] = (1 - cls_share) * rows
    return torch.tensor(attn)


def _head(G: int, profile) -> np.ndarray:
    """Rows [G*G, G*G]: each query's attention ``profile(dy, dx)`` over the keys' offsets, renormalised on the grid."""
    y, x = np.divmod(np.arange(G * G), G)
    rows = profile((y[None, :] - y[:, None]).astype(float), (x[None, :] - x[:, None]).astype(float))
    return rows / rows.sum(1, keepdims=True)


def _gauss(cy=0.0, cx=0.0, sy=1.0, sx=1.0):
    return lambda dy, dx: np.exp(-0.5 * (((dy - cy) / sy) ** 2 + ((dx - cx) / sx) ** 2))


HEADS = {
    "strict local": lambda dy, dx: 0.9 * ((dy == 0) & (dx == 0)) + 0.1 / 64,
    "soft local": _gauss(sy=1.0, sx=1.0),
    "axial local": _gauss(sy=0.3, sx=1.5),                                     # a horizontal band
    "offset local": _gauss(cx=1.0, sy=0.5, sx=0.5),                            # one patch to the right
    "global": lambda dy, dx: np.ones_like(dy),
}


def _np_aaam(rows: np.ndarray) -> np.ndarray:
    """Independent float64 reference: loops over images, heads, queries and keys."""
    B, H, Q, _ = rows.shape
    G = round(Q ** 0.5)
    out = np.zeros((H, 2 * G - 1, 2 * G - 1))
    for b in range(B):
        for h in range(H):
            for q in range(Q):
                qy, qx = divmod(q, G)
                for k in range(Q):
                    ky, kx = divmod(k, G)
                    out[h, ky - qy + G - 1, kx - qx + G - 1] += rows[b, h, q, k]
    return out / (B * Q)


def test_every_constructed_head_type_is_named():
    G = 8
    rows = np.stack([_head(G, f) for f in HEADS.values()])[None]        # [1, 5, Q, K]
    maps = am.aaam(_rows_to_attn(rows, cls_share=0.2))
    assert am.classify_heads(maps) == list(HEADS)
    f = am.head_features(maps)
    assert f["offset_x"][3] > am.OFFSET_MIN and abs(float(f["offset_y"][3])) < 1e-9
    assert am.direction(float(f["offset_y"][3]), float(f["offset_x"][3])) == "right"


def test_a_cross_is_axial_and_a_vertical_offset_points_down():
    G = 8
    cross = 0.5 * _head(G, _gauss(sy=0.3, sx=1.5)) + 0.5 * _head(G, _gauss(sy=1.5, sx=0.3))
    below = _head(G, _gauss(cy=1.0, sy=0.5, sx=0.5))
    f = am.head_features(am.aaam(_rows_to_attn(np.stack([cross, below])[None])))
    assert f["anisotropy"][0] < 0.05 and f["cross"][0] >= am.AXIAL_CROSS_MIN        # along both axes, not one
    assert am.classify(f) == ["axial local", "offset local"]
    assert am.direction(float(f["offset_y"][1]), float(f["offset_x"][1])) == "down"


def test_isotropic_blobs_have_zero_cross_and_anisotropy_whatever_their_width():
    G = 8
    for s in (0.4, 0.7, 1.0, 2.0):
        f = am.head_features(am.aaam(_rows_to_attn(_head(G, _gauss(sy=s, sx=s))[None, None])))
        assert float(f["anisotropy"][0]) == pytest.approx(0, abs=1e-12)
        assert float(f["cross"][0]) == pytest.approx(0, abs=1e-9)      # rows and columns independent


def test_aaam_by_hand_on_a_3x3_grid():
    rows = np.zeros((1, 1, 9, 9))
    rows[0, 0, :, 4] = 1.0                  # every query attends to the grid's centre token (1, 1)
    got = am.aaam(_rows_to_attn(rows))[0].numpy()
    expected = np.zeros((5, 5))
    # query (qy, qx) lands at offset (1 - qy, 1 - qx): each of the 9 offsets in [-1, 1]^2 once, weight 1/9
    expected[1:4, 1:4] = 1 / 9
    np.testing.assert_allclose(got, expected, atol=1e-12)
    rows[0, 0] = 0
    rows[0, 0, 0, 8] = 1.0                  # query (0, 0) -> key (2, 2): offset (2, 2), the canvas corner
    rows[0, 0, 1:, 1:] = np.eye(8)          # the other 8 queries attend to themselves
    got = am.aaam(_rows_to_attn(rows))[0].numpy()
    expected = np.zeros((5, 5))
    expected[4, 4], expected[2, 2] = 1 / 9, 8 / 9
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_aaam_is_the_mean_over_images_and_queries_not_batch_size_times_it():
    rng = np.random.default_rng(0)
    B, H, G = 5, 2, 4
    rows = rng.dirichlet(np.ones(G * G), size=(B, H, G * G))
    got = am.aaam(_rows_to_attn(rows, cls_share=0.3))
    np.testing.assert_allclose(got.numpy(), _np_aaam(rows), atol=1e-12)
    assert got.sum((-2, -1)).numpy() == pytest.approx(np.ones(H))       # a mean of distributions sums to 1
    per_image = am.aaam_per_image(_rows_to_attn(rows, 0.3))
    np.testing.assert_allclose(per_image.mean(0).numpy(), got.numpy(), atol=1e-12)


def test_local_moment_is_linear_and_matches_the_features():
    rng = np.random.default_rng(1)
    rows = rng.dirichlet(np.ones(36), size=(4, 3, 36))
    per_image = am.aaam_per_image(_rows_to_attn(rows))
    mean_of_moments = am.local_moment(per_image).mean(0)
    moment_of_mean = am.local_moment(per_image.mean(0))
    np.testing.assert_allclose(mean_of_moments.numpy(), moment_of_mean.numpy(), atol=1e-12)
    f = am.head_features(per_image.mean(0))
    np.testing.assert_allclose(moment_of_mean[:, 1].numpy(), (f["offset_x"] * f["local_mass"]).numpy(), atol=1e-12)


def test_query_maps_and_cls_maps_renormalise_spatial_rows():
    rng = np.random.default_rng(2)
    rows = rng.dirichlet(np.ones(16), size=(2, 3, 16))
    attn = _rows_to_attn(rows, cls_share=0.4)
    q = am.query_maps(attn, [(0, 0), (2, 1)])
    assert q.shape == (2, 3, 2, 4, 4)
    np.testing.assert_allclose(q[:, :, 1].reshape(2, 3, 16).numpy(), rows[:, :, 2 * 4 + 1], atol=1e-12)
    c = am.cls_maps(attn)
    np.testing.assert_allclose(c.numpy(), np.full((2, 3, 4, 4), 1 / 16), atol=1e-12)
    with pytest.raises(ValueError, match="query row"):
        am.query_maps(attn, [(4, 0)])


def test_cls_statistics_by_hand():
    G = 8
    centre = am.central_region(G)
    assert centre.sum() == 16 and bool(centre[2:6, 2:6].all())           # the middle half along each axis
    assert int(am.central_region(14).sum()) == 64
    uniform = torch.full((G, G), 1 / G ** 2)
    assert float(am.mass_on(uniform, centre)) == pytest.approx(0.25)
    assert float(am.coverage(uniform)) == pytest.approx(39 / 64)          # 38 tokens hold 0.594 < 0.6
    point = torch.zeros(G, G)
    point[0, 7] = 1
    assert float(am.coverage(point)) == pytest.approx(1 / 64)
    top = am.top_tokens(torch.arange(64.0).reshape(G, G))
    assert int(top.sum()) == 7 and bool(top.reshape(-1)[-7:].all())


@pytest.mark.reliability("bad input", "AAAM kernels given a non-canvas or pre-softmax logits")
def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="AAAM canvases"):
        am.head_features(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="post-softmax"):
        am.aaam(torch.randn(1, 1, 5, 5))


def test_uniform_aaam_is_the_aaam_of_uniform_attention():
    G = 5
    rows = np.full((1, 1, G * G, G * G), 1 / G ** 2)
    np.testing.assert_allclose(am.aaam(_rows_to_attn(rows))[0].numpy(), am.uniform_aaam(G).numpy(), atol=1e-12)


def test_local_moment_from_rows_equals_the_moment_of_the_canvas():
    rng = np.random.default_rng(3)
    rows = torch.tensor(rng.dirichlet(np.ones(49), size=(2, 3, 49)))
    np.testing.assert_allclose(am.local_moment_rows(rows).numpy(), am.local_moment(am.aaam_canvas(rows)).numpy(),
                               atol=1e-12)


def test_coverage_of_a_map_without_mass_is_nan():
    # an all-zero map (e.g. an attribution that ReLU zeroed) holds no mass; it used to give (N+1)/N
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 1 / 16)])
    got = am.coverage(maps, 1.0)
    assert torch.isnan(got[0]) and float(got[1]) == 1.0

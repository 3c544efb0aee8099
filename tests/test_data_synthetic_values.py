"""vitscope.data.synthetic, value by value (issue 17: mutants of _shape_mask, _part_mask, _crop, _soften,
sample_scene and render_scene survived).

Shapes and part patterns: areas on a fine grid against their closed forms, and points on and next to each boundary.
Draws: a recording stand-in for the rng pins the ranges each nuisance variable is drawn from (only the call
arguments show a range exactly). Pixels: with constant photographs, every rendered pixel is computed by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from vitscope.data import synthetic
from vitscope.data.synthetic import (
    BACKGROUNDS,
    RADIUS_RANGE,
    SceneSpec,
    _crop,
    _part_mask,
    _shape_mask,
    _soften,
    render_scene,
    sample_scene,
    scene_rng,
)

# ----------------------------------------------------------------------------------------------- shapes
_N = 1201
_G = np.linspace(-1.2, 1.2, _N)
_U, _V = np.meshgrid(_G, _G, indexing="xy")
_CELL = (_G[1] - _G[0]) ** 2


def _lens(R, r, d):
    """Area of the intersection of two discs (radii R, r, centres d apart)."""
    return (r * r * math.acos((d * d + r * r - R * R) / (2 * d * r))
            + R * R * math.acos((d * d + R * R - r * r) / (2 * d * R))
            - 0.5 * math.sqrt((-d + r + R) * (d + r - R) * (d - r + R) * (d + r + R)))


def _polygon_area(n):
    return n / 2 * math.sin(2 * math.pi / n)       # regular n-gon inscribed in the unit circle


SHAPE_AREAS = {
    "circle": math.pi, "square": 1.56 ** 2, "triangle": _polygon_area(3), "pentagon": _polygon_area(5),
    "hexagon": _polygon_area(6),
    # r(t) = 0.55 + 0.45 cos^2(5t): area = 1/2 int r^2 = pi (0.55^2 + 0.55 * 0.45 + 0.45^2 * 3/8)
    "star": math.pi * (0.55 ** 2 + 0.55 * 0.45 + 0.45 ** 2 * 3 / 8),
    "cross": 2 * (0.66 * 2.0) - 0.66 ** 2, "ring": math.pi * (1 - 0.55 ** 2),
    "crescent": math.pi - _lens(1.0, 0.75, 0.45), "diamond": 0.7 * 2 * 1.0 * 2 / 2,
}


@pytest.mark.parametrize("shape", synthetic.SHAPES)
def test_shape_areas_match_their_closed_forms(shape):
    area = _shape_mask(shape, _U, _V).sum() * _CELL
    assert area == pytest.approx(SHAPE_AREAS[shape], rel=0.006)


@pytest.mark.parametrize("shape, inside, outside", [
    ("circle", [(1.0, 0.0), (0.0, -1.0), (0.6, 0.8)], [(0.72, 0.72), (1.001, 0.0)]),
    ("square", [(0.78, 0.78), (-0.78, 0.0), (0.0, -0.78)], [(0.781, 0.0), (0.0, 0.79)]),
    # polygons: a vertex on +u, an edge midpoint at cos(pi/n) in the direction pi/n
    ("triangle", [(0.99, 0.0), (-0.5, 0.0), (-0.49, 0.84)], [(1.01, 0.0), (-0.51, 0.0), (0.0, 0.9)]),
    ("pentagon", [(0.99, 0.0), (0.80 * math.cos(math.pi / 5), 0.80 * math.sin(math.pi / 5))],
     [(1.01, 0.0), (0.82 * math.cos(math.pi / 5), 0.82 * math.sin(math.pi / 5))]),
    ("hexagon", [(0.99, 0.0), (0.0, 0.866)], [(0.0, 0.87), (-1.01, 0.0)]),
    ("star", [(0.99, 0.0), (0.55 * math.cos(math.pi / 10), 0.55 * math.sin(math.pi / 10))],
     [(1.01, 0.0), (0.56 * math.cos(math.pi / 10), 0.56 * math.sin(math.pi / 10)), (0.0, 1.01)]),
    ("cross", [(0.33, 1.0), (1.0, -0.33), (0.0, 0.0)], [(0.34, 0.34), (1.01, 0.0), (0.0, -1.01)]),
    ("ring", [(0.55, 0.0), (1.0, 0.0), (0.0, -0.7)], [(0.54, 0.0), (0.0, 0.0), (1.01, 0.0)]),
    # a disc minus a disc of radius 0.75 centred at u = 0.45: the crescent opens towards +u
    ("crescent", [(-1.0, 0.0), (-0.3, 0.0), (0.3, 0.9), (0.45, -0.75 - 1e-9)],
     [(-0.29, 0.0), (0.5, 0.0), (0.9, 0.0), (0.45, 0.74)]),
    ("diamond", [(0.0, 1.0), (0.7, 0.0), (-0.35, -0.5), (0.0, -1.0)], [(0.0, 1.001), (0.71, 0.0), (0.36, 0.5)]),
])
def test_shapes_on_and_beside_their_boundaries(shape, inside, outside):
    for points, expected in ((inside, True), (outside, False)):
        u, v = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        assert _shape_mask(shape, u, v).tolist() == [expected] * len(points), (shape, points)


# ----------------------------------------------------------------------------------------------- part patterns
_S = np.linspace(-1, 1, 2001)[:-1] + 0.0005        # cell centres of a 2000 x 2000 grid over [-1, 1]^2
_PU, _PV = np.meshgrid(_S, _S, indexing="xy")


@pytest.mark.parametrize("pattern, share, centroid", [
    ("plain", 0.0, None),
    ("stripes", 0.5, (0.0, 1 / 6)),           # bands centred at v = -1/2, 1/6, 5/6, one third wide each
    ("dots", math.pi * 0.22 ** 2, (0.0, 0.0)),
    ("eye", math.pi * 0.32 ** 2 / 4, (-0.1, -0.1)),
    ("cap", 0.65 / 2, (0.0, -0.675)),
])
def test_part_patterns_cover_their_share_around_their_centre(pattern, share, centroid):
    mask = _part_mask(pattern, _PU, _PV)
    assert mask.dtype == bool and mask.shape == _PU.shape
    assert mask.mean() == pytest.approx(share, abs=2e-3)
    if centroid is not None:
        assert (_PU[mask].mean(), _PV[mask].mean()) == pytest.approx(centroid, abs=2e-3)


@pytest.mark.parametrize("pattern, inside, outside", [
    # stripes: the bands v in [-2/3, -1/3), [0, 1/3), [2/3, 1)
    ("stripes", [(0.0, -0.6), (0.5, 0.0), (0.0, 0.2), (0.9, 0.7)], [(0.0, -0.7), (0.0, -0.2), (0.0, 0.4), (0.0, 1.0)]),
    # dots: centres where u * 2.5 and v * 2.5 are half-integers, radius 0.22 / 2.5
    ("dots", [(0.2, 0.2), (0.2, 0.6), (-0.2, 0.6), (0.6, -0.6), (0.2 + 0.087, 0.2)],
     [(0.0, 0.0), (0.2, 0.4), (0.2 + 0.089, 0.2), (0.4, 0.6)]),
    ("eye", [(-0.1, -0.1), (-0.4, -0.1), (0.2, -0.1), (-0.1, 0.22)], [(-0.43, -0.1), (0.23, -0.1), (-0.1, 0.23)]),
    ("cap", [(0.0, -0.35), (0.9, -1.0)], [(0.0, -0.349), (0.0, 0.5)]),
])
def test_part_patterns_on_and_beside_their_boundaries(pattern, inside, outside):
    for points, expected in ((inside, True), (outside, False)):
        u, v = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        assert _part_mask(pattern, u, v).tolist() == [expected] * len(points), (pattern, points)


def test_unknown_shape_and_pattern_are_named():
    z = np.zeros(2)
    with pytest.raises(ValueError) as err:
        _shape_mask("blob", z, z)
    assert str(err.value) == "unknown shape 'blob'"
    with pytest.raises(ValueError) as err:
        _part_mask("zigzag", z, z)
    assert str(err.value) == "unknown pattern 'zigzag'"


# ----------------------------------------------------------------------------------------------- draws
class _Recorder:
    """An rng stand-in answering ``integers(low, high)`` with ``pick(low, high)`` and recording the calls."""

    def __init__(self, pick):
        self.calls, self._pick = [], pick

    def integers(self, low, high=None, size=None):
        self.calls.append((low, high, size))
        return self._pick(low, high)


@pytest.mark.parametrize("pick, side, y0, x0, calls", [
    (lambda lo, hi: hi - 1, 30, 0, 15, [(10, 31, None), (0, 1, None), (0, 16, None)]),   # the largest crop, far right
    (lambda lo, hi: lo, 10, 0, 0, [(10, 31, None), (0, 21, None), (0, 36, None)]),        # the smallest, top left
    (lambda lo, hi: {31: 12, 19: 18, 34: 33}[hi], 12, 18, 33, [(10, 31, None), (0, 19, None), (0, 34, None)]),
])
def test_crop_draws_side_and_corner_from_their_ranges_and_samples_nearest(pick, side, y0, x0, calls):
    photo = np.arange(30 * 45 * 3, dtype=np.float64).reshape(30, 45, 3)
    rng = _Recorder(pick)
    out = _crop(photo, 7, rng)
    assert rng.calls == calls
    idx = [k * side // 7 for k in range(7)]                     # nearest neighbour: floor(k * side / size)
    expected = np.array([[photo[y0 + i, x0 + j] for j in idx] for i in idx])
    np.testing.assert_array_equal(out, expected)


def test_soften_keeps_each_channels_mean_colour_and_scales_contrast_around_it():
    flat = np.ones((24, 24, 3)) * np.array([0.1, 0.5, 0.8])
    np.testing.assert_allclose(_soften(flat, 24), flat, atol=1e-12)   # a flat colour stays as it is, per channel
    image = np.random.default_rng(0).random((48, 48, 3))
    blurred = np.stack([gaussian_filter(image[..., c], sigma=1.0, mode="reflect") for c in range(3)], axis=-1)
    mean = blurred.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(_soften(image, 48), mean + 0.6 * (blurred - mean), atol=1e-12)   # sigma = 48/48


class _Spy:
    """A real Generator whose every draw is recorded as ``(method, args, kwargs, result)``."""

    def __init__(self, rng):
        self._rng, self.calls = rng, []

    def __getattr__(self, name):
        method = getattr(self._rng, name)

        def record(*args, **kwargs):
            result = method(*args, **kwargs)
            self.calls.append((name, args, kwargs, result))
            return result
        return record


@pytest.mark.parametrize("label, index", [(0, 0), (12, 3), (49, 7)])
def test_sample_scene_draws_each_nuisance_from_its_range(label, index):
    rng = _Spy(scene_rng(5, label, index))
    spec = sample_scene(label, rng)
    assert [(name, args, kwargs) for name, args, kwargs, _ in rng.calls][:2] == [
        ("uniform", RADIUS_RANGE, {}), ("integers", (30, 226), {"size": 3})]
    (_, _, _, radius), (_, _, _, body), (_, a3, k3, kick), (_, a4, k4, sign), *rest = rng.calls
    assert (a3, k3, a4, k4) == ((90, 166), {"size": 3}, ([-1, 1],), {"size": 3})
    assert [(name, args, kwargs) for name, args, kwargs, _ in rest] == [
        ("uniform", (radius, 1 - radius), {}), ("uniform", (radius, 1 - radius), {}),
        ("uniform", (-np.pi / 6, np.pi / 6), {}), ("integers", (0, 2), {}),
        ("choice", (BACKGROUNDS,), {}), ("choice", (synthetic._TEXTURES,), {})]
    cx, cy, rotation, flip, background, texture = (r[3] for r in rest)
    shape, pattern = synthetic.class_of(label)
    assert spec == SceneSpec(label=label, shape=shape, pattern=pattern, center=(cx, cy), radius=radius,
                             rotation=rotation, flip=bool(flip), body_rgb=tuple(int(c) for c in body),
                             part_rgb=tuple(int((b + k * s) % 256) for b, k, s in zip(body, kick, sign)),
                             background=str(background), texture=str(texture))
    assert type(spec.flip) is bool and all(type(c) is int for c in spec.body_rgb + spec.part_rgb)
    assert type(spec.background) is str and type(spec.texture) is str


def test_sample_scene_draws_cover_their_ranges_and_seeds_repeat():
    specs = [sample_scene(7, scene_rng(0, 7, i)) for i in range(300)]
    assert specs == [sample_scene(7, scene_rng(0, 7, i)) for i in range(300)]
    assert specs[0] != sample_scene(7, scene_rng(1, 7, 0))
    assert {s.flip for s in specs} == {False, True}
    rot = [s.rotation for s in specs]
    assert -np.pi / 6 <= min(rot) < -np.pi / 6 + 0.02 and np.pi / 6 - 0.02 < max(rot) <= np.pi / 6
    signs = {tuple(((p - b) % 256) <= 165 for p, b in zip(s.part_rgb, s.body_rgb)) for s in specs}
    assert len(signs) > 2                                          # each channel is pushed up or down on its own


# ----------------------------------------------------------------------------------------------- rendering
def _pixel(x: float) -> int:
    return int(math.floor(x * 255 + 0.5))


def test_render_scene_pixels_by_hand(monkeypatch):
    photos = {"bg": np.ones((40, 60, 3)) * np.array([0.5, 0.2, 0.9]),
              "tex": np.ones((50, 50, 3)) * np.array([0.25, 0.9, 0.6]),
              "bright": np.ones((50, 50, 3))}
    monkeypatch.setattr(synthetic, "_photo", lambda name: photos[name])
    size, (cx, cy), r, theta = 48, (0.45, 0.55), 0.35, math.pi / 6
    for flip in (False, True):
        spec = SceneSpec(label=0, shape="crescent", pattern="cap", center=(cx, cy), radius=r, rotation=theta,
                         flip=flip, body_rgb=(200, 40, 10), part_rgb=(10, 250, 100), background="bg", texture="tex")
        image, mask = render_scene(spec, size, np.random.default_rng(0))
        # object coordinates of each pixel centre, float64, written out independently of the module
        ys, xs = (np.indices((size, size)) + 0.5) / size
        dx, dy = (xs - cx) / r, (ys - cy) / r
        dx = -dx if flip else dx
        u = math.cos(theta) * dx + math.sin(theta) * dy
        v = -math.sin(theta) * dx + math.cos(theta) * dy
        body = (np.hypot(u, v) <= 1.0) & (np.hypot(u - 0.45, v) >= 0.75)
        part = body & (v <= -0.35)
        np.testing.assert_array_equal(mask, body.astype(np.uint8) + part)
        assert 0 < part.sum() < body.sum()
        shade = 0.8 + 0.4 * 0.25                           # the texture's first channel shades the object
        expected = np.where(part[..., None], [_pixel(c / 255 * shade) for c in (10, 250, 100)],
                            [_pixel(c / 255 * shade) for c in (200, 40, 10)])
        expected = np.where(body[..., None], expected, [_pixel(c) for c in (0.5, 0.2, 0.9)])
        np.testing.assert_array_equal(image, expected)
        assert image.dtype == np.uint8 and image[~body][0].tolist() == [128, 51, 230]
    bright = SceneSpec(label=0, shape="circle", pattern="plain", center=(0.5, 0.5), radius=0.4, rotation=0.0,
                       flip=False, body_rgb=(250, 100, 0), part_rgb=(0, 0, 0), background="bg", texture="bright")
    image, mask = render_scene(bright, 16, np.random.default_rng(0))
    assert image[8, 8].tolist() == [255, _pixel(100 / 255 * 1.2), 0]   # 250 * 1.2 is clipped to white
    assert set(np.unique(mask)) == {0, 1}


def test_render_scene_is_a_function_of_spec_and_rng_state():
    spec = sample_scene(23, scene_rng(0, 23, 1))
    a = render_scene(spec, 40, scene_rng(9, 9, 9))
    b = render_scene(spec, 40, scene_rng(9, 9, 9))
    c = render_scene(spec, 40, scene_rng(9, 9, 8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(a[1], c[1]) and not np.array_equal(a[0], c[0])   # same object, another background crop

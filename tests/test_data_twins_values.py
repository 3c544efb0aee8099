"""Values of the synthetic twin writers' building blocks (vitscope.data.twins.*): the occluder covers the block the
arguments say, a query box pads the landmark's pixels, hard/junk views draw their geometry from the documented ranges,
keypoints land where the renderer draws the object, DAVIS objects move along their path.

Where a writer draws from an rng, a recording stand-in for the rng (``_Recorder``) pins which ranges are drawn
from: a range is what the module docstrings promise, and only the call arguments show it exactly."""
import numpy as np
import pytest
from PIL import Image

from vitscope.data.synthetic import SceneSpec, render_scene, sample_scene, scene_rng
from vitscope.data.twins import davis as tdavis
from vitscope.data.twins import revisitop as trev
from vitscope.data.twins import spair as tspair


class _Recorder:
    """An rng stand-in: records ``integers``/``uniform``/``normal`` calls with numpy's defaults filled in and answers
    from ``answers`` (a callable per method) so a test chooses the drawn values."""

    def __init__(self, integers=None, uniform=None, normal=None):
        self.calls = []
        self._answers = {"integers": integers or (lambda low, high: low),
                         "uniform": uniform or (lambda low, high: low),
                         "normal": normal}

    def integers(self, low, high=None, size=None):
        low, high = (0, low) if high is None else (low, high)
        self.calls.append(("integers", low, high, size))
        return self._answers["integers"](low, high)

    def uniform(self, low=0.0, high=1.0, size=None):
        self.calls.append(("uniform", low, high, size))
        return self._answers["uniform"](low, high)

    def normal(self, loc=0.0, scale=1.0, size=None):
        self.calls.append(("normal", loc, scale, size))
        return self._answers["normal"](loc, scale, size)


class _Spy:
    """A real Generator whose ``uniform`` calls are recorded (the values drawn stay the real ones)."""

    def __init__(self, rng):
        self._rng, self.uniform_calls = rng, []

    def uniform(self, low=0.0, high=1.0, size=None):
        value = self._rng.uniform(low, high, size)
        self.uniform_calls.append((low, high, value))
        return value

    def __getattr__(self, name):
        return getattr(self._rng, name)


# --- revisitop twin: the occluder ------------------------------------------------------------------------------


def _block_mask():
    mask = np.zeros((16, 20), bool)
    mask[2:10, 3:13] = True              # rows 2..9 (8 tall), cols 3..12 (10 wide)
    return mask


def test_occlude_draws_a_block_of_the_share_inside_the_objects_box():
    image = np.full((16, 20, 3), 7, np.uint8)
    noise = np.zeros((4, 5, 1))
    noise[0, 0, 0], noise[3, 4, 0] = 30.4, -50.6        # patch values 100 + noise, truncated to uint8
    rng = _Recorder(integers=lambda low, high: {2: 3, 3: 5, 60: 100}[low], normal=lambda loc, scale, size: noise)
    out = trev._occlude(image, _block_mask(), 0.25, rng)
    # h = round(8 * 0.5) = 4, w = round(10 * 0.5) = 5: top in [2, 10 - 4], left in [3, 13 - 5] (numpy's high excluded)
    assert rng.calls == [("integers", 2, 7, None), ("integers", 3, 9, None), ("integers", 60, 200, None),
                         ("normal", 0, 12, (4, 5, 1))]
    expected = image.copy()
    expected[3:7, 5:10] = 100
    expected[3, 5], expected[6, 9] = 130, 49
    np.testing.assert_array_equal(out, expected)
    assert (image == 7).all()                                   # the input is not changed in place


@pytest.mark.parametrize("value, pixel", [(-1000.0, 0), (0.7, 0), (300.0, 255), (255.9, 255)])
def test_occlude_clips_the_patch_to_the_uint8_range(value, pixel):
    rng = _Recorder(integers=lambda low, high: 0 if low != 60 else 0,
                    normal=lambda loc, scale, size: np.full(size, value))
    out = trev._occlude(np.full((16, 20, 3), 7, np.uint8), _block_mask(), 0.25, rng)
    assert (out[0:4, 0:5] == pixel).all() and out.dtype == np.uint8


def test_occlude_keeps_at_least_one_pixel_and_skips_an_empty_mask():
    thin = np.zeros((6, 6), bool)
    thin[3, 1:5] = True                 # 1 tall, 4 wide: round(1 * 0.5) = 0 rows -> kept at 1
    rng = _Recorder(integers=lambda low, high: low, normal=lambda loc, scale, size: np.zeros(size))
    trev._occlude(np.zeros((6, 6, 3), np.uint8), thin, 0.25, rng)
    assert rng.calls[-1] == ("normal", 0, 12, (1, 2, 1))
    dot = np.zeros((6, 6), bool)
    dot[4, 2] = True                    # a 1-pixel object: both sides kept at 1, and it is covered
    out = trev._occlude(np.zeros((6, 6, 3), np.uint8), dot, 0.25, _Recorder(
        integers=lambda low, high: 150 if low == 60 else low, normal=lambda loc, scale, size: np.zeros(size)))
    assert out[4, 2].tolist() == [150, 150, 150] and out.sum() == 450
    image = np.arange(108, dtype=np.uint8).reshape(6, 6, 3)
    untouched = trev._occlude(image, np.zeros((6, 6), bool), 0.4, _Recorder())
    np.testing.assert_array_equal(untouched, image)


# --- revisitop twin: the query box -------------------------------------------------------------------------------


@pytest.mark.parametrize("pixels, box", [
    ([(5, 7)], [5.0, 3.0, 10.0, 8.0]),                    # (row, col): x from col 7 - 2 to 7 + 1 + 2
    ([(0, 0)], [0.0, 0.0, 3.0, 3.0]),                      # clipped at the top-left corner
    ([(19, 19)], [17.0, 17.0, 20.0, 20.0]),                # clipped at the side
    ([(4, 6), (11, 9), (8, 15)], [4.0, 2.0, 18.0, 14.0]),  # the tight box of several pixels, padded
    ([(1, 1)], [0.0, 0.0, 4.0, 4.0]),
])
def test_query_box_is_the_masks_box_padded_by_the_margin_and_clipped(pixels, box):
    assert trev.BOX_MARGIN == 2
    mask = np.zeros((20, 20), bool)
    for r, c in pixels:
        mask[r, c] = True
    assert trev._box(mask) == box


def test_query_box_clips_x_at_the_width_and_y_at_the_height():
    mask = np.zeros((10, 30), bool)           # wider than tall: the two sides clip at different places
    mask[9, 29] = True
    assert trev._box(mask) == [27.0, 7.0, 30.0, 10.0]
    assert trev._box(mask.T.copy()) == [7.0, 27.0, 10.0, 30.0]


# --- revisitop twin: the views -----------------------------------------------------------------------------------


def _capture_render(monkeypatch, module):
    """Replace ``module.render_scene`` by one that records its spec and returns a mask with values 0, 1 and 2."""
    seen = {}

    def fake(spec, size, rng):
        seen["spec"] = spec
        mask = np.zeros((size, size), np.uint8)
        mask[2:6, 2:6], mask[3:5, 3:5] = 1, 2
        return np.zeros((size, size, 3), np.uint8), mask
    monkeypatch.setattr(module, "render_scene", fake)
    return seen


@pytest.mark.parametrize("kind, radius, share", [("hard", trev.HARD_RADIUS, trev.HARD_OCCLUSION),
                                                 ("junk", trev.JUNK_RADIUS, trev.JUNK_OCCLUSION)])
def test_hard_and_junk_views_draw_size_rotation_position_from_their_ranges(monkeypatch, kind, radius, share):
    assert (trev.HARD_RADIUS, trev.JUNK_RADIUS, trev.HARD_OCCLUSION, trev.JUNK_OCCLUSION) == (
        (0.16, 0.22), (0.08, 0.12), 0.4, 0.7)
    seen = _capture_render(monkeypatch, trev)
    occluded = {}
    monkeypatch.setattr(trev, "_occlude", lambda image, mask, s, rng: occluded.update(mask=mask, share=s) or image)
    n_sample = len(_spy_sample(11, 5))
    identity = {"body_rgb": (1, 2, 3), "part_rgb": (4, 5, 6), "texture": "moon"}
    spy = _Spy(np.random.default_rng(5))
    trev._draw(11, identity, kind, 16, spy)
    drawn = spy.uniform_calls[n_sample:]
    r = drawn[0][2]
    assert [c[:2] for c in drawn] == [radius, (-np.pi, np.pi), (r, 1 - r), (r, 1 - r)]
    spec = seen["spec"]
    assert spec.radius == r and spec.rotation == drawn[1][2] and spec.center == (drawn[2][2], drawn[3][2])
    assert (spec.body_rgb, spec.part_rgb, spec.texture) == ((1, 2, 3), (4, 5, 6), "moon")
    assert occluded["share"] == share
    expected = np.zeros((16, 16), bool)
    expected[2:6, 2:6] = True                               # body and part pixels: the whole object
    np.testing.assert_array_equal(occluded["mask"], expected)


def _spy_sample(label, seed):
    spy = _Spy(np.random.default_rng(seed))
    sample_scene(label, spy)
    return spy.uniform_calls


@pytest.mark.parametrize("kind", ["easy", "query", "distractor"])
def test_easy_views_are_the_generators_scenes_unoccluded(monkeypatch, kind):
    seen = _capture_render(monkeypatch, trev)
    monkeypatch.setattr(trev, "_occlude", lambda *a: pytest.fail("an easy view is never occluded"))
    trev._draw(11, None, kind, 16, np.random.default_rng(5))
    assert seen["spec"] == sample_scene(11, np.random.default_rng(5))
    identity = {"body_rgb": (1, 2, 3), "part_rgb": (4, 5, 6), "texture": "moon"}
    trev._draw(11, identity, kind, 16, np.random.default_rng(5))
    assert seen["spec"].body_rgb == (1, 2, 3) and seen["spec"].texture == "moon"


# --- SPair twin ------------------------------------------------------------------------------------------------


def test_to_pixels_maps_object_coordinates_to_pixel_indices():
    spec = SceneSpec(label=0, shape="square", pattern="eye", center=(0.5, 0.25), radius=0.25, rotation=0.0,
                     flip=False, body_rgb=(0, 0, 0), part_rgb=(0, 0, 0), background="coffee", texture="moon")
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # pixel index = coordinate * size - 0.5 (pixel centres sit at (index + 0.5) / size)
    np.testing.assert_allclose(tspair.to_pixels(spec, uv, 40), [[19.5, 9.5], [29.5, 9.5], [19.5, 19.5]])
    turned = SceneSpec(**{**spec.__dict__, "rotation": np.pi / 2, "flip": True})
    # u = (1, 0) turned a quarter: dx = 0, dy = 1; v = (0, 1): dx = -1, flipped to +1
    np.testing.assert_allclose(tspair.to_pixels(turned, uv, 40), [[19.5, 9.5], [19.5, 19.5], [29.5, 9.5]],
                               atol=1e-12)


def test_keypoints_land_on_the_rendered_object():
    """The centre keypoint (0, 0) of an object is a body pixel of the render; the eye's centre is a part pixel."""
    for seed in range(6):
        spec = sample_scene(tspair._label("square", "eye"), np.random.default_rng(seed))
        _, mask = render_scene(spec, 64, np.random.default_rng(0))
        (cx, cy), (ex, ey) = np.rint(tspair.to_pixels(spec, tspair.object_keypoints("square", "eye")[-2:], 64))
        assert mask[int(cy), int(cx)] >= 1 and mask[int(ey), int(ex)] == 2


def test_object_keypoints_values_and_unknown_shape_message():
    np.testing.assert_array_equal(tspair.object_keypoints("cross", "cap"),
                                  [[1, 0], [0, 1], [-1, 0], [0, -1], [0, 0]])
    assert tspair.object_keypoints("cross", "eye")[-1].tolist() == [-0.1, -0.1]
    with pytest.raises(ValueError) as err:
        tspair.object_keypoints("circle", "eye")
    assert str(err.value) == ("shape 'circle' has no keypoints defined; choose from "
                              "['cross', 'diamond', 'pentagon', 'square', 'triangle']")


def _render_many(sides, n=40, label=None):
    label = tspair._label("square", "eye") if label is None else label
    uv = tspair.object_keypoints("square", "eye")
    for index in range(n):
        rng = scene_rng(3, label, index)
        spec = sample_scene(label, rng)
        side = int(rng.integers(sides[0], sides[1] + 1))
        full, _ = render_scene(spec, side, rng)          # the same rng stream as _render's up to the render
        image, kps, box = tspair._render(label, 3, index, sides, uv)
        yield spec, side, full, image, kps, box, uv


def test_render_crops_a_window_of_the_full_render_and_moves_keypoints_with_it():
    shapes, square, landscape, portrait = set(), 0, 0, 0
    for spec, side, full, image, kps, box, uv in _render_many((20, 22)):
        h, w = image.shape[:2]
        assert max(h, w) == side and int(0.75 * side) <= min(h, w)
        shapes.add(side)
        square, landscape, portrait = square + (h == w), landscape + (w > h), portrait + (h > w)
        offsets = [(x0, y0) for y0 in range(side - h + 1) for x0 in range(side - w + 1)
                   if np.array_equal(full[y0:y0 + h, x0:x0 + w], image)]
        assert offsets, "the image is not a window of the render"
        x0, y0 = offsets[0]
        where = tspair.to_pixels(spec, uv, side) - [x0, y0]
        inside = (where[:, 0] >= 0) & (where[:, 0] <= w - 1) & (where[:, 1] >= 0) & (where[:, 1] <= h - 1)
        np.testing.assert_array_equal(np.isnan(kps).any(1), ~inside)
        np.testing.assert_allclose(kps[inside], where[inside])
    assert shapes == {20, 21, 22} and square and landscape and portrait


def test_render_marks_exactly_the_keypoints_outside_the_crop():
    """A dense grid of object points reaches every strip near the crop's edges, where an off-by-one shows."""
    grid = np.stack(np.meshgrid(np.linspace(-3, 3, 121), np.linspace(-3, 3, 121)), -1).reshape(-1, 2)
    label = tspair._label("square", "eye")
    for index in range(6):
        image, kps, _ = tspair._render(label, 3, index, (20, 22), grid)
        rng = scene_rng(3, label, index)
        spec = sample_scene(label, rng)
        side = int(rng.integers(20, 23))
        full, _ = render_scene(spec, side, rng)
        h, w = image.shape[:2]
        x0, y0 = next((x0, y0) for y0 in range(side - h + 1) for x0 in range(side - w + 1)
                      if np.array_equal(full[y0:y0 + h, x0:x0 + w], image))
        where = tspair.to_pixels(spec, grid, side) - [x0, y0]
        inside = (where[:, 0] >= 0) & (where[:, 0] <= w - 1) & (where[:, 1] >= 0) & (where[:, 1] <= h - 1)
        np.testing.assert_array_equal(np.isnan(kps).any(1), ~inside)
        for lo, hi in ((0, 1), (w - 2, w - 1), (w - 1, w + 1)):      # points fell in each strip near an edge
            assert ((where[:, 0] > lo) & (where[:, 0] <= hi)).any()


def test_twin_images_are_saved_at_jpeg_quality_92(tmp_path):
    """Compared by quantisation tables, which the quality alone sets (not the encoder's bytes)."""
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    tspair._save(tmp_path / "a" / "x.jpg", image)
    Image.fromarray(image).save(tmp_path / "ref.jpg", quality=92)
    with Image.open(tmp_path / "a" / "x.jpg") as got, Image.open(tmp_path / "ref.jpg") as ref:
        assert got.quantization == ref.quantization


# --- DAVIS twin ------------------------------------------------------------------------------------------------


def _spec(radius=0.4, rotation=0.3):
    return SceneSpec(label=0, shape="square", pattern="eye", center=(0.5, 0.5), radius=radius, rotation=rotation,
                     flip=False, body_rgb=(0, 0, 0), part_rgb=(0, 0, 0), background="coffee", texture="moon")


def test_path_draws_start_direction_distance_and_turn_from_their_ranges():
    assert (tdavis.RADIUS_SCALE, tdavis.TRAVEL, tdavis.TURN) == (0.55, (0.15, 0.3), 0.5)
    answers = iter([0.3, 0.5, np.pi / 3, 0.2, -0.25])
    rng = _Recorder(uniform=lambda low, high: next(answers))
    spec, start, end, turn = tdavis._path(_spec(), rng, (0.25, 0.5))
    r = 0.4 * 0.55
    assert [c[1:3] for c in rng.calls] == [(0.25, 0.5), (r, 1 - r), (0, 2 * np.pi), (0.15, 0.3), (-0.5, 0.5)]
    assert spec == _spec(radius=r) and turn == -0.25
    np.testing.assert_array_equal(start, [0.3, 0.5])
    np.testing.assert_allclose(end, [0.3 + 0.2 * 0.5, 0.5 + 0.2 * np.sqrt(3) / 2])
    rng = _Recorder(uniform=lambda low, high: low)       # start at the range's low end: the x range clipped to radius
    tdavis._path(_spec(), rng, (0.0, 1.0))
    assert rng.calls[0][1:3] == (r, 1 - r)


@pytest.mark.parametrize("angle, dist, expected", [(np.pi, 0.3, (0.22, 0.5)), (0.0, 0.6, (0.78, 0.5)),
                                                   (np.pi / 2, 0.6, (0.3, 0.78)), (-np.pi / 2, 0.6, (0.3, 0.22)),
                                                   (0.0, 0.2, (0.5, 0.5))])
def test_path_end_is_clipped_inside_the_image(angle, dist, expected):
    """From (0.3, 0.5) with radius 0.22: the end stays in [0.22, 0.78] on both axes, unclipped when inside."""
    answers = iter([0.3, 0.5, angle, dist, 0.0])
    _, start, end, _ = tdavis._path(_spec(), _Recorder(uniform=lambda low, high: next(answers)), (0.0, 1.0))
    np.testing.assert_allclose(end, expected, atol=1e-12)


def test_frame_moves_the_object_along_its_path_and_turns_it(monkeypatch):
    seen = _capture_render(monkeypatch, tdavis)
    start, end = np.array([0.2, 0.6]), np.array([0.6, 0.4])
    tdavis._frame(_spec(rotation=0.3), start, end, 0.4, 0.25, 16, None)
    assert seen["spec"].center == pytest.approx((0.3, 0.55)) and seen["spec"].rotation == pytest.approx(0.4)
    assert seen["spec"].radius == 0.4


def test_voc_palette_matches_the_bitget_colour_map_of_any_length():
    """The PASCAL VOC map (VOCdevkit's labelcolormap: bit j of id i goes to bit 7 - j // 3 of channel j % 3);
    ids past 2**18 use the last bits too."""
    n = 2 ** 18 + 2
    palette = tdavis.voc_palette(n)
    ids = np.array([0, 1, 2, 3, 15, 255, 2 ** 18, 2 ** 18 + 1])
    ref = np.zeros((len(ids), 3), np.int64)
    for j in range(24):
        ref[:, j % 3] |= ((ids >> j) & 1) << (7 - j // 3)
    np.testing.assert_array_equal(palette[ids], ref)
    assert palette[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]


def test_render_keeps_keypoints_on_the_crop_edges_inclusive(monkeypatch):
    """Keypoints on every integer pixel of the full render: exactly the w x h of them inside the crop survive, the
    first and last row and column included."""
    def every_pixel(spec, uv, side):
        ys, xs = np.mgrid[0:side, 0:side]
        return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)

    monkeypatch.setattr(tspair, "to_pixels", every_pixel)
    for index in range(4):
        image, kps, _ = tspair._render(0, 3, index, (20, 22), np.zeros((1, 2)))
        h, w = image.shape[:2]
        inside = kps[np.isfinite(kps).all(1)]
        assert len(inside) == w * h
        assert inside[:, 0].min() == 0 and inside[:, 0].max() == w - 1
        assert inside[:, 1].min() == 0 and inside[:, 1].max() == h - 1

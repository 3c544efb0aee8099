"""Every image mode is read as the 8-bit RGB a viewer shows; a broken file is an error naming it, never black."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

from vitscope.data import read_rgb
from vitscope.data.imagefolder import ALPHA_BACKGROUND


def _rgb(path, **kw) -> np.ndarray:
    im = read_rgb(path, **kw)
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


def _over(value, alpha, background=255):
    """Straight alpha over an opaque background, by hand: value * a + background * (1 - a)."""
    return value * alpha / 255 + background * (1 - alpha / 255)


@pytest.mark.reliability("bad input", "16-bit grayscale images (PNG I;16, 32-bit I) are scaled to 8 bits, not "
                                      "clipped to white")
@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, dtype):
    levels = np.array([[0, 257, 1000], [32768, 65535, 514]], dtype=dtype)
    path = tmp_path / ("grey16.png" if dtype == np.uint16 else "grey32.tif")   # PIL writes mode I as TIFF only
    Image.fromarray(levels).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    got = _rgb(path)
    want = np.array([[0, 1, 4], [128, 255, 2]])                 # round(v / 257), by hand
    assert got.shape == (2, 3, 3)
    assert (got == want[..., None]).all()
    assert Image.open(path).convert("RGB").getpixel((2, 0)) == (255, 255, 255)   # what a plain convert gives


@pytest.mark.reliability("bad input", "CMYK JPEG images are converted to RGB")
def test_cmyk_jpeg(tmp_path):
    cmyk = np.zeros((16, 32, 4), dtype=np.uint8)
    cmyk[:, :16] = (0, 255, 255, 0)                             # red
    cmyk[:, 16:] = (0, 0, 0, 128)                               # grey from black ink only
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=100, subsampling=0)
    assert Image.open(path).mode == "CMYK"
    got = _rgb(path)
    # (255 - C)(255 - K) / 255 per channel, by hand: red (255, 0, 0); grey 127
    assert np.abs(got[8, 4] - [255, 0, 0]).max() <= 3
    assert np.abs(got[8, 24] - [127, 127, 127]).max() <= 3


@pytest.mark.reliability("bad input", "palette PNG with a transparent index is composited on the background colour")
def test_palette_png_with_transparency(tmp_path):
    index = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    im = Image.fromarray(index, mode="P")
    im.putpalette([10, 20, 30, 200, 0, 0] + [0] * (256 * 3 - 6))
    path = tmp_path / "palette.png"
    im.save(path, transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    got = _rgb(path)
    assert got[0, 0].tolist() == list(ALPHA_BACKGROUND) == [255, 255, 255]   # not the hidden (10, 20, 30)
    assert got[0, 1].tolist() == [200, 0, 0]
    assert _rgb(path, background=(0, 0, 0))[1, 1].tolist() == [0, 0, 0]


@pytest.mark.reliability("bad input", "LA and RGBA images are alpha-composited on white (or a named background)")
def test_alpha_modes_composite_on_the_background(tmp_path):
    la = np.array([[[100, 0], [100, 255], [100, 128]]], dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    got = _rgb(tmp_path / "la.png")[0, :, 0]
    assert got[0] == 255 and got[1] == 100 and abs(got[2] - _over(100, 128)) <= 1
    rgba = np.array([[[200, 100, 0, 128], [10, 20, 30, 0]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    got = _rgb(tmp_path / "rgba.png", background=(0, 64, 255))
    assert np.abs(got[0, 0] - [_over(200, 128, 0), _over(100, 128, 64), _over(0, 128, 255)]).max() <= 1
    assert got[0, 1].tolist() == [0, 64, 255]


@pytest.mark.reliability("bad input", "an EXIF-rotated JPEG is turned upright as a viewer shows it")
def test_exif_orientation_is_applied(tmp_path):
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20] = (255, 0, 0)                                  # left half red, right half blue as stored
    wide[:, 20:] = (0, 0, 255)
    im = Image.fromarray(wide)
    exif = im.getexif()
    exif[0x0112] = 6                                            # Orientation 6: shown rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif, quality=100, subsampling=0)
    got = read_rgb(path)
    assert got.size == (20, 40)                                 # upright: 20 wide, 40 tall
    a = np.asarray(got).astype(int)
    assert np.abs(a[5, 10] - [255, 0, 0]).max() <= 3            # the stored left (red) is now on top
    assert np.abs(a[35, 10] - [0, 0, 255]).max() <= 3


def test_plain_modes_still_convert(tmp_path):
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8), mode="L").save(tmp_path / "l.png")
    assert _rgb(tmp_path / "l.png").tolist() == [[[0, 0, 0], [255, 255, 255]]]
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "bw.png")
    assert _rgb(tmp_path / "bw.png").tolist() == [[[255, 255, 255], [0, 0, 0]]]


def _truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cut.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.reliability("bad input", "a truncated or corrupt image file: an error naming the file, never a "
                                      "black image")
@pytest.mark.parametrize("kind", ["truncated jpeg", "truncated png", "garbage", "empty"])
def test_broken_files_raise_naming_the_file(tmp_path, kind):
    if kind == "truncated jpeg":
        path = _truncated_jpeg(tmp_path)
    elif kind == "truncated png":
        path = tmp_path / "cut.png"
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path = tmp_path / "broken.jpg"
        path.write_bytes(b"" if kind == "empty" else b"not an image at all" * 10)
    with pytest.raises(OSError, match=f"Cannot read image {path}"):
        read_rgb(path)


def test_truncated_file_is_refused_even_if_another_library_allows_truncation(tmp_path, monkeypatch):
    path = _truncated_jpeg(tmp_path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(OSError, match="Cannot read image"):
        read_rgb(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True              # the caller's setting is restored

"""vitscope.data.imagefolder._to_rgb, value by value (issue 17: a mutant of its 16-bit grey scaling survived).

Wide grey levels are scaled ``round(v / 257)`` and clipped to 0..255, including 32-bit ``I`` images whose levels
lie outside 0..65535."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitscope.data.imagefolder import _to_rgb


def _grey(image: Image.Image) -> list[int]:
    rgb = np.asarray(_to_rgb(image, (255, 255, 255)))
    assert image.size == (rgb.shape[1], rgb.shape[0]) and (rgb == rgb[..., :1]).all()   # grey stays grey
    return rgb[0, :, 0].tolist()


def test_32_bit_grey_is_scaled_and_clipped_to_8_bits():
    levels = np.array([[-70000, -1, 0, 128, 129, 385, 386, 65535, 65536 + 257, 70000, 2 ** 31 - 1]], dtype=np.int32)
    assert _grey(Image.fromarray(levels, mode="I")) == [0, 0, 0, 0, 1, 1, 2, 255, 255, 255, 255]


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2")])
def test_16_bit_grey_rounds_to_the_nearest_8_bit_level(mode, dtype):
    levels = np.array([[0, 128, 129, 257, 385, 386, 32767, 65278, 65535]])
    image = Image.frombytes(mode, (levels.shape[1], 1), levels.astype(dtype).tobytes())
    assert _grey(image) == [0, 0, 1, 1, 1, 2, 127, 254, 255]

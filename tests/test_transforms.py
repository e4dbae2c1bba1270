"""Resize strategies and the exact box transforms they imply."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ssmvlm.data.transforms import RESIZE_STRATEGIES, build_image_transform

SIZES = [(320, 240), (400, 225), (240, 320), (224, 224), (97, 301)]


@pytest.mark.parametrize("strategy", RESIZE_STRATEGIES)
@pytest.mark.parametrize("wh", SIZES)
@pytest.mark.parametrize("target", [224, (160, 256)])
def test_box_round_trip_and_pixel_position(strategy: str, wh: tuple[int, int], target) -> None:
    width, height = wh
    transform = build_image_transform(strategy, target)
    # A bright rectangle in the middle: where it lands in the transformed image is where the box says.
    x1, y1, x2, y2 = width * 0.4, height * 0.4, width * 0.6, height * 0.6
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[round(y1) : round(y2), round(x1) : round(x2)] = 255
    out = np.asarray(transform.apply_pil(Image.fromarray(array)))
    assert out.shape[:2] == transform.size
    box = transform.box_to_model((x1, y1, x2, y2), width, height)
    back = transform.box_from_model(box, width, height)
    assert np.allclose(back, (x1, y1, x2, y2), atol=1e-6)
    ys, xs = np.nonzero(out[..., 0] > 127)
    assert abs(xs.min() - box[0]) < 1.5 and abs(xs.max() + 1 - box[2]) < 1.5
    assert abs(ys.min() - box[1]) < 1.5 and abs(ys.max() + 1 - box[3]) < 1.5


def test_letterbox_pads_with_mean_colour_and_crop_cuts() -> None:
    transform = build_image_transform("letterbox", 224, mean=(0.5, 0.25, 0.0))
    image = Image.new("RGB", (400, 200), (255, 255, 255))
    out = np.asarray(transform.apply_pil(image))
    assert tuple(out[0, 0]) == (127, 63, 0)
    crop = build_image_transform("resize-crop", 224)
    box = crop.box_to_model((0, 0, 50, 50), 400, 200)
    assert box[2] < 0  # an object at the far left edge is cut out by the centre crop


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="unknown resize strategy"):
        build_image_transform("stretch", 224)

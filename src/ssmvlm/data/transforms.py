"""Image transforms shared by every backbone, each with the exact box transform it implies.

Every strategy is an axis-aligned scale plus offset from the original image into the model's frame
(``x_model = sx * x + ox``, ``y_model = sy * y + oy``, in continuous pixel coordinates where pixel ``i``
spans ``[i, i + 1)``), so a box can be mapped into the model's frame and back exactly:

- ``resize-naive``: stretch to the target size, ignoring aspect ratio;
- ``resize-crop``: scale so the shorter side fits, then centre-crop (objects near the long edges can be cut);
- ``letterbox``: fit the longer side, pad symmetrically with the backbone's mean colour (prismatic-vlms);
- ``letterbox-br``: fit the longer side, pad right and bottom (detection-style "square" geometry);
- ``letterbox-br-down``: the paper release's "letterbox" for its detection/segmentation encoders (ViTDet,
  VMamba COCO/ADE20K): shrink to fit (bilinear) but never enlarge, pad right and bottom.

A target may be square (``224``) or ``(height, width)`` for non-square model frames such as 800×1333.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

ResizeStrategy = Literal["resize-naive", "resize-crop", "letterbox", "letterbox-br", "letterbox-br-down"]
RESIZE_STRATEGIES: tuple[str, ...] = ("resize-naive", "resize-crop", "letterbox", "letterbox-br", "letterbox-br-down")
# Strategies that resize bilinearly (the release's mmdet/detectron2-style pipelines); the others are bicubic.
_BILINEAR = frozenset({"letterbox-br-down"})

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Geometry:
    """How one original image lands in the model frame: scales, offsets and the integer resized size."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    resized_width: int
    resized_height: int

    def box_to_model(self, box: Box) -> Box:
        x1, y1, x2, y2 = box
        return (
            x1 * self.scale_x + self.offset_x,
            y1 * self.scale_y + self.offset_y,
            x2 * self.scale_x + self.offset_x,
            y2 * self.scale_y + self.offset_y,
        )

    def box_from_model(self, box: Box) -> Box:
        x1, y1, x2, y2 = box
        return (
            (x1 - self.offset_x) / self.scale_x,
            (y1 - self.offset_y) / self.scale_y,
            (x2 - self.offset_x) / self.scale_x,
            (y2 - self.offset_y) / self.scale_y,
        )


def as_height_width(size: int | tuple[int, int]) -> tuple[int, int]:
    """``224`` → ``(224, 224)``; ``(height, width)`` as ints."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


@dataclass(frozen=True)
class ImageTransform:
    """Resize strategy + target frame + normalization; call it on a PIL image to get a (3, H, W) tensor."""

    strategy: ResizeStrategy
    size: tuple[int, int]  # (height, width) of the model frame
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.strategy not in RESIZE_STRATEGIES:
            raise ValueError(
                f"unknown resize strategy {self.strategy!r} (allowed: {', '.join(RESIZE_STRATEGIES)})"
            )

    @property
    def fill(self) -> tuple[int, int, int]:
        """The padding colour: the backbone's mean colour, as prismatic-vlms pads."""
        return tuple(int(255 * m) for m in self.mean)  # type: ignore[return-value]

    def geometry(self, width: int, height: int) -> Geometry:
        target_h, target_w = self.size
        if self.strategy == "resize-naive":
            return Geometry(target_w / width, target_h / height, 0.0, 0.0, target_w, target_h)
        if self.strategy == "resize-crop":
            scale = max(target_w / width, target_h / height)
        else:
            scale = min(target_w / width, target_h / height)
        if self.strategy == "letterbox-br-down":
            scale = min(scale, 1.0)
        resized_w = max(1, round(width * scale))
        resized_h = max(1, round(height * scale))
        if self.strategy == "resize-crop":
            offset_x = -float(round((resized_w - target_w) / 2))
            offset_y = -float(round((resized_h - target_h) / 2))
        elif self.strategy == "letterbox":
            offset_x = float((target_w - resized_w) // 2)
            offset_y = float((target_h - resized_h) // 2)
        else:  # letterbox-br, letterbox-br-down
            offset_x = offset_y = 0.0
        return Geometry(resized_w / width, resized_h / height, offset_x, offset_y, resized_w, resized_h)

    def apply_pil(self, image: Image.Image) -> Image.Image:
        """The resized/cropped/padded RGB image in the model frame (before normalization)."""
        image = image.convert("RGB")
        geo = self.geometry(*image.size)
        resample = Image.Resampling.BILINEAR if self.strategy in _BILINEAR else Image.Resampling.BICUBIC
        resized = image.resize((geo.resized_width, geo.resized_height), resample)  # same size: PIL copies
        target_h, target_w = self.size
        if self.strategy == "resize-naive":
            return resized
        canvas = Image.new("RGB", (target_w, target_h), self.fill)
        canvas.paste(resized, (int(geo.offset_x), int(geo.offset_y)))
        return canvas

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (tensor - mean) / std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.to_tensor(self.apply_pil(image))

    def box_to_model(self, box: Box, width: int, height: int) -> Box:
        """A pixel box in the original image → pixel box in the model frame."""
        return self.geometry(width, height).box_to_model(box)

    def box_from_model(self, box: Box, width: int, height: int) -> Box:
        """A pixel box in the model frame → pixel box in the original image."""
        return self.geometry(width, height).box_from_model(box)

    def normalize_box_to_model(self, box: Box, width: int, height: int) -> Box:
        """A pixel box in the original image → [0, 1] coordinates of the model frame (clamped)."""
        x1, y1, x2, y2 = self.box_to_model(box, width, height)
        target_h, target_w = self.size
        return (
            _clamp01(x1 / target_w),
            _clamp01(y1 / target_h),
            _clamp01(x2 / target_w),
            _clamp01(y2 / target_h),
        )

    def denormalize_box_from_model(self, box: Box, width: int, height: int) -> Box:
        """[0, 1] coordinates of the model frame → pixel box in the original image."""
        target_h, target_w = self.size
        x1, y1, x2, y2 = box
        return self.box_from_model(
            (x1 * target_w, y1 * target_h, x2 * target_w, y2 * target_h), width, height
        )


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


def normalize_box(box: Box, width: int, height: int) -> Box:
    """A pixel box → [0, 1] coordinates of the raw image (the upstream RefCOCO convention)."""
    x1, y1, x2, y2 = box
    return (x1 / width, y1 / height, x2 / width, y2 / height)


def denormalize_box(box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (x1 * width, y1 * height, x2 * width, y2 * height)


def build_image_transform(
    strategy: str,
    size: int | tuple[int, int],
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> ImageTransform:
    return ImageTransform(strategy, as_height_width(size), tuple(mean), tuple(std))  # type: ignore[arg-type]

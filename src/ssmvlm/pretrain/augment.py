"""Light augmentation on whole batches on the device: random resized crop and horizontal flip.

Each sample gets one affine map from the output frame into its input frame (a crop box, optionally
mirrored); images are resampled bilinearly, masks by nearest neighbour, and boxes are mapped exactly, so
dense targets always move with the pixels. The parameters come from a generator seeded per step, so a
resumed run draws the same augmentations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmvlm.pretrain.config import AugmentConfig

_MIN_BOX_SIDE = 2.0  # pixels; boxes cropped smaller than this are dropped


def augment_batch(
    batch: dict[str, torch.Tensor], config: AugmentConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A new batch with ``image`` (uint8) and its targets cropped/flipped; other entries are kept."""
    images = batch["image"]
    count, _, height, width = images.shape
    scale_x, scale_y, centre_x, centre_y, flip = _draw_crops(count, config, generator)
    to_device = lambda t: t.to(images.device)
    scale_x, scale_y, centre_x, centre_y, flip = map(to_device, (scale_x, scale_y, centre_x, centre_y, flip))
    # affine_grid maps output coordinates in [-1, 1] to input coordinates: x_in = sign * sx * x_out + cx
    theta = torch.zeros(count, 2, 3, device=images.device)
    theta[:, 0, 0] = scale_x * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = scale_y
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    out = dict(batch)
    resampled = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    out["image"] = resampled.round().clamp(0, 255).to(torch.uint8)
    if "mask" in batch:
        masks = F.grid_sample(
            batch["mask"][:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False
        )
        out["mask"] = masks[:, 0].to(torch.uint8)
    if "boxes" in batch:
        out["boxes"], out["box_classes"] = _move_boxes(
            batch["boxes"], batch["box_classes"], (scale_x, scale_y, centre_x, centre_y, flip), width, height
        )
    return out


def _draw_crops(count: int, config: AugmentConfig, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Per sample: crop half-extents and centre in normalized [-1, 1] units, and the flip sign."""
    uniform = lambda: torch.rand(count, generator=generator)
    area = config.crop_scale_min + (1 - config.crop_scale_min) * uniform()
    log_ratio = math.log(config.crop_ratio_max) * (2 * uniform() - 1)
    # both sides must fit in the frame: area <= ratio <= 1 / area
    ratio = torch.exp(torch.minimum(log_ratio.abs(), -torch.log(area)) * log_ratio.sign())
    scale_x = torch.sqrt(area * ratio)
    scale_y = torch.sqrt(area / ratio)
    centre_x = (1 - scale_x) * (2 * uniform() - 1)
    centre_y = (1 - scale_y) * (2 * uniform() - 1)
    flip = torch.where(uniform() < 0.5, -1.0, 1.0) if config.hflip else torch.ones(count)
    return scale_x, scale_y, centre_x, centre_y, flip


def _move_boxes(
    boxes: torch.Tensor, classes: torch.Tensor, crop: tuple[torch.Tensor, ...], width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    scale_x, scale_y, centre_x, centre_y, flip = (t[:, None] for t in crop)

    # pixel → normalized input coordinate → normalized output coordinate → pixel
    def along_x(x: torch.Tensor) -> torch.Tensor:
        normalized = (2 * x / width - 1 - centre_x) / (scale_x * flip)
        return (normalized + 1) * width / 2

    def along_y(y: torch.Tensor) -> torch.Tensor:
        return ((2 * y / height - 1 - centre_y) / scale_y + 1) * height / 2

    x_a, x_b = along_x(boxes[..., 0]), along_x(boxes[..., 2])
    y1, y2 = along_y(boxes[..., 1]), along_y(boxes[..., 3])
    moved = torch.stack(
        [
            torch.minimum(x_a, x_b).clamp(0, width),
            y1.clamp(0, height),
            torch.maximum(x_a, x_b).clamp(0, width),
            y2.clamp(0, height),
        ],
        dim=-1,
    )
    visible = ((moved[..., 2] - moved[..., 0]) >= _MIN_BOX_SIDE) & ((moved[..., 3] - moved[..., 1]) >= _MIN_BOX_SIDE)
    return moved, torch.where(visible & (classes >= 0), classes, torch.full_like(classes, -1))


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, 3, H, W) frames → float pixels normalized with the backbone's mean/std."""
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t

"""The heads put on a backbone's ``forward_stages`` features: the same small head for every family.

- :class:`LinearClassifier`: global max pool of the last stage, LayerNorm, one linear layer. ShapeScenes
  objects cover a few percent of the image: an average pool dilutes them into the background and leaves the
  nanos near chance for thousands of steps (measured on CPU, one-object 64-px scenes, 20k images: top-1
  6% -> 19% for vit_nano, 2% -> 7% for convnext_nano with the max pool).
- :class:`PyramidFusion`: an FPN-lite neck: every stage projected to ``dim`` channels (1x1 conv + GroupNorm),
  resized to one output stride, summed and refined by a 3x3 conv. It works the same for hierarchical
  backbones (four stages) and plain ones (a single stride-16 map), so dense heads stay matched.
- :class:`CenterNetHead`: per-class centre heatmap, log box size (output-stride units), sub-cell offset.
- :class:`SegmentationHead`: per-pixel class logits, upsampled to the input.

GroupNorm instead of BatchNorm keeps the heads independent of the batch size, which may differ per backbone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_GROUPS = 8
_HEATMAP_PRIOR = 0.01  # initial centre probability (CenterNet/RetinaNet bias init)


class LinearClassifier(nn.Module):
    """The class logits; with ``auxiliary`` outputs (name → width), a dict of those logits beside ``logits``."""

    def __init__(self, in_dim: int, num_classes: int, auxiliary: dict[str, int] | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc = nn.Linear(in_dim, num_classes)
        self.auxiliary = nn.ModuleDict({name: nn.Linear(in_dim, width) for name, width in (auxiliary or {}).items()})
        for layer in [self.fc, *self.auxiliary.values()]:
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(
        self, stages: list[torch.Tensor], image_hw: tuple[int, int]
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        del image_hw  # every head takes it; a pooled classifier does not depend on it
        features = self.norm(stages[-1].float().amax(dim=(2, 3)))
        if not self.auxiliary:
            return self.fc(features)
        return {"logits": self.fc(features), **{name: layer(features) for name, layer in self.auxiliary.items()}}


def _conv_norm_act(in_dim: int, out_dim: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(_GROUPS, out_dim),
        nn.ReLU(inplace=True),
    )


class PyramidFusion(nn.Module):
    def __init__(self, stage_dims: list[int], dim: int, output_stride: int) -> None:
        super().__init__()
        self.output_stride = output_stride
        self.laterals = nn.ModuleList(_conv_norm_act(d, dim, 1) for d in stage_dims)
        self.refine = _conv_norm_act(dim, dim, 3)

    def forward(self, stages: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        size = (math.ceil(image_hw[0] / self.output_stride), math.ceil(image_hw[1] / self.output_stride))
        fused = None
        for lateral, feature in zip(self.laterals, stages, strict=True):
            projected = lateral(feature.float())
            if projected.shape[-2:] != size:
                projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
            fused = projected if fused is None else fused + projected
        return self.refine(fused)


def _branch(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(dim, out_dim, 1))


class CenterNetHead(nn.Module):
    """Outputs at stride ``output_stride``: heatmap logits (K), log box size (2) and centre offset (2)."""

    def __init__(self, stage_dims: list[int], num_classes: int, *, dim: int = 64, output_stride: int = 8) -> None:
        super().__init__()
        self.output_stride = output_stride
        self.neck = PyramidFusion(stage_dims, dim, output_stride)
        self.heatmap = _branch(dim, num_classes)
        self.size = _branch(dim, 2)
        self.offset = _branch(dim, 2)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - _HEATMAP_PRIOR) / _HEATMAP_PRIOR))

    def forward(self, stages: list[torch.Tensor], image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        features = self.neck(stages, image_hw)
        return {
            "heatmap": self.heatmap(features),
            "size": self.size(features),
            "offset": self.offset(features),
        }


class SegmentationHead(nn.Module):
    def __init__(self, stage_dims: list[int], num_classes: int, *, dim: int = 64, output_stride: int = 4) -> None:
        super().__init__()
        self.neck = PyramidFusion(stage_dims, dim, output_stride)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, stages: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        logits = self.classifier(self.neck(stages, image_hw))
        return F.interpolate(logits, size=image_hw, mode="bilinear", align_corners=False)

"""ViTDet-B: the plain ViT backbone of detectron2's ViTDet, built from timm layers.

A ViT-B/16 whose blocks use windowed attention (window 14) except the global blocks 2, 5, 8 and 11, with
decomposed relative position embeddings (``rel_pos_h``/``rel_pos_w``) in every attention and absolute
position embeddings stored at the 224² pretraining grid (14×14 plus the unused class-token slot, i.e.
``pos_embed`` (1, 197, 768)), bicubically interpolated to the input grid (64×64 at the default 1024²). No
class token and no final norm, as in detectron2's ``ViT``. The module names equal detectron2's, so the
``backbone.net.*`` entries of a ViTDet checkpoint load with ``strict=True`` after removing the prefix.

timm's SAM ViT ``Block`` is the same block as detectron2's (same key names and shapes, same padding window
partition, same decomposed relative-position bias), so it is used as is.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmvlm.backbones.base import BackboneSpec, FeatureTap, TapInfo, VisionBackbone
from ssmvlm.backbones.registry import register_backbone
from ssmvlm.backbones.weight_init import init_linear_and_layernorm
from ssmvlm.data.transforms import as_height_width
from ssmvlm.utils.errors import CheckpointError, ConfigError

DETECTRON2_PREFIX = "backbone.net."


class ViTDet(nn.Module):
    """detectron2's ViT backbone (``use_rel_pos=True``, ``pretrain_use_cls_token=True``), head-free."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 1024,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        window_size: int = 14,
        global_block_indexes: tuple[int, ...] = (2, 5, 8, 11),
        pretrain_img_size: int = 224,
        drop_path_rate: float = 0.0,
    ) -> None:
        from timm.layers import PatchEmbed, trunc_normal_
        from timm.models.vision_transformer_sam import Block

        super().__init__()
        height, width = as_height_width(img_size)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.global_block_indexes = tuple(global_block_indexes)
        self.patch_embed = PatchEmbed(
            img_size=(height, width), patch_size=patch_size, embed_dim=embed_dim, flatten=False,
            output_fmt="NHWC", strict_img_size=False,
        )
        pretrain_grid = pretrain_img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, pretrain_grid * pretrain_grid + 1, embed_dim))
        grid = (height // patch_size, width // patch_size)
        drop_rates = [drop_path_rate * index / max(depth - 1, 1) for index in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                norm_layer=partial(nn.LayerNorm, eps=1e-6), drop_path=drop_rates[index], use_rel_pos=True,
                window_size=0 if index in self.global_block_indexes else window_size, input_size=grid,
            )
            for index in range(depth)
        )
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_linear_and_layernorm)

    def abs_pos(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embeddings (1, H, W, C) for a token grid: the pretraining grid without the class slot,
        resized bicubically as detectron2's ``get_abs_pos`` does."""
        pos = self.pos_embed[:, 1:]
        size = math.isqrt(pos.shape[1])
        pos = pos.reshape(1, size, size, -1)
        if (size, size) == grid:
            return pos
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1)

    def forward_features(self, pixel_values: torch.Tensor, num_blocks: int | None = None) -> torch.Tensor:
        """Feature map (B, H, W, C) after the first ``num_blocks`` blocks (all by default)."""
        x = self.patch_embed(pixel_values)
        x = x + self.abs_pos((x.shape[1], x.shape[2]))
        for block in self.blocks[:num_blocks]:
            x = block(x)
        return x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_features(pixel_values).permute(0, 3, 1, 2)




class ViTDetBackbone(VisionBackbone):
    """ViTDet behind the zoo interface: taps are blocks (``b-1`` = the detector's ``last_feat``)."""

    @property
    def depth(self) -> int:
        return len(self.trunk.blocks)

    def _block_index(self, tap: FeatureTap) -> int:
        return tap.block_index(self.depth, self.name)

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        self._block_index(tap)
        return TapInfo(dim=self.trunk.embed_dim, stride=self.trunk.patch_size)

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        height, width = pixel_values.shape[-2:]
        if height % self.trunk.patch_size or width % self.trunk.patch_size:
            raise ConfigError(
                "image_size", f"{self.name} needs height and width that are multiples of "
                f"{self.trunk.patch_size} (the patch size), got {height}x{width}"
            )

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        self._check_input(pixel_values)
        features = self.trunk.forward_features(pixel_values, self._block_index(tap) + 1)
        return features.flatten(1, 2)

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(pixel_values)
        return [self.trunk(pixel_values)]

    @property
    def stage_dims(self) -> list[int]:
        return [self.trunk.embed_dim]

    def is_head_key(self, key: str) -> bool:
        return False  # the backbone has no classification head

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Take the ``backbone.net.*`` entries of a detectron2 checkpoint (pyramid and heads are dropped)
        and resize relative-position tables built for another input size, as detectron2 does on the fly."""
        if any(key.startswith(DETECTRON2_PREFIX) for key in state):
            state = {
                key.removeprefix(DETECTRON2_PREFIX): value
                for key, value in state.items()
                if key.startswith(DETECTRON2_PREFIX)
            }
        elif any(key.startswith("backbone.") for key in state):
            raise CheckpointError(
                f"{self.name}: checkpoint has 'backbone.*' keys but none under '{DETECTRON2_PREFIX}' "
                "(not a ViTDet SimpleFeaturePyramid checkpoint)"
            )
        own = self.trunk.state_dict()
        return {key: _resize_rel_pos(value, own[key].shape) if _is_rel_pos(key, own) else value
                for key, value in state.items()}


def _is_rel_pos(key: str, own: dict[str, torch.Tensor]) -> bool:
    return key.endswith(("attn.rel_pos_h", "attn.rel_pos_w")) and key in own


def _resize_rel_pos(table: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    # Linear interpolation along the relative-distance axis, the rule of detectron2's get_rel_pos.
    if table.shape == shape:
        return table
    resized = F.interpolate(table.T.unsqueeze(0).float(), size=shape[0], mode="linear")
    return resized[0].T.to(table.dtype).contiguous()


VITDET_BASE = BackboneSpec(
    name="vitdet_base",
    family="vitdet",
    kind="transformer",
    default_tap="b-1",
    default_image_size=1024,
    pretrained_sources={
        "coco": "model_final_61ccd1.pkl (detectron2 ViTDet/COCO/mask_rcnn_vitdet_b/f325346929, Mask R-CNN)",
    },
    description="ViTDet-B: ViT-B/16, window 14 with global blocks 2/5/8/11, decomposed relative positions, "
    "absolute positions from 224² interpolated; pass image_size=1024 for the detector's input",
)


@register_backbone(VITDET_BASE, ViTDetBackbone)
def vitdet_base(image_size: int | tuple[int, int] = 1024, **overrides: Any) -> nn.Module:
    height, width = as_height_width(image_size)
    if height % 16 or width % 16:
        raise ConfigError(
            "image_size", f"vitdet_base needs multiples of 16 (the patch size), got {height}x{width}"
        )
    return ViTDet(img_size=(height, width), **overrides)

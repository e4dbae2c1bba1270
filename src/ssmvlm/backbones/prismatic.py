"""prismatic-vlms' vision backbones, through timm, under prismatic's own ids (``clip-vit-l-336px`` ...).

Each is the timm model prismatic builds (``num_classes=0``, ``img_size`` = the id's resolution, QuickGELU for
the OpenAI CLIP weights), read as prismatic reads it: penultimate-block patch tokens (tap ``b-2``), without
class or register tokens. The patch-14 models run at 224/336/384 as prismatic runs them: timm's patch
embedding drops the pixels that do not fill a patch (384 → 27 × 27 patches), so their token count is
``⌊H/14⌋ · ⌊W/14⌋`` and they take only the size they were built for.

``dinosiglip-vit-so-{224,384}px`` is prismatic's fused pair: DINOv2 ViT-L/14 (with registers) and SigLIP
SO400M/14 on the same image, their tokens concatenated channel-wise (1024 + 1152 = 2176). The pair takes one
image tensor normalized with DINOv2's (ImageNet) mean/std and re-normalizes it for SigLIP inside the forward;
prismatic normalizes twice from the same resized image, so only a letterbox padding colour can differ (prism
models use ``resize-naive``). Its checkpoint is ``DINO_FILE,SIGLIP_FILE`` (the two timm hub files) or one file
with ``dino.*`` / ``siglip.*`` keys (what ssmvlm writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssmvlm.backbones.base import BackboneSpec, FeatureTap, TapInfo, VisionBackbone
from ssmvlm.backbones.registry import BACKBONES, register_backbone
from ssmvlm.backbones.timm_models import TIMM_MODEL_NAMES, TimmViTBackbone
from ssmvlm.data.transforms import IMAGENET_MEAN, IMAGENET_STD, as_height_width
from ssmvlm.utils.errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PrismaticViT:
    timm_name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fixed: tuple[tuple[str, Any], ...] = ()  # extra timm.create_model arguments


# prismatic id → the timm model prismatic builds (prismatic/models/backbones/vision/*.py).
PRISMATIC_VITS: dict[str, PrismaticViT] = {
    "clip-vit-l": PrismaticViT("vit_large_patch14_clip_224.openai", 224, CLIP_MEAN, CLIP_STD,
                               (("act_layer", "quick_gelu"),)),
    "clip-vit-l-336px": PrismaticViT("vit_large_patch14_clip_336.openai", 336, CLIP_MEAN, CLIP_STD,
                                     (("act_layer", "quick_gelu"),)),
    "siglip-vit-so400m": PrismaticViT("vit_so400m_patch14_siglip_224", 224, HALF, HALF),
    "siglip-vit-so400m-384px": PrismaticViT("vit_so400m_patch14_siglip_384", 384, HALF, HALF),
    "dinov2-vit-l": PrismaticViT("vit_large_patch14_reg4_dinov2.lvd142m", 224, IMAGENET_MEAN, IMAGENET_STD),
    "in1k-vit-l": PrismaticViT("vit_large_patch16_224.augreg_in21k_ft_in1k", 224, HALF, HALF),
}  # fmt: skip

# fused id → (DINOv2 member, SigLIP member): the members' own ids at the pair's resolution.
PRISMATIC_FUSED: dict[str, tuple[str, str]] = {
    "dinosiglip-vit-so-224px": ("dinov2-vit-l", "siglip-vit-so400m"),
    "dinosiglip-vit-so-384px": ("dinov2-vit-l", "siglip-vit-so400m-384px"),
}


def _check_built_size(name: str, pixel_values: torch.Tensor, built: int | tuple[int, int]) -> None:
    height, width = pixel_values.shape[-2:]
    if (height, width) != as_height_width(built):
        built_h, built_w = as_height_width(built)
        raise ConfigError(
            "image_size", f"{name} was built for {built_h}x{built_w} inputs (its position embeddings and patch "
            f"grid), got {height}x{width}"
        )  # fmt: skip


class PrismaticViTBackbone(TimmViTBackbone):
    """A timm ViT as prismatic runs it: the built size only, the patch remainder dropped."""

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        _check_built_size(self.name, pixel_values, self.image_size)

    def num_tokens(self, image_size: int | tuple[int, int] | None = None) -> int:
        height, width = as_height_width(image_size if image_size is not None else self.image_size)
        return (height // self.patch_size) * (width // self.patch_size)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # prismatic builds these with num_classes=0, so a hub file's head (CLIP's projection) is not loaded.
        state = super().adapt_state_dict(state)
        return {key: value for key, value in state.items() if not key.startswith("head.")}


def _register_vit(name: str, vit: PrismaticViT) -> None:
    TIMM_MODEL_NAMES[name] = vit.timm_name
    spec = BackboneSpec(
        name=name, family="prismatic", kind="transformer", default_tap="b-2", mean=vit.mean, std=vit.std,
        default_image_size=vit.image_size, pretrained_sources={"prismatic": f"timm hub {vit.timm_name}"},
        description=f"prismatic-vlms `{name}` (timm {vit.timm_name} at {vit.image_size}px)",
    )  # fmt: skip

    def build(image_size: int | tuple[int, int] = vit.image_size, **overrides: Any) -> nn.Module:
        import timm

        settings = {"num_classes": 0, **dict(vit.fixed), **overrides}
        return timm.create_model(vit.timm_name, pretrained=False, img_size=as_height_width(image_size), **settings)

    register_backbone(spec, PrismaticViTBackbone)(build)


class FusedViTBackbone(VisionBackbone):
    """prismatic's DINOv2 + SigLIP pair: both members' tokens at the tap, concatenated channel-wise."""

    trunk: nn.ModuleDict

    def _member(self, key: str) -> PrismaticViTBackbone:
        # A view of one member through its own wrapper (shared modules), for its tap and checkpoint logic.
        member_id = PRISMATIC_FUSED[self.name][0 if key == "dino" else 1]
        entry = BACKBONES[member_id]
        return PrismaticViTBackbone(
            entry.spec, self.trunk[key], feature_tap=self.feature_tap, image_size=self.image_size
        )

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        dims = []
        for key in ("dino", "siglip"):
            model = self.trunk[key]
            tap.block_index(len(model.blocks), self.name)
            dims.append(model.embed_dim)
        return TapInfo(dim=sum(dims), stride=int(self.trunk["dino"].patch_embed.patch_size[0]))

    def num_tokens(self, image_size: int | tuple[int, int] | None = None) -> int:
        height, width = as_height_width(image_size if image_size is not None else self.image_size)
        stride = self.tap_info(self.feature_tap).stride
        return (height // stride) * (width // stride)

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        _check_built_size(self.name, pixel_values, self.image_size)
        siglip_spec = BACKBONES[PRISMATIC_FUSED[self.name][1]].spec
        dino = self._tokens("dino", pixel_values, tap)
        raw = pixel_values * _column(self.spec.std, pixel_values) + _column(self.spec.mean, pixel_values)
        siglip = self._tokens("siglip", (raw - _column(siglip_spec.mean, raw)) / _column(siglip_spec.std, raw), tap)
        return torch.cat([dino, siglip], dim=2)

    def _tokens(self, key: str, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        model = self.trunk[key]
        (tokens,) = model.forward_intermediates(
            pixel_values, indices=[tap.block_index(len(model.blocks), self.name)], stop_early=True,
            intermediates_only=True, output_fmt="NLC",
        )  # fmt: skip
        return tokens

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        last = FeatureTap(None, -1)
        tokens = self.forward_tokens(pixel_values, last)
        height, width = (side // self.tap_info(last).stride for side in pixel_values.shape[-2:])
        return [tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)]

    @property
    def stage_dims(self) -> list[int]:
        return [self.tap_info(FeatureTap(None, -1)).dim]

    def load_checkpoint(self, path: str | Path, *, strict: bool = True) -> None:
        """``DINO_FILE,SIGLIP_FILE`` (each member's upstream file) or one file with ``dino.``/``siglip.`` keys."""
        parts = str(path).split(",")
        if len(parts) == 2:
            for key, part in zip(("dino", "siglip"), parts, strict=True):
                self._member(key).load_checkpoint(Path(part.strip()), strict=strict)
            return
        super().load_checkpoint(path, strict=strict)


def _column(values: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def _register_fused(name: str, members: tuple[str, str]) -> None:
    dino, siglip = (PRISMATIC_VITS[member] for member in members)
    spec = BackboneSpec(
        name=name, family="prismatic", kind="transformer", default_tap="b-2", mean=dino.mean, std=dino.std,
        default_image_size=PRISMATIC_VITS[members[1]].image_size,
        pretrained_sources={"prismatic": f"timm hub {dino.timm_name} + {siglip.timm_name}"},
        description=f"prismatic-vlms `{name}`: {dino.timm_name} ⊕ {siglip.timm_name}, tokens concatenated",
    )  # fmt: skip

    def build(image_size: int | tuple[int, int] = spec.default_image_size, **overrides: Any) -> nn.Module:
        import timm

        size = as_height_width(image_size)
        return nn.ModuleDict({
            key: timm.create_model(vit.timm_name, pretrained=False, img_size=size,
                                   **{"num_classes": 0, **dict(vit.fixed), **overrides})
            for key, vit in (("dino", dino), ("siglip", siglip))
        })  # fmt: skip

    register_backbone(spec, FusedViTBackbone)(build)


for _name, _vit in PRISMATIC_VITS.items():
    _register_vit(_name, _vit)
for _name, _members in PRISMATIC_FUSED.items():
    _register_fused(_name, _members)

"""timm models into the zoo: transformer and CNN families built through timm (ViT/DeiT, MaxViT, Swin, ConvNeXt),
not re-implemented. (The other direction, the zoo's SSM families as timm models, is :mod:`timm_export`.)

Each zoo name maps to a timm model name (recorded in the spec's description and in :data:`TIMM_MODEL_NAMES`);
the trunk is ``timm.create_model(name, pretrained=False, ...)`` so timm's own state-dict keys load with
``strict=True``, and a timm checkpoint file (``model.safetensors`` from the timm hub, or an official ``.pth``)
is adapted by timm's own ``checkpoint_filter_fn`` (key renames, position-embedding resampling).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from ssmvlm.backbones.base import BackboneSpec, FeatureTap, TapInfo, VisionBackbone
from ssmvlm.backbones.registry import register_backbone
from ssmvlm.data.transforms import as_height_width
from ssmvlm.utils.errors import ConfigError

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

# Zoo name -> timm model name (with pretrained tag where a released checkpoint exists).
TIMM_MODEL_NAMES: dict[str, str] = {}


def check_image_size(name: str, image_size: int | tuple[int, int], multiple: int, why: str) -> None:
    """Raise a one-line ConfigError unless both sides of ``image_size`` are multiples of ``multiple``."""
    height, width = as_height_width(image_size)
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ConfigError(
            "image_size", f"{name} needs height and width that are multiples of {multiple} ({why}), "
            f"got {height}x{width}"
        )


def _timm_factory(timm_name: str, fixed: dict[str, Any]) -> Callable[..., nn.Module]:
    """A trunk builder: ``timm.create_model`` with the family's fixed arguments, then the user's overrides."""

    def build(**kwargs: Any) -> nn.Module:
        import timm

        return timm.create_model(timm_name, pretrained=False, **{**fixed, **kwargs})

    return build


# ------------------------------------------------------------------------------------------------------------
# Plain ViT / DeiT
# ------------------------------------------------------------------------------------------------------------
class TimmViTBackbone(VisionBackbone):
    """A timm ``VisionTransformer``: taps are blocks (``b-2`` = penultimate), tokens are patch tokens only."""

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        self._block_index(tap)
        return TapInfo(dim=self.trunk.embed_dim, stride=self.patch_size)

    @property
    def patch_size(self) -> int:
        return int(self.trunk.patch_embed.patch_size[0])

    @property
    def depth(self) -> int:
        return len(self.trunk.blocks)

    def _block_index(self, tap: FeatureTap) -> int:
        return tap.block_index(self.depth, self.name)

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        check_image_size(self.name, tuple(pixel_values.shape[-2:]), self.patch_size, "the patch size")

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        self._check_input(pixel_values)
        (tokens,) = self.trunk.forward_intermediates(
            pixel_values, indices=[self._block_index(tap)], stop_early=True, intermediates_only=True,
            output_fmt="NLC",
        )
        return tokens

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(pixel_values)
        (last,) = self.trunk.forward_intermediates(
            pixel_values, indices=[self.depth - 1], norm=True, intermediates_only=True, output_fmt="NCHW"
        )
        return [last]

    @property
    def stage_dims(self) -> list[int]:
        return [self.trunk.embed_dim]

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # timm's filter resamples pos_embed to this trunk's grid and converts older layouts.
        from timm.models.vision_transformer import checkpoint_filter_fn

        return checkpoint_filter_fn(state, self.trunk)


def _register_vit(spec: BackboneSpec, timm_name: str, fixed: dict[str, Any]) -> None:
    create = _timm_factory(timm_name, fixed)
    TIMM_MODEL_NAMES[spec.name] = timm_name

    def build(image_size: int | tuple[int, int] = 224, **overrides: Any) -> nn.Module:
        check_image_size(spec.name, image_size, 16, "the patch size")
        # Position embeddings are built for the target grid (checkpoints are resampled to it on load);
        # dynamic_img_size lets other input sizes through by interpolating on the fly.
        return create(img_size=as_height_width(image_size), dynamic_img_size=True, **overrides)

    register_backbone(spec, TimmViTBackbone)(build)


def _vit_spec(name: str, timm_name: str, *, deit: bool, source: str, description: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        family="deit" if deit else "vit",
        kind="transformer",
        default_tap="b-2",
        mean=(0.485, 0.456, 0.406) if deit else INCEPTION_MEAN,
        std=(0.229, 0.224, 0.225) if deit else INCEPTION_STD,
        pretrained_sources={"in1k": source},
        description=f"{description} (timm {timm_name})",
    )


_VIT_MODELS: tuple[tuple[str, str, bool, str, str], ...] = (
    (
        "vit_small_patch16", "vit_small_patch16_224.augreg_in1k", False,
        "model.safetensors of timm/vit_small_patch16_224.augreg_in1k (timm hub)",
        "ViT-S/16, AugReg ImageNet-1k recipe",
    ),
    (
        "vit_base_patch16", "vit_base_patch16_224.augreg_in1k", False,
        "model.safetensors of timm/vit_base_patch16_224.augreg_in1k (timm hub)",
        "ViT-B/16, AugReg ImageNet-1k recipe",
    ),
    (
        "deit_small_patch16", "deit_small_patch16_224.fb_in1k", True,
        "deit_small_patch16_224-cd65a155.pth (facebookresearch/deit)",
        "DeiT-S/16 (ViT-S/16, DeiT recipe)",
    ),
    (
        "deit_base_patch16", "deit_base_patch16_224.fb_in1k", True,
        "deit_base_patch16_224-b5f2ef4d.pth (facebookresearch/deit)",
        "DeiT-B/16 (ViT-B/16, DeiT recipe)",
    ),
)

for _name, _timm_name, _deit, _source, _description in _VIT_MODELS:
    _spec = _vit_spec(_name, _timm_name, deit=_deit, source=_source, description=_description)
    _register_vit(_spec, _timm_name, {})

_register_vit(
    BackboneSpec(
        name="vit_nano",
        family="vit",
        kind="transformer",
        default_tap="b-2",
        default_image_size=96,
        description="study preset: ViT 192-d, 6 blocks, 3 heads, patch 16, no head "
        "(timm vit_tiny_patch16_224 with depth 6)",
    ),
    "vit_tiny_patch16_224",
    {"depth": 6, "num_classes": 0},
)


# ------------------------------------------------------------------------------------------------------------
# Hierarchical families: four stages at strides 4, 8, 16, 32 (ConvNeXt, Swin, MaxViT)
# ------------------------------------------------------------------------------------------------------------
class TimmHierarchicalBackbone(VisionBackbone):
    """A timm model with a stem and four stages of ``blocks`` (each stage may start with a ``downsample``).

    Taps are ``sN`` (last block of stage N) or ``sN.bK``; tokens are computed up to that block only.
    """

    stem_attr: ClassVar[str] = "stem"
    stages_attr: ClassVar[str] = "stages"
    channels_last: ClassVar[bool] = False  # Swin's stages run on (B, H, W, C)
    fixed_input_size: ClassVar[bool] = False  # windows and attention masks are built for one input size
    size_multiple: ClassVar[int] = 32

    @property
    def stages(self) -> nn.ModuleList:
        return getattr(self.trunk, self.stages_attr)

    def _stage_infos(self) -> list[dict[str, Any]]:
        prefix = f"{self.stages_attr}."
        return [info for info in self.trunk.feature_info if info["module"].startswith(prefix)]

    def _locate(self, tap: FeatureTap) -> tuple[int, int]:
        return tap.stage_block_index([len(stage.blocks) for stage in self.stages], self.name)

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        stage_index, _ = self._locate(tap)
        info = self._stage_infos()[stage_index]
        return TapInfo(dim=int(info["num_chs"]), stride=int(info["reduction"]))

    @property
    def stage_dims(self) -> list[int]:
        return [int(info["num_chs"]) for info in self._stage_infos()]

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        height, width = pixel_values.shape[-2:]
        if self.fixed_input_size and (height, width) != as_height_width(self.image_size):
            built_h, built_w = as_height_width(self.image_size)
            raise ConfigError(
                "image_size", f"{self.name} was built for {built_h}x{built_w} inputs (its attention windows "
                f"depend on it), got {height}x{width}; build it with image_size=({height}, {width})"
            )
        check_image_size(self.name, (height, width), self.size_multiple, "four stride-2 stages")

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        self._check_input(pixel_values)
        stage_index, block_index = self._locate(tap)
        x = getattr(self.trunk, self.stem_attr)(pixel_values)
        for stage in self.stages[:stage_index]:
            x = stage(x)
        stage = self.stages[stage_index]
        x = getattr(stage, "downsample", nn.Identity())(x)
        x = stage.blocks[: block_index + 1](x)
        return x.flatten(1, 2) if self.channels_last else x.flatten(2).transpose(1, 2)

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(pixel_values)
        return self.trunk.forward_intermediates(
            pixel_values, indices=list(range(-len(self.stages), 0)), intermediates_only=True, norm=True
        )


class TimmConvNeXtBackbone(TimmHierarchicalBackbone):
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Renames the official facebookresearch/ConvNeXt layout (downsample_layers.*, norm, head) to timm's.
        from timm.models.convnext import checkpoint_filter_fn

        return checkpoint_filter_fn(state, self.trunk)


class TimmSwinBackbone(TimmHierarchicalBackbone):
    stem_attr = "patch_embed"
    stages_attr = "layers"
    channels_last = True
    fixed_input_size = True

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Official checkpoints: timm's filter moves the end-of-stage downsample to timm's start-of-stage layout,
        # drops the non-persistent buffers and resizes relative-position tables to these windows. A headless
        # state dict already in timm's layout (ssmvlm's own, from another resolution) would be taken for the
        # official layout (timm tells them apart by the head), so only its tables are resized here.
        own = self.trunk.state_dict()
        if not set(state) <= set(own):
            from timm.models.swin_transformer import checkpoint_filter_fn

            return checkpoint_filter_fn(state, self.trunk)
        from timm.layers import resize_rel_pos_bias_table

        resized = dict(state)
        for key, value in state.items():
            if key.endswith("relative_position_bias_table") and value.shape != own[key].shape:
                attention = self.trunk.get_submodule(key.removesuffix(".relative_position_bias_table"))
                resized[key] = resize_rel_pos_bias_table(
                    value, new_window_size=attention.window_size, new_bias_shape=own[key].shape
                )
        return resized


class TimmMaxViTBackbone(TimmHierarchicalBackbone):
    fixed_input_size = True

    def _stage_infos(self) -> list[dict[str, Any]]:
        return [info for info in self.trunk.feature_info if info["module"].startswith("stages.")]

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(pixel_values)
        # MaxViT's intermediates include the stem as index 0; the stages are the last four.
        return self.trunk.forward_intermediates(
            pixel_values, indices=[1, 2, 3, 4], intermediates_only=True, norm=True
        )

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Resizes relative-position tables when the partition size differs from the checkpoint's.
        from timm.models.maxxvit import checkpoint_filter_fn

        return checkpoint_filter_fn(state, self.trunk)


def _register_hierarchical(
    spec: BackboneSpec,
    wrapper: type[TimmHierarchicalBackbone],
    create: Callable[..., nn.Module],
    size_kwargs: Callable[[tuple[int, int]], dict[str, Any]],
    timm_name: str,
) -> None:
    """Register a four-stage timm family; ``size_kwargs`` turns the target (H, W) into its build arguments."""
    TIMM_MODEL_NAMES[spec.name] = timm_name

    def build(image_size: int | tuple[int, int] = 224, **overrides: Any) -> nn.Module:
        check_image_size(spec.name, image_size, wrapper.size_multiple, "four stride-2 stages")
        return create(**{**size_kwargs(as_height_width(image_size)), **overrides})

    register_backbone(spec, wrapper)(build)


def _no_size_kwargs(hw: tuple[int, int]) -> dict[str, Any]:
    return {}


def _img_size_kwargs(hw: tuple[int, int]) -> dict[str, Any]:
    return {"img_size": hw}


def _swin_scaled_window_kwargs(hw: tuple[int, int]) -> dict[str, Any]:
    # Window = image / 32, the Swin-T geometry at 224 (window 7, one window in stage 4) at any size, so every
    # stage grid is a whole number of windows (window 3 at 96).
    return {"img_size": hw, "window_size": (hw[0] // 32, hw[1] // 32)}


def _maxvit_nano(**kwargs: Any) -> nn.Module:
    from timm.models.maxxvit import MaxxVit, MaxxVitCfg, _tf_cfg

    cfg = MaxxVitCfg(
        embed_dim=(32, 64, 128, 192), depths=(1, 1, 3, 1), block_type=("M",) * 4, stem_width=32,
        stem_bias=True, **_tf_cfg(),
    )
    return MaxxVit(cfg, **{"num_classes": 0, **kwargs})


def _hier_spec(name: str, family: str, kind: str, *, source: str = "", description: str, nano: bool = False):
    return BackboneSpec(
        name=name,
        family=family,
        kind=kind,
        default_tap="s3",
        default_image_size=96 if nano else 224,
        pretrained_sources={"in1k": source} if source else {},
        description=description,
    )


_register_hierarchical(
    _hier_spec(
        "convnext_tiny", "convnext", "cnn",
        source="convnext_tiny_1k_224_ema.pth (facebookresearch/ConvNeXt) or model.safetensors of "
        "timm/convnext_tiny.fb_in1k",
        description="ConvNeXt-T (timm convnext_tiny.fb_in1k)",
    ),
    TimmConvNeXtBackbone, _timm_factory("convnext_tiny.fb_in1k", {}), _no_size_kwargs,
    "convnext_tiny.fb_in1k",
)
_register_hierarchical(
    _hier_spec(
        "swin_tiny_patch4_window7", "swin", "transformer",
        source="swin_tiny_patch4_window7_224.pth (microsoft/Swin-Transformer) or model.safetensors of "
        "timm/swin_tiny_patch4_window7_224.ms_in1k",
        description="Swin-T, window 7 (timm swin_tiny_patch4_window7_224.ms_in1k); other sizes pad to "
        "whole windows",
    ),
    TimmSwinBackbone, _timm_factory("swin_tiny_patch4_window7_224.ms_in1k", {}), _img_size_kwargs,
    "swin_tiny_patch4_window7_224.ms_in1k",
)
_register_hierarchical(
    _hier_spec(
        "maxvit_tiny_tf", "maxvit", "hybrid",
        source="model.safetensors of timm/maxvit_tiny_tf_224.in1k (timm hub; port of the TF release)",
        description="MaxViT-T, TF port (timm maxvit_tiny_tf_224.in1k); window = grid = image / 32",
    ),
    TimmMaxViTBackbone, _timm_factory("maxvit_tiny_tf_224.in1k", {}), _img_size_kwargs,
    "maxvit_tiny_tf_224.in1k",
)

_register_hierarchical(
    _hier_spec(
        "convnext_nano", "convnext", "cnn", nano=True,
        description="study preset: ConvNeXt dims 40-80-160-320, depths 2-2-4-2, no head",
    ),
    TimmConvNeXtBackbone, _timm_factory("convnext_atto", {"dims": (40, 80, 160, 320), "depths": (2, 2, 4, 2),
                                                         "conv_mlp": False, "num_classes": 0}),
    _no_size_kwargs, "convnext_atto",
)
_register_hierarchical(
    _hier_spec(
        "swin_nano", "swin", "transformer", nano=True,
        description="study preset: Swin dims 32-64-128-256, depths 2-2-6-2, heads 1-2-4-8, window image/32, "
        "no head",
    ),
    TimmSwinBackbone,
    # drop_path_rate 0: timm's SwinTransformer defaults to stochastic depth 0.1, which no other nano family
    # pretrains with (the study's pretraining is matched).
    _timm_factory("swin_tiny_patch4_window7_224", {"embed_dim": 32, "depths": (2, 2, 6, 2),
                                                   "num_heads": (1, 2, 4, 8), "num_classes": 0,
                                                   "drop_path_rate": 0.0}),
    _swin_scaled_window_kwargs, "swin_tiny_patch4_window7_224",
)
_register_hierarchical(
    _hier_spec(
        "maxvit_nano", "maxvit", "hybrid", nano=True,
        description="study preset: MaxViT (TF variant) dims 32-64-128-192, depths 1-1-3-1, window = grid = "
        "image/32, no head",
    ),
    TimmMaxViTBackbone, _maxvit_nano, _img_size_kwargs, "maxxvit (custom MaxxVitCfg, tf variant)",
)

"""Transformer / CNN families through timm (ViT, DeiT, Swin, ConvNeXt, MaxViT), ViTDet-B, nano presets."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from timm.layers import DropPath

from ssmvlm.backbones import FeatureTap, create_vision_backbone, list_vision_backbones
from ssmvlm.backbones.timm_models import TIMM_MODEL_NAMES
from ssmvlm.utils.errors import CheckpointError, ConfigError

torch.set_num_threads(1)

# Parameter counts with the 1000-class head, as released. Each was checked by building the timm model
# (timm 1.0.31, pretrained=False) and matches the number its authors publish:
# ViT-S/16 22,050,664 and ViT-B/16 86,567,656 (timm; DeiT-S/B have the same architecture), Swin-T 28,288,354
# ("number of params" of microsoft/Swin-Transformer), ConvNeXt-T 28,589,128 (28.6M, ConvNeXt README).
# MaxViT-T: timm's port of the official TF release has 30,916,528; the 30,919,624 sometimes quoted is
# torchvision's own `maxvit_t` (checked with torchvision 0.29 on the meta device), a different implementation.
FULL_SIZE_PARAMS = {
    "vit_small_patch16": 22_050_664,
    "deit_small_patch16": 22_050_664,
    "vit_base_patch16": 86_567_656,
    "deit_base_patch16": 86_567_656,
    "swin_tiny_patch4_window7": 28_288_354,
    "convnext_tiny": 28_589_128,
    "maxvit_tiny_tf": 30_916_528,
}

NANOS = ("vit_nano", "maxvit_nano", "swin_nano", "convnext_nano")
MINE = tuple(FULL_SIZE_PARAMS) + NANOS + ("vitdet_base",)


def _meta(name: str, **kwargs) -> object:
    with torch.device("meta"):
        return create_vision_backbone(name, **kwargs)


def test_names_are_registered_with_their_timm_models() -> None:
    assert set(MINE) <= set(list_vision_backbones())
    assert TIMM_MODEL_NAMES["vit_small_patch16"] == "vit_small_patch16_224.augreg_in1k"
    assert TIMM_MODEL_NAMES["deit_base_patch16"] == "deit_base_patch16_224.fb_in1k"
    assert TIMM_MODEL_NAMES["maxvit_tiny_tf"] == "maxvit_tiny_tf_224.in1k"
    assert TIMM_MODEL_NAMES["swin_tiny_patch4_window7"] == "swin_tiny_patch4_window7_224.ms_in1k"


@pytest.mark.parametrize("name", sorted(FULL_SIZE_PARAMS))
def test_full_size_models_build_with_published_param_counts(name: str) -> None:
    backbone = _meta(name, image_size=224)
    assert backbone.param_count() == FULL_SIZE_PARAMS[name]
    assert backbone.num_tokens() == 196  # every default tap has stride 16


# --- ViTDet-B against detectron2's ViT backbone ----------------------------------------------------
# detectron2/modeling/backbone/vit.py (ViT, Block, Attention) and utils.py (PatchEmbed) with the ViTDet-B
# config (configs/common/models/mask_rcnn_vitdet.py: img_size 1024, patch 16, dim 768, depth 12, heads 12,
# mlp 4, window 14 in blocks 0,1,3,4,6,7,9,10, use_rel_pos=True, pretrain_img_size 224 with the class slot).
# Attention.rel_pos_* are (2 * input_size - 1, head_dim), input_size being the window for window blocks and
# the 64×64 token grid for global ones. There is no final norm and no class token parameter.
def _detectron2_vitdet_b_shapes() -> dict[str, tuple[int, ...]]:
    dim, hidden, head_dim = 768, 3072, 64
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (dim, 3, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "pos_embed": (1, 197, dim),
    }
    for index in range(12):
        rel = 2 * 64 - 1 if index in (2, 5, 8, 11) else 2 * 14 - 1
        prefix = f"blocks.{index}."
        shapes |= {
            prefix + "norm1.weight": (dim,), prefix + "norm1.bias": (dim,),
            prefix + "attn.qkv.weight": (3 * dim, dim), prefix + "attn.qkv.bias": (3 * dim,),
            prefix + "attn.proj.weight": (dim, dim), prefix + "attn.proj.bias": (dim,),
            prefix + "attn.rel_pos_h": (rel, head_dim), prefix + "attn.rel_pos_w": (rel, head_dim),
            prefix + "norm2.weight": (dim,), prefix + "norm2.bias": (dim,),
            prefix + "mlp.fc1.weight": (hidden, dim), prefix + "mlp.fc1.bias": (hidden,),
            prefix + "mlp.fc2.weight": (dim, hidden), prefix + "mlp.fc2.bias": (dim,),
        }
    return shapes


def test_vitdet_b_keys_and_shapes_equal_detectron2() -> None:
    backbone = _meta("vitdet_base", image_size=1024)
    ours = {key: tuple(value.shape) for key, value in backbone.trunk.state_dict().items()}
    expected = _detectron2_vitdet_b_shapes()
    assert ours == expected
    assert backbone.param_count() == sum(int(np.prod(shape)) for shape in expected.values()) == 85_889_024
    assert backbone.num_tokens() == 4096 and backbone.embed_dim == 768
    assert [block.window_size for block in backbone.trunk.blocks] == [14, 14, 0] * 4


def _small_vitdet(image_size: int) -> object:
    return create_vision_backbone(
        "vitdet_base", image_size=image_size, embed_dim=64, depth=4, num_heads=4, window_size=2,
        global_block_indexes=(1, 3),
    )


def test_vitdet_loads_detectron2_checkpoint_and_ignores_pyramid_and_heads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = _small_vitdet(64)
    for parameter in source.trunk.parameters():  # detectron2 zero-initializes rel_pos: make them matter
        torch.nn.init.normal_(parameter, std=0.05)
    model = {f"backbone.net.{key}": value for key, value in source.trunk.state_dict().items()}
    model["backbone.simfp_2.0.weight"] = torch.zeros(64, 32, 2, 2)
    model["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(81, 1024)
    model["pixel_mean"] = torch.zeros(3, 1, 1)
    path = tmp_path / "model_final.pth"
    torch.save({"model": model, "iteration": 3}, path)

    loaded = _small_vitdet(64)
    loaded.load_checkpoint(path)
    pixels = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(pixels), source(pixels))

    # Built for another input size: global rel_pos tables are resized, as detectron2 does on the fly.
    bigger = _small_vitdet(128)
    bigger.load_checkpoint(path)
    assert bigger.trunk.blocks[1].attn.rel_pos_h.shape == (2 * 8 - 1, 16)
    assert bigger(torch.randn(1, 3, 128, 128)).shape == (1, 64, 64)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_vitdet_numpy_pickle_gives_the_conversion_command(tmp_path: Path) -> None:
    path = tmp_path / "model_final_61ccd1.pkl"
    with path.open("wb") as handle:  # detectron2 model-zoo files: a plain pickle of numpy arrays
        pickle.dump({"model": {"backbone.net.pos_embed": np.zeros((1, 197, 768), np.float32)}}, handle)
    backbone = _small_vitdet(64)
    with pytest.raises(CheckpointError, match=r"python -m ssmvlm\.utils\.convert_checkpoint"):
        backbone.load_checkpoint(path)


def test_vitdet_window_blocks_are_local_and_global_blocks_are_not() -> None:
    torch.manual_seed(0)
    backbone = _small_vitdet(64).eval()  # 4×4 tokens, windows of 2×2, global blocks 1 and 3
    pixels = torch.randn(1, 3, 64, 64)
    changed = pixels.clone()
    changed[:, :, :16, :16] += 1.0  # only the top-left patch
    for tap, affected in (("b0", {0, 1, 4, 5}), ("b1", set(range(16)))):
        backbone.feature_tap = FeatureTap.parse(tap)
        difference = (backbone(changed) - backbone(pixels)).abs().sum(-1)[0]
        assert {i for i in range(16) if difference[i] > 1e-6} == affected


# --- taps, token counts, sizes ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "size", "tap", "tokens", "dim"),
    [
        ("vit_nano", 96, None, 36, 192),
        ("vit_nano", 224, "b0", 196, 192),
        ("convnext_nano", 96, "s1", 576, 40),
        ("convnext_nano", 96, "s2.b0", 144, 80),
        ("convnext_nano", 224, None, 196, 160),
        ("convnext_nano", 96, "s4", 9, 320),
        ("swin_nano", 96, "s1", 576, 32),
        ("swin_nano", 96, "s3.b2", 36, 128),
        ("swin_nano", 224, None, 196, 128),
        ("swin_nano", 96, "s4", 9, 256),
        ("maxvit_nano", 96, "s2", 144, 64),
        ("maxvit_nano", 96, None, 36, 128),
        ("maxvit_nano", 224, "s3.b1", 196, 128),
        ("maxvit_nano", 96, "s4", 9, 192),
    ],
)
def test_token_counts_per_tap_and_resolution(
    name: str, size: int, tap: str | None, tokens: int, dim: int
) -> None:
    backbone = create_vision_backbone(name, image_size=size, feature_tap=tap).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, size, size))
    assert out.shape == (1, tokens, dim)
    assert backbone.num_tokens() == tokens and backbone.embed_dim == dim


@pytest.mark.parametrize("name", ["convnext_nano", "swin_nano", "maxvit_nano"])
def test_stage_tap_equals_timm_intermediates(name: str) -> None:
    backbone = create_vision_backbone(name, image_size=96).eval()
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        stages = backbone.forward_stages(pixels)
        assert [s.shape[1] for s in stages] == backbone.stage_dims
        assert [s.shape[-1] for s in stages] == [24, 12, 6, 3]
        for stage in (1, 2, 3):  # the last stage map carries timm's final norm
            backbone.feature_tap = FeatureTap(stage, -1)
            torch.testing.assert_close(backbone(pixels), stages[stage - 1].flatten(2).transpose(1, 2))


def test_vit_penultimate_tap_equals_prismatic_features() -> None:
    backbone = create_vision_backbone("vit_nano", image_size=96).eval()
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        # prismatic-vlms: get_intermediate_layers(n={len(blocks) - 2}) = penultimate block, patch tokens only
        (expected,) = backbone.trunk.get_intermediate_layers(pixels, n={len(backbone.trunk.blocks) - 2})
        torch.testing.assert_close(backbone(pixels), expected)


@pytest.mark.parametrize("name", NANOS)
def test_non_square_inputs(name: str) -> None:
    backbone = create_vision_backbone(name, image_size=(96, 160)).eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 96, 160)).shape == (1, 60, backbone.embed_dim)
    assert backbone.num_tokens() == 60


@pytest.mark.parametrize(("name", "size"), [("vit_nano", 100), ("convnext_nano", 80), ("swin_nano", 112),
                                            ("maxvit_nano", (96, 120))])
def test_unsupported_sizes_give_a_clear_error(name: str, size: int | tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match=f"image_size: {name} needs height and width that are multiples of"):
        create_vision_backbone(name, image_size=size)


@pytest.mark.parametrize("name", ["swin_nano", "maxvit_nano"])
def test_windowed_families_reject_other_input_sizes(name: str) -> None:
    backbone = create_vision_backbone(name, image_size=96)
    with pytest.raises(ConfigError, match="was built for 96x96 inputs"):
        backbone(torch.randn(1, 3, 128, 128))


def test_bad_taps_are_rejected() -> None:
    with pytest.raises(ValueError, match="taps are blocks"):
        create_vision_backbone("vit_nano", image_size=96, feature_tap="s3")
    with pytest.raises(ValueError, match="has 6 blocks"):
        create_vision_backbone("vit_nano", image_size=96, feature_tap="b6")
    with pytest.raises(ValueError, match=r"has stages s1\.\.s4"):
        create_vision_backbone("swin_nano", image_size=96, feature_tap="s5")
    with pytest.raises(ValueError, match="stage 3 has 3 blocks"):
        create_vision_backbone("maxvit_nano", image_size=96, feature_tap="s3.b3")


# --- nano presets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NANOS)
def test_nano_presets_match_the_study_budget(name: str) -> None:
    for size in (96, 224):
        backbone = _meta(name, image_size=size)
        assert 2_700_000 <= backbone.param_count() <= 3_300_000, (name, size, backbone.param_count())
        assert backbone.tap_info(backbone.default_feature_tap).stride == 16
        assert backbone.num_tokens() == (size // 16) ** 2
        assert not any(key.startswith(("head.fc", "head.weight")) for key in backbone.trunk.state_dict())


# --- checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NANOS)
def test_random_state_dict_round_trips_strictly_through_safetensors(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_vision_backbone(name, image_size=96).eval()
    for parameter in source.trunk.parameters():  # break symmetric inits (zeros, ones) so a mix-up would show
        parameter.data.normal_(std=0.02)
    path = tmp_path / f"{name}.safetensors"
    save_file({key: value.contiguous() for key, value in source.trunk.state_dict().items()}, str(path))

    loaded = create_vision_backbone(name, image_size=96, checkpoint=path).eval()
    for key, value in source.trunk.state_dict().items():
        torch.testing.assert_close(loaded.trunk.state_dict()[key], value, msg=key)
    pixels = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), source(pixels))


def test_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    state = create_vision_backbone("convnext_nano", image_size=96).trunk.state_dict()
    del state["stages.2.blocks.1.mlp.fc1.weight"]
    path = tmp_path / "partial.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    with pytest.raises(CheckpointError, match="1 missing keys"):
        create_vision_backbone("convnext_nano", image_size=96, checkpoint=path)


def test_vit_checkpoint_from_224_is_resampled_to_96(tmp_path: Path) -> None:
    source = create_vision_backbone("vit_nano", image_size=224)
    path = tmp_path / "vit_nano_224.safetensors"
    save_file({key: value.contiguous() for key, value in source.trunk.state_dict().items()}, str(path))
    loaded = create_vision_backbone("vit_nano", image_size=96, checkpoint=path)
    assert loaded.trunk.pos_embed.shape == (1, 37, 192)
    torch.testing.assert_close(loaded.trunk.cls_token, source.trunk.cls_token)


def _official_convnext_key(timm_key: str) -> str:
    """facebookresearch/ConvNeXt names: downsample_layers.{0: stem, i: LN + conv}, stages.i.j.{dwconv, norm,
    pwconv1, pwconv2, gamma}, then norm and head."""
    key = timm_key.replace("stem.", "downsample_layers.0.").replace("head.norm.", "norm.")
    key = key.replace("head.fc.", "head.")
    key = re.sub(r"stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
    key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
    return key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")


def _official_swin_key(timm_key: str) -> str:
    """microsoft/Swin-Transformer downsamples at the end of a stage (timm: at the start of the next)."""
    key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", timm_key)
    return key.replace("head.fc.", "head.")


@pytest.mark.parametrize(("name", "to_official"), [("convnext_nano", _official_convnext_key),
                                                   ("swin_nano", _official_swin_key)])
def test_authors_layout_checkpoints_load(name: str, to_official, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_vision_backbone(name, image_size=96, num_classes=10).eval()
    for parameter in source.trunk.parameters():
        parameter.data.normal_(std=0.02)
    official = {to_official(key): value for key, value in source.trunk.state_dict().items()}
    if name == "swin_nano":  # the official file also stores the index buffers, which timm rebuilds
        official["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(9, 9, dtype=torch.long)
    assert "downsample_layers.1.1.weight" in official or "layers.0.downsample.reduction.weight" in official
    path = tmp_path / "official.pth"
    torch.save({"model": official, "epoch": 300}, path)

    loaded = create_vision_backbone(name, image_size=96, num_classes=10, checkpoint=path).eval()
    pixels = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), source(pixels))
        torch.testing.assert_close(loaded.trunk(pixels), source.trunk(pixels))  # the head came across too


def test_own_swin_checkpoint_moves_to_another_resolution(tmp_path: Path) -> None:
    # Dense adaptation loads a headless 96² classification checkpoint into a 192² Swin: only the relative-position
    # tables change size; the downsample weights must stay where they are (not be taken for the authors' layout).
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_vision_backbone("swin_nano", image_size=96)
    for parameter in source.trunk.parameters():
        parameter.data.normal_(std=0.02)
    state = {k: v.contiguous() for k, v in source.trunk.state_dict().items() if "relative_position_index" not in k}
    path = tmp_path / "backbone.safetensors"
    save_file({k: v for k, v in state.items() if "attn_mask" not in k}, path)
    target = create_vision_backbone("swin_nano", image_size=192, checkpoint=path)
    for key, value in target.trunk.state_dict().items():
        if key in state and "relative_position_bias_table" not in key and value.shape == state[key].shape:
            torch.testing.assert_close(value, state[key], msg=key)
    norm = "layers.2.downsample.norm.weight"
    torch.testing.assert_close(target.trunk.state_dict()[norm], state[norm])
    table = "layers.0.blocks.0.attn.relative_position_bias_table"
    assert target.trunk.state_dict()[table].shape != state[table].shape


def test_the_study_encoders_pretrain_without_stochastic_depth_or_dropout() -> None:
    """Matched pretraining: no nano family gets a regularizer the others lack (timm's Swin defaults to drop path
    0.1, which once reached swin_nano alone)."""
    from ssmvlm.study.spec import load_spec

    for name in load_spec(preset="paper").backbones:
        backbone = create_vision_backbone(name, image_size=96)
        active = [
            (module_name, rate)
            for module_name, module in backbone.named_modules()
            if isinstance(module, DropPath | torch.nn.Dropout)
            and (rate := getattr(module, "drop_prob", getattr(module, "p", 0.0))) > 0
        ]
        assert not active, (name, active[:3])

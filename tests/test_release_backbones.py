"""The paper release's encoders: each public id's backbone, tap, geometry and checkpoint rules.

Token counts come from real forwards at the released input size (the spatial grid depends only on the input
size, strides and paddings), run on the same architectures made narrow and shallow through overrides so that
they take a second; widths come from the released configurations built on the meta device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssmvlm.backbones import create_vision_backbone
from ssmvlm.convert.ids import ENCODER_IDS, PUBLIC_IDS
from ssmvlm.data.transforms import IMAGENET_MEAN, build_image_transform
from ssmvlm.utils.errors import CheckpointError

ADAPTER_SMALL = {"embed_dim": 48, "depth": 4, "num_heads": 2, "deform_num_heads": 2, "conv_inplane": 8,
                 "interaction_indexes": ((0, 0), (1, 1), (2, 2), (3, 3))}  # fmt: skip
# public id → (tokens, width) of the released model's features, and the narrow/shallow overrides of its family
# (VMamba's stages 1, 2 and 4 without blocks: the grid comes from the stem and the downsamples, and the
# selective scan over a 200 × 334 stage-1 map alone takes seconds on a CPU).
# vmamba-s-coco-1333x800: models.yaml says 4150 tokens (its `_infer_num_patches`: (1333 // 4) // 4 = 83 columns),
# but the stride-2 convolutions (kernel 3, padding 1) give ⌈1333 / 16⌉ = 84 columns: 50 × 84 = 4200 features.
RELEASED = {
    "vit-s-in1k-224": (196, 384, {"depth": 3, "embed_dim": 32, "num_heads": 2}),
    "maxvit-t-in1k-224-s3": (196, 256, {"depths": (1, 1, 1, 1), "embed_dim": (32, 32, 32, 32)}),
    "mambavision-b-in1k-224-s3": (196, 512, {"dim": 16, "in_dim": 8, "depths": (1, 1, 2, 2)}),
    "vmamba-s-in1k-224-s3": (196, 384, {"dims": (8, 16, 32, 64), "depths": (0, 0, 15, 0)}),
    "vitdet-b-coco-1024": (4096, 768, {"embed_dim": 16, "depth": 3, "num_heads": 1, "global_block_indexes": (2,)}),
    "vmamba-s-coco-1333x800": (4200, 384, {"dims": (8, 16, 32, 64), "depths": (0, 0, 15, 0)}),
    "vmamba-s-ade20k-512": (1024, 384, {"dims": (8, 16, 32, 64), "depths": (0, 0, 15, 0)}),
    # the release's loader reads ViT-Adapter's output f4 (stride 32); models.yaml lists 1024 tokens (f3's count)
    "vit-adapter-deit-b-ade20k-512": (256, 768, ADAPTER_SMALL),
}
# The stage/layer fields of the released config.json files (model_zoo/models.yaml).
VMAMBA_FIELDS = {"vmamba-s-in1k-224-s3", "vmamba-s-coco-1333x800", "vmamba-s-ade20k-512"}


def _entry_and_tap(public_id: str) -> tuple:
    entry = ENCODER_IDS[PUBLIC_IDS[public_id]]
    stage, layer = (3, 14) if public_id in VMAMBA_FIELDS else (None, None)
    return entry, entry.tap(stage, layer)


@pytest.mark.parametrize("public_id", sorted(RELEASED))
def test_released_encoder_gives_the_released_tokens_and_width(public_id: str) -> None:
    tokens, width, small = RELEASED[public_id]
    entry, tap = _entry_and_tap(public_id)
    with torch.device("meta"):
        released = create_vision_backbone(entry.backbone, image_size=entry.image_size, feature_tap=tap)
    assert released.embed_dim == width
    assert released.num_tokens() == tokens

    torch.manual_seed(0)
    narrow = create_vision_backbone(entry.backbone, image_size=entry.image_size, feature_tap=tap, **small).eval()
    height, width_px = entry.image_size if isinstance(entry.image_size, tuple) else (entry.image_size,) * 2
    with torch.no_grad():
        features = narrow(torch.randn(1, 3, height, width_px))
    assert features.shape[:2] == (1, tokens)
    assert narrow.num_tokens() == tokens


def test_deformable_sampling_at_pixel_centres_reads_the_values() -> None:
    """One level, one point, at each pixel's centre: bilinear sampling returns that pixel's value exactly."""
    from ssmvlm.backbones.vit_adapter import deformable_sample, reference_points

    value = torch.randn(2, 6 * 4, 3, 5)  # (N, H·W, heads, D) for a 6 × 4 map
    locations = reference_points([(6, 4)], torch.device("cpu"))[:, :, None, :, None, :].expand(2, 24, 3, 1, 1, 2)
    out = deformable_sample(value, [(6, 4)], locations, torch.ones(2, 24, 3, 1, 1))
    assert torch.allclose(out, value.flatten(2), atol=1e-6)
    # two points with weights 0.25/0.75 at a pixel centre and one pixel right: the weighted mix of both values
    shifted = locations.clone().expand(2, 24, 3, 1, 1, 2).repeat(1, 1, 1, 1, 2, 1)
    shifted[..., 1, 0] += 1 / 4
    mixed = deformable_sample(value, [(6, 4)], shifted, torch.tensor([0.25, 0.75]).expand(2, 24, 3, 1, 2))
    grid = value.view(2, 6, 4, 3, 5)
    right = torch.cat([grid[:, :, 1:], torch.zeros_like(grid[:, :, :1])], dim=2).view(2, 24, 15)  # zero padding
    assert torch.allclose(mixed, 0.25 * value.flatten(2) + 0.75 * right, atol=1e-6)


def test_vit_adapter_segmentation_checkpoint_loads_strictly(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_vision_backbone("vit_adapter_deit_base", image_size=64, **ADAPTER_SMALL)
    state = {f"backbone.{k}": v for k, v in source.trunk.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.randn(150, 8, 1, 1)  # mmseg heads: left out
    save_file(state, str(tmp_path / "upernet.safetensors"))
    loaded = create_vision_backbone(
        "vit_adapter_deit_base", image_size=64, checkpoint=tmp_path / "upernet.safetensors", **ADAPTER_SMALL
    ).eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(pixels), source.eval()(pixels))
    del state["backbone.interactions.3.extra_extractors.1.ffn_norm.bias"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="missing") as exc:
        create_vision_backbone("vit_adapter_deit_base", image_size=64, checkpoint=tmp_path / "partial.safetensors",
                               **ADAPTER_SMALL)  # fmt: skip
    assert "\n" not in str(exc.value)


def test_mambavision_stage_input_is_the_second_levels_downsampled_output() -> None:
    torch.manual_seed(0)
    backbone = create_vision_backbone("mambavision_nano", image_size=64, feature_tap="s3.in").eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        x = backbone.trunk.patch_embed(pixels)
        x = backbone.trunk.levels[1](backbone.trunk.levels[0](x))  # each level ends with its downsample
        expected = x.flatten(2).transpose(1, 2)
        tokens = backbone(pixels)
        backbone.feature_tap = backbone.feature_tap.parse("s3")
        stage_output = backbone(pixels)
    assert torch.equal(tokens, expected)
    assert tokens.shape == stage_output.shape and not torch.allclose(tokens, stage_output)  # another point


def _dense_checkpoint(path, trunk_state: dict, dims: list[int]) -> None:
    """An mmdet/mmseg-style checkpoint: ``backbone.*`` (no classifier) with trained ``outnorm{i}``, plus heads."""
    from safetensors.torch import save_file

    state = {f"backbone.{k}": v for k, v in trunk_state.items() if not k.startswith("classifier.")}
    for index, dim in enumerate(dims):
        state[f"backbone.outnorm{index}.weight"] = torch.rand(dim) + 0.5
        state[f"backbone.outnorm{index}.bias"] = torch.randn(dim)
    state["neck.lateral_convs.0.conv.weight"] = torch.randn(8, dims[0], 1, 1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def test_vmamba_dense_checkpoint_loads_strictly_with_its_trained_outnorm(tmp_path) -> None:
    torch.manual_seed(0)
    source = create_vision_backbone("vmamba_nano", image_size=64)
    _dense_checkpoint(tmp_path / "dense.safetensors", source.trunk.state_dict(), source.stage_dims)
    dense = create_vision_backbone(
        "vmamba_nano", image_size=64, feature_tap="s3.b1.outnorm", checkpoint=tmp_path / "dense.safetensors"
    ).eval()
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "dense.safetensors"))
    assert torch.equal(dense.trunk.outnorm2.weight, saved["backbone.outnorm2.weight"])
    assert not hasattr(dense.trunk, "outnorm1")  # only the tapped stage's norm is part of the tap

    plain = create_vision_backbone("vmamba_nano", image_size=64, feature_tap="s3.b1").eval()
    plain.trunk.load_state_dict({k: v for k, v in dense.trunk.state_dict().items() if "outnorm" not in k})
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        normed = dense(pixels)
        unnormed = plain(pixels)  # parameter-free norm: the trained affine must be applied on top of it
    weight, bias = saved["backbone.outnorm2.weight"], saved["backbone.outnorm2.bias"]
    assert torch.allclose(normed, unnormed * weight + bias, atol=1e-5)


def test_vmamba_checkpoint_for_another_tap_is_a_clear_error(tmp_path) -> None:
    torch.manual_seed(0)
    source = create_vision_backbone("vmamba_nano", image_size=64)
    _dense_checkpoint(tmp_path / "dense.safetensors", source.trunk.state_dict(), source.stage_dims)
    with pytest.raises(CheckpointError, match="outnorm") as exc:  # dense weights, tap without the trained norm
        create_vision_backbone(
            "vmamba_nano", image_size=64, feature_tap="s3.b1", checkpoint=tmp_path / "dense.safetensors"
        )
    assert "\n" not in str(exc.value)

    from safetensors.torch import save_file

    save_file(source.trunk.state_dict(), str(tmp_path / "cls.safetensors"))
    with pytest.raises(CheckpointError, match="outnorm2") as exc:  # classification weights, outnorm tap
        create_vision_backbone(
            "vmamba_nano", image_size=64, feature_tap="s3.b1.outnorm", checkpoint=tmp_path / "cls.safetensors"
        )
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="no trained output norms"):
        create_vision_backbone("vit_nano", image_size=64, feature_tap="s1.outnorm")


def _release_fit_and_pad(image: Image.Image, height: int, width: int, fill: tuple[int, int, int]) -> Image.Image:
    """The release's ResizeKeepRatioToFit + PadToSize (bilinear, never enlarging, padded right/bottom)."""
    w, h = image.size
    scale = min(width / w, height / h)
    if scale < 1.0:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(image, (0, 0))
    return canvas


@pytest.mark.parametrize("size", [(40, 70), (300, 170), (97, 500)])
def test_letterbox_br_down_matches_the_release_pipeline(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    transform = build_image_transform("letterbox-br-down", (80, 133), IMAGENET_MEAN)
    ours = np.asarray(transform.apply_pil(image))
    expected = np.asarray(_release_fit_and_pad(image, 80, 133, transform.fill))
    assert np.array_equal(ours, expected)
    geometry = transform.geometry(*size)
    assert (geometry.offset_x, geometry.offset_y) == (0.0, 0.0)
    scale = min(1.0, 133 / size[0], 80 / size[1])  # never enlarged
    assert (geometry.resized_width, geometry.resized_height) == (round(size[0] * scale), round(size[1] * scale))


def test_non_square_image_size_goes_through_the_vlm_config(tmp_path) -> None:
    import json

    from ssmvlm.config import from_dict, to_dict
    from ssmvlm.vlm import VLMConfig, build_vlm, prepare_tokenizer

    config = VLMConfig(backbone="vmamba_nano", image_size=(64, 96), resize_strategy="letterbox-br-down",
                       feature_tap="s3.b1", llm="tiny-llama-1m", tokenizer_vocab_size=300)  # fmt: skip
    saved = json.loads(json.dumps(to_dict(config)))  # as config.json stores it: [64, 96]
    config = from_dict(VLMConfig, saved, path="model")
    assert config.image_size == (64, 96)
    tokenizer = prepare_tokenizer(config, tmp_path, [[("human", "Is there a red square?"), ("gpt", "Yes.")]] * 8)
    vlm = build_vlm(config, tokenizer, seed=0)
    assert vlm.image_transform.size == (64, 96)
    pixels = vlm.image_transform(Image.new("RGB", (300, 100), (10, 200, 30)))
    assert pixels.shape == (3, 64, 96)
    assert vlm.encode_images(pixels[None]).shape[1] == vlm.vision_backbone.num_tokens() == 4 * 6
    answers = vlm.generate([Image.new("RGB", (300, 100))], ["Is there a red square?"], max_new_tokens=2)
    assert len(answers) == 1


# prismatic id → (tokens, width) at its resolution, as prismatic reads them (penultimate block, patch tokens).
PRISMATIC = {
    "clip-vit-l": (256, 1024), "clip-vit-l-336px": (576, 1024), "siglip-vit-so400m": (256, 1152),
    "siglip-vit-so400m-384px": (729, 1152), "dinov2-vit-l": (256, 1024), "in1k-vit-l": (196, 1024),
    "dinosiglip-vit-so-224px": (256, 2176), "dinosiglip-vit-so-384px": (729, 2176),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PRISMATIC))
def test_prismatic_encoder_gives_prismatic_tokens_and_width(name: str) -> None:
    tokens, width = PRISMATIC[name]
    size = ENCODER_IDS[name].image_size
    with torch.device("meta"):
        released = create_vision_backbone(name, image_size=size)
    assert (released.embed_dim, released.num_tokens(), str(released.feature_tap)) == (width, tokens, "b-2")
    torch.manual_seed(0)
    narrow = create_vision_backbone(name, image_size=size, depth=3, embed_dim=32, num_heads=2).eval()
    with torch.no_grad():
        assert narrow(torch.randn(1, 3, size, size)).shape[1] == tokens


def test_fused_pair_normalizes_each_member_as_prismatic_does() -> None:
    from ssmvlm.backbones.zoo import get_backbone_entry

    torch.manual_seed(0)
    pair = create_vision_backbone("dinosiglip-vit-so-224px", depth=3, embed_dim=32, num_heads=2).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    siglip_spec = get_backbone_entry("siglip-vit-so400m").spec
    for_dino = build_image_transform("resize-naive", 224, pair.spec.mean, pair.spec.std)(image)
    for_siglip = build_image_transform("resize-naive", 224, siglip_spec.mean, siglip_spec.std)(image)
    with torch.no_grad():
        tokens = pair(for_dino[None])
        dino = pair.trunk["dino"].forward_intermediates(for_dino[None], indices=[1], intermediates_only=True,
                                                         output_fmt="NLC")[0]  # fmt: skip
        siglip = pair.trunk["siglip"].forward_intermediates(for_siglip[None], indices=[1], intermediates_only=True,
                                                            output_fmt="NLC")[0]  # fmt: skip
    assert torch.equal(tokens[..., :32], dino)
    assert torch.allclose(tokens[..., 32:], siglip, atol=1e-5)

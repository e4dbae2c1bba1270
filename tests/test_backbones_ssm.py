"""SSM and hybrid backbones (VMamba, Vim, MambaVision): official sizes and keys, checkpoints, taps, timm."""

from __future__ import annotations

import functools

import pytest
import torch
from safetensors.torch import save_file

from ssmvlm.backbones import create_vision_backbone, list_vision_backbones
from ssmvlm.backbones.zoo import get_backbone_entry
from ssmvlm.ops import available_backends
from ssmvlm.utils.errors import CheckpointError

SSM_FAMILIES = ("vmamba", "vim", "mambavision")
NANOS = ("vmamba_nano", "vim_nano", "mambavision_nano")

# Parameter counts (1000-class head included) and state-dict key counts of the official models, measured by
# building the upstream code (/work/shared/reference/ssm_backbones.md §1.2, §3.3, §4.3); they match the
# papers' and READMEs' 30.2M / 50.1M / ... figures.
OFFICIAL_PARAMS = {
    "vmamba_tiny_s1l8": (30_249_064, 276),
    "vmamba_tiny_s2l5": (30_705_832, 222),
    "vmamba_small_s2l15": (50_147_752, 402),
    "vmamba_base_s2l15": (88_557_800, 402),
    "vmamba_small_s1l20": (49_012_840, 492),
    "vmamba_base_s1l20": (86_614_504, 492),
    "vmamba_v0_tiny": (22_893_448, 212),
    "vmamba_v0_small": (44_417_416, 446),
    "vmamba_v0_base": (76_254_056, 446),
    "vim_tiny": (7_148_008, 415),
    "vim_small": (25_796_584, 415),
    "vim_base": (97_598_440, 415),
    "mambavision_t": (31_794_248, 252),
    "mambavision_t2": (35_104_008, None),
    "mambavision_s": (50_140_584, None),
    "mambavision_b": (97_685_288, None),
    "mambavision_l": (227_961_048, None),
}

# Selected official key shapes (reference §1.5, §3.3, §4.3).
OFFICIAL_SHAPES = {
    "vmamba_tiny_s1l8": {
        "layers.0.blocks.0.op.x_proj_weight": (4, 8, 96),
        "layers.0.blocks.0.op.A_logs": (384, 1),
        "layers.0.blocks.0.op.Ds": (384,),
        "layers.0.blocks.0.op.dt_projs_weight": (4, 96, 6),
        "layers.0.blocks.0.op.dt_projs_bias": (4, 96),
        "layers.0.blocks.0.op.in_proj.weight": (96, 96),
        "layers.0.blocks.0.op.conv2d.weight": (96, 1, 3, 3),
        "layers.0.blocks.0.op.out_norm.weight": (96,),
        "layers.0.blocks.0.mlp.fc1.weight": (384, 96),
        "layers.0.blocks.0.mlp.fc2.bias": (96,),
        "patch_embed.0.weight": (48, 3, 3, 3),
        "patch_embed.2.weight": (48,),
        "patch_embed.5.weight": (96, 48, 3, 3),
        "patch_embed.7.bias": (96,),
        "layers.1.downsample.1.weight": (384, 192, 3, 3),
        "layers.2.downsample.3.weight": (768,),
        "classifier.norm.weight": (768,),
        "classifier.head.weight": (1000, 768),
    },
    "vmamba_tiny_s2l5": {
        "layers.0.blocks.0.op.x_proj_weight": (4, 8, 192),
        "layers.0.blocks.0.op.A_logs": (768, 1),
        "layers.0.blocks.0.op.dt_projs_weight": (4, 192, 6),
        "layers.0.blocks.0.op.in_proj.weight": (192, 96),
        "layers.0.blocks.0.op.out_proj.weight": (96, 192),
    },
    "vmamba_v0_tiny": {
        "layers.0.blocks.0.op.x_proj_weight": (4, 38, 192),
        "layers.0.blocks.0.op.A_logs": (768, 16),
        "layers.0.blocks.0.op.in_proj.weight": (384, 96),
        "layers.0.blocks.0.op.conv2d.bias": (192,),
        "layers.0.blocks.0.op.out_proj.weight": (96, 192),
        "patch_embed.0.weight": (96, 3, 4, 4),
        "layers.0.downsample.reduction.weight": (192, 384),
        "layers.0.downsample.norm.weight": (384,),
    },
    "vim_tiny": {
        "cls_token": (1, 1, 192),
        "pos_embed": (1, 197, 192),
        "patch_embed.proj.weight": (192, 3, 16, 16),
        "layers.0.mixer.A_log": (384, 16),
        "layers.0.mixer.A_b_log": (384, 16),
        "layers.0.mixer.D_b": (384,),
        "layers.0.mixer.in_proj.weight": (768, 192),
        "layers.0.mixer.conv1d.weight": (384, 1, 4),
        "layers.0.mixer.conv1d_b.bias": (384,),
        "layers.0.mixer.x_proj.weight": (44, 384),
        "layers.0.mixer.dt_proj_b.weight": (384, 12),
        "layers.0.mixer.out_proj.weight": (192, 384),
        "layers.23.norm.weight": (192,),
        "norm_f.weight": (192,),
        "head.weight": (1000, 192),
    },
    "mambavision_t": {
        "patch_embed.conv_down.0.weight": (32, 3, 3, 3),
        "patch_embed.conv_down.3.weight": (80, 32, 3, 3),
        "patch_embed.conv_down.4.running_var": (80,),
        "levels.0.blocks.0.conv1.weight": (80, 80, 3, 3),
        "levels.0.downsample.reduction.0.weight": (160, 80, 3, 3),
        "levels.2.blocks.0.mixer.A_log": (160, 8),
        "levels.2.blocks.0.mixer.in_proj.weight": (320, 320),
        "levels.2.blocks.0.mixer.x_proj.weight": (36, 160),
        "levels.2.blocks.0.mixer.dt_proj.weight": (160, 20),
        "levels.2.blocks.0.mixer.conv1d_x.weight": (160, 1, 3),
        "levels.2.blocks.0.mlp.fc1.weight": (1280, 320),
        "levels.2.blocks.4.mixer.qkv.weight": (960, 320),
        "levels.2.blocks.4.mixer.qkv.bias": (960,),
        "norm.running_mean": (640,),
        "head.weight": (1000, 640),
    },
    "mambavision_b": {"levels.2.blocks.0.gamma_1": (512,), "levels.3.blocks.4.gamma_2": (1024,)},
}


@functools.cache
def meta_state_shapes(name: str) -> tuple[int, dict[str, tuple[int, ...]]]:
    """Parameter count and state-dict shapes of a full-size trunk, built on the meta device (no memory)."""
    with torch.device("meta"):
        trunk = get_backbone_entry(name).build_trunk()
    params = sum(p.numel() for p in trunk.parameters())
    return params, {key: tuple(value.shape) for key, value in trunk.state_dict().items()}


def small(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_vision_backbone(name, image_size=overrides.pop("image_size", 64), **overrides).eval()


def test_every_ssm_name_is_registered() -> None:
    names = {name for family in SSM_FAMILIES for name in list_vision_backbones(family)}
    assert names == set(OFFICIAL_PARAMS) | set(NANOS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_full_size_models_match_official_params_and_keys(name: str) -> None:
    params, shapes = meta_state_shapes(name)
    expected_params, expected_keys = OFFICIAL_PARAMS[name]
    assert params == expected_params
    if expected_keys is not None:
        assert len(shapes) == expected_keys
    for key, shape in OFFICIAL_SHAPES.get(name, {}).items():
        assert shapes[key] == shape, key


def test_mambavision_layouts_put_attention_in_the_last_half() -> None:
    from ssmvlm.backbones.mambavision import Attention

    with torch.device("meta"):
        trunk = get_backbone_entry("mambavision_t2").build_trunk()
    layouts = [
        "".join("A" if isinstance(b.mixer, Attention) else "M" for b in lvl.blocks)
        for lvl in trunk.levels[2:]
    ]
    assert layouts == ["M" * 6 + "A" * 5, "MMAA"]


@pytest.mark.parametrize("name", NANOS)
def test_nano_presets_are_matched(name: str) -> None:
    backbone = small(name, image_size=96)
    assert 2.7e6 <= backbone.param_count() <= 3.3e6
    assert backbone.trunk.num_classes == 0
    assert backbone.tap_info(backbone.default_feature_tap).stride == 16
    assert backbone.num_tokens(96) == 36 and backbone.num_tokens(224) == 196
    tokens = backbone(torch.randn(2, 3, 96, 96))
    assert tokens.shape == (2, 36, backbone.embed_dim)
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize(
    ("name", "tap", "size", "count", "dim"),
    [
        ("vmamba_nano", "s1", (64, 64), 256, 48),
        ("vmamba_nano", "s2.b0", (64, 96), 8 * 12, 96),
        ("vmamba_nano", "s3.b-3", (64, 128), 4 * 8, 192),
        ("vim_nano", "b0", (64, 128), 4 * 8, 192),
        ("vim_nano", "b-1", (96, 32), 6 * 2, 192),
        ("vim_nano", "b-1", (48, 80), 3 * 5, 192),
        ("mambavision_nano", "s2", (64, 128), 8 * 16, 96),
        ("mambavision_nano", "s3.b1", (96, 64), 6 * 4, 192),
    ],
)
def test_tokens_per_tap_and_resolution(
    name: str, tap: str, size: tuple[int, int], count: int, dim: int
) -> None:
    backbone = small(name, feature_tap=tap)
    tokens = backbone(torch.randn(1, 3, *size))
    assert tokens.shape == (1, count, dim)
    assert backbone.num_tokens(size) == count


def test_forward_stages_shapes() -> None:
    x = torch.randn(1, 3, 64, 96)
    for name in NANOS:
        backbone = small(name)
        stages = backbone.forward_stages(x)
        assert [s.shape[1] for s in stages] == backbone.stage_dims
        assert stages[-1].shape[-2:] == (4, 6)  # stride 16 for every nano's last stage


def test_vim_rejects_sizes_that_are_not_patch_multiples() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        small("vim_nano")(torch.randn(1, 3, 72, 64))


@pytest.mark.parametrize("name", ["vmamba_nano", "vim_nano", "mambavision_nano"])
def test_bad_taps_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        small(name, feature_tap="s9" if name != "vim_nano" else "b99")


def test_forward_tokens_computes_nothing_after_the_tap() -> None:
    backbone = small("vmamba_tiny_s1l8", depths=(1, 1, 2, 1), dims=(32, 64, 128, 256), feature_tap="s3.b0")
    called = []
    for module_name in ("layers.2.blocks.1", "layers.2.downsample", "layers.3"):
        backbone.trunk.get_submodule(module_name).register_forward_hook(
            lambda *_, n=module_name: called.append(n)
        )
    backbone(torch.randn(1, 3, 64, 64))
    assert called == []


def _round_trip(name: str, tmp_path, **overrides) -> None:
    source = small(name, **overrides)
    with torch.no_grad():  # make every value distinct from a fresh init, buffers included
        for tensor in source.trunk.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor).abs() + 0.5)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in source.trunk.state_dict().items()}, str(path))
    torch.manual_seed(1)
    target = create_vision_backbone(name, image_size=64, checkpoint=path, **overrides).eval()
    for key, value in source.trunk.state_dict().items():
        assert torch.equal(target.trunk.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("vmamba_nano", {}),
        ("vim_nano", {}),
        ("mambavision_nano", {}),
        ("vmamba_v0_tiny", {"depths": (1, 1, 1, 1), "dims": (32, 64, 128, 256)}),
        ("mambavision_b", {"depths": (1, 1, 2, 2), "dim": 32, "in_dim": 16}),
    ],
)
def test_random_state_dict_round_trips_strictly(name: str, overrides: dict, tmp_path) -> None:
    _round_trip(name, tmp_path, **overrides)


def test_wrapped_pth_checkpoint_loads(tmp_path) -> None:
    source = small("mambavision_nano")
    path = tmp_path / "mambavision_tiny_1k.pth.tar"
    torch.save({"model": source.trunk.state_dict(), "epoch": 3}, path)
    target = create_vision_backbone("mambavision_nano", image_size=64, checkpoint=path).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(target(x), source(x))


def test_checkpoint_of_another_model_is_refused(tmp_path) -> None:
    path = tmp_path / "vim.safetensors"
    save_file(small("vim_nano").trunk.state_dict(), str(path))
    with pytest.raises(CheckpointError, match="does not fit vmamba_nano"):
        create_vision_backbone("vmamba_nano", checkpoint=path)


def test_vmamba_legacy_names_and_conv_shaped_linears_load(tmp_path) -> None:
    reduced = {"depths": (1, 1, 1, 1), "dims": (32, 64, 128, 256)}
    source = small("vmamba_tiny_s1l8", **reduced)
    state = {}
    for key, value in source.trunk.state_dict().items():
        if key.endswith("op.in_proj.weight"):
            value = value[:, :, None, None]  # Linear2d weights saved as 1×1 convs
        key = key.replace(".op.", ".self_attention.").replace("blocks.0.norm.", "blocks.0.ln_1.")
        key = key.replace("classifier.head.", "head.").replace("classifier.norm.", "norm.")
        state[key] = value.contiguous()
    assert "head.weight" in state and any(".ln_1." in k for k in state)
    path = tmp_path / "legacy.safetensors"
    save_file(state, str(path))
    target = create_vision_backbone("vmamba_tiny_s1l8", image_size=64, checkpoint=path, **reduced)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(target.eval()(x), source(x))


def test_vim_pos_embed_is_interpolated_for_other_grids(tmp_path) -> None:
    from ssmvlm.backbones.vim import resize_pos_embed

    trained = small("vim_nano", image_size=96)  # 6×6 grid
    path = tmp_path / "vim_nano.safetensors"
    save_file(trained.trunk.state_dict(), str(path))
    bigger = create_vision_backbone("vim_nano", image_size=128, checkpoint=path)  # 8×8 grid
    assert bigger.trunk.pos_embed.shape == (1, 65, 192)
    cls_before = trained.trunk.pos_embed[0, 18]
    torch.testing.assert_close(
        bigger.trunk.pos_embed[0, 32], cls_before
    )  # class token entry kept, re-centred
    pos = torch.randn(1, 37, 4)
    assert resize_pos_embed(pos, (6, 6), (6, 6)) is pos
    assert resize_pos_embed(pos, (6, 6), (2, 10)).shape == (1, 21, 4)


def test_mambavision_window_padding_is_exactly_undone() -> None:
    level = small("mambavision_nano").trunk.levels[2]
    x = torch.randn(2, 192, 5, 9)  # not a multiple of the window
    torch.testing.assert_close(level.forward_blocks(x, 0), x)


def test_scan_backend_setting_reaches_every_mixer() -> None:
    for name in NANOS:
        backbone = small(name)
        backbone.scan_backend = "no-such-backend"
        assert backbone.scan_backend == "no-such-backend"
        with pytest.raises(ValueError, match="no-such-backend"):
            backbone(torch.randn(1, 3, 64, 64))


@pytest.mark.skipif(
    "torch" not in available_backends(), reason="the 'torch' selective-scan backend is not there yet"
)
@pytest.mark.parametrize("name", NANOS)
def test_reference_and_torch_backends_agree(name: str) -> None:
    backbone = small(name).double()
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    outputs = {}
    for backend in ("reference", "torch"):
        backbone.scan_backend = backend
        with torch.no_grad():
            outputs[backend] = backbone(x)
    torch.testing.assert_close(outputs["torch"], outputs["reference"], rtol=1e-5, atol=1e-5)


def test_timm_creates_the_classification_models(tmp_path) -> None:
    import timm

    import ssmvlm

    ssmvlm.register_with_timm()
    ssmvlm.register_with_timm()  # idempotent

    for name in OFFICIAL_PARAMS:
        cfg = timm.models.get_pretrained_cfg(name)
        assert (
            cfg.num_classes == 1000
            and cfg.file
            and cfg.file in get_backbone_entry(name).spec.pretrained_sources["in1k"]
        )
    with torch.device("meta"):
        model = timm.create_model("vmamba_small_s2l15")
    assert model.pretrained_cfg["file"] == "vssm_small_0229_ckpt_epoch_222.pth"
    assert model.classifier.head.out_features == 1000
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS["vmamba_small_s2l15"][0]
    with pytest.raises(CheckpointError, match=r"mambavision_tiny_1k\.pth\.tar"):
        timm.create_model("mambavision_t", pretrained=True)

    overrides = {"depths": (1, 1, 2, 2), "dim": 32, "in_dim": 16}
    source = timm.create_model("mambavision_t", **overrides).eval()
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = timm.create_model(
        "mambavision_t", pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **overrides
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    assert loaded(x).shape == (1, 1000)
    torch.testing.assert_close(loaded(x), source(x))
    refit = timm.create_model(
        "mambavision_t",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        num_classes=7,
        **overrides,
    )
    torch.testing.assert_close(
        refit.levels[0].blocks[0].conv1.weight, source.levels[0].blocks[0].conv1.weight
    )
    assert refit.head.out_features == 7


def test_vim_mixer_equals_its_two_directional_branches() -> None:
    """The mixer runs both directions as one grouped scan; it must equal Vim's two separate branches."""
    import torch.nn.functional as F

    from ssmvlm.backbones.vim import BiMambaMixer
    from ssmvlm.ops import selective_scan

    torch.manual_seed(0)
    mixer = BiMambaMixer(16).double()
    hidden = torch.randn(2, 7, 16, dtype=torch.float64)
    rank, state = mixer.dt_rank, mixer.d_state

    def branch(xz, conv, x_proj, dt_proj, a_log, d):
        x, z = xz.chunk(2, dim=1)
        x = F.silu(conv(x)[..., : xz.shape[-1]])
        dt, b, c = x_proj(x.transpose(1, 2)).split([rank, state, state], dim=-1)
        delta = dt_proj.weight @ dt.transpose(1, 2)
        return selective_scan(
            x, delta, -torch.exp(a_log), b.mT, c.mT, d, z=z, delta_bias=dt_proj.bias, delta_softplus=True
        )

    with torch.no_grad():
        xz = mixer.in_proj(hidden).transpose(1, 2)
        forward = branch(xz, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
        backward = branch(
            xz.flip(-1), mixer.conv1d_b, mixer.x_proj_b, mixer.dt_proj_b, mixer.A_b_log, mixer.D_b
        )
        expected = mixer.out_proj(((forward + backward.flip(-1)) / 2).transpose(1, 2))
        torch.testing.assert_close(mixer(hidden), expected)


def test_vmamba_inference_scans_channel_parts_at_high_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    backbone = small("vmamba_nano", image_size=(64, 96)).double()
    vmamba = sys.modules["ssmvlm.backbones.vmamba"]
    scan_orders = vmamba.SS2D.scan_orders
    widths: list[int] = []
    mirrored: list[bool] = []

    def counted(self, xs, *args) -> torch.Tensor:
        widths.append(xs.shape[1] // 4)  # (batch, 4 orders × channels, L)
        mirrored.append(isinstance(xs, vmamba.MirroredRows))
        return scan_orders(self, xs, *args)

    monkeypatch.setattr(vmamba.SS2D, "scan_orders", counted)
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        whole = backbone(x)
        first_mixer = backbone.trunk.layers[0].blocks[0].op.d_inner
        assert widths[0] == first_mixer and not any(mirrored)  # maps of 16x24 tokens and less: all channels
        widths.clear()
        mirrored.clear()
        monkeypatch.setattr(vmamba, "LARGE_MAP_TOKENS", 1)
        monkeypatch.setattr(vmamba, "TOKEN_PART", 50)  # token-wise sublayers in parts of 50 tokens and a remainder
        monkeypatch.setattr(vmamba, "SCAN_PART_ELEMENTS", 4 * 16 * 24 * first_mixer // 4)  # a quarter per part
        in_parts = backbone(x)
    assert widths[:4] == [first_mixer // 4] * 4
    # parts write two orders, the reverses are read backwards from them (the CPU backend materializes them)
    assert all(mirrored) and len(mirrored) > 4
    torch.testing.assert_close(in_parts, whole, rtol=1e-10, atol=1e-10)
    mirrored.clear()
    widths.clear()
    backbone(x.requires_grad_()).sum().backward()  # under autograd every channel scans at once
    assert widths[0] == first_mixer and not any(mirrored)
    widths.clear()
    with torch.no_grad():
        backbone.train()(x)  # and in training mode (drop path), whatever the gradient mode
    assert widths[0] == first_mixer
    widths.clear()
    # and while torch.compile traces (on the CPU the torch scan breaks the graph, so the trace is said to be on)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.no_grad():
        traced = backbone.eval()(x)
    assert widths[0] == first_mixer
    torch.testing.assert_close(traced, whole, rtol=1e-10, atol=1e-10)


def test_vmamba_projects_once_on_the_map_as_on_the_four_orders() -> None:
    import sys

    from ssmvlm.ops import cross_scan

    small("vmamba_nano")  # imports the module
    mixer = sys.modules["ssmvlm.backbones.vmamba"].SS2D(16, d_state=2, ssm_ratio=1.0, version="v2", conv_bias=False)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    per_order = torch.einsum("bkdl,kcd->bkcl", cross_scan(x), mixer.x_proj_weight.double())
    torch.testing.assert_close(mixer.double().project_orders(x), per_order, rtol=1e-12, atol=1e-12)


def test_vmamba_v0_mixer_channel_parts_match(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    small("vmamba_nano")  # imports the module
    vmamba = sys.modules["ssmvlm.backbones.vmamba"]
    mixer = vmamba.SS2D(10, d_state=4, ssm_ratio=2.0, version="v0", conv_bias=True).double().eval()  # 20 channels
    x = torch.randn(2, 20, 5, 7, dtype=torch.float64)
    tokens = torch.randn(2, 5, 7, 10, dtype=torch.float64)
    with torch.no_grad():
        whole, whole_mixer = mixer.scan_2d(x), mixer(tokens)
        monkeypatch.setattr(vmamba, "SCAN_PART_ELEMENTS", 2 * 4 * 35 * 7)  # parts of 7, 7 and 6 channels
        monkeypatch.setattr(vmamba, "LARGE_MAP_TOKENS", 1)
        monkeypatch.setattr(vmamba, "TOKEN_PART", 8)  # the gated output in parts of 8 tokens
        in_parts, mixer_in_parts = mixer.scan_2d(x), mixer(tokens)
    assert in_parts.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(in_parts, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mixer_in_parts, whole_mixer, rtol=1e-12, atol=1e-12)

"""MambaVision (NVlabs/MambaVision): convolutional stages 1–2, windowed Mamba + attention stages 3–4.

Module and parameter names follow ``mambavision/models/mamba_vision.py`` so the released checkpoints load with
``strict=True``. The released mixer's quirks are kept because the trained weights depend on them: the dt bias
is added twice (inside ``dt_proj`` and again as the scan's ``delta_bias``), both depthwise convs have no bias
and 'same' (non-causal) padding, and the SSM branch is concatenated with the SiLU(conv(z)) branch rather than
gated by it. Stages 3–4 zero-pad the map to a multiple of the window and run every block on each window as
a sequence (raster order inside the window); at 224² the windows (14, 7) cover the whole map.

Feature taps return a stage's features before its downsample, unnormalised (the release has no norm there;
its head norm is a BatchNorm on the last stage only).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from ssmvlm.backbones.attention import Attention
from ssmvlm.backbones.base import FeatureTap, TapInfo, VisionBackbone
from ssmvlm.backbones.ssm_common import ScanBackendSetting, register_config_table, set_scan_backend
from ssmvlm.backbones.weight_init import init_linear_and_layernorm
from ssmvlm.data.transforms import as_height_width
from ssmvlm.ops import selective_scan

CONV_STAGES = 2


class MambaVisionMixer(nn.Module):
    def __init__(self, d_model: int, *, d_state: int = 8, d_conv: int = 3) -> None:
        super().__init__()
        half = d_model // 2
        self.d_state = d_state
        self.dt_rank = dt_rank = math.ceil(d_model / 16)
        self.scan_backend: str | None = None
        self.in_proj = nn.Linear(d_model, d_model, bias=False)
        self.x_proj = nn.Linear(half, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, half)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(half, 1)
        )
        self.D = nn.Parameter(torch.ones(half))
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.conv1d_x = nn.Conv1d(half, half, d_conv, padding="same", groups=half, bias=False)
        self.conv1d_z = nn.Conv1d(half, half, d_conv, padding="same", groups=half, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (B, C/2, L) each
        x = F.silu(self.conv1d_x(x))
        z = F.silu(self.conv1d_z(z))
        dt, b, c = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj(dt).transpose(
            1, 2
        )  # includes the bias; the scan adds it once more (release quirk)
        y = selective_scan(
            x, delta, -torch.exp(self.A_log.float()),
            b.transpose(1, 2).contiguous(), c.transpose(1, 2).contiguous(), self.D.float(),
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True, backend=self.scan_backend,
        )  # fmt: skip
        return self.out_proj(torch.cat([y, z], dim=1).transpose(1, 2))


class Block(nn.Module):
    def __init__(
        self, dim: int, *, attention: bool, num_heads: int, drop_path: float, layer_scale: float | None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = Attention(dim, num_heads) if attention else MambaVisionMixer(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim, act_layer=nn.GELU)
        if layer_scale is not None:
            self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma_1 * self.mixer(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class ConvBlock(nn.Module):
    def __init__(self, dim: int, drop_path: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act1 = nn.GELU(approximate="tanh")
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x))))))


class Downsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(x)


class PatchEmbed(nn.Module):
    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.conv_down = nn.Sequential(
            nn.Conv2d(3, in_dim, 3, 2, 1, bias=False), nn.BatchNorm2d(in_dim, eps=1e-4), nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False), nn.BatchNorm2d(dim, eps=1e-4), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_down(x)


def attention_indices(depth: int) -> range:
    """Attention blocks of a hybrid stage: the last half (the middle block is Mamba when depth is odd)."""
    return range(depth // 2 + 1, depth) if depth % 2 else range(depth // 2, depth)


class MambaVisionLayer(nn.Module):
    """One stage: conv blocks, or windowed hybrid blocks; then the downsample (None for the last stage)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        *,
        conv: bool,
        num_heads: int,
        window_size: int,
        drop_paths: list[float],
        layer_scale: float | None,
        downsample: bool,
    ) -> None:
        super().__init__()
        self.conv = conv
        self.window_size = window_size
        if conv:
            self.blocks = nn.ModuleList([ConvBlock(dim, drop_paths[i]) for i in range(depth)])
        else:
            attention = set(attention_indices(depth))
            self.blocks = nn.ModuleList([
                Block(dim, attention=i in attention, num_heads=num_heads, drop_path=drop_paths[i],
                      layer_scale=layer_scale)
                for i in range(depth)
            ])  # fmt: skip
        self.downsample = Downsample(dim) if downsample else None

    def forward_blocks(self, x: torch.Tensor, count: int | None = None) -> torch.Tensor:
        """(B, C, H, W) through the first ``count`` blocks (all by default), before the downsample."""
        blocks = self.blocks[:count]
        if self.conv:
            for block in blocks:
                x = block(x)
            return x
        height, width = x.shape[-2:]
        size = self.window_size
        x = F.pad(x, (0, -width % size, 0, -height % size))
        padded_h, padded_w = x.shape[-2:]
        windows = window_partition(x, size)
        for block in blocks:
            windows = block(windows)
        return window_reverse(windows, size, padded_h, padded_w)[:, :, :height, :width].contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


def window_partition(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) → (B·nW, size², C), windows in raster order, raster order inside each window."""
    batch, channels, height, width = x.shape
    x = x.view(batch, channels, height // size, size, width // size, size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, size * size, channels)


def window_reverse(windows: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    channels = windows.shape[-1]
    x = windows.view(-1, height // size, width // size, size, size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, channels, height, width)


class MambaVision(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        in_dim: int,
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        window_size: tuple[int, ...],
        layer_scale: float | None = None,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.dims = [dim * 2**i for i in range(len(depths))]
        self.num_classes = num_classes
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.patch_embed = PatchEmbed(in_dim, dim)
        self.levels = nn.ModuleList([
            MambaVisionLayer(
                self.dims[i], depth, conv=i < CONV_STAGES, num_heads=num_heads[i], window_size=window_size[i],
                drop_paths=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                layer_scale=layer_scale if i >= CONV_STAGES else None, downsample=i < len(depths) - 1,
            )
            for i, depth in enumerate(depths)
        ])  # fmt: skip
        self.norm = nn.BatchNorm2d(self.dims[-1])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        # As the release does, every Linear is re-initialised here, dt_proj included.
        self.apply(init_linear_and_layernorm)
        set_scan_backend(self, scan_backend)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head


class MambaVisionBackbone(ScanBackendSetting, VisionBackbone):
    trunk: MambaVision

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        stage, _ = self._resolve(tap)
        return TapInfo(dim=self.trunk.dims[stage], stride=4 * 2**stage)

    def _resolve(self, tap: FeatureTap) -> tuple[int, int]:
        return tap.stage_block_index([len(level.blocks) for level in self.trunk.levels], self.name)

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        stage, block = self._resolve(tap)
        x = self.trunk.patch_embed(pixel_values)
        for level in self.trunk.levels[:stage]:
            x = level(x)
        x = self.trunk.levels[stage].forward_blocks(x, block + 1)
        return x.flatten(2).transpose(1, 2)

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        x = self.trunk.patch_embed(pixel_values)
        stages = []
        for level in self.trunk.levels:
            x = level.forward_blocks(x)
            stages.append(x)
            if level.downsample is not None:
                x = level.downsample(x)
        return stages

    @property
    def stage_dims(self) -> list[int]:
        return list(self.trunk.dims)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Strip ``module.`` / ``encoder.`` prefixes of training wrappers (as the release's loader does)."""
        for prefix in ("module.", "encoder."):
            if state and all(key.startswith(prefix) for key in state):
                state = {key[len(prefix) :]: value for key, value in state.items()}
        return state

    def is_head_key(self, key: str) -> bool:
        return key.startswith(("head.", "norm."))


_HUB = "https://huggingface.co/nvidia/MambaVision"
_WINDOWS = (8, 8, 14, 7)
_HEADS = (2, 4, 8, 16)

# name → (trunk config, official checkpoint, description)
MAMBAVISION_CONFIGS: dict[str, tuple[dict[str, Any], str | None, str]] = {
    "mambavision_t": (dict(dim=80, in_dim=32, depths=(1, 3, 8, 4), num_heads=_HEADS, window_size=_WINDOWS,
                           drop_path_rate=0.2),
                      f"{_HUB}-T-1K/resolve/main/mambavision_tiny_1k.pth.tar", "MambaVision-T"),
    "mambavision_t2": (dict(dim=80, in_dim=32, depths=(1, 3, 11, 4), num_heads=_HEADS, window_size=_WINDOWS,
                            drop_path_rate=0.2),
                       f"{_HUB}-T2-1K/resolve/main/mambavision_tiny2_1k.pth.tar", "MambaVision-T2"),
    "mambavision_s": (dict(dim=96, in_dim=64, depths=(3, 3, 7, 5), num_heads=_HEADS, window_size=_WINDOWS,
                           drop_path_rate=0.2),
                      f"{_HUB}-S-1K/resolve/main/mambavision_small_1k.pth.tar", "MambaVision-S"),
    "mambavision_b": (dict(dim=128, in_dim=64, depths=(3, 3, 10, 5), num_heads=_HEADS, window_size=_WINDOWS,
                           drop_path_rate=0.3, layer_scale=1e-5),
                      f"{_HUB}-B-1K/resolve/main/mambavision_base_1k.pth.tar", "MambaVision-B, layer scale"),
    "mambavision_l": (dict(dim=196, in_dim=64, depths=(3, 3, 10, 5), num_heads=(4, 8, 16, 32),
                           window_size=_WINDOWS, drop_path_rate=0.3, layer_scale=1e-5),
                      f"{_HUB}-L-1K/resolve/main/mambavision_large_1k.pth.tar", "MambaVision-L, layer scale"),
    # Study preset: three stages, the tap (stage 3, stride 16) is the last one, no classification head. The
    # stage-3 window is the stage-3 grid at the build resolution, so that, as the released models do at 224²,
    # stage 3 runs as one global window (see _build).
    "mambavision_nano": (dict(dim=48, in_dim=24, depths=(1, 2, 6), num_heads=(2, 4, 8), num_classes=0),
                         None, "MambaVision nano (3 stages, 3 Mamba + 3 attention blocks, ~3M parameters)"),
}  # fmt: skip


def _build(config: dict[str, Any], image_size: int | tuple[int, int] = 224, **overrides: Any) -> MambaVision:
    settings = {**config, **overrides}
    if "window_size" not in settings:
        height, width = as_height_width(image_size)
        settings["window_size"] = (8, 8, math.ceil(max(height, width) / 16))
    return MambaVision(**settings)


register_config_table(
    MAMBAVISION_CONFIGS, family="mambavision", kind="hybrid", default_tap="s3", wrapper=MambaVisionBackbone,
    build=_build,
)  # fmt: skip

"""ViT-Adapter (czczup/ViT-Adapter, segmentation): a plain ViT plus a convolutional spatial prior and
injector/extractor interactions through multi-scale deformable attention, giving four maps at strides 4–32.

Module and parameter names follow ``mmseg_custom/models/backbones/vit_adapter.py`` (with its ``base/vit.py``
ViT, ``adapter_modules.py`` and the ``MSDeformAttn`` module of its ``ops``), so the ``backbone.*`` entries of
the released mmseg checkpoints load with ``strict=True``. ``vit_adapter_deit_base`` is the ADE20K UperNet
DeiT-B configuration (``upernet_deit_adapter_base_512_160k_ade20k.py``): 12 deformable heads, 4 points,
deform ratio 0.5, ConvFFN ratio 0.25, interactions after blocks 2, 5, 8 and 11, extra extractors in the last.

The deformable attention samples its values with ``F.grid_sample`` (bilinear, zero padding, corners not
aligned), the computation the upstream CUDA kernel implements and its PyTorch reference spells out, so it
runs on any device. The ViT's position embeddings stay at the 224² pretraining grid (``pos_embed`` (1, 197, D),
the class slot unused) and are resized bicubically to the input grid, as upstream. SyncBatchNorm layers are
BatchNorm2d here (the same parameters and buffers; inference only).

Taps ``s1``..``s4`` are the adapter's outputs ``f1``..``f4`` (strides 4, 8, 16, 32, each after its norm).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from ssmvlm.backbones.attention import Attention
from ssmvlm.backbones.base import BackboneSpec, FeatureTap, TapInfo, VisionBackbone
from ssmvlm.backbones.registry import register_backbone
from ssmvlm.data.transforms import as_height_width
from ssmvlm.utils.errors import ConfigError

STRIDES = (4, 8, 16, 32)
PRETRAIN_GRID = 14  # pos_embed is stored for 224² / 16


def deformable_sample(
    value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Multi-scale deformable attention: value (N, S, M, D) over levels ``shapes``, sampling ``locations``
    (N, Lq, M, L, P, 2) in [0, 1] (x, y) weighted by ``weights`` (N, Lq, M, L, P) → (N, Lq, M·D)."""
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1  # grid_sample's [-1, 1] frame
    sampled = []
    for level, (height, width) in enumerate(shapes):
        maps = per_level[level].flatten(2).transpose(1, 2).reshape(batch * heads, dim, height, width)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (N·M, Lq, P, 2)
        sampled.append(F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (N·M, D, Lq, L·P)
    weights = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (stacked * weights).sum(-1).view(batch, heads * dim, queries)
    return out.transpose(1, 2)


class MSDeformAttn(nn.Module):
    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int, ratio: float) -> None:
        super().__init__()
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.value_dim = int(d_model * ratio)
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, self.value_dim)
        self.output_proj = nn.Linear(self.value_dim, d_model)

    def forward(
        self, query: torch.Tensor, reference: torch.Tensor, features: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        batch, queries, _ = query.shape
        value = self.value_proj(features).view(batch, features.shape[1], self.n_heads, -1)
        offsets = self.sampling_offsets(query).view(batch, queries, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(batch, queries, self.n_heads, -1).softmax(-1)
        weights = weights.view(batch, queries, self.n_heads, self.n_levels, self.n_points)
        # offsets are in pixels of each level: normalized by its (width, height)
        normalizer = torch.tensor([(w, h) for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(deformable_sample(value, shapes, locations, weights))


def reference_points(shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Pixel centres of every level, normalized to [0, 1] as (x, y): (1, Σ H·W, 1, 2)."""
    points = []
    for height, width in shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height,
            (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width,
            indexing="ij",
        )
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return torch.cat(points)[None, :, None]


class Block(nn.Module):
    """The adapter's ViT block: pre-norm attention and MLP, each scaled by a learned ``gamma`` (layer scale)."""

    def __init__(self, dim: int, num_heads: int, drop_path: float) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm(dim)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    """A ResNet-like stem and three stride-2 convolutions: c1..c4 at strides 4..32, projected to ``dim``."""

    def __init__(self, inplanes: int, dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn_relu(3, inplanes, 2), *_conv_bn_relu(inplanes, inplanes, 1),
            *_conv_bn_relu(inplanes, inplanes, 1), nn.MaxPool2d(3, 2, 1),
        )  # fmt: skip
        self.conv2 = nn.Sequential(*_conv_bn_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """c1 as a (B, D, H/4, W/4) map; c2, c3, c4 as one token sequence (B, Σ, D)."""
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        tokens = [fc(c).flatten(2).transpose(1, 2) for fc, c in ((self.fc2, c2), (self.fc3, c3), (self.fc4, c4))]
        return self.fc1(c1), tokens


class DWConv(nn.Module):
    """A depthwise 3×3 convolution applied to each of the three levels of a c2/c3/c4 token sequence."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        parts = x.split([h * w for h, w in shapes], dim=1)
        out = [self.dwconv(p.transpose(1, 2).unflatten(2, shape)).flatten(2).transpose(1, 2)
               for p, shape in zip(parts, shapes, strict=True)]  # fmt: skip
        return torch.cat(out, dim=1)


class ConvFFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), shapes)))


class Injector(nn.Module):
    """ViT tokens attend (deformably) to the spatial prior's three levels."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MSDeformAttn(dim, 3, heads, points, ratio)
        self.gamma = nn.Parameter(torch.zeros(dim))

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, reference: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        return x + self.gamma * self.attn(self.query_norm(x), reference, self.feat_norm(c), shapes)


class Extractor(nn.Module):
    """The spatial prior's tokens attend (deformably) to the ViT tokens, then a ConvFFN."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float, cffn_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MSDeformAttn(dim, 1, heads, points, ratio)
        self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        c: torch.Tensor,
        x: torch.Tensor,
        reference: torch.Tensor,
        grid: tuple[int, int],
        c_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        c = c + self.attn(self.query_norm(c), reference, self.feat_norm(x), [grid])
        return c + self.drop_path(self.ffn(self.ffn_norm(c), c_shapes))


class InteractionBlock(nn.Module):
    def __init__(self, dim: int, *, extra: bool, **settings: Any) -> None:
        super().__init__()
        drop_path = settings.pop("drop_path")
        self.injector = Injector(dim, **{k: settings[k] for k in ("heads", "points", "ratio")})
        self.extractor = Extractor(dim, **settings, drop_path=drop_path)
        self.extra_extractors = (
            nn.Sequential(*[Extractor(dim, **settings, drop_path=drop_path) for _ in range(2)]) if extra else None
        )


class ViTAdapter(nn.Module):
    def __init__(
        self,
        *,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 16,
        conv_inplane: int = 64,
        n_points: int = 4,
        deform_num_heads: int = 12,
        cffn_ratio: float = 0.25,
        deform_ratio: float = 0.5,
        interaction_indexes: tuple[tuple[int, int], ...] = ((0, 2), (3, 5), (6, 8), (9, 11)),
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.interaction_indexes = interaction_indexes
        self.patch_embed = PatchEmbed(embed_dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID**2 + 1, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, rates[i]) for i in range(depth)])
        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.spm = SpatialPriorModule(conv_inplane, embed_dim)
        settings = dict(heads=deform_num_heads, points=n_points, ratio=deform_ratio, cffn_ratio=cffn_ratio,
                        drop_path=drop_path_rate)  # fmt: skip
        self.interactions = nn.Sequential(*[
            InteractionBlock(embed_dim, extra=i == len(interaction_indexes) - 1, **settings)
            for i in range(len(interaction_indexes))
        ])  # fmt: skip
        self.up = nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)
        for index in range(1, 5):
            self.add_module(f"norm{index}", nn.BatchNorm2d(embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.level_embed)

    def forward_levels(self, pixels: torch.Tensor, count: int = 4) -> list[torch.Tensor]:
        """The first ``count`` of the normed outputs f1..f4, (B, D, H/s, W/s) for s = 4, 8, 16, 32."""
        height, width = pixels.shape[-2:]
        grid = (height // 16, width // 16)
        c_shapes = [(height // 8, width // 8), grid, (height // 32, width // 32)]
        to_c = reference_points([grid], pixels.device)  # ViT tokens query the three prior levels
        to_x = reference_points(c_shapes, pixels.device)  # prior tokens query the ViT grid

        c1, c_levels = self.spm(pixels)
        c = torch.cat([level + self.level_embed[i] for i, level in enumerate(c_levels)], dim=1)
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        pos = self.pos_embed[:, 1:].reshape(1, PRETRAIN_GRID, PRETRAIN_GRID, -1).permute(0, 3, 1, 2)
        x = x + F.interpolate(pos, size=grid, mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        vit_maps = []
        for interaction, (first, last) in zip(self.interactions, self.interaction_indexes, strict=True):
            x = interaction.injector(x, c, to_c, c_shapes)
            x = self.blocks[first : last + 1](x)
            c = interaction.extractor(c, x, to_x, grid, c_shapes)
            for extractor in interaction.extra_extractors or ():
                c = extractor(c, x, to_x, grid, c_shapes)
            vit_maps.append(x.transpose(1, 2).unflatten(2, grid))
        c2, c3, c4 = (part.transpose(1, 2).unflatten(2, shape)
                      for part, shape in zip(c.split([h * w for h, w in c_shapes], 1), c_shapes, strict=True))
        levels = [self.up(c2) + c1, c2, c3, c4]  # fmt: skip
        scales = (4.0, 2.0, 1.0, 0.5)  # the ViT maps (stride 16) added at every level
        outs = []
        for index in range(count):
            vit = vit_maps[index]
            if scales[index] != 1.0:
                vit = F.interpolate(vit, scale_factor=scales[index], mode="bilinear", align_corners=False)
            outs.append(getattr(self, f"norm{index + 1}")(levels[index] + vit))
        return outs


class ViTAdapterBackbone(VisionBackbone):
    trunk: ViTAdapter

    def _level(self, tap: FeatureTap) -> int:
        if tap.stage is None or not 1 <= tap.stage <= len(STRIDES) or tap.block != -1 or tap.stage_input:
            raise ValueError(f"{self.name}: taps are the adapter's outputs s1..s4, got {tap}")
        return tap.stage - 1

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        return TapInfo(dim=self.trunk.embed_dim, stride=STRIDES[self._level(tap)])

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        height, width = pixel_values.shape[-2:]
        if height % 32 or width % 32:
            raise ConfigError(
                "image_size", f"{self.name} needs height and width that are multiples of 32 (its stride-32 "
                f"prior level and the interactions' grids), got {height}x{width}"
            )  # fmt: skip

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        self._check_input(pixel_values)
        level = self._level(tap)
        return self.trunk.forward_levels(pixel_values, level + 1)[level].flatten(2).transpose(1, 2)

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(pixel_values)
        return self.trunk.forward_levels(pixel_values)

    @property
    def stage_dims(self) -> list[int]:
        return [self.trunk.embed_dim] * len(STRIDES)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An mmseg checkpoint's ``backbone.*`` entries (decode and auxiliary heads left out)."""
        if any(key.startswith("backbone.") for key in state):
            state = {key.removeprefix("backbone."): v for key, v in state.items() if key.startswith("backbone.")}
        return state

    def is_head_key(self, key: str) -> bool:
        return False  # every trunk tensor is in a segmentation checkpoint


def _register() -> None:
    spec = BackboneSpec(
        name="vit_adapter_deit_base", family="vit_adapter", kind="transformer", default_tap="s4",
        default_image_size=512,
        pretrained_sources={"ade20k": "upernet_deit_adapter_base_512_160k_ade20k.pth (czczup/ViT-Adapter)"},
        description="ViT-Adapter DeiT-B (ADE20K UperNet configuration): taps s1..s4 = f1..f4 (strides 4..32)",
    )  # fmt: skip

    def build(image_size: int | tuple[int, int] = 512, **overrides: Any) -> ViTAdapter:
        height, width = as_height_width(image_size)
        if height % 32 or width % 32:
            raise ConfigError("image_size", f"vit_adapter_deit_base needs multiples of 32, got {height}x{width}")
        return ViTAdapter(**overrides)

    register_backbone(spec, ViTAdapterBackbone)(build)


_register()

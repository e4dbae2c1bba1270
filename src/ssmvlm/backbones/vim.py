"""Vision Mamba / Vim (hustvl/Vim): bidirectional ("bimamba v2") Mamba blocks over 16×16 patches.

Module and parameter names follow ``vim/models_mamba.py`` and its mamba fork, so the released checkpoints load
with ``strict=True``. The class token sits in the middle of the sequence (index M // 2 for M patches), as in
the ``*_midclstok`` releases; absolute position embeddings are bicubically interpolated over the patch grid
(class-token entry kept) when the input grid differs from the trunk's, so any size that is a multiple of 16,
square or not, works.

Feature taps return the patch tokens (class token dropped) of the residual stream after a block. The last
block's output goes through the trained ``norm_f``; earlier taps get a parameter-free RMS normalisation,
the same normalisation without ``norm_f``'s learned scale (which belongs to the last block): the residual
stream is kept in fp32 unnormalised and its scale grows with depth, and the connector should not see that.
The default tap is ``b-2`` (the output of the second-to-last block), the same rule the study uses for ViTs
(prismatic-vlms), so that plain SSM and plain transformer encoders are read at the same relative depth.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from ssmvlm.backbones.base import FeatureTap, TapInfo, VisionBackbone
from ssmvlm.backbones.ssm_common import ScanBackendSetting, init_dt_projection, register_config_table, set_scan_backend
from ssmvlm.data.transforms import as_height_width
from ssmvlm.ops import selective_scan

PATCH_SIZE = 16


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.eps) * self.weight


def rms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class BiMambaMixer(nn.Module):
    """Mamba mixer with ``bimamba_type="v2"``: a shared in_proj, a forward and a flipped backward branch
    (each: causal depthwise conv1d k=4 → SiLU → x_proj → dt_proj → selective scan gated by SiLU(z)),
    averaged, then out_proj."""

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.d_inner = d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = dt_rank = math.ceil(d_model / 16)
        self.scan_backend: str | None = None
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
        for suffix in ("", "_b"):
            self.add_module(f"conv1d{suffix}", nn.Conv1d(d_inner, d_inner, d_conv, padding=d_conv - 1,
                                                         groups=d_inner))  # fmt: skip
            self.add_module(f"x_proj{suffix}", nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False))
            dt_proj = nn.Linear(dt_rank, d_inner)
            init_dt_projection(dt_proj.weight, dt_proj.bias, dt_rank)
            self.add_module(f"dt_proj{suffix}", dt_proj)
        self.A_log = nn.Parameter(a_log.clone())
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_b_log = nn.Parameter(a_log.clone())
        self.D_b = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2E, L)
        x, z = xz.chunk(2, dim=1)
        # One grouped scan for both directions: channels [0, E) forward, [E, 2E) on the flipped sequence.
        x_fwd = F.silu(self.conv1d(x)[..., :length])
        x_bwd = F.silu(self.conv1d_b(x.flip(-1))[..., :length])
        delta_fwd, b_fwd, c_fwd = self._ssm_inputs(x_fwd, self.x_proj, self.dt_proj)
        delta_bwd, b_bwd, c_bwd = self._ssm_inputs(x_bwd, self.x_proj_b, self.dt_proj_b)
        y = selective_scan(
            torch.cat([x_fwd, x_bwd], dim=1),
            torch.cat([delta_fwd, delta_bwd], dim=1),
            -torch.exp(torch.cat([self.A_log, self.A_b_log]).float()),
            torch.stack([b_fwd, b_bwd], dim=1),
            torch.stack([c_fwd, c_bwd], dim=1),
            torch.cat([self.D, self.D_b]).float(),
            z=torch.cat([z, z.flip(-1)], dim=1),
            delta_bias=torch.cat([self.dt_proj.bias, self.dt_proj_b.bias]).float(),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        y_fwd, y_bwd = y.chunk(2, dim=1)
        return self.out_proj(((y_fwd + y_bwd.flip(-1)) / 2).transpose(1, 2))

    def _ssm_inputs(
        self, x: torch.Tensor, x_proj: nn.Linear, dt_proj: nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_dbl = x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, b, c = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)  # the bias goes in as the scan's delta_bias
        return delta, b.transpose(1, 2).contiguous(), c.transpose(1, 2).contiguous()


class VimBlock(nn.Module):
    """Add → RMSNorm → mixer, carrying the residual stream separately (in fp32) as Vim does."""

    def __init__(self, dim: int, drop_path: float) -> None:
        super().__init__()
        self.mixer = BiMambaMixer(dim)
        self.norm = RMSNorm(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        residual = hidden.float() if residual is None else residual + self.drop_path(hidden).float()
        return self.mixer(self.norm(residual.to(self.norm.weight.dtype))), residual


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH_SIZE, PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(
                f"Vim needs an input size that is a multiple of {PATCH_SIZE}; got {height}x{width}"
            )
        return self.proj(x)


class VisionMamba(nn.Module):
    """Vim with a middle class token; ``pos_embed`` is (1, grid² + 1, D) for the grid it was built for."""

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        grid: tuple[int, int] = (14, 14),
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.grid = tuple(grid)
        self.patch_embed = PatchEmbed(embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + 1, embed_dim))
        rates = [0.0, *torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()]
        self.layers = nn.ModuleList([VimBlock(embed_dim, rates[i]) for i in range(depth)])
        self.norm_f = RMSNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(depth)
        set_scan_backend(self, scan_backend)

    def _init_weights(self, depth: int) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        for layer in self.layers:  # GPT-2 style rescaling of the residual projections, as mamba does
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            layer.mixer.out_proj.weight.data /= math.sqrt(depth)

    def embed(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens with the class token inserted at index M // 2 and position embeddings added."""
        patches = self.patch_embed(pixel_values)
        grid = (patches.shape[2], patches.shape[3])
        tokens = patches.flatten(2).transpose(1, 2)
        middle = tokens.shape[1] // 2
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :middle], cls, tokens[:, middle:]], dim=1)
        return tokens + resize_pos_embed(self.pos_embed, self.grid, grid), grid

    def run_blocks(self, tokens: torch.Tensor, count: int) -> torch.Tensor:
        """The residual stream after the first ``count`` blocks, normalised (by norm_f after the last)."""
        hidden, residual = tokens, None
        for layer in self.layers[:count]:
            hidden, residual = layer(hidden, residual)
        stream = residual + hidden.float() if residual is not None else hidden.float()
        if count == len(self.layers):
            return self.norm_f(stream.to(self.norm_f.weight.dtype))
        return rms_norm(stream).to(tokens.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.embed(x)
        return self.run_blocks(tokens, len(self.layers))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        cls = x[:, (x.shape[1] - 1) // 2]
        return cls if pre_logits else self.head(cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head


def resize_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Bicubic resize of a middle-class-token pos embed (1, M + 1, D) from one patch grid to another."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    old_count = old_grid[0] * old_grid[1]
    if pos_embed.shape[1] != old_count + 1:
        raise ValueError(
            f"pos_embed has {pos_embed.shape[1]} entries; a {old_grid} grid needs {old_count + 1}"
        )
    old_middle, new_middle = old_count // 2, (new_grid[0] * new_grid[1]) // 2
    cls = pos_embed[:, old_middle : old_middle + 1]
    patches = torch.cat([pos_embed[:, :old_middle], pos_embed[:, old_middle + 1 :]], dim=1)
    patches = patches.reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=new_grid, mode="bicubic", align_corners=False)
    patches = patches.to(pos_embed.dtype).flatten(2).transpose(1, 2)
    return torch.cat([patches[:, :new_middle], cls, patches[:, new_middle:]], dim=1)


def drop_class_token(stream: torch.Tensor) -> torch.Tensor:
    middle = (stream.shape[1] - 1) // 2
    return torch.cat([stream[:, :middle], stream[:, middle + 1 :]], dim=1)


class VimBackbone(ScanBackendSetting, VisionBackbone):
    trunk: VisionMamba

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        self._resolve(tap)
        return TapInfo(dim=self.trunk.embed_dim, stride=PATCH_SIZE)

    def _resolve(self, tap: FeatureTap) -> int:
        """The number of blocks a tap runs."""
        depth = len(self.trunk.layers)
        if tap.stage not in (None, 1) or not -depth <= tap.block < depth:
            raise ValueError(f"{self.name}: feature tap {tap} must be 'bK' with -{depth} <= K < {depth}")
        return tap.block % depth + 1

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        tokens, _ = self.trunk.embed(pixel_values)
        return drop_class_token(self.trunk.run_blocks(tokens, self._resolve(tap)))

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        tokens, grid = self.trunk.embed(pixel_values)
        patches = drop_class_token(self.trunk.run_blocks(tokens, len(self.trunk.layers)))
        return [patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid)]

    @property
    def stage_dims(self) -> list[int]:
        return [self.trunk.embed_dim]

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Interpolate a checkpoint's pos_embed (e.g. 14×14 at 224²) to this trunk's grid."""
        pos = state.get("pos_embed")
        if pos is None or pos.shape[1] == self.trunk.pos_embed.shape[1]:
            return state
        side = math.isqrt(pos.shape[1] - 1)
        if side * side != pos.shape[1] - 1:
            raise ValueError(
                f"checkpoint pos_embed with {pos.shape[1]} entries is not a square grid + class token"
            )
        return {**state, "pos_embed": resize_pos_embed(pos, (side, side), self.trunk.grid)}

    def is_head_key(self, key: str) -> bool:
        return key.startswith("head.")


_HUB = "https://huggingface.co/hustvl/Vim"

# name → (trunk config, official checkpoint, description)
VIM_CONFIGS: dict[str, tuple[dict[str, Any], str | None, str]] = {
    "vim_tiny": (
        dict(embed_dim=192, depth=24),
        f"{_HUB}-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth",
        "Vim-T (bimamba v2, middle class token)",
    ),
    "vim_small": (
        dict(embed_dim=384, depth=24, drop_path_rate=0.05),
        f"{_HUB}-small-midclstok/resolve/main/vim_s_midclstok_80p5acc.pth",
        "Vim-S (bimamba v2, middle class token)",
    ),
    "vim_base": (
        dict(embed_dim=768, depth=24),
        f"{_HUB}-base-midclstok/resolve/main/vim_b_midclstok_81p9acc.pth",
        "Vim-B (bimamba v2, middle class token; the released weights are the EMA copy)",
    ),
    # Study preset: Vim-T width, 10 blocks, no classification head, ~3M parameters.
    "vim_nano": (
        dict(embed_dim=192, depth=10, num_classes=0),
        None,
        "Vim nano (Vim-T width, 10 blocks, ~3M parameters) for the embedded study",
    ),
}  # fmt: skip


def _build(config: dict[str, Any], image_size: int | tuple[int, int] = 224, **overrides: Any) -> VisionMamba:
    height, width = as_height_width(image_size)
    return VisionMamba(**{"grid": (height // PATCH_SIZE, width // PATCH_SIZE), **config, **overrides})


register_config_table(VIM_CONFIGS, family="vim", kind="ssm", default_tap="b-2", wrapper=VimBackbone, build=_build)

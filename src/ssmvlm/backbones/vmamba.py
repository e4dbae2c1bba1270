"""VMamba (MzeroMiko/VMamba): v2 (``v05_noz``) and v0 / vanilla SS2D backbones.

Module and parameter names follow ``classification/models/vmamba.py`` so the released classification
checkpoints load with ``strict=True`` (legacy names are renamed by :meth:`VMambaBackbone.adapt_state_dict`).
The scans run through :func:`ssmvlm.ops.selective_scan` and :func:`ssmvlm.ops.cross_scan`.

Both versions run channel-last ((B, H, W, C) maps, as the release's ``channel_first=False`` variant): the v2
release computes its 1×1 projections as convolutions and its norms through permutes of channel-first maps,
which on a GPU cost more in layout copies than in arithmetic; the parameters are the same either way. The
depthwise convolution and the cross-scan see the map as (B, C, H, W) views in channels-last memory.

Feature taps return the stage's features before its downsample (as the release's ``Backbone_VSSM`` does),
followed by a parameter-free LayerNorm over channels. ``Backbone_VSSM`` adds a learned ``outnorm`` there, but
that norm is not part of any classification checkpoint and would be randomly initialised (= weight 1,
bias 0) anyway; the parameter-free norm is exactly that initial state, keeps token scales comparable across
taps, and leaves the trunk's state dict identical to the official one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from ssmvlm.backbones.base import FeatureTap, TapInfo, VisionBackbone
from ssmvlm.backbones.norms import AutocastLayerNorm
from ssmvlm.backbones.ssm_common import ScanBackendSetting, init_dt_projection, register_config_table, set_scan_backend
from ssmvlm.backbones.weight_init import init_linear_and_layernorm
from ssmvlm.ops import LowRankDelta, MirroredRows, cross_merge, cross_scan, selective_scan
from ssmvlm.ops.scan_sequential import use_sequential

SCAN_DIRECTIONS = 4
# From this many tokens per map, inference works in parts: SS2D scans its channels in parts of at most
# SCAN_PART_ELEMENTS per four-order tensor (batch × 4 orders × channels × tokens: the four-order inputs and outputs,
# and Δ where the backend does not project it itself, dominate peak memory; 64 MiB each in bf16; larger parts
# were faster at 4096² but took 2048² above ViT-B/16's memory, benchmarks/RESULTS.md) and token-wise sublayers
# (norms, projections, the MLP) take TOKEN_PART tokens at a time (a 4096² input makes 1M-token stage-1 maps, where
# one fp32 map of 96 channels is 384 MiB). The results are the same; at this size the extra launches are small
# next to the work.
LARGE_MAP_TOKENS = 128 * 128
SCAN_PART_ELEMENTS = 2**25
# A channel part spans at least a 32-byte sector of each token: the merge writes the part into the channels-last
# map, and a narrower write makes the memory read-modify-write every sector (benchmarks/RESULTS.md).
MIN_PART_BYTES = 32
TOKEN_PART = 256 * 256


def in_parts(x: torch.Tensor, tokens: int, *modules: nn.Module) -> bool:
    """Whether ``modules`` work in parts on this input: eager inference (eval mode, no autograd graph) on a large
    map. Not while torch.compile traces: the compiled batch-1 forward stopped with an illegal memory access on
    1024²–4096² images (torch 2.11), which work in parts, and ran at 224², which does not."""
    params = [p for module in modules for p in module.parameters()]
    recording = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
    eager = not torch.compiler.is_compiling()
    return eager and not any(module.training for module in modules) and not recording and tokens >= LARGE_MAP_TOKENS


def token_parts(fn: Callable[..., torch.Tensor], *maps: torch.Tensor) -> torch.Tensor:
    """``fn`` of (B, H, W, ·) maps, applied to ``TOKEN_PART`` tokens at a time: ``fn`` must be token-wise."""
    batch, height, width = maps[0].shape[:3]
    rows = [m.reshape(batch, height * width, m.shape[-1]) for m in maps]
    out = None
    for start in range(0, height * width, TOKEN_PART):
        part = fn(*(r[:, start : start + TOKEN_PART] for r in rows))
        if out is None:
            out = part.new_empty(batch, height * width, part.shape[-1])
        out[:, start : start + part.shape[1]] = part
    return out.view(batch, height, width, -1)


class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class Linear(nn.Linear):
    """nn.Linear that also loads the weights of the release's ``Linear2d`` saved as 1×1 convolutions."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dim() == 4:
            state_dict[key] = state_dict[key].flatten(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SS2D(nn.Module):
    """2-D selective scan of a (B, H, W, C) map: four scan orders, grouped B/C (one group per order), summed back.

    ``version="v2"`` is the released ``v05_noz`` path (no z branch, conv without bias);
    ``version="v0"`` is the vanilla path (SiLU(z) gating, conv with bias).
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int,
        ssm_ratio: float,
        version: str,
        conv_bias: bool,
    ) -> None:
        super().__init__()
        self.gated = gated = version == "v0"
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.dt_rank = dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.scan_backend: str | None = None

        self.in_proj = Linear(d_model, d_inner * (2 if gated else 1), bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=conv_bias)
        self.x_proj_weight = nn.Parameter(torch.empty(SCAN_DIRECTIONS, dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(SCAN_DIRECTIONS, d_inner, dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(SCAN_DIRECTIONS, d_inner))
        self.A_logs = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(SCAN_DIRECTIONS * d_inner, 1)
        )
        self.Ds = nn.Parameter(torch.ones(SCAN_DIRECTIONS * d_inner))
        self.out_norm = AutocastLayerNorm(d_inner)
        self.out_proj = Linear(d_inner, d_model, bias=False)

        with torch.no_grad():  # x_proj keeps nn.Linear's default init in the release
            bound = d_inner**-0.5
            self.x_proj_weight.uniform_(-bound, bound)
            init_dt_projection(self.dt_projs_weight, self.dt_projs_bias, dt_rank)

    def forward(self, x: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        """(B, H, W, C) → (B, H, W, C). ``norm``: the block's pre-norm, applied here with in_proj so that on large
        maps the normed map only ever exists one token part at a time."""
        large = in_parts(x, x.shape[1] * x.shape[2], self, *([norm] if norm is not None else []))
        project = self.in_proj if norm is None else lambda tokens: self.in_proj(norm(tokens))
        # Each step rebinds x, so the previous map is freed as soon as it has been used.
        x = token_parts(project, x) if large else project(x)
        z = None
        if self.gated:
            x, z = x.chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)), inplace=large)  # channels-last memory in and out
        x = self.scan_2d(x).permute(0, 2, 3, 1)
        maps = (x,) if z is None else (x, z)
        return token_parts(self.output, *maps) if large else self.output(*maps)

    def output(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """out_norm, the SiLU(z) gate of v0, out_proj: token-wise."""
        y = self.out_norm(y)
        return self.out_proj(y if z is None else y * F.silu(z))

    def scan_2d(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) → (B, D, H, W) in channels-last memory: the four-direction selective scan, summed.

        Inference on large maps scans the channels in parts of at most ``SCAN_PART_ELEMENTS`` four-order
        elements, one after another (every channel's scan is independent): the same result with a fraction of
        the four-order tensors alive.
        """
        batch, channels, height, width = x.shape
        # The CPU training scan steps through time: orders laid out time-major spare it (and the merge) transposes.
        recording = torch.is_grad_enabled() and x.requires_grad
        time_major = recording and use_sequential(x.device, batch * SCAN_DIRECTIONS * channels * self.d_state)
        dts, b_groups, c_groups = self.project_orders(x, time_major).split(
            [self.dt_rank, self.d_state, self.d_state], dim=2
        )
        orders = (dts, b_groups.contiguous(), c_groups.contiguous())
        if not in_parts(x, height * width, self):
            ys = self.scan_orders(cross_scan(x, time_major=time_major).flatten(1, 2), *orders)
            return cross_merge(ys, height, width, channels_last=True).view(batch, channels, height, width)
        merged = torch.empty_like(x, memory_format=torch.channels_last)
        step = max(MIN_PART_BYTES // x.element_size(), SCAN_PART_ELEMENTS // (SCAN_DIRECTIONS * batch * height * width))
        for start in range(0, channels, step):
            part = slice(start, min(start + step, channels))
            # Only the row- and column-major orders are written: the scan reads their reverses backwards. One
            # expression: no name keeps a part's order tensors alive into the next part.
            u = MirroredRows(cross_scan(x[:, part], reverses=False).flatten(1, 2))
            cross_merge(self.scan_orders(u, *orders, part), height, width, out=merged[:, part])
        return merged

    def project_orders(self, x: torch.Tensor, time_major: bool = False) -> torch.Tensor:
        """x_proj of every order, (B, 4, dt_rank + 2N, H·W) in scan order (in (B, H·W, 4, ·) memory if ``time_major``).

        The projection is pointwise in space, so it runs once on the map (one GEMM over channels-last
        memory) and only its narrow output is put into the four orders (order k of projection k), instead
        of projecting the four re-ordered copies of the map.
        """
        x_dbl = F.linear(x.permute(0, 2, 3, 1), self.x_proj_weight.flatten(0, 1))  # (B, H, W, 4·(R + 2N))
        return cross_scan(x_dbl.permute(0, 3, 1, 2), grouped=True, time_major=time_major)

    def scan_orders(
        self, xs: torch.Tensor | MirroredRows, dts: torch.Tensor, b_groups: torch.Tensor, c_groups: torch.Tensor,
        channels: slice = slice(None),
    ) -> torch.Tensor:
        """The four orders' sequences of ``channels``, (B, 4·D', L), and the orders' x_proj outputs split into
        the Δ projection's input (B, 4, dt_rank, L), B and C (B, 4, N, L) → the scan outputs, (B, 4, D', L).

        Each order has its own projections, A, D and Δ bias, and its B/C form one group.
        """
        batch, rows, length = xs.shape
        # Δ = dt_proj of each order's rank-R rows, (4·D', R) by (B, 4, R, L): projected inside the scan kernel
        # where the backend can (Δ is then never written out), else one batched matmul
        delta = LowRankDelta(self.dt_projs_weight[:, channels].reshape(-1, self.dt_rank), dts)
        per_order = (SCAN_DIRECTIONS, self.d_inner)
        ys = selective_scan(
            xs,
            delta,
            -torch.exp(self.A_logs.view(*per_order, self.d_state)[:, channels].reshape(-1, self.d_state).float()),
            b_groups,
            c_groups,
            self.Ds.view(per_order)[:, channels].reshape(-1).float(),
            delta_bias=self.dt_projs_bias[:, channels].reshape(-1).float(),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return ys.view(batch, SCAN_DIRECTIONS, rows // SCAN_DIRECTIONS, length)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    def __init__(self, dim: int, *, drop_path: float, mlp_ratio: float, **ssm: Any) -> None:
        super().__init__()
        # Both norms feed projections only (the residual stream keeps its dtype): see AutocastLayerNorm.
        self.norm = AutocastLayerNorm(dim)
        self.op = SS2D(dim, **ssm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if mlp_ratio > 0:
            self.norm2 = AutocastLayerNorm(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(x, self.norm))
        if not hasattr(self, "mlp"):
            return x
        if in_parts(x, x.shape[1] * x.shape[2], self):
            return token_parts(lambda tokens: tokens + self.mlp(self.norm2(tokens)), x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging2D(nn.Module):
    """v0 downsample (channel-last): 2×2 neighbours concatenated, LayerNorm(4C), Linear(4C → 2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = AutocastLayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Sequential):
    """The stem, on the image in channels-last memory: its convolutions then write (B, H, W, C) maps, so the
    permutes around its norms are views (a channel-first map would be copied in full, in float32 under
    autocast, for every norm: at 4096² those copies were the forward's peak memory)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


# The stems and downsamples of the two versions, in the release's channel-last form (Permute modules hold the
# Sequential indices of the channel-first form's Identity modules, so the parameter names match).
def _patch_embed(version: str, dim: int) -> PatchEmbed:
    if version == "v0":
        return PatchEmbed(nn.Conv2d(3, dim, 4, 4), Permute(0, 2, 3, 1), nn.LayerNorm(dim))
    # the first norm feeds the GELU and convolution only; the last one starts the residual stream
    return PatchEmbed(
        nn.Conv2d(3, dim // 2, 3, 2, 1), Permute(0, 2, 3, 1), AutocastLayerNorm(dim // 2), Permute(0, 3, 1, 2),
        nn.GELU(), nn.Conv2d(dim // 2, dim, 3, 2, 1), Permute(0, 2, 3, 1), nn.LayerNorm(dim),
    )  # fmt: skip


def _downsample(version: str, dim: int) -> nn.Module:
    if version == "v0":
        return PatchMerging2D(dim)
    return nn.Sequential(Permute(0, 3, 1, 2), nn.Conv2d(dim, 2 * dim, 3, 2, 1), Permute(0, 2, 3, 1),
                         nn.LayerNorm(2 * dim))


class VSSM(nn.Module):
    """The VMamba classification model, with the release's module names (patch_embed, layers, classifier)."""

    def __init__(
        self,
        *,
        dims: tuple[int, ...],
        depths: tuple[int, ...],
        d_state: int,
        ssm_ratio: float,
        version: str,
        mlp_ratio: float,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.version = version
        self.dims = list(dims)
        self.num_classes = num_classes
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        ssm = dict(d_state=d_state, ssm_ratio=ssm_ratio, version=version, conv_bias=version == "v0")

        self.patch_embed = _patch_embed(version, dims[0])
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            blocks = nn.Sequential(*[
                VSSBlock(dim, drop_path=rates[sum(depths[:i]) + j], mlp_ratio=mlp_ratio, **ssm)
                for j in range(depth)
            ])  # fmt: skip
            downsample = nn.Identity() if i == len(dims) - 1 else _downsample(version, dim)
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=downsample)))
        self.classifier = nn.Sequential(OrderedDict(
            norm=nn.LayerNorm(dims[-1]), permute=Permute(0, 3, 1, 2),
            avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
            head=nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity(),
        ))  # fmt: skip
        self.apply(init_linear_and_layernorm)
        set_scan_backend(self, scan_backend)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # Blocks are called from this one frame (not through the stage Sequentials, whose frames would each hold
        # a stage's input to the end of the stage), so every map is freed as soon as the next one exists: at
        # 2048²+ stage-1 maps are 100+ MiB each.
        x = self.patch_embed(x)
        for layer in self.layers:
            for block in layer.blocks:
                x = block(x)
            x = layer.downsample(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        for name, module in self.classifier.named_children():
            if pre_logits and name == "head":
                break
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier.head


# Legacy names of early releases → current names (VSSM._load_from_state_dict in the release does the same).
_LEGACY_RENAMES = (
    ("patch_embed.proj.", "patch_embed.0."),
    ("patch_embed.norm.", "patch_embed.2."),
    (".ln_1.", ".norm."),
    (".self_attention.", ".op."),
)
_LEGACY_TOP_LEVEL = (("norm.", "classifier.norm."), ("head.", "classifier.head."))


class VMambaBackbone(ScanBackendSetting, VisionBackbone):
    """Taps end in a parameter-free LayerNorm, or with ``.outnorm`` in the trained ``outnorm{i}`` of the tapped
    stage that the release's detection/segmentation ``Backbone_VSSM`` checkpoints carry (added to the trunk,
    so such a checkpoint loads strictly)."""

    trunk: VSSM
    supports_outnorm = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.feature_tap.outnorm:
            stage, _ = self._resolve(self.feature_tap)
            self.trunk.add_module(f"outnorm{stage}", nn.LayerNorm(self.trunk.dims[stage]))

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        stage, _ = self._resolve(tap)
        return TapInfo(dim=self.trunk.dims[stage], stride=4 * 2**stage)

    def _resolve(self, tap: FeatureTap) -> tuple[int, int]:
        """0-based (stage, block) for a tap, validated against this trunk."""
        return tap.stage_block_index([len(layer.blocks) for layer in self.trunk.layers], self.name)

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        stage, block = self._resolve(tap)
        x = self.trunk.patch_embed(pixel_values)
        for index, layer in enumerate(self.trunk.layers[: stage + 1]):
            for vss_block in layer.blocks if index < stage else layer.blocks[: block + 1]:
                x = vss_block(x)  # one frame holds the map, as in VSSM.forward_features
            if index < stage:
                x = layer.downsample(x)
        tokens = x.flatten(1, 2)  # (B, H, W, C) → (B, H·W, C)
        if tap.outnorm:
            return getattr(self.trunk, f"outnorm{stage}")(tokens)
        return F.layer_norm(tokens, tokens.shape[-1:])

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        x = self.trunk.patch_embed(pixel_values)
        stages = []
        for layer in self.trunk.layers:
            for block in layer.blocks:
                x = block(x)
            stages.append(x.permute(0, 3, 1, 2))
            x = layer.downsample(x)
        return stages

    @property
    def stage_dims(self) -> list[int]:
        return list(self.trunk.dims)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = self._dense_backbone_state(state)
        adapted = {}
        for key, value in state.items():
            for old, new in _LEGACY_RENAMES:
                key = key.replace(old, new)
            for old, new in _LEGACY_TOP_LEVEL:
                if key.startswith(old):
                    key = new + key[len(old) :]
            adapted[key] = value
        return adapted

    def is_head_key(self, key: str) -> bool:
        return key.startswith("classifier.")

    def _dense_backbone_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An mmdet/mmseg checkpoint's ``backbone.*`` entries, with the tapped stage's trained out norm only.

        Raises ValueError when the checkpoint and the tap disagree about that norm: features read without the
        trained norm (or with an untrained one) would load silently and differ from the release's.
        """
        if any(key.startswith("backbone.") for key in state):
            state = {key.removeprefix("backbone."): v for key, v in state.items() if key.startswith("backbone.")}
        norms = sorted({key.split(".")[0] for key in state if key.startswith("outnorm")})
        stage, _ = self._resolve(self.feature_tap)
        if self.feature_tap.outnorm and f"outnorm{stage}" not in norms:
            raise ValueError(
                f"tap {self.feature_tap} needs the trained outnorm{stage} of a detection/segmentation checkpoint; "
                f"this one has {norms or 'none'} (a classification checkpoint: use a tap without .outnorm)"
            )
        if norms and not self.feature_tap.outnorm:
            raise ValueError(
                f"a dense checkpoint with trained {', '.join(norms)}: tap {self.feature_tap} would skip them; "
                f"use tap {self.feature_tap}.outnorm"
            )
        tapped = f"outnorm{stage}."
        return {key: v for key, v in state.items() if not key.startswith("outnorm") or key.startswith(tapped)}


_RELEASE = "https://github.com/MzeroMiko/VMamba/releases/download"

# name → (trunk config, official checkpoint file, description)
VMAMBA_CONFIGS: dict[str, tuple[dict[str, Any], str | None, str]] = {
    "vmamba_tiny_s1l8": (
        dict(dims=(96, 192, 384, 768), depths=(2, 2, 8, 2), d_state=1, ssm_ratio=1.0, version="v2",
             mlp_ratio=4.0, drop_path_rate=0.2),
        "vssm1_tiny_0230s_ckpt_epoch_264.pth", "VMamba-T (s1l8, the headline T; vmambav2v_tiny_224)",
    ),
    "vmamba_tiny_s2l5": (
        dict(dims=(96, 192, 384, 768), depths=(2, 2, 5, 2), d_state=1, ssm_ratio=2.0, version="v2",
             mlp_ratio=4.0, drop_path_rate=0.2),
        "vssm_tiny_0230_ckpt_epoch_262.pth", "VMamba-T[s2l5] (vmambav2_tiny_224)",
    ),
    "vmamba_small_s2l15": (
        dict(dims=(96, 192, 384, 768), depths=(2, 2, 15, 2), d_state=1, ssm_ratio=2.0, version="v2",
             mlp_ratio=4.0, drop_path_rate=0.3),
        "vssm_small_0229_ckpt_epoch_222.pth", "VMamba-S (s2l15, vmambav2_small_224)",
    ),
    "vmamba_base_s2l15": (
        dict(dims=(128, 256, 512, 1024), depths=(2, 2, 15, 2), d_state=1, ssm_ratio=2.0, version="v2",
             mlp_ratio=4.0, drop_path_rate=0.6),
        "vssm_base_0229_ckpt_epoch_237.pth", "VMamba-B (s2l15, vmambav2_base_224)",
    ),
    "vmamba_small_s1l20": (
        dict(dims=(96, 192, 384, 768), depths=(2, 2, 20, 2), d_state=1, ssm_ratio=1.0, version="v2",
             mlp_ratio=4.0, drop_path_rate=0.3),
        "vssm1_small_0229s_ckpt_epoch_240.pth", "VMamba-S[s1l20] (vmambav2v_small_224)",
    ),
    "vmamba_base_s1l20": (
        dict(dims=(128, 256, 512, 1024), depths=(2, 2, 20, 2), d_state=1, ssm_ratio=1.0, version="v2",
             mlp_ratio=4.0, drop_path_rate=0.5),
        "vssm1_base_0229s_ckpt_epoch_225.pth", "VMamba-B[s1l20] (vmambav2v_base_224)",
    ),
    "vmamba_v0_tiny": (
        dict(dims=(96, 192, 384, 768), depths=(2, 2, 9, 2), d_state=16, ssm_ratio=2.0, version="v0",
             mlp_ratio=0.0, drop_path_rate=0.2),
        "vssmtiny_dp01_ckpt_epoch_292.pth", "Vanilla-VMamba-T (v0, channel-last)",
    ),
    "vmamba_v0_small": (
        dict(dims=(96, 192, 384, 768), depths=(2, 2, 27, 2), d_state=16, ssm_ratio=2.0, version="v0",
             mlp_ratio=0.0, drop_path_rate=0.3),
        "vssmsmall_dp03_ckpt_epoch_238.pth", "Vanilla-VMamba-S (v0, channel-last)",
    ),
    "vmamba_v0_base": (
        dict(dims=(128, 256, 512, 1024), depths=(2, 2, 27, 2), d_state=16, ssm_ratio=2.0, version="v0",
             mlp_ratio=0.0, drop_path_rate=0.6),
        "vssmbase_dp06_ckpt_epoch_241.pth", "Vanilla-VMamba-B (v0, channel-last)",
    ),
    # Study preset: three stages, the tap (stage 3, stride 16) is the last one, no classification head.
    "vmamba_nano": (
        dict(dims=(48, 96, 192), depths=(2, 3, 6), d_state=1, ssm_ratio=1.0, version="v2",
             mlp_ratio=4.0, drop_path_rate=0.0, num_classes=0),
        None, "VMamba nano (s1 layout, 3 stages, ~3M parameters) for the embedded study",
    ),
}  # fmt: skip


def _release_url(config: dict[str, Any], checkpoint: str) -> str:
    tag = "%23v2cls" if config["version"] == "v2" else "%23v0cls"
    return f"{_RELEASE}/{tag}/{checkpoint}"


def _build(config: dict[str, Any], image_size: int | tuple[int, int] = 224, **overrides: Any) -> VSSM:
    del image_size  # convolutional stem and scans: any size works
    return VSSM(**{**config, **overrides})


register_config_table(
    VMAMBA_CONFIGS, family="vmamba", kind="ssm", default_tap="s3", wrapper=VMambaBackbone, build=_build,
    source=_release_url,
)  # fmt: skip

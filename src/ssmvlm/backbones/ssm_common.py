"""What the SSM families (VMamba, Vim, MambaVision) share: the scan-backend switch, Mamba's Δ-projection init,
and registering a family from its table of named configs."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ssmvlm.backbones.base import BackboneSpec, VisionBackbone
from ssmvlm.backbones.registry import register_backbone

# name → (trunk config, official checkpoint, description): the table each SSM family module keeps.
ConfigTable = Mapping[str, tuple[dict[str, Any], str | None, str]]


class ScanBackendSetting:
    """``scan_backend`` on a wrapper: read by every SSM mixer of its trunk (None = best available)."""

    trunk: nn.Module

    @property
    def scan_backend(self) -> str | None:
        return next((m.scan_backend for m in self.trunk.modules() if hasattr(m, "scan_backend")), None)

    @scan_backend.setter
    def scan_backend(self, name: str | None) -> None:
        set_scan_backend(self.trunk, name)


def set_scan_backend(module: nn.Module, name: str | None) -> None:
    for child in module.modules():
        if hasattr(child, "scan_backend"):
            child.scan_backend = name


def init_dt_projection(weight: torch.Tensor, bias: torch.Tensor, dt_rank: int) -> None:
    """Mamba's dt init: weight uniform ±rank^-0.5, bias softplus⁻¹(dt), dt log-uniform in [1e-3, 0.1]."""
    if weight.is_meta:  # shape-only build (parameter counting): there are no values to set
        return
    with torch.no_grad():
        bound = dt_rank**-0.5
        weight.uniform_(-bound, bound)
        dt = torch.exp(torch.rand_like(bias) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(
            min=1e-4
        )
        bias.copy_(dt + torch.log(-torch.expm1(-dt)))


def register_config_table(
    configs: ConfigTable,
    *,
    family: str,
    kind: str,
    default_tap: str,
    wrapper: type[VisionBackbone],
    build: Callable[..., nn.Module],
    source: Callable[[dict[str, Any], str], str] = lambda config, checkpoint: checkpoint,
) -> None:
    """Register every row of a family's table; ``build(config, image_size=..., **overrides)`` makes a trunk and
    ``source(config, checkpoint)`` names where the row's in1k checkpoint comes from."""
    for name, (config, checkpoint, description) in configs.items():
        spec = BackboneSpec(
            name=name, family=family, kind=kind, default_tap=default_tap,
            pretrained_sources={"in1k": source(config, checkpoint)} if checkpoint else {}, description=description,
        )  # fmt: skip
        register_backbone(spec, wrapper)(functools.partial(build, config))

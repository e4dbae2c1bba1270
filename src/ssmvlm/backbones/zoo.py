"""The zoo: every family module, and building or listing the backbones they register."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from ssmvlm.backbones import mambavision, prismatic, timm_models, vim, vit_adapter, vitdet, vmamba
from ssmvlm.backbones.base import VisionBackbone
from ssmvlm.backbones.initializations import resolve_checkpoint
from ssmvlm.backbones.registry import BACKBONES, RegisteredBackbone
from ssmvlm.utils.errors import ConfigError

# Importing a family module registers its backbones; a new family is added here.
FAMILY_MODULES: tuple[ModuleType, ...] = (vmamba, vim, mambavision, timm_models, prismatic, vitdet, vit_adapter)


def list_vision_backbones(family: str | None = None) -> list[str]:
    return sorted(name for name, entry in BACKBONES.items() if family is None or entry.spec.family == family)


def get_backbone_entry(name: str) -> RegisteredBackbone:
    if name not in BACKBONES:
        raise ConfigError("backbone", f"unknown backbone {name!r}", allowed=sorted(BACKBONES))
    return BACKBONES[name]


def create_vision_backbone(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    image_size: int | tuple[int, int] = 224,
    feature_tap: str | None = None,
    resize_strategy: str = "letterbox",
    **overrides: Any,
) -> VisionBackbone:
    """Build a zoo backbone, optionally loading a checkpoint (a file, or a produced initialization name)."""
    entry = get_backbone_entry(name)
    trunk = entry.build_trunk(image_size=image_size, **overrides)
    backbone = entry.wrapper(
        entry.spec, trunk, feature_tap=feature_tap, image_size=image_size, resize_strategy=resize_strategy
    )
    if checkpoint is not None:
        backbone.load_checkpoint(resolve_checkpoint(checkpoint))
    return backbone

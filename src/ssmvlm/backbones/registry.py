"""The backbone registry: names → specs and trunk builders (timm's ``register_model`` pattern)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ssmvlm.backbones.base import BackboneSpec, VisionBackbone
from ssmvlm.utils.errors import ConfigError


@dataclass(frozen=True)
class RegisteredBackbone:
    spec: BackboneSpec
    build_trunk: Callable[..., nn.Module]
    wrapper: type[VisionBackbone]


_REGISTRY: dict[str, RegisteredBackbone] = {}


def register_backbone(
    spec: BackboneSpec, wrapper: type[VisionBackbone]
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a trunk builder under ``spec.name``."""

    def decorate(build_trunk: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if spec.name in _REGISTRY:
            raise ValueError(f"backbone {spec.name!r} is registered twice")
        _REGISTRY[spec.name] = RegisteredBackbone(spec, build_trunk, wrapper)
        return build_trunk

    return decorate


def _ensure_families_loaded() -> None:
    # Importing the families registers their backbones; done lazily so `import ssmvlm` stays light.
    import ssmvlm.backbones.families  # noqa: F401


def list_vision_backbones(family: str | None = None) -> list[str]:
    _ensure_families_loaded()
    return sorted(name for name, entry in _REGISTRY.items() if family is None or entry.spec.family == family)


def get_backbone_entry(name: str) -> RegisteredBackbone:
    _ensure_families_loaded()
    if name not in _REGISTRY:
        raise ConfigError("backbone", f"unknown backbone {name!r}", allowed=sorted(_REGISTRY))
    return _REGISTRY[name]


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


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A file path as given, or a produced initialization such as ``vmamba_nano@shapes-cls``."""
    path = Path(checkpoint)
    if path.exists() or "@" not in str(checkpoint):
        return path
    from ssmvlm.pretrain.registry import resolve_initialization

    return resolve_initialization(str(checkpoint))

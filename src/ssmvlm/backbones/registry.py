"""The backbone registry: the name → entry table and the decorator that fills it (timm's ``register_model``
pattern). Building and listing backbones is :mod:`ssmvlm.backbones.zoo`'s job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ssmvlm.backbones.base import BackboneSpec, VisionBackbone


@dataclass(frozen=True)
class RegisteredBackbone:
    spec: BackboneSpec
    build_trunk: Callable[..., nn.Module]
    wrapper: type[VisionBackbone]


BACKBONES: dict[str, RegisteredBackbone] = {}


def register_backbone(
    spec: BackboneSpec, wrapper: type[VisionBackbone]
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a trunk builder under ``spec.name``."""

    def decorate(build_trunk: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if spec.name in BACKBONES:
            raise ValueError(f"backbone {spec.name!r} is registered twice")
        BACKBONES[spec.name] = RegisteredBackbone(spec, build_trunk, wrapper)
        return build_trunk

    return decorate

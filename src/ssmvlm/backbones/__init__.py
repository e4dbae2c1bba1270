"""The vision backbone zoo: SSM, hybrid, transformer and CNN encoders behind one interface."""

from ssmvlm.backbones.base import BackboneSpec, FeatureTap, TapInfo, VisionBackbone
from ssmvlm.backbones.registry import create_vision_backbone, list_vision_backbones, register_backbone

__all__ = [
    "BackboneSpec",
    "FeatureTap",
    "TapInfo",
    "VisionBackbone",
    "create_vision_backbone",
    "list_vision_backbones",
    "register_backbone",
]

"""The vision backbone zoo: SSM, hybrid, transformer and CNN encoders behind one interface.

Attributes are loaded on first use (PEP 562), so ``import ssmvlm`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackboneSpec": "ssmvlm.backbones.base",
    "FeatureTap": "ssmvlm.backbones.base",
    "TapInfo": "ssmvlm.backbones.base",
    "VisionBackbone": "ssmvlm.backbones.base",
    "create_vision_backbone": "ssmvlm.backbones.zoo",
    "list_vision_backbones": "ssmvlm.backbones.zoo",
    "register_backbone": "ssmvlm.backbones.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssmvlm.backbones' has no attribute {name!r}")

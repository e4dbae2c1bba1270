"""Imports every family module so that their ``@register_backbone`` decorators run."""

from ssmvlm.backbones import (  # noqa: F401
    mambavision,
    prismatic,
    timm_families,
    vim,
    vit_adapter,
    vitdet,
    vmamba,
)

"""Imports every family module so that their ``@register_backbone`` decorators run."""

from ssmvlm.backbones import mambavision, prismatic, timm_families, vim, vitdet, vmamba  # noqa: F401

"""Imports every family module so that their ``@register_backbone`` decorators run."""

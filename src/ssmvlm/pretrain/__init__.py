"""Matched backbone initialization: classification pretraining, detection/segmentation adaptation, registry.

``run_pretraining(PretrainConfig(...), out_dir, register_as="vmamba_nano@shapes-cls")`` trains one backbone
with the one recipe every backbone gets; ``resolve_initialization`` / ``list_initializations`` read the
registry of produced initializations (kept in :mod:`ssmvlm.backbones.initializations`, whose
``create_vision_backbone(checkpoint="NAME@TAG")`` reads it; these names stay importable from here).
"""

from ssmvlm.backbones.initializations import (
    list_initializations,
    register_initialization,
    resolve_initialization,
)
from ssmvlm.pretrain.config import AugmentConfig, DataConfig, OptimConfig, PretrainConfig
from ssmvlm.pretrain.run import run_pretraining

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "OptimConfig",
    "PretrainConfig",
    "list_initializations",
    "register_initialization",
    "resolve_initialization",
    "run_pretraining",
]

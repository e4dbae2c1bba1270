"""The fixed training recipe, the training loop, checkpoints and scale-out."""

from ssmvlm.train.loop import train_vlm
from ssmvlm.train.recipe import (
    RECIPES,
    DataConfig,
    DistributedConfig,
    LoggingConfig,
    Recipe,
    RecipeOverrides,
    TrainConfig,
    resolve_recipe,
)

__all__ = [
    "RECIPES",
    "DataConfig",
    "DistributedConfig",
    "LoggingConfig",
    "Recipe",
    "RecipeOverrides",
    "TrainConfig",
    "resolve_recipe",
    "train_vlm",
]

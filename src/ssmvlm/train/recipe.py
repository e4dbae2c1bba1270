"""The fixed training recipe: typed config dataclasses and named presets (prismatic-vlms defaults).

``TrainConfig`` is what ``ssmvlm train --config`` and the study runner load with
:func:`ssmvlm.config.load_config`. The optimizer settings come from a named preset (``recipe``; by default the
one matching the stage) with any field of ``optim`` overriding it, so a study changes nothing but the encoder.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ssmvlm.utils.errors import ConfigError
from ssmvlm.vlm.builder import VLMConfig

Stage = Literal["no-align", "align", "finetune"]
LossReduction = Literal["token", "sample", "sqrt"]


@dataclass(frozen=True)
class Recipe:
    """Optimizer and schedule. ``max_steps`` (when set) replaces ``epochs`` for the step count."""

    epochs: int = 1
    max_steps: int | None = None
    global_batch_size: int = 128
    per_device_batch_size: int = 16
    learning_rate: float = 2e-5
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.03
    schedule: Literal["linear-warmup+cosine-decay"] = "linear-warmup+cosine-decay"
    # How the loss averages answer tokens: over the batch (prismatic, the LLM's own loss), per sample first (every
    # answer weighs the same, whatever its length), or each token by 1/sqrt(its answer's length), between the two
    # (ssmvlm.vlm.model.length_weighted_loss).
    loss_reduction: LossReduction = "token"

    def total_steps(self, num_samples: int) -> int:
        """prismatic: ceil(N / global batch) steps per epoch, times epochs, unless ``max_steps`` is given."""
        if self.max_steps is not None:
            return self.max_steps
        return math.ceil(num_samples / self.global_batch_size) * self.epochs

    def warmup_steps(self, total_steps: int) -> int:
        return int(self.warmup_ratio * total_steps)


RECIPES: dict[str, Recipe] = {
    # prismatic `LLaVa_v15_Reproduction_7B` / `one-stage+7b`, finetune stage (also used for no-align).
    "prismatic-finetune": Recipe(),
    # prismatic align stage: projector only.
    "prismatic-align": Recipe(global_batch_size=256, learning_rate=1e-3, weight_decay=0.0),
    # ShapeScenes with a tiny LLM trained from scratch on CPU: a from-scratch LM needs a far larger LR and
    # more passes than a pretrained 7B; small batches give it more optimizer steps. 3 epochs of 400 scenes
    # are 75 steps (~280k tokens, ~1.5 min at the ~3-4k tokens/s of 2 cores); not yet mostly-right answers.
    "shapes": Recipe(
        epochs=3,
        global_batch_size=16,
        per_device_batch_size=16,
        learning_rate=1e-3,  # 3e-3 learns the answer prior but never to use the image (measured)
        weight_decay=0.1,
        warmup_ratio=0.05,
    ),
}
DEFAULT_RECIPE_BY_STAGE: dict[str, str] = {
    "no-align": "prismatic-finetune",
    "align": "prismatic-align",
    "finetune": "prismatic-finetune",
}


@dataclass
class RecipeOverrides:
    """Any field set here replaces the preset's value."""

    epochs: int | None = None
    max_steps: int | None = None
    global_batch_size: int | None = None
    per_device_batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    max_grad_norm: float | None = None
    warmup_ratio: float | None = None
    loss_reduction: LossReduction | None = None


@dataclass
class DataConfig:
    train_json: str = ""  # a LLaVA-format file, e.g. SHAPES_DIR/train/llava.json
    image_root: str | None = None  # default: beside the JSON (ShapeScenes: its dataset folder)
    # More LLaVA-format files whose records join the training set, each read with its own default image root
    # (a study's training mix: the train split of easier ShapeScenes beside the benchmark's).
    extra_json: list[str] = field(default_factory=list)
    skip_bad: bool = False  # count and skip bad records/images instead of stopping
    cache_features: Literal["auto", "on", "off"] = "auto"  # frozen-encoder features cached per image
    # One sample per question–answer pair (the way evaluation asks), instead of one per conversation: a tiny
    # LLM trained from scratch learns to read the image far sooner when each answer is its own example.
    split_turns: bool = False


@dataclass
class DistributedConfig:
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # auto: DDP when launched with several processes
    activation_checkpointing: bool | None = None  # None: on with FSDP, off otherwise
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    llm_kernels: Literal["eager", "liger", "compile", "compile-all"] = "eager"  # train/llm_kernels.py


@dataclass
class LoggingConfig:
    log_every: int = 10
    checkpoint_every: int = 0  # steps between checkpoints; 0: at the end of each epoch
    keep_checkpoints: int = 2
    loggers: list[str] = field(default_factory=list)  # "tensorboard", "wandb" (used when importable)


@dataclass
class TrainConfig:
    model: VLMConfig = field(default_factory=VLMConfig)
    stage: Stage = "no-align"
    recipe: str | None = None  # a name in RECIPES; default: by stage
    optim: RecipeOverrides = field(default_factory=RecipeOverrides)
    data: DataConfig = field(default_factory=DataConfig)
    connector_init: str | None = None  # finetune stage: the align run whose connector starts this one
    seed: int = 7
    device: str = "auto"  # auto | cpu | cuda | cuda:N (torchrun sets the local rank's GPU)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def resolve_recipe(config: TrainConfig) -> Recipe:
    name = config.recipe or DEFAULT_RECIPE_BY_STAGE[config.stage]
    if name not in RECIPES:
        raise ConfigError("recipe", f"unknown recipe {name!r}", allowed=sorted(RECIPES))
    changes = {k: v for k, v in dataclasses.asdict(config.optim).items() if v is not None}
    recipe = dataclasses.replace(RECIPES[name], **changes)
    if recipe.global_batch_size < 1 or recipe.per_device_batch_size < 1:
        raise ConfigError("optim.global_batch_size", "batch sizes must be >= 1")
    return recipe


def micro_batches_per_step(recipe: Recipe, world_size: int) -> tuple[int, int]:
    """(per-device micro-batch size, micro-batches per device per step) that make up the global batch."""
    per_rank = recipe.global_batch_size // world_size
    if per_rank * world_size != recipe.global_batch_size:
        raise ConfigError(
            "optim.global_batch_size",
            f"{recipe.global_batch_size} is not divisible by the {world_size} processes",
        )
    micro = min(recipe.per_device_batch_size, per_rank)
    if per_rank % micro:
        raise ConfigError(
            "optim.per_device_batch_size",
            f"{micro} does not divide the {per_rank} samples each process gets per step",
        )
    return micro, per_rank // micro


PRESET_DIR = Path(__file__).with_name("presets")


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML file path as given, or the name of a packaged preset (``shapes-cpu``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise ConfigError("--config", f"{name_or_path} is neither a file nor a preset", allowed=available)

"""The one pretraining recipe every backbone gets: typed configs with the study's defaults.

The budget is a number of images seen, never epochs: every backbone consumes the same seeded stream of
training images in the same order, whatever its batch size, and its learning-rate schedule is a function of
images seen. The learning rate is quoted for ``optim.lr_reference_batch`` and scaled linearly with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ssmvlm.utils.errors import ConfigError

Objective = Literal["classification", "detection", "segmentation"]
DataSource = Literal["shapes", "imagefolder", "coco", "ade20k"]
OBJECTIVES: tuple[str, ...] = ("classification", "detection", "segmentation")

# The study's CPU resolution; dense adaptation runs at DENSE_SCALE times the classification side.
DEFAULT_CLASSIFICATION_SIZE = 96
DENSE_SCALE = 2


@dataclass
class OptimConfig:
    lr: float = 2e-3
    lr_reference_batch: int = 256
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_fraction: float = 0.05  # of the images-seen budget
    min_lr_ratio: float = 0.01  # cosine floor, relative to the peak
    grad_clip: float = 1.0  # 0 turns clipping off
    label_smoothing: float = 0.1  # classification only


@dataclass
class AugmentConfig:
    """Light augmentation, applied on the device to whole batches; dense targets move with the pixels."""

    hflip: bool = True
    crop_scale_min: float = 0.7  # area fraction of the random resized crop (1.0: no crop)
    crop_ratio_max: float = 4 / 3  # aspect range [1/r, r] of the crop


@dataclass
class DataConfig:
    """Where the images come from.

    ``shapes``: a ShapeScenes directory (``root``). ``imagefolder``: ``root/CLASS/*.jpg``, or
    ``root/train`` and ``root/val`` in that layout. ``coco``: ``annotations`` (+ ``val_annotations``), images
    under ``root``.
    ``ade20k``: ``root/images/{training,validation}`` and ``root/annotations/{training,validation}``.
    Without a separate held-out split, ``holdout_fraction`` of the images (chosen by the seed) is held out.
    """

    source: DataSource = "shapes"
    root: Path | None = None
    annotations: Path | None = None
    val_annotations: Path | None = None
    train_split: str = "train"
    eval_split: str = "val"
    holdout_fraction: float = 0.1
    max_eval_images: int | None = None
    num_workers: int = 0
    reduce_zero_label: bool | None = None  # segmentation: label 0 is "ignore" (None: true for ade20k only)


@dataclass
class PretrainConfig:
    backbone: str = "vit_nano"
    objective: Objective = "classification"
    init: str | None = None  # checkpoint path or produced initialization name (e.g. vit_nano@shapes-cls)
    image_size: int | None = None  # None: 96 for classification, 2x the init's side for dense objectives
    images_seen: int = 250_000
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    log_every_steps: int = 20
    checkpoint_every_steps: int = 200
    evals: int = 1  # evaluations spread evenly over the budget, the last one at the end
    head_dim: int = 64  # channels of the dense heads' feature pyramid
    # Classification: also learn the data's auxiliary targets (ShapeScenes: the labelled object's colour and
    # shape, and every object present), when it has them. Off by default: on the quick preset's small budget
    # (4k images) they lowered held-out top-1 (MambaVision nano 17% → 5%; GPU probe, 2026-12-06). At the `paper`
    # preset's 480k images they raised it in all seven nano families (probe 28), so that preset turns them on.
    auxiliary_targets: bool = False
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> None:
        checks = {
            "images_seen": self.images_seen > 0,
            "batch_size": self.batch_size > 0,
            "evals": self.evals >= 1,
            "log_every_steps": self.log_every_steps > 0,
            "checkpoint_every_steps": self.checkpoint_every_steps > 0,
            "optim.lr": self.optim.lr > 0,
            "optim.warmup_fraction": 0 <= self.optim.warmup_fraction < 1,
            "augment.crop_scale_min": 0 < self.augment.crop_scale_min <= 1,
            "augment.crop_ratio_max": self.augment.crop_ratio_max >= 1,
            "data.holdout_fraction": 0 < self.data.holdout_fraction < 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(key, "value out of range")
        if self.image_size is not None and self.image_size < 16:
            raise ConfigError("image_size", f"must be at least 16, got {self.image_size}")
        if self.data.root is None and self.data.source != "coco":
            raise ConfigError("data.root", f"a directory is needed for data.source={self.data.source}")
        if self.data.source == "coco" and self.data.annotations is None:
            raise ConfigError("data.annotations", "a COCO annotation file is needed for data.source=coco")
        allowed_sources = _SOURCES_BY_OBJECTIVE[self.objective]
        if self.data.source not in allowed_sources:
            raise ConfigError(
                "data.source",
                f"{self.data.source!r} has no {self.objective} labels",
                allowed=list(allowed_sources),
            )


_SOURCES_BY_OBJECTIVE: dict[str, tuple[str, ...]] = {
    "classification": ("shapes", "imagefolder"),
    "detection": ("shapes", "coco"),
    "segmentation": ("shapes", "ade20k"),
}


def resolve_image_size(config: PretrainConfig, init_image_size: int | None) -> int:
    """The frame side: as configured, else 96 for classification and 2x the init's side for dense tasks."""
    if config.image_size is not None:
        return config.image_size
    if config.objective == "classification":
        return DEFAULT_CLASSIFICATION_SIZE
    return DENSE_SCALE * (init_image_size or DEFAULT_CLASSIFICATION_SIZE)

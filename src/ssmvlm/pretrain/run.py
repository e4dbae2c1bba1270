"""``run_pretraining``: one matched initialization run, from config to registered backbone weights.

An output directory holds ``config.json`` (the resolved config), ``run.json``, ``metrics.jsonl`` (the
training log), ``checkpoint/`` while the run is unfinished, and, once finished, ``backbone.safetensors``
(trunk weights without the classification head, at the run's resolution), ``head.safetensors`` and
``metrics.json``. Calling again on a finished directory returns its metrics; on an unfinished one it resumes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmvlm.backbones.initializations import WEIGHTS_FILE, parse_name, register_initialization, resolve_checkpoint
from ssmvlm.config import to_dict
from ssmvlm.data.transforms import ImageTransform
from ssmvlm.pretrain.classification import ClassificationTask
from ssmvlm.pretrain.config import PretrainConfig, resolve_image_size
from ssmvlm.pretrain.data import FrameDataset, FrameSource, TaskData, load_task_data
from ssmvlm.pretrain.dense import DetectionTask, SegmentationTask
from ssmvlm.pretrain.loop import CHECKPOINT_DIR, PretrainModel, Task, train
from ssmvlm.utils.device import resolve_device
from ssmvlm.utils.errors import CheckpointError, ConfigError
from ssmvlm.utils.io import atomic_write_bytes, atomic_write_json, read_json
from ssmvlm.utils.provenance import device_description, write_run_record
from ssmvlm.utils.run_folder import CONFIG_FILE, check_same_config, remove_checkpoint
from ssmvlm.utils.seed import seed_everything

METRICS_FILE = "metrics.json"
HEAD_FILE = "head.safetensors"
WEIGHTS_FORMAT = "ssmvlm-backbone"
# Settings that may change between an interrupted run and its resumption without changing its result.
RESUMABLE_CHANGES = ("device", "log_every_steps", "checkpoint_every_steps", "data.num_workers")

_TASKS: dict[str, Callable[[TaskData, PretrainConfig, ImageTransform], Task]] = {
    "classification": lambda data, config, _: ClassificationTask(
        data.num_classes,
        config.optim.label_smoothing,
        {name: len(values) for name, values in data.attributes.items()} if config.auxiliary_targets else None,
        presence=data.has_presence and config.auxiliary_targets,
    ),
    "detection": lambda data, _, transform: DetectionTask(
        data.num_classes, data.eval, data.coco_ground_truth or {}, data.category_ids, transform
    ),
    "segmentation": lambda data, _c, _t: SegmentationTask(data.num_classes),
}


def run_pretraining(
    config: PretrainConfig,
    out_dir: str | Path,
    *,
    register_as: str | None = None,
    home: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or resume, or reuse) one initialization in ``out_dir``; returns its metrics.

    ``register_as`` (``BACKBONE@TAG``) records the result in the registry under ``home`` (default
    ``$SSMVLM_HOME``) so that ``create_vision_backbone(checkpoint=register_as)`` finds it.
    """
    config.validate()
    config = _with_absolute_paths(config)
    if register_as is not None and parse_name(register_as)[0] != config.backbone:
        raise ConfigError("register", f"{register_as!r} does not name backbone {config.backbone}")
    out_dir = Path(out_dir)
    config_dict = to_dict(config)
    check_same_config(out_dir, config_dict, may_change=RESUMABLE_CHANGES)
    if (out_dir / METRICS_FILE).is_file() and (out_dir / WEIGHTS_FILE).is_file():
        metrics = read_json(out_dir / METRICS_FILE)
    else:
        metrics = _train_and_save(config, config_dict, out_dir)
    if register_as is not None:
        register_initialization(register_as, out_dir, home=home)
    return metrics


def _train_and_save(config: PretrainConfig, config_dict: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from safetensors.torch import save

    from ssmvlm.backbones import create_vision_backbone

    device = resolve_device(config.device)
    init_path = resolve_checkpoint(config.init) if config.init else None
    init_meta = _weights_metadata(init_path, config) if init_path else {}
    image_size = resolve_image_size(config, int(init_meta["image_size"]) if "image_size" in init_meta else None)

    seed_everything(config.seed)
    backbone = create_vision_backbone(config.backbone, checkpoint=init_path, image_size=image_size)
    transform = backbone.image_transform
    load_start = time.perf_counter()
    data = load_task_data(config)
    task = _TASKS[config.objective](data, config, transform)
    model = PretrainModel(backbone, task.build_head(backbone, config)).to(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / CONFIG_FILE, config_dict)
    write_run_record(out_dir, config_dict, config.seed, image_size=image_size, init_weights=init_path)

    reduce_zero = config.data.reduce_zero_label
    if reduce_zero is None:
        reduce_zero = config.data.source == "ade20k"
    sources = [
        FrameSource(
            FrameDataset(
                records,
                transform,
                config.objective,
                num_classes=data.num_classes,
                reduce_zero_label=reduce_zero,
            ),
            device,
            num_workers=config.data.num_workers,
            description=f"loading {split} images",
        )
        for split, records in (("training", data.train), ("held-out", data.eval))
    ]
    load_seconds = time.perf_counter() - load_start

    summary = train(model, task, sources[0], sources[1], config, out_dir, device)

    metadata = {
        "format": WEIGHTS_FORMAT,
        "backbone": config.backbone,
        "objective": config.objective,
        "image_size": str(image_size),
        "seed": str(config.seed),
    }
    trunk_state = {
        k: v.detach().cpu().clone() for k, v in backbone.trunk.state_dict().items() if not backbone.is_head_key(k)
    }
    head_state = {k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()}
    atomic_write_bytes(out_dir / WEIGHTS_FILE, save(trunk_state, metadata=metadata))
    atomic_write_bytes(out_dir / HEAD_FILE, save(head_state, metadata=metadata))
    metrics = {
        "backbone": config.backbone,
        "objective": config.objective,
        "init": config.init,
        "data": data.description,
        "image_size": image_size,
        "batch_size": config.batch_size,
        "images_seen": summary["images_seen"],
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "images_per_second": summary["images_seen"] / max(summary["train_seconds"], 1e-9),
        "load_seconds": load_seconds,
        "params": backbone.param_count(),
        "num_classes": data.num_classes,
        "train_images": len(data.train),
        "device": device_description() if device.type == "cuda" else "cpu",
        "primary_metric": task.primary_metric,
        **summary["eval"],
    }
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    remove_checkpoint(out_dir / CHECKPOINT_DIR)
    return metrics


def _with_absolute_paths(config: PretrainConfig) -> PretrainConfig:
    paths = {
        name: Path(value).expanduser().resolve()
        for name in ("root", "annotations", "val_annotations")
        if (value := getattr(config.data, name)) is not None
    }
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **paths))


def _weights_metadata(path: Path, config: PretrainConfig) -> dict[str, str]:
    """The metadata ssmvlm writes into backbone weights; refuses weights of another architecture."""
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") == WEIGHTS_FORMAT and metadata.get("backbone") != config.backbone:
        raise CheckpointError(
            f"init {config.init}: {path} holds {metadata.get('backbone')} weights "
            f"(from {metadata.get('objective')} pretraining), which cannot initialize {config.backbone}"
        )
    return metadata

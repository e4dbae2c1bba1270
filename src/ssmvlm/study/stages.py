"""The study's adapters to the pipeline stages: one function per stage, from a cell to the stage's API call.

Each adapter takes the cell, its run directory, the results of the cells it depends on (by key, ``stage/id``)
and the device, calls the stage (imported lazily: a study that only plans or reports needs none of them) and
returns a JSON-serializable result that downstream cells and the results table read. ``STAGE_RUNNERS`` is the
registry :func:`ssmvlm.study.cells.execute_cell` dispatches through.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmvlm.study.matrix import (
    Cell,
    DatasetCellConfig,
    EvalCellConfig,
    PretrainCellConfig,
    TrainCellConfig,
    WarmupCellConfig,
)
from ssmvlm.utils.dotted_keys import deep_merge, nest_keys

Upstream = dict[str, dict[str, Any]]
StageRunner = Callable[[Cell, Path, Upstream, str], dict[str, Any]]

BACKBONE_FILE = "backbone.safetensors"
TRAIN_LOG = "metrics.jsonl"


def run_dataset(cell: Cell, run_dir: Path, upstream: Upstream, device: str) -> dict[str, Any]:
    from ssmvlm.data.shapes import generate_shapescenes

    config: DatasetCellConfig = cell.config
    shapes = config.shapes
    manifest = generate_shapescenes(
        run_dir / "data",
        size=shapes.size,
        image_size=shapes.image_size,
        seed=shapes.seed,
        splits=shapes.splits,
        namespace=config.namespace,
        workers=generation_workers(),
        show_progress=show_progress(),
        **shapes.scene,
    )
    return {"path": str(Path(manifest).resolve().parent)}


def run_pretrain(cell: Cell, run_dir: Path, upstream: Upstream, device: str) -> dict[str, Any]:
    from ssmvlm.config import from_dict
    from ssmvlm.pretrain import run_pretraining
    from ssmvlm.pretrain.config import PretrainConfig

    config: PretrainCellConfig = cell.config
    values = {
        "backbone": config.backbone,
        "objective": config.objective,
        "init": config.init.path(upstream) if config.init else None,
        "image_size": config.image_size,
        "images_seen": config.images_seen,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "device": device,
        "data": {"source": "shapes", "root": str(config.data.folder(upstream))},
    }
    pretrain_config = from_dict(PretrainConfig, deep_merge(values, nest_keys(config.overrides.items())))
    metrics = run_pretraining(pretrain_config, run_dir)
    checkpoint = run_dir / BACKBONE_FILE
    top1 = metrics.get("top1") if config.objective == "classification" else None
    return {
        "checkpoint": str(checkpoint.resolve()),
        "top1": 100.0 * top1 if top1 is not None else None,  # the study's scores are all 0–100
        "metrics": metrics,
    }


def run_warmup(cell: Cell, run_dir: Path, upstream: Upstream, device: str) -> dict[str, Any]:
    from ssmvlm.train.warmup import warm_up_llm
    from ssmvlm.vlm import VLMConfig

    config: WarmupCellConfig = cell.config
    # The backbone is a placeholder the warm-up never builds: its images are the scenes' ground truth.
    model = VLMConfig(image_size=config.image_size, resize_strategy=config.resize_strategy, llm=config.llm)
    overrides = nest_keys(config.recipe_overrides.items())
    train_config = _train_config(model, config.recipe, config.data.folder(upstream), [], config.seed, device, overrides)
    llm = warm_up_llm(train_config, run_dir, grid=config.grid, show_progress=show_progress())
    return {"llm": str(llm.resolve())}


def run_train(cell: Cell, run_dir: Path, upstream: Upstream, device: str) -> dict[str, Any]:
    from ssmvlm.train.loop import train_vlm
    from ssmvlm.vlm import VLMConfig
    from ssmvlm.vlm.builder import TINY_LLM_KEYS

    config: TrainCellConfig = cell.config
    overrides = nest_keys(config.recipe_overrides.items())
    llm = config.llm
    if config.llm_warmup is not None:
        llm = upstream[f"warmup/{config.llm_warmup}"]["llm"]
        for key in TINY_LLM_KEYS:  # they shaped the warm-up's LLM, which this run loads
            overrides.get("model", {}).pop(key, None)
    model = VLMConfig(
        backbone=config.backbone,
        checkpoint=config.checkpoint.path(upstream) if config.checkpoint else None,
        image_size=config.image_size,
        resize_strategy=config.resize_strategy,
        feature_tap=config.feature_tap,
        connector=config.connector,
        llm=llm,
    )
    root = config.data.folder(upstream)
    mix = [str(config.mix.folder(upstream) / "train" / "llava.json")] if config.mix else []
    train_config = _train_config(model, config.recipe, root, mix, config.seed, device, overrides)
    trained = Path(train_vlm(train_config, run_dir, show_progress=show_progress()))
    facts = backbone_facts(config.backbone, config.image_size, config.feature_tap)
    result = {"run_dir": str(trained.resolve()), "train_log": str((trained / TRAIN_LOG).resolve()), **facts}
    if config.checkpoint is not None and config.checkpoint.pretrain is not None:
        result["top1"] = upstream[f"pretrain/{config.checkpoint.pretrain}"].get("top1")
    return result


def _train_config(
    model: Any, recipe: str, root: Path, extra_json: list[str], seed: int, device: str, overrides: dict[str, Any]
) -> Any:
    """The ``TrainConfig`` of a study cell: ``model`` (a ``VLMConfig``) trained on ``root``'s training split (and
    ``extra_json``) with the recipe ``recipe`` and the nested ``overrides`` laid over it."""
    from ssmvlm.config import from_dict, to_dict
    from ssmvlm.train.recipe import TrainConfig

    values = {
        "model": to_dict(model),
        "recipe": recipe,
        "data": {"train_json": str(root / "train" / "llava.json"), "image_root": str(root), "extra_json": extra_json},
        "seed": seed,
        "device": device,
    }
    return from_dict(TrainConfig, deep_merge(values, overrides))


def run_eval(cell: Cell, run_dir: Path, upstream: Upstream, device: str) -> dict[str, Any]:
    from ssmvlm.eval import evaluate_run

    config: EvalCellConfig = cell.config
    generation = {"max_new_tokens": config.max_new_tokens} if config.max_new_tokens else {}
    results = evaluate_run(
        Path(upstream[f"train/{config.train}"]["run_dir"]),
        list(config.tasks),
        config.data.folder(upstream),
        split=config.split,
        out_dir=run_dir,
        limit=config.limit,
        batch_size=cell.options.get("batch_size", 16),
        controls=config.controls,
        seed=config.seed,
        device=device,
        show_progress=show_progress(),
        **generation,
    )
    return {"results": results}


STAGE_RUNNERS: dict[str, StageRunner] = {
    "dataset": run_dataset,
    "pretrain": run_pretrain,
    "warmup": run_warmup,
    "train": run_train,
    "eval": run_eval,
}


def generation_workers() -> int:
    """Processes for scene generation: the dataset cells run before any other cell, so every core is free."""
    import os

    return max(1, min(16, len(os.sched_getaffinity(0))))


def show_progress() -> bool:
    """Stages draw their own bars only when the console is interactive (workers and CI log lines instead)."""
    from ssmvlm.utils.progress import console

    return console.is_terminal


def backbone_facts(name: str, image_size: int, feature_tap: str | None = None) -> dict[str, Any]:
    """Family, kind, parameter count and token count of a zoo backbone (built on the meta device)."""
    import torch

    from ssmvlm.backbones import create_vision_backbone

    with torch.device("meta"):
        backbone = create_vision_backbone(name, image_size=image_size, feature_tap=feature_tap)
    return {
        "family": backbone.spec.family,
        "kind": backbone.spec.kind,
        "params": int(backbone.param_count()),
        "tokens": int(backbone.num_tokens(image_size)),
    }


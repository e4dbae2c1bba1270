"""The run matrix: a spec expanded into cells, each content-addressed by a short hash of its resolved config.

Stages form a chain ``dataset → pretrain → train → eval``. A cell's config holds the ids of the cells it
depends on, so a change upstream changes every id below it, and identical work gets one id: one dataset per
benchmark setting, one pretraining per backbone × initialization (× seed when ``pretrain.seed`` is None), shared
by all its VLM cells. A cell's run directory is ``OUT/runs/<stage>/<id>/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmvlm.config import to_dict
from ssmvlm.study.spec import PRODUCED_INITS, StudySpec, checkpoint_path

STAGES: tuple[str, ...] = ("dataset", "pretrain", "train", "eval")
MAIN_VARIANT = "main"
ID_LENGTH = 12


def cell_id(stage: str, config: dict[str, Any]) -> str:
    """A short, stable hash of the stage and its resolved config (key order and formatting do not matter)."""
    canonical = json.dumps({"stage": stage, "config": config}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:ID_LENGTH]


@dataclass
class Cell:
    """One unit of work: a stage with its resolved config, the cells it needs, and labels for the report."""

    stage: str
    config: dict[str, Any]
    deps: list[str] = field(default_factory=list)  # keys ``stage/id`` of upstream cells
    labels: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # settings that do not change results (not hashed)

    @property
    def id(self) -> str:
        return cell_id(self.stage, self.config)

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.id}"

    def run_dir(self, out: Path) -> Path:
        return Path(out) / "runs" / self.stage / self.id

    def describe(self) -> str:
        labels = self.labels
        if self.stage == "dataset":
            return f"dataset {labels.get('benchmark', '')}"
        if self.stage == "pretrain":
            return f"pretrain {labels['backbone']} {labels['init']} seed {labels['seed']}"
        text = (
            f"{self.stage} {labels['backbone']} {labels['init']} {labels['resolution']}px "
            f"{labels['resize_strategy']} {labels['connector']} seed {labels['seed']}"
        )
        return text if labels.get("variant", MAIN_VARIANT) == MAIN_VARIANT else f"{text} [{labels['variant']}]"


class StudyMatrix:
    """Cells in dependency order, deduplicated by key."""

    def __init__(self) -> None:
        self._cells: dict[str, Cell] = {}

    def add(self, cell: Cell) -> Cell:
        """Add ``cell`` unless an identical one is there; return the cell that stays (for its labels)."""
        existing = self._cells.get(cell.key)
        if existing is not None:
            return existing
        missing = [dep for dep in cell.deps if dep not in self._cells]
        if missing:
            raise ValueError(f"cell {cell.key} depends on cells not in the matrix: {missing}")
        self._cells[cell.key] = cell
        return cell

    def __iter__(self) -> Iterator[Cell]:
        return iter(self._cells.values())

    def __len__(self) -> int:
        return len(self._cells)

    def __contains__(self, key: str) -> bool:
        return key in self._cells

    def __getitem__(self, key: str) -> Cell:
        return self._cells[key]

    def by_stage(self, stage: str) -> list[Cell]:
        return [cell for cell in self if cell.stage == stage]

    def counts(self) -> dict[str, int]:
        return {stage: len(self.by_stage(stage)) for stage in STAGES}


@dataclass(frozen=True)
class VlmChoice:
    """The knobs of one VLM cell (a point of the cross product, or an ablation variant of one)."""

    backbone: str
    init: str
    seed: int
    resolution: int
    resize_strategy: str
    connector: str
    variant: str = MAIN_VARIANT
    parent: str | None = None  # the main eval cell an ablation variant derives from


def expand_matrix(spec: StudySpec) -> StudyMatrix:
    """Every cell the spec asks for (ablation variants are added later, from the diagnosis)."""
    matrix = StudyMatrix()
    for backbone in spec.backbones:
        for init in spec.initializations:
            for seed in spec.seeds:
                for resolution in spec.resolutions:
                    for resize in spec.resize_strategies:
                        for connector in spec.connectors:
                            add_vlm_cells(matrix, spec, VlmChoice(backbone, init, seed, resolution, resize, connector))
    return matrix


def add_vlm_cells(matrix: StudyMatrix, spec: StudySpec, choice: VlmChoice) -> Cell:
    """Add the train and eval cells of ``choice`` (and the dataset/pretraining they need); return the eval."""
    data_dep, data_ref = _add_dataset(matrix, spec)
    deps = [data_dep] if data_dep else []
    checkpoint: Any = None
    if choice.init in PRODUCED_INITS:
        pretrain_seed = choice.seed if spec.pretrain.seed is None else spec.pretrain.seed
        pretrain_dep, pretrain_ref = _add_pretrain_dataset(matrix, spec) or (data_dep, data_ref)
        pretrain = _add_pretrain(
            matrix, spec, choice.backbone, choice.init, pretrain_seed, pretrain_dep, pretrain_ref
        )
        deps.append(pretrain.key)
        checkpoint = {"pretrain": pretrain.id}
    else:
        path = checkpoint_path(choice.init, choice.backbone)
        if path is not None:
            checkpoint = {
                "file": str(path.resolve()),
                "bytes": path.stat().st_size if path.is_file() else None,
            }
    labels = {
        "backbone": choice.backbone,
        "init": choice.init,
        "seed": choice.seed,
        "resolution": choice.resolution,
        "resize_strategy": choice.resize_strategy,
        "connector": choice.connector,
        "variant": choice.variant,
        "parent": choice.parent,
    }
    train_config = {
        "backbone": choice.backbone,
        "checkpoint": checkpoint,
        "image_size": choice.resolution,
        "resize_strategy": choice.resize_strategy,
        "feature_tap": spec.feature_tap,
        "connector": choice.connector,
        "llm": spec.llm,
        "recipe": spec.recipe.preset,
        "recipe_overrides": dict(spec.recipe.overrides),
        "seed": choice.seed,
        "data": data_ref,
    }
    train = matrix.add(Cell("train", train_config, deps=list(deps), labels=labels))
    eval_config = {
        "train": train.id,
        "tasks": list(spec.eval.tasks),
        "split": spec.eval.split,
        "limit": spec.eval.limit,
        "controls": spec.eval.controls,
        "max_new_tokens": spec.eval.max_new_tokens,
        "seed": choice.seed,
        "data": data_ref,
    }
    eval_deps = [*([data_dep] if data_dep else []), train.key]
    options = {"batch_size": spec.eval.batch_size}
    return matrix.add(Cell("eval", eval_config, deps=eval_deps, labels=dict(labels), options=options))


def _add_dataset(matrix: StudyMatrix, spec: StudySpec) -> tuple[str | None, dict[str, Any]]:
    """The dataset cell key (None for a ready data root) and the reference downstream configs hash."""
    if spec.benchmark.data_root is not None:
        return None, {"root": str(Path(spec.benchmark.data_root).resolve())}
    shapes = to_dict(spec.benchmark.shapes)
    cell = Cell(
        "dataset",
        {"generator": "shapescenes", **shapes},
        labels={"benchmark": "ShapeScenes {size} scenes, {image_size} px, seed {seed}".format(**shapes)},
    )
    cell = matrix.add(cell)
    return cell.key, {"dataset": cell.id}


PRETRAIN_SPLITS = {"train": 0.9, "val": 0.1}


def _add_pretrain_dataset(matrix: StudyMatrix, spec: StudySpec) -> tuple[str, dict[str, Any]] | None:
    """The cell generating the pretraining-only scenes (None when the spec pretrains on the benchmark's)."""
    if spec.pretrain.scenes is None or spec.benchmark.data_root is not None:
        return None
    shapes = {**to_dict(spec.benchmark.shapes), "size": spec.pretrain.scenes, "splits": PRETRAIN_SPLITS}
    cell = Cell(
        "dataset",
        {"generator": "shapescenes", "namespace": "pretrain", **shapes},
        labels={"benchmark": "ShapeScenes pretraining {size} scenes, {image_size} px, seed {seed}".format(**shapes)},
    )
    cell = matrix.add(cell)
    return cell.key, {"dataset": cell.id}


def _add_pretrain(
    matrix: StudyMatrix,
    spec: StudySpec,
    backbone: str,
    init: str,
    seed: int,
    data_dep: str | None,
    data_ref: dict[str, Any],
) -> Cell:
    """The pretraining producing ``init``; a dense one starts from the classification one when asked to."""
    budget = spec.pretrain
    objective = PRODUCED_INITS[init]
    deps = [data_dep] if data_dep else []
    start: dict[str, str] | None = None
    if objective != "classification" and budget.dense_from_classification:
        classification = _add_pretrain(matrix, spec, backbone, "shapes-cls", seed, data_dep, data_ref)
        deps.append(classification.key)
        start = {"pretrain": classification.id}
    image_size = budget.image_size if objective == "classification" else budget.dense_image_size
    config = {
        "backbone": backbone,
        "objective": objective,
        "init": start,
        "image_size": image_size,
        "images_seen": budget.images_seen
        if objective == "classification"
        else (budget.dense_images_seen or budget.images_seen),
        "batch_size": budget.batch_size,
        "overrides": dict(budget.overrides),
        "seed": seed,
        "data": data_ref,
    }
    labels = {"backbone": backbone, "init": init, "seed": seed, "objective": objective}
    return matrix.add(Cell("pretrain", config, deps=deps, labels=labels))

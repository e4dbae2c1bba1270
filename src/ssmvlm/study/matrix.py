"""Planning a study: its spec expanded into cells, each content-addressed by a short hash of its resolved config.

Stages form a chain ``dataset → pretrain → warmup → train → eval``. A cell carries its stage's typed config
(:class:`DatasetCellConfig`, :class:`PretrainCellConfig`, :class:`WarmupCellConfig`, :class:`TrainCellConfig`,
:class:`EvalCellConfig`), serialised once into the plain dict its id hashes and its run folder records. A config
names the cells it depends on by id, so a change upstream changes every id below it, and identical work gets one
id: one dataset per benchmark setting, one pretraining per backbone × initialization (× seed when
``pretrain.seed`` is None), shared by all its VLM cells, and at most one LLM warm-up, shared by every VLM cell. A
cell's run directory is ``OUT/runs/<stage>/<id>/``. After the main cells run, the instability diagnosis asks for
ablation variants of some of them (:func:`add_ablation_cells`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ssmvlm.config import to_dict
from ssmvlm.data.shapes.scene import LANGUAGE_KNOBS
from ssmvlm.study.analysis import AblationRequest
from ssmvlm.study.spec import PRODUCED_INITS, ShapesSettings, StudySpec, checkpoint_path
from ssmvlm.utils.dotted_keys import flatten_keys, nest_keys
from ssmvlm.utils.io import read_json

STAGES: tuple[str, ...] = ("dataset", "pretrain", "warmup", "train", "eval")
MAIN_VARIANT = "main"
ID_LENGTH = 12
ABLATIONS_FILE = "ablations.json"


def cell_id(stage: str, config: dict[str, Any]) -> str:
    """A short, stable hash of the stage and its resolved config (key order and formatting do not matter)."""
    canonical = json.dumps({"stage": stage, "config": config}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:ID_LENGTH]


# -- what a cell runs ------------------------------------------------------------------------------------------
# Each config serialises to exactly the dict earlier versions hashed, so existing study folders keep their ids.


@dataclass(frozen=True)
class DataRef:
    """Where a cell's images come from: the output of a dataset cell (its id), or a ready folder."""

    dataset: str | None = None
    root: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {"dataset": self.dataset} if self.dataset is not None else {"root": str(self.root)}

    def folder(self, upstream: dict[str, dict[str, Any]]) -> Path:
        """The dataset folder, given the results of the cells this one depends on."""
        return Path(upstream[f"dataset/{self.dataset}"]["path"]) if self.dataset is not None else Path(str(self.root))


@dataclass(frozen=True)
class CheckpointRef:
    """The weights an encoder starts from: a pretraining cell's output (its id), or a file (with its size)."""

    pretrain: str | None = None
    file: str | None = None
    bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pretrain": self.pretrain} if self.pretrain is not None else {"file": self.file, "bytes": self.bytes}

    def path(self, upstream: dict[str, dict[str, Any]]) -> str:
        return upstream[f"pretrain/{self.pretrain}"]["checkpoint"] if self.pretrain is not None else str(self.file)


class _CellConfig:
    stage: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    if isinstance(value, DataRef | CheckpointRef):
        return value.to_dict()
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    return value


@dataclass(frozen=True)
class DatasetCellConfig(_CellConfig):
    """ShapeScenes generated with ``shapes``; ``namespace`` picks its seed streams (the benchmark or pretraining)."""

    stage: ClassVar[str] = "dataset"
    shapes: ShapesSettings
    namespace: str = "benchmark"

    def to_dict(self) -> dict[str, Any]:
        # The benchmark's own scenes never recorded their namespace: their ids hash without it.
        namespace = {} if self.namespace == "benchmark" else {"namespace": self.namespace}
        return {"generator": "shapescenes", **namespace, **to_dict(self.shapes)}


@dataclass(frozen=True)
class PretrainCellConfig(_CellConfig):
    """One pretraining run; ``overrides`` are further ``PretrainConfig`` fields (dotted keys)."""

    stage: ClassVar[str] = "pretrain"
    backbone: str
    objective: str
    init: CheckpointRef | None  # the classification pretraining a dense one starts from
    image_size: int | None  # None: the pretraining default for dense objectives
    images_seen: int
    batch_size: int
    overrides: dict[str, Any]
    seed: int
    data: DataRef


@dataclass(frozen=True)
class WarmupCellConfig(_CellConfig):
    """The LLM warm-up on symbolic scenes (``llm_warmup``): the study's LLM and recipe, on the benchmark's training
    split at the first resolution and resize strategy (the frame the ground-truth boxes are given in)."""

    stage: ClassVar[str] = "warmup"
    llm: str
    recipe: str
    recipe_overrides: dict[str, Any]
    image_size: int
    resize_strategy: str
    grid: int
    seed: int
    data: DataRef


@dataclass(frozen=True)
class TrainCellConfig(_CellConfig):
    """One VLM training run: the ``VLMConfig`` fields a study varies, the recipe preset and its overrides."""

    stage: ClassVar[str] = "train"
    backbone: str
    checkpoint: CheckpointRef | None
    image_size: int
    resize_strategy: str
    feature_tap: str | None
    connector: str
    llm: str
    recipe: str
    recipe_overrides: dict[str, Any]
    seed: int
    data: DataRef
    mix: DataRef | None = None  # scenes that join the training split (``benchmark.train_mix``)
    llm_warmup: str | None = None  # the warm-up cell whose LLM this one starts from

    def to_dict(self) -> dict[str, Any]:
        record = super().to_dict()
        for optional in ("mix", "llm_warmup"):  # cells without them hash as before the options existed
            if record[optional] is None:
                del record[optional]
        return record


@dataclass(frozen=True)
class EvalCellConfig(_CellConfig):
    """The evaluation of the training cell ``train``."""

    stage: ClassVar[str] = "eval"
    train: str
    tasks: list[str]
    split: str
    limit: int | None
    controls: bool
    max_new_tokens: int | None
    seed: int
    data: DataRef


CellConfig = DatasetCellConfig | PretrainCellConfig | WarmupCellConfig | TrainCellConfig | EvalCellConfig


@dataclass
class Cell:
    """One unit of work: a stage's typed config, the cells it needs, and labels for the report."""

    config: CellConfig
    deps: list[str] = field(default_factory=list)  # keys ``stage/id`` of upstream cells
    labels: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # settings that do not change results (not hashed)
    record: dict[str, Any] = field(init=False)  # the config serialised: what the id hashes and the run records
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.record = self.config.to_dict()
        self.id = cell_id(self.stage, self.record)

    @property
    def stage(self) -> str:
        return self.config.stage

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
        if self.stage == "warmup":
            return f"LLM warm-up {labels['llm']} seed {labels['seed']}"
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
    data_dep, data = _add_dataset(matrix, spec)
    deps = [data_dep] if data_dep else []
    checkpoint: CheckpointRef | None = None
    if choice.init in PRODUCED_INITS:
        pretrain_seed = choice.seed if spec.pretrain.seed is None else spec.pretrain.seed
        pretrain_dep, pretrain_data = _add_pretrain_dataset(matrix, spec) or (data_dep, data)
        pretrain = _add_pretrain(matrix, spec, choice.backbone, choice.init, pretrain_seed, pretrain_dep, pretrain_data)
        deps.append(pretrain.key)
        checkpoint = CheckpointRef(pretrain=pretrain.id)
    else:
        path = checkpoint_path(choice.init, choice.backbone)
        if path is not None:
            size = path.stat().st_size if path.is_file() else None
            checkpoint = CheckpointRef(file=str(path.resolve()), bytes=size)
    mix_dep, mix = _add_train_mix(matrix, spec) or (None, None)
    warmup = _add_llm_warmup(matrix, spec, data_dep, data)
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
    train_config = TrainCellConfig(
        backbone=choice.backbone,
        checkpoint=checkpoint,
        image_size=choice.resolution,
        resize_strategy=choice.resize_strategy,
        feature_tap=spec.feature_tap,
        connector=choice.connector,
        llm=spec.llm,
        recipe=spec.recipe.preset,
        recipe_overrides=flat_overrides(spec.recipe.overrides),
        seed=choice.seed,
        data=data,
        mix=mix,
        llm_warmup=warmup.id if warmup else None,
    )
    extra_deps = [*([mix_dep] if mix_dep else []), *([warmup.key] if warmup else [])]
    train = matrix.add(Cell(train_config, deps=[*deps, *extra_deps], labels=labels))
    eval_config = EvalCellConfig(
        train=train.id,
        tasks=list(spec.eval.tasks),
        split=spec.eval.split,
        limit=spec.eval.limit,
        controls=spec.eval.controls,
        max_new_tokens=spec.eval.max_new_tokens,
        seed=choice.seed,
        data=data,
    )
    eval_deps = [*([data_dep] if data_dep else []), train.key]
    options = {"batch_size": spec.eval.batch_size}
    return matrix.add(Cell(eval_config, deps=eval_deps, labels=dict(labels), options=options))


def _add_dataset(matrix: StudyMatrix, spec: StudySpec) -> tuple[str | None, DataRef]:
    """The dataset cell key (None for a ready data root) and the reference downstream configs hash."""
    if spec.benchmark.data_root is not None:
        return None, DataRef(root=str(Path(spec.benchmark.data_root).resolve()))
    shapes = spec.benchmark.shapes
    label = f"ShapeScenes {shapes.size} scenes, {shapes.image_size} px, seed {shapes.seed}"
    cell = matrix.add(Cell(DatasetCellConfig(shapes), labels={"benchmark": label}))
    return cell.key, DataRef(dataset=cell.id)


PRETRAIN_SPLITS = {"train": 0.9, "val": 0.1}


def _add_pretrain_dataset(matrix: StudyMatrix, spec: StudySpec) -> tuple[str, DataRef] | None:
    """The cell generating the pretraining-only scenes (None when the spec pretrains on the benchmark's)."""
    if spec.pretrain.scenes is None or spec.benchmark.data_root is not None:
        return None
    # Without the benchmark's language knobs, a study that changes only its questions reuses its encoders.
    scene = {k: v for k, v in spec.benchmark.shapes.scene.items() if k not in LANGUAGE_KNOBS}
    shapes = dataclasses.replace(
        spec.benchmark.shapes, size=spec.pretrain.scenes, splits=dict(PRETRAIN_SPLITS), scene=scene
    )
    label = f"ShapeScenes pretraining {shapes.size} scenes, {shapes.image_size} px, seed {shapes.seed}"
    cell = matrix.add(Cell(DatasetCellConfig(shapes, namespace="pretrain"), labels={"benchmark": label}))
    return cell.key, DataRef(dataset=cell.id)


def _add_train_mix(matrix: StudyMatrix, spec: StudySpec) -> tuple[str, DataRef] | None:
    """The cell generating the training-only mix scenes (None when the spec has no mix)."""
    mix = spec.benchmark.train_mix
    if not mix.size:
        return None
    base = spec.benchmark.shapes
    shapes = ShapesSettings(mix.size, base.image_size, base.seed, splits={"train": 1.0}, scene=dict(mix.scene))
    label = f"ShapeScenes training mix {shapes.size} scenes, {shapes.image_size} px, seed {shapes.seed}"
    cell = matrix.add(Cell(DatasetCellConfig(shapes, namespace="mix"), labels={"benchmark": label}))
    return cell.key, DataRef(dataset=cell.id)


def _add_llm_warmup(matrix: StudyMatrix, spec: StudySpec, data_dep: str | None, data: DataRef) -> Cell | None:
    """The study's one LLM warm-up cell (None when ``llm_warmup`` is off)."""
    warmup = spec.llm_warmup
    if not warmup.enabled:
        return None
    config = WarmupCellConfig(
        llm=spec.llm,
        recipe=spec.recipe.preset,
        recipe_overrides=_warmup_overrides(spec),
        image_size=spec.resolutions[0],
        resize_strategy=spec.resize_strategies[0],
        grid=warmup.grid,
        seed=warmup.seed,
        data=data,
    )
    labels = {"llm": spec.llm, "seed": warmup.seed}
    return matrix.add(Cell(config, deps=[data_dep] if data_dep else [], labels=labels))


def flat_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides as one flat dotted key per field, later spellings winning, as cell configs hold them: a spec's
    ``model.box_frame: model`` and a command line's ``recipe.overrides.model.box_frame=model`` (which arrives
    nested) then make one cell, not two ids for the same run."""
    return flatten_keys(nest_keys(overrides.items()))


def _warmup_overrides(spec: StudySpec) -> dict[str, Any]:
    """The recipe's overrides with the warm-up's own epochs when ``llm_warmup.epochs`` is set."""
    overrides = flat_overrides(spec.recipe.overrides)
    if spec.llm_warmup.epochs is not None:
        overrides["optim.epochs"] = spec.llm_warmup.epochs
    return overrides


def _add_pretrain(
    matrix: StudyMatrix,
    spec: StudySpec,
    backbone: str,
    init: str,
    seed: int,
    data_dep: str | None,
    data: DataRef,
) -> Cell:
    """The pretraining producing ``init``; a dense one starts from the classification one when asked to."""
    budget = spec.pretrain
    objective = PRODUCED_INITS[init]
    deps = [data_dep] if data_dep else []
    start: CheckpointRef | None = None
    if objective != "classification" and budget.dense_from_classification:
        classification = _add_pretrain(matrix, spec, backbone, "shapes-cls", seed, data_dep, data)
        deps.append(classification.key)
        start = CheckpointRef(pretrain=classification.id)
    dense = objective != "classification"
    config = PretrainCellConfig(
        backbone=backbone,
        objective=objective,
        init=start,
        image_size=budget.dense_image_size if dense else budget.image_size,
        images_seen=(budget.dense_images_seen or budget.images_seen) if dense else budget.images_seen,
        batch_size=budget.batch_size,
        overrides=flat_overrides(budget.overrides),
        seed=seed,
        data=data,
    )
    labels = {"backbone": backbone, "init": init, "seed": seed, "objective": objective}
    return matrix.add(Cell(config, deps=deps, labels=labels))


# -- ablation variants -----------------------------------------------------------------------------------------


def add_ablation_cells(matrix: StudyMatrix, spec: StudySpec, requests: list[AblationRequest]) -> int:
    """Add the train/eval cells of each request; returns how many cells were new."""
    before = len(matrix)
    for request in requests:
        key = f"eval/{request.parent}"
        if key not in matrix:
            continue  # the spec changed since the request was planned
        labels = matrix[key].labels
        choice = VlmChoice(
            labels["backbone"],
            labels["init"],
            labels["seed"],
            labels["resolution"],
            request.resize_strategy,
            request.connector,
            variant=request.variant,
            parent=request.parent,
        )
        add_vlm_cells(matrix, spec, choice)
    return len(matrix) - before


def load_ablations(out: Path) -> list[AblationRequest]:
    """The ablation requests an earlier run of the study in ``out`` planned."""
    path = out / ABLATIONS_FILE
    return [AblationRequest(**record) for record in read_json(path)] if path.is_file() else []


def merge_ablations(old: list[AblationRequest], new: list[AblationRequest]) -> list[AblationRequest]:
    return list(dict.fromkeys([*old, *new]))

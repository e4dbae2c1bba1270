"""The study spec: what to compare, as typed dataclasses loaded from YAML and validated before anything runs.

A spec names the benchmark, the backbones × initializations × resolutions × resize strategies × connectors ×
seeds to cross, the fixed recipe, the evaluation, the stabilization ablation and how to execute. ``load_spec``
reads a preset or a file (strict keys, ``a.b=value`` overrides) and ``validate_spec`` asks the zoo and the
stage registries whether every name, file and combination exists, so a typo fails in seconds, not hours in.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ssmvlm.config import load_config
from ssmvlm.utils.errors import ConfigError, SsmvlmError

PRESETS_DIR = Path(__file__).resolve().parent / "presets"

# Initializations produced inside the study by pretraining on ShapeScenes, and the objective of each.
PRODUCED_INITS: dict[str, str] = {
    "shapes-cls": "classification",
    "shapes-det": "detection",
    "shapes-seg": "segmentation",
}
RANDOM_INITS: tuple[str, ...] = ("none", "random")
CONNECTORS: tuple[str, ...] = ("linear", "gelu-mlp", "fused-gelu-mlp")


@dataclass
class ShapesSettings:
    """ShapeScenes generator settings (one dataset per distinct setting, shared by every cell)."""

    size: int = 600  # scenes over all splits
    image_size: int = 96  # longer side, pixels
    seed: int = 0
    splits: dict[str, float] | None = None  # None: the generator's default (train/val/test 0.8/0.1/0.1)
    scene: dict[str, Any] = field(default_factory=dict)  # difficulty knobs (SceneConfig: max_objects, clutter...)


@dataclass
class TrainMixSettings:
    """Easier ShapeScenes that join the VLM's training split only (a question-mix lever: every encoder gets the
    same mix, and the evaluation splits are untouched). Generated at the benchmark's image size and seed from
    seed streams of their own, disjoint from every benchmark and pretraining scene."""

    size: int = 0  # scenes, all in the training split; 0: no mix
    scene: dict[str, Any] = field(default_factory=dict)  # SceneConfig knobs, e.g. {max_objects: 1, clutter: none}


@dataclass
class BenchmarkSpec:
    """The embedded ShapeScenes benchmark, or a folder in the same layout built from real data."""

    shapes: ShapesSettings = field(default_factory=ShapesSettings)
    data_root: Path | None = None  # a ready folder (ShapeScenes layout); when set, no dataset is generated
    train_mix: TrainMixSettings = field(default_factory=TrainMixSettings)


@dataclass
class PretrainSpec:
    """Budget of the in-study pretraining that produces the ``shapes-*`` initializations."""

    image_size: int = 96  # classification side
    dense_image_size: int | None = None  # detection/segmentation side (None: the pretraining default, 2x)
    # Scenes generated for pretraining alone: the benchmark's scene settings less its question counts (which
    # never change an image), seed streams disjoint from every benchmark split, 90% train / 10% held out. None:
    # pretrain on the benchmark's own train/val images (a few thousand at most, which many passes overfit).
    scenes: int | None = None
    images_seen: int = 20_000
    dense_images_seen: int | None = None  # detection/segmentation budget (None: images_seen)
    batch_size: int = 64
    dense_from_classification: bool = True  # det/seg start from the cls weights (IN1K → COCO/ADE20K)
    # One encoder per backbone × init pretrained with this seed and shared by every VLM seed, as a released
    # checkpoint is in the paper (seeds then measure VLM-training variance); None: one per VLM seed.
    seed: int | None = 0
    overrides: dict[str, Any] = field(default_factory=dict)  # extra PretrainConfig fields, e.g. optim.lr


@dataclass
class RecipeSpec:
    """The fixed VLM training recipe: a preset plus explicit overrides (the same for every cell)."""

    preset: str = "shapes"
    overrides: dict[str, Any] = field(default_factory=dict)  # extra TrainConfig fields


@dataclass
class LlmWarmupSpec:
    """An LLM warm-up before the VLM stage (ssmvlm.train.warmup): the study's LLM trained once with the recipe on the
    benchmark's training split, each image replaced by its scene's ground truth; every VLM cell starts from it."""

    enabled: bool = False
    grid: int = 6  # cells per side of the symbolic image
    epochs: int | None = None  # None: the recipe's (a recipe's max_steps applies to the warm-up as it is)
    seed: int = 0


@dataclass
class EvalSpec:
    tasks: list[str] = field(default_factory=lambda: ["shapes-vqa", "shapes-pope", "shapes-refexp"])
    split: str = "test"
    limit: int | None = None
    batch_size: int = 16
    controls: bool = True
    max_new_tokens: int | None = None  # generation cap (None: the evaluator's default); answers here are short


@dataclass
class DiagnosisSpec:
    """Thresholds of the instability diagnosis (scores on the 0–100 scale)."""

    loc_floor: float = 5.0  # Loc below this is collapsed outright
    loc_ratio: float = 0.5  # ... or below this fraction of the reference Loc (the other backbones' median)
    vqa_hold: float = 0.85  # ... while VQA stays above this fraction of the reference VQA
    loss_spike: float = 3.0  # a step whose loss exceeds this × the running median of the steps before
    loss_window: int = 20
    seed_range: float = 15.0  # seeds of one cell whose Loc or VQA spread more than this many points


@dataclass
class StabilizationSpec:
    """The stabilization ablation: the 3-layer connector, square input geometry, and both."""

    enabled: bool = True
    apply_to: Literal["flagged", "dense", "all"] = "flagged"  # dense = flagged + every det/seg init
    connector: str = "fused-gelu-mlp"
    resize_strategy: str = "letterbox-br"  # fit, pad right/bottom to a square canvas
    variants: list[Literal["connector", "geometry", "both"]] = field(
        default_factory=lambda: ["connector", "geometry", "both"]
    )
    recovered_ratio: float = 0.8  # Loc back to this fraction of the reference counts as recovered


@dataclass
class SlurmSpec:
    partition: str | None = None
    timeout_min: int = 60
    cpus_per_task: int = 8
    gpus_per_node: int = 1
    mem_gb: int = 64
    max_parallel: int = 16
    extra: dict[str, Any] = field(default_factory=dict)  # passed to submitit's update_parameters


@dataclass
class ExecutionSpec:
    device: str = "auto"  # auto | cpu | cuda
    gpus: int = 0  # > 1: worker processes pinned to GPUs
    workers_per_gpu: int = 1  # nano-sized cells leave most of a GPU idle: several share one
    cpu_workers: int = 1  # device cpu: cells run in this many worker processes (each with ``threads`` threads)
    launcher: Literal["local", "submitit"] = "local"
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    threads: int | None = None  # torch threads per worker (None: leave torch's default)


@dataclass
class StudySpec:
    name: str = "study"
    benchmark: BenchmarkSpec = field(default_factory=BenchmarkSpec)
    backbones: list[str] = field(default_factory=lambda: ["vmamba_nano", "mambavision_nano", "vit_nano"])
    initializations: list[str] = field(default_factory=lambda: ["shapes-cls"])
    feature_tap: str | None = None
    resolutions: list[int] = field(default_factory=lambda: [96])
    resize_strategies: list[str] = field(default_factory=lambda: ["letterbox"])
    connectors: list[str] = field(default_factory=lambda: ["gelu-mlp"])
    llm: str = "tiny-llama-2m"  # a tiny LLM preset, or a folder with a local model
    recipe: RecipeSpec = field(default_factory=RecipeSpec)
    llm_warmup: LlmWarmupSpec = field(default_factory=LlmWarmupSpec)
    seeds: list[int] = field(default_factory=lambda: [0])
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    diagnosis: DiagnosisSpec = field(default_factory=DiagnosisSpec)
    stabilization: StabilizationSpec = field(default_factory=StabilizationSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    bench_results: Path | None = None  # a `ssmvlm bench` results JSON (file or folder) for efficiency columns


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError("preset", f"unknown study preset {name!r}", allowed=list_presets())
    return path


def load_spec(
    spec_file: str | Path | None = None, *, preset: str | None = None, overrides: list[str] | None = None
) -> StudySpec:
    """A spec from a preset or a YAML file (not both) plus ``a.b=value`` overrides; strict keys."""
    if spec_file is not None and preset is not None:
        raise ConfigError("spec", "give either a preset or a spec file, not both")
    path = preset_path(preset) if preset is not None else spec_file
    return load_config(StudySpec, path, overrides)


def checkpoint_path(init: str, backbone: str) -> Path | None:
    """The file an initialization names, or None for the study's own and random initializations.

    ``{backbone}`` is filled in; ``NAME@TAG`` (an initialization registered by ``ssmvlm pretrain``) is
    looked up in the pretraining registry, whose error names the registered ones.
    """
    if init in PRODUCED_INITS or init in RANDOM_INITS:
        return None
    path = Path(init.format(backbone=backbone)).expanduser()
    if "@" in str(path) and not path.exists():
        from ssmvlm.backbones.initializations import resolve_initialization

        return resolve_initialization(str(path))
    return path


def validate_spec(spec: StudySpec) -> None:
    """Reject, before anything runs, every name, file and combination the stages would fail on."""
    _require_nonempty(spec)
    from ssmvlm.backbones import list_vision_backbones
    from ssmvlm.data.transforms import RESIZE_STRATEGIES

    zoo = list_vision_backbones()
    for index, name in enumerate(spec.backbones):
        if name not in zoo:
            raise ConfigError(f"backbones[{index}]", f"unknown backbone {name!r}", allowed=zoo)
    for index, init in enumerate(spec.initializations):
        for backbone in spec.backbones:
            try:
                path = checkpoint_path(init, backbone)
            except SsmvlmError as exc:
                raise ConfigError(f"initializations[{index}]", str(exc)) from None
            if path is not None and not path.is_file():
                raise ConfigError(
                    f"initializations[{index}]",
                    f"checkpoint file {path} not found (give an existing file, or one of "
                    f"{', '.join([*RANDOM_INITS, *PRODUCED_INITS])})",
                )
    _check_names("resize_strategies", spec.resize_strategies, list(RESIZE_STRATEGIES))
    _check_names("stabilization.resize_strategy", [spec.stabilization.resize_strategy], list(RESIZE_STRATEGIES))
    connectors = _registry_names("ssmvlm.connectors", "CONNECTORS") or list(CONNECTORS)
    _check_names("connectors", spec.connectors, connectors)
    _check_names("stabilization.connector", [spec.stabilization.connector], connectors)
    recipes = _registry_names("ssmvlm.train.recipe", "RECIPES")
    if recipes:
        _check_names("recipe.preset", [spec.recipe.preset], recipes)
    tasks = _registry_names("ssmvlm.eval.tasks", "TASKS")
    if tasks:
        _check_names("eval.tasks", spec.eval.tasks, tasks)
    llms = _registry_names("ssmvlm.vlm.llm", "TINY_LLAMA_PRESETS")
    if llms and not Path(spec.llm).expanduser().is_dir():
        _check_names("llm", [spec.llm], llms)
    if spec.benchmark.data_root is not None and not Path(spec.benchmark.data_root).is_dir():
        raise ConfigError("benchmark.data_root", f"folder {spec.benchmark.data_root} not found")
    _check_train_mix(spec.benchmark.train_mix)
    _check_llm_warmup(spec)
    for index, resolution in enumerate(spec.resolutions):
        for backbone in spec.backbones:
            check_resolution(backbone, resolution, spec.feature_tap, key=f"resolutions[{index}]")
    if any(init in PRODUCED_INITS for init in spec.initializations):
        for backbone in spec.backbones:
            check_resolution(backbone, spec.pretrain.image_size, None, key="pretrain.image_size")
    if any(PRODUCED_INITS.get(init, "classification") != "classification" for init in spec.initializations):
        dense_size = spec.pretrain.dense_image_size or 2 * spec.pretrain.image_size
        for backbone in spec.backbones:
            check_resolution(backbone, dense_size, None, key="pretrain.dense_image_size")
    if spec.execution.cpu_workers < 1 or spec.execution.workers_per_gpu < 1:
        raise ConfigError("execution.cpu_workers", "worker counts must be at least 1")
    if spec.execution.launcher == "local" and spec.execution.gpus > 1 and spec.execution.device == "cpu":
        raise ConfigError("execution.gpus", "several GPU workers were asked for with execution.device=cpu")


def _require_nonempty(spec: StudySpec) -> None:
    for key in ("backbones", "initializations", "resolutions", "resize_strategies", "connectors", "seeds"):
        if not getattr(spec, key):
            raise ConfigError(key, "must list at least one value")
    if not spec.eval.tasks:
        raise ConfigError("eval.tasks", "must list at least one task")
    for index, resolution in enumerate(spec.resolutions):
        if resolution <= 0:
            raise ConfigError(f"resolutions[{index}]", f"expected a positive image size, got {resolution}")


def _check_train_mix(mix: TrainMixSettings) -> None:
    if mix.size < 0:
        raise ConfigError("benchmark.train_mix.size", f"expected 0 (no mix) or a number of scenes, got {mix.size}")
    if mix.size:
        from ssmvlm.data.shapes.scene import SceneConfig

        try:
            SceneConfig.from_difficulty(**mix.scene)
        except (TypeError, ValueError) as exc:
            raise ConfigError("benchmark.train_mix.scene", str(exc)) from None


def _check_llm_warmup(spec: StudySpec) -> None:
    warmup = spec.llm_warmup
    if not warmup.enabled:
        return
    if warmup.grid < 1:
        raise ConfigError("llm_warmup.grid", f"expected at least 1 cell per side, got {warmup.grid}")
    if warmup.epochs is not None and warmup.epochs < 1:
        raise ConfigError("llm_warmup.epochs", f"expected at least 1 epoch (null: the recipe's), got {warmup.epochs}")
    root = spec.benchmark.data_root
    if root is not None and not (Path(root) / "train" / "scenes.json").is_file():
        raise ConfigError(
            "llm_warmup.enabled",
            f"the warm-up reads each image's ground truth from a ShapeScenes split; {root}/train/scenes.json not found",
        )


def _check_names(key: str, values: list[str], allowed: list[str]) -> None:
    for index, value in enumerate(values):
        if value not in allowed:
            where = key if len(values) == 1 and not key.endswith("s") else f"{key}[{index}]"
            raise ConfigError(where, f"unknown value {value!r}", allowed=sorted(allowed))


def _registry_names(module: str, attribute: str) -> list[str] | None:
    """The names of a stage's registry (a mapping or a listing function), or None when it has none yet."""
    try:
        registry = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        return None
    return sorted(registry() if callable(registry) else registry)


@functools.lru_cache(maxsize=256)
def _resolution_problem(backbone: str, resolution: int, feature_tap: str | None) -> str | None:
    """Why ``backbone`` cannot take ``resolution`` (None when it can): build it and push one image through.

    A real CPU forward of a batch of one: the meta device cannot run the selective scans (they read sizes
    with ``.item()``), and for the nano presets the CPU pass takes well under a second.
    """
    import torch

    from ssmvlm.backbones import create_vision_backbone

    try:
        with torch.no_grad():
            model = create_vision_backbone(backbone, image_size=resolution, feature_tap=feature_tap)
            model.num_tokens(resolution)
            model(torch.zeros(1, 3, resolution, resolution))
    except Exception as exc:  # any failure of a real forward means this size cannot run
        return _one_line(exc)
    return None


def check_resolution(backbone: str, resolution: int, feature_tap: str | None, *, key: str) -> None:
    problem = _resolution_problem(backbone, resolution, feature_tap)
    if problem is not None:
        raise ConfigError(key, f"{backbone} cannot take {resolution}x{resolution} input: {problem}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "…") if len(text) > 200 else (text or type(exc).__name__)

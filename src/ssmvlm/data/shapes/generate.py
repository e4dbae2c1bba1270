"""The ShapeScenes driver: scenes in parallel, then every split file, the manifest and the run record.

Scene ``index`` of ``split`` is drawn from ``SeedSequence([seed, split code, index])`` alone, so the output
does not depend on the number of workers or on the split sizes (a bigger run extends a smaller one), and
re-running into the same folder rewrites byte-identical files (``run.json`` aside, which records when it ran).

A ``namespace`` other than ``benchmark`` appends its code to that seed material: the study's pretraining
scenes (``pretrain``) come from the same distribution as the benchmark's but from seed streams no benchmark
split ever draws, so an encoder never pretrains on a scene the VLM is trained or evaluated on; so do the
easier scenes a study adds to the VLM's training split alone (``mix``).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ssmvlm.data.shapes.questions import FAMILIES, POPE_VARIANTS, pope_probes, sample_questions
from ssmvlm.data.shapes.referring import STYLES, sample_referring
from ssmvlm.data.shapes.render import encode_png, render
from ssmvlm.data.shapes.scene import (
    ASPECTS,
    CLUTTER_LEVELS,
    COLORS,
    SHAPES,
    SIZES,
    Scene,
    SceneConfig,
    canvas_size,
    sample_aspect,
    sample_layout,
)
from ssmvlm.data.shapes.writers import CLASSIFICATION_CLASSES, SceneRecord, write_split_files
from ssmvlm.utils.errors import ConfigError
from ssmvlm.utils.io import atomic_write_json

GENERATOR = "ssmvlm.shapescenes"
GENERATOR_VERSION = 1
SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
NAMESPACE_CODES = {"benchmark": None, "pretrain": 1, "mix": 2}
DEFAULT_SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}
IMAGE_ID_STRIDE = 10_000_000  # image_id = split code * stride + index: unique across splits
CHUNK = 32
MIN_IMAGE_SIZE = 32


def parse_splits(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` → ``{"train": 0.8, ...}`` (checked: known names, shares sum to 1)."""
    splits: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            splits[name.strip()] = float(value)
        except ValueError:
            raise ConfigError("splits", f"expected name=share pairs like train=0.8, got {part!r}") from None
    _check_splits(splits)
    return splits


def _check_splits(splits: dict[str, float]) -> None:
    unknown = sorted(set(splits) - set(SPLIT_CODES))
    if unknown or not splits:
        raise ConfigError("splits", f"unknown or missing split names {unknown}", allowed=list(SPLIT_CODES))
    if any(share < 0 for share in splits.values()) or abs(sum(splits.values()) - 1.0) > 1e-6:
        raise ConfigError("splits", f"shares must be non-negative and sum to 1, got {splits}")


def split_counts(size: int, splits: dict[str, float]) -> dict[str, int]:
    """Scenes per split: each share rounded down, the remainder going to the first split."""
    counts = {name: int(size * share) for name, share in splits.items()}
    first = next(iter(counts))
    counts[first] += size - sum(counts.values())
    return counts


def scene_rng(seed: int, split: str, index: int, namespace: str = "benchmark") -> np.random.Generator:
    """The one generator a scene draws everything from (layout, pixels, language, in that order)."""
    entropy = [seed, SPLIT_CODES[split], index]
    code = NAMESPACE_CODES[namespace]
    return np.random.default_rng(np.random.SeedSequence(entropy if code is None else [*entropy, code]))


def make_scene(
    seed: int,
    split: str,
    index: int,
    image_size: int,
    config: SceneConfig,
    namespace: str = "benchmark",
) -> tuple[SceneRecord, np.ndarray, np.ndarray]:
    """One scene: its record (scene graph, questions, expressions, probes, areas, outlines), image, mask."""
    rng = scene_rng(seed, split, index, namespace)
    width, height = canvas_size(image_size, sample_aspect(rng, config.non_square_share))
    planned = sample_layout(rng, width, height, config)
    rendered = render(planned, width, height, config, rng)
    scene = Scene(
        SPLIT_CODES[split] * IMAGE_ID_STRIDE + index,
        f"{index:06d}",
        split,
        width,
        height,
        tuple(rendered.objects),
    )
    vqa = sample_questions(scene, rng, config.vqa_per_image)
    refs = sample_referring(scene, rng, config.refs_per_image)
    probes = pope_probes(scene, rng)
    record: SceneRecord = {
        "split": split,
        "scene": scene.to_json(),
        "vqa": [
            {
                "question": q.question,
                "answer": q.answer,
                "question_type": q.question_type,
                "answer_type": q.answer_type,
            }
            for q in vqa
        ],
        "refs": [{"sentence": r.sentence, "target": r.target.id, "style": r.style} for r in refs],
        "pope": {v: [{"question": p.question, "answer": p.answer} for p in probes[v]] for v in POPE_VARIANTS},
        "existence_turns": [
            {"question": p.question, "answer": p.answer} for p in probes["adversarial"] if config.existence_turns
        ],
        "areas": rendered.areas,
        "polygons": rendered.polygons,
    }
    return record, rendered.image, rendered.semantic_mask


def _write_fast(path: Path, data: bytes) -> None:
    """Temporary name, then rename: never a half-written PNG. No fsync per image (it would dominate the run);
    the manifest, written last and synced, marks a finished generation."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


_WORKER: dict[str, Any] = {}


def _init_worker(out_dir: Path, seed: int, image_size: int, config: SceneConfig, namespace: str) -> None:
    _WORKER.update(out_dir=out_dir, seed=seed, image_size=image_size, config=config, namespace=namespace)


def _make_chunk(task: tuple[str, int, int]) -> list[SceneRecord]:
    split, start, stop = task
    out_dir: Path = _WORKER["out_dir"]
    records = []
    for index in range(start, stop):
        record, image, mask = make_scene(
            _WORKER["seed"], split, index, _WORKER["image_size"], _WORKER["config"], _WORKER["namespace"]
        )
        _write_fast(out_dir / record["scene"]["file_name"], encode_png(image))
        _write_fast(out_dir / record["scene"]["file_name"].replace("images/", "masks/", 1), encode_png(mask))
        records.append(record)
    return records


def _run_chunks(
    tasks: list[tuple[str, int, int]],
    workers: int,
    init_args: tuple[Any, ...],
) -> Iterator[list[SceneRecord]]:
    if workers <= 1:
        _init_worker(*init_args)
        yield from map(_make_chunk, tasks)
        return
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        yield from pool.imap(_make_chunk, tasks)


def generate_shapescenes(
    out_dir: str | Path,
    *,
    size: int,
    image_size: int,
    seed: int,
    splits: dict[str, float] | None = None,
    config: SceneConfig | None = None,
    workers: int = 1,
    show_progress: bool = True,
    namespace: str = "benchmark",
    **scene_options: Any,
) -> Path:
    """Generate ShapeScenes into ``out_dir`` (layout in docs/ARCHITECTURE.md) and return the manifest path.

    ``size`` scenes in all, ``image_size`` the longer side in pixels; difficulty knobs come from ``config`` or
    as keyword arguments: ``difficulty`` (a preset of :data:`DIFFICULTIES`, default "medium") and any field of
    :class:`SceneConfig` (``max_objects=4, clutter="high"``). ``namespace`` picks the seed streams
    (:data:`NAMESPACE_CODES`): ``pretrain`` and ``mix`` draw scenes disjoint from every benchmark split.
    """
    from ssmvlm.utils.progress import progress_bar
    from ssmvlm.utils.provenance import write_run_record

    splits = dict(splits or DEFAULT_SPLITS)
    _check_splits(splits)
    if config is not None and scene_options:
        raise ConfigError("shapes", "pass either config or scene options, not both")
    try:
        config = config or SceneConfig.from_difficulty(**scene_options)
    except (TypeError, ValueError) as exc:
        raise ConfigError("shapes", str(exc)) from None
    if namespace not in NAMESPACE_CODES:
        raise ConfigError("namespace", f"unknown namespace {namespace!r}", allowed=list(NAMESPACE_CODES))
    if size < 1:
        raise ConfigError("size", f"expected at least 1 scene, got {size}")
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError("image_size", f"expected at least {MIN_IMAGE_SIZE} px, got {image_size}")
    out_dir = Path(out_dir)
    counts = split_counts(size, splits)
    if max(counts.values()) >= IMAGE_ID_STRIDE:
        raise ConfigError("size", f"at most {IMAGE_ID_STRIDE - 1} scenes per split")
    for split in counts:
        for kind in ("images", "masks"):
            (out_dir / kind / split).mkdir(parents=True, exist_ok=True)
    tasks = [
        (split, start, min(start + CHUNK, count))
        for split, count in counts.items()
        for start in range(0, count, CHUNK)
    ]
    records: dict[str, list[SceneRecord]] = {split: [] for split in counts}
    with progress_bar(disable=not show_progress) as progress:
        bar = progress.add_task("ShapeScenes", total=size, status=f"{workers} worker(s)")
        for chunk in _run_chunks(tasks, workers, (out_dir, seed, image_size, config, namespace)):
            records[chunk[0]["split"]].extend(chunk)
            progress.advance(bar, len(chunk))
        progress.update(bar, status="writing annotations")
        for split, split_records in records.items():
            write_split_files(out_dir, split, split_records)
            _remove_stale_images(out_dir, split, len(split_records))
    manifest = build_manifest(seed, image_size, splits, config, records, namespace)
    manifest_path = out_dir / "manifest.json"
    atomic_write_json(manifest_path, manifest)
    write_run_record(
        out_dir,
        {
            "size": size,
            "image_size": image_size,
            "splits": splits,
            "workers": workers,
            "namespace": namespace,
            **dataclasses.asdict(config),
        },
        seed,
        generator=GENERATOR,
    )
    return manifest_path


def _remove_stale_images(out_dir: Path, split: str, count: int) -> None:
    """Drop images and masks a previous, larger generation (or an interrupted one) left behind, so the folder
    matches the manifest."""
    for kind in ("images", "masks"):
        for path in (out_dir / kind / split).glob("*.png"):
            if not (path.stem.isdigit() and int(path.stem) < count):
                path.unlink()
        for path in (out_dir / kind / split).glob(".*.tmp"):
            path.unlink()


def build_manifest(
    seed: int,
    image_size: int,
    splits: dict[str, float],
    config: SceneConfig,
    records: dict[str, list[SceneRecord]],
    namespace: str = "benchmark",
) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "namespace": namespace,
        "image_size": image_size,
        "split_shares": splits,
        "config": dataclasses.asdict(config),
        "splits": {
            split: {
                "scenes": len(rs),
                "non_square": sum(r["scene"]["width"] != r["scene"]["height"] for r in rs),
                "objects": sum(len(r["scene"]["objects"]) for r in rs),
                "vqa_questions": sum(len(r["vqa"]) for r in rs),
                "refs": sum(len(r["refs"]) for r in rs),
                "pope_probes_per_variant": sum(len(r["pope"][POPE_VARIANTS[0]]) for r in rs),
            }
            for split, rs in records.items()
        },
        "vocabulary": {
            "shapes": list(SHAPES),
            "colors": list(COLORS),
            "sizes": list(SIZES),
            "aspects": list(ASPECTS),
            "clutter_levels": list(CLUTTER_LEVELS),
            "question_types": list(FAMILIES),
            "referring_styles": list(STYLES),
            "pope_variants": list(POPE_VARIANTS),
            "mask_classes": ["background", *SHAPES],
            "classification_classes": list(CLASSIFICATION_CLASSES),
        },
    }

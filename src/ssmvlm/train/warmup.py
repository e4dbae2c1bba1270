"""LLM warm-up on symbolic scenes: the VLM stage's recipe with every image replaced by its scene's ground truth.

A language model trained from scratch has to learn the benchmark's language (the question families, the answer and
box formats) and to read the image in the same steps; on ShapeScenes it learned the first and little of the second.
The warm-up teaches it the language first, from a perfect image no encoder is involved in: each ShapeScenes image
becomes a ``grid × grid`` map whose cells hold the object covering most of them (one-hot colour, shape and size, and
the object's box in the model frame) or an "empty" flag, read through a fresh MLP connector that is dropped
afterwards. A study starts every encoder's VLM stage from this one LLM, so the encoders stay matched (probes 16 and
17 in benchmarks/RESULTS.md: VMamba nano's VQA 75.3 -> 88.1 and ShapeScenes-POPE 85.3 -> 95.7 over three seeds).

``warm_up_llm(config, out_dir)`` trains on ``config.data.train_json`` (a ShapeScenes split: its folder's
``scenes.json`` gives the ground truth) with the recipe ``config`` resolves to, and leaves the LLM with its
tokenizer in ``out_dir/llm`` as a Hugging Face folder, which ``model.llm`` accepts.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from ssmvlm.config import to_dict
from ssmvlm.connectors import build_connector
from ssmvlm.data.box_frames import answers_in_model_frame
from ssmvlm.data.llava import load_llava_records
from ssmvlm.data.shapes.scene import COLORS, SHAPES, SIZES
from ssmvlm.data.transforms import ImageTransform, build_image_transform
from ssmvlm.train.dataset import PackedSamples, build_conversation_data, global_batch_indices, rank_micro_batches
from ssmvlm.train.llm_kernels import apply_llm_kernels, compile_training_forward
from ssmvlm.train.loop import build_optimizer, use_bf16
from ssmvlm.train.metrics import MetricsLog
from ssmvlm.train.recipe import TrainConfig, micro_batches_per_step, resolve_recipe
from ssmvlm.utils.device import resolve_device, to_device_async
from ssmvlm.utils.errors import DataError, TrainingDivergedError
from ssmvlm.utils.io import read_json
from ssmvlm.utils.progress import progress_bar
from ssmvlm.utils.provenance import write_run_record
from ssmvlm.utils.seed import seed_everything
from ssmvlm.vlm.builder import build_llm, prepare_tokenizer
from ssmvlm.vlm.model import VLM
from ssmvlm.vlm.prompts import get_prompt_format

WARM_LLM_DIR = "llm"
# Per cell: one-hot colour, shape and size, the box (x1, y1, x2, y2 over the model frame's width and height), empty.
CELL_FEATURES = len(COLORS) + len(SHAPES) + len(SIZES) + 4 + 1
MIN_COVER = 0.15  # the share of a cell an object must cover to be that cell's object


def scene_grid(scene: dict, transform: ImageTransform, grid: int) -> torch.Tensor:
    """(grid², CELL_FEATURES): row-major over the model frame, each cell the object covering most of it."""
    cells = torch.zeros(grid * grid, CELL_FEATURES)
    cells[:, -1] = 1.0
    best = torch.zeros(grid * grid)
    height, width = transform.size
    cell_h, cell_w = height / grid, width / grid
    for obj in scene["objects"]:
        x1, y1, x2, y2 = transform.box_to_model(obj["box"], scene["width"], scene["height"])
        attributes = torch.zeros(CELL_FEATURES)
        attributes[list(COLORS).index(obj["color"])] = 1.0
        attributes[len(COLORS) + SHAPES.index(obj["shape"])] = 1.0
        attributes[len(COLORS) + len(SHAPES) + list(SIZES).index(obj["size"])] = 1.0
        attributes[-5:-1] = torch.tensor([x1 / width, y1 / height, x2 / width, y2 / height])
        for row in range(grid):
            for col in range(grid):
                cover_w = min(x2, (col + 1) * cell_w) - max(x1, col * cell_w)
                cover_h = min(y2, (row + 1) * cell_h) - max(y1, row * cell_h)
                cover = max(cover_w, 0.0) * max(cover_h, 0.0) / (cell_w * cell_h)
                index = row * grid + col
                if cover > MIN_COVER and cover > best[index]:
                    best[index] = cover
                    cells[index] = attributes
    return cells


def scene_grids(train_json: Path, image_paths: list[Path], transform: ImageTransform, grid: int) -> torch.Tensor:
    """(images, grid², CELL_FEATURES): the grid of each image, from ``scenes.json`` beside ``train_json``."""
    scenes_file = train_json.parent / "scenes.json"
    if not scenes_file.is_file():
        raise DataError(scenes_file, "the LLM warm-up needs a ShapeScenes split: its scenes.json was not found")
    root = train_json.parent.parent
    by_path = {(root / scene["file_name"]).resolve(): scene for scene in read_json(scenes_file)}
    missing = [path for path in image_paths if path.resolve() not in by_path]
    if missing:
        raise DataError(scenes_file, f"no scene for image {missing[0]} ({len(missing)} images without one)")
    return torch.stack([scene_grid(by_path[path.resolve()], transform, grid) for path in image_paths])


def warm_up_llm(config: TrainConfig, out_dir: str | Path, *, grid: int = 6, show_progress: bool = True) -> Path:
    """Train ``config``'s LLM on symbolic scenes; returns ``out_dir/llm`` (kept as it is when already there)."""
    out_dir = Path(out_dir)
    target = out_dir / WARM_LLM_DIR
    if target.is_dir():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    recipe = resolve_recipe(config)
    train_json = Path(config.data.train_json)
    records = load_llava_records(train_json, config.data.image_root)
    transform = build_image_transform(config.model.resize_strategy, config.model.image_size)
    if config.model.box_frame == "model":
        records = answers_in_model_frame(records, transform)
    tokenizer = prepare_tokenizer(config.model, out_dir, (r.turns for r in records))
    prompt_format = get_prompt_format(config.model.prompt_format)
    data = build_conversation_data(
        records,
        tokenizer,
        prompt_format,
        max_length=config.model.max_length,
        stage=config.stage,
        source=train_json,
        skip_bad=False,
        split_turns=config.data.split_turns,
    )
    if any(sample.image_index is None for sample in data.samples):
        raise DataError(train_json, "the LLM warm-up needs an image in every record (a ShapeScenes split)")
    grids = scene_grids(train_json, data.image_paths, transform, grid).to(device)

    llm = apply_llm_kernels(build_llm(config.model, tokenizer, config.seed), config.distributed.llm_kernels, device)
    connector = build_connector("gelu-mlp", CELL_FEATURES, llm.config.hidden_size)
    # No encoder: the grids are the image features (nn.Identity stands in for the frozen backbone).
    vlm = VLM(nn.Identity(), connector, llm, tokenizer, prompt_format, image_position=config.model.image_position)
    vlm.to(device).train()
    compile_training_forward(vlm, config.distributed.llm_kernels, "auto")  # one process
    optimizer = build_optimizer(vlm, recipe, device)
    total_steps = recipe.total_steps(len(data.samples))
    scheduler = get_cosine_schedule_with_warmup(optimizer, recipe.warmup_steps(total_steps), total_steps)
    steps_per_epoch = math.ceil(len(data.samples) / recipe.global_batch_size)
    micro_batch, accumulation = micro_batches_per_step(recipe, 1)
    bf16 = use_bf16(config.distributed.precision, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    packed = PackedSamples(data.samples, tokenizer.pad_token_id, device)
    config_dict = to_dict(config)
    metrics = MetricsLog(out_dir, [], config_dict, enabled=True)
    metrics.truncate_after(0)
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task("LLM warm-up", total=total_steps, status="symbolic scenes")
        for step in range(total_steps):
            indices = global_batch_indices(
                len(data.samples), recipe.global_batch_size, step, steps_per_epoch, config.seed
            )
            for chunk in rank_micro_batches(indices, 0, 1, micro_batch):
                batch = packed.batch(chunk)
                rows = to_device_async(torch.tensor(batch.image_indices), device)
                with autocast:
                    out = vlm(
                        batch.input_ids,
                        batch.attention_mask,
                        batch.labels,
                        vision_features=grids[rows],
                        prompt_lengths=batch.prompt_lengths,
                        loss_reduction=recipe.loss_reduction,
                        padding=batch.padded,  # every row has its grid
                    )
                    (out.loss / accumulation).backward()
            torch.nn.utils.clip_grad_norm_(vlm.parameters(), recipe.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if (step + 1) % config.logging.log_every == 0 or step + 1 == total_steps:
                loss = out.loss.item()
                if not math.isfinite(loss):
                    raise TrainingDivergedError(f"LLM warm-up, step {step + 1}: non-finite loss ({loss})")
                metrics.log({"step": step + 1, "loss": loss, "lr": lr}, echo=False)
                progress.update(task, status=f"loss {loss:.3f}")
            progress.advance(task)
    metrics.close()
    staging = out_dir / f".{WARM_LLM_DIR}.staging"
    llm.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    write_run_record(out_dir, config_dict, config.seed, stage="llm-warmup", total_steps=total_steps, grid=grid)
    staging.rename(target)  # last: a folder named ``llm`` is a finished warm-up
    return target

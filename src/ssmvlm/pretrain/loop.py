"""The training loop every objective shares: a matched images-seen budget, resumable, stopping on NaN.

Step ``k`` trains on images ``[k*B, (k+1)*B)`` of the seeded :class:`SampleStream` (the last batch is cut so
exactly ``images_seen`` images are used), with augmentation and dropout seeded by ``(seed, k)`` and the
learning rate a function of images seen. A checkpoint (model and optimizer as safetensors, loop state as
JSON) is written every ``checkpoint_every_steps``; a run restarted on the same output directory continues
from it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ssmvlm.backbones.base import VisionBackbone
from ssmvlm.pretrain.augment import augment_batch, normalize
from ssmvlm.pretrain.config import PretrainConfig
from ssmvlm.pretrain.data import FrameSource, SampleStream, num_steps, step_batch
from ssmvlm.utils.errors import TrainingDivergedError
from ssmvlm.utils.io import append_jsonl, read_json
from ssmvlm.utils.progress import progress_bar
from ssmvlm.utils.run_folder import (
    STATE_FILE,
    read_checkpoint,
    settle_checkpoint,
    truncate_log,
    write_checkpoint,
)

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "metrics.jsonl"
_STEP_SEED_STRIDE = 1_000_003


class Task(Protocol):
    """What an objective adds to the loop: its head, its loss and its held-out metrics."""

    primary_metric: str

    def build_head(self, backbone: VisionBackbone, config: PretrainConfig) -> nn.Module: ...

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def evaluate(self, predictions: Iterable[tuple[Any, dict[str, torch.Tensor]]]) -> dict[str, float]: ...


class PretrainModel(nn.Module):
    """Backbone + head; takes uint8 frames and normalizes them with the backbone's mean/std."""

    def __init__(self, backbone: VisionBackbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, frames: torch.Tensor) -> Any:
        pixels = normalize(frames, self.backbone.spec.mean, self.backbone.spec.std)
        return self.head(self.backbone.forward_stages(pixels), tuple(pixels.shape[-2:]))


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _parameter_groups(model: PretrainModel, weight_decay: float) -> list[dict[str, Any]]:
    """No decay for norms, biases, position embeddings/tokens and the trunk's own no-decay list (timm)."""
    trunk = model.backbone.trunk
    named_no_decay = set(trunk.no_weight_decay()) if hasattr(trunk, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        trunk_name = name.removeprefix("backbone.trunk.")
        skip = (
            param.ndim <= 1
            or trunk_name in named_no_decay
            or any(token in trunk_name for token in ("pos_embed", "cls_token", "relative_position_bias_table"))
        )
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def peak_lr(config: PretrainConfig) -> float:
    return config.optim.lr * config.batch_size / config.optim.lr_reference_batch


def lr_at(images_done: int, config: PretrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr_ratio``, as a function of images seen."""
    peak, total = peak_lr(config), config.images_seen
    warmup = config.optim.warmup_fraction * total
    if images_done < warmup:
        return peak * images_done / warmup
    progress = (images_done - warmup) / max(1.0, total - warmup)
    floor = config.optim.min_lr_ratio
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def predictions(
    model: PretrainModel, source: FrameSource, config: PretrainConfig, device: torch.device
) -> Iterator[tuple[Any, dict[str, torch.Tensor]]]:
    """Model outputs on the held-out frames (no augmentation), batch by batch."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _autocast(device, config.precision):
            for batch in source.sequential(config.batch_size, config.data.max_eval_images):
                yield model(batch["image"]), batch
    finally:
        model.train(was_training)


def train(
    model: PretrainModel,
    task: Task,
    train_source: FrameSource,
    eval_source: FrameSource,
    config: PretrainConfig,
    out_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Train to the images-seen budget (resuming from ``out_dir/checkpoint``); returns the loop summary."""
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, config.optim.weight_decay),
        lr=peak_lr(config),
        betas=(config.optim.beta1, config.optim.beta2),
        fused=device.type == "cuda",
    )
    stream = SampleStream(len(train_source), config.seed)
    total_steps = num_steps(config.images_seen, config.batch_size)
    state = resume(model, optimizer, out_dir, device)
    start_step, train_seconds = state["step"], state["train_seconds"]
    images_seen = min(start_step * config.batch_size, config.images_seen)
    eval_points = [round(config.images_seen * (i + 1) / config.evals) for i in range(config.evals)]
    eval_points = [point for point in eval_points if point > images_seen]  # a resumed run has done the rest
    last_eval = state.get("last_eval", {})
    checkpoint_path = out_dir / CHECKPOINT_DIR if start_step else None

    model.train()
    schedule = [step_batch(stream, s, config.images_seen, config.batch_size) for s in range(start_step, total_steps)]
    loss_sum = torch.zeros((), device=device)
    window_steps, window_images = 0, 0
    first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
    window_start = time.perf_counter()
    with progress_bar() as bar:
        progress = bar.add_task(
            f"{config.objective} {config.backbone}", total=total_steps, completed=start_step, status=""
        )
        for step, batch in zip(range(start_step, total_steps), train_source.batches(schedule), strict=True):
            generator = torch.Generator().manual_seed(config.seed * _STEP_SEED_STRIDE + step)
            torch.manual_seed(config.seed * _STEP_SEED_STRIDE + step + 1)
            batch = augment_batch(batch, config.augment, generator)
            count = batch["image"].shape[0]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(images_seen + count, config)
            with _autocast(device, config.precision):
                outputs = model(batch["image"])
            loss = task.loss(outputs, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            optimizer.step()
            loss_value = loss.detach()
            first_bad_step = torch.where(
                (first_bad_step < 0) & ~torch.isfinite(loss_value),
                torch.tensor(step, device=device),
                first_bad_step,
            )
            loss_sum += loss_value
            window_steps += 1
            window_images += count
            images_seen += count
            bar.advance(progress)

            done = step + 1 == total_steps
            due_eval = bool(eval_points) and images_seen >= eval_points[0]
            due_checkpoint = (step + 1) % config.checkpoint_every_steps == 0 and not done
            if done or due_eval or due_checkpoint or (step + 1) % config.log_every_steps == 0:
                _check_finite(first_bad_step, step, checkpoint_path, config)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed = time.perf_counter() - window_start
                train_seconds += elapsed
                mean_loss = loss_sum.item() / window_steps
                append_jsonl(
                    out_dir / LOG_FILE,
                    {
                        "step": step + 1,
                        "images_seen": images_seen,
                        "loss": mean_loss,
                        "lr": optimizer.param_groups[0]["lr"],
                        "images_per_second": window_images / max(elapsed, 1e-9),
                    },
                )
                bar.update(progress, status=f"loss {mean_loss:.4f}")
                loss_sum.zero_()
                window_steps = window_images = 0
                if due_eval:
                    while eval_points and images_seen >= eval_points[0]:
                        eval_points.pop(0)
                    last_eval = task.evaluate(predictions(model, eval_source, config, device))
                    append_jsonl(out_dir / LOG_FILE, {"step": step + 1, "images_seen": images_seen, "eval": last_eval})
                if due_checkpoint:
                    checkpoint_path = save_checkpoint(
                        model,
                        optimizer,
                        out_dir,
                        {
                            "step": step + 1,
                            "images_seen": images_seen,
                            "train_seconds": train_seconds,
                            "last_eval": last_eval,
                        },
                    )
                window_start = time.perf_counter()
    return {
        "steps": total_steps,
        "images_seen": images_seen,
        "train_seconds": train_seconds,
        "eval": last_eval,
    }


def _check_finite(
    first_bad_step: torch.Tensor,
    step: int,
    checkpoint: Path | None,
    config: PretrainConfig,
) -> None:
    bad = int(first_bad_step.item())
    if bad < 0:
        return
    last_good = f"the checkpoint in {checkpoint}" if checkpoint else "none (no checkpoint written yet)"
    first_image = bad * config.batch_size
    raise TrainingDivergedError(
        f"{config.objective} pretraining of {config.backbone} diverged: non-finite loss at step {bad + 1} "
        f"(detected at step {step + 1}; images {first_image}..{first_image + config.batch_size - 1} of the "
        f"seed-{config.seed} stream); last good state: {last_good}; lower optim.lr or use precision=fp32"
    )


def save_checkpoint(
    model: nn.Module, optimizer: torch.optim.Optimizer, out_dir: Path, state: dict[str, Any]
) -> Path:
    """``out_dir/checkpoint``: model and optimizer tensors as safetensors, the loop state and the optimizer's
    param groups in ``state.json`` (written and swapped in by :func:`ssmvlm.utils.run_folder.write_checkpoint`)."""
    from safetensors.torch import save

    opt_state = optimizer.state_dict()
    opt_tensors = {
        f"{param_id}.{key}": value.detach().cpu().contiguous()
        for param_id, param_state in opt_state["state"].items()
        for key, value in param_state.items()
        if isinstance(value, torch.Tensor)
    }
    model_tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    files = {"model.safetensors": save(model_tensors), "optimizer.safetensors": save(opt_tensors)}
    param_groups = [{k: v for k, v in group.items()} for group in opt_state["param_groups"]]
    return write_checkpoint(out_dir / CHECKPOINT_DIR, files, {**state, "param_groups": param_groups})


def resume(model: nn.Module, optimizer: torch.optim.Optimizer, out_dir: Path, device: torch.device) -> dict[str, Any]:
    """Load ``out_dir``'s checkpoint into ``model`` and ``optimizer`` and return its loop state (step 0 and a
    fresh log when there is none)."""
    folder = out_dir / CHECKPOINT_DIR
    if not settle_checkpoint(folder):
        (out_dir / LOG_FILE).unlink(missing_ok=True)
        return {"step": 0, "train_seconds": 0.0}

    def read(folder: Path) -> dict[str, Any]:
        from safetensors.torch import load_file

        state = read_json(folder / STATE_FILE)
        model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)))
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in load_file(str(folder / "optimizer.safetensors")).items():
            param_id, name = key.split(".", 1)
            opt_state.setdefault(int(param_id), {})[name] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
        return state

    state = read_checkpoint(folder, read)
    truncate_log(out_dir / LOG_FILE, state["step"])
    return state


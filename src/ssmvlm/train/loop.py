"""The training loop (nanoGPT-style: everything a step does is visible here).

``train_vlm(config, out_dir)`` builds the VLM, tokenizes the data with prismatic's masking, and runs
``total_steps`` optimizer steps of ``global_batch_size`` samples each, split into micro-batches over
processes and gradient-accumulation steps. It resumes from the latest checkpoint in ``out_dir`` and leaves
``config.json``, ``tokenizer/``, ``model.safetensors``, ``metrics.jsonl`` and ``run.json`` there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from torch import nn

from ssmvlm.config import to_dict
from ssmvlm.data.box_frames import answers_in_model_frame
from ssmvlm.data.images import SKIPPED_IMAGES_FILE, describe_skipped_images
from ssmvlm.data.llava import load_llava_records
from ssmvlm.data.transforms import build_image_transform
from ssmvlm.train.checkpoint import check_fits, latest_checkpoint_path, load_checkpoint, save_checkpoint
from ssmvlm.train.checkpoint import restore_rng_state as _restore_rng
from ssmvlm.train.dataset import (
    PackedSamples,
    build_conversation_data,
    drop_samples_with_images,
    global_batch_indices,
    rank_micro_batches,
)
from ssmvlm.train.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    enable_activation_checkpointing,
    init_distributed,
    resolve_strategy,
    wrap_model,
)
from ssmvlm.train.features import ImageFeatureSource
from ssmvlm.train.llm_kernels import apply_llm_kernels, compile_training_forward
from ssmvlm.train.metrics import MetricsLog
from ssmvlm.train.recipe import Recipe, TrainConfig, micro_batches_per_step, resolve_recipe
from ssmvlm.utils.device import to_device_async
from ssmvlm.utils.errors import ConfigError, DataError, TrainingDivergedError
from ssmvlm.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ssmvlm.utils.progress import console, progress_bar
from ssmvlm.utils.provenance import write_run_record
from ssmvlm.utils.run_folder import check_same_config
from ssmvlm.utils.seed import seed_everything
from ssmvlm.vlm.builder import (
    CONFIG_FILE,
    ENCODER_FILE,
    WEIGHTS_FILE,
    build_vlm,
    check_encoder,
    encoder_record,
    load_trained_weights,
    prepare_tokenizer,
)
from ssmvlm.vlm.model import VLM

TRAINABLE_BY_STAGE = {
    "align": ("connector",),
    "no-align": ("connector", "llm"),
    "finetune": ("connector", "llm"),
}
# Keys that may differ between a run and its resumption (they do not change what is trained).
RESUMABLE_CHANGES = ("logging", "device", "distributed")


def train_vlm(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    stop_after: int | None = None,
    show_progress: bool = True,
) -> Path:
    """Train (or resume) a VLM into ``out_dir``; ``stop_after``: checkpoint, return after N steps."""
    run_dir = Path(out_dir)
    info = init_distributed(config.device)
    recipe = resolve_recipe(config)
    config_dict = to_dict(config)
    _check_resumable(run_dir, config_dict, resume)
    if resume and (run_dir / WEIGHTS_FILE).is_file():
        return run_dir  # finished before (the final weights are written last)
    seed_everything(config.seed)

    # -- model and data ---------------------------------------------------------------------------------
    if not config.data.train_json:
        raise ConfigError("data.train_json", "no training data given")
    records = load_llava_records(config.data.train_json, config.data.image_root, skip_bad=config.data.skip_bad)
    for extra in config.data.extra_json:
        records += load_llava_records(extra, skip_bad=config.data.skip_bad)
    if config.model.box_frame == "model":
        transform = build_image_transform(config.model.resize_strategy, config.model.image_size)
        records = answers_in_model_frame(records, transform)
    if info.is_main:
        tokenizer = prepare_tokenizer(config.model, run_dir, (r.turns for r in records))
    barrier(info)
    if not info.is_main:
        tokenizer = prepare_tokenizer(config.model, run_dir)
    vlm = build_vlm(config.model, tokenizer, config.seed).to(info.device)
    encoder = encoder_record(config.model, vlm)  # hashed before any wrapping could shard the encoder
    if config.stage == "finetune":
        _init_connector(vlm, config.connector_init)
    trainable_names = set_trainable(vlm, config.stage)

    data = build_conversation_data(
        records,
        tokenizer,
        vlm.prompt_format,
        max_length=config.model.max_length,
        stage=config.stage,
        source=config.data.train_json,
        skip_bad=config.data.skip_bad,
        split_turns=config.data.split_turns,
    )
    features = ImageFeatureSource(vlm, data.image_paths, info.device, cache=config.data.cache_features)
    if config.data.skip_bad:
        undecodable = features.find_undecodable(show_progress=show_progress and info.is_main)
        drop_samples_with_images(data, set(undecodable))
        if undecodable and info.is_main:
            reasons = [undecodable[index] for index in sorted(undecodable)]
            atomic_write_text(run_dir / SKIPPED_IMAGES_FILE, "".join(reason + "\n" for reason in reasons))
            console.print(
                "[yellow]warning:[/yellow] skipped "
                + escape(describe_skipped_images(reasons, run_dir / SKIPPED_IMAGES_FILE)),
                highlight=False,
                soft_wrap=True,
            )
    if data.skipped and info.is_main:
        console.print(
            f"[yellow]warning:[/yellow] skipped {data.skipped} samples; first: "
            f"{data.skip_reasons[0] if data.skip_reasons else 'undecodable image'}",
            highlight=False,
        )
    if not data.samples:
        raise DataError(config.data.train_json, "no trainable samples left")
    vlm.check_answer_tags(data.samples, config.data.train_json)
    features.precompute(show_progress=show_progress and info.is_main)

    # -- optimizer, schedule, distribution ------------------------------------------------------------
    micro_batch, accumulation = micro_batches_per_step(recipe, info.world_size)
    steps_per_epoch = math.ceil(len(data.samples) / recipe.global_batch_size)
    total_steps = recipe.total_steps(len(data.samples))
    strategy = resolve_strategy(config.distributed.strategy, info)
    bf16 = use_bf16(config.distributed.precision, info.device)
    apply_llm_kernels(vlm.llm, config.distributed.llm_kernels, info.device)
    compile_training_forward(vlm, config.distributed.llm_kernels, strategy)
    checkpointing = config.distributed.activation_checkpointing
    if checkpointing if checkpointing is not None else strategy == "fsdp":
        enable_activation_checkpointing(vlm.llm)
    text_only = any(sample.image_index is None for sample in data.samples)
    model = wrap_model(vlm, strategy, info, bf16=bf16, text_only_batches=text_only)
    optimizer = build_optimizer(vlm, recipe, info.device)
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, recipe.warmup_steps(total_steps), total_steps)

    # -- resume -------------------------------------------------------------------------------------
    start_step, last_checkpoint = 0, None
    checkpoint_path = latest_checkpoint_path(run_dir) if resume else None
    if checkpoint_path is not None:
        start_step = _restore(checkpoint_path, model, vlm, optimizer, scheduler, trainable_names)
        last_checkpoint = checkpoint_path
    if info.is_main:
        if resume:
            check_encoder(run_dir, encoder["sha256"])  # a resumed run keeps the encoder it started with
        atomic_write_json(run_dir / CONFIG_FILE, config_dict)
        atomic_write_json(run_dir / ENCODER_FILE, encoder)
        write_run_record(
            run_dir,
            config_dict,
            config.seed,
            stage=config.stage,
            recipe=dataclasses.asdict(recipe),
            total_steps=total_steps,
            world_size=info.world_size,
            strategy=strategy,
            resumed_from_step=start_step,
            skipped_samples=data.skipped,
            encoder_sha256=encoder["sha256"],
        )
    metrics = MetricsLog(run_dir, config.logging.loggers, config_dict, enabled=info.is_main)
    metrics.truncate_after(start_step)

    # -- the loop ---------------------------------------------------------------------------------------
    # The host does not wait for the device within a step: the loss and gradient norm are read on log steps, where
    # the watch also checks them for divergence (and before each checkpoint), and index copies are queued from
    # pinned memory. A host that waits every step leaves a small model's GPU idle while it launches the next one.
    packed = PackedSamples(data.samples, tokenizer.pad_token_id, info.device)
    num_patches = vlm.connector.num_output_tokens(vlm.vision_backbone.num_tokens())
    trainable_params = [p for p in vlm.parameters() if p.requires_grad]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    watch = DivergenceWatch(info.device)

    def batch_records(at_step: int) -> list[str]:
        rows = global_batch_indices(len(data.samples), recipe.global_batch_size, at_step, steps_per_epoch, config.seed)
        return [data.samples[i].record_id for i in rows]

    model.train()
    with progress_bar(disable=not (show_progress and info.is_main)) as progress:
        task = progress.add_task("training", total=total_steps, completed=start_step, status="")
        interval_start, interval_steps = time.perf_counter(), 0
        tokens = torch.zeros((), device=info.device)
        for step in range(start_step, total_steps):
            indices = global_batch_indices(
                len(data.samples), recipe.global_batch_size, step, steps_per_epoch, config.seed
            )
            chunks = rank_micro_batches(indices, info.rank, info.world_size, micro_batch)
            loss_sum = torch.zeros((), device=info.device)
            for k, chunk in enumerate(chunks):
                batch = packed.batch(chunk)
                vision = features.features(batch.image_indices)
                has_image = batch.has_image
                with _gradient_sync(model, vlm, strategy, k == len(chunks) - 1), autocast:
                    out = model(
                        batch.input_ids,
                        batch.attention_mask,
                        batch.labels,
                        vision_features=vision,
                        has_image=to_device_async(has_image, info.device),
                        prompt_lengths=batch.prompt_lengths,
                        loss_reduction=recipe.loss_reduction,
                        padding=batch.padded or not bool(has_image.all()),  # host tensors: no wait
                    )
                    # prismatic: the mean loss of each micro-batch, divided by the accumulation steps.
                    (out.loss / accumulation).backward()
                loss_sum += out.loss.detach().float()
                tokens += batch.attention_mask.sum() + num_patches * int(has_image.sum())
            loss = all_reduce_mean(loss_sum / accumulation, info)
            grad_norm = _as_local(torch.nn.utils.clip_grad_norm_(trainable_params, recipe.max_grad_norm))
            watch.observe(step, loss, grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done, interval_steps = step + 1, interval_steps + 1
            log_due = done % config.logging.log_every == 0 or done == total_steps or done == 1
            checkpoint_due = _checkpoint_due(
                done, total_steps, steps_per_epoch, config.logging.checkpoint_every, stop_after
            )
            if log_due or checkpoint_due:
                watch.check(last_checkpoint, batch_records)
            if log_due:
                elapsed = time.perf_counter() - interval_start
                total_tokens = float(all_reduce_mean(tokens, info)) * info.world_size
                record = {
                    "step": done,
                    "epoch": step // steps_per_epoch,
                    "loss": loss.item(),
                    "lr": lr,
                    "grad_norm": grad_norm.item(),
                    "tokens_per_s": total_tokens / elapsed,  # over the steps since the last record
                    "step_s": elapsed / interval_steps,
                }
                metrics.log(record, echo=not show_progress or done % (config.logging.log_every * 10) == 0)
                progress.update(task, status=f"loss {record['loss']:.3f}")
                interval_start, interval_steps = time.perf_counter(), 0
                tokens.zero_()
            progress.update(task, advance=1)
            if checkpoint_due:
                last_checkpoint = _save(
                    run_dir, done, model, optimizer, scheduler, info, config.logging.keep_checkpoints, trainable_names
                )
            if stop_after is not None and done >= stop_after and done < total_steps:
                metrics.close()
                return run_dir
    if info.is_main:
        weights = _host_state(_full_trainable_state(vlm, trainable_names))
        from safetensors.torch import save as save_safetensors

        atomic_write_bytes(run_dir / WEIGHTS_FILE, save_safetensors(weights))
    else:
        _full_trainable_state(vlm, trainable_names)  # collective under FSDP
    metrics.close()
    barrier(info)
    return run_dir


# -- pieces of the loop ----------------------------------------------------------------------------------
class DivergenceWatch:
    """The first step whose loss or gradient norm is not finite, noted on the device (no wait per step);
    :meth:`check` raises for it, naming the step, its batch and the last checkpoint written before it."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm)) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)
        self.bad_loss = torch.where(bad, loss.float(), self.bad_loss)

    def check(self, last_checkpoint: Path | None, batch_records: Callable[[int], list[str]]) -> None:
        step = int(self.first_bad)
        if step < 0:
            return
        loss = float(self.bad_loss)
        records = batch_records(step)
        raise TrainingDivergedError(
            f"step {step + 1}: non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} "
            f"(loss {loss}) on batch records {records[:8]}{'…' if len(records) > 8 else ''}; "
            f"last good checkpoint: {last_checkpoint or 'none'}"
        )


def set_trainable(vlm: VLM, stage: str) -> list[str]:
    """Freeze everything but the stage's modules; returns the trainable tensors' state-dict names (a tied
    weight under each of its names, as checkpoints hold it)."""
    vlm.requires_grad_(False)
    for name in TRAINABLE_BY_STAGE[stage]:
        getattr(vlm, name).requires_grad_(True)
    return [name for name, value in vlm.state_dict(keep_vars=True).items() if value.requires_grad]


def build_optimizer(vlm: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with torch defaults; no weight decay on biases and 1-d parameters (norms), as prismatic."""
    decay, no_decay = [], []
    for name, param in vlm.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.learning_rate, fused=device.type == "cuda")


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "auto":
        return device.type == "cuda"
    if precision == "bf16" and device.type != "cuda":
        raise ConfigError("distributed.precision", "bf16 autocast is used on CUDA only; use fp32 on CPU")
    return precision == "bf16"


@contextlib.contextmanager
def _gradient_sync(model: nn.Module, vlm: VLM, strategy: str, sync: bool) -> Iterator[None]:
    """Reduce gradients only on the last micro-batch of a step."""
    if strategy == "ddp" and not sync:
        with model.no_sync():
            yield
        return
    if strategy == "fsdp":
        vlm.set_requires_gradient_sync(sync)  # recurses into every FSDP unit
    yield


def _as_local(value: torch.Tensor) -> torch.Tensor:
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def _checkpoint_due(done: int, total: int, per_epoch: int, every: int, stop_after: int | None) -> bool:
    return (
        done == total
        or (every > 0 and done % every == 0)
        or (every == 0 and done % per_epoch == 0)
        or (stop_after is not None and done == stop_after)
    )


def _state_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, ignore_frozen_params=True)


def _full_trainable_state(vlm: VLM, names: list[str]) -> dict[str, torch.Tensor]:
    """The trainable tensors by state-dict name. ``ignore_frozen_params`` drops frozen parameters but not buffers,
    so without the filter a frozen encoder's BatchNorm statistics (MaxViT, MambaVision) would be saved as trained
    weights, and the resume check would refuse them as another architecture's."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    wanted = set(names)
    return {k: v for k, v in get_model_state_dict(vlm, options=_state_options()).items() if k in wanted}


def _host_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies for safetensors, which refuses tensors that share memory: tied embeddings on the
    CPU are one tensor under two names, so the second name gets its own copy."""
    seen: set[int] = set()
    host = {}
    for name, value in state.items():
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        host[name] = tensor.clone() if storage in seen else tensor
        seen.add(storage)
    return host


def _save(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    info: DistInfo,
    keep: int,
    names: list[str],
) -> Path:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    vlm = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    trainable = _host_state(_full_trainable_state(vlm, names))
    optimizer_state = get_optimizer_state_dict(vlm, optimizer, options=_state_options())
    path = run_dir / "checkpoints" / f"step-{step:08d}"
    if info.is_main:
        path = save_checkpoint(run_dir, step, trainable, optimizer_state, scheduler.state_dict(), keep=keep)
    barrier(info)
    return path


def _restore(path: Path, model: nn.Module, vlm: VLM, optimizer: Any, scheduler: Any, names: list[str]) -> int:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    checkpoint = load_checkpoint(path)
    own = vlm.state_dict()
    # Checkpoints written before the trainable filter also hold the frozen encoder's buffers: skipped, not refused.
    trainable = {k: v for k, v in checkpoint.trainable.items() if k in names or k not in own}
    check_fits(trainable, {k: own[k] for k in names}, path)
    set_model_state_dict(vlm, trainable, options=_state_options())
    set_optimizer_state_dict(vlm, optimizer, checkpoint.optimizer, options=_state_options())
    scheduler.load_state_dict(checkpoint.scheduler)
    _restore_rng(checkpoint.rng, checkpoint.rng_tensors)
    console.print(f"resumed from {path} (step {checkpoint.step})", highlight=False)
    return checkpoint.step


def _init_connector(vlm: VLM, align_run: str | None) -> None:
    if not align_run:
        raise ConfigError("connector_init", "the finetune stage starts from an align run's connector; give its dir")
    load_trained_weights(vlm, Path(align_run) / WEIGHTS_FILE)


def _check_resumable(run_dir: Path, config: dict[str, Any], resume: bool) -> None:
    if not resume and (run_dir / CONFIG_FILE).is_file() and latest_checkpoint_path(run_dir) is not None:
        raise ConfigError("--out", f"{run_dir} already holds a run; pass --resume to continue it or pick a new dir")
    check_same_config(run_dir, config, may_change=RESUMABLE_CHANGES)

"""One code path for 1 CPU, 1 GPU and N GPUs: process group from ``torchrun``'s environment, DDP or FSDP2.

Without ``torchrun`` (no ``WORLD_SIZE``) nothing is initialized and the model is used as is. With it, NCCL is
used on CUDA and gloo on CPU. FSDP2 (``fully_shard``) shards each LLM decoder layer, the input embedding and
the connector, with the VLM as root (prismatic wraps decoder layers and the projector); the frozen encoder
is left out of sharding and stays replicated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssmvlm.utils.device import resolve_device
from ssmvlm.utils.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank)  # torchrun starts one process per GPU
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{resolved} requested but CUDA is not available")
        torch.cuda.set_device(resolved)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, device_id=resolved if backend == "nccl" else None)
    return DistInfo(rank, world, local_rank, resolved)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch.distributed.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
        value /= info.world_size
    return value


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    if strategy == "auto":
        return "ddp" if info.enabled else "single"
    if not info.enabled:
        return "single"
    return strategy


def wrap_model(
    vlm: nn.Module, strategy: str, info: DistInfo, *, bf16: bool, text_only_batches: bool = False
) -> nn.Module:
    """The module the training step calls: the VLM itself, DDP around it, or the VLM with FSDP2 sharding."""
    if strategy == "single":
        return vlm
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        # An all-text micro-batch leaves the connector out of the graph, which DDP must be told about.
        return DistributedDataParallel(vlm, device_ids=ids, find_unused_parameters=text_only_batches)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kwargs: dict[str, Any] = {"mp_policy": policy} if policy else {}
        for unit in fsdp_units(vlm):
            fully_shard(unit, **kwargs)
        # The VLM is the root (FSDP2's first forward must enter through it); the frozen encoder stays out.
        fully_shard(vlm, ignored_params=set(vlm.vision_backbone.parameters()), **kwargs)
        return vlm
    raise ConfigError("distributed.strategy", f"unknown strategy {strategy!r}", allowed=["auto", "ddp", "fsdp"])


def fsdp_units(vlm: nn.Module) -> list[nn.Module]:
    """Sharding units below the VLM root: decoder layers, the input embedding (the VLM calls it outside the
    LLM's forward to splice in the patches) and the connector; the root holds the rest (norm, LM head)."""
    return [*decoder_layers(vlm.llm), vlm.llm.get_input_embeddings(), vlm.connector]


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (``model.layers`` for Llama/Qwen/Mistral)."""
    layers = getattr(getattr(llm, "model", llm), "layers", None)
    if layers is None:
        raise ConfigError("distributed.strategy", f"cannot find the decoder layers of {type(llm).__name__}")
    return list(layers)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and not hasattr(model, "connector") else model


def enable_activation_checkpointing(llm: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing on every decoder layer of a transformers LLM.

    transformers 5.2x renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``; GPU images
    still ship earlier 5.x releases, so use whichever the installed version has.
    """
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

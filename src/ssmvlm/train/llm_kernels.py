"""How the LLM's layers run in training (``distributed.llm_kernels``).

- ``eager``: Hugging Face's modules as they are;
- ``liger``: Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, and the LM head fused with the cross entropy, so
  the logits are never materialized), from the ``liger-kernel`` package, on CUDA. It swaps transformers' Llama
  RoPE and layer classes for the whole process, so models built afterwards get them too;
- ``compile``: each decoder layer compiled by torch.compile (regional compilation: the layers share one compiled
  graph, so it compiles once, not once per layer);
- ``compile-all``: the whole training forward (embedding, connector, patch insertion, every layer, the loss) as
  one torch.compile graph, dynamic in the sequence length, so that the small operations between the layers fuse
  too (a study's tiny LLM spends most of a step launching them). One compilation serves every batch length.
"""

from __future__ import annotations

import torch
from torch import nn

from ssmvlm.utils.errors import ConfigError

LLM_KERNELS = ("eager", "liger", "compile", "compile-all")
FIELD = "distributed.llm_kernels"


def apply_llm_kernels(llm: nn.Module, kernels: str, device: torch.device) -> nn.Module:
    """Switch a Hugging Face causal LM's layers to ``kernels`` (one of :data:`LLM_KERNELS`) in place
    (``compile-all`` leaves them to :func:`compile_training_forward`)."""
    if kernels not in LLM_KERNELS:
        raise ConfigError(FIELD, f"unknown value {kernels!r}", allowed=list(LLM_KERNELS))
    if kernels == "liger":
        if device.type != "cuda":
            raise ConfigError(FIELD, "'liger' runs Triton kernels on CUDA only; use eager or compile on CPU")
        try:
            from liger_kernel.transformers import _apply_liger_kernel_to_instance
        except ImportError as exc:
            raise ConfigError(FIELD, "'liger' needs the liger-kernel package: pip install 'ssmvlm[gpu]'") from exc
        _apply_liger_kernel_to_instance(model=llm)
    elif kernels == "compile":
        for layer in llm.model.layers:
            layer.compile()
    return llm


def compile_training_forward(model: nn.Module, kernels: str, strategy: str) -> nn.Module:
    """For ``compile-all``, compile ``model``'s forward (the VLM's, whose training call covers everything between
    the cached encoder features and the loss) in place; other settings leave it as it is."""
    if kernels != "compile-all":
        return model
    if strategy == "fsdp":
        raise ConfigError(FIELD, "'compile-all' is not used with FSDP (it shards the LLM's layers); use compile")
    # Inductor's memory-coalescing tiling analysis asserted on this graph's dynamic-length kernels (torch 2.11 on an
    # H100, probe 24); torch's own config notes that the analysis does not apply to dynamic shapes yet.
    model.compile(dynamic=True, options={"triton.coalesce_tiling_analysis": False})
    return model

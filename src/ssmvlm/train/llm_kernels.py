"""How the LLM's layers run in training (``distributed.llm_kernels``).

- ``eager``: Hugging Face's modules as they are;
- ``liger``: Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, and the LM head fused with the cross entropy, so
  the logits are never materialized), from the ``liger-kernel`` package, on CUDA. It swaps transformers' Llama
  RoPE and layer classes for the whole process, so models built afterwards get them too;
- ``compile``: each decoder layer compiled by torch.compile (regional compilation: the layers share one compiled
  graph, so it compiles once, not once per layer).
"""

from __future__ import annotations

import torch
from torch import nn

from ssmvlm.utils.errors import ConfigError

LLM_KERNELS = ("eager", "liger", "compile")
FIELD = "distributed.llm_kernels"


def apply_llm_kernels(llm: nn.Module, kernels: str, device: torch.device) -> nn.Module:
    """Switch a Hugging Face causal LM's layers to ``kernels`` (one of :data:`LLM_KERNELS`) in place."""
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

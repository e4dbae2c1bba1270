"""The LLM's training kernels (ssmvlm.train.llm_kernels): eager, regionally compiled, Liger's fused ones."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ssmvlm.train.llm_kernels import apply_llm_kernels
from ssmvlm.utils.errors import ConfigError
from ssmvlm.vlm.llm import TINY_LLAMA_PRESETS, llama_config


def tiny_llm(seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(TINY_LLAMA_PRESETS["tiny-llama-1m"], 256))


def loss_and_grads(llm: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = llm(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in llm.parameters()]


def test_unknown_kernels_and_liger_on_cpu_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"distributed\.llm_kernels: unknown value 'fused'"):
        apply_llm_kernels(tiny_llm(), "fused", torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"distributed\.llm_kernels: 'liger' runs Triton kernels on CUDA only"):
        apply_llm_kernels(tiny_llm(), "liger", torch.device("cpu"))


def test_compiled_layers_compute_the_eager_loss_and_gradients() -> None:
    ids = torch.randint(4, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    eager_loss, eager_grads = loss_and_grads(tiny_llm(), ids)
    compiled = apply_llm_kernels(tiny_llm(), "compile", torch.device("cpu"))
    assert all(layer._compiled_call_impl is not None for layer in compiled.model.layers)
    loss, grads = loss_and_grads(compiled, ids)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for got, expected in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger's kernels need CUDA")
@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel is not installed")
def test_liger_kernels_compute_the_eager_loss_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.models.llama import modeling_llama

    # Liger swaps these module-wide; restored after the test so that later tests build plain Llamas.
    for name in ("LlamaRMSNorm", "LlamaMLP", "apply_rotary_pos_emb"):
        monkeypatch.setattr(modeling_llama, name, getattr(modeling_llama, name))
    device = torch.device("cuda")
    ids = torch.randint(4, 256, (2, 64), generator=torch.Generator().manual_seed(1)).to(device)
    eager_loss, eager_grads = loss_and_grads(tiny_llm().to(device), ids)
    fused = apply_llm_kernels(tiny_llm().to(device), "liger", device)
    loss, grads = loss_and_grads(fused, ids)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-5)
    for got, expected in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)

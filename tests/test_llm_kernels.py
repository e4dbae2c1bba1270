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


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="needs CUDA")]),
    ],
)
def test_compile_all_compiles_the_whole_training_forward_once_for_every_length(
    tmp_path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """``compile-all``: the VLM's training forward (patch insertion, the LLM, the `sqrt` loss) as one graph with a
    dynamic sequence length: the eager loss and gradients at three batch lengths, from one compilation. On the CPU
    the captured graph runs as captured, without Inductor's code generation (a minute of C++ compilation): what is
    checked there is that the whole forward is one graph for every length; a card runs Inductor's kernels."""
    import copy

    from ssmvlm.train.llm_kernels import compile_training_forward
    from ssmvlm.vlm.builder import VLMConfig, build_vlm
    from ssmvlm.vlm.llm import train_tokenizer
    from ssmvlm.vlm.model import IGNORE_INDEX

    corpus = [f"USER: where is shape {i}? ASSISTANT: [0.{i % 10}, 0.{i % 7}]</s>" for i in range(200)]
    tokenizer = train_tokenizer(corpus, 300, tmp_path)
    if device == "cpu":
        compile_module = torch.nn.Module.compile
        monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="eager", **kw))
    torch.manual_seed(0)
    config = VLMConfig(backbone="vit_nano", image_size=32, llm="tiny-llama-1m", image_position="after-question")
    eager = build_vlm(config, tokenizer, 0).to(device)
    compiled = compile_training_forward(copy.deepcopy(eager), "compile-all", "auto")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    generator = torch.Generator().manual_seed(1)
    for length in (12, 17, 9):
        lengths = torch.randint(length // 2, length + 1, (4,), generator=generator)
        lengths[0] = length
        ids = torch.randint(3, len(tokenizer), (4, length), generator=generator)
        mask = (torch.arange(length)[None] < lengths[:, None]).long()
        prompt = lengths - 3
        labels = torch.where((torch.arange(length)[None] >= prompt[:, None]) & (mask == 1), ids, IGNORE_INDEX)
        features = torch.randn(4, eager.vision_backbone.num_tokens(), eager.vision_backbone.embed_dim,
                               generator=generator)
        ids, mask, labels, features, prompt = (t.to(device) for t in (ids, mask, labels, features, prompt))
        results = []
        for vlm in (eager, compiled):
            vlm.zero_grad()
            out = vlm(ids, mask, labels, vision_features=features, prompt_lengths=prompt, loss_reduction="sqrt",
                      padding=True)
            out.loss.backward()
            results.append((out.loss.detach(), [p.grad for p in vlm.parameters() if p.grad is not None]))
        (eager_loss, eager_grads), (loss, grads) = results
        torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
        assert len(grads) == len(eager_grads) > 0
        for got, expected in zip(grads, eager_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    with pytest.raises(ConfigError, match=r"distributed\.llm_kernels: 'compile-all' is not used with FSDP"):
        compile_training_forward(eager, "compile-all", "fsdp")

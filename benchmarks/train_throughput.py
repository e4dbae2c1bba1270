"""Tokens/s and model FLOPs utilization (MFU) of the VLM finetune step.

One step = frozen encoder forward (bf16, included in the time) + connector + LLM forward/backward + AdamW,
on synthetic data: ``batch`` sequences of ``seq`` LLM positions, the encoder's patch tokens included. Configs:

- ``tiny``: the ``tiny-llama-2m`` preset with ``vit_nano`` at 224² (the study's recipe at full resolution);
- ``1b``: a randomly initialized TinyLlama-shaped Llama (1.1B, vocab 32000) with ``vit_base_patch16`` at 224².

Model FLOPs per step = (6·N + 12·L·d·T)·tokens, with N the LLM parameters without the input embedding
(lm_head included), L layers, d width, T the sequence length (the PaLM convention; it reproduces the issue's
anchor: 1.1B at 50.4k tokens/s = 37.3%); the peak is the H100 SXM dense bf16 datasheet figure, 989 TFLOP/s.

    python benchmarks/train_throughput.py --config 1b --batch 8 --seq 2048            # on one H100
    python benchmarks/train_throughput.py --config 1b --activation-checkpointing
    python benchmarks/train_throughput.py --config 1b --llm-only                       # the anchor: LLM alone
    python benchmarks/train_throughput.py --config 1b --llm-kernels liger              # fused Liger kernels
    python benchmarks/train_throughput.py --smoke                                      # CPU, seconds

``--llm-only`` times the same LLM alone on ``seq`` text tokens (a plain Hugging Face Llama step, the issue's
anchor); ``--backbone`` swaps the encoder. ``measure_step`` is the same measurement for other scripts
(``anchor_vmamba.py`` runs both in one process).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace

import torch

H100_BF16_DENSE_FLOPS = 989e12


@dataclass(frozen=True)
class BenchConfig:
    llm: str
    backbone: str
    image_size: int
    batch: int
    seq: int


CONFIGS = {
    "tiny": BenchConfig("tiny-llama-2m", "vit_nano", 224, 32, 512),
    "1b": BenchConfig("tinyllama-1b-shape", "vit_base_patch16", 224, 8, 2048),
    "smoke": BenchConfig("tiny-llama-2m", "vit_nano", 64, 2, 64),
}


def build(config: BenchConfig, device: torch.device, weights_bf16: bool, checkpointing: bool, kernels: str = "eager"):
    from transformers import LlamaForCausalLM

    from ssmvlm.backbones import create_vision_backbone
    from ssmvlm.connectors import build_connector
    from ssmvlm.train.distributed import enable_activation_checkpointing
    from ssmvlm.train.llm_kernels import apply_llm_kernels
    from ssmvlm.train.loop import build_optimizer, set_trainable
    from ssmvlm.train.recipe import RECIPES
    from ssmvlm.vlm.llm import TINY_LLAMA_PRESETS, llama_config
    from ssmvlm.vlm.model import VLM
    from ssmvlm.vlm.prompts import get_prompt_format

    preset = TINY_LLAMA_PRESETS[config.llm]
    llm_config = llama_config(preset, preset.vocab_size)
    llm_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    dtype = torch.bfloat16 if weights_bf16 else torch.float32
    with torch.device(device):  # random init on the device: seconds instead of a minute for 1.1B on the host
        llm = apply_llm_kernels(LlamaForCausalLM(llm_config).to(dtype), kernels, device)
    if config.backbone == "none":
        if checkpointing:
            enable_activation_checkpointing(llm)
        return llm, build_optimizer(llm, RECIPES["prismatic-finetune"], device), llm_config
    backbone = create_vision_backbone(config.backbone, image_size=config.image_size)
    connector = build_connector("gelu-mlp", backbone.embed_dim, preset.hidden_size)
    vlm = VLM(
        backbone,
        connector.to(dtype),
        llm,
        None,
        get_prompt_format("vicuna-v15"),
        vision_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
    ).to(device)
    set_trainable(vlm, "no-align")
    if checkpointing:
        enable_activation_checkpointing(vlm.llm)
    optimizer = build_optimizer(vlm, RECIPES["prismatic-finetune"], device)
    return vlm, optimizer, llm_config


def model_flops_per_token(llm: torch.nn.Module, llm_config, seq: int) -> float:
    non_embedding = sum(p.numel() for p in llm.parameters()) - llm.get_input_embeddings().weight.numel()
    attention = 12 * llm_config.num_hidden_layers * llm_config.hidden_size * seq
    return 6 * non_embedding + attention


def measure_step(
    config: BenchConfig,
    device: torch.device,
    *,
    steps: int,
    warmup: int,
    weights_bf16: bool,
    checkpointing: bool = False,
    kernels: str = "eager",
) -> dict:
    """Time per finetune step (synthetic batch) and MFU; ``config.backbone == "none"``: the LLM alone."""
    cuda = device.type == "cuda"
    model, optimizer, llm_config = build(config, device, weights_bf16, checkpointing, kernels)
    llm = model if config.backbone == "none" else model.llm
    patches = 0 if config.backbone == "none" else model.vision_backbone.num_tokens()
    text = config.seq - patches
    if text < 2:
        raise SystemExit(f"--seq {config.seq} leaves no room for text after {patches} patches")
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, llm_config.vocab_size, (config.batch, text), generator=generator).to(device)
    input_ids[:, 0] = llm_config.bos_token_id
    mask = torch.ones_like(input_ids)
    pixels = torch.randn(config.batch, 3, config.image_size, config.image_size, generator=generator).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def step() -> float:
        with autocast:
            if config.backbone == "none":
                loss = llm(input_ids=input_ids, attention_mask=mask, labels=input_ids).loss
            else:
                loss = model(input_ids, mask, input_ids, pixel_values=pixels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # synchronizes

    model.train()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    tokens = config.batch * config.seq
    flops = model_flops_per_token(llm, llm_config, config.seq) * tokens
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "llm": config.llm,
        "backbone": config.backbone,
        "batch": config.batch,
        "seq": config.seq,
        "patches": patches,
        "weights": "bf16" if weights_bf16 else "fp32+autocast" if cuda else "fp32",
        "activation_checkpointing": checkpointing,
        "llm_kernels": kernels,
        "step_s": seconds,
        "tokens_per_s": tokens / seconds,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu_vs_h100_bf16": flops / seconds / H100_BF16_DENSE_FLOPS,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "llm_params": sum(p.numel() for p in llm.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="1b")
    parser.add_argument("--smoke", action="store_true", help="tiny config on CPU, 2 steps (checks the script)")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq", type=int, help="LLM positions per sequence, image patches included")
    parser.add_argument("--backbone", help="the frozen encoder (a zoo name) instead of the config's")
    parser.add_argument("--llm-only", action="store_true", help="the LLM alone on text (the anchor's step)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--llm-kernels", choices=("eager", "liger", "compile"), default="eager")
    parser.add_argument("--fp32-weights", action="store_true", help="fp32 master weights + bf16 autocast")
    parser.add_argument("--json", help="append the result as a JSON line to this file")
    args = parser.parse_args()
    if args.smoke:
        args.config, args.steps, args.warmup = "smoke", 2, 1
    base = CONFIGS[args.config]
    config = replace(
        base,
        backbone="none" if args.llm_only else args.backbone or base.backbone,
        batch=args.batch or base.batch,
        seq=args.seq or base.seq,
    )
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    result = {"config": args.config} | measure_step(
        config,
        device,
        steps=args.steps,
        warmup=args.warmup,
        weights_bf16=device.type == "cuda" and not args.fp32_weights,
        checkpointing=args.activation_checkpointing,
        kernels=args.llm_kernels,
    )
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

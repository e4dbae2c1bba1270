"""Does the `paper` preset's VLM training step compute the same gradients with and without the LLM's padding mask
on a card? Against a float64 CPU reference of the masked step, on one synthetic right-padded batch shaped like the
preset's (128 rows of 40-90 text tokens, the image after the question, 36 patches, the `sqrt` loss):

    python benchmarks/signal_probes/attention_mask_check.py [--json OUT]

Each arm runs the LLM on the same inserted embeddings, with the padding mask or with none (causal attention alone,
which a right-padded batch needs), in bf16 autocast, eager or with the decoder layers compiled as the preset runs
them, and with SDPA free to pick its kernel or kept off cuDNN's. It prints, per arm, the loss's error and the
relative error (|g - g_ref| / |g_ref|) of the connector's and the LLM's gradients, the worst tensor's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
from pathlib import Path

import torch

from ssmvlm.train.llm_kernels import apply_llm_kernels
from ssmvlm.vlm.builder import VLMConfig, build_vlm
from ssmvlm.vlm.llm import train_tokenizer
from ssmvlm.vlm.model import IGNORE_INDEX, insert_patches, length_weighted_loss


def synthetic_batch(vocab: int, rows: int, patches: int, width: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(40, 91, (rows,), generator=generator)
    length = int(lengths.max())
    input_ids = torch.randint(3, vocab, (rows, length), generator=generator)
    position = torch.arange(length)[None]
    mask = (position < lengths[:, None]).long()
    prompt_lengths = lengths - torch.randint(2, 20, (rows,), generator=generator)  # the answer closes each row
    labels = torch.where((position >= prompt_lengths[:, None]) & (mask == 1), input_ids, IGNORE_INDEX)
    features = torch.randn(rows, patches, width, generator=generator)
    return {"input_ids": input_ids, "mask": mask, "labels": labels, "prompt_lengths": prompt_lengths,
            "features": features}


def step(vlm, batch: dict[str, torch.Tensor], device: torch.device, padding_mask: bool) -> tuple[float, list]:
    """The training forward and backward of VLM.forward with the `sqrt` loss, the mask kept or dropped."""
    vlm.zero_grad(set_to_none=True)
    inputs = {k: v.to(device) for k, v in batch.items()}
    embeds = vlm.llm.get_input_embeddings()(inputs["input_ids"])
    patches = vlm.project(inputs["features"].to(embeds.dtype)).to(embeds.dtype)
    has_image = torch.ones(len(embeds), dtype=torch.bool, device=device)
    offsets = vlm.image_offsets(inputs["prompt_lengths"], len(embeds), device)
    embeds, mask, labels = insert_patches(embeds, inputs["mask"], inputs["labels"], patches, has_image, offsets)
    out = vlm.llm(inputs_embeds=embeds, attention_mask=mask if padding_mask else None, use_cache=False)
    loss = length_weighted_loss(out.logits, labels, 0.5)
    loss.backward()
    grads = [(name, p.grad.detach().double().cpu()) for name, p in vlm.named_parameters() if p.grad is not None]
    return float(loss.detach()), grads


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on the card, as training runs; plain fp32 for a CPU smoke run."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def relative_errors(grads: list, reference: list) -> dict[str, float]:
    worst = {"connector": 0.0, "llm": 0.0}
    for (name, g), (_, ref) in zip(grads, reference, strict=True):
        part = "connector" if name.startswith("connector") else "llm"
        worst[part] = max(worst[part], float((g - ref).norm() / ref.norm().clamp(min=1e-30)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script (fp32, no autocast)")
    args = parser.parse_args()
    device = torch.device(args.device)
    corpus = [f"USER: what is {i} ASSISTANT: [0.{i % 10}, 0.{i % 7}]</s>" for i in range(400)]
    tokenizer = train_tokenizer(corpus, 1024, Path("/tmp/attention_mask_check_tok"))
    config = VLMConfig(backbone="vit_nano", image_size=96, llm="tiny-llama-2l", llm_init_std=0.088,
                       image_position="after-question")
    base = build_vlm(config, tokenizer, 0)
    base.requires_grad_(False)
    for module in (base.connector, base.llm):
        module.requires_grad_(True)
    batch = synthetic_batch(len(tokenizer), 128, base.vision_backbone.num_tokens(), base.vision_backbone.embed_dim)
    ref_loss, reference = step(copy.deepcopy(base).double(), {**batch, "features": batch["features"].double()},
                               torch.device("cpu"), padding_mask=True)

    rows = []
    for kernels in ("eager", "compile"):
        for padding_mask in (True, False):
            for cudnn in (True, False):
                vlm = copy.deepcopy(base).to(device)
                apply_llm_kernels(vlm.llm, kernels, device)
                backends = contextlib.nullcontext()
                if not cudnn:
                    from torch.nn.attention import SDPBackend, sdpa_kernel

                    backends = sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                            SDPBackend.MATH])
                with backends, autocast(device):
                    loss, grads = step(vlm, batch, device, padding_mask)
                errors = relative_errors(grads, reference)
                rows.append({"llm_kernels": kernels, "padding_mask": padding_mask, "cudnn_allowed": cudnn,
                             "loss_error": abs(loss - ref_loss), **{f"grad_error_{k}": v for k, v in errors.items()}})
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; "
          f"float64 reference loss {ref_loss:.5f}\n")
    print("| LLM layers | padding mask | cuDNN allowed | loss error | connector grad error | LLM grad error |")
    print("|---|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['llm_kernels']} | {row['padding_mask']} | {row['cudnn_allowed']} | {row['loss_error']:.2e} | "
              f"{row['grad_error_connector']:.2e} | {row['grad_error_llm']:.2e} |")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "reference_loss": ref_loss,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

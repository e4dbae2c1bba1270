"""How fast a nano encoder's classification pretraining starts, at the scenes' own size or upsampled.

A bare training loop (no augmentation, no checkpoints) over a ShapeScenes classification split, to separate the
architecture's response to resolution from the study's pipeline: the images are read once, resized to
``--size`` (bicubic), and the backbone plus the study's pooled linear head train with AdamW (linear warmup over 5%
of the steps, cosine decay), clipping at 1.0 and label smoothing 0.1 as in the pretraining recipe. Prints the
training loss and the held-out top-1 on the last 500 images every 20 steps.

    python benchmarks/signal_probes/resolution_probe.py --data STUDY/runs/dataset/ID/data --backbone vmamba_nano \\
        --size 96 --steps 120 --batch-size 64 --lr 1e-3

(``--data``: a study's pretraining-scenes dataset folder, the one whose manifest has ``"namespace": "pretrain"``.)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from ssmvlm.backbones import create_vision_backbone
from ssmvlm.pretrain.augment import normalize
from ssmvlm.pretrain.heads import LinearClassifier

HELD_OUT = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", default="vmamba_nano")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    index = json.loads((args.data / "train" / "classification.json").read_text())
    samples = index["samples"][: args.images]
    images = torch.stack([
        TF.pil_to_tensor(Image.open(args.data / s["image"]).convert("RGB").resize((args.size,) * 2, Image.BICUBIC))
        for s in samples
    ])  # fmt: skip
    labels = torch.tensor([s["label"] for s in samples])
    train_count = len(samples) - HELD_OUT

    torch.manual_seed(args.seed)
    backbone = create_vision_backbone(args.backbone, image_size=args.size)
    head = LinearClassifier(backbone.stage_dims[-1], len(index["classes"]))
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    warmup = max(1, round(0.05 * args.steps))

    def logits(frames: torch.Tensor) -> torch.Tensor:
        pixels = normalize(frames, backbone.spec.mean, backbone.spec.std)
        return head(backbone.forward_stages(pixels), (args.size, args.size))

    started = time.perf_counter()
    for step in range(args.steps):
        batch = torch.randint(0, train_count, (args.batch_size,))
        decay = 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / warmup) * decay
        loss = torch.nn.functional.cross_entropy(logits(images[batch]), labels[batch], label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if (step + 1) % 20 == 0:
            backbone.eval()
            with torch.no_grad():
                top1 = (logits(images[train_count:]).argmax(1) == labels[train_count:]).float().mean().item()
            backbone.train()
            print(f"{args.backbone} {args.size}px step {step + 1}: loss {loss.item():.3f}, held-out top-1 {top1:.3f}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()

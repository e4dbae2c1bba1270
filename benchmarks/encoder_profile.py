"""Where an encoder's GPU time goes, and what compilation buys: one backbone at one batch and resolution.

Modes (each timed with CUDA events, median of repeats, images/s and peak memory):
- ``eager``: the module as ``ssmvlm bench encoders`` runs it (bf16 autocast, inference mode);
- ``bf16``: weights and input cast to bf16, no autocast (no per-call weight casts, bf16 norms);
- ``graph``: the eager forward captured once in a CUDA graph and replayed (removes launch gaps at batch 1);
- ``compile``: ``torch.compile`` of the eager forward.
``--profile`` adds the CUDA-kernel time of one eager forward by kernel name (torch.profiler), largest first.

    PYTHONPATH=src python3 benchmarks/encoder_profile.py -b vmamba_small_s2l15 --batch-size 128 \
        --resolution 224 --modes eager,bf16,compile --profile --out prof.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ssmvlm.backbones import create_vision_backbone, vmamba
from ssmvlm.bench.encoders import capture_cuda_graph
from ssmvlm.bench.timing import median_ms
from ssmvlm.utils.io import atomic_write_json


def forward_fn(model: torch.nn.Module, pixels: torch.Tensor, mode: str):
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode != "bf16")
    module = torch.compile(model) if mode == "compile" else model

    def forward() -> torch.Tensor:
        with torch.inference_mode(), autocast:
            return module(pixels)

    return capture_cuda_graph(forward, warmup=3) if mode == "graph" else forward


def kernel_table(forward, top: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    forward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if device_us > 0:
            rows.append({"kernel": event.key[:110], "calls": event.count, "ms": device_us / 1e3})
    rows.sort(key=lambda r: -r["ms"])
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / total
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--backbone", default="vmamba_small_s2l15")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--modes", default="eager,bf16,graph,compile")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--chunk-tokens", type=int,
                        help="override vmamba.LARGE_MAP_TOKENS (inference on maps this large works in parts)")
    parser.add_argument("--part-elements", type=int,
                        help="override vmamba.SCAN_PART_ELEMENTS (four-order elements per channel part)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.chunk_tokens is not None:
        vmamba.LARGE_MAP_TOKENS = args.chunk_tokens
    if args.part_elements is not None:
        vmamba.SCAN_PART_ELEMENTS = args.part_elements

    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "backbone": args.backbone,
              "batch": args.batch_size, "resolution": args.resolution, "large_map_tokens": vmamba.LARGE_MAP_TOKENS,
              "part_elements": vmamba.SCAN_PART_ELEMENTS, "modes": {}}
    for mode in args.modes.split(","):
        model = create_vision_backbone(args.backbone, image_size=args.resolution).cuda().eval()
        pixels = torch.randn(args.batch_size, 3, args.resolution, args.resolution, device="cuda")
        if mode == "bf16":
            model, pixels = model.to(torch.bfloat16), pixels.to(torch.bfloat16)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            forward = forward_fn(model, pixels, mode)
            ms = median_ms(forward, torch.device("cuda"), warmup=3, repeats=args.repeats)
        except Exception as exc:  # a mode that cannot run here is a result, not a crash
            report["modes"][mode] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"{mode}: {report['modes'][mode]['error']}", flush=True)
            continue
        row = {"ms": ms, "img_s": args.batch_size / ms * 1e3, "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
               "setup_s": time.perf_counter() - start}
        if args.profile and mode == "eager":
            row["kernels"] = kernel_table(forward, args.top)
        report["modes"][mode] = row
        print(f"{args.backbone} {args.resolution}² batch {args.batch_size} {mode}: {ms:.2f} ms, "
              f"{row['img_s']:.0f} img/s, peak {row['peak_mib']:.0f} MiB (setup {row['setup_s']:.0f} s)", flush=True)
        for k in row.get("kernels", []):
            print(f"  {k['ms']:8.3f} ms {100 * k['share']:5.1f}% {k['calls']:5d}x  {k['kernel']}")
        del model, forward
        torch.cuda.empty_cache()
    if args.out:
        atomic_write_json(args.out, report)
    print(json.dumps({m: {k: v for k, v in r.items() if k != "kernels"} for m, r in report["modes"].items()}))


if __name__ == "__main__":
    main()

"""Peak memory of a VMamba inference forward in one pass vs in parts (CPU).

Each measurement runs in a fresh process: build the backbone (random weights), note the process's peak resident
memory, run one forward under ``torch.no_grad``, and report how far the peak rose. The GPU figure (peak CUDA memory
against ViT-B/16) comes from ``ssmvlm bench encoders``; this script isolates what working in parts on maps above
``LARGE_MAP_TOKENS`` (SS2D's channels, token-wise sublayers' tokens) saves, on any machine.

    python benchmarks/ss2d_memory.py --backbone vmamba_small_s2l15 --resolutions 512 1024 --out ss2d_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = """
import json, resource, sys, time
import torch
from ssmvlm.backbones import create_vision_backbone
name, size, threshold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backbone = create_vision_backbone(name, image_size=size).eval()
sys.modules["ssmvlm.backbones.vmamba"].LARGE_MAP_TOKENS = threshold
pixels = torch.randn(1, 3, size, size)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with torch.no_grad():
    backbone(pixels)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"forward_peak_mib": (after - before) / 1024, "seconds": seconds}))
"""

MODES = {"one pass": 2**62, "in parts": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vmamba_small_s2l15")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    for size in args.resolutions:
        for mode, threshold in MODES.items():
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, args.backbone, str(size), str(threshold)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append({"backbone": args.backbone, "resolution": size, "mode": mode, **json.loads(done.stdout)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| resolution | mode | forward peak (MiB above the built model) | forward time (s) |")
    print("|---|---|---:|---:|")
    for row in rows:
        print(f"| {row['resolution']}² | {row['mode']} | {row['forward_peak_mib']:.0f} | {row['seconds']:.1f} |")
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

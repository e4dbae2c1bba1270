"""One classification-pretraining step (forward + backward) of a nano backbone on the CPU, per selective-scan path.

The quick study preset pretrains VMamba nano at 96 px on 2 cores; this times the step it repeats: the backbone and
the pretraining's pooled linear head on a batch of random images, cross-entropy, backward. The scan paths run side
by side in one process, alternating step by step (the machine is shared: the minimum and median are reported):

- ``sequential``: the CPU training path (``ssmvlm.ops.scan_sequential``);
- ``chunked``: the chunked scan under autograd in (batch, dim, L) layout, as every CPU training step ran before it.

    python benchmarks/cpu_train_step.py --threads 2 --out /tmp/cpu_train_step.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from ssmvlm.backbones import create_vision_backbone
from ssmvlm.ops import scan_sequential
from ssmvlm.pretrain.heads import LinearClassifier
from ssmvlm.utils.provenance import git_commit

PATHS = {"sequential": scan_sequential.SEQUENTIAL_MIN_STEP_STATES, "chunked": math.inf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vmamba_nano")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per path, after one warm-up step")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    backbone = create_vision_backbone(args.backbone, image_size=args.image_size)
    head = LinearClassifier(backbone.stage_dims[-1], 10)
    size = (args.image_size, args.image_size)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 10, (args.batch_size,))

    def step() -> float:
        start = time.perf_counter()
        F.cross_entropy(head(backbone.forward_stages(images), size), labels, label_smoothing=0.1).backward()
        return time.perf_counter() - start

    paths = args.paths.split(",")
    times: dict[str, list[float]] = {path: [] for path in paths}
    for repeat in range(args.repeats + 1):
        for path in paths:
            scan_sequential.SEQUENTIAL_MIN_STEP_STATES = PATHS[path]
            seconds = step()
            if repeat:  # the first round warms up allocator and caches
                times[path].append(seconds)
    scan_sequential.SEQUENTIAL_MIN_STEP_STATES = PATHS["sequential"]

    load = os.getloadavg()
    results = {
        "backbone": args.backbone, "image_size": args.image_size, "batch_size": args.batch_size,
        "threads": args.threads, "repeats": args.repeats, "load_average": load, "commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
        "steps_s": {path: {"min": min(t), "median": statistics.median(t), "all": t} for path, t in times.items()},
    }  # fmt: skip
    print(f"{args.backbone} {args.image_size} px, batch {args.batch_size}, {args.threads} threads, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'path':12s} {'min s':>8s} {'median s':>9s}")
    for path, t in times.items():
        print(f"{path:12s} {min(t):8.3f} {statistics.median(t):9.3f}")
    if len(paths) > 1 and "chunked" in times and "sequential" in times:
        ratio = statistics.median(times["chunked"]) / statistics.median(times["sequential"])
        print(f"speed-up (median): {ratio:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

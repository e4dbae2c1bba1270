"""DDP / FSDP equivalence: N processes give the loss curve of one process with the same global batch.

Trains the same tiny VLM twice with ``torchrun`` (1 process, then N), same seed, data, global batch and
per-device micro-batch, and compares the per-step losses. On GPU (NCCL, bf16 autocast) the curves agree within
bf16 noise; on CPU (gloo, fp32) they agree to float rounding, which is how to check it without GPUs:

    python benchmarks/ddp_equivalence.py --out /tmp/ddp-eq --device cpu --nproc 2 --steps 6
    python benchmarks/ddp_equivalence.py --out /tmp/ddp-eq --device cuda --nproc 2 --strategy fsdp

Writes ``OUT/equivalence.json`` (both curves, the largest difference, the verdict) and exits 1 on mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

TOLERANCE = {"cpu": 1e-4, "cuda": 2e-2}  # absolute loss difference: fp32 rounding vs bf16 noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--backbone", default="vit_nano")
    parser.add_argument("--llm", default="tiny-llama-2m")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--scenes", type=int, default=80)
    args = parser.parse_args()

    data = args.out / "shapes"
    if not (data / "train" / "llava.json").is_file():
        from ssmvlm.data.shapes import generate_shapescenes

        generate_shapescenes(data, size=args.scenes, image_size=args.image_size, seed=0, show_progress=False)
    overrides = [
        f"data.train_json={data / 'train' / 'llava.json'}",
        f"model.backbone={args.backbone}",
        f"model.llm={args.llm}",
        f"model.image_size={args.image_size}",
        "recipe=shapes",
        f"optim.max_steps={args.steps}",
        f"optim.global_batch_size={args.global_batch}",
        f"optim.per_device_batch_size={args.micro_batch}",
        f"device={args.device}",
        f"distributed.strategy={args.strategy}",
        "logging.log_every=1",
        "logging.checkpoint_every=100000",
    ]
    curves = {}
    for nproc in (1, args.nproc):
        run_dir = args.out / f"run-{nproc}proc"
        shutil.rmtree(run_dir, ignore_errors=True)
        # `-m ssmvlm.cli` rather than the `ssmvlm` script: it also works where the package is only on PYTHONPATH.
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "ssmvlm.cli",
            "train",
            *overrides,
            "--out",
            str(run_dir),
            "--quiet",
        ]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        curves[nproc] = [json.loads(line)["loss"] for line in lines]

    single, multi = curves[1], curves[args.nproc]
    worst = max(abs(a - b) for a, b in zip(single, multi, strict=True))
    tolerance = TOLERANCE[args.device]
    result = {
        "device": args.device,
        "nproc": args.nproc,
        "strategy": args.strategy,
        "steps": args.steps,
        "global_batch": args.global_batch,
        "micro_batch": args.micro_batch,
        "loss_1proc": single,
        f"loss_{args.nproc}proc": multi,
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "equivalent": worst <= tolerance,
    }
    (args.out / "equivalence.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'step':>5} {'1 proc':>10} {f'{args.nproc} proc':>10}")
    for step, (a, b) in enumerate(zip(single, multi, strict=True), start=1):
        print(f"{step:>5} {a:>10.5f} {b:>10.5f}")
    print(f"max |diff| = {worst:.2e} (tolerance {tolerance:g}): {'EQUIVALENT' if worst <= tolerance else 'MISMATCH'}")
    sys.exit(0 if worst <= tolerance else 1)


if __name__ == "__main__":
    main()

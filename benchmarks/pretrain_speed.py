"""Matched classification pretraining of every nano backbone on ShapeScenes: time, images/s and top-1.

Every backbone gets the same recipe, the same seeded stream of training images and the same budget in
images seen (``ssmvlm.pretrain``). Prints one row per backbone and writes ``summary.json`` plus the markdown
rows for benchmarks/RESULTS.md into ``--out``.

GPU (the figure in RESULTS.md; ShapeScenes is generated first unless ``--data`` is given):
    python benchmarks/pretrain_speed.py --device cuda --out /tmp/pretrain_speed
CPU smoke:
    python benchmarks/pretrain_speed.py --device cpu --scenes 400 --images-seen 256 --image-size 64 \
        --batch-size 32 --backbones vit_nano --out /tmp/pretrain_smoke
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

NANO_BACKBONES = (
    "vit_nano",
    "vmamba_nano",
    "vim_nano",
    "mambavision_nano",
    "maxvit_nano",
    "swin_nano",
    "convnext_nano",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images-seen", type=int, default=360_000, help="matched budget per backbone")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None, help="peak lr at --batch-size (default: the recipe's)")
    parser.add_argument("--evals", type=int, default=3, help="held-out evaluations spread over the budget")
    parser.add_argument("--data", type=Path, default=None, help="existing ShapeScenes directory")
    parser.add_argument("--scenes", type=int, default=40_000, help="scenes to generate when --data is not given")
    parser.add_argument("--max-objects", type=int, default=3, help="generated scenes: objects (as the paper preset)")
    parser.add_argument("--clutter", default="low", help="generated scenes: distractor strokes (as the paper preset)")
    parser.add_argument("--generate-only", action="store_true", help="make the scenes and stop (for parallel runs)")
    parser.add_argument("--workers", type=int, default=8, help="processes for generation and image loading")
    parser.add_argument("--backbones", default=",".join(NANO_BACKBONES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("pretrain_speed_runs"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    from ssmvlm.config import from_dict
    from ssmvlm.pretrain import PretrainConfig, run_pretraining
    from ssmvlm.utils.provenance import device_description, git_commit

    torch.backends.cudnn.benchmark = True
    data = args.data
    if data is None:
        from ssmvlm.data.shapes.generate import generate_shapescenes

        data = args.out / "shapescenes"
        if not (data / "manifest.json").is_file():
            start = time.perf_counter()
            generate_shapescenes(
                data,
                size=args.scenes,
                image_size=args.image_size,
                seed=args.seed,
                workers=args.workers,
                max_objects=args.max_objects,
                clutter=args.clutter,
            )
            print(f"generated {args.scenes} scenes in {time.perf_counter() - start:.0f} s")
    if args.generate_only:
        return

    rows = []
    for name in [b for b in args.backbones.split(",") if b]:
        fields = {
            "backbone": name,
            "objective": "classification",
            "images_seen": args.images_seen,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "device": args.device,
            "evals": args.evals,
            "data": {"source": "shapes", "root": str(data), "num_workers": args.workers},
        }
        if args.lr is not None:
            fields["optim"] = {"lr": args.lr, "lr_reference_batch": args.batch_size}
        config = from_dict(PretrainConfig, fields)
        start = time.perf_counter()
        metrics = run_pretraining(config, args.out / name)
        wall = time.perf_counter() - start
        log = [json.loads(line) for line in (args.out / name / "metrics.jsonl").read_text().splitlines()]
        top1_curve = [round(r["eval"]["top1"], 4) for r in log if "eval" in r]
        rows.append(
            {
                "backbone": name,
                "params_m": metrics["params"] / 1e6,
                "train_s": metrics["train_seconds"],
                "wall_s": wall,
                "images_per_s": metrics["images_per_second"],
                "top1": metrics["top1"],
                "top5": metrics["top5"],
                "top1_curve": top1_curve,
            }
        )
        r = rows[-1]
        print(
            f"{name:18s} {r['params_m']:5.2f}M  train {r['train_s']:7.1f} s  wall {wall:7.1f} s  "
            f"{r['images_per_s']:8.0f} img/s  top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  "
            f"curve {top1_curve}",
            flush=True,
        )

    header = (
        f"`python benchmarks/pretrain_speed.py --device {args.device} --images-seen {args.images_seen} "
        f"--image-size {args.image_size} --batch-size {args.batch_size} --scenes {args.scenes} "
        f"--max-objects {args.max_objects} --clutter {args.clutter}` · {device_description()} · "
        f"commit {git_commit()} · {time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    lines = [
        header,
        "",
        "| backbone | params | train time (s) | images/s | top-1 | top-5 | top-1 over the run |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['backbone']} | {r['params_m']:.2f}M | {r['train_s']:.1f} | {r['images_per_s']:.0f} | "
        f"{r['top1']:.4f} | {r['top5']:.4f} | {' → '.join(f'{v:.3f}' for v in r['top1_curve'])} |"
        for r in rows
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "device": device_description(),
                "rows": rows,
            },
            indent=2,
        )
    )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Wall time per optimizer step of a study preset's VLM stage, with several stages sharing one card as a study's
workers do (issue 21: the `paper` preset's wall time is its VLM cells' steps).

Generates the preset's benchmark scenes into ``--data`` unless they are there, then starts ``--procs`` processes, each
running the preset's training cell (the study's own adapter: its recipe, LLM and model settings, no LLM warm-up;
encoder ``--backbone`` at random weights, whose features are cached like any encoder's) for ``--steps`` steps at its
own seed. Prints and writes per process the mean step time after ``--skip`` warm-up steps (from ``metrics.jsonl``)
and the wall time of the whole call.

    python benchmarks/vlm_stage_speed.py --out runs/stage_speed --procs 4 --steps 600
    python benchmarks/vlm_stage_speed.py --out DIR --data DIR/data --set distributed.llm_kernels=compile

Run it under another tree's ``src`` (``PYTHONPATH=OTHER/src``) for a before/after on the same card.

``--profile``: instead, one process runs the cell twice under torch.profiler, for ``--steps`` and for twice as many
steps, and the difference gives the GPU kernels a step launches and their device time (the feature cache and the
compilation fall out), with the kernels that take most of it.

    python benchmarks/vlm_stage_speed.py --out DIR --steps 100 --profile --set distributed.llm_kernels=compile
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def generate(spec, out: Path) -> Path:
    from ssmvlm.data.shapes import generate_shapescenes

    shapes = spec.benchmark.shapes
    generate_shapescenes(
        out,
        size=shapes.size,
        image_size=shapes.image_size,
        seed=shapes.seed,
        splits=shapes.splits,
        workers=min(16, os.cpu_count() or 1),
        show_progress=False,
        **shapes.scene,
    )
    return out


def train_one(args: argparse.Namespace) -> None:
    """The preset's training cell for this backbone and seed, run by the study's own adapter."""
    from ssmvlm.study.matrix import expand_matrix
    from ssmvlm.study.spec import load_spec
    from ssmvlm.study.stages import run_train

    overrides = [
        f"backbones=[{args.backbone}]",
        "initializations=[random]",
        f"seeds=[{args.seed}]",
        f"recipe.overrides.optim.max_steps={args.steps}",
        *(f"recipe.overrides.{item}" for item in args.set),
    ]
    if getattr(load_spec(preset=args.preset), "llm_warmup", None):  # trees before the warm-up have no such key
        overrides.append("llm_warmup.enabled=false")  # a warm LLM takes the same steps; this times the step alone
    (cell,) = expand_matrix(load_spec(preset=args.preset, overrides=overrides)).by_stage("train")
    upstream = {f"dataset/{cell.config.data.dataset}": {"path": str(args.data)}}
    run_dir = args.out / f"seed{args.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if not args.profile:
        run_train(cell, run_dir, upstream, args.device)
        return
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        run_train(cell, run_dir, upstream, args.device)
    kernels: dict[str, list[float]] = {}
    for event in profiler.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            count_time = kernels.setdefault(event.name, [0, 0.0])
            count_time[0] += 1
            count_time[1] += event.device_time_total
    (run_dir / "kernels.json").write_text(json.dumps(kernels))


def profile_step(args: argparse.Namespace) -> None:
    """Kernels and device time of one step: two runs of ``steps`` and ``2 * steps``, differenced."""
    runs = []
    for index, steps in enumerate((args.steps, 2 * args.steps)):
        out = args.out / f"profile{index}"
        command = [sys.executable, __file__, *sys.argv[1:], "--data", str(args.data), "--seed", "0"]
        command += ["--out", str(out), "--steps", str(steps)]
        if subprocess.call(command):
            sys.exit("the profiled worker failed")
        runs.append(json.loads((out / "seed0" / "kernels.json").read_text()))
    per_step = {
        name: [(runs[1][name][k] - runs[0].get(name, [0, 0.0])[k]) / args.steps for k in (0, 1)]
        for name in runs[1]
    }
    launches = sum(count for count, _ in per_step.values())
    device_ms = sum(us for _, us in per_step.values()) / 1e3
    top = sorted(per_step.items(), key=lambda item: -item[1][1])[:15]
    lines = [f"kernels a step: {launches:.0f}; device time a step: {device_ms:.2f} ms", "", "| kernel | a step | us |"]
    lines += ["|---|---:|---:|", *(f"| {name[:90]} | {count:.1f} | {us:.1f} |" for name, (count, us) in top)]
    print("\n".join(lines))
    (args.out / "profile.md").write_text("\n".join(lines) + "\n")
    (args.out / "profile.json").write_text(json.dumps({"set": args.set, "per_step": per_step}, indent=1))


def summarize(run: Path, skip: int) -> dict[str, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    later = [r for r in records if r["step"] > skip and r["step"] % 10 == 0]
    return {
        "steps": records[-1]["step"],
        "step_ms": 1e3 * sum(r["step_s"] for r in later) / len(later),
        "tokens_per_s": sum(r["tokens_per_s"] for r in later) / len(later),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--data", type=Path, default=None, help="the preset's benchmark (generated if missing)")
    parser.add_argument("--backbone", default="vmamba_nano")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--skip", type=int, default=100, help="warm-up steps left out of the mean")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--label", default="", help="a name for this tree/setting in the JSON")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE TrainConfig overrides")
    parser.add_argument("--profile", action="store_true", help="kernels a step, from two profiled runs")
    parser.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # one worker's run
    args = parser.parse_args()
    if args.seed is not None:
        train_one(args)
        return
    from ssmvlm.study.spec import load_spec

    args.out.mkdir(parents=True, exist_ok=True)
    args.data = args.data or args.out / "data"
    if not (args.data / "manifest.json").is_file():
        generate(load_spec(preset=args.preset), args.data)
    if args.profile:
        profile_step(args)
        return
    started = time.perf_counter()
    workers = [
        subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--data", str(args.data), "--seed", str(seed)])
        for seed in range(args.procs)
    ]
    if any(worker.wait() for worker in workers):
        sys.exit("a worker failed")
    wall = time.perf_counter() - started
    runs = [summarize(args.out / f"seed{seed}", args.skip) for seed in range(args.procs)]
    step_ms = sum(r["step_ms"] for r in runs) / len(runs)
    result = {
        "label": args.label,
        "preset": args.preset,
        "backbone": args.backbone,
        "procs": args.procs,
        "steps": args.steps,
        "set": args.set,
        "wall_s": wall,
        "step_ms_per_process": step_ms,
        "steps_per_s_all_processes": args.procs * 1e3 / step_ms,
        "runs": runs,
    }
    print(f"| {args.label or '-'} | {args.procs} | {step_ms:.1f} | {result['steps_per_s_all_processes']:.0f} | "
          f"{wall:.0f} |")
    (args.out / "speed.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

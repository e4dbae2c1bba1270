"""ShapeScenes generation speed: one core per image, and the whole ``ssmvlm data make-shapes`` command.

    python benchmarks/shapes_speed.py --out benchmarks/results/shapes_speed.json

1. Single core: the per-scene work of a worker (sample, render, questions, two PNG encodes, two file
   writes) for ``--single`` scenes in this process, as images/s of wall time and of CPU time.
2. End to end: ``ssmvlm data make-shapes --size N --image-size 224 --workers W`` in a subprocess, timed from
   outside (start-up, imports, progress bar, every JSON file, manifest and run.json included).

The machine's load average is recorded before and after: on a shared machine, wall time reflects other users'
work too, while CPU time per image does not (much).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ssmvlm.data.shapes.generate import _init_worker, _make_chunk
from ssmvlm.data.shapes.scene import SceneConfig
from ssmvlm.utils.io import atomic_write_json


def single_core(count: int, image_size: int, folder: Path) -> dict[str, float]:
    _init_worker(folder, 0, image_size, SceneConfig())
    for kind in ("images", "masks"):
        (folder / kind / "train").mkdir(parents=True, exist_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    _make_chunk(("train", 0, count))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "scenes": count,
        "image_size": image_size,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "images_per_s_wall": round(count / wall, 1),
        "images_per_s_cpu": round(count / cpu, 1),
    }


def end_to_end(count: int, image_size: int, workers: int, folder: Path) -> dict[str, float | str]:
    command = [
        "ssmvlm",
        "data",
        "make-shapes",
        "--out",
        str(folder),
        "--size",
        str(count),
        "--image-size",
        str(image_size),
        "--seed",
        "0",
        "--workers",
        str(workers),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "command": " ".join([*command[:3], "--out", "DIR", *command[5:]]),
        "scenes": count,
        "image_size": image_size,
        "workers": workers,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "images_per_s_wall": round(count / wall, 1),
    }


def machine() -> dict[str, object]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/shapes_speed.json"))
    parser.add_argument("--single", type=int, default=1000, help="scenes for the single-core measurement")
    parser.add_argument("--scenes", type=int, default=10_000, help="scenes for the end-to-end command")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (96, 224):
            rows.append(
                {"measure": "single core", **single_core(args.single, size, Path(tmp) / f"single{size}")}
            )
        rows.append(
            {"measure": "make-shapes", **end_to_end(args.scenes, 224, args.workers, Path(tmp) / "full")}
        )
    result = {
        "commit": commit,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "argv": sys.argv,
        "rows": rows,
    }
    atomic_write_json(args.out, result)
    print(
        f"commit {commit}, {result['machine']}, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'measure':<12} {'size':>5} {'scenes':>7} {'workers':>7} {'wall s':>8} {'CPU s':>8} "
        f"{'img/s wall':>11} {'img/s CPU':>10}"
    )
    for row in rows:
        print(
            f"{row['measure']:<12} {row['image_size']:>5} {row['scenes']:>7} {row.get('workers', 1):>7} "
            f"{row['wall_s']:>8} {row['cpu_s']:>8} {row['images_per_s_wall']:>11} "
            f"{row.get('images_per_s_cpu', '-'):>10}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

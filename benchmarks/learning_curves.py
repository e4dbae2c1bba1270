"""Learning curves of the embedded study: VLM scores against the pretraining and the VLM-training budget.

For each backbone and each budget point, one single-seed study (classification initialization, no ablation)
runs as its own ``ssmvlm study`` process with the base preset plus ``--set`` overrides and the point's budget:
``pretrain.images_seen`` on the pretraining axis (the VLM recipe fixed), ``recipe.overrides.optim.epochs``
on the VLM axis (the pretraining fixed at its preset budget). A backbone's points run one after another, each in
its own folder seeded with copies of the earlier points' finished cells: cells are content-addressed, so the
dataset, and the pretraining wherever the budget is the same, run once per backbone. Backbones run ``--jobs`` at a
time, each point's study with ``--threads`` torch threads.

The script prints a table, writes ``curves.json``, ``curves.md`` and ``curves.png`` (one panel per score, a
line per backbone, the blind control dashed) under ``--out``, and marks where each curve saturates: the
smallest budget whose score is within ``--tolerance`` points of the curve's best.

    python benchmarks/learning_curves.py --preset quick --out runs/curves --backbones vmamba_nano,vit_nano \\
        --pretrain-images 1024,2048,4096,8192 --vlm-epochs 1,2,3,6 --jobs 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

# results.csv columns: the weighted VQA and Loc aggregates, and per task "task:<name>".
SCORES = {"vqa": "VQA", "task:shapes-pope": "ShapeScenes-POPE", "loc": "Loc (Acc@0.5)"}


@dataclass(frozen=True)
class Point:
    backbone: str
    axis: str  # "pretrain" or "vlm"
    budget: int

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.axis}-{self.budget}"

    def overrides(self) -> list[str]:
        key = "pretrain.images_seen" if self.axis == "pretrain" else "recipe.overrides.optim.epochs"
        return [
            f"backbones=[{self.backbone}]",
            "initializations=[shapes-cls]",
            "seeds=[0]",
            "stabilization.enabled=false",
            f"{key}={self.budget}",
        ]


def collect_point(point: Point, args: argparse.Namespace) -> dict[str, Any]:
    """A point's row from its folder, without running anything (a point that did not finish has no scores)."""
    out = args.out / "points" / point.name
    row: dict[str, Any] = {"backbone": point.backbone, "axis": point.axis, "budget": point.budget}
    results = out / "results.csv"
    row["status"] = "done" if results.is_file() else "missing"
    if results.is_file():
        row.update(_scores(pd.read_csv(results), out))
    return row


def seed_cells(earlier: list[Path], out: Path) -> None:
    """Copies of the earlier points' finished cells in ``out``, which its study then finds done."""
    for folder in earlier:
        for done in folder.glob("runs/*/*/DONE"):
            target = out / done.parent.relative_to(folder)
            if not target.exists():
                shutil.copytree(done.parent, target)


def run_backbone(points: list[Point], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One backbone's points in order, each seeded with the cells of those before it."""
    rows, earlier = [], []
    for point in points:
        out = args.out / "points" / point.name
        seed_cells(earlier, out)
        rows.append(run_point(point, args))
        earlier.append(out)
    return rows


def run_point(point: Point, args: argparse.Namespace) -> dict[str, Any]:
    out = args.out / "points" / point.name
    command = [
        sys.executable,
        "-m",
        "ssmvlm.cli",
        "study",
        "--preset",
        args.preset,
        "--out",
        str(out),
        *args.set,
        *point.overrides(),
        f"execution.threads={args.threads}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    with open(args.out / "points" / f"{point.name}.log", "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    row: dict[str, Any] = {"backbone": point.backbone, "axis": point.axis, "budget": point.budget}
    row.update(seconds=round(seconds, 1), status="done" if code == 0 else f"exit {code}")
    results = out / "results.csv"
    if code == 0 and results.is_file():
        row.update(_scores(pd.read_csv(results), out))
    print(f"{point.name}: {row['status']} in {seconds:.0f} s", flush=True)
    return row


def _scores(table: pd.DataFrame, out: Path) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    for row_type, prefix in (("model", ""), ("blind", "blind_")):
        rows = table[table["row_type"] == row_type]
        for column in SCORES:
            if column in rows and len(rows):
                scores[prefix + column] = float(rows[column].mean())
    model = table[table["row_type"] == "model"]
    if "top1" in model and len(model):
        scores["top1"] = float(model["top1"].iloc[0])
    if "train_id" in model and len(model):  # the point's own VLM run: its folder also holds earlier points' cells
        train_log = out / "runs" / "train" / str(model["train_id"].iloc[0]) / "metrics.jsonl"
        if train_log.is_file():
            scores["vlm_steps"] = max(json.loads(line)["step"] for line in train_log.read_text().splitlines())
    return scores


def saturation(points: pd.DataFrame, column: str, tolerance: float) -> int | None:
    """The smallest budget whose score is within ``tolerance`` points of the curve's best."""
    valid = points.dropna(subset=[column]).sort_values("budget")
    if valid.empty:
        return None
    best = valid[column].max()
    return int(valid[valid[column] >= best - tolerance]["budget"].iloc[0])


def plot(table: pd.DataFrame, path: Path, tolerance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_order = [a for a in ("pretrain", "vlm") if a in set(table["axis"])]
    columns = [c for c in SCORES if c in table]
    figure, axes = plt.subplots(len(axes_order), len(columns), figsize=(4.2 * len(columns), 3.4 * len(axes_order)))
    axes = [[axes]] if len(axes_order) == len(columns) == 1 else axes
    if len(axes_order) == 1:
        axes = [axes]
    for row, axis in enumerate(axes_order):
        for col, column in enumerate(columns):
            ax = axes[row][col]
            for backbone, points in table[table["axis"] == axis].groupby("backbone"):
                points = points.sort_values("budget")
                x = points["vlm_steps"] if axis == "vlm" and "vlm_steps" in points else points["budget"]
                (line,) = ax.plot(x, points[column], marker="o", label=backbone)
                if f"blind_{column}" in points:
                    ax.plot(x, points[f"blind_{column}"], linestyle="--", color=line.get_color(), alpha=0.6)
                knee = saturation(points, column, tolerance)
                if knee is not None:
                    at = points[points["budget"] == knee]
                    knee_x = at["vlm_steps"] if axis == "vlm" and "vlm_steps" in at else at["budget"]
                    ax.scatter(knee_x, at[column], s=140, facecolors="none", edgecolors=line.get_color())
            ax.set_xscale("log", base=2)
            ax.set_xlabel("pretraining images seen" if axis == "pretrain" else "VLM optimizer steps")
            ax.set_ylabel(SCORES[column])
            ax.grid(alpha=0.3)
            if row == col == 0:
                ax.legend(fontsize=8)
    figure.suptitle("Scores against budget (dashed: blind control; circled: saturation)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def markdown(table: pd.DataFrame, tolerance: float) -> str:
    lines = []
    columns = [c for c in ("top1", "vlm_steps", *SCORES, *(f"blind_{c}" for c in SCORES)) if c in table]
    header = ["backbone", "axis", "budget", *columns, "seconds", "status"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for record in table.sort_values(["axis", "backbone", "budget"]).to_dict("records"):
        cells = [_cell(record.get(key)) for key in header]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Saturation (smallest budget within {tolerance:g} points of the curve's best):")
    lines.append("")
    for (axis, backbone), points in table.groupby(["axis", "backbone"]):
        knees = {SCORES[c]: saturation(points, c, tolerance) for c in SCORES if c in points}
        lines.append(f"- {backbone}, {axis} axis: " + ", ".join(f"{k} at {v}" for k, v in knees.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbones", default="vmamba_nano,vit_nano")
    parser.add_argument("--pretrain-images", default="", help="comma-separated budgets (images seen)")
    parser.add_argument("--vlm-epochs", default="", help="comma-separated VLM epoch budgets")
    parser.add_argument("--set", nargs="*", default=[], help="spec overrides applied to every point")
    parser.add_argument("--jobs", type=int, default=1, help="backbones whose points run at the same time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=2.0, help="points below the best that count as saturated")
    parser.add_argument("--collect", action="store_true", help="only tabulate and plot the points already in --out")
    args = parser.parse_args()
    (args.out / "points").mkdir(parents=True, exist_ok=True)
    budgets = {"pretrain": args.pretrain_images, "vlm": args.vlm_epochs}
    points = [
        Point(backbone, axis, int(value))
        for axis, text in budgets.items()
        for value in filter(None, text.split(","))
        for backbone in args.backbones.split(",")
    ]
    if args.collect:
        rows = [collect_point(p, args) for p in points]
    else:
        chains = [[p for p in points if p.backbone == backbone] for backbone in args.backbones.split(",")]
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = [row for chain in pool.map(lambda c: run_backbone(c, args), chains) for row in chain]
    table = pd.DataFrame.from_records(rows)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "points": rows}
    (args.out / "curves.json").write_text(json.dumps(record, indent=2))
    text = markdown(table, args.tolerance)
    (args.out / "curves.md").write_text(text)
    print(text)
    plot(table, args.out / "curves.png", args.tolerance)


if __name__ == "__main__":
    main()

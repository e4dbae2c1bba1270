"""One table for several study folders: each model and control row's VQA / POPE / Loc with intervals and top-1,
then per VLM cell its seed, its final training loss and the VQA score per question family (model against its blind
control). Folders of symbolic_probe.py arms (an ``eval/results.json``, no ``results.csv``) get one table over all
of them, one row per arm.

    python benchmarks/signal_probes/summarize.py STUDY_OR_ARM_DIR [STUDY_OR_ARM_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def _interval(row: pd.Series, name: str) -> str:
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if pd.isna(row.get(name)):
        return "–"
    if pd.isna(low):
        return f"{row[name]:.1f}"
    return f"{row[name]:.1f} [{low:.1f}, {high:.1f}]"


def _final_training_loss(train_dir: Path, records: int = 30) -> str:
    """The mean training loss of a VLM cell's last ``records`` logged steps: beside the scores, how far the cell fits
    its training split."""
    metrics = train_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    tail = [json.loads(line)["loss"] for line in lines if '"loss"' in line][-records:]
    return f"training loss {sum(tail) / len(tail):.3f}" if tail else "training loss –"


def summarize(folder: Path) -> list[str]:
    table = pd.read_csv(folder / "results.csv")
    header = ["| row | backbone | init | top-1 | VQA | POPE | Loc |", "|---|---|---|---|---|---|---|"]
    lines = [f"## {folder.name}", "", *header]
    for _, row in table[table.row_type.isin(["model", "blind", "prior"])].iterrows():
        pope = row.get("task:shapes-pope")
        lines.append(
            f"| {row.row_type} | {row.backbone} | {row.init} | {'' if pd.isna(row.top1) else f'{row.top1:.1f}'} | "
            f"{_interval(row, 'vqa')} | {'' if pd.isna(pope) else f'{pope:.1f}'} | {_interval(row, 'loc')} |"
        )
    lines += ["", "VQA by question family (model / blind):", ""]
    for result_file in sorted((folder / "runs" / "eval").glob("*/result.json")):
        results = json.loads(result_file.read_text())["results"]
        # the train cell inside this folder (the recorded path is the machine's that ran it)
        train_dir = folder / "runs" / "train" / Path(results["config"]["run_dir"]).name
        train_config = json.loads((train_dir / "config.json").read_text())
        model = results["tasks"]["shapes-vqa"]["breakdown"]
        blind = results.get("controls", {}).get("blind", {}).get("tasks", {}).get("shapes-vqa", {}).get("breakdown", {})
        cells = [
            f"{name} {score['score']:.0f}/{blind.get(name, {}).get('score', float('nan')):.0f}"
            for name, score in sorted(model.items())
        ]
        inits = table.loc[table.cell_id == result_file.parent.name, "init"]
        init = f" ({inits.iloc[0]})" if len(inits) else ""
        lines.append(
            f"- {train_config['model']['backbone']}{init}, seed {train_config['seed']}, "
            f"{_final_training_loss(train_dir)}: " + ", ".join(cells)
        )
    return [*lines, ""]


FAMILIES = ("color", "compare", "count", "exist", "nearest", "shape", "spatial")
POPE_LOC = ("shapes-pope", "shapes-refexp")


def summarize_arms(folders: list[Path]) -> list[str]:
    """One row per symbolic arm: weighted VQA, ShapeScenes-VQA, POPE, Loc [CI], its blind control, and the VQA
    families (colour, compare, count, exist, nearest, shape, spatial)."""
    lines = [
        "| arm | VQA | ShapeScenes-VQA | POPE | Loc | blind VQA / POPE / Loc | " + " / ".join(FAMILIES) + " |",
        "|---|---|---|---|---|---|---|",
    ]
    for folder in folders:
        results = json.loads((folder / "eval" / "results.json").read_text())
        tasks, blind = results["tasks"], results["controls"]["blind"]
        loc = results["aggregates"]["loc"]
        families = tasks["shapes-vqa"]["breakdown"]
        controls = (blind["aggregates"]["vqa"]["weighted"], *(blind["tasks"][t]["score"] for t in POPE_LOC))
        cells = [
            f"`{folder.name}`",
            f"{results['aggregates']['vqa']['weighted']:.1f}",
            f"{tasks['shapes-vqa']['score']:.1f}",
            f"{tasks['shapes-pope']['score']:.1f}",
            f"{loc['weighted']:.1f} [{loc['ci95'][0]:.1f}, {loc['ci95'][1]:.1f}]",
            " / ".join(f"{score:.1f}" for score in controls),
            " / ".join(f"{families[name]['score']:.0f}" if name in families else "–" for name in FAMILIES),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    folders = parser.parse_args().folders
    arms = [folder for folder in folders if (folder / "eval" / "results.json").is_file()]
    for folder in folders:
        if (folder / "results.csv").is_file():
            print("\n".join(summarize(folder)))
        elif folder not in arms:
            print(f"## {folder.name}\n\n(no results.csv)\n")
    if arms:
        print("\n".join(summarize_arms(arms)))


if __name__ == "__main__":
    main()

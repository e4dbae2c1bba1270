"""Collecting a study's results: one table row per evaluation cell and per control, read from the run folders.

The table (columns described in :mod:`ssmvlm.study.analysis`) is what the analysis, the findings and the report
read; a cell that failed or was blocked still gets its row, with its status and first error line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ssmvlm.study.cells import first_error_line, is_done, is_done_key, read_result
from ssmvlm.study.matrix import StudyMatrix
from ssmvlm.study.stages import TRAIN_LOG

LABELS = ("backbone", "init", "seed", "resolution", "resize_strategy", "connector", "variant", "parent")
# Columns every table has, NaN where no row filled them (a study whose every run failed still reports).
COLUMNS = ("vqa", "loc", "overall", "row_type", "status", "top1", "params", "tokens", "family", "kind")


def collect_results(matrix: StudyMatrix, out: Path, status: dict[str, str] | None = None) -> pd.DataFrame:
    """The results table: one row per eval cell and per control."""
    rows: list[dict[str, Any]] = []
    for cell in matrix.by_stage("eval"):
        train_key = next(dep for dep in cell.deps if dep.startswith("train/"))
        base = {
            "cell_id": cell.id,
            "train_id": train_key.split("/", 1)[1],
            **{k: cell.labels.get(k) for k in LABELS},
            "run_dir": str(cell.run_dir(out)),
            "train_log": str(Path(out) / "runs" / train_key / TRAIN_LOG),  # kept by failed trainings too
        }
        cell_status = (status or {}).get(cell.key) or ("done" if is_done(cell, out) else "missing")
        if cell_status == "cached":
            cell_status = "done"
        if cell_status != "done":
            rows.append({**base, "row_type": "model", "status": cell_status, **first_error_line(cell, out)})
            continue
        train = read_result(train_key, out) if is_done_key(train_key, out) else {}
        facts = {k: train.get(k) for k in ("family", "kind", "params", "tokens", "top1")}
        model, controls = extract_scores(read_result(cell, out).get("results", {}))
        rows.append({**base, **facts, "row_type": "model", "status": "done", **model})
        for name, scores in controls.items():
            rows.append({**base, **facts, "row_type": name, "status": "done", **scores})
    table = pd.DataFrame.from_records(rows)
    for column in COLUMNS:
        if column not in table:
            table[column] = math.nan
    return table


def extract_scores(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Flatten an evaluation's results (``ssmvlm.eval``) into table columns, for the model and each control.

    Reads ``aggregates.{vqa,loc,overall}.{weighted,ci95}`` and ``tasks.<name>.score``; a group the evaluation
    did not cover stays NaN.
    """

    def flatten(block: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        aggregates = block.get("aggregates", {})
        for score in ("vqa", "loc", "overall"):
            values = aggregates.get(score, {})
            row[score] = _number(values.get("weighted"))
            ci = values.get("ci95")
            if isinstance(ci, list | tuple) and len(ci) == 2:
                row[f"{score}_ci_low"], row[f"{score}_ci_high"] = _number(ci[0]), _number(ci[1])
        for name, task in block.get("tasks", {}).items():
            row[f"task:{name}"] = _number(task.get("score"))
        return row

    controls = {name: flatten(block) for name, block in results.get("controls", {}).items()}
    return flatten(results), controls


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

"""Analysis of a study's results table: pure functions from a pandas table to tables and verdicts.

The results table has one row per evaluated model cell (``row_type == "model"``) and one per control of each
evaluation (``row_type`` = the control's name, e.g. ``blind`` or ``prior``). Columns: ``cell_id``,
``backbone``, ``family``, ``kind``, ``params``, ``tokens``, ``init``, ``seed``, ``resolution``,
``resize_strategy``, ``connector``, ``variant`` (``main`` or an ablation variant), ``parent`` (the main
cell an ablation derives from), ``status``, the weighted scores ``vqa``/``loc``/``overall`` (0–100), their
evaluation CIs ``<score>_ci_low``/``<score>_ci_high`` when the evaluation gave them, per-task scores
``task:<name>``, ``top1`` (classification top-1 of the backbone's classification pretraining) and
``train_log`` (the training ``metrics.jsonl``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssmvlm.study.spec import DiagnosisSpec, StabilizationSpec
from ssmvlm.study.stats import mean_interval, mean_std, rank_correlation

SCORES: tuple[str, ...] = ("vqa", "loc", "overall")
TASK_PREFIX = "task:"
MODEL_ROW = "model"
MAIN_VARIANT = "main"
SETTING: tuple[str, ...] = ("init", "resolution", "resize_strategy", "connector")
CELL: tuple[str, ...] = ("backbone", *SETTING, "variant")
DENSE_INITS: tuple[str, ...] = ("shapes-det", "shapes-seg")
# Flags the stabilization ablation targets; "no-signal" runs failed wholesale, which a connector cannot fix.
ABLATED_FLAGS: tuple[str, ...] = ("loc-collapse", "diverged", "seed-disagreement")


def model_rows(results: pd.DataFrame, *, main_only: bool = True) -> pd.DataFrame:
    """Finished model rows (controls and failed runs left out), optionally only the main variant."""
    rows = results[(results["row_type"] == MODEL_ROW) & results["vqa"].notna()]
    if "status" in rows:
        rows = rows[rows["status"] == "done"]
    if main_only:
        rows = rows[rows["variant"] == MAIN_VARIANT]
    return rows


def task_columns(results: pd.DataFrame) -> list[str]:
    return sorted(c for c in results.columns if c.startswith(TASK_PREFIX))


# -- main table -----------------------------------------------------------------------------------------


def main_table(results: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Per backbone × setting: description, per-task means, and mean ± std and a 95% CI of each score.

    With several seeds the CI is a bootstrap over seeds; with one seed it is the evaluation's own CI
    (a bootstrap over examples) when the evaluation reported one. ``ci_source`` says which.
    """
    rows = model_rows(results)
    tasks = task_columns(results)
    records = []
    for key, group in rows.groupby(list(CELL[:-1]), sort=False, dropna=False):
        first = group.iloc[0]
        record: dict[str, Any] = dict(zip(CELL[:-1], key, strict=True))
        for column in ("family", "kind", "params", "tokens", "top1"):
            record[column] = group[column].mean() if column == "top1" else first.get(column)
        record["n_seeds"] = int(group["seed"].nunique())
        for task in tasks:
            record[task] = float(group[task].mean())
        for score in SCORES:
            mean, std = mean_std(group[score])
            record[f"{score}_mean"], record[f"{score}_std"] = mean, std
            if len(group) > 1:
                interval = mean_interval(group[score], seed=seed)
                low, high, source = interval.low, interval.high, "seeds"
            elif f"{score}_ci_low" in group and pd.notna(first.get(f"{score}_ci_low")):
                low, high, source = (
                    float(first[f"{score}_ci_low"]),
                    float(first[f"{score}_ci_high"]),
                    "examples",
                )
            else:
                low, high, source = math.nan, math.nan, "none"
            record[f"{score}_ci_low"], record[f"{score}_ci_high"] = low, high
            record["ci_source"] = source
        records.append(record)
    table = pd.DataFrame.from_records(records)
    return table.sort_values("overall_mean", ascending=False, ignore_index=True) if len(table) else table


def controls_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean scores of each control (blind, prior, ...) over every evaluation that ran it."""
    controls = results[(results["row_type"] != MODEL_ROW) & results["vqa"].notna()]
    if controls.empty:
        return pd.DataFrame(columns=["control", *[f"{s}_mean" for s in SCORES], "n"])
    records = []
    for name, group in controls.groupby("row_type"):
        record = {"control": name, "n": len(group)}
        for score in (*SCORES, *task_columns(results)):
            record[f"{score}_mean" if score in SCORES else score] = float(group[score].mean())
        records.append(record)
    return pd.DataFrame.from_records(records)


# -- predictors of VLM quality --------------------------------------------------------------------------


def reference_init(results: pd.DataFrame) -> str | None:
    """The classification initialization when the study has one, else the most common initialization."""
    rows = model_rows(results)
    if rows.empty:
        return None
    inits = rows["init"].value_counts()
    return "shapes-cls" if "shapes-cls" in inits.index else str(inits.index[0])


def predictor_points(results: pd.DataFrame, predictor: str) -> pd.DataFrame:
    """One point per backbone (the reference init, seeds averaged): the predictor and each score."""
    rows = model_rows(results)
    init = reference_init(results)
    rows = rows[rows["init"] == init]
    if predictor not in rows or rows.empty:
        return pd.DataFrame(columns=["backbone", "kind", predictor, *SCORES])
    grouped = rows.groupby("backbone", sort=False)
    points = grouped[[predictor, *SCORES]].mean()
    points["kind"] = grouped["kind"].first()
    return points.reset_index()


def predictor_correlations(
    results: pd.DataFrame, predictors: Sequence[str] = ("top1", "params"), *, seed: int = 0
) -> pd.DataFrame:
    """Spearman and Kendall correlations (bootstrap 95% CIs) of each score with each predictor."""
    records = []
    for predictor in predictors:
        points = predictor_points(results, predictor)
        for score in SCORES:
            for method in ("spearman", "kendall"):
                corr = rank_correlation(points[predictor], points[score], method, seed=seed)
                records.append(
                    {
                        "predictor": predictor,
                        "score": score,
                        "method": method,
                        "coefficient": corr.coefficient,
                        "p_value": corr.p_value,
                        "ci_low": corr.low,
                        "ci_high": corr.high,
                        "n": corr.n,
                    }
                )
    return pd.DataFrame.from_records(records)


# -- dense adaptation -----------------------------------------------------------------------------------


def dense_adaptation(results: pd.DataFrame) -> pd.DataFrame:
    """Per backbone and initialization: mean ± std of each score, and its change against classification."""
    rows = model_rows(results)
    records = []
    for (backbone, init), group in rows.groupby(["backbone", "init"], sort=False):
        record: dict[str, Any] = {"backbone": backbone, "family": group["family"].iloc[0], "init": init}
        for score in SCORES:
            record[f"{score}_mean"], record[f"{score}_std"] = mean_std(group[score])
        records.append(record)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    for score in SCORES:
        base = table[table["init"] == "shapes-cls"].set_index("backbone")[f"{score}_mean"]
        table[f"{score}_vs_cls"] = table[f"{score}_mean"] - table["backbone"].map(base)
    return table


# -- instability diagnosis ------------------------------------------------------------------------------


@dataclass
class Flag:
    """One diagnosed problem: what (``kind``), which cells, a one-line reason and the numbers behind it."""

    kind: str  # "loc-collapse" | "diverged" | "seed-disagreement" | "no-signal"
    cells: list[str]
    backbone: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


def diagnose(
    results: pd.DataFrame,
    settings: DiagnosisSpec,
    losses: Mapping[str, Sequence[float]] | None = None,
) -> list[Flag]:
    """Localization collapses, diverged trainings and disagreeing seeds, each with its evidence."""
    flags = localization_collapses(results, settings) + no_signal(results)
    for cell, series in (losses or {}).items():
        flag = divergence(cell, series, settings, _backbone_of(results, cell))
        if flag is not None:
            flags.append(flag)
    flags.extend(seed_disagreements(results, settings))
    return flags


def _backbone_of(results: pd.DataFrame, cell: str) -> str:
    match = results.loc[results["cell_id"] == cell, "backbone"]
    return str(match.iloc[0]) if len(match) else "?"


def control_best(results: pd.DataFrame, score: str) -> float:
    """The best ``score`` any control reached (NaN without controls): a model at or below it sees nothing."""
    controls = results[(results["row_type"] != MODEL_ROW) & results[score].notna()]
    return float(controls[score].max()) if len(controls) else math.nan


def control_loc(results: pd.DataFrame) -> float:
    return control_best(results, "loc")


def references(results: pd.DataFrame, row: pd.Series) -> tuple[float, float]:
    """Median Loc and VQA of the *other* backbones in the same setting (NaN when there are none)."""
    rows = model_rows(results)
    same = np.ones(len(rows), dtype=bool)
    for column in SETTING:
        same &= (rows[column] == row[column]).to_numpy()
    others = rows[same & (rows["backbone"] != row["backbone"]).to_numpy()]
    if others.empty:
        return math.nan, math.nan
    per_backbone = others.groupby("backbone")[["loc", "vqa"]].mean()
    return float(per_backbone["loc"].median()), float(per_backbone["vqa"].median())


def localization_collapses(results: pd.DataFrame, settings: DiagnosisSpec) -> list[Flag]:
    """Runs whose Loc is near zero (or at control level) or far below the other backbones, VQA intact"""
    flags = []
    floor_from_controls = control_loc(results)
    for _, row in model_rows(results).iterrows():
        ref_loc, ref_vqa = references(results, row)
        reasons = []
        if row["loc"] < settings.loc_floor:
            reasons.append(f"Loc {row['loc']:.1f} < floor {settings.loc_floor:g}")
        if not math.isnan(floor_from_controls) and row["loc"] <= floor_from_controls:
            reasons.append(f"Loc {row['loc']:.1f} ≤ best control Loc {floor_from_controls:.1f}")
        if not math.isnan(ref_loc) and row["loc"] < settings.loc_ratio * ref_loc:
            reasons.append(f"Loc {row['loc']:.1f} < {settings.loc_ratio:g} × other backbones' {ref_loc:.1f}")
        if not reasons:
            continue
        vqa_holds = (math.isnan(ref_vqa) or row["vqa"] >= settings.vqa_hold * ref_vqa) and not (
            row["vqa"] <= control_best(results, "vqa")  # NaN compares False: no controls, no constraint
        )
        if not vqa_holds:
            continue  # everything failed (see no_signal), not a localization collapse
        flags.append(
            Flag(
                "loc-collapse",
                [row["cell_id"]],
                row["backbone"],
                "; ".join(reasons) + f" while VQA holds ({row['vqa']:.1f})",
                {
                    "loc": float(row["loc"]),
                    "vqa": float(row["vqa"]),
                    "reference_loc": ref_loc,
                    "reference_vqa": ref_vqa,
                    "control_loc": floor_from_controls,
                    "seed": int(row["seed"]),
                    "init": row["init"],
                },
            )
        )
    return flags


def no_signal(results: pd.DataFrame) -> list[Flag]:
    """Runs at or below the best control on both VQA and Loc: the model learned nothing from the image."""
    best_vqa, best_loc = control_best(results, "vqa"), control_best(results, "loc")
    if math.isnan(best_vqa) or math.isnan(best_loc):
        return []
    flags = []
    for _, row in model_rows(results, main_only=False).iterrows():
        if row["vqa"] <= best_vqa and not row["loc"] > best_loc:
            flags.append(
                Flag(
                    "no-signal",
                    [row["cell_id"]],
                    row["backbone"],
                    f"VQA {row['vqa']:.1f} ≤ best control {best_vqa:.1f} and Loc {row['loc']:.1f} ≤ "
                    f"best control {best_loc:.1f}: nothing learned beyond the answer prior",
                    {
                        "vqa": float(row["vqa"]),
                        "loc": float(row["loc"]),
                        "control_vqa": best_vqa,
                        "control_loc": best_loc,
                    },
                )
            )
    return flags


def divergence(cell: str, losses: Sequence[float], settings: DiagnosisSpec, backbone: str = "?") -> Flag | None:
    """A non-finite loss, or a step whose loss exceeds ``loss_spike`` × the running median before it."""
    values = np.asarray(list(losses), dtype=float)
    if values.size == 0:
        return None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        step = int(bad[0])
        return Flag(
            "diverged",
            [cell],
            backbone,
            f"non-finite loss at step {step}",
            {"step": step, "value": str(values[step]), "steps": int(values.size)},
        )
    window = settings.loss_window
    for step in range(max(3, window // 2), values.size):
        baseline = float(np.median(values[max(0, step - window) : step]))
        if baseline > 0 and values[step] > settings.loss_spike * baseline:
            return Flag(
                "diverged",
                [cell],
                backbone,
                f"loss spike at step {step}: {values[step]:.3g} > {settings.loss_spike:g} × median {baseline:.3g}",
                {"step": step, "value": float(values[step]), "running_median": baseline},
            )
    return None


def seed_disagreements(results: pd.DataFrame, settings: DiagnosisSpec) -> list[Flag]:
    """Cells whose seeds spread more than ``seed_range`` points in Loc or VQA."""
    flags = []
    rows = model_rows(results, main_only=False)
    for key, group in rows.groupby(list(CELL), sort=False):
        if group["seed"].nunique() < 2:
            continue
        for score in ("loc", "vqa"):
            spread = float(group[score].max() - group[score].min())
            if spread > settings.seed_range:
                by_seed = {int(s): float(v) for s, v in zip(group["seed"], group[score], strict=True)}
                flags.append(
                    Flag(
                        "seed-disagreement",
                        list(group["cell_id"]),
                        key[0],
                        f"{score.upper()} spreads {spread:.1f} points over seeds {sorted(by_seed)}",
                        {"score": score, "spread": spread, "by_seed": by_seed},
                    )
                )
    return flags


def flags_table(flags: Sequence[Flag]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"kind": f.kind, "backbone": f.backbone, "cells": ", ".join(f.cells), "evidence": f.message} for f in flags],
        columns=["kind", "backbone", "cells", "evidence"],
    )


# -- stabilization ablation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AblationRequest:
    """Rerun the cell ``parent`` with ``connector`` and ``resize_strategy`` as ablation ``variant``."""

    parent: str
    variant: str
    connector: str
    resize_strategy: str


def plan_ablations(results: pd.DataFrame, flags: Sequence[Flag], settings: StabilizationSpec) -> list[AblationRequest]:
    """For each cell to stabilize, the 3-layer-connector, square-geometry and combined reruns it lacks."""
    if not settings.enabled:
        return []
    rows = model_rows(results).set_index("cell_id", drop=False)
    targets = [cell for flag in flags if flag.kind in ABLATED_FLAGS for cell in flag.cells]
    if settings.apply_to == "dense":
        targets += list(rows.loc[rows["init"].isin(DENSE_INITS), "cell_id"])
    elif settings.apply_to == "all":
        targets += list(rows["cell_id"])
    requests: list[AblationRequest] = []
    seen: set[tuple[str, str, str]] = set()
    for cell in dict.fromkeys(targets):
        if cell not in rows.index:
            continue  # an ablation cell flagged itself: not ablated again
        parent = rows.loc[cell]
        for variant in settings.variants:
            connector = settings.connector if variant in ("connector", "both") else parent["connector"]
            resize = settings.resize_strategy if variant in ("geometry", "both") else parent["resize_strategy"]
            combination = (cell, connector, resize)
            if (connector, resize) == (parent["connector"], parent["resize_strategy"]) or combination in seen:
                continue  # the parent already is this variant, or another variant already covers it
            seen.add(combination)
            requests.append(AblationRequest(cell, variant, connector, resize))
    return requests


def ablation_outcomes(
    results: pd.DataFrame, flags: Sequence[Flag], settings: StabilizationSpec, diagnosis: DiagnosisSpec
) -> pd.DataFrame:
    """Loc and VQA before/after each ablation variant, with a verdict per variant.

    ``recovered``: Loc back to ``recovered_ratio`` × the other backbones' Loc (or, without a reference, above
    the collapse floor); ``improved``: Loc rose but not that far; ``not recovered``: otherwise.
    """
    parents = model_rows(results).set_index("cell_id", drop=False)
    variants = model_rows(results, main_only=False)
    variants = variants[variants["variant"] != MAIN_VARIANT]
    collapsed = {cell for flag in flags if flag.kind == "loc-collapse" for cell in flag.cells}
    records = []
    for _, row in variants.iterrows():
        if row["parent"] not in parents.index:
            continue
        parent = parents.loc[row["parent"]]
        ref_loc, _ = references(results, parent)
        target = settings.recovered_ratio * ref_loc if not math.isnan(ref_loc) else diagnosis.loc_floor
        delta = float(row["loc"] - parent["loc"])
        if row["loc"] >= target and delta > 0:
            verdict = "recovered"
        elif delta > 0:
            verdict = "improved"
        else:
            verdict = "not recovered"
        records.append(
            {
                "backbone": parent["backbone"],
                "init": parent["init"],
                "seed": int(parent["seed"]),
                "parent": parent["cell_id"],
                "variant": row["variant"],
                "connector": row["connector"],
                "resize_strategy": row["resize_strategy"],
                "collapsed": parent["cell_id"] in collapsed,
                "loc_before": float(parent["loc"]),
                "loc_after": float(row["loc"]),
                "loc_delta": delta,
                "vqa_before": float(parent["vqa"]),
                "vqa_after": float(row["vqa"]),
                "reference_loc": ref_loc,
                "verdict": verdict,
            }
        )
    return pd.DataFrame.from_records(records)


# -- training logs --------------------------------------------------------------------------------------


def load_losses(results: pd.DataFrame) -> dict[str, list[float]]:
    """Per model cell, the ``loss`` of every step of its training log (``metrics.jsonl``), when present."""
    from ssmvlm.utils.io import iter_jsonl

    losses: dict[str, list[float]] = {}
    rows = results[(results["row_type"] == MODEL_ROW)]
    for _, row in rows.iterrows():
        log = row.get("train_log")
        if not isinstance(log, str) or not Path(log).is_file():
            continue
        values = [
            float(record["loss"]) if record["loss"] is not None else math.nan
            for record in iter_jsonl(log, tolerate_truncated_tail=True)
            if "loss" in record
        ]
        if values:
            losses[row["cell_id"]] = values
    return losses

"""The study report: ``report.md``, ``report.html`` (figures as base64 PNG), ``results.csv``, ``findings.json``.

Every claim carries its uncertainty: mean ± std over seeds with a 95% CI, correlations with bootstrap CIs,
the blind and prior controls beside the models, and the instability flags with the numbers behind them.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ssmvlm.study import analysis, findings
from ssmvlm.study.matrix import STAGES
from ssmvlm.study.spec import StudySpec
from ssmvlm.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

FIGURES_DIR = "figures"
SCORE_LABELS = {"vqa": "VQA", "loc": "Loc", "overall": "Overall"}
KIND_COLORS = {"ssm": "#1b9e77", "hybrid": "#d95f02", "transformer": "#7570b3", "cnn": "#e7298a"}
BENCH_COLUMNS = ("latency_ms", "throughput_img_s", "peak_memory_mib", "gflops")


@dataclass
class Section:
    title: str
    markdown: str  # the section body in Markdown (tables as pipe tables)
    figure: Path | None = None
    caption: str = ""


def write_report(
    out: str | Path, spec: StudySpec, results: pd.DataFrame, *, wall_seconds: float | None = None
) -> list[Path]:
    """Write the whole report under ``out``; returns the files written."""
    out = Path(out)
    figures = out / FIGURES_DIR
    figures.mkdir(parents=True, exist_ok=True)
    seed = spec.seeds[0] if spec.seeds else 0
    main = analysis.main_table(results, seed=seed)
    bench = load_bench(spec.bench_results)
    if not bench.empty and not main.empty:
        main = main.merge(bench, on=["backbone", "resolution"], how="left")
    controls = analysis.controls_table(results)
    correlations = analysis.predictor_correlations(results, seed=seed)
    dense = analysis.dense_adaptation(results)
    flags = analysis.diagnose(results, spec.diagnosis, analysis.load_losses(results))
    ablations = analysis.ablation_outcomes(results, flags, spec.stabilization, spec.diagnosis)
    found = findings.build_findings(results, spec, flags=flags, correlations=correlations)

    sections = [
        _overview(spec, results, wall_seconds),
        Section(
            "Main table",
            _main_markdown(main, controls, analysis.task_columns(results)),
            plot_scores(main, controls, figures / "scores.png"),
            "Weighted scores per backbone (bars: mean over seeds; whiskers: 95% CI); dashed lines: controls.",
        ),
        Section("Findings", _findings_markdown(found)),
        Section(
            "Does classification accuracy or size predict VLM quality?",
            _correlation_markdown(correlations),
            plot_predictors(results, correlations, figures / "predictors.png"),
            "VLM scores against pretraining top-1 and parameter count, one point per backbone.",
        ),
        Section(
            "Dense adaptation",
            _dense_markdown(dense),
            plot_dense(dense, figures / "dense_adaptation.png")
            if not dense.empty and dense["init"].nunique() > 1
            else None,
            "Classification vs detection vs segmentation initialization per backbone.",
        ),
        Section("Instability diagnosis", _flags_markdown(flags)),
        Section(
            "Stabilization ablation",
            _ablation_markdown(ablations, spec),
            plot_stabilization(ablations, figures / "stabilization.png") if not ablations.empty else None,
            "Loc before (main run) and after each stabilization variant.",
        ),
        Section("Failed runs", _failures_markdown(results)),
        Section("Compute", _compute_markdown(out)),
    ]
    csv_path = out / "results.csv"
    atomic_write_text(csv_path, results.to_csv(index=False))
    atomic_write_text(out / "main_table.csv", main.to_csv(index=False))
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, _markdown(spec, sections, out))
    atomic_write_text(html_path, _html(spec, sections))
    atomic_write_json(out / "findings.json", findings.to_json(found))
    written = [md_path, html_path, csv_path, out / "main_table.csv", out / "findings.json"]
    return written + [s.figure for s in sections if s.figure is not None]


# -- sections -------------------------------------------------------------------------------------------


def _overview(spec: StudySpec, results: pd.DataFrame, wall_seconds: float | None) -> Section:
    models = results[results["row_type"] == analysis.MODEL_ROW]
    done = int((models["status"] == "done").sum())
    lines = [
        f"- backbones: {', '.join(spec.backbones)}",
        f"- initializations: {', '.join(spec.initializations)}; seeds: {', '.join(map(str, spec.seeds))}",
        f"- resolutions: {', '.join(map(str, spec.resolutions))}; "
        f"resize: {', '.join(spec.resize_strategies)}; "
        f"connectors: {', '.join(spec.connectors)}; LLM: {spec.llm}; recipe: {spec.recipe.preset}",
        f"- evaluation: {', '.join(spec.eval.tasks)} (split {spec.eval.split}"
        + (f", limit {spec.eval.limit}" if spec.eval.limit else "")
        + ")",
        f"- evaluated model runs: {done} of {len(models)}",
        f"- report written {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}",
    ]
    if wall_seconds is not None:
        lines.append(f"- wall time of this invocation: {wall_seconds / 60:.1f} min")
    return Section("Study", "\n".join(lines))


def _main_markdown(main: pd.DataFrame, controls: pd.DataFrame, tasks: list[str]) -> str:
    if main.empty:
        return "No finished model runs."
    columns = ["backbone", "family", "kind", "params (M)", "tokens", "init"]
    varying = [c for c in ("resolution", "resize_strategy", "connector") if main[c].nunique() > 1]
    columns += [*varying, "seeds", *[t.removeprefix(analysis.TASK_PREFIX) for t in tasks]]
    columns += ["VQA", "Loc", "Overall", "top-1"] + [c for c in BENCH_COLUMNS if c in main]
    rows = []
    for _, row in main.iterrows():
        cells = [
            row["backbone"],
            row.get("family"),
            row.get("kind"),
            _millions(row.get("params")),
            _int(row.get("tokens")),
            row["init"],
            *[row[c] for c in varying],
            row["n_seeds"],
            *[_num(row[t]) for t in tasks],
            *[_score_cell(row, s) for s in analysis.SCORES],
            _num(row.get("top1")),
            *[_num(row[c]) for c in BENCH_COLUMNS if c in main],
        ]
        rows.append(cells)
    for _, control in controls.iterrows():
        rows.append(
            [
                f"*control: {control['control']}*",
                "",
                "",
                "",
                "",
                "",
                *["" for _ in varying],
                control["n"],
                *[_num(control.get(t)) for t in tasks],
                *[_num(control[f"{s}_mean"]) for s in analysis.SCORES],
                "",
                *["" for c in BENCH_COLUMNS if c in main],
            ]
        )
    note = (
        "\n\nScores are 0–100. Cells read mean ± std over seeds [95% CI]; the CI is a bootstrap over seeds "
        "(several seeds) or over evaluation examples (one seed). "
        "Controls: `blind` answers without the image, "
        "`prior` answers from the training answer prior; a model must beat both to be seeing anything."
    )
    return _pipe_table(columns, rows) + note


def _score_cell(row: pd.Series, score: str) -> str:
    mean, std = row[f"{score}_mean"], row[f"{score}_std"]
    low, high = row[f"{score}_ci_low"], row[f"{score}_ci_high"]
    text = f"{mean:.1f} ± {std:.1f}"
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{low:.1f}, {high:.1f}]"
    return text


_UNNUMBERED_FINDINGS = {"gate": "Gate", "separation": "Separation"}


def _findings_markdown(found: list[findings.Finding]) -> str:
    """The gate and the separation, then the numbered claims: each a bold verdict line and its evidence as bullets."""
    parts = []
    claims = 0
    for finding in found:
        label = _UNNUMBERED_FINDINGS.get(finding.key)
        if label is None:
            claims += 1
            label = f"{claims}. {finding.title}"
        verdict = f"**{label}: {finding.verdict}.**"
        if finding.below_gate:
            verdict += " *(The gate failed: this reading is drawn from noise.)*"
        parts.append(f"{verdict} {finding.summary}")
        if finding.details:
            parts.append("\n".join(f"- {line}" for line in finding.details))
    return "\n\n".join(parts) + (
        "\n\nA verdict is supported or contradicted only where a 95% CI lies wholly on one side of 0; "
        "the numbers are in `findings.json`."
    )


def _correlation_markdown(correlations: pd.DataFrame) -> str:
    if correlations.empty:
        return "No correlations: too few backbones."
    rows = [
        [
            r["predictor"],
            SCORE_LABELS[r["score"]],
            r["method"],
            _signed(r["coefficient"]),
            f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]",
            _num(r["p_value"], 3),
            int(r["n"]),
        ]
        for _, r in correlations.iterrows()
    ]
    n = int(correlations["n"].max()) if len(correlations) else 0
    caution = (
        f"\n\nWith n = {n} backbones the intervals are wide; a correlation whose CI spans 0 is not evidence either way."
        if n < 8
        else ""
    )
    return _pipe_table(["predictor", "score", "method", "coefficient", "95% CI", "p", "n"], rows) + caution


def _dense_markdown(dense: pd.DataFrame) -> str:
    if dense.empty or dense["init"].nunique() < 2:
        return "Only one initialization in this study: no dense-adaptation comparison."
    rows = [
        [
            r["backbone"],
            r["init"],
            *[f"{r[f'{s}_mean']:.1f} ± {r[f'{s}_std']:.1f}" for s in analysis.SCORES],
            *[_signed(r[f"{s}_vs_cls"], 1) for s in analysis.SCORES],
        ]
        for _, r in dense.iterrows()
    ]
    return _pipe_table(
        ["backbone", "init", "VQA", "Loc", "Overall", "ΔVQA vs cls", "ΔLoc vs cls", "ΔOverall vs cls"], rows
    )


def _flags_markdown(flags: list[analysis.Flag]) -> str:
    if not flags:
        return "No run collapsed, diverged or disagreed across seeds."
    rows = [[f.kind, f.backbone, ", ".join(f.cells), f.message] for f in flags]
    return _pipe_table(["flag", "backbone", "cells", "evidence"], rows)


def _ablation_markdown(ablations: pd.DataFrame, spec: StudySpec) -> str:
    settings = spec.stabilization
    if not settings.enabled:
        return "Stabilization ablation turned off in the spec."
    if ablations.empty:
        return f"No ablation runs (apply_to = {settings.apply_to}: " + (
            "no cell was flagged for stabilization)."
            if settings.apply_to == "flagged"
            else "no eligible cell finished)."
        )
    rows = [
        [
            r["backbone"],
            r["init"],
            r["seed"],
            r["variant"],
            f"{r['connector']}, {r['resize_strategy']}",
            "yes" if r["collapsed"] else "no",
            _num(r["loc_before"]),
            _num(r["loc_after"]),
            _signed(r["loc_delta"], 1),
            f"{r['vqa_before']:.1f} → {r['vqa_after']:.1f}",
            r["verdict"],
        ]
        for _, r in ablations.iterrows()
    ]
    note = (
        f"\n\nVariants: `connector` = {settings.connector} (3-layer MLP), "
        f"`geometry` = {settings.resize_strategy} "
        f"(fit and pad right/bottom to a square canvas), `both`. Recovered = Loc back to "
        f"{settings.recovered_ratio:g} × the other backbones' Loc."
    )
    return (
        _pipe_table(
            [
                "backbone",
                "init",
                "seed",
                "variant",
                "connector, geometry",
                "collapsed",
                "Loc before",
                "Loc after",
                "ΔLoc",
                "VQA",
                "verdict",
            ],
            rows,
        )
        + note
    )


def _failures_markdown(results: pd.DataFrame) -> str:
    failed = results[(results["row_type"] == analysis.MODEL_ROW) & (results["status"] != "done")]
    if failed.empty:
        return "None."
    rows = [
        [
            r["backbone"],
            r["init"],
            r["seed"],
            r.get("variant"),
            r["status"],
            r.get("error", ""),
            r.get("error_file", ""),
        ]
        for _, r in failed.iterrows()
    ]
    return _pipe_table(["backbone", "init", "seed", "variant", "status", "error", "log"], rows)


def _compute_markdown(out: Path) -> str:
    """Seconds spent per stage and per backbone, from the runner's event log (cells run in this directory)."""
    from ssmvlm.utils.io import iter_jsonl

    records = []
    for event in iter_jsonl(out / "events.jsonl", tolerate_truncated_tail=True):
        if event.get("status") != "done":
            continue
        cell_file = out / "runs" / event["cell"] / "cell.json"
        labels = read_json(cell_file).get("labels", {}) if cell_file.is_file() else {}
        records.append(
            {
                "stage": event["cell"].split("/")[0],
                "backbone": labels.get("backbone", "(shared)"),
                "seconds": event["seconds"],
            }
        )
    if not records:
        return "No run time recorded (every cell was already complete)."
    frame = pd.DataFrame.from_records(records)
    pivot = frame.pivot_table(index="backbone", columns="stage", values="seconds", aggfunc="sum", fill_value=0.0)
    stages = [s for s in STAGES if s in pivot.columns]
    rows = [[backbone, *[f"{pivot.loc[backbone, s]:.0f}" for s in stages]] for backbone in pivot.index]
    rows.append(["total", *[f"{pivot[s].sum():.0f}" for s in stages]])
    return _pipe_table(["backbone", *[f"{s} (s)" for s in stages]], rows) + (
        "\n\nSeconds of the cells that ran (all invocations of this study directory; cached cells cost nothing)."
    )


# -- figures --------------------------------------------------------------------------------------------


def plot_scores(main: pd.DataFrame, controls: pd.DataFrame, path: Path) -> Path | None:
    if main.empty:
        return None
    labels = [_row_label(r, main) for _, r in main.iterrows()]
    x = np.arange(len(main))
    width = 0.26
    figure = Figure(figsize=(max(7.5, 1.3 * len(main) + 4), 4.2), layout="constrained")
    axes = figure.subplots()
    colors = {"vqa": "#4c72b0", "loc": "#dd8452", "overall": "#55a868"}
    for offset, score in zip((-width, 0.0, width), analysis.SCORES, strict=True):
        means = main[f"{score}_mean"].to_numpy(dtype=float)
        low = np.nan_to_num(means - main[f"{score}_ci_low"].to_numpy(dtype=float), nan=0.0)
        high = np.nan_to_num(main[f"{score}_ci_high"].to_numpy(dtype=float) - means, nan=0.0)
        axes.bar(
            x + offset,
            means,
            width,
            yerr=[low, high],
            capsize=3,
            label=SCORE_LABELS[score],
            color=colors[score],
        )
    styles = iter(["--", ":", "-."])
    for _, control in controls.iterrows():
        style = next(styles, "--")
        for score in ("vqa", "loc"):
            value = control[f"{score}_mean"]
            if not math.isnan(value):
                axes.axhline(
                    value,
                    color=colors[score],
                    linestyle=style,
                    linewidth=1,
                    label=f"{control['control']} control ({SCORE_LABELS[score]})",
                )
    axes.set_xticks(x, labels, rotation=20, ha="right")
    axes.set_ylabel("score (0–100)")
    axes.set_title("VLM scores per vision backbone (95% CI)")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def plot_predictors(results: pd.DataFrame, correlations: pd.DataFrame, path: Path) -> Path | None:
    predictors = [("top1", "pretraining top-1 (%)"), ("params", "parameters (M)")]
    available = [(p, label) for p, label in predictors if not analysis.predictor_points(results, p)[p].isna().all()]
    points_any = [analysis.predictor_points(results, p) for p, _ in available]
    if not available or all(len(p) == 0 for p in points_any):
        return None
    figure = Figure(figsize=(5.0 * len(available), 4.2 * 2), layout="constrained")
    grid = figure.subplots(2, len(available), squeeze=False)
    for column, ((predictor, label), points) in enumerate(zip(available, points_any, strict=True)):
        scale = 1e-6 if predictor == "params" else 1.0
        for row, score in enumerate(("overall", "loc")):
            axes = grid[row][column]
            for _, point in points.iterrows():
                color = KIND_COLORS.get(str(point.get("kind")), "#666666")
                axes.scatter(point[predictor] * scale, point[score], color=color, s=40)
                axes.annotate(
                    point["backbone"],
                    (point[predictor] * scale, point[score]),
                    fontsize=8,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
            selected = correlations[(correlations["predictor"] == predictor) & (correlations["score"] == score)]
            text = "\n".join(
                f"{r['method']}: {_signed(r['coefficient'])} [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
                for _, r in selected.iterrows()
            )
            axes.text(
                0.02,
                0.98,
                text + f"\nn = {len(points)}",
                transform=axes.transAxes,
                va="top",
                fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"},
            )
            axes.set_xlabel(label)
            axes.set_ylabel(f"{SCORE_LABELS[score]} score (0–100)")
            axes.grid(alpha=0.3)
    handles = [
        grid[0][0].scatter([], [], color=color, label=kind)
        for kind, color in KIND_COLORS.items()
        if kind in set(points_any[0]["kind"].astype(str))
    ]
    if handles:
        grid[0][0].legend(handles=handles, fontsize=8, loc="lower right", title="kind")
    figure.suptitle("Predictors of VLM quality (Spearman / Kendall, bootstrap 95% CI)")
    return _save(figure, path)


def plot_dense(dense: pd.DataFrame, path: Path) -> Path | None:
    backbones = list(dict.fromkeys(dense["backbone"]))
    inits = list(dict.fromkeys(dense["init"]))
    figure = Figure(figsize=(max(6.0, 1.4 * len(backbones) + 2), 4.0 * 2), layout="constrained")
    grid = figure.subplots(2, 1)
    width = 0.8 / len(inits)
    x = np.arange(len(backbones))
    for axes, score in zip(grid, ("loc", "overall"), strict=True):
        for index, init in enumerate(inits):
            subset = dense[dense["init"] == init].set_index("backbone").reindex(backbones)
            axes.bar(
                x + (index - (len(inits) - 1) / 2) * width,
                subset[f"{score}_mean"],
                width,
                yerr=subset[f"{score}_std"].fillna(0.0),
                capsize=3,
                label=init,
            )
        axes.set_xticks(x, backbones, rotation=15, ha="right")
        axes.set_ylabel(f"{SCORE_LABELS[score]} score (0–100)")
        axes.legend(title="initialization", fontsize=8)
        axes.grid(axis="y", alpha=0.3)
    grid[0].set_title("Dense adaptation: classification vs detection vs segmentation initialization (± std)")
    return _save(figure, path)


def plot_stabilization(ablations: pd.DataFrame, path: Path) -> Path | None:
    groups = list(dict.fromkeys(ablations["parent"]))
    variants = list(dict.fromkeys(ablations["variant"]))
    bars = ["before", *variants]
    width = 0.8 / len(bars)
    x = np.arange(len(groups))
    figure = Figure(figsize=(max(6.0, 1.5 * len(groups) + 2), 4.2), layout="constrained")
    axes = figure.subplots()
    labels = []
    for index, name in enumerate(bars):
        values = []
        for parent in groups:
            rows = ablations[ablations["parent"] == parent]
            if name == "before":
                values.append(rows["loc_before"].iloc[0])
            else:
                match = rows[rows["variant"] == name]
                values.append(match["loc_after"].iloc[0] if len(match) else np.nan)
        axes.bar(x + (index - (len(bars) - 1) / 2) * width, values, width, label=name)
    for parent in groups:
        row = ablations[ablations["parent"] == parent].iloc[0]
        labels.append(f"{row['backbone']}\n{row['init']} s{row['seed']}")
    references = ablations.groupby("parent", sort=False)["reference_loc"].first().reindex(groups)
    axes.scatter(x, references, marker="_", s=600, color="black", label="other backbones' Loc", zorder=3)
    axes.set_xticks(x, labels, fontsize=8)
    axes.set_ylabel("Loc score (0–100)")
    axes.set_title("Stabilization: Loc before and after each variant")
    axes.legend(fontsize=8)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _row_label(row: pd.Series, main: pd.DataFrame) -> str:
    label = str(row["backbone"])
    if main["init"].nunique() > 1:
        label += f"\n{row['init']}"
    for column in ("resolution", "resize_strategy", "connector"):
        if main[column].nunique() > 1:
            label += f"\n{row[column]}"
    return label


# -- efficiency -----------------------------------------------------------------------------------------


def load_bench(path: str | Path | None) -> pd.DataFrame:
    """Encoder measurements from ``ssmvlm bench`` (``encoders.json``, or a folder holding it), if given."""
    if path is None:
        return pd.DataFrame()
    path = Path(path)
    if path.is_dir():
        path = path / "encoders.json"
    data = read_json(path)
    rows = [r for r in data.get("rows", []) if r.get("status", "ok") == "ok"]
    table = pd.DataFrame.from_records(rows)
    if table.empty:
        return table
    return table[["backbone", "resolution", *[c for c in BENCH_COLUMNS if c in table]]]


# -- rendering ------------------------------------------------------------------------------------------


def _markdown(spec: StudySpec, sections: list[Section], out: Path) -> str:
    parts = [f"# Study report: {spec.name}\n"]
    for section in sections:
        parts.append(f"## {section.title}\n\n{section.markdown}\n")
        if section.figure is not None:
            parts.append(f"![{section.caption}]({section.figure.relative_to(out).as_posix()})\n\n*{section.caption}*\n")
    parts.append(
        "Files: `results.csv` (every run and control), `main_table.csv`, `findings.json`, `figures/`, "
        "`runs/<stage>/<id>/`.\n"
    )
    return "\n".join(parts)


def _html(spec: StudySpec, sections: list[Section]) -> str:
    body = [f"<h1>Study report: {html.escape(spec.name)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body.append(_markdown_to_html(section.markdown))
        if section.figure is not None:
            encoded = base64.b64encode(section.figure.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(section.caption)}">'
                f"<figcaption>{html.escape(section.caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "td:first-child{text-align:left}img{max-width:100%}figcaption{color:#555;font-size:0.9em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(spec.name)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _markdown_to_html(text: str) -> str:
    """The small Markdown subset the sections use: pipe tables, bullet lists, paragraphs, `code`, *em*."""
    blocks, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("|"):
            table = []
            while index < len(lines) and lines[index].startswith("|"):
                table.append([c.strip() for c in lines[index].strip("|").split("|")])
                index += 1
            header, rows = table[0], table[2:]
            head = "".join(f"<th>{_inline(c)}</th>" for c in header)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        if line.startswith("- "):
            items = []
            while index < len(lines) and lines[index].startswith("- "):
                items.append(f"<li>{_inline(lines[index][2:])}</li>")
                index += 1
            blocks.append(f"<ul>{''.join(items)}</ul>")
            continue
        if line.strip():
            blocks.append(f"<p>{_inline(line)}</p>")
        index += 1
    return "\n".join(blocks)


def _inline(text: str) -> str:
    import re

    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)  # before *em*, which it would split
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", escaped)


def _pipe_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return ("" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)).replace(
            "|", "/"
        )

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: Any, digits: int = 1) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(number) else f"{number:.{digits}f}"


def _signed(value: Any, digits: int = 2) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "–" if math.isnan(number) else f"{number:+.{digits}f}"


def _millions(value: Any) -> str:
    try:
        return f"{float(value) / 1e6:.2f}"
    except (TypeError, ValueError):
        return ""


def _int(value: Any) -> str:
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return ""

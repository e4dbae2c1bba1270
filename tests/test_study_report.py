"""The report from a synthetic results table: every section, every figure, embedded images, the CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from test_study_analysis import collapse_table, make_row, table

from ssmvlm.study.report import write_report
from ssmvlm.study.spec import StudySpec


def test_full_report_from_synthetic_table(tmp_path: Path) -> None:
    rows = [collapse_table()]
    for init, shift in (("shapes-det", 6.0), ("shapes-seg", 3.0)):
        rows.append(table([make_row(b, 65 + shift, 45 + shift, init=init) for b in ("mambavision_nano", "vit_nano")]))
    parent = "vit_nano-shapes-cls-0-main"
    rows.append(table([make_row("vit_nano", 67, 48, variant="both", parent=parent, connector="fused-gelu-mlp")]))
    results = pd.concat(rows, ignore_index=True)
    spec = StudySpec(name="synthetic", backbones=sorted(set(results["backbone"]) - {"blind"}))
    files = write_report(tmp_path, spec, results, wall_seconds=90.0)

    names = {path.name for path in files}
    assert {"report.md", "report.html", "results.csv", "main_table.csv"} <= names
    assert {"scores.png", "predictors.png", "dense_adaptation.png", "stabilization.png"} <= names
    for path in files:
        assert path.is_file() and path.stat().st_size > 0
    markdown = (tmp_path / "report.md").read_text()
    for heading in (
        "Main table",
        "Does classification accuracy",
        "Dense adaptation",
        "Instability diagnosis",
        "Stabilization ablation",
        "Failed runs",
    ):
        assert f"## {heading}" in markdown
    assert "| vit_nano | shapes-det | 71.0 ± 0.0 | 51.0 ± 0.0 | 67.0 ± 0.0 | +3.0 | +49.5 |" in markdown  # Δ vs cls
    assert "loc-collapse" in markdown and "| recovered |" in markdown and "1.5 min" in markdown
    html = (tmp_path / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 4 and "<table>" in html
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(results)

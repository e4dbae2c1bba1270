"""Findings on synthetic results tables: the gate and each claim's verdict, effect size and CI; no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_study_analysis import collapse_table, make_row, table

from ssmvlm.study import analysis, findings
from ssmvlm.study.report import write_report
from ssmvlm.study.spec import DiagnosisSpec, StabilizationSpec, StudySpec

SPEC = StudySpec(name="synthetic")


def run(backbone: str, vqa: float, loc: float, *, width: float = 4.0, kind: str | None = None, **extra: Any) -> dict:
    """A model row with evaluation CIs ± ``width`` on every score (one-seed cells need them for a CI)."""
    row = make_row(backbone, vqa, loc, **extra)
    if kind is not None:
        row["kind"] = kind
    for score in analysis.SCORES:
        row[f"{score}_ci_low"], row[f"{score}_ci_high"] = row[score] - width, row[score] + width
    return row


def control(vqa: float, loc: float, *, width: float = 2.0, seed: int = 0) -> dict:
    row = run("blind", vqa, loc, width=width, seed=seed)
    return {**row, "row_type": "blind", "cell_id": f"blind-{seed}"}


def seeds(backbone: str, vqa: float, loc: float, *, spread: float = 1.0, **extra: Any) -> list[dict]:
    """Three seeds around (vqa, loc): the CIs come from a bootstrap over them."""
    return [run(backbone, vqa + d * spread, loc + d * spread, seed=s, **extra) for s, d in enumerate((-1, 0, 1))]


def by_key(results: pd.DataFrame, spec: StudySpec = SPEC) -> dict[str, findings.Finding]:
    return {f.key: f for f in findings.build_findings(results, spec)}


def clear_run(ssm: tuple[float, float], transformer: tuple[float, float]) -> pd.DataFrame:
    rows = [
        *seeds("vmamba_nano", *ssm),
        *seeds("vim_nano", ssm[0] - 2, ssm[1] - 2, kind="ssm"),
        *seeds("vit_nano", *transformer),
        *seeds("swin_nano", transformer[0] - 2, transformer[1] - 2),
        *seeds("mambavision_nano", 62, 40),  # a hybrid: reported apart from the SSMs
        *seeds("convnext_nano", 50, 20),  # a CNN: left out
        *[control(35, 1, seed=s) for s in range(3)],
    ]
    return table(rows)


# -- gate and claim 1 -----------------------------------------------------------------------------------


def test_ssm_clearly_above_transformers_is_supported() -> None:
    found = by_key(clear_run(ssm=(72, 50), transformer=(60, 30)))
    assert found["gate"].verdict == findings.PASSED
    claim = found["ssm-vs-transformer"]
    assert claim.verdict == findings.SUPPORTED and not claim.below_gate
    best = claim.numbers["vqa"]["best_difference"]
    assert best["estimate"] == pytest.approx(12.0) and best["low"] > 0 and best["source"] == "seeds"
    assert claim.numbers["loc"]["best_ssm"] == "vmamba_nano"
    assert claim.numbers["loc"]["mean_difference"]["estimate"] == pytest.approx(20.0)  # (50+48)/2 − (30+28)/2
    text = "\n".join(claim.details)
    assert "Hybrids (mambavision_nano)" in text and "CNNs (convnext_nano)" in text
    assert "hybrid_vs_transformer" in claim.numbers


def test_transformer_clearly_above_contradicts() -> None:
    claim = by_key(clear_run(ssm=(60, 30), transformer=(72, 50)))["ssm-vs-transformer"]
    assert claim.verdict == findings.CONTRADICTED and "contradicts" in claim.summary


def test_overlapping_cis_are_inconclusive_and_fail_the_gate() -> None:
    rows = [
        run("vmamba_nano", 46, 6, width=6.0),
        run("vit_nano", 44, 5, width=6.0),
        control(42, 4, width=3.0),
    ]
    found = by_key(table(rows))
    gate = found["gate"]
    assert gate.verdict == findings.FAILED and "drawn from noise" in gate.summary
    assert gate.numbers["vqa"]["clearly_above"] is False
    claim = found["ssm-vs-transformer"]
    assert claim.verdict == findings.INCONCLUSIVE and "inconclusive" in claim.summary and claim.below_gate
    best = claim.numbers["vqa"]["best_difference"]
    assert best["low"] < 0 < best["high"] and best["source"] == "examples"  # one seed: evaluation CIs
    assert "not evidence of equality" in claim.summary
    assert not found["dense-adaptation"].below_gate  # nothing measured, nothing to discount


def test_no_controls_and_missing_kinds_are_not_measured() -> None:
    found = by_key(table([run("vmamba_nano", 70, 50), run("mambavision_nano", 60, 40)]))
    assert found["gate"].verdict == findings.NOT_MEASURED
    assert found["ssm-vs-transformer"].verdict == findings.NOT_MEASURED


def test_one_seed_without_ci_has_no_interval() -> None:
    rows = table([make_row("vmamba_nano", 80, 60), make_row("vit_nano", 40, 10)])  # no CI columns at all
    claim = by_key(rows)["ssm-vs-transformer"]
    assert claim.verdict == findings.INCONCLUSIVE
    assert claim.numbers["vqa"]["best_difference"]["source"] == "none"


# -- claim 2: dense adaptation ---------------------------------------------------------------------------


def test_dense_adaptation_not_measured_with_one_initialization() -> None:
    claim = by_key(clear_run(ssm=(72, 50), transformer=(60, 30)))["dense-adaptation"]
    assert claim.verdict == findings.NOT_MEASURED and "Not measured in this run" in claim.summary


def test_dense_adaptation_per_backbone_and_pooled() -> None:
    rows = []
    for backbone in ("vmamba_nano", "vit_nano", "swin_nano"):
        rows += seeds(backbone, 60, 30)
        rows += seeds(backbone, 66, 40, init="shapes-det")
        rows += seeds(backbone, 54, 30, init="shapes-seg")
    claim = by_key(table(rows))["dense-adaptation"]
    pooled = claim.numbers["shapes-det"]["pooled"]
    assert pooled["loc"]["estimate"] == pytest.approx(10.0) and pooled["loc"]["low"] > 0
    assert set(claim.numbers["shapes-det"]["per_backbone"]) == {"vmamba_nano", "vit_nano", "swin_nano"}
    assert claim.numbers["shapes-seg"]["pooled"]["overall"]["high"] < 0
    assert claim.verdict == findings.INCONCLUSIVE  # det helps, seg hurts: the two disagree
    assert "shapes-det pooled ΔOverall above 0" in claim.summary
    only_det = table([r for r in rows if r["init"] != "shapes-seg"])
    assert by_key(only_det)["dense-adaptation"].verdict == findings.SUPPORTED


# -- claim 3: predictors ---------------------------------------------------------------------------------

BACKBONES = ("vmamba_nano", "vim_nano", "mambavision_nano", "vit_nano", "swin_nano", "maxvit_nano")


def predictor_rows(related: bool, n: int = len(BACKBONES)) -> pd.DataFrame:
    # Scores in a fixed order unrelated to top-1 (Spearman ≈ 0), or rising with it.
    unrelated = [3, 5, 0, 4, 1, 2]
    rows = []
    for i, backbone in enumerate(BACKBONES[:n]):
        level = i if related else unrelated[i]
        rows += seeds(backbone, 50 + 3 * level, 20 + 3 * level, top1=40.0 + 5 * i, params=1e6 * (1 + i % 2))
    return table(rows)


def test_predictor_ci_excluding_zero_contradicts_the_claim() -> None:
    claim = by_key(predictor_rows(related=True))["predictors"]
    assert claim.verdict == findings.CONTRADICTED
    assert claim.numbers["top1"]["loc"]["ci_low"] > 0 and "pretraining top-1 → Loc" in claim.summary


def test_predictor_ci_spanning_zero_is_no_evidence_not_absence() -> None:
    claim = by_key(predictor_rows(related=False))["predictors"]
    top1 = claim.numbers["top1"]["overall"]
    assert top1["ci_low"] < 0 < top1["ci_high"] and top1["n"] == 6
    assert top1["reading"] == "no evidence of a relation in this run (n = 6)"
    assert claim.verdict == findings.INCONCLUSIVE and "not evidence that there is none" in claim.summary


def test_predictors_with_too_few_backbones() -> None:
    claim = by_key(predictor_rows(related=True, n=3))["predictors"]
    assert claim.verdict == findings.INCONCLUSIVE  # n = 3: a bootstrap CI excluding 0 would mean nothing
    assert claim.numbers["top1"]["vqa"]["reading"] == "too few points (n = 3) to tell"


# -- claim 4: collapse and recovery ---------------------------------------------------------------------

PARENT = "vit_nano-shapes-cls-0-main"


def with_cis(rows: pd.DataFrame, width: float = 3.0) -> pd.DataFrame:
    rows = rows.copy()
    for score in analysis.SCORES:
        rows[f"{score}_ci_low"], rows[f"{score}_ci_high"] = rows[score] - width, rows[score] + width
    return rows


def collapse_with_variants(*, siblings: list[float] | None = None) -> pd.DataFrame:
    variants = [
        run("vit_nano", 67, 48, width=3.0, variant="geometry", parent=PARENT, resize_strategy="letterbox-br"),
        run("vit_nano", 68, 1.0, width=3.0, variant="connector", parent=PARENT, connector="fused-gelu-mlp"),
    ]
    others = [run("vit_nano", 68, loc, width=3.0, seed=s) for s, loc in enumerate(siblings or [], start=1)]
    return pd.concat([with_cis(collapse_table()), table(variants + others)], ignore_index=True)


def test_collapse_recovered_by_a_variant_is_supported() -> None:
    claim = by_key(collapse_with_variants())["collapse-recovery"]
    assert claim.numbers["collapsed_cells"] == [PARENT]
    assert claim.verdict == findings.SUPPORTED and "geometry" in claim.summary
    geometry = claim.numbers["geometry"]
    assert (geometry["recovered"], geometry["n"]) == (1, 1) and geometry["loc_delta"]["estimate"] == pytest.approx(46.5)
    assert geometry["loc_delta"]["low"] > 0 and geometry["loc_vs_other_seeds"] is None
    assert claim.numbers["connector"]["recovered"] == 0
    assert "regression to the mean" in claim.summary


def test_recovery_no_better_than_other_seeds_is_inconclusive() -> None:
    claim = by_key(collapse_with_variants(siblings=[47.0, 50.0]))["collapse-recovery"]
    assert claim.verdict == findings.INCONCLUSIVE and "plain rerun may do as well" in claim.summary
    rerun = claim.numbers["geometry"]["loc_vs_other_seeds"]
    assert rerun["low"] < 0 < rerun["high"]


def test_no_collapse_or_no_ablation() -> None:
    calm = table([run("vmamba_nano", 70, 50), run("vit_nano", 66, 45)])
    claim = by_key(calm)["collapse-recovery"]
    assert claim.verdict == findings.NOT_MEASURED and "No collapse was flagged" in claim.summary
    off = StudySpec(name="off", stabilization=StabilizationSpec(enabled=False))
    claim = by_key(collapse_with_variants(), off)["collapse-recovery"]
    assert claim.verdict == findings.NOT_MEASURED and "Ablation not run" in claim.summary
    flags = analysis.diagnose(collapse_table(), DiagnosisSpec())
    claim = findings.collapse_recovery(collapse_table(), SPEC, flags)
    assert "Ablation not run for the collapsed cells" in claim.summary


# -- output ---------------------------------------------------------------------------------------------


def test_json_is_strict_and_report_places_findings_after_main_table(tmp_path: Path) -> None:
    results = collapse_with_variants()
    payload = findings.to_json(findings.build_findings(results, SPEC))
    json.dumps(payload, allow_nan=False)  # NaN became null
    assert [f["key"] for f in payload] == [
        "gate",
        "separation",
        "ssm-vs-transformer",
        "dense-adaptation",
        "predictors",
        "collapse-recovery",
    ]
    files = write_report(tmp_path, SPEC, results)
    assert tmp_path / "findings.json" in files
    assert json.loads((tmp_path / "findings.json").read_text())[5]["verdict"] == findings.SUPPORTED
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.index("## Main table") < markdown.index("## Findings") < markdown.index("## Does classification")
    assert "**Separation: " in markdown and "**4. Localization collapse and recovery" in markdown  # claims 1-4
    assert "<strong>Gate: " in (tmp_path / "report.html").read_text()


def test_an_evaluation_without_localization() -> None:
    rows = table([run("vmamba_nano", 70, float("nan")), run("vit_nano", 50, float("nan")), control(35, float("nan"))])
    found = by_key(rows)
    assert found["gate"].verdict == findings.PASSED and "Loc: not evaluated in this run" in found["gate"].details
    claim = found["ssm-vs-transformer"]
    assert claim.verdict == findings.INCONCLUSIVE  # the claim is about VQA and Loc: half of it is unmeasured
    assert "Loc: not evaluated in this run" in claim.details
    assert "Loc not evaluated in this run." in claim.summary


# -- separation -----------------------------------------------------------------------------------------


def test_separation_counts_the_pairs_whose_overall_cis_do_not_overlap() -> None:
    rows = [
        *seeds("maxvit_nano", 84, 30),
        *seeds("vmamba_nano", 83, 30),  # overlaps MaxViT: a ranking between them is not evidence
        *seeds("vit_nano", 62, 23),
        run("swin_nano", 64, 25, seed=0),  # one seed: its evaluation CI (± 4) overlaps neither of the top two
        *seeds("vmamba_nano", 50, 10, init="shapes-det"),  # alone in its setting: no pair
    ]
    sep = by_key(table(rows))["separation"]
    assert sep.verdict == "4 of 6 pairs apart"
    setting = sep.numbers["shapes-cls, 96 px, letterbox, gelu-mlp"]
    assert setting["pairs"] == 6 and setting["ci_sources"] == ["examples", "seeds"]
    assert sorted(map(tuple, setting["apart"])) == [
        ("maxvit_nano", "swin_nano"),
        ("maxvit_nano", "vit_nano"),
        ("vmamba_nano", "swin_nano"),
        ("vmamba_nano", "vit_nano"),
    ]
    assert "one-seed CI holds evaluation noise alone" in sep.summary
    assert len(sep.numbers) == 1  # the detection row's setting has one backbone
    lonely = by_key(table(seeds("vmamba_nano", 80, 30)))["separation"]
    assert lonely.verdict == findings.NOT_MEASURED

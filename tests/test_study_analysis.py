"""Analysis on synthetic score tables: statistics, correlations, instability diagnosis, ablation plans."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ssmvlm.study import analysis
from ssmvlm.study.spec import DiagnosisSpec, StabilizationSpec
from ssmvlm.study.stats import kendall_rows, mean_interval, mean_std, rank_correlation, spearman_rows

KINDS = {
    "vmamba_nano": "ssm",
    "mambavision_nano": "hybrid",
    "vit_nano": "transformer",
    "swin_nano": "transformer",
}


def make_row(backbone: str, vqa: float, loc: float, *, seed: int = 0, init: str = "shapes-cls", **extra: Any) -> dict:
    row = {
        "cell_id": extra.pop("cell_id", f"{backbone}-{init}-{seed}-{extra.get('variant', 'main')}"),
        "row_type": "model",
        "status": "done",
        "backbone": backbone,
        "family": backbone.split("_")[0],
        "kind": KINDS.get(backbone, "cnn"),
        "params": 3.0e6,
        "tokens": 36,
        "init": init,
        "seed": seed,
        "resolution": 96,
        "resize_strategy": "letterbox",
        "connector": "gelu-mlp",
        "variant": "main",
        "parent": None,
        "vqa": vqa,
        "loc": loc,
        "overall": 0.8 * vqa + 0.2 * loc,
        "top1": 50.0,
    }
    row.update(extra)
    return row


def table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows)


# -- statistics -----------------------------------------------------------------------------------------


def test_mean_std_and_mean_interval() -> None:
    values = [10.0, 12.0, 14.0, 20.0]
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert mean_std([5.0]) == (5.0, 0.0)
    first, again = mean_interval(values, seed=3), mean_interval(values, seed=3)
    assert first == again  # deterministic for a seed
    varied = np.random.default_rng(0).normal(50.0, 10.0, size=30)
    assert mean_interval(varied, seed=4) != mean_interval(varied, seed=3)
    assert first.low <= mean <= first.high and first.estimate == pytest.approx(mean)
    assert min(values) <= first.low and first.high <= max(values)
    single = mean_interval([7.0])
    assert (single.low, single.high) == (7.0, 7.0)


def test_bootstrap_matches_scipy_percentile_interval() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(50.0, 10.0, size=60)
    ours = mean_interval(values, resamples=4000, seed=1)
    theirs = scipy.stats.bootstrap(
        (values,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(1)
    ).confidence_interval
    standard_error = values.std(ddof=1) / math.sqrt(values.size)
    assert ours.low == pytest.approx(theirs.low, abs=0.15 * standard_error)
    assert ours.high == pytest.approx(theirs.high, abs=0.15 * standard_error)


def test_rank_correlations_match_scipy_with_ci() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0]
    spearman = rank_correlation(x, y, "spearman", seed=0)
    kendall = rank_correlation(x, y, "kendall", seed=0)
    assert spearman.coefficient == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
    assert spearman.p_value == pytest.approx(scipy.stats.spearmanr(x, y).pvalue)
    assert kendall.coefficient == pytest.approx(scipy.stats.kendalltau(x, y).statistic)
    for corr in (spearman, kendall):
        assert -1.0 <= corr.low <= corr.coefficient <= corr.high <= 1.0 and corr.n == 7
    assert rank_correlation(x, y, "kendall", seed=0) == kendall
    perfect = rank_correlation(x, [v * 3 for v in x], "spearman")
    assert (perfect.coefficient, perfect.low, perfect.high) == pytest.approx((1.0, 1.0, 1.0))
    assert math.isnan(rank_correlation([1.0, 2.0], [3.0, 4.0]).coefficient)  # n < 3


def test_vectorized_bootstrap_replicates_match_scipy() -> None:
    rng = np.random.default_rng(2)
    xs = rng.integers(0, 6, size=(20, 9)).astype(float)  # ties included
    ys = rng.normal(size=(20, 9))
    for row in range(20):
        expected_rho = scipy.stats.spearmanr(xs[row], ys[row]).statistic
        expected_tau = scipy.stats.kendalltau(xs[row], ys[row]).statistic
        assert spearman_rows(xs, ys)[row] == pytest.approx(expected_rho)
        assert kendall_rows(xs, ys)[row] == pytest.approx(expected_tau)


def test_main_table_mean_std_over_seeds() -> None:
    scores = [(60, 30), (62, 34), (64, 38)]
    rows = [make_row("vit_nano", vqa, loc, seed=seed) for seed, (vqa, loc) in enumerate(scores)]
    rows += [make_row("vmamba_nano", 70, 50, seed=0, vqa_ci_low=65.0, vqa_ci_high=75.0)]
    main = analysis.main_table(table(rows)).set_index("backbone")
    assert main.loc["vit_nano", "vqa_mean"] == pytest.approx(62.0)
    assert main.loc["vit_nano", "loc_std"] == pytest.approx(4.0)
    assert main.loc["vit_nano", "n_seeds"] == 3 and main.loc["vit_nano", "ci_source"] == "seeds"
    assert main.loc["vmamba_nano", "vqa_ci_low"] == 65.0  # one seed: the evaluation's own interval
    assert list(main.index) == ["vmamba_nano", "vit_nano"]  # best overall first


def test_predictor_correlations_use_one_point_per_backbone() -> None:
    top1 = {"vmamba_nano": 40.0, "mambavision_nano": 50.0, "vit_nano": 60.0, "swin_nano": 70.0}
    rows = [
        make_row(b, 50 + i, 10 * i, seed=s, top1=top1[b], params=1e6 * (4 - i))
        for i, b in enumerate(top1)
        for s in (0, 1)
    ]
    correlations = analysis.predictor_correlations(table(rows)).set_index(["predictor", "score", "method"])
    assert correlations.loc[("top1", "loc", "spearman"), "coefficient"] == pytest.approx(1.0)
    assert correlations.loc[("params", "loc", "kendall"), "coefficient"] == pytest.approx(-1.0)
    assert correlations.loc[("top1", "vqa", "spearman"), "n"] == 4


# -- instability diagnosis ------------------------------------------------------------------------------


def collapse_table() -> pd.DataFrame:
    return table(
        [
            make_row("vmamba_nano", 70, 55),
            make_row("mambavision_nano", 66, 50),
            make_row("vit_nano", 68, 1.5),  # collapsed: Loc ≈ 0, VQA holds
            make_row("swin_nano", 20, 2.0),  # everything failed: not a localization collapse
            make_row("vmamba_nano", 69, 20, init="shapes-det"),  # alone in its setting: floor only
            {**make_row("blind", 35, 0.5), "row_type": "blind", "cell_id": "blind-0"},
        ]
    )


def test_collapse_detector_flags_loc_collapse_with_evidence() -> None:
    flags = analysis.localization_collapses(collapse_table(), DiagnosisSpec())
    assert [f.backbone for f in flags] == ["vit_nano"]
    evidence = flags[0].evidence
    assert evidence["loc"] == 1.5 and evidence["control_loc"] == 0.5
    assert evidence["reference_loc"] == pytest.approx(50.0)  # median of the other backbones (55, 50, 2)
    assert "floor" in flags[0].message and "VQA holds" in flags[0].message


def test_collapse_detector_relative_to_other_backbones() -> None:
    rows = collapse_table()
    rows.loc[rows["backbone"] == "vit_nano", "loc"] = 20.0  # above the floor, but < 0.5 × 50
    flags = analysis.localization_collapses(rows, DiagnosisSpec())
    assert [f.backbone for f in flags] == ["vit_nano"] and "other backbones" in flags[0].message
    assert analysis.localization_collapses(rows, DiagnosisSpec(loc_ratio=0.3)) == []


def test_divergence_detector() -> None:
    settings = DiagnosisSpec(loss_spike=3.0, loss_window=10)
    smooth = list(np.linspace(5.0, 1.0, 50))
    assert analysis.divergence("c", smooth, settings) is None
    spike = [*smooth[:30], 12.0, *smooth[31:]]
    flag = analysis.divergence("c", spike, settings)
    assert flag is not None and flag.evidence["step"] == 30 and flag.evidence["value"] == 12.0
    nan_flag = analysis.divergence("c", [*smooth[:5], float("nan")], settings)
    assert nan_flag is not None and nan_flag.kind == "diverged" and nan_flag.evidence["step"] == 5


def test_seed_disagreement() -> None:
    rows = table([make_row("vit_nano", 60, loc, seed=s) for s, loc in enumerate([40.0, 42.0, 5.0])])
    flags = analysis.seed_disagreements(rows, DiagnosisSpec(seed_range=15.0))
    assert len(flags) == 1 and flags[0].evidence["spread"] == pytest.approx(37.0)
    assert flags[0].evidence["by_seed"] == {0: 40.0, 1: 42.0, 2: 5.0} and len(flags[0].cells) == 3
    assert analysis.seed_disagreements(rows, DiagnosisSpec(seed_range=40.0)) == []


def test_diagnose_reads_losses() -> None:
    rows = collapse_table()
    flags = analysis.diagnose(rows, DiagnosisSpec(), {"vmamba_nano-shapes-cls-0-main": [2.0, 1.0, float("inf")]})
    assert {f.kind for f in flags} == {"loc-collapse", "diverged"}


# -- stabilization ablation -----------------------------------------------------------------------------


def test_plan_ablations_variants_and_dedup() -> None:
    rows = collapse_table()
    flags = analysis.localization_collapses(rows, DiagnosisSpec())
    plan = analysis.plan_ablations(rows, flags, StabilizationSpec())
    assert [(r.parent, r.variant, r.connector, r.resize_strategy) for r in plan] == [
        ("vit_nano-shapes-cls-0-main", "connector", "fused-gelu-mlp", "letterbox"),
        ("vit_nano-shapes-cls-0-main", "geometry", "gelu-mlp", "letterbox-br"),
        ("vit_nano-shapes-cls-0-main", "both", "fused-gelu-mlp", "letterbox-br"),
    ]
    rows.loc[rows["backbone"] == "vit_nano", "connector"] = "fused-gelu-mlp"  # already the 3-layer MLP
    plan = analysis.plan_ablations(rows, flags, StabilizationSpec())
    assert [r.variant for r in plan] == ["geometry"]  # "connector" is the parent, "both" = "geometry"
    assert analysis.plan_ablations(rows, flags, StabilizationSpec(enabled=False)) == []
    dense = analysis.plan_ablations(rows, [], StabilizationSpec(apply_to="dense", variants=["both"]))
    assert [r.parent for r in dense] == ["vmamba_nano-shapes-det-0-main"]


def test_ablation_outcomes_verdicts() -> None:
    rows = collapse_table()
    parent = "vit_nano-shapes-cls-0-main"
    variants = [
        make_row("vit_nano", 67, 48, variant="both", parent=parent, connector="fused-gelu-mlp"),
        make_row("vit_nano", 68, 10, variant="connector", parent=parent, connector="fused-gelu-mlp"),
        make_row("vit_nano", 68, 1.0, variant="geometry", parent=parent, resize_strategy="letterbox-br"),
    ]
    rows = pd.concat([rows, table(variants)], ignore_index=True)
    flags = analysis.localization_collapses(rows, DiagnosisSpec())
    assert [f.backbone for f in flags] == ["vit_nano"]  # ablation rows are not diagnosed as main cells
    outcomes = analysis.ablation_outcomes(rows, flags, StabilizationSpec(), DiagnosisSpec()).set_index("variant")
    assert outcomes.loc["both", "verdict"] == "recovered"  # 48 ≥ 0.8 × 50
    assert outcomes.loc["connector", "verdict"] == "improved"
    assert outcomes.loc["geometry", "verdict"] == "not recovered"
    assert outcomes.loc["both", "loc_delta"] == pytest.approx(46.5) and outcomes["collapsed"].all()


def test_failed_and_control_rows_are_left_out() -> None:
    rows = collapse_table()
    rows.loc[rows["backbone"] == "mambavision_nano", "status"] = "failed"
    kept = analysis.model_rows(rows)
    assert set(kept["backbone"]) == {"vmamba_nano", "vit_nano", "swin_nano"}
    controls = analysis.controls_table(rows)
    assert list(controls["control"]) == ["blind"] and controls.loc[0, "loc_mean"] == 0.5


def test_no_signal_is_flagged_but_not_ablated() -> None:
    rows = pd.concat([collapse_table(), table([make_row("convnext_nano", 30, 0.3)])], ignore_index=True)
    flags = analysis.diagnose(rows, DiagnosisSpec())
    by_kind = {(f.kind, f.backbone) for f in flags}
    assert ("no-signal", "convnext_nano") in by_kind and ("loc-collapse", "convnext_nano") not in by_kind
    plan = analysis.plan_ablations(rows, flags, StabilizationSpec(variants=["both"]))
    assert [r.parent for r in plan] == ["vit_nano-shapes-cls-0-main"]

"""The report's findings: what this run shows for each of the paper's four claims, with effect sizes and CIs.

Pure functions from the results table (see :mod:`ssmvlm.study.analysis`) and the study spec to a list of
:class:`Finding`. First a gate (is the best model clearly above the controls?) and the separation (which backbone
pairs does the run tell apart?), then the four claims:

1. ``ssm-vs-transformer``: SSM encoders ≥ transformer encoders at matched initialization, on VQA and Loc.
2. ``dense-adaptation``: detection/segmentation initialization improves on classification initialization.
3. ``predictors``: pretraining top-1 and parameter count do not predict VLM quality.
4. ``collapse-recovery``: localization collapses, recovered by the 3-layer connector or square geometry.

Every difference carries a 95% percentile interval from one resampling scheme (:func:`difference`): each
compared unit (a backbone in a setting, or one run) is resampled on its own — its seeds bootstrapped when it has
several, else drawn from a normal whose spread matches its evaluation's CI (examples) — and the statistic is
recomputed from the resampled units. A verdict is ``supported`` or ``contradicted`` only when an interval lies
wholly on one side of 0; otherwise it is ``inconclusive``, in those words.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ssmvlm.eval.metrics import bootstrap_means
from ssmvlm.study import analysis
from ssmvlm.study.spec import StudySpec
from ssmvlm.study.stats import DEFAULT_RESAMPLES, mean_interval

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = "supported", "contradicted", "inconclusive", "not measured"
PASSED, FAILED = "passed", "failed"
CLAIM_SCORES: tuple[str, ...] = ("vqa", "loc")  # the paper's claims are about answering and localization
LABELS = {"vqa": "VQA", "loc": "Loc", "overall": "Overall"}
Z95 = 1.959963984540054  # a normal's 97.5% quantile: turns an evaluation's 95% CI width into a standard error
# Below 5 points no Spearman coefficient reaches p < 0.05 (exact test), so an interval from resampling so few
# points that excludes 0 is an artefact of the resampling, not evidence.
MIN_CORRELATION_POINTS = 5
PREDICTOR_LABELS = {"top1": "pretraining top-1", "params": "parameter count"}


@dataclass(frozen=True)
class Difference:
    """``estimate`` = statistic(a) − statistic(b) with a 95% CI; ``source``: where its uncertainty comes from."""

    estimate: float
    low: float
    high: float
    source: str  # "seeds" | "examples" | "seeds and examples" | "none" (a unit without any uncertainty)

    @property
    def sign(self) -> int:
        """+1 when the CI lies above 0, −1 when below, 0 when it spans 0 or is missing."""
        if math.isnan(self.low) or math.isnan(self.high):
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def as_text(self) -> str:
        if math.isnan(self.estimate):
            return "–"
        if math.isnan(self.low):
            return f"{self.estimate:+.1f} (no CI)"
        return f"{self.estimate:+.1f} [{self.low:+.1f}, {self.high:+.1f}]"


@dataclass
class Finding:
    """One claim's reading: ``verdict``, a one-paragraph ``summary``, ``details`` (bullets) and the numbers."""

    key: str  # "gate" | "separation" | "ssm-vs-transformer" | "dense-adaptation" | "predictors" | "collapse-recovery"
    title: str
    # supported | contradicted | inconclusive | not measured (gate: passed | failed | not measured; separation:
    # "N of M pairs apart" | not measured)
    verdict: str
    summary: str
    details: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    below_gate: bool = False  # the gate failed: the reading compares models that may not see the image


def build_findings(
    results: pd.DataFrame,
    spec: StudySpec,
    *,
    flags: Sequence[analysis.Flag] | None = None,
    correlations: pd.DataFrame | None = None,
) -> list[Finding]:
    """The gate, the separation, then the four claims in the paper's order. ``flags``/``correlations`` default to
    recomputing."""
    seed = spec.seeds[0] if spec.seeds else 0
    if flags is None:
        flags = analysis.diagnose(results, spec.diagnosis)
    if correlations is None:
        correlations = analysis.predictor_correlations(results, seed=seed)
    gate = gate_finding(results, seed=seed)
    claims = [
        ssm_vs_transformer(results, seed=seed),
        dense_adaptation(results, seed=seed),
        predictors(correlations),
        collapse_recovery(results, spec, flags, seed=seed),
    ]
    for claim in claims:
        claim.below_gate = gate.verdict == FAILED and claim.verdict != NOT_MEASURED
    return [gate, separation(results, seed=seed), *claims]


def to_json(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """The findings as JSON-ready dicts (NaN → null, so the file is strict JSON)."""
    return [_json_clean(asdict(finding)) for finding in findings]


# -- intervals ------------------------------------------------------------------------------------------


def unit_replicates(rows: pd.DataFrame, score: str, rng: np.random.Generator, resamples: int) -> tuple[np.ndarray, str]:
    """Resampled means of one unit's ``score``: its seeds bootstrapped (several rows), else normal draws.

    One run's draws have the standard error its evaluation CI implies (a bootstrap over examples): that holds
    evaluation noise only, not seed-to-seed variation. Without a CI the unit has no uncertainty: ``"none"``.
    """
    values = rows[score].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size >= 2:
        return bootstrap_means(values, rng, resamples), "seeds"
    if values.size == 1:
        row = rows[rows[score].notna()].iloc[0]
        low, high = (_float(row.get(f"{score}_ci_{end}")) for end in ("low", "high"))
        if math.isfinite(low) and math.isfinite(high):
            return rng.normal(values[0], (high - low) / (2 * Z95), size=resamples), "examples"
        return np.full(resamples, values[0]), "none"
    return np.full(resamples, math.nan), "none"


def difference(
    units_a: Sequence[pd.DataFrame],
    units_b: Sequence[pd.DataFrame],
    score: str,
    *,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> Difference:
    """Mean of the units' means in ``a`` minus that in ``b``, with a percentile CI over resampled units.

    Units are resampled independently; runs evaluated on the same examples are positively correlated, so for
    one-seed units the interval is conservative (wider than a paired bootstrap over examples would give).
    """
    if not units_a or not units_b:
        return Difference(math.nan, math.nan, math.nan, "none")
    rng = np.random.default_rng(seed)
    estimates, replicates, sources = [], [], set()
    for units in (units_a, units_b):
        means = [float(unit[score].mean()) for unit in units]
        drawn = [unit_replicates(unit, score, rng, resamples) for unit in units]
        estimates.append(float(np.mean(means)))
        replicates.append(np.mean([r for r, _ in drawn], axis=0))
        sources.update(source for _, source in drawn)
    estimate = estimates[0] - estimates[1]
    if "none" in sources or math.isnan(estimate):
        return Difference(estimate, math.nan, math.nan, "none")
    low, high = np.quantile(replicates[0] - replicates[1], [0.025, 0.975])
    source = "seeds and examples" if len(sources) > 1 else sources.pop()
    return Difference(estimate, float(low), float(high), source)


# -- the gate -------------------------------------------------------------------------------------------


def gate_finding(results: pd.DataFrame, *, seed: int = 0) -> Finding:
    """Is the best model on VQA and on Loc clearly above the best control (95% CIs apart)?"""
    title = "Gate: do the models see the image?"
    main = analysis.main_table(results, seed=seed)
    controls = control_intervals(results, seed=seed)
    if main.empty:
        return Finding("gate", title, NOT_MEASURED, "No finished model runs: nothing to compare.")
    if controls.empty:
        return Finding(
            "gate",
            title,
            NOT_MEASURED,
            "No controls in this run, so nothing shows that the models use the image; read every comparison "
            "below with that in mind.",
        )
    details, numbers, failed = [], {}, []
    for score in CLAIM_SCORES:
        estimates = controls["estimate"].where(controls["score"] == score)
        if main[f"{score}_mean"].isna().all() or estimates.isna().all():
            details.append(f"{LABELS[score]}: not evaluated in this run")
            continue
        best = main.loc[main[f"{score}_mean"].idxmax()]
        control = controls.loc[estimates.idxmax()]
        clear = bool(best[f"{score}_ci_low"] > control["high"])  # NaN compares False: no CI, not clear
        if not clear:
            failed.append(LABELS[score])
        details.append(
            f"{LABELS[score]}: best model {_label(best)} {_interval_text(best, score)} vs best control "
            f"`{control['control']}` {control['estimate']:.1f} [{control['low']:.1f}, {control['high']:.1f}] "
            f"(margin {best[f'{score}_mean'] - control['estimate']:+.1f}): "
            + ("clearly above" if clear else "CIs overlap or missing")
        )
        numbers[score] = {
            "best_model": _label(best),
            "model": _interval_dict(best, score),
            "best_control": str(control["control"]),
            "control": {k: float(control[k]) for k in ("estimate", "low", "high")},
            "clearly_above": clear,
        }
    if failed:
        summary = (
            f"The best model is not clearly above the best control on {' and '.join(failed)} (95% CIs overlap or "
            "are missing): "
            "the comparisons below are drawn from noise around the controls."
        )
        return Finding("gate", title, FAILED, summary, details, numbers)
    if not numbers:
        return Finding("gate", title, NOT_MEASURED, "Neither VQA nor Loc was evaluated: nothing to compare.", details)
    summary = (
        f"The best model is clearly above the best control on {' and on '.join(LABELS[s] for s in numbers)} "
        "(95% CIs apart)."
    )
    return Finding("gate", title, PASSED, summary, details, numbers)


def control_intervals(results: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Per control and score: the mean over the evaluations that ran it, with a 95% CI.

    The CI covers both the spread between evaluations (a bootstrap over them) and the mean of their own CIs
    (over examples): the evaluations share their examples, so averaging them does not remove example noise. The
    model side of the gate may hold seed noise only, so the gate errs towards "not clearly above".
    """
    controls = results[(results["row_type"] != analysis.MODEL_ROW) & results["vqa"].notna()]
    records = []
    for name, group in controls.groupby("row_type"):
        for score in CLAIM_SCORES:
            interval = mean_interval(group[score], seed=seed)
            low, high = interval.low, interval.high
            if f"{score}_ci_low" in group and group[f"{score}_ci_low"].notna().any():
                low = min(low, float(group[f"{score}_ci_low"].mean()))
                high = max(high, float(group[f"{score}_ci_high"].mean()))
            estimate = float(group[score].mean())
            records.append({"control": name, "score": score, "estimate": estimate, "low": low, "high": high})
    return pd.DataFrame.from_records(records, columns=["control", "score", "estimate", "low", "high"])


# -- separation -----------------------------------------------------------------------------------------


def separation(results: pd.DataFrame, *, seed: int = 0) -> Finding:
    """Per setting (initialization, resolution, geometry, connector): the backbone pairs whose Overall 95% CIs in
    the main table do not overlap. A ranking between two backbones whose intervals overlap is not evidence."""
    title = "Separation: which backbones does this run tell apart?"
    main = analysis.main_table(results, seed=seed)  # main variants only
    if main.empty:
        return Finding("separation", title, NOT_MEASURED, "No finished model runs: nothing to compare.")
    details, numbers = [], {}
    apart_total = pairs_total = 0
    for setting, group in main.groupby(list(analysis.SETTING), sort=False, dropna=False):
        if len(group) < 2:
            continue
        apart = []
        rows = [row for _, row in group.iterrows()]  # sorted by Overall, best first
        for higher, lower in itertools.combinations(rows, 2):
            if _intervals_apart(higher, lower, "overall"):
                apart.append([str(higher["backbone"]), str(lower["backbone"])])
        pairs = len(rows) * (len(rows) - 1) // 2
        apart_total, pairs_total = apart_total + len(apart), pairs_total + pairs
        label = _setting_label(setting)
        sources = sorted(set(group["ci_source"]))
        details.append(
            f"{label}: {len(apart)} of {pairs} pairs apart"
            + (": " + "; ".join(f"{a} > {b}" for a, b in apart) if apart else "")
            + f" (CIs over {' and '.join(sources)})"
        )
        numbers[label] = {"pairs": pairs, "apart": apart, "ci_sources": sources}
    if not pairs_total:
        return Finding("separation", title, NOT_MEASURED, "Fewer than two backbones in every setting: no pairs.")
    summary = (
        f"{apart_total} of {pairs_total} backbone pairs have Overall 95% CIs that do not overlap (the main table's; "
        "pairs compared within one setting). Only those rankings are evidence."
    )
    if (main["ci_source"] == "examples").any():
        summary += " A one-seed CI holds evaluation noise alone, not seed-to-seed variation."
    return Finding("separation", title, f"{apart_total} of {pairs_total} pairs apart", summary, details, numbers)


# -- claim 1: SSM vs transformer ------------------------------------------------------------------------


def reference_rows(results: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Main rows in the study's most common resolution, resize strategy and connector: one matched setting."""
    rows = analysis.model_rows(results)
    setting: dict[str, Any] = {}
    for column in ("resolution", "resize_strategy", "connector"):
        if column in rows and rows[column].notna().any():
            setting[column] = rows[column].mode().iloc[0]
            rows = rows[rows[column] == setting[column]]
    return rows, setting


def ssm_vs_transformer(results: pd.DataFrame, *, seed: int = 0) -> Finding:
    """Best SSM − best transformer and SSM-mean − transformer-mean at the reference initialization."""
    init = analysis.reference_init(results)
    title = "SSM vs transformer encoders at matched initialization"
    rows, setting = reference_rows(results)
    rows = rows[rows["init"] == init]
    units = {backbone: group for backbone, group in rows.groupby("backbone", sort=False)}
    by_kind = {
        kind: [units[b] for b in dict.fromkeys(rows.loc[rows["kind"] == kind, "backbone"])]
        for kind in ("ssm", "hybrid", "transformer", "cnn")
    }
    if not by_kind["ssm"] or not by_kind["transformer"]:
        missing = " and ".join(k for k in ("ssm", "transformer") if not by_kind[k])
        return Finding(
            "ssm-vs-transformer",
            title,
            NOT_MEASURED,
            f"Not measured in this run: no {missing} backbone finished at the reference initialization.",
        )
    title += f" ({init})"
    details, numbers, signs = [], {"init": init, "setting": setting}, {}
    # With one backbone of each kind the kind means are the best-vs-best comparison again: not repeated.
    compare_means = len(by_kind["ssm"]) > 1 or len(by_kind["transformer"]) > 1
    for score in analysis.SCORES:
        if rows[score].isna().all():
            details.append(f"{LABELS[score]}: not evaluated in this run")
            continue
        ssm_best, transformer_best = _best(by_kind["ssm"], score), _best(by_kind["transformer"], score)
        best = difference([ssm_best], [transformer_best], score, seed=seed)
        means = difference(by_kind["ssm"], by_kind["transformer"], score, seed=seed)
        if score in CLAIM_SCORES:
            signs[f"best SSM − best transformer on {LABELS[score]}"] = best.sign
            if compare_means:
                signs[f"SSM mean − transformer mean on {LABELS[score]}"] = means.sign
        details.append(
            f"{LABELS[score]}: best SSM {_name(ssm_best)} {_mean(ssm_best, score):.1f} − best transformer "
            f"{_name(transformer_best)} {_mean(transformer_best, score):.1f} = {best.as_text()}"
            + (
                f"; SSM mean ({len(by_kind['ssm'])}) − transformer mean ({len(by_kind['transformer'])}) = "
                f"{means.as_text()}"
                if compare_means
                else ""
            )
        )
        numbers[score] = {
            "best_ssm": _name(ssm_best),
            "best_transformer": _name(transformer_best),
            "best_difference": asdict(best),
            "mean_difference": asdict(means),
        }
    if by_kind["hybrid"]:
        hybrid = {
            s: difference([_best(by_kind["hybrid"], s)], [_best(by_kind["transformer"], s)], s, seed=seed)
            for s in analysis.SCORES
        }
        names = ", ".join(_name(u) for u in by_kind["hybrid"])
        details.append(
            f"Hybrids ({names}) are reported separately, not counted as SSMs: best hybrid − best transformer = "
            + "; ".join(f"{LABELS[s]} {d.as_text()}" for s, d in hybrid.items())
        )
        numbers["hybrid_vs_transformer"] = {s: asdict(d) for s, d in hybrid.items()}
    if by_kind["cnn"]:
        details.append(f"CNNs ({', '.join(_name(u) for u in by_kind['cnn'])}) are left out of this comparison.")
    details.append(
        f"95% CIs from {_sources(numbers)}; the best of each kind is picked on the same data, which favours "
        "whichever kind has more backbones."
    )
    claim = "The paper claims SSM ≥ transformer encoders on both VQA and localization."
    best_signs = [sign for name, sign in signs.items() if name.startswith("best")]
    if best_signs == [1, 1] and -1 not in signs.values():
        verdict, reading = SUPPORTED, "This run supports it"
    elif -1 in signs.values() and 1 not in signs.values():
        verdict, reading = CONTRADICTED, "This run contradicts it"
    else:
        verdict, reading = INCONCLUSIVE, "This run is inconclusive"
    reading += ": " + "; ".join(f"{name} {_side(sign)}" for name, sign in signs.items()) + "."
    unmeasured = [LABELS[s] for s in CLAIM_SCORES if s not in numbers]
    if unmeasured:
        reading += f" {' and '.join(unmeasured)} not evaluated in this run."
    if verdict == INCONCLUSIVE and 0 in signs.values():
        reading += " A CI spanning 0 shows no difference either way; it is not evidence of equality."
    return Finding("ssm-vs-transformer", title, verdict, f"{claim} {reading}", details, numbers)


# -- claim 2: dense adaptation --------------------------------------------------------------------------


def dense_adaptation(results: pd.DataFrame, *, seed: int = 0) -> Finding:
    """Dense (det/seg) − classification initialization per backbone and pooled over backbones."""
    title = "Dense adaptation vs classification initialization"
    rows, setting = reference_rows(results)
    inits = list(dict.fromkeys(rows["init"]))
    dense_inits = [i for i in analysis.DENSE_INITS if i in inits]
    if "shapes-cls" not in inits or not dense_inits:
        return Finding(
            "dense-adaptation",
            title,
            NOT_MEASURED,
            f"Not measured in this run: initializations {', '.join(inits) or 'none'} (needs shapes-cls and "
            "shapes-det or shapes-seg).",
        )
    units = {key: group for key, group in rows.groupby(["backbone", "init"], sort=False)}
    details, numbers, signs = [], {"setting": setting}, []
    for init in dense_inits:
        backbones = [b for b in dict.fromkeys(rows["backbone"]) if (b, init) in units and (b, "shapes-cls") in units]
        dense_units = [units[(b, init)] for b in backbones]
        cls_units = [units[(b, "shapes-cls")] for b in backbones]
        pooled = {s: difference(dense_units, cls_units, s, seed=seed) for s in analysis.SCORES}
        per_backbone = {
            b: {s: difference([units[(b, init)]], [units[(b, "shapes-cls")]], s, seed=seed) for s in analysis.SCORES}
            for b in backbones
        }
        signs.append(pooled["overall"].sign)
        up = [b for b, d in per_backbone.items() if d["overall"].sign > 0]
        down = [b for b, d in per_backbone.items() if d["overall"].sign < 0]
        details.append(
            f"{init} − shapes-cls, pooled over {len(backbones)} backbones: "
            + "; ".join(f"Δ{LABELS[s]} {d.as_text()}" for s, d in pooled.items())
            + f". ΔOverall CI above 0 for {len(up)}"
            + (f" ({', '.join(up)})" if up else "")
            + f", below 0 for {len(down)}"
            + (f" ({', '.join(down)})" if down else "")
            + ". Per backbone ΔOverall: "
            + ", ".join(f"{b} {d['overall'].as_text()}" for b, d in per_backbone.items())
        )
        numbers[init] = {
            "pooled": {s: asdict(d) for s, d in pooled.items()},
            "per_backbone": {b: {s: asdict(d) for s, d in ds.items()} for b, ds in per_backbone.items()},
        }
    details.append(f"95% CIs from {_sources(numbers)}.")
    claim = "The paper claims dense-task (detection/segmentation) initialization generally improves the VLM."
    names = dict(zip(dense_inits, signs, strict=True))
    if signs and all(sign > 0 for sign in signs):
        verdict, reading = SUPPORTED, "This run supports it: pooled ΔOverall lies above 0 for " + ", ".join(names)
    elif -1 in signs and 1 not in signs:
        below = [i for i, sign in names.items() if sign < 0]
        verdict, reading = CONTRADICTED, "This run contradicts it: pooled ΔOverall lies below 0 for " + ", ".join(below)
    else:
        verdict = INCONCLUSIVE
        reading = "This run is inconclusive: " + "; ".join(
            f"{init} pooled ΔOverall {_side(sign)}" for init, sign in names.items()
        )
    return Finding("dense-adaptation", title, verdict, f"{claim} {reading}.", details, numbers)


# -- claim 3: predictors ---------------------------------------------------------------------------------


def predictors(correlations: pd.DataFrame) -> Finding:
    """Spearman correlations of each score with pretraining top-1 and with parameter count."""
    title = "Pretraining accuracy and size as predictors of VLM quality"
    if correlations.empty:
        return Finding("predictors", title, NOT_MEASURED, "Not measured in this run: no backbones to correlate.")
    spearman = correlations[correlations["method"] == "spearman"]
    details, numbers, related, measured = [], {}, [], False
    n = int(spearman["n"].max())
    if n < 3:  # a rank correlation needs three points to be defined at all
        return Finding("predictors", title, NOT_MEASURED, f"Not measured in this run: n = {n} backbones.")
    for predictor, group in spearman.groupby("predictor", sort=False):
        readings, numbers[predictor] = [], {}
        for _, row in group.iterrows():
            coefficient, low, high = float(row["coefficient"]), float(row["ci_low"]), float(row["ci_high"])
            points = int(row["n"])
            if math.isnan(coefficient):
                reading = f"undefined (n = {points}: too few points, or no variation)"
            elif math.isnan(low) or points < MIN_CORRELATION_POINTS:
                reading = f"too few points (n = {points}) to tell"
            elif low > 0 or high < 0:
                reading = f"related (CI excludes 0, n = {points}): this run contradicts the claim"
                related.append(f"{PREDICTOR_LABELS.get(predictor, predictor)} → {LABELS[row['score']]}")
                measured = True
            else:
                reading = f"no evidence of a relation in this run (n = {points})"
                measured = True
            value = "" if math.isnan(coefficient) else f" {coefficient:+.2f} [{low:+.2f}, {high:+.2f}]"
            readings.append(f"{LABELS[row['score']]}{value}: {reading}")
            numbers[predictor][row["score"]] = {
                "spearman": coefficient,
                "ci_low": low,
                "ci_high": high,
                "n": points,
                "reading": reading,
            }
        details.append(f"{PREDICTOR_LABELS.get(predictor, predictor)} (Spearman, 95% CI): " + "; ".join(readings))
    details.append(
        "Top-1 is the in-study classification pretraining's held-out top-1, this study's stand-in for ImageNet "
        "accuracy; one point per backbone at the reference initialization. Six intervals are checked, so one may "
        "exclude 0 by chance."
    )
    claim = "The paper claims neither ImageNet-style accuracy nor size reliably predicts VLM quality."
    if related:
        verdict = CONTRADICTED
        reading = f"This run contradicts it for {', '.join(related)} (95% CI excludes 0)."
    elif measured:
        verdict = INCONCLUSIVE
        reading = (
            f"This run is inconclusive: every CI spans 0, which is no evidence of a relation in this run (n = {n}), "
            "not evidence that there is none."
        )
    else:
        verdict = INCONCLUSIVE
        reading = (
            f"This run is inconclusive: with n = {n} backbones no rank correlation can be told from 0 "
            f"(at least {MIN_CORRELATION_POINTS} are needed)."
        )
    return Finding("predictors", title, verdict, f"{claim} {reading}", details, numbers)


# -- claim 4: collapse and recovery ---------------------------------------------------------------------


def collapse_recovery(
    results: pd.DataFrame, spec: StudySpec, flags: Sequence[analysis.Flag], *, seed: int = 0
) -> Finding:
    """How many localization collapses, and how each stabilization variant changed their Loc."""
    title = "Localization collapse and recovery (3-layer connector, square geometry)"
    collapsed = list(dict.fromkeys(c for f in flags if f.kind == "loc-collapse" for c in f.cells))
    backbones = list(dict.fromkeys(f.backbone for f in flags if f.kind == "loc-collapse"))
    claim = (
        "The paper claims some encoders collapse in localization and that the 3-layer connector or square "
        "geometry recovers them."
    )
    numbers: dict[str, Any] = {"collapsed_cells": collapsed, "collapsed_backbones": backbones}
    if not collapsed:
        return Finding(
            "collapse-recovery", title, NOT_MEASURED, f"{claim} No collapse was flagged in this run.", [], numbers
        )
    found = f"{len(collapsed)} localization collapse(s) flagged ({', '.join(backbones)})."
    settings = spec.stabilization
    if not settings.enabled:
        return Finding(
            "collapse-recovery",
            title,
            NOT_MEASURED,
            f"{claim} {found} Ablation not run (turned off in the spec).",
            [],
            numbers,
        )
    outcomes = analysis.ablation_outcomes(results, flags, settings, spec.diagnosis)
    outcomes = outcomes[outcomes["collapsed"]] if not outcomes.empty else outcomes
    if outcomes.empty:
        return Finding(
            "collapse-recovery",
            title,
            NOT_MEASURED,
            f"{claim} {found} Ablation not run for the collapsed cells (no finished ablation rows).",
            [],
            numbers,
        )
    all_rows = analysis.model_rows(results, main_only=False)
    main_rows = analysis.model_rows(results)
    details, signs = [], {}
    for variant, group in outcomes.groupby("variant", sort=False):
        parents = [all_rows[all_rows["cell_id"] == p] for p in group["parent"]]
        after = [
            all_rows[(all_rows["parent"] == p) & (all_rows["variant"] == variant)].head(1) for p in group["parent"]
        ]
        delta = difference(after, parents, "loc", seed=seed)
        # The collapsed cells were picked for their low Loc, so a rerun scores higher by regression to the mean
        # alone; the same cells' other seeds (no variant) are what a plain rerun reaches.
        pairs = [(a, s) for a, parent in zip(after, parents, strict=True) if len(s := _siblings(main_rows, parent))]
        rerun = difference([a for a, _ in pairs], [s for _, s in pairs], "loc", seed=seed)
        recovered = int((group["verdict"] == "recovered").sum())
        improved = int((group["verdict"] == "improved").sum())
        signs[variant] = (delta.sign, recovered, len(group), rerun.sign if pairs else None)
        row = group.iloc[0]
        details.append(
            f"{variant} ({row['connector']}, {row['resize_strategy']}): {recovered} of {len(group)} collapsed "
            f"cell(s) recovered, {improved} improved; Loc {group['loc_before'].mean():.1f} → "
            f"{group['loc_after'].mean():.1f}, ΔLoc {delta.as_text()}"
            + (
                f"; against the same cells' other seeds without the variant ({len(pairs)} cell(s)): {rerun.as_text()}"
                if pairs
                else "; no other seeds of these cells to compare a plain rerun with"
            )
        )
        numbers[variant] = {
            "recovered": recovered,
            "improved": improved,
            "n": len(group),
            "loc_delta": asdict(delta),
            "loc_vs_other_seeds": asdict(rerun) if pairs else None,
        }
    details.append(
        f"Recovered = Loc back to {settings.recovered_ratio:g} × the other backbones' Loc; CIs from "
        f"{_sources(numbers)}. The cells were picked for their low Loc, so part of any rise may be regression to "
        "the mean: a variant beats a plain rerun only where it is also above the same cells' other seeds."
    )
    winners = [v for v, (sign, recovered, n, _) in signs.items() if sign > 0 and 2 * recovered >= n]
    beyond_rerun = [v for v in winners if signs[v][3] is None or signs[v][3] > 0]
    if beyond_rerun:
        verdict = SUPPORTED
        reading = (
            f"This run supports it: {', '.join(beyond_rerun)} raised Loc (CI above 0) and recovered at least half "
            "of them"
            + (
                ", above the same cells' other seeds (CI above 0)."
                if all(signs[v][3] is not None for v in beyond_rerun)
                else " (no other seeds to rule out regression to the mean)."
            )
        )
    elif winners:
        verdict = INCONCLUSIVE
        reading = (
            f"This run is inconclusive: {', '.join(winners)} raised Loc (CI above 0) and recovered at least half "
            "of them, but not clearly above what the same cells' other seeds reach without it, so a plain rerun "
            "may do as well."
        )
    elif all(sign < 0 for sign, _, _, _ in signs.values()):
        verdict, reading = CONTRADICTED, "This run contradicts it: every variant lowered Loc (CI below 0)."
    else:
        verdict = INCONCLUSIVE
        reading = (
            "This run is inconclusive: no variant both raised Loc with a CI above 0 and recovered at least half "
            "of the collapsed cells."
        )
    return Finding("collapse-recovery", title, verdict, f"{claim} {found} {reading}", details, numbers)


# -- helpers --------------------------------------------------------------------------------------------


def _siblings(main_rows: pd.DataFrame, parent: pd.DataFrame) -> pd.DataFrame:
    """The parent cell's other seeds: same backbone and setting, main variant."""
    row = parent.iloc[0]
    same = (main_rows["backbone"] == row["backbone"]) & (main_rows["seed"] != row["seed"])
    for column in analysis.SETTING:
        same &= main_rows[column] == row[column]
    return main_rows[same]


def _side(sign: int) -> str:
    return "above 0" if sign > 0 else "below 0" if sign < 0 else "CI spans 0"


def _best(units: Sequence[pd.DataFrame], score: str) -> pd.DataFrame:
    return max(units, key=lambda unit: _mean(unit, score))


def _mean(unit: pd.DataFrame, score: str) -> float:
    return float(unit[score].mean())


def _name(unit: pd.DataFrame) -> str:
    return str(unit["backbone"].iloc[0])


def _label(row: pd.Series) -> str:
    return f"{row['backbone']} ({row['init']})"


def _setting_label(setting: tuple[Any, ...]) -> str:
    """``analysis.SETTING``'s values as text: "shapes-cls, 96 px, letterbox, gelu-mlp"."""
    named = zip(analysis.SETTING, setting, strict=True)
    return ", ".join(f"{value} px" if name == "resolution" else str(value) for name, value in named)


def _intervals_apart(a: pd.Series, b: pd.Series, score: str) -> bool:
    """The two rows' 95% CIs of ``score`` do not overlap (a row without a CI is apart from none: NaN compares
    False)."""
    return bool(a[f"{score}_ci_low"] > b[f"{score}_ci_high"] or b[f"{score}_ci_low"] > a[f"{score}_ci_high"])


def _interval_text(row: pd.Series, score: str) -> str:
    low, high = row[f"{score}_ci_low"], row[f"{score}_ci_high"]
    text = f"{row[f'{score}_mean']:.1f}"
    return text + (f" [{low:.1f}, {high:.1f}]" if not (math.isnan(low) or math.isnan(high)) else " (no CI)")


def _interval_dict(row: pd.Series, score: str) -> dict[str, Any]:
    return {
        "estimate": float(row[f"{score}_mean"]),
        "low": float(row[f"{score}_ci_low"]),
        "high": float(row[f"{score}_ci_high"]),
        "source": str(row["ci_source"]),
    }


def _sources(numbers: Any) -> str:
    """The uncertainty sources of every difference under ``numbers``, in words."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if "source" in value and "estimate" in value:
                found.add(value["source"])
            for inner in value.values():
                visit(inner)

    visit(numbers)
    words = {
        "seeds": "a bootstrap over seeds",
        "examples": "each run's evaluation CI (one seed: example noise only, seed variation not measured)",
        "seeds and examples": "seeds where there are several, else the evaluation's CI",
        "none": "nowhere for some rows (no seeds or evaluation CI: those differences have no CI)",
    }
    return "; ".join(words[s] for s in sorted(found)) or "nowhere"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json_clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

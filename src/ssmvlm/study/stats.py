"""Uncertainty for every claim: mean ± std, the mean with its bootstrap CI, rank correlations with bootstrap CIs.

All resampling uses ``numpy.random.default_rng(seed)``, so the same table gives the same intervals; the
percentile bootstrap itself is :func:`ssmvlm.eval.metrics.bootstrap_ci`, the one evaluation uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ssmvlm.eval.metrics import bootstrap_ci, percentile_interval

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_text(self, digits: int = 1) -> str:
        if np.isnan(self.estimate):
            return "–"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value, NaN for none), ignoring NaNs."""
    array = _finite(values)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def mean_interval(
    values: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """The mean of the finite ``values`` with its percentile bootstrap interval (a point interval for one value,
    NaN for none)."""
    array = _finite(values)
    if array.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    estimate = float(np.mean(array))
    if array.size == 1:
        return Interval(estimate, estimate, estimate)
    low, high = bootstrap_ci(array, n_resamples=resamples, seed=seed, level=confidence)
    return Interval(estimate, low, high)


@dataclass(frozen=True)
class Correlation:
    method: str
    coefficient: float
    p_value: float
    n: int
    low: float
    high: float

    def as_text(self) -> str:
        if np.isnan(self.coefficient):
            return f"{self.method} n={self.n}: undefined"
        return (
            f"{self.method} {self.coefficient:+.2f} [{self.low:+.2f}, {self.high:+.2f}], "
            f"p={self.p_value:.2g}, n={self.n}"
        )


_CORRELATIONS = {"spearman": "spearmanr", "kendall": "kendalltau"}


def rank_correlation(
    x: Sequence[float],
    y: Sequence[float],
    method: str = "spearman",
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Correlation:
    """Spearman or Kendall (tau-b) correlation from scipy, with a paired percentile bootstrap CI.

    Resamples whose ranks are all tied (the coefficient is undefined) are left out of the interval.
    """
    import scipy.stats

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    n = int(xs.size)
    nan = float("nan")
    if n < 3 or np.unique(xs).size < 2 or np.unique(ys).size < 2:
        return Correlation(method, nan, nan, n, nan, nan)
    result = getattr(scipy.stats, _CORRELATIONS[method])(xs, ys)
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    replicates = _ROW_CORRELATIONS[method](xs[rows], ys[rows])
    finite = replicates[np.isfinite(replicates)]
    low, high = percentile_interval(finite, confidence) if finite.size else (nan, nan)
    return Correlation(method, float(result.statistic), float(result.pvalue), n, low, high)


def spearman_rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of two (R, n) arrays (average ranks for ties; NaN when undefined)."""
    import scipy.stats

    rx = scipy.stats.rankdata(xs, axis=1)
    ry = scipy.stats.rankdata(ys, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((rx * ry).sum(axis=1) / denominator, -1.0, 1.0)


def kendall_rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of two (R, n) arrays (NaN when a row is all ties)."""
    sx = np.sign(xs[:, :, None] - xs[:, None, :])
    sy = np.sign(ys[:, :, None] - ys[:, None, :])
    denominator = np.sqrt((sx**2).sum(axis=(1, 2)) * (sy**2).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((sx * sy).sum(axis=(1, 2)) / denominator, -1.0, 1.0)


_ROW_CORRELATIONS = {"spearman": spearman_rows, "kendall": kendall_rows}


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[np.isfinite(array)]

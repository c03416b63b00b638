"""Correlation of accuracy with a diversity score: Pearson and Spearman r (two-sided p), least-squares line.

Written out (numpy; scipy only for the t distribution) so that small or degenerate samples give NaN with
a reason instead of a warning: fewer than 3 points leave no degrees of freedom for a p-value, and a
constant variable has no correlation. ``tests/test_report_stats.py`` checks the numbers against scipy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

NAN = float("nan")


@dataclass(frozen=True)
class Correlation:
    n: int
    pearson_r: float
    pearson_p: float
    spearman_r: float
    spearman_p: float
    slope: float
    intercept: float
    reason: str = ""  # why numbers are NaN, if they are

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def label(self) -> str:
        if self.reason:
            return f"n={self.n}: {self.reason}"
        return (
            f"Pearson r={self.pearson_r:.2f} (p={self.pearson_p:.2g}), "
            f"Spearman r={self.spearman_r:.2f} (p={self.spearman_p:.2g}), n={self.n}"
        )


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties get the mean of the ranks they span (scipy's 'average')."""
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="mergesort")
    ranks = np.empty(len(array), dtype=float)
    sorted_values = array[order]
    start = 0
    while start < len(array):
        stop = start
        while stop + 1 < len(array) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def _r(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0:
        return NAN
    return max(-1.0, min(1.0, float(dx @ dy) / denominator))


def _p_value(r: float, n: int) -> float:
    """Two-sided p of H0: rho = 0, from t = r sqrt((n-2)/(1-r^2)) with n-2 degrees of freedom."""
    from scipy.stats import t as student_t

    if math.isnan(r) or n < 3:
        return NAN
    if abs(r) >= 1.0:
        return 0.0
    statistic = r * math.sqrt((n - 2) / (1.0 - r * r))
    return float(2.0 * student_t.sf(abs(statistic), n - 2))


def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) < 2:
        return NAN, NAN
    r = _r(xs, ys)
    return r, _p_value(r, len(xs))


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    if len(x) < 2:
        return NAN, NAN
    return pearson(rankdata(x), rankdata(y))


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of y on x (NaN when x is constant or n < 2)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) < 2:
        return NAN, NAN
    dx = xs - xs.mean()
    sxx = float(dx @ dx)
    if sxx == 0:
        return NAN, NAN
    slope = float(dx @ (ys - ys.mean())) / sxx
    return slope, float(ys.mean() - slope * xs.mean())


def correlate(x: Sequence[float], y: Sequence[float]) -> Correlation:
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    pairs = [(a, b) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    n = len(pairs)
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    reason = ""
    if n < 3:
        reason = "fewer than 3 experiments, no correlation"
    elif len(set(xs)) == 1 or len(set(ys)) == 1:
        reason = "a constant variable, no correlation"
    if reason:
        slope, intercept = linear_fit(xs, ys) if n >= 2 else (NAN, NAN)
        return Correlation(n, NAN, NAN, NAN, NAN, slope, intercept, reason)
    pr, pp = pearson(xs, ys)
    sr, sp = spearman(xs, ys)
    slope, intercept = linear_fit(xs, ys)
    return Correlation(n, pr, pp, sr, sp, slope, intercept)


def partial_correlation(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> tuple[float, float, str]:
    """Pearson r of x and y with the linear effect of the covariate z removed from both, its two-sided p
    (n - 3 degrees of freedom) and why it is NaN, if it is."""
    triples = [(a, b, c) for a, b, c in zip(x, y, z) if not any(math.isnan(v) for v in (a, b, c))]
    n = len(triples)
    if n < 4:
        return NAN, NAN, "fewer than 4 experiments, no partial correlation"
    xs, ys, zs = (np.asarray(column, dtype=float) for column in zip(*triples))
    if len(set(zs.tolist())) == 1:
        return NAN, NAN, "the covariate is constant (nothing to partial out)"

    def residual(values: np.ndarray) -> np.ndarray:
        slope, intercept = linear_fit(zs, values)
        return values - (intercept + slope * zs)

    r = _r(residual(xs), residual(ys))
    if math.isnan(r):
        return NAN, NAN, "a variable is fully explained by the covariate"
    from scipy.stats import t as student_t

    if abs(r) >= 1.0:
        return r, 0.0, ""
    statistic = r * math.sqrt((n - 3) / (1.0 - r * r))
    return r, float(2.0 * student_t.sf(abs(statistic), n - 3)), ""

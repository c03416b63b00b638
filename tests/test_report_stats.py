"""Correlation math against scipy, and NaN with a reason where a correlation is undefined."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from workflow_scripts.report.stats import correlate, linear_fit, pearson, rankdata, spearman

CASES = [
    ([3.9, 4.2, 4.0, 5.1, 4.7], [50.1, 50.3, 50.5, 51.3, 51.0]),
    ([1, 2, 2, 3, 5, 5, 5, 8], [2, 1, 4, 3, 7, 6, 6, 9]),  # ties in both
    ([0.1, 0.5, 0.2, 0.9], [9.0, 3.0, 8.0, 1.0]),  # negative
    (list(np.random.default_rng(0).normal(size=30)), list(np.random.default_rng(1).normal(size=30))),
]


@pytest.mark.parametrize("x,y", CASES)
def test_pearson_and_spearman_match_scipy(x, y):
    r, p = pearson(x, y)
    expected = scipy_stats.pearsonr(x, y)
    assert r == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)
    r, p = spearman(x, y)
    expected = scipy_stats.spearmanr(x, y)
    assert r == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("x,y", CASES)
def test_linear_fit_matches_scipy(x, y):
    slope, intercept = linear_fit(x, y)
    expected = scipy_stats.linregress(x, y)
    assert slope == pytest.approx(expected.slope) and intercept == pytest.approx(expected.intercept)


def test_rankdata_averages_ties():
    assert list(rankdata([10, 20, 20, 5])) == list(scipy_stats.rankdata([10, 20, 20, 5]))


def test_undefined_correlations_are_nan_with_a_reason():
    few = correlate([1.0, 2.0], [3.0, 4.0])
    assert few.n == 2 and math.isnan(few.pearson_r) and "fewer than 3" in few.reason
    assert few.slope == pytest.approx(1.0)
    flat = correlate([1.0, 1.0, 1.0], [3.0, 4.0, 5.0])
    assert math.isnan(flat.spearman_r) and "constant" in flat.reason
    perfect = correlate([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert perfect.pearson_r == pytest.approx(1.0) and perfect.pearson_p == 0.0
    assert "Pearson r=1.00" in perfect.label() and "n=3" in perfect.label()


def test_nan_points_are_dropped_and_counted_out():
    result = correlate([1.0, 2.0, float("nan"), 4.0], [1.0, 3.0, 2.0, 4.5])
    assert result.n == 3
    assert result.pearson_r == pytest.approx(scipy_stats.pearsonr([1, 2, 4], [1, 3, 4.5]).statistic)

"""Wilcoxon signed-rank test as Stata's ``signrank``, and chi-squared as ``tabulate, chi2``.

signrank: differences of zero are kept in the ranking (their ranks split between the
positive and negative sums), the variance is corrected for ties and zeros, and the normal
approximation is used without continuity correction:
    E(T+) = n(n+1)/4,  Var(T+) = n(n+1)(2n+1)/24 − Σ(t³−t)/48 − n0(n0+1)(2n0+1)/24
with t the sizes of tied groups among non-zero |d| and n0 the number of zeros ([R] signrank).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def signrank(before: np.ndarray, after: np.ndarray) -> float:
    """Two-sided p of Stata's signrank for paired samples (NaN when fewer than 1 pair)."""
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0:
        return math.nan
    ranks = stats.rankdata(np.abs(d))
    positive = ranks[d > 0].sum()
    zeros = ranks[d == 0].sum()
    t_plus = positive + zeros / 2.0
    expected = n * (n + 1) / 4.0
    variance = n * (n + 1) * (2 * n + 1) / 24.0
    _, counts = np.unique(np.abs(d[d != 0]), return_counts=True)  # ties among non-zero differences
    variance -= float(np.sum(counts**3 - counts)) / 48.0
    n0 = int(np.sum(d == 0))
    variance -= n0 * (n0 + 1) * (2 * n0 + 1) / 24.0
    if variance <= 0:
        return 1.0  # every difference is zero
    z = (t_plus - expected) / math.sqrt(variance)
    return float(2 * stats.norm.sf(abs(z)))


def chi2_independence(table: np.ndarray) -> tuple[float, float, int]:
    """Pearson chi-squared (no continuity correction): statistic, p, df."""
    res = stats.chi2_contingency(np.asarray(table, dtype=float), correction=False)
    return float(res.statistic), float(res.pvalue), int(res.dof)

"""Fieller, proportions, Benjamini–Hochberg, signrank, chi-squared and OLS against independent references."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from stats.fieller import fieller
from stats.multiplicity import benjamini_hochberg
from stats.proportion import proportion_ci
from stats.ranks import chi2_independence, signrank
from stats.tables import between_groups


def test_fieller_hand_worked_example() -> None:
    """a = 4, b = 10, var(a) = 1, var(b) = 4, cov = 0.5, q = 2: solve (4 − 10r)² = 4(1 − r + 4r²) by hand.

    100r² − 80r + 16 = 4 − 4r + 16r²  →  84r² − 76r + 12 = 0  →  r = (76 ± √(5776 − 4032)) / 168.
    """
    ci = fieller(4.0, 10.0, 1.0, 4.0, 0.5, 2.0)
    root = math.sqrt(5776 - 4032)
    assert ci.bounded and ci.ratio == pytest.approx(0.4)
    assert ci.low == pytest.approx((76 - root) / 168) and ci.high == pytest.approx((76 + root) / 168)


def test_fieller_unbounded_when_denominator_not_significant() -> None:
    ci = fieller(4.0, 1.0, 1.0, 4.0, 0.0, 1.96)
    assert not ci.bounded and math.isnan(ci.low) and math.isnan(ci.high)


def test_proportion_reproduces_paper_table1() -> None:
    """1 of 28 weak → 0.04 (0.005, 0.23); 12 of 28 → 0.43 (0.26, 0.62) (left tibialis anterior)."""
    one = proportion_ci(1, 28)
    assert (round(one.p, 2), round(one.low, 3), round(one.high, 2)) == (0.04, 0.005, 0.23)
    twelve = proportion_ci(12, 28)
    assert (round(twelve.p, 2), round(twelve.low, 2), round(twelve.high, 2)) == (0.43, 0.26, 0.62)


def test_proportion_extremes_use_clopper_pearson() -> None:
    zero = proportion_ci(0, 28)
    assert zero.method == "clopper-pearson" and zero.low == 0 and zero.high == pytest.approx(0.1234, abs=1e-4)


def test_benjamini_hochberg_matches_r_and_ignores_missing() -> None:
    p = pd.Series([0.01, np.nan, 0.04, 0.03, 0.2, 0.001])
    rscript = shutil.which("Rscript") or pytest.fail("Rscript missing: make test installs r-base-core")
    out = subprocess.run([rscript, "-e", "cat(sprintf('%.15g', p.adjust(c(0.01,0.04,0.03,0.2,0.001), 'BH')))"],
                         capture_output=True, text=True, check=True).stdout.split()
    ours = benjamini_hochberg(p)
    assert math.isnan(ours[1])
    np.testing.assert_allclose(ours.drop(1).to_numpy(), [float(v) for v in out], rtol=1e-12)


def test_signrank_as_stata_with_zeros_and_ties() -> None:
    """Stata: T+ with zero ranks split, variance adjusted for ties and zeros, normal approximation.

    d = [0, 0, 1, -1, 2, 3, 3, -4]: |d| ranks 1.5 1.5 3.5 3.5 5 6.5 6.5 8; T+ = 3.5+5+6.5+6.5 + 3/2 = 23;
    E = 18; Var = 8·9·17/24 − [(2³−2)+(2³−2)]/48 − 2·3·5/24 = 51 − 0.25 − 1.25 = 49.5.
    """
    before = np.zeros(8)
    after = np.array([0, 0, 1, -1, 2, 3, 3, -4], dtype=float)
    z = (23 - 18) / math.sqrt(49.5)
    assert signrank(before, after) == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2)))))


def test_chi2_without_continuity_correction() -> None:
    """2×2 [[7, 22], [9, 13]]: Pearson's X² by hand."""
    table = np.array([[7, 22], [9, 13]])
    expected = table.sum(1)[:, None] * table.sum(0)[None, :] / table.sum()
    x2 = float(((table - expected) ** 2 / expected).sum())
    stat, p, df = chi2_independence(table)
    assert stat == pytest.approx(x2) and df == 1
    assert p == pytest.approx(math.erfc(math.sqrt(x2 / 2)))  # chi-squared 1 df survival function


def test_between_groups_ols_matches_closed_form() -> None:
    """b_patient and the control mean at mean covariates equal the normal-equation solution."""
    rng = np.random.default_rng(3)
    n = 40
    d = pd.DataFrame({"patient": (np.arange(n) < 22).astype(float), "age": rng.normal(55, 12, n),
                      "female": (rng.random(n) < 0.3).astype(float)})
    d["value"] = 1.0 + 0.2 * d["patient"] + 0.004 * d["age"] - 0.05 * d["female"] + rng.normal(0, 0.1, n)
    X = np.column_stack([np.ones(n), d["patient"], d["age"], d["female"]])
    beta = np.linalg.solve(X.T @ X, X.T @ d["value"].to_numpy())
    m_c = beta[0] + beta[2] * d["age"].mean() + beta[3] * d["female"].mean()
    res = between_groups(d)
    assert res["pct_diff"] == pytest.approx(100 * beta[1] / m_c, rel=1e-10)
    assert res["ci_low"] < res["pct_diff"] < res["ci_high"] and 0 <= res["p"] < 0.05

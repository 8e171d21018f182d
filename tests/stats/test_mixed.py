"""The ML random-intercept model against R lme4 (lmer, REML = FALSE) on unbalanced data with drop-out."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stats.mixed import fit_random_intercept

R_SCRIPT = """
suppressMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1])
d$visit <- factor(d$visit, levels = c("baseline", "m4", "m12"))
m <- lmer(value ~ visit + (1 | subject_id), data = d, REML = FALSE)
vc <- as.data.frame(VarCorr(m))
cat(sprintf('{"beta": [%s], "se": [%s], "var_subject": %.12g, "var_residual": %.12g, "loglik": %.12g}',
    paste(sprintf("%.12g", fixef(m)), collapse = ","), paste(sprintf("%.12g", sqrt(diag(as.matrix(vcov(m))))), collapse = ","),
    vc$vcov[vc$grp == "subject_id"], vc$vcov[vc$grp == "Residual"], as.numeric(logLik(m))))
"""


def simulate(seed: int, n: int = 29, subject_sd: float = 0.3, noise_sd: float = 0.15) -> pd.DataFrame:
    """Three visits with effects, drop-out rising with time, a few missing middle visits."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        u = rng.normal(0, subject_sd)
        for visit, effect, keep in (("baseline", 0.0, 1.0), ("m4", 0.05, 0.85), ("m12", 0.2, 0.5)):
            if rng.random() < keep:
                rows.append({"subject_id": f"S{i:02d}", "visit": visit, "value": 1.2 + effect + u + rng.normal(0, noise_sd)})
    return pd.DataFrame(rows)


def lme4(df: pd.DataFrame, tmp_path: Path) -> dict:
    rscript = shutil.which("Rscript") or pytest.fail("Rscript missing: make test installs r-base-core and r-cran-lme4")
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    (tmp_path / "fit.R").write_text(R_SCRIPT)
    out = subprocess.run([rscript, str(tmp_path / "fit.R"), str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize(("seed", "subject_sd"), [(1, 0.3), (2, 0.05), (3, 0.6), (4, 0.0)])
def test_matches_lme4(tmp_path: Path, seed: int, subject_sd: float) -> None:
    """Fixed effects, conditional SEs and both variance components within 1e-4 relative of lme4."""
    df = simulate(seed, subject_sd=subject_sd)
    ours = fit_random_intercept(df, ["baseline", "m4", "m12"])
    ref = lme4(df, tmp_path)
    np.testing.assert_allclose(ours.beta, ref["beta"], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(ours.cov)), ref["se"], rtol=1e-4)
    np.testing.assert_allclose(ours.var_residual, ref["var_residual"], rtol=1e-4)
    # A subject variance at the boundary is compared absolutely (lme4 stops at ~1e-10, not 0).
    np.testing.assert_allclose(ours.var_subject, ref["var_subject"], rtol=1e-4, atol=1e-7 * ours.var_residual)
    np.testing.assert_allclose(ours.loglik, ref["loglik"], rtol=1e-7)
    assert ours.converged

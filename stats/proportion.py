"""Proportion with a 95% CI as Stata's ``proportion`` reports it (logit scale, t quantile on n−1 df).

This reproduces the paper's Table 1 (1 of 28 weak → 0.04 (0.005, 0.23)). When 0 or all n are
weak the logit interval does not exist, and the exact Clopper–Pearson interval is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True, kw_only=True)
class Proportion:
    k: int
    n: int
    p: float
    low: float
    high: float
    method: str


def proportion_ci(k: int, n: int, level: float = 0.95) -> Proportion:
    if n <= 0:
        return Proportion(k=k, n=n, p=math.nan, low=math.nan, high=math.nan, method="none")
    if not 0 <= k <= n:
        raise ValueError(f"{k} of {n} is not a proportion")
    p = k / n
    alpha = 1 - level
    if k in (0, n) or n < 2:
        low = 0.0 if k == 0 else stats.beta.ppf(alpha / 2, k, n - k + 1)
        high = 1.0 if k == n else stats.beta.ppf(1 - alpha / 2, k + 1, n - k)
        return Proportion(k=k, n=n, p=p, low=float(low), high=float(high), method="clopper-pearson")
    se = math.sqrt(1.0 / (n * p * (1 - p)))  # SE of logit(p)
    t = stats.t.ppf(1 - alpha / 2, n - 1)
    logit = math.log(p / (1 - p))
    expit = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    return Proportion(k=k, n=n, p=p, low=expit(logit - t * se), high=expit(logit + t * se), method="logit-t")

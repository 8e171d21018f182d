"""Fieller's confidence interval for a ratio of two estimates (Fieller 1954).

For estimates a (numerator) and b (denominator) with variances v_aa, v_bb and covariance
v_ab, the set {r : (a − r·b)² ≤ q² (v_aa − 2 r v_ab + r² v_bb)} is an interval when b is
significantly different from zero (b² > q² v_bb); otherwise it is unbounded and the CI is
reported as empty (NaN, NaN) with ``bounded = False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RatioCI:
    ratio: float
    low: float
    high: float
    bounded: bool


def fieller(a: float, b: float, v_aa: float, v_bb: float, v_ab: float, q: float) -> RatioCI:
    """Ratio a/b and its Fieller interval at critical value ``q`` (t or z quantile)."""
    ratio = a / b if b != 0 else math.nan
    # Quadratic in r: (b² − q² v_bb) r² − 2 (a b − q² v_ab) r + (a² − q² v_aa) ≤ 0
    qa = b * b - q * q * v_bb
    qb = -2.0 * (a * b - q * q * v_ab)
    qc = a * a - q * q * v_aa
    disc = qb * qb - 4.0 * qa * qc
    if qa <= 0 or disc < 0:
        return RatioCI(ratio=ratio, low=math.nan, high=math.nan, bounded=False)
    root = math.sqrt(disc)
    low, high = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
    return RatioCI(ratio=ratio, low=low, high=high, bounded=True)

"""Benjamini–Hochberg adjusted p-values over the non-missing p-values of a family."""

from __future__ import annotations

import numpy as np
import pandas as pd


def benjamini_hochberg(p: pd.Series) -> pd.Series:
    """BH-adjusted p (as R's ``p.adjust(method = "BH")``); NaN stays NaN and does not count in m."""
    values = p.to_numpy(dtype=float)
    out = np.full(values.shape, np.nan)
    ok = ~np.isnan(values)
    m = int(ok.sum())
    if m:
        pv = values[ok]
        order = np.argsort(pv)
        ranked = pv[order] * m / np.arange(1, m + 1)
        adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
        res = np.empty(m)
        res[order] = np.minimum(adjusted, 1.0)
        out[ok] = res
    return pd.Series(out, index=p.index)

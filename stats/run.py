"""Run every table on a cohort and write the CSV files and ``run.json``."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from stats import tables
from stats.inputs import Cohort

OUTPUTS = ("table1", "table1_adc", "table1_ff", "table2", "table3", "table4", "table5", "table5_adc", "table5_ff",
           "predictors", "mrc_wilcoxon", "demographics")


@dataclass(kw_only=True)
class RunResult:
    frames: dict[str, pd.DataFrame]
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


def cohort_digest(cohort: Cohort) -> str:
    """SHA-256 of the inputs in a canonical form (row order does not matter)."""
    h = hashlib.sha256()
    for frame in (cohort.subjects, cohort.observations):
        canon = frame.sort_values(list(frame.columns)).to_csv(index=False, float_format="%.12g")
        h.update(canon.encode())
    h.update(",".join(cohort.visits).encode())
    return h.hexdigest()


def compute(cohort: Cohort) -> RunResult:
    """All tables (pure: DataFrames in, DataFrames out)."""
    visits, subjects = cohort.visits, cohort.subjects
    # Electrophysiology pooled over the side tested, except for the associations (table 3), which
    # pair MUNIX with relative T2 of the same side.
    by_side = tables.add_composites(cohort.observations, subjects)
    obs = tables.pool_tested_side(by_side)
    result = RunResult(frames={})
    notes: list[str] = []
    steps = {
        "table1": lambda: tables.table1(obs, subjects, visits[0]),
        "table1_adc": lambda: tables.table1_adc(obs, subjects, visits[0]),
        "table1_ff": lambda: tables.table1_ff(obs, subjects, visits[0]),
        "table2": lambda: tables.table2(obs, subjects, visits[0]),
        "table3": lambda: tables.table3(by_side, subjects, visits[0]),
        "table4": lambda: tables.table4(obs, subjects, visits, notes),
        "table5": lambda: tables.table5(obs, subjects, visits, notes),
        "table5_adc": lambda: tables.table5_adc(obs, subjects, visits, notes),
        "table5_ff": lambda: tables.table5_ff(obs, subjects, visits, notes),
        "predictors": lambda: tables.predictors(obs, subjects, visits),
        "mrc_wilcoxon": lambda: tables.mrc_wilcoxon(obs, subjects, visits),
        "demographics": lambda: tables.demographics(obs, subjects, visits),
    }
    for name, step in steps.items():
        start = time.perf_counter()
        result.frames[name] = step()
        result.timings_s[name] = round(time.perf_counter() - start, 3)
    for name in ("table1", "table1_adc", "table1_ff", "table2"):
        frame = result.frames[name]
        for _, r in frame[frame["p"].notna() & frame["ci_low"].isna()].iterrows():
            notes.append(f"{name} {r['measure']} {r['muscle']} {r['side']}: Fieller interval unbounded (empty CI)")
    result.warnings = notes
    return result


def write_run(cohort: Cohort, out: Path, source: str) -> RunResult:
    """Compute and write ``<out>/<table>.csv`` and ``<out>/run.json``; returns the result."""
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    result = compute(cohort)
    for name in OUTPUTS:
        result.frames[name].to_csv(out / f"{name}.csv", index=False, encoding="utf-8", na_rep="",
                                   float_format="%.6g")
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
        "source": source,
        "inputs_digest": cohort_digest(cohort),
        "subjects": len(cohort.subjects),
        "observations": len(cohort.observations),
        "visits": cohort.visits,
        "versions": {"myonode": _v("myonode"), "python": platform.python_version(), "statsmodels": _v("statsmodels"),
                     "scipy": _v("scipy"), "pandas": _v("pandas"), "numpy": _v("numpy")},
        "timings_s": result.timings_s,
        "rows": {name: len(result.frames[name]) for name in OUTPUTS},
        "warnings": result.warnings,
    }
    (out / "run.json").write_text(json.dumps(meta, indent=2, default=lambda v: None if isinstance(v, float)
                                             and math.isnan(v) else str(v)))
    return result


def _v(package: str) -> str:
    try:
        return version(package)
    except Exception:
        return "unknown"

"""Whole cohort statistics run (every table) and its report (HTML + PDF) for a 51-subject,
3-visit simulated cohort; prints JSON.

    python bench/stats.py [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This file is named like the `stats` package: take its own folder off the path first.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from phantom.cohort_model import simulate_cohort  # noqa: E402
from stats import tables  # noqa: E402
from stats.inputs import read_cohort  # noqa: E402
from stats.report import ReportInputs, write_report  # noqa: E402
from stats.run import write_run  # noqa: E402


def coverage(frame, low: str, high: str, truth: dict) -> float:
    hits = [r[low] <= truth[(r["muscle"], r["side"])] <= r[high] for _, r in frame.iterrows()
            if (r["muscle"], r["side"]) in truth and r[low] == r[low]]
    return round(sum(hits) / len(hits), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sim = simulate_cohort(seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sim.subjects.to_csv(folder / "subjects.csv", index=False)
        sim.observations.to_csv(folder / "observations.csv", index=False)
        start = time.perf_counter()
        cohort = read_cohort(folder / "subjects.csv", folder / "observations.csv", ["baseline", "m4", "m6", "m12"])
        read_s = time.perf_counter() - start
        result = write_run(cohort, folder / "out", "bench")
        total = time.perf_counter() - start
        # The report of the same run: HTML with figures, and the PDF.
        meta = json.loads((folder / "out" / "run.json").read_text())
        obs = tables.add_composites(tables.pool_tested_side(cohort.observations), cohort.subjects)
        report_start = time.perf_counter()
        write_report(result, obs, cohort.subjects,
                     ReportInputs(run=meta, cutoff="-", status={"processed": len(cohort.subjects)}, incomplete=[]), folder / "out")
        report_s = time.perf_counter() - report_start
        pdf_kb = (folder / "out" / "report.pdf").stat().st_size // 1024
    t1, t5 = result.frames["table1"], result.frames["table5"]
    m12 = t5[(t5["group"] == "patient") & (t5["visit"] == "m12")]
    print(json.dumps({
        "benchmark": "stats",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.node()} {os.cpu_count()} cpu {platform.machine()}",
        "subjects": len(cohort.subjects), "observations": len(cohort.observations),
        "seconds_total": round(total, 2), "seconds_read_validate": round(read_s, 2),
        "seconds_report_html_pdf": round(report_s, 2), "seconds_statistics_and_report": round(total + report_s, 2),
        "report_pdf_kb": pdf_kb,
        "seconds_per_table": result.timings_s,
        "rows": {k: len(v) for k, v in result.frames.items()},
        "warnings": len(result.warnings),
        "coverage_table1_pct_diff": coverage(t1, "ci_low", "ci_high", sim.truth["table1_pct_diff"]),
        "coverage_table5_pct_change_m12": coverage(m12, "pct_ci_low", "pct_ci_high", sim.truth["table5_pct_change_m12"]),
    }, indent=2))


if __name__ == "__main__":
    main()

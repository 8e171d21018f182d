"""Time to generate one phantom visit (T2 + DWI DICOM and truth), full and small size; prints JSON.

    python bench/phantom.py [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from phantom.anatomy import AnatomyParams
from phantom.contrast import MuscleState
from phantom.images import VisitMeta
from phantom.scanner import ScanSettings
from phantom.visit import scan_visit


def one(size: str, out: Path) -> dict:
    rng = np.random.default_rng(4)
    params = AnatomyParams.random(rng, "M").placed(rng)
    meta = VisitMeta(subject_id="BENCH01", patient_name="PHANTOM^BENCH", birth_date=date(1970, 1, 1), sex="M", age_years=56.0, weight_kg=80.0, height_m=params.height_mm / 1000,
                     study_date=date(2026, 3, 2), study_time=__import__("datetime").time(9, 0), visit="baseline", seed=4, time_point_id="BASELINE")
    result = scan_visit(meta, params, MuscleState(), out, ScanSettings(size=size))  # type: ignore[arg-type]
    size_mb = sum(p.stat().st_size for p in result.files) / 1e6
    return {"seconds": round(sum(result.seconds.values()), 2),
            "steps_s": {k: round(v, 2) for k, v in result.seconds.items()},
            "files": len(result.files), "megabytes": round(size_mb, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = one("small", Path(tmp) / "small")
        full = one("full", Path(tmp) / "full")
    print(json.dumps({"benchmark": "phantom", "date": date.today().isoformat(), "small": small, "full": full,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "targets_s": {"full": 60, "small": 5}}, indent=1))


if __name__ == "__main__":
    main()

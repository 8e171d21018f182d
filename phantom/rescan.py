"""Scan–rescan pairs: the same subject and disease state scanned twice, for reproducibility figures.

The second scan repositions the subject on the table (new rigid pose and smooth
deformation), draws new coil-loading gains and new noise — everything that differs
between two real sessions — while body and disease stay the same.
"""

from __future__ import annotations

from datetime import date, time
from pathlib import Path

import numpy as np

from phantom.anatomy import AnatomyParams, Population
from phantom.contrast import MuscleState
from phantom.dicom import DicomOptions
from phantom.geometry import Layout, Size
from phantom.images import VisitMeta
from phantom.scanner import ScanSettings
from phantom.visit import VisitResult, scan_visit

SESSIONS = ("scan", "rescan")


def scan_rescan(out: Path, seed: int, size: Size = "full", patient_id: str = "PH0001",
                state: MuscleState = MuscleState(), sex: str = "M",
                options: DicomOptions = DicomOptions(), echoes_ms: tuple[float, ...] = (), dixon: bool = False,
                layout: Layout = "whole_body", population: Population = "paper") -> tuple[VisitResult, VisitResult]:
    """Write ``out/scan`` and ``out/rescan`` (DICOM + truth) for subject ``seed`` of ``population`` (``echoes_ms``,
    ``dixon``, ``layout``: a multi-echo T2, a Dixon, the legs-only protocol, see :class:`phantom.scanner.ScanSettings`)."""
    body = AnatomyParams.random(np.random.default_rng(seed), sex, population)
    results = []
    for i, session in enumerate(SESSIONS):
        params = body.placed(np.random.default_rng([seed, i + 1]))
        meta = VisitMeta(subject_id=patient_id, patient_name=f"PHANTOM^{patient_id}", birth_date=date(1970, 6, 15),
                         sex="F" if sex == "F" else "M", age_years=55.0, weight_kg=75.0,
                         height_m=round(body.height_mm / 1000.0, 2), study_date=date(2026, 3, 2),
                         study_time=time(9 + 2 * i, 0), visit="baseline", seed=seed * 100 + i + 1,
                         time_point_id=None)
        settings = ScanSettings(size=size, echoes_ms=echoes_ms, dixon=dixon, layout=layout)
        results.append(scan_visit(meta, params, state, out / session, settings, options))
    return results[0], results[1]

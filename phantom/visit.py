"""One scanned visit of one subject: anatomy → scanner → DICOM files, plus the truth they were made from.

``scan_visit`` is what ``myonode phantom subject`` runs and what the cohort and rescan
commands run per visit. The truth written beside the DICOM (``truth.json`` and
``labels.nii.gz``) holds every planted quantity: body and placement parameters, disease
factors, coil gains, and per station the noise-free mean signal of every label in it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from phantom.anatomy import LABELS, AnatomyParams, build
from phantom.contrast import MuscleState, healthy_muscle_signal
from phantom.dicom import DicomOptions, write_visit
from phantom.geometry import truth_grid
from phantom.images import VisitImages, VisitMeta
from phantom.scanner import ScanSettings, acquire


@dataclass(kw_only=True)
class VisitResult:
    files: list[Path]
    truth_path: Path
    labels_path: Path
    seconds: dict[str, float] = field(default_factory=dict)


def _key(k: tuple[str, str]) -> str:
    return f"{k[0]}:{k[1]}"


def truth_record(meta: VisitMeta, params: AnatomyParams, state: MuscleState, settings: ScanSettings,
                 gains: dict[str, list[float]], signal: dict, voxels: dict) -> dict:
    """The JSON-serialisable truth of one visit."""
    p = asdict(params)
    p["atrophy"] = {_key(k): v for k, v in params.atrophy.items()}
    return {
        "subject_id": meta.subject_id, "visit": meta.visit, "study_date": meta.study_date.isoformat(),
        "seed": meta.seed, "size": settings.size, "snr_t2": settings.snr_t2, "snr_dwi": settings.snr_dwi,
        "anatomy": p,
        "t2_factor": {_key(k): v for k, v in state.t2_factor.items()},
        "adc_factor": {_key(k): v for k, v in state.adc_factor.items()},
        "healthy_signal": {lab.key: healthy_muscle_signal(lab.key) for lab in LABELS if lab.tissue == "muscle"
                           and lab.key != "other_muscle"},
        "coil_gain": gains,
        "labels": [asdict(lab) for lab in LABELS],
        # sequence → station → label value → noise-free mean signal over the label's voxels in that station
        "station_signal": {seq: {str(st): {str(v): m for v, m in d.items()} for st, d in per.items()}
                           for seq, per in signal.items()},
        "station_voxels": {seq: {str(st): {str(v): n for v, n in d.items()} for st, d in per.items()}
                           for seq, per in voxels.items()},
    }


def scan_visit(meta: VisitMeta, params: AnatomyParams, state: MuscleState, out_dir: Path,
               settings: ScanSettings = ScanSettings(), options: DicomOptions = DicomOptions()) -> VisitResult:
    """Simulate and write one visit under ``out_dir`` (DICOM in ``out_dir/dicom``, truth beside it)."""
    rng = np.random.default_rng(meta.seed)
    t0 = time.perf_counter()
    labels = build(truth_grid(settings.size), params)
    t1 = time.perf_counter()
    acq = acquire(labels, state, settings, rng)
    t2 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_visit(VisitImages(t2=acq.t2, dwi=acq.dwi, dixon=acq.dixon), meta, out_dir / "dicom", options)
    t3 = time.perf_counter()
    labels_path = out_dir / "labels.nii.gz"
    sitk.WriteImage(labels, str(labels_path), useCompression=True)
    truth = truth_record(meta, params, state, settings, acq.gains, acq.truth_signal, acq.truth_voxels)
    if acq.fat_fraction:  # label value → the true fat fraction (%) a Dixon measures
        truth["fat_fraction"] = {str(v): ff for v, ff in acq.fat_fraction.items()}
    if settings.echoes_ms:
        truth["echoes_ms"] = list(settings.echoes_ms)
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=1, sort_keys=True))
    return VisitResult(files=files, truth_path=truth_path, labels_path=labels_path,
                       seconds={"anatomy": t1 - t0, "scanner": t2 - t1, "dicom": t3 - t2, "truth": time.perf_counter() - t3})

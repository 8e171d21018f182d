"""The ``process_visit`` job: quantify a complete visit, write its measurements, QC pictures and DICOM results.

Order matters for "never half-written": the expensive part (registration, measurement,
building the DICOM objects) runs outside any transaction; the QC pictures go to a fresh
folder renamed into place; the result objects are stored through the node's own ingest
(so Q/R serves them) and queued to every ``[forward]`` destination; the measurements
replace the visit's previous ones and the visit becomes ``processed`` in one transaction.
A failure marks the visit ``failed`` with the error on the job row; the job retries.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from node.atlases import resolve_atlas
from node.settings import Settings
from quant.atlas import AtlasLabel
from quant.pipeline import PIPELINE_VERSION, QuantSettings, VisitQuant, quantify
from quant.qc import write_qc
from quant.visit_io import load_visit, write_measurements
from storage import models as m
from storage.database import transaction
from storage.filestore import FileStore

log = logging.getLogger(__name__)


@dataclass
class ProcessOutcome:
    visit_id: int
    measurements: int
    qc_dir: Path
    results: list[str] = field(default_factory=list)  # SOP Instance UIDs of the DICOM results stored
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def quant_settings(settings: Settings) -> QuantSettings:
    q = settings.quant
    return QuantSettings(erosion_mm=q.erosion_mm, min_voxels=q.min_voxels, small_roi_voxels=q.small_roi_voxels,
                         registration_mm=q.registration_mm, label_mm=q.label_mm, grid_mm=q.grid_mm,
                         iterations=q.iterations, reference=dict(q.reference), reference_range=q.reference_range)


def _set_state(sessions: sessionmaker[Session], visit_id: int, state: m.VisitState) -> None:
    with transaction(sessions) as s:
        visit = s.get(m.Visit, visit_id)
        if visit is None:
            raise LookupError(f"visit {visit_id} does not exist")
        visit.state = state


def _write_qc_atomically(qc_root: Path, visit_id: int, q: VisitQuant, table: list[AtlasLabel]) -> Path:
    final = qc_root / f"visit-{visit_id}"
    tmp = qc_root / f".visit-{visit_id}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    write_qc(tmp, q.stitched_t2, q.subject_labels, table, q.b0_stations, q.dwi_station_labels)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def process_visit(settings: Settings, sessions: sessionmaker[Session], store: FileStore, visit_id: int,
                  progress: Callable[[str], None] | None = None) -> ProcessOutcome:
    """Quantify one visit end to end (see the module docstring)."""
    _set_state(sessions, visit_id, m.VisitState.PROCESSING)
    try:
        t0 = time.perf_counter()
        atlas = resolve_atlas(settings.atlas.path, settings.atlas.default_subjects)
        with sessions() as s:
            visit_input = load_visit(s, store, visit_id)
        t_load = time.perf_counter() - t0
        q = quantify(visit_input.t2, visit_input.dwi, atlas, quant_settings(settings), progress)
        t1 = time.perf_counter()
        qc_dir = _write_qc_atomically(settings.quant.qc_dir, visit_id, q, atlas.table)
        t2 = time.perf_counter()
        with transaction(sessions) as s:
            n = write_measurements(s, visit_id, q.rows, PIPELINE_VERSION, atlas.id)
            visit = s.get(m.Visit, visit_id)
            assert visit is not None
            visit.state = m.VisitState.PROCESSED
        timings = {"load": t_load, **q.timings, "qc": t2 - t1, "store": time.perf_counter() - t2}
        log.info("visit %d processed: %d measurements, %.1f s", visit_id, n, sum(timings.values()))
        return ProcessOutcome(visit_id, n, qc_dir, [], timings, q.warnings)
    except Exception:
        _set_state(sessions, visit_id, m.VisitState.FAILED)
        raise


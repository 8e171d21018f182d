"""The ``process_visit`` job: quantify a complete visit, write its measurements, QC pictures and DICOM results.

Order matters for "never half-written": the expensive part (registration, measurement,
building the DICOM objects) runs outside any transaction; the QC pictures go to a fresh
folder renamed into place; the result objects are stored through the node's own ingest
(so Q/R serves them) and queued to every ``[forward]`` destination; the measurements
replace the visit's previous ones and the visit becomes ``processed`` in one transaction.
A failure marks the visit ``failed`` with the error on the job row; the job retries.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import SimpleITK as sitk
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node import __version__
from node.settings import Settings
from node.work.atlas_in_use import atlas_in_use, current_pin
from node.work.corrections import SUBJECT_LABELS
from node.work.results import StoredResult, discard_results, previous_results, record_results, store_results
from node.work.review import reset_changed
from quant.atlas import AtlasLabel
from quant.dicom_out import ResultContext, build_results
from quant.pipeline import PIPELINE_VERSION, VisitQuant, quantify
from quant.qc import write_qc
from quant.visit_io import load_visit, write_measurements
from quant.volumes import head_first
from storage import models as m
from storage.catalogue import PROFILE_STATIONS, not_covered
from storage.database import transaction
from storage.filestore import FileStore
from storage.visit_states import VisitState, move_visit

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ProcessOutcome:
    visit_id: int
    measurements: int
    qc_dir: Path
    results: list[str] = field(default_factory=list)  # SOP Instance UIDs of the DICOM results stored
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)  # what was chosen from the inputs (echo of a multi-echo T2)


def _write_qc_atomically(qc_root: Path, visit_id: int, q: VisitQuant, table: list[AtlasLabel],
                         provenance: list[str]) -> Path:
    """The visit's QC pictures, and what reproduces its ROIs: the propagated subject labels (NIfTI), the
    elastix transforms (``transforms.json``, usable with transformix) and what was chosen from the inputs
    (``provenance.json``: e.g. which echo of a multi-echo T2 series; a multi-atlas's entries that were fused, with
    their similarity to the subject)."""
    final = qc_root / f"visit-{visit_id}"
    tmp = qc_root / f".visit-{visit_id}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    write_qc(tmp, q.stitched_t2, q.subject_labels, table, q.b0_stations, q.dwi_station_labels)
    sitk.WriteImage(q.subject_labels, str(tmp / SUBJECT_LABELS), useCompression=True)
    (tmp / "transforms.json").write_text(json.dumps({name: t.as_data() for name, t in q.transforms.items()},
                                                    indent=1))
    (tmp / "provenance.json").write_text(json.dumps({"inputs": provenance, "atlas_entries_fused": q.fused_entries},
                                                    indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


@contextmanager
def visit_lock(qc_root: Path, visit_id: int) -> Iterator[None]:
    """Exclusive processing of one visit across the node's worker threads and processes (an flock on
    ``qc_root/.visit-N.lock``): a visit re-opened by a late instance while its first job still runs is
    processed again after it, never at the same time (both would write the same QC folder and rows)."""
    qc_root.mkdir(parents=True, exist_ok=True)
    with open(qc_root / f".visit-{visit_id}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def process_visit(settings: Settings, sessions: sessionmaker[Session], store: FileStore, visit_id: int,
                  progress: Callable[[str], None] | None = None) -> ProcessOutcome:
    """Quantify one visit end to end (see the module docstring), one run per visit at a time."""
    with visit_lock(settings.quant.qc_dir, visit_id):
        return _process_visit(settings, sessions, store, visit_id, progress)


def _process_visit(settings: Settings, sessions: sessionmaker[Session], store: FileStore, visit_id: int,
                   progress: Callable[[str], None] | None) -> ProcessOutcome:
    with transaction(sessions) as s:
        move_visit(s, visit_id, VisitState.PROCESSING)
    stored: list[StoredResult] = []
    try:
        t0 = time.perf_counter()
        with sessions() as s:
            atlas = atlas_in_use(settings.atlas, current_pin(s))
            visit_input = load_visit(s, store, visit_id, t2_te_ms=settings.protocol.t2_te_ms)
            replaces = previous_results(s, store, visit_id)
        t_load = time.perf_counter() - t0
        q = quantify(visit_input.t2, visit_input.dwi, atlas, settings.quant.params(), progress,
                     covered=settings.protocol.muscles,
                     station_muscles=PROFILE_STATIONS.get(settings.protocol.profile), dixon=visit_input.dixon)
        t1 = time.perf_counter()
        qc_dir = _write_qc_atomically(settings.quant.qc_dir, visit_id, q, atlas.table, visit_input.provenance)
        t2 = time.perf_counter()
        if progress:
            progress("DICOM results")
        ctx = ResultContext(content_datetime=datetime.now(UTC), myonode_version=__version__, pipeline_version=PIPELINE_VERSION, atlas_id=atlas.id, replaces=replaces,
                            not_covered=not_covered(settings.protocol.profile), synthetic_atlas=atlas.synthetic)
        results = build_results(q.rows, [v.image for v in head_first(visit_input.t2)], q.subject_labels,
                                q.adc_stations, visit_input.headers, visit_input.dwi_header, atlas.table, ctx)
        t3 = time.perf_counter()
        stored = store_results(settings, sessions, store, results.objects())
        with transaction(sessions) as s:
            before = {(x.modality.value, x.muscle, x.side.value): x.value
                      for x in s.scalars(select(m.Measurement).where(m.Measurement.visit_fk == visit_id))}
            reset_changed(s, visit_id, before, q.rows)
            n = write_measurements(s, visit_id, q.rows, PIPELINE_VERSION, atlas.id)
            record_results(s, settings, visit_id, stored, replaces)
            visit = s.get_one(m.Visit, visit_id)
            visit.profile, visit.atlas_synthetic = settings.protocol.profile, atlas.synthetic
            move_visit(s, visit_id, VisitState.PROCESSED)
        timings = {"load": t_load, **q.timings, "qc": t2 - t1, "dicom_results": t3 - t2,
                   "store": time.perf_counter() - t3}
        log.info("visit %d processed: %d measurements, %d result objects, %.1f s%s", visit_id, n, len(stored),
                 sum(timings.values()), "".join(f"; {line}" for line in visit_input.provenance))
        return ProcessOutcome(visit_id=visit_id, measurements=n, qc_dir=qc_dir,
                              results=[str(r.dataset.SOPInstanceUID) for r in stored], timings=timings,
                              warnings=q.warnings, provenance=visit_input.provenance)
    except Exception:
        discard_results(sessions, store, stored)
        with transaction(sessions) as s:
            move_visit(s, visit_id, VisitState.FAILED)
        raise

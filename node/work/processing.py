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
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from node import __version__
from node.intake.ingest import Ingestor
from node.settings import Settings
from node.work.atlases import resolve_atlas
from node.work.outbox import enqueue
from node.work.review import reset_changed
from quant.atlas import AtlasLabel
from quant.dicom_out import ResultContext, build_results
from quant.pipeline import PIPELINE_VERSION, VisitQuant, quantify
from quant.qc import write_qc
from quant.visit_io import load_visit, write_measurements
from quant.volumes import head_first
from storage import models as m
from storage.database import transaction
from storage.filestore import FileStore

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ProcessOutcome:
    visit_id: int
    measurements: int
    qc_dir: Path
    results: list[str] = field(default_factory=list)  # SOP Instance UIDs of the DICOM results stored
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _set_state(sessions: sessionmaker[Session], visit_id: int, state: m.VisitState) -> None:
    with transaction(sessions) as s:
        visit = s.get(m.Visit, visit_id)
        if visit is None:
            raise LookupError(f"visit {visit_id} does not exist")
        visit.state = state


def _write_qc_atomically(qc_root: Path, visit_id: int, q: VisitQuant, table: list[AtlasLabel]) -> Path:
    """The visit's QC pictures, and what reproduces its ROIs: the propagated subject labels (NIfTI) and
    the elastix transforms (``transforms.json``, usable with transformix)."""
    final = qc_root / f"visit-{visit_id}"
    tmp = qc_root / f".visit-{visit_id}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    write_qc(tmp, q.stitched_t2, q.subject_labels, table, q.b0_stations, q.dwi_station_labels)
    sitk.WriteImage(q.subject_labels, str(tmp / "subject_labels.nii.gz"), useCompression=True)
    (tmp / "transforms.json").write_text(json.dumps({name: t.as_data() for name, t in q.transforms.items()},
                                                    indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


RESULT_KINDS = {"stitched_t2": m.ResultKind.STITCHED_T2, "seg": m.ResultKind.SEG, "sr": m.ResultKind.SR,
                "adc_map": m.ResultKind.ADC_MAP}


def previous_results(s: Session, store: FileStore, visit_id: int) -> dict[str, list[Dataset]]:
    """Headers of the newest earlier result objects of the visit, per kind (what a re-run replaces)."""
    rows = s.execute(select(m.ResultObject, m.Instance.file_path).join(m.Instance)
                     .where(m.ResultObject.visit_fk == visit_id).order_by(m.ResultObject.id)).all()
    newest: dict[str, list[tuple[m.ResultObject, str]]] = {}
    for obj, path in rows:
        kind = next((k for k, v in RESULT_KINDS.items() if v is obj.kind), None)
        if kind is None:
            continue
        series = newest.get(kind)
        if series and series[-1][0].series_instance_uid != obj.series_instance_uid:
            newest[kind] = []
        newest.setdefault(kind, []).append((obj, path))
    return {kind: [pydicom.dcmread(store.absolute(path), stop_before_pixels=True) for _, path in items[:1]]
            for kind, items in newest.items()}


def newest_results(s: Session, store: FileStore, visit_id: int, kind: m.ResultKind) -> list[Dataset]:
    """The newest result series of ``kind`` of the visit, read whole (pixels included)."""
    rows = s.execute(select(m.ResultObject, m.Instance.file_path).join(m.Instance)
                     .where(m.ResultObject.visit_fk == visit_id, m.ResultObject.kind == kind)
                     .order_by(m.ResultObject.id.desc())).all()
    if not rows:
        return []
    series = rows[0][0].series_instance_uid
    return [pydicom.dcmread(store.absolute(path)) for obj, path in reversed(rows) if obj.series_instance_uid == series]


def store_results(settings: Settings, sessions: sessionmaker[Session], store: FileStore,
                  results: list[tuple[str, Dataset]]) -> list[tuple[str, Dataset, int]]:
    """Store every result object through the node's own ingest (so Q/R serves it); (kind, data set, instance id)."""
    ingestor = Ingestor(store, sessions, settings.protocol.rules, settings.storage.resend_policy)
    stored: list[tuple[str, Dataset, int]] = []
    try:
        for kind, ds in results:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            outcome = ingestor.ingest(buffer.getvalue(), calling_ae=settings.node.ae_title)
            if not outcome.ok or outcome.instance_id is None:
                raise RuntimeError(f"result {kind} {ds.SOPInstanceUID} not stored: {outcome.comment}")
            stored.append((kind, ds, outcome.instance_id))
    except Exception:
        discard_results(sessions, store, [i for _, _, i in stored])  # all of a visit's results or none
        raise
    return stored


def discard_results(sessions: sessionmaker[Session], store: FileStore, instance_ids: list[int]) -> int:
    """Take back result objects :func:`store_results` stored when the visit's measurement transaction then
    failed: their instance rows, their series once empty, and their files — so Q/R never serves
    results the database does not know. Returns the number of instances removed."""
    with transaction(sessions) as s:
        instances = s.scalars(select(m.Instance).where(m.Instance.id.in_(instance_ids))).all()
        paths = [i.file_path for i in instances]
        series_ids = {i.series_fk for i in instances}
        for instance in instances:
            s.delete(instance)
        s.flush()
        for series_id in series_ids:
            left, size = s.execute(select(func.count(), func.coalesce(func.sum(m.Instance.size_bytes), 0))
                                   .where(m.Instance.series_fk == series_id)).one()
            series = s.get(m.Series, series_id)
            if series is not None and not left:
                s.delete(series)
            elif series is not None:
                series.n_instances, series.bytes_stored = int(left or 0), int(size or 0)
    for path in paths:
        store.absolute(path).unlink(missing_ok=True)
    return len(paths)


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
    _set_state(sessions, visit_id, m.VisitState.PROCESSING)
    stored: list[tuple[str, Dataset, int]] = []
    try:
        t0 = time.perf_counter()
        atlas = resolve_atlas(settings.atlas.path, settings.atlas.default_subjects)
        with sessions() as s:
            visit_input = load_visit(s, store, visit_id)
            replaces = previous_results(s, store, visit_id)
        t_load = time.perf_counter() - t0
        q = quantify(visit_input.t2, visit_input.dwi, atlas, settings.quant.params(), progress)
        t1 = time.perf_counter()
        qc_dir = _write_qc_atomically(settings.quant.qc_dir, visit_id, q, atlas.table)
        t2 = time.perf_counter()
        if progress:
            progress("DICOM results")
        ctx = ResultContext(content_datetime=datetime.now(UTC), myonode_version=__version__, pipeline_version=PIPELINE_VERSION, atlas_id=atlas.id, replaces=replaces)
        results = build_results(q.rows, [v.image for v in head_first(visit_input.t2)], q.subject_labels,
                                q.adc_stations, visit_input.headers, visit_input.dwi_header, atlas.table, ctx)
        t3 = time.perf_counter()
        stored = store_results(settings, sessions, store, results.objects())
        with transaction(sessions) as s:
            before = {(x.modality.value, x.muscle, x.side.value): x.value
                      for x in s.scalars(select(m.Measurement).where(m.Measurement.visit_fk == visit_id))}
            reset_changed(s, visit_id, before, q.rows)
            n = write_measurements(s, visit_id, q.rows, PIPELINE_VERSION, atlas.id)
            for kind, ds, instance_id in stored:
                old = replaces.get(kind)
                s.add(m.ResultObject(visit_fk=visit_id, kind=RESULT_KINDS[kind],
                                     sop_instance_uid=str(ds.SOPInstanceUID),
                                     series_instance_uid=str(ds.SeriesInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                                     replaces_uid=str(old[0].SOPInstanceUID) if old else None,
                                     instance_fk=instance_id))
            enqueue(s, [i for _, _, i in stored], settings.forward.destinations)
            visit = s.get(m.Visit, visit_id)
            assert visit is not None
            visit.state = m.VisitState.PROCESSED
        timings = {"load": t_load, **q.timings, "qc": t2 - t1, "dicom_results": t3 - t2,
                   "store": time.perf_counter() - t3}
        log.info("visit %d processed: %d measurements, %d result objects, %.1f s", visit_id, n, len(stored),
                 sum(timings.values()))
        return ProcessOutcome(visit_id=visit_id, measurements=n, qc_dir=qc_dir, results=[str(ds.SOPInstanceUID) for _, ds, _ in stored], timings=timings,
                              warnings=q.warnings)
    except Exception:
        if stored:
            try:
                discard_results(sessions, store, [i for _, _, i in stored])
            except Exception:  # the original error matters more; the orphans are named in the log
                log.exception("visit %d: could not take back result objects %s", visit_id,
                              [str(ds.SOPInstanceUID) for _, ds, _ in stored])
        _set_state(sessions, visit_id, m.VisitState.FAILED)
        raise

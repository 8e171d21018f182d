"""The node's own DICOM results: storing them, their result rows, queueing them for PACS, reading them back.

One way for every producer (processing a visit, signing it, the cohort report's PDF): each object
is stored through the node's own ingest (so Q/R and DICOMweb serve it like any instance), then its
:class:`storage.models.ResultObject` row and its outbox entries (one per ``[forward]`` destination)
are written in one transaction. Should that transaction fail, the stored objects are taken back
(:func:`discard_results`): Q/R never serves a result the database does not know. :func:`publish`
does all of it; processing calls :func:`store_results` and :func:`record_results` itself, because its
result rows share the transaction that writes the visit's measurements.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from node.intake.ingest import Ingestor
from node.settings import Settings
from node.work.outbox import enqueue
from storage import models as m
from storage.database import transaction
from storage.filestore import FileStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StoredResult:
    """A result object stored in the node (not yet known to the database as a result)."""

    kind: m.ResultKind
    dataset: Dataset
    instance_id: int


def previous_results(s: Session, store: FileStore, visit_id: int) -> dict[str, list[Dataset]]:
    """Headers of the newest earlier result objects of the visit, per kind (what a re-run replaces)."""
    rows = s.execute(select(m.ResultObject, m.Instance.file_path).join(m.Instance)
                     .where(m.ResultObject.visit_fk == visit_id).order_by(m.ResultObject.id)).all()
    newest: dict[str, list[tuple[m.ResultObject, str]]] = {}
    for obj, path in rows:
        if obj.kind is m.ResultKind.REPORT_PDF:
            continue
        series = newest.get(obj.kind.value)
        if series and series[-1][0].series_instance_uid != obj.series_instance_uid:
            newest[obj.kind.value] = []
        newest.setdefault(obj.kind.value, []).append((obj, path))
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
                  results: list[tuple[str, Dataset]]) -> list[StoredResult]:
    """Store every result object (``(kind, data set)``, kind a :class:`storage.models.ResultKind` value) through
    the node's own ingest: all of them or, on any failure, none (raises)."""
    ingestor = Ingestor(store, sessions, settings.protocol.rules, settings.storage.resend_policy)
    stored: list[StoredResult] = []
    try:
        for kind, ds in results:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            outcome = ingestor.ingest(buffer.getvalue(), calling_ae=settings.node.ae_title)
            if not outcome.ok or outcome.instance_id is None:
                raise RuntimeError(f"result {kind} {ds.SOPInstanceUID} not stored: {outcome.comment}")
            stored.append(StoredResult(kind=m.ResultKind(kind), dataset=ds, instance_id=outcome.instance_id))
    except Exception:
        discard_results(sessions, store, stored)
        raise
    return stored


def record_results(s: Session, settings: Settings, visit_id: int | None, stored: list[StoredResult],
                   replaces: Mapping[str, list[Dataset]]) -> None:
    """In the caller's transaction: a result row for each stored object (naming the object of its kind it
    replaces, from ``replaces``) and its outbox entries for every ``[forward]`` destination."""
    for result in stored:
        ds, old = result.dataset, replaces.get(result.kind.value)
        s.add(m.ResultObject(visit_fk=visit_id, kind=result.kind, sop_instance_uid=str(ds.SOPInstanceUID),
                             series_instance_uid=str(ds.SeriesInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                             replaces_uid=str(old[0].SOPInstanceUID) if old else None,
                             instance_fk=result.instance_id))
    enqueue(s, [result.instance_id for result in stored], settings.forward.destinations)


def publish(settings: Settings, sessions: sessionmaker[Session], store: FileStore, visit_id: int | None,
            results: list[tuple[str, Dataset]],
            replaces: Mapping[str, list[Dataset]] | None = None) -> list[StoredResult]:
    """Store ``results``, write their result rows and queue them for PACS; all of it or nothing (raises)."""
    stored = store_results(settings, sessions, store, results)
    try:
        with transaction(sessions) as s:
            record_results(s, settings, visit_id, stored, replaces or {})
    except Exception:
        discard_results(sessions, store, stored)
        raise
    return stored


def discard_results(sessions: sessionmaker[Session], store: FileStore, stored: list[StoredResult]) -> int:
    """Take back stored result objects whose rows were then not written: their instance rows, their series
    once empty, and their files — so Q/R never serves results the database does not know. Returns the
    number of instances removed; a failure here is logged (the error that led here matters more) with
    the objects left behind."""
    if not stored:
        return 0
    try:
        return _discard(sessions, store, [result.instance_id for result in stored])
    except Exception:
        log.exception("could not take back result objects %s", [str(r.dataset.SOPInstanceUID) for r in stored])
        return 0


def _discard(sessions: sessionmaker[Session], store: FileStore, instance_ids: list[int]) -> int:
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

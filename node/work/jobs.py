"""Durable jobs: a row in ``jobs`` is the truth, Huey only dispatches.

Backends (``[queue]``): ``SqliteHuey`` on a local file with consumer threads inside
``myonode serve``; ``RedisHuey`` with ``myonode worker`` consumers on any machine that
reaches Redis and the database. A worker takes a job by leasing its row (state, attempts,
owner, expiry) in a transaction, so a job dispatched twice runs once; a failed job is
re-dispatched with a delay until ``max_attempts``; on start the node re-dispatches jobs
whose worker died.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from huey import RedisHuey, SqliteHuey, crontab
from huey.api import Huey
from huey.consumer import Consumer
from pydicom.dataset import Dataset
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.orm import Session, sessionmaker

from node.settings import QueueSettings, Settings
from storage import models as m
from storage.database import transaction
from storage.dicom_json import MetadataCache, series_listing
from storage.filestore import FileStore

log = logging.getLogger(__name__)

LEASE = timedelta(hours=1)
RETRY_DELAY_S = 30.0


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """What a job handler may use."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: FileStore


Handler = Callable[[JobContext, str], None]

PROCESS_VISIT = "process_visit"  # the job kind that quantifies one visit; its target is target_of_visit(id)
SIGN_VISIT = "sign_visit"  # the verified SR of a visit a reviewer accepted; its target is target_of_visit(id)
APPLY_CORRECTION = "apply_correction"  # a SEG sent back from a workstation; its target is target_of_correction(id)
BUILD_SITE_ATLAS = "build_site_atlas"  # a site atlas from the reviewed visits; its target is target_of_atlas(id)


def target_of_visit(visit_id: int) -> str:
    """The target of a job on a visit (``process_visit``, ``sign_visit``): ``visit:<id>``."""
    return f"visit:{visit_id}"


def visit_of_target(target: str) -> int | None:
    """The visit id a job's target names (:func:`target_of_visit` read back); None when it names no visit."""
    number = target.removeprefix("visit:")
    return int(number) if target.startswith("visit:") and number.isdigit() else None


def process_visit_job(ctx: JobContext, target: str) -> None:
    """``process_visit``: quantify the visit (measurements, QC pictures, DICOM results to store and PACS)."""
    from node.work.processing import (
        process_visit,  # imaging stack loaded only by workers that process
    )

    visit_id = visit_of_target(target)
    if visit_id is None:
        raise ValueError(f"{PROCESS_VISIT}: target {target!r} names no visit (expected 'visit:<id>')")
    process_visit(ctx.settings, ctx.sessions, ctx.store, visit_id)
    warm_metadata(ctx, visit_id)


def warm_metadata(ctx: JobContext, visit_id: int) -> None:
    """Fill the WADO-RS metadata cache (:class:`storage.dicom_json.MetadataCache`) for every series of the
    visit's studies — the images and the results just stored — so the reviewer who opens the visit in the
    viewer reads no file. The series are listed as DICOMweb lists them (:func:`node.dimse.qr.retrieve_files`),
    so the cached text is the one it asks for. Best effort: the visit is processed whatever happens here."""
    from node.dimse.qr import retrieve_files

    cache = MetadataCache.under(ctx.settings.storage.root, ctx.settings.web.metadata_cache_mb)
    if not cache.max_bytes:
        return
    try:
        with ctx.sessions() as s:
            uids = list(s.scalars(select(m.Study.study_instance_uid).where(m.Study.visit_fk == visit_id)))
            identifier = Dataset()
            identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", uids
            by_series = series_listing(ctx.store, retrieve_files(s, identifier) if uids else [])
        for series, files in by_series.items():
            cache.series(series, files)
    except Exception:  # derived data: a failure costs the first viewer some seconds, never the visit
        log.exception("metadata of visit %d's studies not cached", visit_id)


def sign_visit_job(ctx: JobContext, target: str) -> None:
    """``sign_visit``: the verified SR of a visit a reviewer accepted (node.work.signing)."""
    from node.work.signing import sign_visit  # the DICOM writers loaded only by workers

    visit_id = visit_of_target(target)
    if visit_id is None:
        raise ValueError(f"{SIGN_VISIT}: target {target!r} names no visit (expected 'visit:<id>')")
    sign_visit(ctx.settings, ctx.sessions, ctx.store, visit_id)


def target_of_correction(correction_id: int) -> str:
    """The target of an ``apply_correction`` job: ``correction:<id>``."""
    return f"correction:{correction_id}"


def apply_correction_job(ctx: JobContext, target: str) -> None:
    """``apply_correction``: re-measure a visit with the corrected ROIs of a SEG (node.work.corrections)."""
    from node.work.corrections import apply_correction

    prefix, _, number = target.partition(":")
    if prefix != "correction" or not number.isdigit():
        raise ValueError(f"{APPLY_CORRECTION}: target {target!r} names no correction (expected 'correction:<id>')")
    apply_correction(ctx.settings, ctx.sessions, ctx.store, int(number))


def target_of_atlas(atlas_id: str) -> str:
    """The target of a ``build_site_atlas`` job: ``atlas:<id>`` (its folder: ``[atlas] site_dir``/id)."""
    return f"atlas:{atlas_id}"


def build_site_atlas_job(ctx: JobContext, target: str) -> None:
    """``build_site_atlas``: a site atlas from the reviewed visits into ``[atlas] site_dir``/id (node.work.site_atlas);
    fewer usable visits than ``minimum`` fail the job with the visits left out and why."""
    from node.work.site_atlas import ATLAS_ID, build_from_visits

    prefix, _, atlas_id = target.partition(":")
    if prefix != "atlas" or not ATLAS_ID.fullmatch(atlas_id):
        raise ValueError(f"{BUILD_SITE_ATLAS}: target {target!r} names no atlas (expected 'atlas:<id>')")
    build_from_visits(ctx.settings, ctx.sessions, ctx.store, ctx.settings.atlas.site_dir / atlas_id, atlas_id)


HANDLERS: dict[str, Handler] = {PROCESS_VISIT: process_visit_job, SIGN_VISIT: sign_visit_job,
                                APPLY_CORRECTION: apply_correction_job, BUILD_SITE_ATLAS: build_site_atlas_job}


def make_huey(queue: QueueSettings) -> Huey:
    """The Huey instance for ``[queue]`` (results are not stored: outcomes live in the jobs table)."""
    if queue.backend == "redis":
        return RedisHuey(queue.name, url=queue.url, results=False)
    path = make_url(queue.url).database
    if not path:
        raise ValueError(f"[queue] url {queue.url!r} names no SQLite file")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(queue.name, filename=path, results=False)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's worker: trust its lease expiry instead
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobQueue:
    """Creates, dispatches, runs and recovers jobs."""

    def __init__(self, ctx: JobContext, handlers: dict[str, Handler] | None = None) -> None:
        self.ctx = ctx
        self.handlers = handlers if handlers is not None else HANDLERS
        self.huey = make_huey(ctx.settings.queue)
        self._task = self.huey.task(name="myonode.run_job")(self.run)
        minute, hour, day, month, weekday = ctx.settings.schedule.cohort_report.split()
        self._report = self.huey.periodic_task(
            crontab(minute=minute, hour=hour, day=day, month=month, day_of_week=weekday), name="myonode.cohort_report"
        )(self.scheduled_report)
        self._consumer: Consumer | None = None

    def scheduled_report(self) -> None:
        """The ``[schedule]`` task: the cohort report, which runs only when complete visits changed."""
        from node.work.reports import run_report

        run_report(self.ctx.settings)

    # --- producing -------------------------------------------------------------------

    def create(self, s: Session, kind: str, target: str, max_attempts: int = 3) -> m.Job:
        """A new queued job row in the caller's transaction; call :meth:`dispatch` after commit."""
        if kind not in self.handlers:
            raise ValueError(f"unknown job kind {kind!r}")
        job = m.Job(kind=kind, target=target, state=m.JobState.QUEUED, max_attempts=max_attempts)
        s.add(job)
        s.flush()
        return job

    def dispatch(self, job_id: int, delay_s: float | None = None) -> None:
        self._task.schedule((job_id,), delay=delay_s) if delay_s else self._task(job_id)

    def submit(self, kind: str, target: str, max_attempts: int = 3) -> int:
        with transaction(self.ctx.sessions) as s:
            job_id = self.create(s, kind, target, max_attempts).id
        self.dispatch(job_id)
        return job_id

    def retry(self, job_id: int) -> None:
        """Queue a failed (or any not running) job again with its attempts reset."""
        with transaction(self.ctx.sessions) as s:
            job = s.get(m.Job, job_id)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            if job.state is m.JobState.RUNNING and _pid_alive(job.lease_owner):
                raise ValueError(f"job {job_id} is running ({job.lease_owner})")
            job.state, job.attempts, job.last_error, job.lease_owner = m.JobState.QUEUED, 0, None, None
        self.dispatch(job_id)

    def recover(self) -> list[int]:
        """On start: re-dispatch queued jobs and jobs whose worker died or whose lease expired."""
        now = datetime.now(UTC)
        ids = []
        with transaction(self.ctx.sessions) as s:
            for job in s.scalars(select(m.Job).where(m.Job.state.in_([m.JobState.QUEUED, m.JobState.RUNNING]))):
                if job.state is m.JobState.RUNNING:
                    expired = job.lease_expires_at is None or job.lease_expires_at < now
                    if not expired and _pid_alive(job.lease_owner):
                        continue
                    log.warning("job %d (%s %s) was running in %s, which is gone: queued again",
                                job.id, job.kind, job.target, job.lease_owner)
                    job.state, job.lease_owner = m.JobState.QUEUED, None
                ids.append(job.id)
        for job_id in ids:
            self.dispatch(job_id)
        return ids

    # --- consuming -------------------------------------------------------------------

    def _lease(self, job_id: int) -> tuple[str, str] | None:
        """Take the job if it is queued: one conditional UPDATE, so concurrent workers cannot both win."""
        now = datetime.now(UTC)
        with transaction(self.ctx.sessions) as s:
            taken = cast(CursorResult, s.execute(  # an UPDATE's result is a CursorResult
                update(m.Job)
                .where(m.Job.id == job_id, m.Job.state == m.JobState.QUEUED)
                .values(state=m.JobState.RUNNING, attempts=m.Job.attempts + 1, lease_owner=worker_id(),
                        lease_expires_at=now + LEASE, started_at=now, finished_at=None, updated_at=now)
            )).rowcount
            if taken != 1:
                return None  # done, failed, missing, or running elsewhere: a duplicate dispatch
            job = s.get(m.Job, job_id)
            assert job is not None
            return job.kind, job.target

    def run(self, job_id: int) -> None:
        """Execute one job (the Huey task): lease, run the handler, record the outcome."""
        leased = self._lease(job_id)
        if leased is None:
            return
        kind, target = leased
        try:
            self.handlers[kind](self.ctx, target)
        except Exception as exc:
            error = "".join(traceback.format_exception_only(exc)).strip()
            log.exception("job %d (%s %s) failed", job_id, kind, target)
            with transaction(self.ctx.sessions) as s:
                job = s.get(m.Job, job_id)
                assert job is not None
                job.last_error, job.lease_owner, job.lease_expires_at = error[:4000], None, None
                again = job.attempts < job.max_attempts
                job.state = m.JobState.QUEUED if again else m.JobState.FAILED
                job.finished_at = None if again else datetime.now(UTC)
            if again:
                self.dispatch(job_id, delay_s=RETRY_DELAY_S * 2 ** (job.attempts - 1))
            return
        with transaction(self.ctx.sessions) as s:
            job = s.get(m.Job, job_id)
            assert job is not None
            job.state, job.last_error = m.JobState.DONE, None
            job.lease_owner, job.lease_expires_at = None, None
            job.finished_at = datetime.now(UTC)

    def start_consumers(self, workers: int, *, periodic: bool = True) -> None:
        """Consumer threads in this process; ``periodic`` also runs the ``[schedule]`` tasks. Huey's own
        ``start()`` would install signal handlers, which belong to ``myonode serve``, so the threads are
        started here."""
        consumer = self.huey.create_consumer(workers=workers, worker_type="thread", periodic=periodic,
                                             initial_delay=0.05, max_delay=1.0)
        consumer.scheduler.start()
        for _, worker in consumer.worker_threads:
            worker.start()
        self._consumer = consumer

    def stop_consumers(self) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None

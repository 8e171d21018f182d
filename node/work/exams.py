"""The node's exam watcher: assigns studies to visits and queues each complete visit exactly once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from node.intake.completeness import InstanceFacts, decide
from node.intake.visits import assign_study
from node.settings import Settings
from node.work.corrections import find_corrections
from node.work.jobs import APPLY_CORRECTION, PROCESS_VISIT, JobQueue, target_of_correction, target_of_visit
from storage import models as m
from storage.database import transaction
from storage.filestore import FileStore
from storage.visit_states import move_visit

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class AssignMark:
    """What :func:`assign_unassigned` has looked at: studies up to ``study_id``, with the subjects' Patient IDs as
    they were (``mappings``: their count and newest id). Studies it could not assign are tried again only
    when a Patient ID is mapped since — not every round: a site keeps many studies of no study subject."""

    study_id: int = 0
    mappings: tuple[int, int] = (-1, -1)
    all_tried_at: float = float("-inf")  # and, whatever changed, all of them once an hour


def assign_unassigned(s: Session, settings: Settings, mark: AssignMark | None = None) -> int:
    """Try to map the studies that have no visit yet: all of them when a Patient ID was mapped since ``mark``
    (or without one), else only the studies received since; ``mark`` moves on."""
    after = 0
    if mark is not None:
        count, newest = s.execute(select(func.count(), func.coalesce(func.max(m.SubjectPatientId.id), 0))
                                  .select_from(m.SubjectPatientId)).one()
        hourly = time.monotonic() - mark.all_tried_at > 3600
        after = mark.study_id if (count, newest) == mark.mappings and not hourly else 0
        if after == 0:
            mark.all_tried_at = time.monotonic()
        mark.mappings = (int(count), int(newest))
        mark.study_id = int(s.scalar(select(func.coalesce(func.max(m.Study.id), 0))) or 0)
    n = 0
    for study in s.scalars(select(m.Study).where(m.Study.visit_fk.is_(None), m.Study.id > after)
                           .order_by(m.Study.study_date)):
        if assign_study(s, study, settings.visits) is not None:
            n += 1
            s.flush()
    return n


def exam_facts(s: Session, *, visit_id: int | None = None,
               study_id: int | None = None) -> tuple[list[InstanceFacts], datetime | None, datetime | None]:
    """What completeness decides from, for a visit (all its studies) or one study: facts, first and last arrival."""
    which = m.Study.visit_fk == visit_id if visit_id is not None else m.Study.id == study_id
    rows = s.execute(
        select(m.Series.kind, m.Instance.station_key, m.Instance.b_values, m.Instance.derived)
        .join(m.Instance, m.Instance.series_fk == m.Series.id)
        .join(m.Study, m.Series.study_fk == m.Study.id)
        .where(which)
    ).all()
    first, last = s.execute(
        select(func.min(m.Series.first_received_at), func.max(m.Series.last_received_at))
        .join(m.Study, m.Series.study_fk == m.Study.id)
        .where(which, m.Series.kind != m.SeriesKind.RESULT)
    ).one()
    facts = [InstanceFacts(kind=kind.value, station_key=key, b_values=tuple(b or ()), derived=bool(derived)) for kind, key, b, derived in rows]
    return facts, first, last


def check_visits(sessions: sessionmaker[Session], settings: Settings, jobs: JobQueue,
                 now: datetime | None = None, mark: AssignMark | None = None) -> list[int]:
    """One round: assign studies (those new since ``mark``, or all), queue every receiving visit whose exam is
    ready. Returns queued job ids."""
    now = now or datetime.now(UTC)
    queued: list[int] = []
    looked = replace(mark) if mark is not None else None
    with transaction(sessions) as s:
        assign_unassigned(s, settings, looked)
    if mark is not None and looked is not None:  # only once the assignments are committed
        mark.study_id, mark.mappings, mark.all_tried_at = looked.study_id, looked.mappings, looked.all_tried_at
    with sessions() as s:
        receiving = list(s.scalars(select(m.Visit.id).where(m.Visit.state == m.VisitState.RECEIVING)))
    for visit_id in receiving:
        with transaction(sessions) as s:
            facts, first, last = exam_facts(s, visit_id=visit_id)
            if first is None or last is None:
                continue
            decision = decide(facts, settings.protocol, now, first, last)
            if not decision.ready:
                continue
            # A conditional move: a late instance (or another watcher) changing the state first wins.
            if not move_visit(s, visit_id, m.VisitState.QUEUED, incomplete=decision.incomplete, now=now):
                continue
            waiting = s.scalar(select(m.Job.id).where(m.Job.kind == PROCESS_VISIT, m.Job.target == target_of_visit(visit_id),
                                                      m.Job.state == m.JobState.QUEUED).limit(1))
            if waiting is not None:  # re-opened before its job started: that job will read everything
                log.info("visit %d ready again; job %d, still queued, processes it", visit_id, waiting)
                continue
            job = jobs.create(s, PROCESS_VISIT, target_of_visit(visit_id))
            queued.append(job.id)
            log.info("visit %d ready: %s%s", visit_id, decision.describe(settings.protocol),
                     " — processing what arrived, flagged incomplete" if decision.incomplete else "")
        jobs.dispatch(job.id)
    return queued


def check_corrections(sessions: sessionmaker[Session], store: FileStore, jobs: JobQueue) -> list[int]:
    """One round: every new SEG the node did not write becomes a correction and an ``apply_correction`` job."""
    with transaction(sessions) as s:
        found = find_corrections(s, store)
        job_ids = [jobs.create(s, APPLY_CORRECTION, target_of_correction(c)).id for c in found]
    for job_id in job_ids:
        jobs.dispatch(job_id)
    return job_ids


class ExamWatcher(threading.Thread):
    """Runs :func:`check_visits` and :func:`check_corrections` every ``interval_s`` seconds inside the node.

    ``settle`` (:meth:`node.intake.receiver.Receiver.settle`) first: an exam is judged on an index that holds
    every instance acknowledged until then, never on one behind the journal (a late station would be
    missed and the visit processed incomplete); when the index cannot catch up, that round neither assigns
    studies nor judges exams (it still looks for corrections)."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, jobs: JobQueue,
                 settle: Callable[[], bool], interval_s: float = 2.0) -> None:
        super().__init__(name="myonode-exam-watcher", daemon=True)
        self.sessions, self.settings, self.jobs, self.interval_s = sessions, settings, jobs, interval_s
        self.settle = settle
        self.store = FileStore(settings.storage.root)
        self.stopping = threading.Event()
        self.mark = AssignMark()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                if self.settle():
                    check_visits(self.sessions, self.settings, self.jobs, mark=self.mark)
                check_corrections(self.sessions, self.store, self.jobs)
            except Exception:
                log.exception("exam check failed; will try again")

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

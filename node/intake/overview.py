"""What the node holds and what is pending, as plain data for `myonode status` (and the report).

Counted from the series rows, which ingest keeps counted (instances and their bytes per series), never by
reading every instance row: a year of a busy site is some 660,000 of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydicom.uid import UID
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import models as m


@dataclass(frozen=True, kw_only=True)
class StudyLine:
    patient_id: str
    study_uid: str
    study_date: str
    subject: str | None
    visit: str | None
    visit_state: str | None
    series: int
    instances: int
    t2_series: int
    dwi_series: int
    last_received_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class NodeStatus:
    studies: list[StudyLine]
    instances: int
    bytes_stored: int
    conflicts: int
    jobs: dict[m.JobState, int]
    outbox: dict[m.OutboxState, int]
    unknown_patients: list[str]
    kinds: dict[m.SeriesKind, tuple[int, int]]  # (series, instances) per classification
    other_classes: dict[str, int]  # instances classified "other", per SOP class (its name where known)


def received_between(s: Session, since: datetime, until: datetime) -> tuple[int, int]:
    """Instances and studies received in [since, until]: a bounded range of the ``received_at`` index."""
    row = s.execute(select(func.count(m.Instance.id), func.count(func.distinct(m.Series.study_fk)))
                    .join(m.Series, m.Instance.series_fk == m.Series.id)
                    .where(m.Instance.received_at >= since, m.Instance.received_at <= until)).one()
    return int(row[0]), int(row[1])


def node_status(s: Session, limit: int = 50) -> NodeStatus:
    """Counts and the most recent studies, newest first; patients not mapped to a subject listed apart."""
    per_study = (
        select(
            m.Study.id,
            func.count(m.Series.id).label("series"),
            func.coalesce(func.sum(m.Series.n_instances), 0).label("instances"),
            func.count(m.Series.id).filter(m.Series.kind == m.SeriesKind.T2).label("t2"),
            func.count(m.Series.id).filter(m.Series.kind == m.SeriesKind.DWI).label("dwi"),
            func.max(m.Series.last_received_at).label("last"),
        )
        .join(m.Series, m.Series.study_fk == m.Study.id, isouter=True)
        .group_by(m.Study.id)
        .subquery()
    )
    rows = s.execute(
        select(m.Study, m.Patient.patient_id, m.Visit, m.Subject.subject_id, per_study)
        .join(m.Patient, m.Study.patient_fk == m.Patient.id)
        .join(per_study, per_study.c.id == m.Study.id)
        .join(m.Visit, m.Study.visit_fk == m.Visit.id, isouter=True)
        .join(m.Subject, m.Visit.subject_fk == m.Subject.id, isouter=True)
        .order_by(per_study.c.last.desc().nulls_last())
        .limit(limit)
    ).all()
    studies = [
        StudyLine(
            patient_id=r.patient_id, study_uid=r.Study.study_instance_uid,
            study_date=r.Study.study_date.isoformat() if r.Study.study_date else "",
            subject=r.subject_id, visit=r.Visit.label if r.Visit else None,
            visit_state=r.Visit.state.value if r.Visit else None, series=r.series, instances=r.instances,
            t2_series=r.t2, dwi_series=r.dwi, last_received_at=r.last,
        )
        for r in rows
    ]
    known = select(m.SubjectPatientId.patient_id)
    unknown = s.scalars(
        select(m.Patient.patient_id).where(m.Patient.patient_id.not_in(known)).order_by(m.Patient.patient_id)
    ).all()
    # grouped by an expression, not the column: the planner would otherwise walk the whole SOP class index
    sop_class = func.coalesce(m.Instance.sop_class_uid, "")
    instances, bytes_stored = s.execute(select(func.coalesce(func.sum(m.Series.n_instances), 0),
                                               func.coalesce(func.sum(m.Series.bytes_stored), 0))).one()
    return NodeStatus(
        studies=studies,
        instances=int(instances),
        bytes_stored=int(bytes_stored),
        conflicts=s.scalar(select(func.count()).select_from(m.Instance).where(m.Instance.conflict)) or 0,
        jobs=dict(s.execute(select(m.Job.state, func.count()).group_by(m.Job.state)).all()),
        outbox=dict(s.execute(select(m.OutboxItem.state, func.count()).group_by(m.OutboxItem.state)).all()),
        unknown_patients=list(unknown),
        kinds={kind: (int(n_series), int(n_instances)) for kind, n_series, n_instances in s.execute(
            select(m.Series.kind, func.count(m.Series.id), func.coalesce(func.sum(m.Series.n_instances), 0))
            .group_by(m.Series.kind))},
        other_classes={UID(uid).name: int(n) for uid, n in s.execute(  # name: the UID itself when unknown
            select(sop_class, func.count())  # found by the series' index: only "other" series are read
            .where(m.Instance.series_fk.in_(select(m.Series.id).where(m.Series.kind == m.SeriesKind.OTHER)))
            .group_by(sop_class).order_by(func.count().desc()))},
    )

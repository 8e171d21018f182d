"""Map received studies to study subjects and visits.

A DICOM patient belongs to a subject when its Patient ID (and issuer, when the subject's
entry names one) is listed in ``subject_patient_ids``. The visit is named by the Clinical
Trial Time Point ID when the scanner sends one the ``[visits]`` settings know, otherwise by
the study date's days since the subject's baseline (its earliest study date) and the
group's visit windows. Studies of unknown patients, or dates outside every window, stay
unassigned and are listed by ``myonode status`` — never dropped, never guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from node.settings import VisitSettings
from storage import models as m
from storage.visit_states import open_visit

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Assignment:
    subject_id: str
    label: str
    reason: str


def visit_label(
    visits: VisitSettings, group: m.Group, study_date: date | None, baseline_date: date | None, time_point: str | None
) -> tuple[str | None, str]:
    """The visit label for a study and why (pure: no database)."""
    if time_point:
        label = visits.label_for_time_point(time_point)
        if label is not None:
            return label, f"Clinical Trial Time Point ID {time_point!r}"
    if study_date is None:
        return None, "no study date and no known time point"
    if baseline_date is None or study_date <= baseline_date:
        return visits.baseline, "first study of the subject"
    days = (study_date - baseline_date).days
    label = visits.label_for_days(days, group)
    if label is None:
        return None, f"study date is {days} days after baseline, outside every {group.value} visit window"
    return label, f"{days} days after baseline"


def subject_for_patient(s: Session, patient: m.Patient) -> m.Subject | None:
    return s.scalars(
        select(m.Subject)
        .join(m.SubjectPatientId)
        .where(
            m.SubjectPatientId.patient_id == patient.patient_id,
            or_(m.SubjectPatientId.issuer == "", m.SubjectPatientId.issuer == patient.issuer),
        )
    ).first()


def assign_study(s: Session, study: m.Study, visits: VisitSettings) -> Assignment | None:
    """Link ``study`` to its subject's visit (creating the visit row); None when it cannot be assigned."""
    subject = subject_for_patient(s, study.patient)
    if subject is None:
        return None
    baseline_date = s.scalar(
        select(func.min(m.Study.study_date))
        .join(m.Patient)
        .join(m.SubjectPatientId, m.SubjectPatientId.patient_id == m.Patient.patient_id)
        .where(m.SubjectPatientId.subject_fk == subject.id, m.Study.study_date.is_not(None))
    )
    label, reason = visit_label(visits, subject.group, study.study_date, baseline_date, study.time_point_id)
    if label is None:
        log.warning("study %s of subject %s not assigned to a visit: %s", study.study_instance_uid,
                    subject.subject_id, reason)
        return None
    study.visit = open_visit(s, subject, label, study.study_date)
    log.info("study %s -> subject %s visit %s (%s)", study.study_instance_uid, subject.subject_id, label, reason)
    return Assignment(subject_id=subject.subject_id, label=label, reason=reason)

"""Import the study team's spreadsheets into the database: subjects, clinical and electrophysiology data.

Each file is validated completely before anything is written, and is written in the
caller's single transaction, so a bad row changes nothing. Imports are idempotent: a row
that is already stored with the same value changes nothing; a changed value is updated.
Clinical and electrophysiology files may be tidy (``subject_id, visit, days, measure, muscle,
side, value``) or wide (one row per visit, a column per value, see
:func:`stats.inputs.wide_to_rows`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from stats.inputs import InputError, read_observations, read_subjects, wide_to_rows
from storage import models as m
from storage.visit_states import open_visit

Source = Literal["clinical", "ephys"]
SOURCE_MEASURES: dict[Source, set[str]] = {
    "clinical": {"ALSFRS-R", "MRC", "MRC_sum", "dynamometry", "weight"},
    "ephys": {"MUNIX", "MUSIX", "CMAP"},
}


@dataclass(frozen=True, kw_only=True)
class ImportSummary:
    added: int
    updated: int
    unchanged: int

    def __str__(self) -> str:
        return f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged"


def import_subjects(s: Session, path: Path) -> ImportSummary:
    """Create or update subjects and the DICOM Patient IDs that belong to them."""
    frame = read_subjects(path)
    owners = {(pid.patient_id, pid.issuer): pid.subject.subject_id for pid in s.scalars(select(m.SubjectPatientId))}
    added = updated = unchanged = 0
    for row in frame.to_dict("records"):
        for pid in row["patient_ids"]:
            owner = owners.get((pid, ""))
            if owner is not None and owner != row["subject_id"]:
                raise InputError(f"{path}: line {row['line']}, column patient_ids: Patient ID {pid!r} "
                                 f"already belongs to subject {owner!r}")
        values = {
            "group": m.Group(row["group"]), "sex": m.Sex(row["sex"]), "baseline_age": float(row["age"]),
            "onset_site": m.OnsetSite(row["onset_site"]) if row["onset_site"] else None,
            "onset_side": m.Side(row["onset_side"]) if row["onset_side"] else None,
            "diagnosis": m.Diagnosis(row["diagnosis"]) if row["diagnosis"] in ("ALS", "PMA") else None,
        }
        subject = s.scalars(select(m.Subject).where(m.Subject.subject_id == row["subject_id"])).one_or_none()
        if subject is None:
            s.add(m.Subject(subject_id=row["subject_id"], **values,
                            patient_ids=[m.SubjectPatientId(patient_id=p) for p in row["patient_ids"]]))
            added += 1
            continue
        changed = any(getattr(subject, k) != v for k, v in values.items())
        for k, v in values.items():
            setattr(subject, k, v)
        have = {p.patient_id for p in subject.patient_ids}
        for pid in row["patient_ids"]:
            if pid not in have:
                subject.patient_ids.append(m.SubjectPatientId(patient_id=pid))
                changed = True
        updated, unchanged = (updated + 1, unchanged) if changed else (updated, unchanged + 1)
    s.flush()
    return ImportSummary(added=added, updated=updated, unchanged=unchanged)


def link_patient_id(s: Session, *, subject_id: str, patient_id: str) -> m.Subject:
    """Let DICOM Patient ID ``patient_id`` belong to subject ``subject_id`` — the rule of
    :func:`import_subjects`: a Patient ID belongs to one subject only, and the subject must exist."""
    subject = s.scalars(select(m.Subject).where(m.Subject.subject_id == subject_id)).one_or_none()
    if subject is None:
        raise InputError(f"subject {subject_id!r} does not exist (import it with myonode import subjects)")
    owner = s.scalars(select(m.SubjectPatientId).where(m.SubjectPatientId.patient_id == patient_id,
                                                       m.SubjectPatientId.issuer == "")).one_or_none()
    if owner is not None and owner.subject_fk != subject.id:
        raise InputError(f"Patient ID {patient_id!r} already belongs to subject {owner.subject.subject_id!r}")
    if owner is None:
        subject.patient_ids.append(m.SubjectPatientId(patient_id=patient_id))
        s.flush()
    return subject


def _is_tidy(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    return {"measure", "value"} <= set(header)


def import_observations(s: Session, path: Path, source: Source, visits: list[str]) -> ImportSummary:
    """Store clinical or electrophysiology values on their subjects' visits (created when missing)."""
    subjects = {sub.subject_id: sub for sub in s.scalars(select(m.Subject))}
    known = pd.DataFrame({"subject_id": list(subjects)})
    rows = None if _is_tidy(path) else wide_to_rows(path)
    frame = read_observations(path, known, visits, rows=rows)
    wrong = frame[~frame["measure"].isin(SOURCE_MEASURES[source])]
    if not wrong.empty:
        r = wrong.iloc[0]
        raise InputError(f"{path}: line {r['line']}, column measure: {r['measure']!r} is not {source} data "
                         f"(expected one of {sorted(SOURCE_MEASURES[source])})")
    added = updated = unchanged = 0
    visit_cache: dict[tuple[str, str], m.Visit] = {}
    for r in frame.to_dict("records"):
        key = (r["subject_id"], r["visit"])
        visit = visit_cache.get(key)
        if visit is None:
            subject = subjects[r["subject_id"]]
            baseline = s.scalars(select(m.Visit).where(m.Visit.subject_fk == subject.id,
                                                       m.Visit.label == visits[0])).one_or_none()
            date = (baseline.visit_date + timedelta(days=int(r["days"]))
                    if baseline is not None and baseline.visit_date else None)
            visit = open_visit(s, subject, r["visit"], date)
            visit_cache[key] = visit
        existing = s.scalars(select(m.Observation).where(
            m.Observation.visit_fk == visit.id, m.Observation.measure == r["measure"],
            m.Observation.muscle == r["muscle"], m.Observation.side == m.Side(r["side"]))).one_or_none()
        if pd.isna(r["value"]):
            continue
        if existing is None:
            s.add(m.Observation(visit_fk=visit.id, source=m.ObservationSource(source), measure=r["measure"],
                                muscle=r["muscle"], side=m.Side(r["side"]), value=float(r["value"]),
                                source_file=str(path)))
            added += 1
        elif existing.value != float(r["value"]):
            existing.value, existing.source_file = float(r["value"]), str(path)
            updated += 1
        else:
            unchanged += 1
    s.flush()
    return ImportSummary(added=added, updated=updated, unchanged=unchanged)




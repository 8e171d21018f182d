"""Assemble the statistics' tidy inputs from the database (subjects, measurements, observations), and say when their
imaging measurements come from more than one atlas (a table never mixes atlases: an atlas change would masquerade as
a change of the muscles)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stats.inputs import OBSERVATION_COLUMNS, Cohort
from storage import models as m


def cohort_from_db(s: Session, visits: list[str], visit_ids: set[int] | None = None, *,
                   rejected_rois: set[tuple[int, str, str]] | None = None,
                   rejected_visits: set[int] | None = None) -> Cohort:
    """Subjects and their visits' measurements (relT2, ADC) and clinical/electrophysiology observations.

    ``days`` is counted from the subject's baseline visit date; only the visits in ``visit_ids``
    are used when given (the report uses complete visits only). ``rejected_rois`` ((visit id,
    muscle, side)) and the imaging of ``rejected_visits`` are left out (a reviewer rejected them).
    """
    subjects = []
    for sub in s.scalars(select(m.Subject).order_by(m.Subject.subject_id)):
        if sub.baseline_age is None or sub.sex is None:
            continue  # cannot enter the models (age and sex are covariates everywhere)
        subjects.append({
            "subject_id": sub.subject_id, "group": sub.group.value, "sex": sub.sex.value, "age": sub.baseline_age,
            "onset_site": sub.onset_site.value if sub.onset_site else "",
            "onset_side": sub.onset_side.value if sub.onset_side and sub.onset_side.value != "none" else "",
            "diagnosis": sub.diagnosis.value if sub.diagnosis else "",
        })
    subj = pd.DataFrame(subjects, columns=["subject_id", "group", "sex", "age", "onset_site", "onset_side", "diagnosis"])
    subj["female"] = (subj["sex"] == "F").astype(float)
    subj["patient"] = (subj["group"] == "patient").astype(float)
    rows = []
    q = select(m.Visit, m.Subject.subject_id).join(m.Subject)
    baseline_dates = {sid: v.visit_date for v, sid in s.execute(q) if v.label == visits[0]}
    if visit_ids is not None:
        q = q.where(m.Visit.id.in_(visit_ids))
    for visit, sid in s.execute(q):
        if visit.label not in visits or sid not in set(subj["subject_id"]):
            continue
        base = baseline_dates.get(sid)
        days = float((visit.visit_date - base).days) if base and visit.visit_date else 0.0
        for meas in m.in_effect(visit.measurements):  # a person's corrected ROI replaces the automatic one
            if visit.id in (rejected_visits or set()) or \
                    (visit.id, meas.muscle, meas.side.value) in (rejected_rois or set()):
                continue
            rows.append((sid, visit.label, days, meas.modality.value, meas.muscle, meas.side.value, meas.value))
        for ob in visit.observations:
            rows.append((sid, visit.label, days, ob.measure, ob.muscle, ob.side.value, ob.value))
    obs = pd.DataFrame(rows, columns=OBSERVATION_COLUMNS)
    return Cohort(subjects=subj, observations=obs, visits=visits)


def atlas_mix(s: Session, visit_ids: set[int] | None = None, in_use: str | None = None) -> str | None:
    """None when every automatic measurement of the visits (all, or ``visit_ids``) comes from one atlas — ``in_use``, when the
    caller knows the atlas the study is measured with; else what to say: that atlas (or the atlas of the newest
    measurements) and the visits measured with another that wait to be processed again."""
    q = (select(m.Measurement.atlas_id, m.Subject.subject_id, m.Visit.label, func.max(m.Measurement.created_at))
         .join(m.Visit, m.Measurement.visit_fk == m.Visit.id).join(m.Subject)
         .where(m.Measurement.atlas_id.is_not(None), m.Measurement.source == m.MeasurementSource.AUTOMATIC)
         .group_by(m.Measurement.atlas_id, m.Subject.subject_id, m.Visit.label))
    if visit_ids is not None:
        q = q.where(m.Visit.id.in_(visit_ids))
    by_atlas: dict[str, list[tuple[str, str]]] = {}
    newest: dict[str, datetime] = {}
    for atlas_id, subject_id, label, created in s.execute(q).all():
        if atlas_id is None or created is None:
            continue
        by_atlas.setdefault(atlas_id, []).append((subject_id, label))
        newest[atlas_id] = max(newest.get(atlas_id, created), created)
    if (set(by_atlas) <= {in_use}) if in_use is not None else len(by_atlas) < 2:
        return None
    current = in_use if in_use is not None else max(newest, key=newest.__getitem__)
    waiting = sorted((subject, label, atlas) for atlas, visits in by_atlas.items() if atlas != current
                     for subject, label in visits)
    listed = ", ".join(f"{subject} {label} ({atlas})" for subject, label, atlas in waiting[:20])
    more = f" and {len(waiting) - 20} more" if len(waiting) > 20 else ""
    if in_use is not None:
        return (f"the study is measured with {current}; the tables never mix atlases. "
                f"{len(by_atlas.get(current, []))} visit(s) are measured with it; {len(waiting)} still wait to be "
                f"processed again with it: {listed}{more}")
    return (f"the measurements come from {len(by_atlas)} atlases; the tables never mix them. "
            f"{len(by_atlas[current])} visit(s) are measured with {current}, the newest; {len(waiting)} still wait "
            f"to be processed again with it: {listed}{more}")

"""Assembling the statistics' inputs from the database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Engine

from stats.cohort import cohort_from_db
from stats.run import compute
from storage import models as m
from storage.database import session_factory, transaction
from storage.migrate import upgrade

VISITS = ["baseline", "m4", "m6", "m12"]


def test_cohort_from_db_feeds_the_tables(engine: Engine) -> None:
    """Measurements and observations of stored visits become tidy rows with days since baseline."""
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        for i in range(6):
            group = m.Group.PATIENT if i < 3 else m.Group.CONTROL
            sub = m.Subject(subject_id=f"S{i}", group=group, sex=m.Sex.MALE if i % 2 else m.Sex.FEMALE,
                            baseline_age=50.0 + i, onset_site=m.OnsetSite.LOWER_LIMB if i < 3 else None,
                            onset_side=m.Side.LEFT if i < 3 else None)
            plan = [("baseline", date(2026, 1, 5)), ("m4" if i < 3 else "m6", date(2026, 5, 15))]
            for label, day in plan:
                v = m.Visit(subject=sub, label=label, visit_date=day, state=m.VisitState.PROCESSED)
                for side in (m.Side.LEFT, m.Side.RIGHT):
                    v.measurements.append(m.Measurement(
                        modality=m.Modality.REL_T2, muscle="tibialis_anterior", side=side,
                        value=1.0 + 0.3 * (i < 3) + 0.1 * (label != "baseline") * (i < 3) + 0.01 * i,
                        voxel_count=100, pipeline_version="test"))
                v.observations.append(m.Observation(source=m.ObservationSource.CLINICAL, measure="ALSFRS-R",
                                                    muscle="", side=m.Side.NONE, value=40.0 - (label != "baseline")))
                s.add(v)
    with factory() as s:
        cohort = cohort_from_db(s, VISITS)
    assert len(cohort.subjects) == 6
    later = cohort.observations[cohort.observations["visit"] != "baseline"]
    assert set(later["days"]) == {130.0}
    result = compute(cohort)
    t1 = result.frames["table1"]
    ta = t1[(t1["muscle"] == "tibialis_anterior") & (t1["side"] == "left")].iloc[0]
    assert ta["n_patients"] == 3 and ta["n_controls"] == 3 and ta["pct_diff"] > 20

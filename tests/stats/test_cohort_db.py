"""Assembling the statistics' inputs from the database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Engine, select

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


def test_measurements_from_two_atlases_are_never_tabulated_together_and_the_visits_that_wait_are_named(
        engine: Engine) -> None:
    """After an atlas change, the visits still measured with the old atlas are named (the newest measurements'
    atlas is the one in use); once every visit is measured with one atlas, the tables may run."""
    from datetime import UTC, datetime, timedelta

    from stats.cohort import atlas_mix

    upgrade(engine)
    factory = session_factory(engine)
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    with transaction(factory) as s:
        for i, atlas in enumerate(("site-atlas-2", "site-atlas-1", "site-atlas-2")):
            sub = m.Subject(subject_id=f"S{i}", group=m.Group.CONTROL, sex=m.Sex.MALE, baseline_age=50.0)
            v = m.Visit(subject=sub, label="baseline", visit_date=date(2026, 1, 5), state=m.VisitState.PROCESSED)
            v.measurements.append(m.Measurement(modality=m.Modality.REL_T2, muscle="quadriceps", side=m.Side.LEFT,
                                                value=1.0, voxel_count=100, pipeline_version="test", atlas_id=atlas,
                                                created_at=t0 + timedelta(days=i if atlas == "site-atlas-2" else -1)))
            s.add(v)
    with factory() as s:
        said = atlas_mix(s)
        one = atlas_mix(s, {v.id for v in s.scalars(select(m.Visit)) if v.subject.subject_id != "S1"})
    assert said is not None and "2 atlases" in said and "2 visit(s) are measured with site-atlas-2, the newest" in said
    assert "1 still wait to be processed again with it: S1 baseline (site-atlas-1)" in said
    assert one is None


def test_after_an_atlas_is_pinned_the_tables_wait_for_every_visit_measured_with_another_and_corrections_do_not_count(
        engine: Engine) -> None:
    """All visits still measured with the old atlas: one atlas, but not the study's — the tables wait; a corrected
    ROI's value (a person's ROI, kept across re-processing) never makes a visit wait."""
    from stats.cohort import atlas_mix

    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        for i, atlas in enumerate(("old", "old", "site-1")):
            sub = m.Subject(subject_id=f"S{i}", group=m.Group.CONTROL, sex=m.Sex.MALE, baseline_age=50.0)
            v = m.Visit(subject=sub, label="baseline", visit_date=date(2026, 1, 5), state=m.VisitState.PROCESSED)
            v.measurements.append(m.Measurement(modality=m.Modality.REL_T2, muscle="quadriceps", side=m.Side.LEFT,
                                                value=1.0, voxel_count=100, pipeline_version="test", atlas_id=atlas))
            v.measurements.append(m.Measurement(modality=m.Modality.REL_T2, muscle="quadriceps", side=m.Side.LEFT,
                                                value=1.1, voxel_count=90, pipeline_version="test", atlas_id="older",
                                                source=m.MeasurementSource.CORRECTED))
            s.add(v)
    with factory() as s:
        ids = {v.subject.subject_id: v.id for v in s.scalars(select(m.Visit))}
        said = atlas_mix(s, {ids["S0"], ids["S1"]}, in_use="site-1")
        assert said is not None and said.startswith("the study is measured with site-1")
        assert "0 visit(s) are measured with it; 2 still wait" in said and "S0 baseline (old), S1 baseline (old)" in said
        assert atlas_mix(s, {ids["S2"]}, in_use="site-1") is None
        assert atlas_mix(s, {ids["S0"], ids["S1"]}) is None  # without the study's atlas: one atlas, no mix

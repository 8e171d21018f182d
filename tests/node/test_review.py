"""Review decisions (pure rules over real rows): what may be rejected, what re-processing resets, what the
statistics leave out, and which inputs a report uses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy.orm import Session

from node.work.reports import review_inputs
from node.work.review import ReviewError, decide_visit, reject_roi, rejected_rois, reset_changed, visit_review
from quant.pipeline import MeasurementRow
from storage import models as m
from storage.database import make_engine, session_factory
from storage.migrate import upgrade


@pytest.fixture
def s(tmp_path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


def visit(s: Session, state: m.VisitState = m.VisitState.PROCESSED, subject: str = "P001") -> m.Visit:
    v = m.Visit(subject=m.Subject(subject_id=subject, group=m.Group.PATIENT), label="baseline",
                visit_date=date(2026, 3, 1), state=state)
    s.add(v)
    s.flush()
    for modality, value in ((m.Modality.REL_T2, 1.5), (m.Modality.ADC, 0.0015)):
        for muscle, side in (("tibialis_anterior", "left"), ("tibialis_anterior", "right"), ("tongue", "none")):
            s.add(m.Measurement(visit_fk=v.id, modality=modality, muscle=muscle, side=m.Side(side), value=value,
                                voxel_count=100, pipeline_version="1", stations=[1]))
    s.flush()
    return v


def row(muscle: str, side: str, value: float, modality: m.Modality = m.Modality.REL_T2) -> MeasurementRow:
    return MeasurementRow(muscle=muscle, side=side, modality=modality, value=value, mean_signal=1.0, sd=0.1,
                          reference_value=1.0, voxel_count=100, volume_ml=1.0, stations=[1], qc_flags=[])


def test_an_roi_rejection_names_its_reason_and_replaces_an_earlier_one(s: Session) -> None:
    v = visit(s)
    reject_roi(s, visit_id=v.id, muscle="tibialis_anterior", side="left", reason=m.RejectReason.ARTEFACT,
               note=None, reviewer="anna")
    reject_roi(s, visit_id=v.id, muscle="tibialis_anterior", side="left", reason=m.RejectReason.MISREGISTERED,
               note="leaks", reviewer="ben")
    review = visit_review(s, v.id)
    assert list(review.rejected) == [("tibialis_anterior", "left")]
    assert review.rejected[("tibialis_anterior", "left")].reason is m.RejectReason.MISREGISTERED
    assert review.verdict is None


@pytest.mark.parametrize(("muscle", "side", "reason", "note", "message"), [
    ("biceps", "left", m.RejectReason.ARTEFACT, None, "not a muscle × side of the catalogue"),
    ("tongue", "left", m.RejectReason.ARTEFACT, None, "not a muscle × side of the catalogue"),
    ("deltoid", "left", m.RejectReason.ARTEFACT, None, "has no measurement of deltoid left"),
    ("tongue", "none", m.RejectReason.OTHER, " ", "needs a note"),
])
def test_a_rejection_that_cannot_be_taken_says_why(s: Session, muscle, side, reason, note, message) -> None:
    v = visit(s)
    with pytest.raises(ReviewError, match=message):
        reject_roi(s, visit_id=v.id, muscle=muscle, side=side, reason=reason, note=note, reviewer="anna")


def test_only_a_processed_visit_is_reviewed_and_a_rejected_visit_needs_a_reason(s: Session) -> None:
    receiving = visit(s, m.VisitState.RECEIVING, "P002")
    with pytest.raises(ReviewError, match="is receiving"):
        decide_visit(s, visit_id=receiving.id, verdict=m.ReviewVerdict.ACCEPTED, reason=None, note=None,
                     reviewer="anna", organisation=None)
    v = visit(s)
    with pytest.raises(ReviewError, match="needs a reason"):
        decide_visit(s, visit_id=v.id, verdict=m.ReviewVerdict.REJECTED, reason=None, note=None, reviewer="anna",
                     organisation=None)
    decide_visit(s, visit_id=v.id, verdict=m.ReviewVerdict.ACCEPTED, reason=None, note=None, reviewer="anna",
                 organisation="MND unit")
    assert visit_review(s, v.id).verdict is m.ReviewVerdict.ACCEPTED


def test_re_processing_resets_the_decisions_its_new_values_invalidate(s: Session) -> None:
    v = visit(s)
    for side in ("left", "right"):
        reject_roi(s, visit_id=v.id, muscle="tibialis_anterior", side=side, reason=m.RejectReason.ARTEFACT,
                   note=None, reviewer="anna")
    decide_visit(s, visit_id=v.id, verdict=m.ReviewVerdict.ACCEPTED, reason=None, note=None, reviewer="anna",
                 organisation=None)
    before = {("relT2", "tibialis_anterior", "left"): 1.5, ("relT2", "tibialis_anterior", "right"): 1.5}
    same = [row("tibialis_anterior", "left", 1.5), row("tibialis_anterior", "right", 1.5)]
    assert reset_changed(s, v.id, before, same) == 0
    changed = [row("tibialis_anterior", "left", 1.6), row("tibialis_anterior", "right", 1.5)]
    assert reset_changed(s, v.id, before, changed) == 2  # the left ROI's rejection and the acceptance
    s.flush()
    review = visit_review(s, v.id)
    assert review.verdict is None and list(review.rejected) == [("tibialis_anterior", "right")]


def test_the_statistics_leave_out_what_was_rejected_once_anything_is_reviewed(s: Session) -> None:
    a, b = visit(s), visit(s, subject="P002")
    assert review_inputs(s, "auto", {a.id, b.id}).use == "all"
    reject_roi(s, visit_id=a.id, muscle="tongue", side="none", reason=m.RejectReason.NOT_COVERED, note=None,
               reviewer="anna")
    decide_visit(s, visit_id=b.id, verdict=m.ReviewVerdict.REJECTED, reason=m.RejectReason.ARTEFACT,
                 note="motion", reviewer="anna", organisation=None)
    assert rejected_rois(s) == ({(a.id, "tongue", "none")}, {b.id})
    inputs = review_inputs(s, "auto", {a.id, b.id})
    assert inputs.use == "reviewed" and inputs.used
    assert inputs.summary() == {"use": "reviewed", "visits_reviewed": 2, "visits_accepted": 0,
                                "visits_rejected": 1, "rois_rejected": 1,
                                "rois_rejected_by_reason": {"not_covered": 1}, "rois_corrected": 0}
    assert not review_inputs(s, "all", {a.id, b.id}).used


def test_a_corrected_value_replaces_the_automatic_one_in_the_statistics(s: Session) -> None:
    from stats.cohort import cohort_from_db

    v = visit(s)
    v.subject.baseline_age, v.subject.sex = 60.0, m.Sex.MALE
    s.add(m.Measurement(visit_fk=v.id, modality=m.Modality.REL_T2, muscle="tibialis_anterior", side=m.Side.LEFT,
                        source=m.MeasurementSource.CORRECTED, value=1.9, voxel_count=90, pipeline_version="1",
                        stations=[1]))
    s.flush()
    obs = cohort_from_db(s, ["baseline"]).observations
    ta = obs[(obs["measure"] == "relT2") & (obs["muscle"] == "tibialis_anterior")]
    assert sorted(zip(ta["side"], ta["value"], strict=True)) == [("left", 1.9), ("right", 1.5)]
    assert review_inputs(s, "all", {v.id}).summary()["rois_corrected"] == 1

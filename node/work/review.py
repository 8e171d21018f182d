"""A person reviews a processed visit: accepts it, or rejects single muscle × side ROIs or the whole visit.

Decisions are rows (:class:`storage.models.Review`) with reviewer, time and reason, written with
their audit record by the console. Accepting a visit queues a ``sign_visit`` job
(:mod:`node.work.signing`). The measurements of a rejected ROI stay in the index; the statistics
leave them out (``[report] use``, :func:`rejected_rois`).

Re-processing (:func:`reset_changed`) removes the decisions its new values invalidate: the
rejection of an ROI whose value changed, and the visit's acceptance or rejection if any changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage import models as m
from storage.catalogue import MUSCLE_BY_KEY

if TYPE_CHECKING:
    from quant.pipeline import MeasurementRow

log = logging.getLogger(__name__)

class ReviewError(ValueError):
    """A decision that cannot be taken (unknown visit or muscle, a visit not processed, no reason given)."""


@dataclass(frozen=True, kw_only=True)
class VisitReview:
    """Where a visit's review stands."""

    verdict: m.ReviewVerdict | None  # of the whole visit
    reviewer: str | None
    at: datetime | None
    rejected: dict[tuple[str, str], m.Review]  # (muscle, side) → the rejection


def visit_review(s: Session, visit_id: int) -> VisitReview:
    rows = list(s.scalars(select(m.Review).where(m.Review.visit_fk == visit_id).order_by(m.Review.id)))
    whole = [r for r in rows if r.muscle is None]
    last = whole[-1] if whole else None
    rejected = {(r.muscle, r.side.value): r for r in rows if r.muscle is not None and r.side is not None
                and r.verdict is m.ReviewVerdict.REJECTED}
    return VisitReview(verdict=last.verdict if last else None, reviewer=last.reviewer if last else None,
                       at=last.at if last else None, rejected=rejected)


def _processed(s: Session, visit_id: int) -> m.Visit:
    visit = s.get(m.Visit, visit_id)
    if visit is None:
        raise ReviewError(f"no visit {visit_id}")
    if visit.state is not m.VisitState.PROCESSED:
        raise ReviewError(f"visit {visit_id} is {visit.state.value}: only a processed visit can be reviewed")
    return visit


def reject_roi(s: Session, *, visit_id: int, muscle: str, side: str, reason: m.RejectReason, note: str | None,
               reviewer: str) -> m.Review:
    """Reject one muscle × side ROI of a processed visit (both its relative T2 and its ADC)."""
    _processed(s, visit_id)
    if muscle not in MUSCLE_BY_KEY or side not in MUSCLE_BY_KEY[muscle].sides:
        raise ReviewError(f"{muscle} {side} is not a muscle × side of the catalogue")
    measured = s.scalars(select(m.Measurement.id).where(m.Measurement.visit_fk == visit_id,
                                                        m.Measurement.muscle == muscle,
                                                        m.Measurement.side == m.Side(side))).first()
    if measured is None:
        raise ReviewError(f"visit {visit_id} has no measurement of {muscle} {side}")
    if reason is m.RejectReason.OTHER and not (note or "").strip():
        raise ReviewError("a rejection for another reason needs a note saying what it is")
    s.execute(delete(m.Review).where(m.Review.visit_fk == visit_id, m.Review.muscle == muscle,
                                     m.Review.side == m.Side(side)))
    review = m.Review(visit_fk=visit_id, muscle=muscle, side=m.Side(side), verdict=m.ReviewVerdict.REJECTED,
                      reason=reason, note=(note or "").strip() or None, reviewer=reviewer)
    s.add(review)
    s.flush()
    return review


def decide_visit(s: Session, *, visit_id: int, verdict: m.ReviewVerdict, reason: m.RejectReason | None,
                 note: str | None, reviewer: str, organisation: str | None) -> m.Review:
    """Accept or reject a processed visit as a whole (a rejection needs a reason)."""
    _processed(s, visit_id)
    if verdict is m.ReviewVerdict.REJECTED and reason is None:
        raise ReviewError("rejecting a visit needs a reason")
    if reason is m.RejectReason.OTHER and not (note or "").strip():
        raise ReviewError("a rejection for another reason needs a note saying what it is")
    s.execute(delete(m.Review).where(m.Review.visit_fk == visit_id, m.Review.muscle.is_(None)))
    review = m.Review(visit_fk=visit_id, verdict=verdict, reason=reason if verdict is m.ReviewVerdict.REJECTED
                      else None, note=(note or "").strip() or None, reviewer=reviewer, organisation=organisation)
    s.add(review)
    s.flush()
    return review


def reset_changed(s: Session, visit_id: int, before: dict[tuple[str, str, str], float],
                  after: Iterable[MeasurementRow]) -> int:
    """After re-processing: drop the decisions the new values invalidate; returns how many went."""
    now = {(r.modality.value, r.muscle, r.side): r.value for r in after}
    changed = {(muscle, side) for (modality, muscle, side) in before.keys() | now.keys()
               if before.get((modality, muscle, side)) != now.get((modality, muscle, side))}
    if not changed:
        return 0
    gone = 0
    for review in s.scalars(select(m.Review).where(m.Review.visit_fk == visit_id)):
        if review.muscle is None or (review.muscle, review.side.value if review.side else "") in changed:
            s.delete(review)
            gone += 1
    if gone:
        log.info("visit %d re-processed with new values for %d ROI(s): %d review decision(s) reset", visit_id,
                 len(changed), gone)
    return gone


def rejected_rois(s: Session) -> tuple[set[tuple[int, str, str]], set[int]]:
    """What the statistics leave out: (visit, muscle, side) ROIs rejected, and visits rejected as a whole."""
    rois: set[tuple[int, str, str]] = set()
    visits: dict[int, m.ReviewVerdict] = {}
    for r in s.scalars(select(m.Review).order_by(m.Review.id)):
        if r.muscle is None:
            visits[r.visit_fk] = r.verdict
        elif r.verdict is m.ReviewVerdict.REJECTED and r.side is not None:
            rois.add((r.visit_fk, r.muscle, r.side.value))
    return rois, {v for v, verdict in visits.items() if verdict is m.ReviewVerdict.REJECTED}

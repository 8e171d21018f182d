"""A visit's life, in one place: how a visit is opened, the states it can be in and the moves between them.

Every change of a visit's state goes through :func:`move_visit` (or, for the ingest path's prepared
statement, :func:`reopen_statement`); nothing else writes ``visits.state``. The moves::

    receiving  → queued       the exam watcher: the exam is complete, or waited long enough (flagged incomplete)
    queued     → processing   a ``process_visit`` job starts (also from any other state: a job queued before a
                              late instance re-opened the visit, ``myonode process --force``, a retry)
    processing → processed    the measurements and result rows committed
    processing → failed       the job raised (it is retried; a retry moves it to processing again)
    any        → receiving    a new instance of one of the visit's series arrived (re-opened; queued again
                              when ready)

A move from any other state is not made: :func:`move_visit` is one conditional UPDATE, so of two
writers racing (a late instance re-opening the visit while its job finishes) the first wins and the
second sees it — a visit re-opened while it was processed stays ``receiving`` and is processed again.

A visit is opened (:func:`open_visit`) by the first study assigned to it or by the first clinical
value imported for it, whichever comes first; its date is the date it was opened with, and a date that
was not known then (an imported visit without a baseline) is filled in by the first one that is.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import cast

from sqlalchemy import Update, bindparam, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from storage import models as m

VisitState = m.VisitState

MOVES: dict[VisitState, frozenset[VisitState]] = {
    VisitState.RECEIVING: frozenset({VisitState.QUEUED, VisitState.PROCESSING}),
    VisitState.QUEUED: frozenset({VisitState.PROCESSING, VisitState.RECEIVING}),
    VisitState.PROCESSING: frozenset({VisitState.PROCESSED, VisitState.FAILED, VisitState.RECEIVING,
                                      VisitState.PROCESSING}),
    VisitState.PROCESSED: frozenset({VisitState.PROCESSING, VisitState.RECEIVING}),
    VisitState.FAILED: frozenset({VisitState.PROCESSING, VisitState.RECEIVING}),
}


def may_move(source: VisitState, target: VisitState) -> bool:
    return target in MOVES[source]


def sources(target: VisitState) -> frozenset[VisitState]:
    """The states a visit may move to ``target`` from."""
    return frozenset(state for state, targets in MOVES.items() if target in targets)


def move_visit(s: Session, visit_id: int, target: VisitState, *, incomplete: bool | None = None,
               now: datetime | None = None) -> bool:
    """Move the visit to ``target`` if its state allows it (one conditional UPDATE in the caller's transaction);
    False when it does not (another writer moved it first). ``incomplete``: the exam watcher's flag, set with
    the move to ``queued``. Raises LookupError for a visit that does not exist."""
    values: dict[str, object] = {"state": target, "updated_at": now or datetime.now(UTC)}
    if incomplete is not None:
        values["incomplete"] = incomplete
    moved = cast(CursorResult, s.execute(  # an UPDATE's result is a CursorResult
        update(m.Visit).where(m.Visit.id == visit_id, m.Visit.state.in_(sources(target))).values(**values)
        .execution_options(synchronize_session="fetch"))).rowcount == 1
    if not moved and s.get(m.Visit, visit_id) is None:
        raise LookupError(f"visit {visit_id} does not exist")
    return moved


def reopen_statement() -> Update:
    """The ingest path's move to ``receiving``, prepared once: the visit of the series ``:sid`` (a new instance
    arrived in it) at ``:now``, unless it is receiving already."""
    return (
        update(m.Visit)
        .where(m.Visit.id == select(m.Study.visit_fk).join(m.Series).where(m.Series.id == bindparam("sid"))
               .scalar_subquery(),
               m.Visit.state.in_(sources(VisitState.RECEIVING)))
        .values(state=VisitState.RECEIVING, updated_at=bindparam("now"))
    )


def open_visit(s: Session, subject: m.Subject, label: str, visit_date: date | None) -> m.Visit:
    """The subject's visit ``label``, opened (``receiving``) if it does not exist yet; see the module docstring
    for its date."""
    visit = s.scalars(select(m.Visit).where(m.Visit.subject_fk == subject.id, m.Visit.label == label)).one_or_none()
    if visit is None:
        visit = m.Visit(subject=subject, label=label, visit_date=visit_date, state=VisitState.RECEIVING)
        s.add(visit)
        s.flush()
    elif visit.visit_date is None and visit_date is not None:
        visit.visit_date = visit_date
    return visit

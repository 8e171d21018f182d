"""A visit's state changes only by the moves storage/visit_states.py allows, each one conditional."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import Engine

from storage import models as m
from storage.database import session_factory, transaction
from storage.migrate import upgrade
from storage.visit_states import MOVES, may_move, move_visit, open_visit, sources

S = m.VisitState


def test_every_state_has_its_moves_and_only_processing_leads_to_processed_or_failed() -> None:
    assert set(MOVES) == set(S)
    assert sources(S.PROCESSED) == sources(S.FAILED) == {S.PROCESSING}
    assert sources(S.QUEUED) == {S.RECEIVING}
    assert sources(S.RECEIVING) == set(S) - {S.RECEIVING}  # a late instance re-opens a visit whatever it is
    assert not may_move(S.RECEIVING, S.PROCESSED) and may_move(S.FAILED, S.PROCESSING)


@pytest.fixture
def sessions(engine: Engine):
    upgrade(engine)
    return session_factory(engine)


def test_a_visit_reopened_while_it_was_processed_stays_receiving(sessions) -> None:
    with transaction(sessions) as s:
        subject = m.Subject(subject_id="MND-001", group=m.Group.PATIENT)
        s.add(subject)
        visit_id = open_visit(s, subject, "baseline", date(2026, 1, 5)).id
    with transaction(sessions) as s:
        assert move_visit(s, visit_id, S.QUEUED, incomplete=True)
        assert not move_visit(s, visit_id, S.QUEUED)  # a second watcher: already queued
        assert move_visit(s, visit_id, S.PROCESSING)
        assert move_visit(s, visit_id, S.RECEIVING)  # a late instance arrived meanwhile
        assert not move_visit(s, visit_id, S.PROCESSED)  # the job's end does not hide it
    with sessions() as s:
        visit = s.get_one(m.Visit, visit_id)
        assert (visit.state, visit.incomplete) == (S.RECEIVING, True)
    with transaction(sessions) as s, pytest.raises(LookupError, match="visit 999 does not exist"):
        move_visit(s, 999, S.PROCESSING)


def test_a_visit_keeps_the_date_it_was_opened_with_and_gets_one_it_lacked(sessions) -> None:
    with transaction(sessions) as s:
        subject = m.Subject(subject_id="MND-002", group=m.Group.PATIENT)
        s.add(subject)
        imported = open_visit(s, subject, "month6", None)  # clinical values before any imaging, no baseline
        dated = open_visit(s, subject, "baseline", date(2026, 1, 5))
        assert open_visit(s, subject, "month6", date(2026, 7, 1)) is imported
        assert open_visit(s, subject, "baseline", date(2026, 1, 9)) is dated
        assert (imported.visit_date, dated.visit_date) == (date(2026, 7, 1), date(2026, 1, 5))
        assert imported.state is dated.state is S.RECEIVING

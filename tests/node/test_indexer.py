"""When the indexer indexes (node/intake/indexer.py): once a push pauses, never later than ``[storage]
index_wait_s`` after its first unindexed entry, and at once for anyone who waits for the index."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from io import BytesIO

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from node.intake.indexer import ARRIVAL_GAP_S, wait_before_indexing
from node.service import Foundation, open_foundation
from node.settings import Settings
from storage import models as m
from tests.support.dicom_factory import mr_image
from tests.support.waiting import wait_for


def test_entries_wait_while_their_push_goes_on() -> None:
    assert wait_before_indexing(since_first_s=0.5, since_last_s=0.01, now=False, index_wait_s=2.0) == \
        pytest.approx(ARRIVAL_GAP_S - 0.01)


def test_a_paused_push_is_indexed_at_once() -> None:
    assert wait_before_indexing(since_first_s=0.5, since_last_s=ARRIVAL_GAP_S, now=False, index_wait_s=2.0) == 0


def test_no_entry_waits_longer_than_index_wait_s_however_long_the_push() -> None:
    assert wait_before_indexing(since_first_s=1.99, since_last_s=0.0, now=False, index_wait_s=2.0) == \
        pytest.approx(0.01)
    assert wait_before_indexing(since_first_s=2.0, since_last_s=0.0, now=False, index_wait_s=2.0) == 0


def test_someone_waiting_for_the_index_or_index_wait_s_zero_means_at_once() -> None:
    assert wait_before_indexing(since_first_s=0.0, since_last_s=0.0, now=True, index_wait_s=2.0) == 0
    assert wait_before_indexing(since_first_s=0.0, since_last_s=0.0, now=False, index_wait_s=0.0) == 0


def test_index_wait_s_must_be_shorter_than_the_health_alert(node_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match=r"index_wait_s \(30\) must be shorter than journal_alert_s"):
        node_settings(storage="index_wait_s = 30\njournal_alert_s = 20")


@pytest.fixture
def foundation(node_settings: Callable[..., Settings]) -> Iterator[Foundation]:
    """A store whose indexer would let a push wait half a minute."""
    base = open_foundation(node_settings(storage="index_wait_s = 30"), migrate=True, index="first")
    yield base
    base.close()


def instances(count: int) -> list[bytes]:
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(count):
        buffer = BytesIO()
        mr_image(study_uid=study, series_uid=series, size=8, seed=i, instance_number=i + 1,
                 position=(0.0, float(i), 0.0)).save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def indexed(base: Foundation) -> int:
    with base.sessions() as s:
        return s.scalar(select(func.count()).select_from(m.Instance)) or 0


class Push(threading.Thread):
    """``data`` received one by one, ``every_s`` apart; ``acknowledged``: how many the receiver took (checked
    by the test once the thread is joined — an assertion inside a thread fails nothing)."""

    def __init__(self, base: Foundation, data: list[bytes], every_s: float) -> None:
        super().__init__()
        self.base, self.data, self.every_s, self.acknowledged = base, data, every_s, 0

    def run(self) -> None:
        for one in self.data:
            if not self.base.receiver.receive(one, calling_ae="SCANNER", peer_address="127.0.0.1",
                                              expected_sop_uid=None).ok:
                return
            self.acknowledged += 1
            time.sleep(self.every_s)


def test_a_reader_mid_push_finds_every_instance_acknowledged_before_it_asked(foundation: Foundation) -> None:
    data = instances(60)
    pushing = Push(foundation, data, every_s=0.01)  # a push that lasts about 0.6 s, not 30
    pushing.start()
    try:
        while len(foundation.journal.pending()) < 10 and pushing.is_alive():
            time.sleep(0.005)
        pending = {e.path.name for e in foundation.journal.pending()}
        assert foundation.receiver.settle(timeout_s=20)
        assert not pending & {e.path.name for e in foundation.journal.pending()}
        assert indexed(foundation) >= len(pending)
    finally:
        pushing.join()
    assert pushing.acknowledged == len(data)


def test_a_push_is_indexed_once_it_pauses_without_anyone_asking(foundation: Foundation) -> None:
    data = instances(20)
    pushing = Push(foundation, data, every_s=0.002)
    pushing.start()
    pushing.join()
    assert pushing.acknowledged == len(data)
    # index_wait_s is 30: only the pause can have started it. The rows are committed before the entries
    # leave the journal, so both are waited for.
    wait_for(lambda: indexed(foundation) == len(data) and foundation.journal.pending() == [], 20,
             "every entry of the paused push indexed and out of the journal", step_s=0.05)


def test_stopping_indexes_what_a_push_left_waiting(node_settings: Callable[..., Settings]) -> None:
    settings = node_settings(storage="index_wait_s = 30")
    base = open_foundation(settings, migrate=True, index="first")
    data = instances(5)
    for one in data:
        assert base.receiver.receive(one, calling_ae="SCANNER", peer_address="127.0.0.1", expected_sop_uid=None).ok
    base.close()
    again = open_foundation(settings, migrate=True, index="never")
    try:
        assert indexed(again) == len(data) and again.journal.pending() == []
    finally:
        again.close()

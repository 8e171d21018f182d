"""The ingest journal: durable entries in arrival order, who sent them, kept after indexing, set aside on failure."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from storage.journal import Journal


def test_entries_come_back_in_arrival_order_with_their_sender(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    written = [journal.write(f"instance {i}".encode(), calling_ae="SCANNER 1", peer_address=f"10.0.0.{i}")
               for i in range(5)]
    pending = journal.pending()
    assert [e.path for e in pending] == [e.path for e in written]
    assert [(e.calling_ae, e.peer_address) for e in pending] == [("SCANNER 1", f"10.0.0.{i}") for i in range(5)]
    assert pending[2].path.read_bytes() == b"instance 2"
    assert journal.pending(limit=2) == pending[:2]


def test_a_sender_unknown_or_odd_survives_the_file_name(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write(b"x", calling_ae=None, peer_address=None)
    journal.write(b"y", calling_ae="A/B.C ÄÖ", peer_address="::1")
    first, second = journal.pending()
    assert (first.calling_ae, first.peer_address) == (None, None)
    assert (second.calling_ae, second.peer_address) == ("A/B.C ÄÖ", "::1")


def test_done_keeps_an_entry_under_its_hash_and_forget_drops_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry = journal.write(b"content", calling_ae="S", peer_address="h")
    journal.done(entry, sha256="ab" * 32)
    assert journal.pending() == []
    (kept,) = journal.kept()
    assert kept.sha256 == "ab" * 32 and kept.calling_ae == "S" and kept.path.read_bytes() == b"content"
    journal.forget("ab" * 32)
    assert journal.kept() == []


def test_done_without_a_hash_removes_an_entry_nothing_was_stored_for(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry = journal.write(b"duplicate", calling_ae="S", peer_address="h")
    journal.done(entry, sha256=None)
    assert journal.pending() == [] and journal.kept() == []


def test_prune_forgets_only_kept_entries_older_than_the_horizon(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for i, sha in enumerate(("a" * 64, "b" * 64)):
        journal.done(journal.write(bytes([i]), calling_ae=None, peer_address=None), sha256=sha)
    assert journal.prune(older_than_s=3600) == 0
    time.sleep(0.05)
    assert journal.prune(older_than_s=0.01) == 2
    assert journal.kept() == []


def test_a_failed_entry_is_set_aside_with_its_reason_not_deleted(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry = journal.write(b"garbage", calling_ae=None, peer_address=None)
    moved = journal.fail(entry, "not indexable: no DICM")
    assert journal.pending() == []
    assert journal.failures() == [(moved, "not indexable: no DICM")]
    assert moved.read_bytes() == b"garbage"


def test_an_interrupted_write_leaves_only_a_partial_file_that_the_sweep_removes(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    partial = journal.folder / ".incoming-x.part"
    partial.write_bytes(b"half")
    assert journal.pending() == []
    assert journal.sweep_partials() == [partial] and not partial.exists()


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    journal = Journal(tmp_path)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", disk_full)
    try:
        journal.write(b"data", calling_ae=None, peer_address=None)
    except OSError:
        pass
    else:
        raise AssertionError("the write should have failed")
    assert [p.name for p in journal.folder.iterdir() if p.is_file()] == []


def test_wait_drained_returns_when_the_entries_pending_at_the_call_are_gone(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entries = [journal.write(b"x", calling_ae=None, peer_address=None) for _ in range(3)]
    assert journal.wait_drained(timeout_s=0.05) is False

    def index_later() -> None:
        time.sleep(0.1)
        for e in entries:
            journal.done(e, sha256=None)

    threading.Thread(target=index_later).start()
    assert journal.wait_drained(timeout_s=10) is True
    assert journal.wait_drained(timeout_s=0) is True  # nothing pending: at once

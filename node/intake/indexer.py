"""The indexer: the journal's entries (acknowledged by :class:`node.intake.receiver.Receiver` once durable)
become index rows, written by one :class:`Indexer` per store that commits whatever has accumulated — from
every association and every listener process — in one transaction.

When: once the push that sends them pauses (50 ms without an entry), but never later than
``[storage] index_wait_s`` after the first of them arrived; at once when someone waits for the index
(:data:`node.intake.receiver.NOW`) or with ``index_wait_s = 0``. Why wait at all: indexing costs about
1 ms of CPU an instance (pydicom's header parse is half of it), which on a 2-core node competes with the
receiver: a push of 1000 small instances was acknowledged at 547 instances/s with every entry indexed as
it arrived, at 872 with this wait (README, "DICOM node", 2026-12-07). A push waits for its
acknowledgements; nobody waits for the index but the readers below, who say so.

- :class:`Indexer` (a thread of ``myonode serve``; an ``flock`` keeps it to one per store)
  indexes entries oldest first, in batches, through :meth:`Ingestor.index_journal`. On start
  it indexes what a crash left in the journal and reconciles the entries it keeps for
  ``[storage] journal_keep_hours`` with the index, re-indexing any whose row is missing (an
  index restored from an older file, a lost transaction). A database error (or a full disk)
  leaves the entries where they are and is retried with back-off; an entry that cannot be
  indexed is set aside in ``journal/failed/`` with its reason and the others go on; should the
  loop itself fail, it is logged and started again (``restarts``), so no entry can stop intake.
  Its liveness is the age of the oldest pending entry (``/healthz``, ``/metrics``).
- Readers that must see every acknowledged instance (C-FIND, C-GET, C-MOVE, storage
  commitment, DICOMweb, the exam watcher before it judges an exam complete) first call
  :meth:`node.intake.receiver.Receiver.settle`: it tells the indexer to index at once and waits
  until the entries pending at that moment are indexed (a few milliseconds; at most ``timeout_s``,
  then they answer with what is indexed and log it).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import socket
import threading
import time

from sqlalchemy import select as sql_select
from sqlalchemy.exc import SQLAlchemyError

from node.intake.ingest import Ingestor, ParsedHeaders, StoreOutcome, retry_later
from node.intake.metrics import IngestMetrics
from node.intake.receiver import NOW, wake_address
from storage import models as m
from storage.database import refresh_statistics
from storage.journal import Journal, JournalEntry

log = logging.getLogger(__name__)

PARTIAL_AGE_S = 60.0  # a journal write untouched this long was interrupted (even 1 GiB is written in seconds)
ARRIVAL_GAP_S = 0.05  # no entry for this long: a push has paused, index what it sent
WAIT_STEP_S = 0.05  # while waiting for a push to pause, look this often (a NOW is answered within it)


def wait_before_indexing(*, since_first_s: float, since_last_s: float, now: bool, index_wait_s: float) -> float:
    """How long the indexer waits before indexing what has arrived (0: at once): until the push that sent it
    pauses (``ARRIVAL_GAP_S`` without an entry), but never longer than ``index_wait_s`` after the first of
    them arrived; at once when asked to (``now``: someone waits for the index) or ``index_wait_s`` is 0.
    ``since_first_s`` / ``since_last_s``: since the first and the last entry arrived that are not indexed."""
    if now or index_wait_s <= 0:
        return 0.0
    return max(0.0, min(ARRIVAL_GAP_S - since_last_s, index_wait_s - since_first_s))


class Indexer(threading.Thread):
    """Indexes journal entries as they arrive (one per store, across processes; see the module docstring)."""

    def __init__(self, ingestor: Ingestor, journal: Journal, *, keep_s: float, batch_max: int = 512,
                 idle_s: float = 1.0, index_wait_s: float = 0.0, metrics: IngestMetrics | None = None) -> None:
        """``index_wait_s``: how long entries may wait for the push that sends them to pause
        (:func:`wait_before_indexing`; ``[storage] index_wait_s``)."""
        super().__init__(name="myonode-indexer", daemon=True)
        self.ingestor, self.journal = ingestor, journal
        self.keep_s, self.batch_max, self.idle_s, self.index_wait_s = keep_s, batch_max, idle_s, index_wait_s
        self.metrics = metrics
        self.parsed = ParsedHeaders()  # from this process's Receiver: not parsed twice
        self.stopping = threading.Event()
        self.ready = threading.Event()  # set once the lock is held, the socket bound and the start-up work done
        self.indexed = 0  # entries indexed since start
        self.restarts = 0  # times the loop failed and was started again
        self.restart_delay_s = 5.0
        self.heartbeat = time.monotonic()  # the loop's last turn (it turns at least every idle_s)
        self.passed_over: set[str] = set()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._lock_file: int | None = None
        self._last_prune = 0.0

    def start_and_wait(self, timeout_s: float = 60.0) -> Indexer:
        self.start()
        if not self.ready.wait(timeout_s):
            raise RuntimeError(f"the indexer of {self.journal.folder} did not start within {timeout_s:.0f} s "
                               "(another myonode serve on the same store holds its lock?)")
        return self

    def _acquire(self) -> bool:
        fd = os.open(self.journal.folder / ".indexer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        said = False
        while not self.stopping.is_set():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_file = fd
                self.parsed.open()
                if said:
                    log.info("this process now indexes the journal of %s", self.journal.folder)
                return True
            except BlockingIOError:
                if not said:  # e.g. `myonode web` beside `myonode serve`: it takes over if serve stops
                    log.info("another process indexes %s; this one waits to take over", self.journal.folder)
                    said = True
                self.stopping.wait(1.0)
        os.close(fd)
        return False

    def run(self) -> None:
        """Hold the lock, then index until stopped; a failure of the loop itself is logged and the loop
        started again (after ``restart_delay_s``), so the indexer never ends while the node runs."""
        if not self._acquire():
            return
        try:
            self._sock.bind(wake_address(self.journal))
            while not self.stopping.is_set():
                try:
                    self._serve()
                except Exception:  # a bug or the unforeseen: say so, keep indexing
                    self.restarts += 1
                    if self.metrics is not None:
                        self.metrics.indexer_restarts.inc()
                    log.exception("the indexer of %s failed; starting it again in %.0f s (restart %d)",
                                  self.journal.folder, self.restart_delay_s, self.restarts)
                    self.ready.set()  # the node serves on; what is pending is indexed once the indexer is back
                    self.stopping.wait(self.restart_delay_s)
            with contextlib.suppress(Exception):
                self.drain()  # stopping: what the listeners acknowledged until now
        finally:
            self.ready.set()
            self._sock.close()
            if self._lock_file is not None:
                os.close(self._lock_file)  # releases the flock
                self._lock_file = None

    def _serve(self) -> None:
        self._sweep()
        left = len(self.journal.pending())
        if left:
            log.info("indexing %d journal entr%s left by the last run", left, "y" if left == 1 else "ies")
        self.drain()
        self.reconcile()
        self._maintain()
        self.ready.set()
        backoff = 0.0
        first: float | None = None  # when the first and the last entry not yet indexed arrived (monotonic)
        last = 0.0
        while not self.stopping.is_set():
            self.heartbeat = time.monotonic()
            now = False
            if backoff:
                self.stopping.wait(backoff)
            elif first is None:  # wait for an entry (and look anyway every idle_s: a wake may have been lost)
                readable, _, _ = select.select([self._sock], [], [], self.idle_s)
                if readable:
                    _, now = self._empty_socket()
                    first = last = time.monotonic()
            else:  # waiting for the push to pause: not woken by each of its entries
                self.stopping.wait(WAIT_STEP_S)
                arrived, now = self._empty_socket()
                if arrived:
                    last = time.monotonic()
            if first is not None:
                clock = time.monotonic()
                if wait_before_indexing(since_first_s=clock - first, since_last_s=clock - last, now=now,
                                        index_wait_s=self.index_wait_s) > 0:
                    continue
            first = None
            backoff = 0.0 if self.drain() else min(30.0, max(0.5, backoff * 2))
            if time.monotonic() - self._last_prune > 3600:
                self._maintain()

    def _sweep(self) -> None:
        """Remove journal writes a crash interrupted — those untouched for a minute: receivers of this and other
        processes may be writing theirs now (the loop restarts while they listen; ``myonode web`` takes over)."""
        for path in self.journal.sweep_partials(older_than_s=PARTIAL_AGE_S):
            log.warning("removed %s, a journal write a crash interrupted (never acknowledged)", path)

    def _maintain(self) -> None:
        """Hourly: forget kept journal names past ``keep_s``, sweep interrupted writes; refresh the index's
        query statistics (SQLite)."""
        self._last_prune = time.monotonic()
        self._sweep()
        self.journal.prune(older_than_s=self.keep_s)
        try:
            refresh_statistics(self.ingestor.engine)
        except SQLAlchemyError as exc:  # the planner's statistics can wait an hour; indexing cannot
            log.warning("could not refresh the index's statistics: %s", exc)

    def _empty_socket(self) -> tuple[bool, bool]:
        """Read every datagram waiting: was there any, and did one ask for the index at once (:data:`NOW`)."""
        any_, now = False, False
        with contextlib.suppress(BlockingIOError):
            while True:
                now |= self._sock.recv(64, socket.MSG_DONTWAIT) == NOW
                any_ = True
        return any_, now

    def drain(self) -> bool:
        """Index everything pending now; False (logged, entries kept) when the database or the disk failed.

        An entry that cannot be indexed is set aside by :meth:`Ingestor.index_journal`; one that cannot even
        be set aside (its file gone or not movable) is left where it is, logged once, and passed over."""
        while True:
            entries = [e for e in self.journal.pending(self.batch_max + len(self.passed_over))
                       if e.path.name not in self.passed_over][:self.batch_max]
            if not entries:
                return True
            try:
                outcomes = self.ingestor.index_journal(entries, self.journal, self.parsed)
            except Exception as exc:
                if retry_later(exc):
                    log.error("indexing %d journal entr%s failed, kept for a retry: %s",
                              len(entries), "y" if len(entries) == 1 else "ies", exc)
                    return False
                log.exception("indexing %d journal entries failed; trying them one by one", len(entries))
                alone = self._one_by_one(entries)
                if alone is None:
                    return False
                outcomes = alone
            self.indexed += len(entries)
            if self.metrics is not None:
                self.metrics.indexed.inc(len(entries))
                self.metrics.set_aside.inc(sum(1 for o in outcomes if not o.ok))

    def _one_by_one(self, entries: list[JournalEntry]) -> list[StoreOutcome] | None:
        """Each entry in its own call; one that fails even so is passed over. None: the database or disk failed."""
        outcomes: list[StoreOutcome] = []
        for entry in entries:
            try:
                outcomes += self.ingestor.index_journal([entry], self.journal, self.parsed)
            except Exception as exc:
                if retry_later(exc):
                    return None
                self.passed_over.add(entry.path.name)
                log.error("journal entry %s can neither be indexed nor set aside (%s: %s); left in the journal "
                          "and passed over until the next start", entry.path.name, exc.__class__.__name__, exc)
        return outcomes

    def reconcile(self) -> int:
        """Put back what the disk did not keep of recent indexing; returns how many instances needed it.

        For every kept entry (indexed within ``keep_s``): no row with its SHA-256 — the index lost
        the transaction (power cut, an older database file put back) — index it again; a row whose
        file is missing — the disk lost the link — link the kept entry there again."""
        kept = {e.sha256: e for e in self.journal.kept(newer_than_s=self.keep_s) if e.sha256}
        if not kept:
            return 0
        files: dict[str, list[str]] = {}
        shas = list(kept)
        with self.ingestor.sessions() as s:
            for i in range(0, len(shas), 500):
                for sha, path in s.execute(sql_select(m.Instance.sha256, m.Instance.file_path)
                                           .where(m.Instance.sha256.in_(shas[i:i + 500]))):
                    files.setdefault(sha, []).append(path)
        missing = [kept[sha] for sha in shas if sha not in files]
        relinked = 0
        for sha, paths in files.items():
            for relative in paths:
                target = self.ingestor.store.absolute(relative)
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(kept[sha].path, target)
                    relinked += 1
        if relinked:
            log.warning("%d indexed file(s) were missing from the store; linked again from the journal", relinked)
        if missing:
            log.warning("the index lacks %d instance(s) the journal acknowledged (an older or damaged index?): "
                        "indexing them again", len(missing))
            for i in range(0, len(missing), self.batch_max):
                self.ingestor.index_journal(missing[i:i + self.batch_max], self.journal)
        return len(missing) + relinked

    def stop(self, timeout_s: float = 30.0) -> None:
        """Index what is pending, then stop."""
        self.stopping.set()
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(NOW, wake_address(self.journal))
        if self.is_alive():
            self.join(timeout=timeout_s)

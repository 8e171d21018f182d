"""The receiver: what a C-STORE handler (or STOW-RS) calls, in any process, to take in one instance.

The promise (README, "Durability"): a C-STORE is acknowledged only after the instance's bytes are
fsync'd in the journal and the journal folder fsync'd (:meth:`storage.journal.Journal.write`), so
``kill -9`` or a power cut can lose nothing acknowledged. :class:`Receiver` validates the header
(a bad data set is refused, nothing kept), writes the journal entry, wakes the indexer
(:mod:`node.intake.indexer`) with one datagram on an abstract Unix socket named after the store,
and answers. Readers that must see every acknowledged instance (C-FIND, C-GET, C-MOVE, storage
commitment) first call :meth:`Receiver.settle`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import time

from node.intake.ingest import (
    DEFAULT_LIMITS,
    SUCCESS,
    BadDatasetError,
    Header,
    Limits,
    ParsedHeaders,
    StoreOutcome,
    not_stored,
    read_header,
    unreadable,
)
from node.intake.metrics import IngestMetrics
from storage.journal import Journal

log = logging.getLogger(__name__)

SETTLE_TIMEOUT_S = 10.0


def wake_address(journal: Journal) -> bytes:
    """The indexer's abstract Unix socket (Linux): no file, gone with the process, one per store."""
    return b"\0myonode-indexer-" + hashlib.sha256(str(journal.folder).encode()).hexdigest()[:24].encode()


# What a datagram to the indexer says (the compiled receiver, node/dimse/dcmtk/receiver.cc, sends ARRIVED too).
ARRIVED = b"1"  # an entry was journaled: index it (the indexer may wait for the rest of a push)
NOW = b"2"  # someone waits for the index: index what is pending at once


class Receiver:
    """Validate, journal durably, wake the indexer, answer (thread-safe; one per process)."""

    def __init__(self, journal: Journal, parsed: ParsedHeaders | None = None,
                 metrics: IngestMetrics | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        """``parsed``: where to leave the header of each entry for the indexer of this process
        (:attr:`node.intake.indexer.Indexer.parsed`); ``limits``: what one instance may be (refused beyond,
        nothing kept)."""
        self.journal = journal
        self.limits = limits
        self.parsed = parsed
        self.metrics = metrics
        self._address = wake_address(journal)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def receive(
        self, data: bytes, *, calling_ae: str | None, peer_address: str | None, expected_sop_uid: str | None,
        via: str = "dimse", header: Header | None = None,
    ) -> StoreOutcome:
        """Make ``data`` durable in the journal and say so; never raises. ``via``: "dimse" or "dicomweb";
        ``header``: ``data`` already read by :func:`read_header` under this receiver's ``limits`` (not read again)."""
        started = time.perf_counter()
        outcome = self._receive(data, calling_ae=calling_ae, peer_address=peer_address,
                                expected_sop_uid=expected_sop_uid, header=header)
        if self.metrics is not None:
            if outcome.ok:
                self.metrics.instances.labels(via).inc()
                self.metrics.bytes.labels(via).inc(len(data))
                self.metrics.store_seconds.labels(via).observe(time.perf_counter() - started)
            else:
                self.metrics.refused.labels(via, f"0x{outcome.status:04X}").inc()
        return outcome

    def _receive(
        self, data: bytes, *, calling_ae: str | None, peer_address: str | None, expected_sop_uid: str | None,
        header: Header | None,
    ) -> StoreOutcome:
        if header is None:
            try:
                header = read_header(data, expected_sop_uid, self.limits)
            except BadDatasetError as exc:
                return unreadable(exc, calling_ae, peer_address)
        try:
            entry = self.journal.write(data, calling_ae=calling_ae, peer_address=peer_address)
        except OSError as exc:
            return not_stored(exc, header.sop_instance_uid)
        if self.parsed is not None:
            self.parsed.put(entry.path.name, header)
        self.wake()
        return StoreOutcome(status=SUCCESS, action="journaled", series_uid=header.series_uid)

    def wake(self) -> None:
        """Tell the indexer there is work (lost if no indexer runs: it looks anyway when it starts)."""
        self._send(ARRIVED)

    def _send(self, message: bytes) -> None:
        with contextlib.suppress(OSError):  # no indexer listening, or its socket buffer full: it is awake
            self._sock.sendto(message, self._address)

    def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until every instance acknowledged before this call is indexed (the indexer told to index at once);
        False if it took too long."""
        pending = [e.path.name for e in self.journal.pending()]
        if not pending:
            return True
        self._send(NOW)
        done = self.journal.wait_drained(pending, timeout_s=timeout_s)
        if not done:
            log.warning("the index is more than %.0f s behind the journal; answering with what is indexed", timeout_s)
        return done

    def close(self) -> None:
        self._sock.close()

"""Forwarding to PACS through the ``outbox`` table: durable, retried with exponential back-off.

An item is one stored instance for one ``[forward]`` destination. :func:`deliver_due`
sends every item that is due, one association per destination, and records the outcome
on the row; a restart simply continues from the rows. An item that keeps failing is
marked ``failed`` after ``max_attempts`` and can be retried by hand
(``myonode outbox retry``).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from node.dimse.scu import associate
from node.dimse.transcode import TranscodeError, accepted_syntaxes, for_peer, proposal
from node.settings import Destination, ForwardSettings
from storage import models as m
from storage.database import transaction
from storage.filestore import FileStore

log = logging.getLogger(__name__)


def backoff(attempts: int, initial_s: float, max_s: float) -> timedelta:
    """Delay before the next try after ``attempts`` failures: initial·2^(attempts−1), capped."""
    return timedelta(seconds=min(max_s, initial_s * 2 ** max(0, attempts - 1)))


def enqueue(s: Session, instance_ids: list[int], destinations: list[Destination]) -> int:
    """Queue instances for every destination (idempotent: an existing item is left as it is)."""
    existing = set(
        s.execute(
            select(m.OutboxItem.destination, m.OutboxItem.instance_fk).where(m.OutboxItem.instance_fk.in_(instance_ids))
        ).all()
    )
    added = 0
    for dest in destinations:
        for iid in instance_ids:
            if (dest.name, iid) not in existing:
                s.add(m.OutboxItem(destination=dest.name, instance_fk=iid))
                added += 1
    return added


@dataclass(frozen=True, kw_only=True)
class DeliveryReport:
    sent: int
    failed: int
    gave_up: int


def _send(dest: Destination, calling_ae: str, items: list[tuple[int, str, str, str]], store: FileStore,
          timeout: float) -> dict[int, str | None]:
    """C-STORE each (item id, path, SOP class, transfer syntax) on one association; item id → error or None."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    contexts = proposal([(sop, ts) for _, _, sop, ts in items])
    assoc, why = associate(ae, dest.host, dest.port, contexts=contexts, ae_title=dest.ae_title)
    if why is not None:
        return {item_id: f"association {why}" for item_id, *_ in items}
    results: dict[int, str | None] = {}
    try:
        for item_id, rel_path, sop, _ in items:
            if not assoc.is_established:
                results[item_id] = "association lost"
                continue
            try:
                ds = for_peer(store.absolute(rel_path), accepted_syntaxes(assoc, sop))
                status = assoc.send_c_store(ds)
            except TranscodeError as exc:
                results[item_id] = f"cannot send: {exc}"
                continue
            except (OSError, ValueError) as exc:
                results[item_id] = f"cannot send: {exc}"
                continue
            code = getattr(status, "Status", None)
            if code is None:
                results[item_id] = "no response"
            elif code == 0x0000 or 0xB000 <= code <= 0xBFFF:  # success or warning: the peer holds it
                results[item_id] = None
            else:
                comment = getattr(status, "ErrorComment", "")
                results[item_id] = f"status 0x{code:04X} {comment}".strip()
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def deliver_due(
    sessions: sessionmaker[Session], store: FileStore, settings: ForwardSettings, calling_ae: str,
    now: datetime | None = None, timeout: float = 30.0,
) -> DeliveryReport:
    """Send every pending item whose next try is due; update each row with the outcome."""
    now = now or datetime.now(UTC)
    by_name = {d.name: d for d in settings.destinations}
    with sessions() as s:
        rows = s.execute(
            select(m.OutboxItem.id, m.OutboxItem.destination, m.Instance.file_path, m.Instance.sop_class_uid,
                   m.Instance.transfer_syntax_uid)
            .join(m.Instance, m.OutboxItem.instance_fk == m.Instance.id)
            .where(m.OutboxItem.state == m.OutboxState.PENDING, m.OutboxItem.next_try_at <= now)
            .order_by(m.OutboxItem.id)
        ).all()
    batches: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    for item_id, dest, path, sop, ts in rows:
        batches[dest].append((item_id, path, sop, ts or ImplicitVRLittleEndian))
    sent = failed = gave_up = 0
    for name, items in batches.items():
        destination = by_name.get(name)
        outcome = (
            _send(destination, calling_ae, items, store, timeout)
            if destination is not None
            else {item_id: f"destination {name!r} is no longer in [forward]" for item_id, *_ in items}
        )
        with transaction(sessions) as s:
            for item_id, error in outcome.items():
                item = s.get(m.OutboxItem, item_id)
                assert item is not None
                item.attempts += 1
                if error is None:
                    item.state, item.sent_at, item.last_error = m.OutboxState.SENT, now, None
                    sent += 1
                    continue
                item.last_error = error[:2000]
                failed += 1
                if item.attempts >= settings.max_attempts:
                    item.state = m.OutboxState.FAILED
                    gave_up += 1
                    log.error("gave up forwarding outbox item %d to %s: %s", item_id, name, error)
                else:
                    item.next_try_at = now + backoff(item.attempts, settings.backoff_initial_s, settings.backoff_max_s)
                    log.warning("forwarding outbox item %d to %s failed (%s); retry at %s",
                                item_id, name, error, item.next_try_at.isoformat(timespec="seconds"))
    return DeliveryReport(sent=sent, failed=failed, gave_up=gave_up)


def retry(s: Session, item_ids: list[int] | None = None) -> int:
    """Make failed (or the given) items due now again, attempts reset; returns how many."""
    q = update(m.OutboxItem).values(state=m.OutboxState.PENDING, attempts=0, next_try_at=datetime.now(UTC))
    q = q.where(m.OutboxItem.id.in_(item_ids)) if item_ids else q.where(m.OutboxItem.state == m.OutboxState.FAILED)
    return cast(CursorResult, s.execute(q)).rowcount or 0  # an UPDATE's result is a CursorResult


class Forwarder(threading.Thread):
    """Background loop of the node that delivers due outbox items every ``interval_s`` seconds."""

    def __init__(self, sessions: sessionmaker[Session], store: FileStore, settings: ForwardSettings,
                 calling_ae: str, interval_s: float = 2.0) -> None:
        super().__init__(name="myonode-forwarder", daemon=True)
        self.sessions, self.store, self.settings, self.calling_ae = sessions, store, settings, calling_ae
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self.wake = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                deliver_due(self.sessions, self.store, self.settings, self.calling_ae)
            except Exception:
                log.exception("forwarding round failed; will try again")
            self.wake.wait(self.interval_s)
            self.wake.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.join(timeout=60)

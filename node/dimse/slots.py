"""``[node] max_associations`` across every listener process on the port.

pynetdicom counts the associations of one process. With ``[node] listener_processes`` > 1 the
kernel hands each new connection to one of several processes (``SO_REUSEPORT``), so the
limit is held here instead: an association takes one of ``max_associations`` slot files
with a non-blocking ``flock`` when its A-ASSOCIATE-RQ arrives (EVT_REQUESTED, before
pynetdicom negotiates) and gives it back when its connection closes (EVT_CONN_CLOSE). The
kernel drops a lock with the process that held it, so a ``kill -9`` never leaks a slot.
When none is free the request gets A-ASSOCIATE-RJ *rejected-transient, service-provider
(presentation), local-limit-exceeded* — the answer pynetdicom itself gives — and EVT_REJECTED.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path

from pynetdicom import evt
from pynetdicom.events import Event

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (PS3.8 §9.3.4): rejected-transient, DICOM UL service-provider (presentation), local-limit-exceeded
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


class AssociationSlots:
    """``limit`` slot files in ``folder``; :meth:`take` and :meth:`give_back` (thread-safe)."""

    def __init__(self, folder: Path, limit: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"association-{i:03d}.lock" for i in range(limit)]
        self._held: dict[int, int] = {}  # id(association) -> fd
        self._mutex = threading.Lock()

    def take(self, owner: object) -> bool:
        """A free slot for ``owner``, or False when all are held (in any process)."""
        for path in self.paths:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            with self._mutex:
                self._held[id(owner)] = fd
            return True
        return False

    def held(self) -> int:
        """How many slots are held now, by any process (pynetdicom's associations and the compiled receiver's).
        Each is probed with a shared lock taken and dropped at once: an association taking that very slot in
        the same instant moves on to the next one."""
        count = 0
        for path in self.paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1
            finally:
                os.close(fd)
        return count

    def give_back(self, owner: object) -> None:
        with self._mutex:
            fd = self._held.pop(id(owner), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock


def handle_requested(event: Event, slots: AssociationSlots) -> None:
    """EVT_REQUESTED: take a slot, or reject the association as over the limit."""
    assoc = event.assoc
    try:
        if slots.take(assoc):
            return
        log.warning("association from %s refused: [node] max_associations (%d) reached across listener processes",
                    assoc.requestor.address, len(slots.paths))
        assoc.acse.send_reject(*LOCAL_LIMIT_EXCEEDED)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()
    except Exception:
        log.exception("while taking an association slot")
        with contextlib.suppress(Exception):
            assoc.abort()


def handle_closed(event: Event, slots: AssociationSlots) -> None:
    """EVT_CONN_CLOSE: give the association's slot back."""
    try:
        slots.give_back(event.assoc)
    except Exception:
        log.exception("while giving an association slot back")

"""The DIMSE service handlers: module-level functions bound to their state by the listener.

As in pynetdicom's ``apps/qrscp``: each ``handle_*`` takes the event and then its state
(``(evt.EVT_C_STORE, handle_store, [ingestor])``), so it can be tested and read alone. No
exception ever leaves a handler: a failure becomes a DICOM failure status with a comment,
and is logged with the peer and the instance.

Retrieve (C-GET, C-MOVE) sends each instance in a syntax the peer accepted for its SOP
class (:mod:`node.dimse.transcode`); an instance that cannot be given in any of them is
logged and sent as stored, so pynetdicom counts that one sub-operation as failed (and lists
its SOP Instance UID in the final response) while the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from sqlalchemy.orm import Session, sessionmaker

from node.dimse.filemeta import file_meta
from node.dimse.qr import QueryError, TooManyMatches, find, retrieve_files
from node.dimse.status import Status
from node.dimse.transcode import TranscodeError, accepted_syntaxes, for_peer, proposal
from node.intake.receiver import Receiver
from node.settings import Destination, QRSettings
from storage import models as m
from storage.filestore import FileStore

log = logging.getLogger(__name__)

def failure(status: Status, comment: str) -> Dataset:
    """A status data set with an Error Comment (64 characters at most, as its VR allows)."""
    ds = Dataset()
    ds.Status = int(status)
    ds.ErrorComment = comment[:64]
    return ds


def peer_of(event: Event) -> tuple[str, str]:
    """(calling AE title, address) of the association an event belongs to."""
    requestor = event.assoc.requestor
    return str(requestor.ae_title).strip(), str(requestor.address)


def handle_echo(event: Event) -> int:
    """C-ECHO: always success."""
    return int(Status.SUCCESS)


def handle_store(event: Event, receiver: Receiver) -> int | Dataset:
    """C-STORE: the instance is acknowledged only when :meth:`Receiver.receive` says it is durable. Kept as the
    bytes sent behind the file meta information of :mod:`node.dimse.filemeta` (what pynetdicom's
    ``encoded_dataset(include_meta=True)`` writes, without encoding it through pydicom each time)."""
    try:
        calling, address = peer_of(event)
        request = cast(C_STORE, event.request)  # EVT_C_STORE's request
        stream = cast(BytesIO, request.DataSet).getvalue()
        outcome = receiver.receive(
            file_meta(str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID),
                      str(event.context.transfer_syntax)) + stream,
            calling_ae=calling,
            peer_address=address,
            expected_sop_uid=str(request.AffectedSOPInstanceUID),
        )
    except Exception as exc:  # the receiver never raises; this guards the network layer regardless
        log.exception("C-STORE failed unexpectedly")
        return failure(Status.PROCESSING_FAILURE, f"internal error: {exc.__class__.__name__}")
    if outcome.ok:
        return int(Status.SUCCESS)
    status = Dataset()
    status.Status = outcome.status
    if outcome.comment:
        status.ErrorComment = outcome.comment[:64]
    return status


def handle_find(event: Event, sessions: sessionmaker[Session], settle: Callable[[], bool],
                ae_title: str, qr: QRSettings) -> Iterator[tuple[Any, Any]]:
    """C-FIND over the index (see :mod:`node.dimse.qr`), once every instance acknowledged before it is indexed;
    bounded by ``[qr] max_results`` (0xA700 beyond) and ``query_timeout_s`` (0xC000), each said in a comment."""
    try:
        settle()
        with sessions() as s:
            results = find(s, event.identifier, ae_title, max_results=qr.max_results,
                           timeout_s=qr.query_timeout_s)
    except TooManyMatches as exc:
        yield failure(Status.OUT_OF_RESOURCES, str(exc)), None
        return
    except QueryError as exc:
        yield failure(Status.UNABLE_TO_PROCESS, str(exc)), None
        return
    except Exception as exc:
        log.exception("C-FIND failed")
        yield failure(Status.UNABLE_TO_PROCESS, f"query failed: {exc.__class__.__name__}"), None
        return
    for ds in results:
        if event.is_cancelled:
            yield int(Status.CANCEL), None
            return
        yield int(Status.PENDING), ds


def _matched(event: Event, sessions: sessionmaker[Session],
             settle: Callable[[], bool]) -> tuple[list[m.Instance], Dataset | None]:
    try:
        settle()
        with sessions() as s:
            return retrieve_files(s, event.identifier), None
    except QueryError as exc:
        return [], failure(Status.UNABLE_TO_PROCESS, str(exc))
    except Exception as exc:
        log.exception("retrieve query failed")
        return [], failure(Status.UNABLE_TO_PROCESS, f"query failed: {exc.__class__.__name__}")


def instance_for(assoc: Association, store: FileStore, row: m.Instance) -> Dataset:
    """The stored instance, transcoded for ``assoc`` when needed; as stored when it cannot be (logged)."""
    path = store.absolute(row.file_path)
    try:
        return for_peer(path, accepted_syntaxes(assoc, row.sop_class_uid))
    except TranscodeError as exc:
        log.error("cannot send %s (%s) to %s: %s", row.sop_instance_uid, row.file_path,
                  str(assoc.acceptor.ae_title if assoc.is_requestor else assoc.requestor.ae_title).strip(), exc)
        # As stored: pynetdicom finds no context for it and counts this sub-operation failed.
        return dcmread(path)


def _send_matched(event: Event, rows: list[m.Instance], store: FileStore,
                  assoc_of: Any) -> Iterator[tuple[Any, Any]]:
    for row in rows:
        if event.is_cancelled:
            yield int(Status.CANCEL), None
            return
        try:
            ds = instance_for(assoc_of(), store, row)
        except OSError as exc:
            log.error("cannot read %s for retrieve: %s", row.file_path, exc)
            ds = Dataset()  # pynetdicom counts a non-sendable data set as a failed sub-operation
        yield int(Status.PENDING), ds


def handle_get(event: Event, sessions: sessionmaker[Session], settle: Callable[[], bool],
               store: FileStore) -> Iterator[Any]:
    """C-GET: the matches are sent back on the same association (the requestor is the storage SCP)."""
    rows, error = _matched(event, sessions, settle)
    if error is not None:
        yield 0
        yield error, None
        return
    yield len(rows)
    yield from _send_matched(event, rows, store, lambda: event.assoc)


@dataclass(kw_only=True)
class _SubAssociation:
    """Holds the C-MOVE sub-association once pynetdicom has established it (EVT_ESTABLISHED)."""

    assoc: Association | None = None

    def on_established(self, event: Event) -> None:
        self.assoc = event.assoc

    def get(self) -> Association:
        if self.assoc is None:
            raise RuntimeError("C-MOVE sub-association not established")
        return self.assoc


def handle_move(event: Event, sessions: sessionmaker[Session], settle: Callable[[], bool], store: FileStore,
                destinations: list[Destination]) -> Iterator[Any]:
    """C-MOVE to a destination named in ``[qr] move_destinations``; anything else is refused (0xA801)."""
    wanted = str(event.move_destination).strip()
    dest = next((d for d in destinations if d.ae_title.strip() == wanted), None)
    if dest is None:
        log.warning("C-MOVE to unknown destination %r refused (not in [qr] move_destinations)", wanted)
        yield None, None
        return
    rows, error = _matched(event, sessions, settle)
    sub = _SubAssociation()
    if error is not None:
        yield dest.host, dest.port
        yield 0
        yield error, None
        return
    yield dest.host, dest.port, {
        "contexts": proposal([(r.sop_class_uid, r.transfer_syntax_uid) for r in rows]),
        "evt_handlers": [(evt.EVT_ESTABLISHED, sub.on_established)],
    }
    yield len(rows)
    yield from _send_matched(event, rows, store, sub.get)


def handle_rejected(event: Event, refused: list[str]) -> None:
    """Association rejected (AE title not allowed, limit reached): logged and counted."""
    try:
        calling, address = peer_of(event)
        called = str(event.assoc.acceptor.ae_title).strip()
        reason = f"association from {calling!r} at {address} (called {called!r}) rejected"
        refused.append(reason)
        log.warning("%s: AE title not allowed or association limit reached", reason)
    except Exception:
        log.exception("while logging a rejected association")


def handle_aborted(event: Event) -> None:
    """Association aborted by the peer or the network."""
    try:
        calling, address = peer_of(event)
        log.info("association from %r at %s aborted", calling, address)
    except Exception:
        log.exception("while logging an aborted association")

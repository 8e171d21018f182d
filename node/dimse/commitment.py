"""Storage Commitment Push Model SCP (PS3.4 Annex J): tell the scanner what the node safely holds.

The scanner sends N-ACTION (Request Storage Commitment) with the instances it wants
committed; the node answers the N-ACTION at once and then, on a new association to the
requester, sends N-EVENT-REPORT listing each instance as committed (indexed, file on disk
with its recorded SHA-256) or failed (0x0112 no such object instance). The requester's
address is looked up by its AE title among the peers the settings know (``[qr]
move_destinations`` and ``[forward] destinations``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.dimse.scu import associate
from node.dimse.status import Status
from node.settings import Destination
from storage import models as m
from storage.filestore import FileStore

log = logging.getLogger(__name__)

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
NO_SUCH_OBJECT_INSTANCE = int(Status.NO_SUCH_OBJECT_INSTANCE)
CLASS_INSTANCE_CONFLICT = int(Status.CLASS_INSTANCE_CONFLICT)


def commitment_result(
    s: Session, store: FileStore, references: list[tuple[str, str]], *, verify_files: bool = True
) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
    """Split (SOP class, SOP instance) pairs into committed and failed (with a failure reason)."""
    committed, failed = [], []
    for sop_class, sop_uid in references:
        row = s.scalars(
            select(m.Instance).where(m.Instance.sop_instance_uid == sop_uid).order_by(m.Instance.version.desc())
        ).first()
        if row is None:
            failed.append((sop_class, sop_uid, NO_SUCH_OBJECT_INSTANCE))
        elif row.sop_class_uid != sop_class:
            failed.append((sop_class, sop_uid, CLASS_INSTANCE_CONFLICT))
        elif verify_files and not _file_intact(store, row):
            log.error("commitment refused for %s: file %s missing or altered", sop_uid, row.file_path)
            failed.append((sop_class, sop_uid, NO_SUCH_OBJECT_INSTANCE))
        else:
            committed.append((sop_class, sop_uid))
    return committed, failed


def _file_intact(store: FileStore, row: m.Instance) -> bool:
    try:
        data = store.absolute(row.file_path).read_bytes()
    except OSError:
        return False
    return len(data) == row.size_bytes and hashlib.sha256(data).hexdigest() == row.sha256


def event_report(transaction_uid: str, committed: list[tuple[str, str]],
                 failed: list[tuple[str, str, int]]) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) of the N-EVENT-REPORT: 1 all committed, 2 some failures."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.ReferencedSOPSequence = []
        for sop_class, sop_uid in committed:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
            ds.ReferencedSOPSequence.append(item)
    if failed:
        ds.FailedSOPSequence = []
        for sop_class, sop_uid, reason in failed:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
            item.FailureReason = reason
            ds.FailedSOPSequence.append(item)
    return (2 if failed else 1), ds


def send_report(ae_title: str, peer: Destination, event_type: int, info: Dataset, timeout: float = 30.0) -> bool:
    """N-EVENT-REPORT on a new association where the node takes the SCP role."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scp_role=True, scu_role=False)
    assoc, why = associate(ae, peer.host, peer.port, ae_title=peer.ae_title, ext_neg=[role])
    if why is not None:
        log.error("storage commitment report to %s@%s:%d: association %s", peer.ae_title, peer.host, peer.port, why)
        return False
    try:
        status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    finally:
        assoc.release()
    ok = status is not None and status.Status == Status.SUCCESS
    log.info("storage commitment report %s to %s: %s", info.TransactionUID, peer.ae_title, "delivered" if ok else status)
    return ok


def handle_n_action(
    event: Event, ae_title: str, sessions: sessionmaker[Session], store: FileStore, peers: list[Destination],
    settle: Callable[[], bool], report_delay_s: float,
) -> tuple[int, None]:
    """N-ACTION Request Storage Commitment: answer at once, report on a new association shortly after.

    ``settle`` first, so every instance acknowledged before the request (journaled, maybe not yet
    indexed) counts as held."""
    try:
        if cast(N_ACTION, event.request).ActionTypeID != 1:  # bound to EVT_N_ACTION only
            return int(Status.NO_SUCH_ACTION_TYPE), None
        calling = str(event.assoc.requestor.ae_title).strip()
        peer = next((p for p in peers if p.ae_title.strip() == calling), None)
        if peer is None:
            log.warning("storage commitment from %r refused: not a known peer ([qr] / [forward])", calling)
            return int(Status.PROCESSING_FAILURE), None
        request = event.action_information
        references = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
                      for i in request.get("ReferencedSOPSequence", [])]
        transaction_uid = str(request.TransactionUID)
        settle()
        with sessions() as s:
            committed, failed = commitment_result(s, store, references)
    except Exception:
        log.exception("storage commitment request could not be processed")
        return int(Status.PROCESSING_FAILURE), None
    event_type, info = event_report(transaction_uid, committed, failed)
    log.info("storage commitment %s from %s: %d committed, %d failed", transaction_uid, calling,
             len(committed), len(failed))

    def report() -> None:
        time.sleep(report_delay_s)  # after our N-ACTION response, let the requester release
        try:
            send_report(ae_title, peer, event_type, info)
        except Exception:
            log.exception("storage commitment report %s to %s failed", transaction_uid, calling)

    threading.Thread(target=report, name="myonode-commitment-report", daemon=True).start()
    return int(Status.SUCCESS), None


def commitment_handler(
    ae_title: str, sessions: sessionmaker[Session], store: FileStore, peers: list[Destination],
    settle: Callable[[], bool], report_delay_s: float = 0.5,
) -> tuple[Any, Callable[..., tuple[int, None]], list[Any]]:
    """The EVT_N_ACTION binding for the listener."""
    return evt.EVT_N_ACTION, handle_n_action, [ae_title, sessions, store, peers, settle, report_delay_s]

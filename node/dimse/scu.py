"""Outgoing DICOM (pynetdicom SCU): :func:`associate`, which says why an association did not come about,
and C-ECHO checks; forwarding and storage commitment reports associate through it."""

from __future__ import annotations

import re
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import Verification

from node.dimse.status import Status

PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[0-9a-fA-F:.]+\]|[^:@\s]+):(?P<port>\d{1,5})$")


def parse_peer(text: str) -> tuple[str, str, int]:
    """``AE@host:port`` (IPv6 hosts in brackets) → (AE title, host, port)."""
    match = PEER.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{text!r} is not AE@host:port (e.g. PACS@10.0.0.20:104)")
    return match["ae"], match["host"].strip("[]"), int(match["port"])


REJECTION_RESULTS = {1: "permanent", 2: "transient"}


def rejection_text(rj: A_ASSOCIATE_RJ) -> str:
    """An A-ASSOCIATE-RJ in words (PS3.8 §9.3.4), with pynetdicom's names for its source and reason; codes a
    peer made up are given as numbers (pynetdicom raises ValueError on them)."""
    result = REJECTION_RESULTS.get(rj.result or 0, f"result {rj.result}")
    try:
        source, reason = rj.source_str, rj.reason_str[:1].lower() + rj.reason_str[1:]
    except ValueError:
        source, reason = f"source {rj.source}", f"reason {rj.reason_diagnostic}"
    return f"rejected ({result}) by the {source}: {reason}"


def associate(ae: AE, host: str, port: int, *, ae_title: str, **kwargs: Any) -> tuple[Association, str | None]:
    """``ae.associate(host, port, ae_title=..., **kwargs)``; returns the association and, when it was not
    established, why in words: the peer's A-ASSOCIATE-RJ with its result, source and reason, an abort, or no
    connection.

    The rejection is taken from the A-ASSOCIATE-RJ PDU as it arrives (EVT_PDU_RECV), not from
    ``is_rejected``: a peer that closes the connection right after rejecting (DCMTK does: storescp, our own
    compiled receiver) can close it before pynetdicom's requesting thread looks at the transport, and
    pynetdicom (3.0) then aborts and reports an abort (``acse._negotiate_as_requestor`` checks
    ``_is_connected`` before reading the answer; ``tests/node/test_scu.py`` reproduces it)."""
    connected: list[bool] = []
    rejections: list[A_ASSOCIATE_RJ] = []

    def on_pdu(event: Event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rejections.append(event.pdu)

    handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_PDU_RECV, on_pdu),
                (evt.EVT_CONN_OPEN, lambda _event: connected.append(True))]
    assoc = ae.associate(host, port, ae_title=ae_title, evt_handlers=handlers, **kwargs)
    if assoc.is_established:
        return assoc, None
    if rejections:
        return assoc, rejection_text(rejections[0])
    # pynetdicom marks a connection it could not open as aborted too
    return assoc, "aborted" if connected else "could not connect"


def echo(ae_title: str, host: str, port: int, calling_ae: str = "MYONODE", timeout: float = 10.0) -> tuple[bool, str]:
    """C-ECHO ``ae_title@host:port``; returns (success, a sentence saying what happened)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    assoc, why = associate(ae, host, port, ae_title=ae_title)
    if why is not None:
        return False, f"{ae_title}@{host}:{port}: association {why}"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and status.Status == Status.SUCCESS:
        return True, f"{ae_title}@{host}:{port}: C-ECHO success"
    code = f"0x{status.Status:04X}" if status else "no response"
    return False, f"{ae_title}@{host}:{port}: C-ECHO failed ({code})"

"""Outgoing DICOM (pynetdicom SCU): C-ECHO checks; forwarding and C-MOVE sub-operations build on it."""

from __future__ import annotations

import re

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from node.dimse.status import Status

PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[0-9a-fA-F:.]+\]|[^:@\s]+):(?P<port>\d{1,5})$")


def parse_peer(text: str) -> tuple[str, str, int]:
    """``AE@host:port`` (IPv6 hosts in brackets) → (AE title, host, port)."""
    match = PEER.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{text!r} is not AE@host:port (e.g. PACS@10.0.0.20:104)")
    return match["ae"], match["host"].strip("[]"), int(match["port"])


def echo(ae_title: str, host: str, port: int, calling_ae: str = "MYONODE", timeout: float = 10.0) -> tuple[bool, str]:
    """C-ECHO ``ae_title@host:port``; returns (success, a sentence saying what happened)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "could not connect"
        return False, f"{ae_title}@{host}:{port}: association {why}"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and status.Status == Status.SUCCESS:
        return True, f"{ae_title}@{host}:{port}: C-ECHO success"
    code = f"0x{status.Status:04X}" if status else "no response"
    return False, f"{ae_title}@{host}:{port}: C-ECHO failed ({code})"

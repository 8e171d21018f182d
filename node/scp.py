"""The DICOM listener: association policy and the C-ECHO / C-STORE service handlers (pynetdicom).

Policy (from ``[node]``): the called AE title must be ours; the calling AE title and the
peer address must be on the allow-lists; at most ``max_associations`` at once; ACSE, DIMSE
and network timeouts; optional TLS with optional client-certificate verification.
Connections from addresses not allowed are closed before any PDU is read; other refusals
are proper A-ASSOCIATE-RJ. Every refusal is logged with its reason.

The TLS handshake runs in the association's own thread with the network timeout, so a
peer that connects and says nothing cannot block the accept loop (pynetdicom's default
does the handshake in the listening thread).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    UID,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    EnhancedMRImageStorage,
    EnhancedSRStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    StorageCommitmentPushModel,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from node.ingest import Ingestor
from node.qr import QueryError, find, retrieve_files
from node.settings import Destination, NodeSettings
from storage.filestore import FileStore

log = logging.getLogger(__name__)

STORAGE_SOP_CLASSES: tuple[UID, ...] = (
    MRImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    SegmentationStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    ParametricMapStorage,
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
)
QR_SOP_CLASSES: tuple[UID, ...] = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLosslessP14,
    JPEGLSLossless,
    JPEG2000Lossless,
]


def tls_context(settings: NodeSettings) -> ssl.SSLContext | None:
    """A server TLS context from ``[node] tls_*``, or None when TLS is off."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca is not None:
        ctx.load_verify_locations(settings.tls_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if settings.tls_verify_client else ssl.CERT_NONE
    return ctx


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a host allow-list and the TLS handshake off the accept loop."""

    host_allowed: Callable[[str], bool] = staticmethod(lambda _addr: True)
    handshake_timeout: float = 30.0

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, address = self.socket.accept()  # type: ignore[union-attr]
        sock.settimeout(self.handshake_timeout)
        # Without TCP_NODELAY each small DIMSE response waits for the peer's delayed ACK (~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = client_address[0]
        if self.host_allowed(host):
            return True
        log.warning("refused connection from %s: address not in [node] allowed_hosts", host)
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.warning("refused connection from %s: TLS handshake failed: %s", client_address[0], exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


@dataclass
class Listener:
    """A running DICOM listener; :meth:`stop` closes it and waits for associations to end."""

    ae: AE
    server: GuardedAssociationServer
    refused: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.ae.shutdown()


def _peer(event: Event) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return str(requestor.ae_title).strip(), str(requestor.address)


def make_ae(settings: NodeSettings) -> AE:
    """The Application Entity with our title, limits, timeouts and supported contexts."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu
    ae.maximum_associations = settings.max_associations
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.require_called_aet = True
    ae.require_calling_aet = [a.strip() for a in settings.allowed_calling_ae_titles]
    ae.add_supported_context(Verification)
    ae.add_supported_context(StorageCommitmentPushModel)
    for sop_class in QR_SOP_CLASSES:
        ae.add_supported_context(sop_class)
    for sop_class in STORAGE_SOP_CLASSES:
        # Both roles: peers store to us, and C-GET peers take the SCP role to receive from us.
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    return ae


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def qr_handlers(
    settings: NodeSettings, store: FileStore, sessions: Any, move_destinations: list[Destination]
) -> list[tuple[Any, Callable[..., Any]]]:
    """C-FIND, C-GET and C-MOVE handlers over the index (see :mod:`node.qr`)."""
    def on_find(event: Event) -> Any:
        identifier = event.identifier
        try:
            with sessions() as s:
                results = list(find(s, identifier, settings.ae_title))
        except QueryError as exc:
            yield _failure(0xC000, str(exc)), None
            return
        for ds in results:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    def _instances(event: Event) -> tuple[list[Any] | None, Dataset | None]:
        try:
            with sessions() as s:
                return retrieve_files(s, event.identifier), None
        except QueryError as exc:
            return None, _failure(0xC000, str(exc))

    def _datasets(rows: list[Any], event: Event) -> Any:
        for row in rows:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, dcmread(store.absolute(row.file_path))

    def on_get(event: Event) -> Any:
        rows, error = _instances(event)
        if error is not None:
            yield 0
            yield error, None
            return
        yield len(rows)
        yield from _datasets(rows, event)

    def on_move(event: Event) -> Any:
        wanted = str(event.move_destination).strip()
        dest = next((d for d in move_destinations if d.ae_title.strip() == wanted), None)
        if dest is None:
            log.warning("C-MOVE to unknown destination %r refused (not in [qr] move_destinations)", wanted)
            yield None, None
            return
        rows, error = _instances(event)
        if error is not None:
            yield dest.host, dest.port
            yield 0
            yield error, None
            return
        contexts = sorted({(r.sop_class_uid, r.transfer_syntax_uid or ExplicitVRLittleEndian) for r in rows})
        proposed = [
            build_context(sop, list(dict.fromkeys([ts, ExplicitVRLittleEndian, ImplicitVRLittleEndian])))
            for sop, ts in contexts
        ]
        yield dest.host, dest.port, {"contexts": proposed[:128]}
        yield len(rows)
        yield from _datasets(rows, event)

    return [(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get), (evt.EVT_C_MOVE, on_move)]


def start_listener(
    settings: NodeSettings,
    ingestor: Ingestor,
    extra_handlers: list[tuple[Any, Callable[..., Any]]] | None = None,
    configure_ae: Callable[[AE], None] | None = None,
) -> Listener:
    """Start listening in background threads; returns when the port is bound."""
    ae = make_ae(settings)
    if configure_ae is not None:
        configure_ae(ae)
    listener_refused: list[str] = []

    def on_echo(event: Event) -> int:
        return 0x0000

    def on_store(event: Event) -> int | Any:
        calling, address = _peer(event)
        outcome = ingestor.ingest(
            event.encoded_dataset(include_meta=True),
            calling_ae=calling,
            peer_address=address,
            expected_sop_uid=str(event.request.AffectedSOPInstanceUID),
        )
        if outcome.ok:
            return 0x0000
        status = Dataset()
        status.Status = outcome.status
        if outcome.comment:
            status.ErrorComment = outcome.comment[:64]
        return status

    def on_rejected(event: Event) -> None:
        calling, address = _peer(event)
        called = str(event.assoc.acceptor.ae_title).strip()
        reason = f"association from {calling!r} at {address} (called {called!r}) rejected"
        listener_refused.append(reason)
        log.warning("%s: AE title not allowed or association limit reached", reason)

    def on_aborted(event: Event) -> None:
        calling, address = _peer(event)
        log.info("association from %r at %s aborted", calling, address)

    handlers: list[tuple[Any, Callable[..., Any]]] = [
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_REJECTED, on_rejected),
        (evt.EVT_ABORTED, on_aborted),
        *(extra_handlers or []),
    ]
    server = ae.make_server(
        (settings.bind_host, settings.port),
        ssl_context=tls_context(settings),
        evt_handlers=handlers,
        server_class=GuardedAssociationServer,
    )
    server.host_allowed = settings.host_allowed  # type: ignore[method-assign]
    server.handshake_timeout = settings.network_timeout_s
    thread = threading.Thread(target=server.serve_forever, name="myonode-listener", daemon=True)
    thread.start()
    ae._servers.append(server)  # so ae.shutdown() stops it too
    log.info("listening as %s on %s:%d", settings.ae_title, settings.bind_host, server.server_address[1])
    return Listener(ae=ae, server=server, refused=listener_refused)

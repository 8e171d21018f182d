"""The DICOM listener: association policy, presentation contexts and handler binding (pynetdicom).

Policy (from ``[node]``): the called AE title must be ours; the calling AE title and the
peer address must be on the allow-lists; at most ``max_associations`` at once; ACSE, DIMSE
and network timeouts; optional TLS with optional client-certificate verification.
Connections from addresses not allowed are closed before any PDU is read; other refusals
are proper A-ASSOCIATE-RJ. Every refusal is logged with its reason.

The TLS handshake runs in the association's own thread with the network timeout, so a
peer that connects and says nothing cannot block the accept loop (pynetdicom's default
does the handshake in the listening thread). The handlers themselves are the module-level
functions of :mod:`node.dimse.handlers`, bound here with their state.

With ``[node] receiver = "dcmtk"`` each connection's A-ASSOCIATE-RQ is looked at first, in the
association's thread: one proposing storage only goes to the compiled receiver
(:mod:`node.dimse.compiled`, same policy from the same settings); everything else is served here.
With TLS the compiled receiver takes every connection, does the handshake and relays what it does
not keep to :class:`RelayServer` on loopback.
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from node.dimse import handlers as h
from node.dimse import reactor
from node.dimse import slots as slots_
from node.dimse.compiled import CompiledReceiver
from node.dimse.compiled import binary as compiled_binary
from node.dimse.conformance import (
    QR_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    storage_sop_classes,
)
from node.dimse.negotiation import handle_requested
from node.dimse.slots import AssociationSlots
from node.intake.receiver import Receiver, wake_address
from node.settings import NodeSettings, QRSettings
from storage.filestore import FileStore

log = logging.getLogger(__name__)

Handler = tuple[Any, Callable[..., Any]] | tuple[Any, Callable[..., Any], list[Any]]


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
    """pynetdicom's threaded server with a host allow-list, the TLS handshake off the accept loop, and the
    storage-only associations handed to the compiled receiver (:mod:`node.dimse.compiled`) when it runs."""

    host_allowed: Callable[[str], bool] = staticmethod(lambda _addr: True)
    handshake_timeout: float = 30.0
    reuse_port: bool = False
    compiled: CompiledReceiver | None = None
    # socketserver's listen() backlog is 5: with more peers connecting at once the kernel drops their SYNs
    # and each waits a full second to retry (measured: half of 20 simultaneous storescu took 1 s longer)
    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, address = self.socket.accept()  # type: ignore[union-attr]
        sock.settimeout(self.handshake_timeout)
        # Without TCP_NODELAY each small DIMSE response waits for the peer's delayed ACK (~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def server_bind(self) -> None:
        if self.reuse_port:
            # several listener processes on one port; the kernel spreads connections over them
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # type: ignore[union-attr]
        super().server_bind()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = client_address[0]
        if self.host_allowed(host):
            return True
        log.warning("refused connection from %s: address not in [node] allowed_hosts", host)
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # plain TCP: the compiled receiver takes what proposes storage only; with TLS (relay set): everything
        if self.compiled is not None and (self.ssl_context is None or self.compiled.relay is not None):
            try:
                taken = self.compiled.dispatch(request, client_address, self.handshake_timeout)
            except Exception:  # the choice failed: pynetdicom serves this association as it would anyway
                log.exception("dispatching the association from %s failed", client_address[0])
                taken = False
            if taken:
                # The compiled receiver holds its own descriptor now: close ours without shutdown(),
                # which would end the connection for it too.
                request.close()
                return
            request.settimeout(self.handshake_timeout)
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.warning("refused connection from %s: TLS handshake failed: %s", client_address[0], exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


class RelayServer(GuardedAssociationServer):
    """With TLS and the compiled receiver: the associations it does not keep, relayed decrypted over loopback.

    Each connection first says ``myonode-relay <token> <peer address>``; one without this listener's token is
    closed (so no local process can skip TLS through it), and the association is served as from that peer."""

    token: str = ""
    preamble_max = 512

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.handshake_timeout)
            line = b""
            while not line.endswith(b"\n") and len(line) < self.preamble_max:
                byte = request.recv(1)  # byte by byte: what follows the line is the association's
                if not byte:
                    break
                line += byte
            word, token, peer = [*line.decode("ascii", "replace").split(), "", "", ""][:3]
            if word != "myonode-relay" or not secrets.compare_digest(token.encode(), self.token.encode()) or not peer:
                log.warning("relay connection from %s without the receiver's token: closed", client_address[0])
                self.shutdown_request(request)
                return
        except OSError as exc:
            log.warning("relay connection from %s failed: %s", client_address[0], exc)
            self.shutdown_request(request)
            return
        super().process_request_thread(request, (peer, 0))


class SharedPortServer(GuardedAssociationServer):
    """The same, binding with ``SO_REUSEPORT``: one of ``[node] listener_processes`` on the port."""

    reuse_port = True


@dataclass(kw_only=True)
class Listener:
    """A running DICOM listener; :meth:`stop` closes it and waits for associations to end."""

    ae: AE
    server: GuardedAssociationServer
    refused: list[str] = field(default_factory=list)
    compiled: CompiledReceiver | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        if self.compiled is not None:
            self.compiled.stop()
        self.ae.shutdown()


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
    for sop_class in storage_sop_classes(settings.accept):
        # Both roles: peers store to us, and C-GET peers take the SCP role to receive from us.
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES), scu_role=True, scp_role=True)
    return ae


def qr_handlers(
    settings: NodeSettings, store: FileStore, sessions: sessionmaker[Session], settle: Callable[[], bool],
    qr: QRSettings,
) -> list[Handler]:
    """C-FIND, C-GET and C-MOVE handlers over the index, bound with their state."""
    return [
        (evt.EVT_C_FIND, h.handle_find, [sessions, settle, settings.ae_title, qr]),
        (evt.EVT_C_GET, h.handle_get, [sessions, settle, store]),
        (evt.EVT_C_MOVE, h.handle_move, [sessions, settle, store, qr.move_destinations]),
    ]


def start_listener(
    settings: NodeSettings,
    receiver: Receiver,
    slots: AssociationSlots,
    extra_handlers: list[Handler] | None = None,
    configure_ae: Callable[[AE], None] | None = None,
) -> Listener:
    """Start listening in background threads; returns when the port is bound.

    ``slots`` holds ``[node] max_associations`` across all listener processes on the port."""
    reactor.install(settings.reactor_poll_ms)
    # pynetdicom's own per-message log lines (each PDU, each DIMSE message, at INFO) cost time on every
    # C-STORE; the node logs what matters itself (refusals, failures) and pynetdicom still logs its warnings
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    ae = make_ae(settings)
    if configure_ae is not None:
        configure_ae(ae)
    refused: list[str] = []
    handlers: list[Handler] = [
        (evt.EVT_REQUESTED, slots_.handle_requested, [slots]),
        (evt.EVT_CONN_CLOSE, slots_.handle_closed, [slots]),
        (evt.EVT_REQUESTED, handle_requested),
        (evt.EVT_REQUESTED, reactor.handle_requested, [settings.reactor_poll_ms]),
        (evt.EVT_C_ECHO, h.handle_echo),
        (evt.EVT_C_STORE, h.handle_store, [receiver]),
        (evt.EVT_REJECTED, h.handle_rejected, [refused]),
        (evt.EVT_ABORTED, h.handle_aborted),
        *(extra_handlers or []),
    ]
    server = ae.make_server(
        (settings.bind_host, settings.port),
        ssl_context=tls_context(settings),
        evt_handlers=handlers,
        server_class=SharedPortServer if settings.listener_processes > 1 else GuardedAssociationServer,
    )
    assert isinstance(server, GuardedAssociationServer)
    server.host_allowed = settings.host_allowed
    server.handshake_timeout = settings.network_timeout_s
    server.compiled = start_compiled(settings, receiver, slots, refused, ae=ae, handlers=handlers,
                                     tls=server.ssl_context is not None)
    thread = threading.Thread(target=server.serve_forever, name="myonode-listener", daemon=True)
    thread.start()
    ae._servers.append(server)  # so ae.shutdown() stops it too
    log.info("listening as %s on %s:%d", settings.ae_title, settings.bind_host, server.server_address[1])
    return Listener(ae=ae, server=server, refused=refused, compiled=server.compiled)


def start_compiled(settings: NodeSettings, receiver: Receiver, slots: AssociationSlots, refused: list[str], *,
                   ae: AE, handlers: list[Handler], tls: bool) -> CompiledReceiver | None:
    """The compiled C-STORE receiver for this listener (``[node] receiver = "dcmtk"``), or None — with the
    reason logged — when pynetdicom receives: asked for, not built, or it would not start. With ``tls`` it
    also starts the :class:`RelayServer` (on ``ae``, with ``handlers``) it passes what it does not keep to."""
    if settings.receiver != "dcmtk":
        log.info("C-STORE receiver: pynetdicom ([node] receiver)")
        return None
    path, why = compiled_binary()
    if path is None:
        log.warning("C-STORE receiver: pynetdicom (%s)", why)
        return None
    relay: RelayServer | None = None
    if tls:
        made = ae.make_server(("127.0.0.1", 0), evt_handlers=handlers, server_class=RelayServer)
        assert isinstance(made, RelayServer)
        relay = made
        relay.token = secrets.token_hex(16)
        relay.host_allowed = lambda address: address == "127.0.0.1"
        relay.handshake_timeout = settings.network_timeout_s
        threading.Thread(target=relay.serve_forever, name="myonode-relay", daemon=True).start()
        ae._servers.append(relay)  # so ae.shutdown() stops it too
    compiled = CompiledReceiver(
        settings=settings, journal_dir=receiver.journal.folder, wake_address=wake_address(receiver.journal),
        slots_dir=slots.paths[0].parent, max_associations=len(slots.paths), metrics=receiver.metrics,
        refused=refused, executable=path,
        relay=(int(relay.server_address[1]), relay.token) if relay is not None else None)
    if compiled.start():
        return compiled
    compiled.stop()
    if relay is not None:  # pynetdicom does TLS itself: no relay needed
        relay.shutdown()
        ae._servers.remove(relay)
    return None

"""The compiled C-STORE receiver (``node/dimse/dcmtk/receiver.cc``, DCMTK's libdcmnet) beside pynetdicom.

Why: pynetdicom spends about 0.76 ms of CPU per small C-STORE and polls; with the durable journal
the node reached 0.34× Orthanc on small instances and 0.22× with 20 associations (#17). The
compiled receiver forks one process per association, so both cores work, and writes the same
durable journal entries (:mod:`storage.journal`) before it answers.

One port, one policy (``[node] receiver = "dcmtk"``):

- :class:`node.dimse.listener.GuardedAssociationServer` accepts every connection and applies the
  host allow-list; :func:`peek_associate_rq` reads the peer's A-ASSOCIATE-RQ *without consuming
  it* (``MSG_PEEK``) and :func:`storage_only` decides (:func:`proposal` reads the request): an
  association proposing only storage SOP classes (and verification), none with the SCP role
  (a C-GET's receiving side), goes to the compiled receiver (:meth:`CompiledReceiver.hand_over`
  sends the open socket over an abstract Unix socket, ``SCM_RIGHTS``); anything else — Q/R,
  storage commitment, a mixed proposal, a PDU that does not decode — stays with pynetdicom,
  which answers it as before. With TLS on (``[node] tls_*``) the request cannot be read before
  the handshake: every connection goes to the compiled receiver, which does the handshake
  (DCMTK's dcmtls, the same certificate, key, CA and client-certificate rule), keeps a
  storage-only association and relays any other, decrypted, to a pynetdicom listener on
  loopback (:class:`node.dimse.listener.RelayServer`), first line ``myonode-relay <token> <peer>``.
- the policy file :func:`policy_text` writes from the settings at start is the one source both
  receivers follow: our AE title, the calling-AE allow-list, ``max_associations`` (the same slot
  files as :mod:`node.dimse.slots`), timeouts, PDU size, ``max_instance_bytes`` and
  ``max_inflation_ratio``, the accepted storage SOP classes (``[node] accept``) and transfer
  syntaxes (:mod:`node.dimse.conformance`), the journal and the indexer's wake-up address, and
  the file meta information's implementation UID and name (:mod:`node.dimse.filemeta`).
- what the compiled receiver does comes back as datagrams (:meth:`CompiledReceiver._events`):
  instances stored (the ``myonode_instances_received`` / ``_bytes_received`` / ``_store_seconds``
  metrics, ``via="dimse"``), instances refused (``myonode_instances_refused`` and the log line
  the pynetdicom path writes), associations rejected (the listener's ``refused`` list) and log lines.

Where it is not built (``make`` builds it against Debian's ``libdcmtk-dev``), or the binary is
older than its source, or it does not start, :func:`binary` / :meth:`CompiledReceiver.start` say
why and the node receives with pynetdicom; if it dies while serving, the next association goes
to pynetdicom and it is started again (at most every ``RESTART_AFTER_S``).
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import secrets
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom.sop_class import Verification

from node.dimse.conformance import TRANSFER_SYNTAXES, storage_sop_classes
from node.dimse.filemeta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from node.intake.metrics import IngestMetrics
from node.settings import NodeSettings

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "dcmtk" / "receiver.cc"
BINARY = Path(__file__).parent / "dcmtk" / "myonode-receiver"
A_ASSOCIATE_RQ_TYPE = 0x01
MAX_RQ_BYTES = 1 << 20  # a larger A-ASSOCIATE-RQ is left to pynetdicom (which refuses what it must)
START_TIMEOUT_S = 10.0
RESTART_AFTER_S = 5.0


def binary(path: Path = BINARY, source: Path = SOURCE) -> tuple[Path | None, str]:
    """The compiled receiver if it is built and current, else None and why (for the log)."""
    if not path.exists():
        return None, f"{path} is not built (make builds it against Debian's libdcmtk-dev)"
    if not os.access(path, os.X_OK):
        return None, f"{path} is not executable"
    if source.exists() and source.stat().st_mtime > path.stat().st_mtime:
        return None, f"{path} is older than {source.name} (run make)"
    return path, "built"


def proposal(pdu: bytes) -> tuple[list[str], list[tuple[str, bool]]] | None:
    """The abstract syntaxes an A-ASSOCIATE-RQ proposes and its role selections (SOP class, SCP role), read from
    the PDU's items (PS3.8 9.3.2); None when the bytes are not a well-formed request.

    Why not pynetdicom's ``A_ASSOCIATE_RQ.decode``: it builds every item and validates every UID, 6 ms for
    dcmtk storescu's 120 contexts on this machine, in the listener's process, under its GIL, once per
    association; this reads the two things the choice needs in well under a millisecond."""
    if len(pdu) < 74 or pdu[0] != A_ASSOCIATE_RQ_TYPE:
        return None
    (length,) = struct.unpack_from(">L", pdu, 2)
    if length != len(pdu) - 6:
        return None
    syntaxes: list[str] = []
    roles: list[tuple[str, bool]] = []
    at = 74  # header (6), protocol version, reserved, called and calling AE titles, reserved (68)
    while at < len(pdu):
        if at + 4 > len(pdu):
            return None
        kind, item_length = pdu[at], struct.unpack_from(">H", pdu, at + 2)[0]
        body = pdu[at + 4: at + 4 + item_length]
        if len(body) != item_length:
            return None
        if kind == 0x20:  # presentation context: id, 3 reserved, then sub-items (0x30 abstract syntax)
            sub = 4
            while sub + 4 <= len(body):
                sub_kind, sub_length = body[sub], struct.unpack_from(">H", body, sub + 2)[0]
                if sub_kind == 0x30:
                    syntaxes.append(body[sub + 4: sub + 4 + sub_length].decode("ascii", "replace").rstrip("\0 "))
                sub += 4 + sub_length
        elif kind == 0x50:  # user information: 0x54 SCP/SCU role selection sub-items
            sub = 0
            while sub + 4 <= len(body):
                sub_kind, sub_length = body[sub], struct.unpack_from(">H", body, sub + 2)[0]
                if sub_kind == 0x54 and sub_length >= 4:
                    (uid_length,) = struct.unpack_from(">H", body, sub + 4)
                    uid = body[sub + 6: sub + 6 + uid_length].decode("ascii", "replace").rstrip("\0 ")
                    scp = body[sub + 6 + uid_length + 1: sub + 6 + uid_length + 2]
                    roles.append((uid, scp == b"\x01"))
                sub += 4 + sub_length
        at += 4 + item_length
    return syntaxes, roles


def storage_only(pdu: bytes, storage: Collection[str]) -> bool:
    """Whether the A-ASSOCIATE-RQ ``pdu`` proposes storage SOP classes (of ``storage``) and verification
    only, none with the SCP role (a C-GET's receiving side); False for anything else or bytes that do not
    read as a request."""
    try:
        read = proposal(pdu)
    except (struct.error, IndexError):
        return False
    if read is None or not read[0]:
        return False
    syntaxes, roles = read
    if any(uid != Verification and uid not in storage for uid in syntaxes):
        return False
    return not any(scp for _, scp in roles)


def peek_associate_rq(sock: socket.socket, timeout_s: float) -> bytes | None:
    """The peer's first PDU, left unread in the socket; None when it does not come whole within ``timeout_s``,
    is not an A-ASSOCIATE-RQ or is larger than ``MAX_RQ_BYTES``."""
    sock.settimeout(timeout_s)
    try:
        head = sock.recv(6, socket.MSG_PEEK | socket.MSG_WAITALL)
        if len(head) < 6 or head[0] != A_ASSOCIATE_RQ_TYPE:
            return None
        (length,) = struct.unpack(">L", head[2:6])
        if length > MAX_RQ_BYTES:
            return None
        pdu = sock.recv(6 + length, socket.MSG_PEEK | socket.MSG_WAITALL)
    except OSError:  # timeout, reset: pynetdicom meets the same socket and ends it as it does today
        return None
    return pdu if len(pdu) == 6 + length else None


def policy_text(settings: NodeSettings, *, journal_dir: Path, wake_address: bytes, slots_dir: Path,
                max_associations: int, handoff_address: str, events_address: str,
                relay: tuple[int, str] | None = None) -> str:
    """The policy file the compiled receiver reads: one ``key value`` per line, lists repeating the key.
    ``relay``: with TLS, the loopback port and token of the listener it passes non-storage associations to."""
    lines = [
        f"ae_title {settings.ae_title.strip()}",
        *(f"calling_ae_title {ae.strip()}" for ae in settings.allowed_calling_ae_titles),
        f"acse_timeout_s {settings.acse_timeout_s:g}",
        f"dimse_timeout_s {settings.dimse_timeout_s:g}",
        f"network_timeout_s {settings.network_timeout_s:g}",
        f"max_pdu {settings.max_pdu}",
        f"max_instance_bytes {settings.max_instance_bytes}",
        f"max_inflation_ratio {settings.max_inflation_ratio:g}",
        f"slots_dir {slots_dir}",
        f"max_associations {max_associations}",
        f"journal_dir {journal_dir}",
        f"wake_address {wake_address.lstrip(bytes(1)).decode()}",
        f"events_address {events_address}",
        f"handoff_address {handoff_address}",
        f"implementation_class_uid {IMPLEMENTATION_CLASS_UID}",
        f"implementation_version_name {IMPLEMENTATION_VERSION_NAME}",
        f"sop_class {Verification}",
        *(f"sop_class {uid}" for uid in storage_sop_classes(settings.accept)),
        *(f"transfer_syntax {ts}" for ts in TRANSFER_SYNTAXES),
        *(f"storage_class {uid}" for uid in storage_sop_classes("all")),
    ]
    if settings.tls_cert is not None and settings.tls_key is not None and relay is not None:
        lines += [f"tls_cert {settings.tls_cert}", f"tls_key {settings.tls_key}",
                  *([f"tls_ca {settings.tls_ca}"] if settings.tls_ca is not None else []),
                  f"tls_verify_client {int(settings.tls_verify_client)}",
                  f"relay_port {relay[0]}", f"relay_token {relay[1]}"]
    return "\n".join(lines) + "\n"


def _abstract(name: str) -> bytes:
    return b"\0" + name.encode()


@dataclass(kw_only=True)
class CompiledReceiver:
    """The compiled receiver of one listener process: started, handed connections, heard, stopped."""

    settings: NodeSettings = field(repr=False)
    journal_dir: Path
    wake_address: bytes
    slots_dir: Path
    max_associations: int
    metrics: IngestMetrics | None = None
    refused: list[str] = field(default_factory=list)
    executable: Path = BINARY
    relay: tuple[int, str] | None = field(default=None, repr=False)  # with TLS: (loopback port, token)
    storage: frozenset[str] = field(default=frozenset(), repr=False)
    handed_over: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _policy: Path | None = field(default=None, repr=False)
    _handoff: socket.socket | None = field(default=None, repr=False)
    _events: socket.socket | None = field(default=None, repr=False)
    _name: str = field(default="", repr=False)
    _started_at: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self) -> bool:
        """Start the receiver and listen to its events; False (logged why) when it cannot run."""
        self.storage = frozenset(str(uid) for uid in storage_sop_classes("all"))
        self._name = f"myonode-receiver-{os.getpid()}-{secrets.token_hex(6)}"
        self._events = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._events.bind(_abstract(self._name + "-events"))
        self._events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._handoff = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        self._policy = self.slots_dir / f"receiver-{os.getpid()}.policy"
        self._policy.write_text(policy_text(
            self.settings, journal_dir=self.journal_dir, wake_address=self.wake_address, slots_dir=self.slots_dir,
            max_associations=self.max_associations, handoff_address=self._name,
            events_address=self._name + "-events", relay=self.relay))
        self._policy.chmod(0o600)  # it may name the TLS key and holds the relay token
        threading.Thread(target=self._listen, name="myonode-receiver-events", daemon=True).start()
        return self._spawn()

    def _spawn(self) -> bool:
        self._started_at = time.monotonic()
        try:
            # stdin: a pipe held open by this process only; the receiver ends when it closes (this process ended)
            proc = subprocess.Popen([str(self.executable), str(self._policy)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.PIPE)
        except OSError as exc:
            log.warning("compiled receiver %s cannot start (%s): receiving with pynetdicom", self.executable, exc)
            return False
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            why = proc.stderr.read().decode(errors="replace").strip() if proc.wait() is not None else ""
            log.warning("compiled receiver did not start (%s): receiving with pynetdicom", why or "no answer")
            return False
        proc.stdout.close()
        threading.Thread(target=self._stderr, args=(proc,), name="myonode-receiver-stderr", daemon=True).start()
        self._process = proc
        log.info("C-STORE receiver: compiled (DCMTK), process %d; Q/R, storage commitment and mixed "
                 "associations: pynetdicom", proc.pid)
        return True

    @staticmethod
    def _stderr(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            log.warning("compiled receiver: %s", raw.decode(errors="replace").rstrip())

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def hand_over(self, sock: socket.socket, address: tuple[str, int]) -> bool:
        """Give the open connection to the compiled receiver; False when it is not running (then pynetdicom
        serves this association, and the receiver is started again unless it was just started)."""
        with self._lock:
            if not self.running():
                if self._process is not None:
                    log.error("compiled receiver process %d exited with %s; this association goes to pynetdicom",
                              self._process.pid, self._process.poll())
                    self._process = None
                if self._stopping.is_set() or time.monotonic() - self._started_at < RESTART_AFTER_S:
                    return False
                if not self._spawn():
                    return False
            assert self._handoff is not None
            try:
                sock.setblocking(True)  # the descriptor is shared: DCMTK reads it blocking, with its own timeouts
                # sendmsg, not socket.send_fds: that one drops its address argument (Python 3.11)
                self._handoff.sendmsg([str(address[0]).encode()],
                                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))],
                                      0, _abstract(self._name))
            except OSError as exc:
                log.error("handing the association from %s to the compiled receiver failed (%s): pynetdicom serves it",
                          address[0], exc)
                return False
            self.handed_over += 1
            return True

    def dispatch(self, sock: socket.socket, address: tuple[str, int], timeout_s: float) -> bool:
        """The listener's choice for one accepted connection: True when the compiled receiver took it."""
        if self._stopping.is_set():
            return False
        if self.relay is not None:  # TLS: the receiver reads the request after its handshake, relays the rest
            return self.hand_over(sock, address)
        pdu = peek_associate_rq(sock, timeout_s)
        if pdu is None or not storage_only(pdu, self.storage):
            return False
        return self.hand_over(sock, address)

    def _listen(self) -> None:
        assert self._events is not None
        while not self._stopping.is_set():
            try:
                raw = self._events.recv(65536)
            except OSError:
                return
            if not raw:
                continue
            try:
                self.on_event(raw.decode(errors="replace").split("\t"))
            except Exception:  # one odd datagram never stops the others
                log.exception("compiled receiver event %r not understood", raw[:200])

    def on_event(self, fields: list[str]) -> None:
        """One event from the compiled receiver: metrics, the refused list, the log."""
        kind, rest = fields[0], fields[1:]
        if kind == "stored" and len(rest) == 2:
            if self.metrics is not None:
                self.metrics.instances.labels("dimse").inc()
                self.metrics.bytes.labels("dimse").inc(int(rest[0]))
                self.metrics.store_seconds.labels("dimse").observe(float(rest[1]))
        elif kind == "refused" and len(rest) == 4:
            status, calling, peer, comment = rest
            if self.metrics is not None:
                self.metrics.refused.labels("dimse", status).inc()
            log.warning("refused instance from %s (%s): %s (%s)", calling or None, peer or None, comment, status)
        elif kind == "rejected" and len(rest) == 4:
            calling, peer, called, why = rest
            reason = f"association from {calling!r} at {peer} (called {called!r}) rejected"
            self.refused.append(reason)
            log.warning("%s: %s", reason, why)
        elif kind == "log" and len(rest) == 2:
            level = logging.getLevelName(rest[0].upper())
            log.log(level if isinstance(level, int) else logging.WARNING, "%s", rest[1])
        else:
            log.warning("compiled receiver event not understood: %s", "\t".join(fields)[:200])

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the receiver (associations in progress end with it) and forget its policy file."""
        self._stopping.set()
        with self._lock:
            proc, self._process = self._process, None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # the receiver's cue to end
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sock in (self._handoff, self._events):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        if self._policy is not None:
            self._policy.unlink(missing_ok=True)


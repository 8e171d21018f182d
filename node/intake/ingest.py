"""An instance into the store and the index: its header read under limits, its file in place, its index rows.

Two ways in, one set of rules (versions of a re-sent instance, series kinds, a visit re-opened):

- :meth:`Ingestor.index_journal`: what the network received. A C-STORE (or STOW-RS) is acknowledged
  by :class:`node.intake.receiver.Receiver` once its journal entry is durable; the indexer
  (:mod:`node.intake.indexer`) then calls this to index the entries, many per transaction.
- :meth:`Ingestor.ingest`: what the node writes itself (its result objects: :mod:`node.work.results`)
  — file fsync'd and renamed, index row committed, then status 0x0000.

:func:`read_header` is the one reader of what arrives (bounded: :class:`Limits`); every failure comes
back as a DICOM failure status with a comment, and leaves nothing half-written.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels.utils import get_expected_length
from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.dimse.status import Status
from node.intake.fields import InstanceFields, instance_fields, series_fields
from node.settings import SeriesRule
from storage import models as m
from storage.filestore import (
    INDEXED_UID_MAX_LENGTH,
    UID_MAX_LENGTH,
    FileStore,
    InvalidUIDError,
    StoredFile,
    validate_uid,
)
from storage.journal import Journal, JournalEntry
from storage.visit_states import reopen_statement

log = logging.getLogger(__name__)

SUCCESS = Status.SUCCESS
OUT_OF_RESOURCES = Status.OUT_OF_RESOURCES
CANNOT_UNDERSTAND = Status.CANNOT_UNDERSTAND
PROCESSING_FAILURE = Status.PROCESSING_FAILURE

ResendPolicy = Literal["keep_first", "replace", "keep_both"]
Action = Literal["journaled", "stored", "duplicate", "kept_first", "replaced", "new_version", "failed"]


@dataclass(frozen=True, kw_only=True)
class StoreOutcome:
    """What happened to one received instance, and the status to answer the peer with."""

    status: int
    action: Action
    comment: str | None = None
    instance_id: int | None = None
    series_uid: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


class BadDatasetError(ValueError):
    """The received bytes are not a DICOM instance we can index."""


def unreadable(exc: BadDatasetError, calling_ae: str | None, peer_address: str | None) -> StoreOutcome:
    """The answer to a data set that cannot be read (0xC000), logged with who sent it."""
    log.warning("refused instance from %s (%s): %s", calling_ae, peer_address, exc)
    return StoreOutcome(status=CANNOT_UNDERSTAND, action="failed", comment=str(exc)[:1024])


def not_stored(exc: OSError, sop_uid: str) -> StoreOutcome:
    """The answer when the disk refused the write (0xA700: the peer retries), logged."""
    reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"storage error: {exc}"
    log.error("could not store %s: %s", sop_uid, reason)
    return StoreOutcome(status=OUT_OF_RESOURCES, action="failed", comment=f"Out of resources: {reason}"[:1024])


@dataclass(frozen=True, kw_only=True)
class Header:
    """The attributes the index needs, read from a received instance."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str | None
    dataset: Dataset


class ParsedHeaders:
    """The hand-off of headers between the receiver and the indexer of one process, so an entry is not parsed
    twice: the receiver :meth:`put` s what it read, the indexer :meth:`take` s it back by entry name. It holds
    headers only while this process indexes (``myonode web`` beside serve does not: :meth:`open`), at most
    ``limit`` of them (a few KB each); an entry whose header is not here is simply read again."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._headers: dict[str, Header] = {}
        self._open = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """The indexer of this process runs: keep what receivers put."""
        self._open = True

    def put(self, name: str, header: Header) -> None:
        with self._lock:
            if self._open and len(self._headers) < self.limit:
                self._headers[name] = header

    def take(self, name: str) -> Header | None:
        with self._lock:
            return self._headers.pop(name, None)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one received instance may be (``[node] max_instance_bytes``, ``max_inflation_ratio``)."""

    max_bytes: int = 1 << 30
    max_inflation_ratio: float = 100.0


DEFAULT_LIMITS = Limits()
INFLATION_FLOOR = 64 << 20  # a deflated data set may always inflate this far (then the ratio bounds it)
DEFLATED = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE, EXPLICIT_BE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
NATIVE = {IMPLICIT_LE, "1.2.840.10008.1.2.1", EXPLICIT_BE, DEFLATED}
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
ITEM, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


def read_header(data: bytes, expected_sop_uid: str | None = None, limits: Limits | None = DEFAULT_LIMITS) -> Header:
    """Parse the header (not the pixels), validate the UIDs that name the file, and refuse what cannot be kept
    whole: more than ``limits.max_bytes``, a deflated data set inflating beyond its bound (a deflate bomb),
    pixel data shorter than its header says (a truncated file). ``limits`` None: an instance acknowledged
    already (a journal entry read back) — parsed as it is, never refused for what the receiver let through.
    Raises only :class:`BadDatasetError`."""
    try:
        return _read_header(data, expected_sop_uid, limits)
    except BadDatasetError:
        raise
    except Exception as exc:  # an attribute pydicom reads only when asked: this data set is unreadable
        raise BadDatasetError(f"not a readable DICOM data set: {exc.__class__.__name__}: {exc}"[:500]) from exc


def _read_header(data: bytes, expected_sop_uid: str | None, limits: Limits | None) -> Header:
    if limits is not None:
        if len(data) > limits.max_bytes:
            raise BadDatasetError(f"{len(data)} bytes: larger than [node] max_instance_bytes ({limits.max_bytes})")
        _check_inflation(data, limits)
    fp = BytesIO(data)
    try:
        ds = dcmread(fp, stop_before_pixels=True)
    except Exception as exc:  # whatever the bytes do to the parser: this data set is unreadable
        raise BadDatasetError(f"not a readable DICOM data set: {exc.__class__.__name__}: {exc}"[:500]) from exc
    sop_class, sop_uid, study, series = (_uid(ds, keyword) for keyword in (
        "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))
    # An over-long UID does not fit the request's Affected SOP Instance UID (64 characters, PS3.7): DCMTK
    # truncates it there. A request UID that is the data set's cut at 64 is the same instance.
    truncated = len(sop_uid) > UID_MAX_LENGTH and expected_sop_uid == sop_uid[:UID_MAX_LENGTH]
    if expected_sop_uid is not None and sop_uid != expected_sop_uid and not truncated:
        raise BadDatasetError(
            f"SOPInstanceUID {sop_uid} in the data set differs from {expected_sop_uid} in the request"
        )
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
    if ts is not None and (len(ts) > UID_MAX_LENGTH or "\x00" in ts):
        raise BadDatasetError(f"TransferSyntaxUID {ts[:80]!r} is not a UID")
    if limits is not None and ts != DEFLATED:  # positions in a deflated data set: in the inflated stream
        _check_pixel_data(data, fp.tell(), ds, ts)
    return Header(sop_class_uid=sop_class, sop_instance_uid=sop_uid, study_uid=study, series_uid=series, transfer_syntax_uid=ts, dataset=ds)


def _check_inflation(data: bytes, limits: Limits) -> None:
    """A Deflated Explicit VR Little Endian data set is inflated with a bound before pydicom inflates it whole:
    ``max_inflation_ratio`` times its size, but never less than ``INFLATION_FLOOR`` (a small blank image
    deflates a thousandfold) nor more than ``max_bytes``; counted in 1 MiB steps and thrown away."""
    fp = BytesIO(data)
    try:
        read_preamble(fp, False)
        # pydicom's reader of the meta group on an open file (its public read_file_meta_info takes a path only)
        meta = _read_file_meta_info(fp)
    except Exception:
        return  # no readable meta group: dcmread says why (or reads it without one)
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        return
    compressed = data[fp.tell():]
    bound = min(limits.max_bytes, max(INFLATION_FLOOR, int(len(compressed) * limits.max_inflation_ratio)))
    inflater, pending, inflated = zlib.decompressobj(-zlib.MAX_WBITS), compressed, 0
    try:
        while inflated <= bound:
            chunk = inflater.decompress(pending, 1 << 20)
            pending = inflater.unconsumed_tail
            inflated += len(chunk)
            if not chunk and not pending:
                break
    except zlib.error as exc:
        raise BadDatasetError(f"the deflated data set does not inflate: {exc}") from exc
    if inflated > bound:
        raise BadDatasetError(f"deflate bomb: the deflated data set of {len(compressed)} bytes inflates beyond "
                              f"{bound} bytes ([node] max_inflation_ratio {limits.max_inflation_ratio:g}, "
                              f"max_instance_bytes {limits.max_bytes})")


def _check_pixel_data(data: bytes, at: int, ds: Dataset, ts: str | None) -> None:
    """Pixel data (at ``at``, where parsing stopped) that ends before its length says, or holds fewer bytes than
    its image attributes need (native syntaxes), is refused naming what is missing. Read with the encoding
    pydicom found (not the one the meta group claims), an implicit-VR element in an explicit data set included."""
    if at + 8 > len(data):
        return  # no pixel data element: nothing to check
    implicit, little = ds.original_encoding
    order = "<" if little is not False else ">"
    group, element = struct.unpack(order + "HH", data[at:at + 4])
    if group != 0x7FE0:
        return
    vr = data[at + 4:at + 6]
    if implicit or not (vr.isalpha() and vr.isupper()):  # as pydicom: no VR there, an implicit element
        (length,), start = struct.unpack(order + "L", data[at + 4:at + 8]), at + 8
    elif vr in LONG_VRS:
        if at + 12 > len(data):
            raise BadDatasetError("truncated file: the pixel data element is cut off in its header")
        (length,), start = struct.unpack(order + "L", data[at + 8:at + 12]), at + 12
    else:
        (length,), start = struct.unpack(order + "H", data[at + 6:at + 8]), at + 8
    if length == 0xFFFFFFFF:
        _check_fragments(data, start)
        return
    if start + length > len(data):
        raise BadDatasetError(f"truncated file: the pixel data ({group:04X},{element:04X}) says {length} bytes, "
                              f"the data set holds {len(data) - start}")
    if ts in NATIVE and element == 0x0010:
        try:  # pydicom's rule (YBR 4:2:2 is two bytes a pixel, 1-bit images packed, frames)
            expected = int(get_expected_length(ds, "bytes"))
        except Exception:
            return  # the image attributes are missing or not numbers: nothing to compare with (kept as sent)
        if length < expected:
            raise BadDatasetError(f"short pixel data: {length} bytes; its image attributes (rows, columns, "
                                  f"samples, bits, frames, photometric interpretation) need {expected}")


def _check_fragments(data: bytes, at: int) -> None:
    """Encapsulated pixel data: every item fits in the data set and the sequence delimiter comes."""
    while at + 8 <= len(data):
        group, element, length = struct.unpack("<HHL", data[at:at + 8])
        if (group, element) == SEQUENCE_END:
            return
        if (group, element) != ITEM or at + 8 + length > len(data):
            break
        at += 8 + length
    raise BadDatasetError("truncated file: the encapsulated pixel data ends before its sequence delimiter")


def _uid(ds: Dataset, keyword: str) -> str:
    """A UID that names the file, as sent. One breaking the UID grammar (leading zeros, letters, trailing
    spaces: all seen in the field) is kept with a warning; the store derives a safe file name from it.
    Refused: none at all, or one longer than the index holds (128 characters; a valid UID has 64)."""
    uid = str(ds.get(keyword, "") or "")
    if not uid.strip():
        raise BadDatasetError(f"{keyword} is missing or empty")
    if "\x00" in uid:
        raise BadDatasetError(f"{keyword} {uid[:80]!r} holds a NUL character")
    if len(uid) > INDEXED_UID_MAX_LENGTH:
        raise BadDatasetError(f"{keyword} {uid[:80]!r}… is longer than {INDEXED_UID_MAX_LENGTH} characters")
    try:
        validate_uid(uid, keyword)
    except InvalidUIDError as exc:
        log.warning("%s; stored as sent, under a file name derived from its hash", exc)
    return uid


@dataclass(frozen=True, kw_only=True)
class StoredVersion:
    """An indexed version of a SOP Instance UID (what :func:`plan` decides from)."""

    id: int
    version: int
    sha256: str
    file_path: str
    size_bytes: int = 0
    content_sha256: str | None = None  # None: indexed before content hashes were kept


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to do with one received instance, given the versions already indexed."""

    action: Action
    version: int | None = None  # the version to store (None: nothing is stored)
    existing_id: int | None = None  # the indexed row that stands for it when nothing is stored
    replaced: tuple[StoredVersion, ...] = ()
    conflict: bool = False


LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                             b"UV"})


def content_sha256(data: bytes) -> str:
    """SHA-256 of what an instance *is*: its transfer syntax and the data set after the file meta information.
    The same instance written by another application — another preamble, Implementation Class UID, Source
    AE Title, or none of the 128-byte preamble (STOW-RS clients) — hashes the same; a change of a single
    byte of the data set does not. (File meta information is PS3.10 Explicit VR Little Endian, group 0002.)"""
    at = 132 if data[128:132] == b"DICM" else 0
    syntax = b""
    while at + 8 <= len(data) and data[at:at + 2] == b"\x02\x00":
        element, vr = int.from_bytes(data[at + 2:at + 4], "little"), data[at + 4:at + 6]
        if vr in LONG_LENGTH_VRS:
            head, length = 12, int.from_bytes(data[at + 8:at + 12], "little")
        else:
            head, length = 8, int.from_bytes(data[at + 6:at + 8], "little")
        if element == 0x0010:
            syntax = data[at + head:at + head + length].rstrip(b"\0 ")
        at += head + length
    digest = hashlib.sha256(syntax + b"\0")
    digest.update(memoryview(data)[at:])
    return digest.hexdigest()


def same_content(a: bytes, b: bytes) -> bool:
    """Whether two PS3.10 files hold the same data set, however each application encoded it: every element
    equal once the file meta information, group lengths and trailing padding — which encoders write, drop or
    change freely (DCMTK's storescu and pydicom do) — are left out. Read only for a re-sent SOP Instance UID."""
    try:
        first, second = (dcmread(BytesIO(data), force=True) for data in (a, b))
    except Exception:  # whatever an unreadable stored file or new one does to the parser: not the same
        return False
    for ds in (first, second):
        for tag in [elem.tag for elem in ds if elem.tag.element == 0 or elem.tag == 0xFFFCFFFC]:
            del ds[tag]
    try:
        return bool(first == second)
    except Exception:  # a value that cannot be converted to compare
        return False


def plan(versions: Sequence[StoredVersion], sha256: str, policy: ResendPolicy, content: str | None = None) -> Plan:
    """The re-send rule, in one place: an identical re-send — the same file (``sha256``) or the same content
    however its file meta information was written (``content``, :func:`content_sha256`) — is a duplicate;
    different content is kept first, replaces, or becomes a new flagged version, as ``policy`` says."""
    if any(v.sha256 == sha256 or (content is not None and v.content_sha256 == content) for v in versions):
        return Plan(action="duplicate", existing_id=versions[-1].id)
    if not versions:
        return Plan(action="stored", version=1)
    if policy == "keep_first":
        return Plan(action="kept_first", existing_id=versions[0].id)
    version = max(v.version for v in versions) + 1
    if policy == "replace":
        return Plan(action="replaced", version=version, replaced=tuple(versions))
    return Plan(action="new_version", version=version, conflict=True)


@dataclass(frozen=True, kw_only=True)
class Received:
    """A journal entry read back for indexing."""

    entry: JournalEntry
    header: Header
    sha256: str
    content_sha256: str
    fields: InstanceFields


def fields_of(h: Header) -> InstanceFields:
    """The index values of ``h`` (never raises), with a warning logged for each attribute not kept as sent."""
    f = instance_fields(h.dataset)
    for warning in f.warnings:
        log.warning("instance %s: %s", h.sop_instance_uid, warning)
    return f


ENTRY_ERRNOS = {errno.ENOENT, errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR}


def retry_later(exc: BaseException) -> bool:
    """True for a failure of the database, the disk or the process (all kept for a retry: the entries wait,
    ``/healthz`` says so), False for one that the entry's own content caused (it is set aside).

    The entry's own: a value the database refuses (``DataError``, ``IntegrityError`` after the retry), a
    file name the filesystem refuses, a Python error from its content. Everything else — a database that is
    unreachable, read-only, short of privileges or damaged, a disk that is full or failing, too many open
    files — says nothing about the entry and would set aside every one of them."""
    if isinstance(exc, OSError):
        return exc.errno not in ENTRY_ERRNOS
    if isinstance(exc, DBAPIError):
        return not isinstance(exc, (DataError, IntegrityError))
    return False


@contextmanager
def _relaxed_commit(conn: Connection) -> Iterator[None]:
    """A transaction on ``conn`` whose commit does not wait for the database's flush to disk (see
    :meth:`Ingestor.index_journal` for why that is safe there, and only there)."""
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:  # a connection setting, outside any transaction; given back before the pool reuses it
        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        conn.commit()
    try:
        conn.begin()
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        if sqlite:
            conn.exec_driver_sql("PRAGMA synchronous=FULL")
            conn.commit()


class Ingestor:
    """Stores received instances durably and indexes them (thread-safe within one process).

    Two ways in: :meth:`ingest` writes and indexes one instance before it returns (the pipeline's
    results, imports); :meth:`index_journal` indexes a batch of journal entries that a receiver
    has already made durable and acknowledged (``node.intake.indexer``), in one transaction."""

    def __init__(
        self,
        store: FileStore,
        sessions: sessionmaker[Session],
        rules: list[SeriesRule],
        policy: ResendPolicy = "keep_both",
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.rules = rules
        self.policy = policy
        # One index writer at a time: SQLite serialises writers anyway, and this keeps
        # get-or-create of patient/study/series free of races between associations.
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._in_flight_changed = threading.Condition()
        self._series_cache: dict[str, tuple[int, m.SeriesKind]] = {}
        self.engine = sessions.kw["bind"]
        # Statements built once: this path runs for every received instance, and building
        # SQLAlchemy statements costs more than executing them.
        self._q_versions = (
            select(m.Instance.id, m.Instance.version, m.Instance.sha256, m.Instance.file_path, m.Instance.size_bytes,
                   m.Instance.content_sha256)
            .where(m.Instance.sop_instance_uid == bindparam("sop")).order_by(m.Instance.version)
        )
        self._q_series = select(m.Series.id, m.Series.kind).where(m.Series.series_instance_uid == bindparam("uid"))
        self._q_insert = insert(m.Instance).returning(m.Instance.id)
        self._q_touch_series = (
            update(m.Series).where(m.Series.id == bindparam("sid"))
            .values(n_instances=m.Series.n_instances + bindparam("added"),
                    bytes_stored=m.Series.bytes_stored + bindparam("bytes"), last_received_at=bindparam("now"))
        )
        self._q_reopen = reopen_statement()

    def _versions(self, conn: Connection, sop_uid: str) -> list[StoredVersion]:
        return [StoredVersion(id=r.id, version=r.version, sha256=r.sha256, file_path=r.file_path,
                              size_bytes=r.size_bytes, content_sha256=r.content_sha256)
                for r in conn.execute(self._q_versions, {"sop": sop_uid})]

    def ingest(
        self,
        data: bytes,
        *,
        calling_ae: str | None = None,
        peer_address: str | None = None,
        expected_sop_uid: str | None = None,
    ) -> StoreOutcome:
        """Store ``data`` (a DICOM file: preamble, meta, data set) and index it; never raises."""
        try:
            header = read_header(data, expected_sop_uid)
        except BadDatasetError as exc:
            return unreadable(exc, calling_ae, peer_address)
        try:
            return self._ingest(header, data, calling_ae, peer_address)
        except OSError as exc:
            return not_stored(exc, header.sop_instance_uid)
        except OperationalError as exc:
            log.error("could not index %s: %s", header.sop_instance_uid, exc.orig)
            return StoreOutcome(status=OUT_OF_RESOURCES, action="failed", comment=f"Out of resources: database unavailable: {exc.orig}"[:1024])
        except SQLAlchemyError as exc:
            log.exception("could not index %s", header.sop_instance_uid)
            return StoreOutcome(status=PROCESSING_FAILURE, action="failed", comment=f"index error: {exc.__class__.__name__}"[:1024])

    def _ingest(self, h: Header, data: bytes, calling_ae: str | None, peer: str | None) -> StoreOutcome:
        sha, content = hashlib.sha256(data).hexdigest(), content_sha256(data)
        f = fields_of(h)
        with self._claim(h.sop_instance_uid):
            with self._lock, self.engine.connect() as conn:
                versions = self._versions(conn, h.sop_instance_uid)
            decided = self._decide(versions, sha, content, data)
            if decided.version is None:
                return self._not_stored(h, decided)
            # Outside the index lock, so writers write and fsync in parallel. A file can exist
            # without a row after a crash between rename and commit: it was never
            # acknowledged, so it is replaced.
            stored = self.store.write(h.study_uid, h.series_uid, h.sop_instance_uid, data,
                                      version=decided.version, replace=True)
            try:
                for attempt in (1, 2):
                    try:
                        pending: dict[str, tuple[int, m.SeriesKind]] = {}
                        with self._lock, self.engine.begin() as conn:
                            instance_id = self._index(conn, h, f, stored, decided, calling_ae, peer, pending,
                                                  content=content)
                        break
                    except IntegrityError:
                        if attempt == 2:
                            raise
                        self._series_cache.clear()  # a cached series row was deleted meanwhile
            except BaseException:
                stored.path.unlink(missing_ok=True)
                raise
            self._series_cache.update(pending)
        self._after_commit(h, decided)
        return StoreOutcome(status=SUCCESS, action=decided.action, instance_id=instance_id, series_uid=h.series_uid)

    def _decide(self, versions: list[StoredVersion], sha: str, content: str, data: bytes | Path) -> Plan:
        """:func:`plan`, with a re-send whose bytes differ from every stored version compared by its data set
        (:func:`same_content`): the same instance written by another application is a duplicate."""
        decided = plan(versions, sha, self.policy, content)
        if decided.action == "duplicate" or not versions:
            return decided
        try:
            received = data if isinstance(data, bytes) else data.read_bytes()
            for v in reversed(versions):
                if same_content(self.store.absolute(v.file_path).read_bytes(), received):
                    return Plan(action="duplicate", existing_id=v.id)
        except OSError as exc:  # a stored version that cannot be read: decided on the hashes alone
            log.warning("re-sent instance compared by its hashes only: %s", exc)
        return decided

    def _not_stored(self, h: Header, decided: Plan) -> StoreOutcome:
        if decided.action == "kept_first":
            log.warning("re-sent %s with different content: kept the first (policy keep_first)", h.sop_instance_uid)
        return StoreOutcome(status=SUCCESS, action=decided.action, instance_id=decided.existing_id,
                            series_uid=h.series_uid)

    def _after_commit(self, h: Header, decided: Plan) -> None:
        for v in decided.replaced:
            self.store.absolute(v.file_path).unlink(missing_ok=True)
        if decided.action == "new_version":
            log.warning("re-sent %s with different content: stored as version %d, flagged",
                        h.sop_instance_uid, decided.version)

    def index_journal(self, entries: Sequence[JournalEntry], journal: Journal,
                      parsed: ParsedHeaders | None = None) -> list[StoreOutcome]:
        """Index journal entries (already durable and acknowledged), oldest first; no one entry can stop it.

        Each entry is read back and its index values taken from its header (:mod:`node.intake.fields`:
        never fails on content); one that cannot be read at all is set aside in ``failed/`` with its
        reason. The rest are indexed in one transaction: hard-linked into their place in the store,
        the rows committed, and only then the entries marked done — so a crash at any point leaves
        every entry either indexed or still in the journal. Should that transaction fail for a reason
        other than the database being unreachable, the entries are indexed again one per
        transaction, and the one that fails on its own is set aside with the error as its reason:
        the others are indexed all the same. ``parsed``: what the receiver of this process already
        parsed (taken out). Raises only when the database is unreachable or the disk
        is full (:func:`retry_later`), with nothing committed and every entry still pending.

        Nothing here waits for the disk: the journal entry, fsync'd before it was acknowledged, stays
        on disk under a kept name, and a start after a power cut puts back whatever of the links,
        rows and renames the disk did not keep. The commit does not wait for the index's own flush
        either (SQLite ``synchronous=NORMAL`` on this connection, PostgreSQL ``synchronous_commit =
        off`` for this transaction), for the same reason (``node.intake.indexer.Indexer.reconcile``)."""
        received: list[Received] = []
        outcomes: list[StoreOutcome] = []
        for entry in entries:
            try:
                data = entry.path.read_bytes()
                header = (parsed.take(entry.path.name) if parsed else None) or read_header(data, limits=None)
                received.append(Received(entry=entry, header=header, sha256=hashlib.sha256(data).hexdigest(),
                                         content_sha256=content_sha256(data),
                                         fields=fields_of(header)))
            except Exception as exc:  # whatever the bytes do to the parser: this entry only
                if retry_later(exc):
                    raise
                outcomes.append(self._set_aside(journal, entry, exc))
        if not received:
            return outcomes
        try:
            outcomes += self._index_received(received, journal)
        except Exception as exc:
            if retry_later(exc):
                raise
            if len(received) == 1:
                outcomes.append(self._set_aside(journal, received[0].entry, exc))
                return outcomes
            log.warning("indexing %d journal entries in one transaction failed (%s: %s); indexing them one by one",
                        len(received), exc.__class__.__name__, str(exc)[:200])
            for r in received:
                try:
                    outcomes += self._index_received([r], journal)
                except Exception as one:
                    if retry_later(one):
                        raise
                    outcomes.append(self._set_aside(journal, r.entry, one))
        return outcomes

    def _index_received(self, received: Sequence[Received], journal: Journal) -> list[StoreOutcome]:
        with self._lock:
            for attempt in (1, 2):
                try:
                    decisions = self._index_batch(received)
                    break
                except IntegrityError:
                    if attempt == 2:
                        raise
                    self._series_cache.clear()
        # Committed. Superseded files go first, then the entries leave the journal: whoever waits for
        # the journal to drain (Receiver.settle) then sees the store as the index describes it.
        outcomes = []
        for r, (decided, outcome) in zip(received, decisions):
            self._after_commit(r.header, decided)
            for v in decided.replaced:
                journal.forget(v.sha256)
            journal.done(r.entry, sha256=r.sha256 if decided.version is not None else None)
            outcomes.append(outcome)
        return outcomes

    @staticmethod
    def _set_aside(journal: Journal, entry: JournalEntry, exc: BaseException) -> StoreOutcome:
        reason = f"not indexable: {exc}" if isinstance(exc, BadDatasetError) else \
            f"not indexable: {exc.__class__.__name__}: {str(exc)[:500]}"
        where = journal.fail(entry, reason)
        log.error("journal entry %s cannot be indexed, set aside as %s: %s", entry.path.name, where, reason)
        return StoreOutcome(status=CANNOT_UNDERSTAND, action="failed", comment=reason[:1024])

    def _index_batch(self, received: Sequence[Received]) -> list[tuple[Plan, StoreOutcome]]:
        pending: dict[str, tuple[int, m.SeriesKind]] = {}
        placed: list[Path] = []
        decisions: list[tuple[Plan, StoreOutcome]] = []
        try:
            with self.engine.connect() as conn, _relaxed_commit(conn):
                for r in received:
                    h = r.header
                    decided = self._decide(self._versions(conn, h.sop_instance_uid), r.sha256, r.content_sha256,
                                           r.entry.path)
                    if decided.version is None:
                        decisions.append((decided, self._not_stored(h, decided)))
                        continue
                    stored = self.store.adopt(r.entry.path, h.study_uid, h.series_uid, h.sop_instance_uid,
                                              version=decided.version, sha256=r.sha256)
                    placed.append(stored.path)
                    instance_id = self._index(conn, h, r.fields, stored, decided, r.entry.calling_ae,
                                              r.entry.peer_address, pending, content=r.content_sha256)
                    decisions.append((decided, StoreOutcome(status=SUCCESS, action=decided.action,
                                                            instance_id=instance_id, series_uid=h.series_uid)))
                conn.commit()
        except BaseException:
            # Each placed name is a version no row has (a new version number): safe to remove.
            for path in placed:
                path.unlink(missing_ok=True)
            raise
        self._series_cache.update(pending)
        return decisions

    @contextmanager
    def _claim(self, sop_uid: str) -> Iterator[None]:
        """Serialise work on one SOP Instance UID (the same instance re-sent on two associations)."""
        with self._in_flight_changed:
            while sop_uid in self._in_flight:
                self._in_flight_changed.wait()
            self._in_flight.add(sop_uid)
        try:
            yield
        finally:
            with self._in_flight_changed:
                self._in_flight.discard(sop_uid)
                self._in_flight_changed.notify_all()

    def _series_id(self, conn: Connection, h: Header, now: datetime,
                   pending: dict[str, tuple[int, m.SeriesKind]]) -> tuple[int, m.SeriesKind]:
        """The series row of ``h`` (cached by UID; patient, study and series created on first sight).

        ``pending`` holds what this transaction found or created; it joins the cache after the commit."""
        cached = pending.get(h.series_uid) or self._series_cache.get(h.series_uid)
        if cached is not None:
            return cached
        row = conn.execute(self._q_series, {"uid": h.series_uid}).one_or_none()
        series = (row[0], row[1]) if row is not None else self._create_series(conn, h, now)
        if len(self._series_cache) > 10_000:
            self._series_cache.clear()
        pending[h.series_uid] = series
        return series

    def _create_series(self, conn: Connection, h: Header, now: datetime) -> tuple[int, m.SeriesKind]:
        """Patient (if new), study (if new) and series rows for the first instance of a series."""
        f = series_fields(h.dataset, self.rules)
        for warning in f.warnings:
            log.warning("series %s: %s", h.series_uid, warning)
        with Session(bind=conn) as s:
            patient = s.scalars(
                select(m.Patient).where(m.Patient.patient_id == f.patient_id, m.Patient.issuer == f.issuer)
            ).one_or_none()
            if patient is None:
                patient = m.Patient(patient_id=f.patient_id, issuer=f.issuer, patient_name=f.patient_name,
                                    birth_date=f.birth_date, sex=f.sex)
                s.add(patient)
            study = s.scalars(select(m.Study).where(m.Study.study_instance_uid == h.study_uid)).one_or_none()
            if study is None:
                study = m.Study(
                    patient=patient, study_instance_uid=h.study_uid, study_date=f.study_date,
                    study_time=f.study_time, accession_number=f.accession_number,
                    study_description=f.study_description, time_point_id=f.time_point_id,
                )
                s.add(study)
            series = m.Series(
                study=study, series_instance_uid=h.series_uid, modality=f.modality, series_number=f.series_number,
                series_description=f.series_description, protocol_name=f.protocol_name,
                frame_of_reference_uid=f.frame_of_reference_uid, kind=f.kind, n_instances=0,
                first_received_at=now, last_received_at=now,
            )
            s.add(series)
            s.flush()
            return series.id, series.kind

    def _index(
        self, conn: Connection, h: Header, f: InstanceFields, stored: StoredFile, decided: Plan,
        calling_ae: str | None, peer: str | None, pending: dict[str, tuple[int, m.SeriesKind]], *, content: str,
    ) -> int:
        """Insert the instance row, update its series and re-open its visit; returns the instance id.

        Core statements rather than ORM objects: this runs once per received instance.
        """
        now = datetime.now(UTC)
        series_id, kind = self._series_id(conn, h, now, pending)
        replaced = [v.id for v in decided.replaced]
        instance_id = conn.execute(
            self._q_insert,
            dict(
                series_fk=series_id, sop_instance_uid=h.sop_instance_uid, version=decided.version,
                sop_class_uid=h.sop_class_uid, transfer_syntax_uid=h.transfer_syntax_uid,
                instance_number=f.instance_number, content_date=f.content_date, content_time=f.content_time,
                station_key=f.station_key, b_values=f.b_values, derived=f.derived,
                file_path=self.store.relative(stored.path), size_bytes=stored.size_bytes, sha256=stored.sha256,
                content_sha256=content,
                calling_ae=(calling_ae or None) and calling_ae[:16], peer_address=peer, conflict=decided.conflict,
                received_at=now,
            ),
        ).scalar_one()
        if replaced:
            conn.execute(delete(m.Instance).where(m.Instance.id.in_(replaced)))
        conn.execute(self._q_touch_series, {"sid": series_id, "added": 1 - len(replaced), "now": now,
                                            "bytes": stored.size_bytes - sum(v.size_bytes for v in decided.replaced)})
        if kind is not m.SeriesKind.RESULT:
            reopened = conn.execute(self._q_reopen, {"sid": series_id, "now": now}).rowcount
            if reopened:
                log.info("late instance %s re-opened its visit for processing", h.sop_instance_uid)
        return instance_id

"""DICOMweb (PS3.18) on the node's own index, store and ingest path.

- **QIDO-RS** ``GET /dicomweb/studies``, ``…/studies/{study}/series``, ``…/series``,
  ``…/studies/{study}/series/{series}/instances``, ``…/studies/{study}/instances``, ``…/instances``:
  the query parameters become a C-FIND identifier and go through the same matching as C-FIND
  (:func:`node.dimse.qr.find`: wildcards, ranges, lists, the newest version of a re-sent instance);
  ``limit``, ``offset`` and ``includefield`` as PS3.18 §8.3.4 says; ``application/dicom+json``.
- **WADO-RS** ``GET …/studies/{study}[/series/{series}[/instances/{instance}]]``: the instances as
  ``multipart/related; type="application/dicom"``, in the transfer syntax the ``Accept`` header asks
  for (``transfer-syntax=*``: as stored; none named: Explicit VR Little Endian, PS3.18 §8.7.3.5.2),
  transcoded exactly as C-GET does (:func:`node.dimse.transcode.for_peer`: never lossy);
  ``…/metadata`` (dicom+json read from the headers only, every bulk value and the pixel data by
  ``BulkDataURI``), ``…/instances/{instance}/frames/{list}`` (as stored or native, as the ``Accept``
  header allows: :mod:`node.web.frames`; 406 when it allows nothing we can give), ``…/bulkdata/{tag}``.
- **STOW-RS** ``POST /dicomweb/studies[/{study}]``: every part through
  :meth:`node.intake.receiver.Receiver.receive` — the same header check, journal and durability
  promise as C-STORE, then the same indexer, exam watcher and pipeline.

Who may: QIDO/WADO need a ``viewer`` account, STOW an ``operator`` (HTTP Basic or a console
session: with the session's CSRF token, or from the console's own origin as the OHIF viewer at ``/viewer``
posts) — accounts are DICOMweb's allow-list, as calling AE titles are DIMSE's.
Multipart bodies are framed here (RFC 2046): Starlette reads only multipart/form-data, and the
standard library's ``email`` parser is not binary-safe for DICOM parts.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

from pydicom import config, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from node.dimse.matching import MAX_QUERY_CHARS
from node.dimse.qr import (
    IMAGE_KEYS,
    PATIENT_KEYS,
    SERIES_KEYS,
    STUDY_KEYS,
    QueryError,
    TooManyMatches,
    find,
    retrieve_files,
)
from node.dimse.transcode import PIXEL_HANDLER_ERRORS, TranscodeError, for_peer
from node.intake.ingest import BadDatasetError, Header, read_header
from node.web import frames as pixel_frames
from node.web.access import Access, Handler, RouteSpec, WebContext, client_address, web_context
from node.web.accounts import audit
from storage import models as m
from storage.dicom_json import BASE, MetadataCache, series_listing

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
READ = Access(role=m.Role.VIEWER, basic=True)
WRITE = Access(role=m.Role.OPERATOR, basic=True, origin_suffices=True)  # the viewer's STOW-RS: node.web.access
AS_STORED = "*"
# PS3.18 Table 6.6.1-3 failure reasons used here
FAILURE_PROCESSING, FAILURE_STUDY_MISMATCH = 0x0110, 0xA900
LEVEL_KEYS = {"STUDY": (*PATIENT_KEYS, *STUDY_KEYS), "SERIES": (*SERIES_KEYS, "StudyInstanceUID"),
              "IMAGE": (*IMAGE_KEYS, "StudyInstanceUID", "SeriesInstanceUID")}
PAGING = {"limit", "offset", "fuzzymatching", "includefield"}
MAX_PARTS = 100_000
SPOOL_IN_MEMORY = 8 << 20
Buffer = bytes | mmap.mmap
BINARY_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")
INTEGER_VRS = {"US", "SS", "UL", "SL", "UV", "SV"}
FLOAT_VRS = {"FL", "FD"}


class BadRequest(ValueError):
    pass


def base_url(request: Request) -> str:
    """Where DICOMweb is reached from outside: ``[web] public_url`` — never the request's Host header."""
    return f"{web_context(request).settings.web.public_base_url()}/dicomweb"


# --- QIDO-RS -------------------------------------------------------------------------------


def _tag(name: str) -> BaseTag:
    """A query parameter name (keyword or tag, PS3.18 §8.3.4.1) as a tag of a known attribute; raises BadRequest."""
    try:
        tag = Tag(int(name, 16)) if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name) else Tag(name)
        dictionary_VR(tag)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"query parameter {name!r} is neither a DICOM keyword nor a tag") from None
    except KeyError:
        raise BadRequest(f"query parameter {name!r}: no such attribute") from None
    return tag


def identifier_for(level: str, params: Iterable[tuple[str, str]], fixed: dict[str, str]
                   ) -> tuple[Dataset, int | None, int]:
    """The C-FIND identifier for a QIDO-RS request, with (limit, offset); raises BadRequest naming the parameter."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in LEVEL_KEYS[level]:
        setattr(ds, keyword, "")
    limit: int | None = None
    offset = 0
    for name, value in params:
        if name == "limit":
            limit = _count(name, value) or None  # 0: no limit asked for (the node's bound still holds)
        elif name == "offset":
            offset = _count(name, value)
        elif name == "includefield":
            for field_name in value.split(","):
                if field_name.strip() and field_name.strip() != "all":
                    _set(ds, _tag(field_name.strip()), "", name)
        elif name in PAGING:
            continue
        else:
            _set(ds, _tag(name), value, name)
    for keyword, value in fixed.items():
        _set(ds, Tag(keyword), value, keyword)
    return ds, limit, offset


def _set(ds: Dataset, tag: BaseTag, value: str, name: str) -> None:
    """The attribute ``tag`` = ``value`` in the identifier, or BadRequest when the value does not fit its VR."""
    if len(value) > MAX_QUERY_CHARS:
        raise BadRequest(f"{name}: a value of {len(value)} characters (at most {MAX_QUERY_CHARS})")
    vr = dictionary_VR(tag)
    what = keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})"
    if vr == "SQ" or any(binary in vr for binary in BINARY_VRS):
        if value:
            raise BadRequest(f"{name}: {what} ({vr}) is not matched by a value")
        ds.add_new(tag, "SQ" if vr == "SQ" else vr.split(" ")[0], [] if vr == "SQ" else None)
        return
    values = value.split("\\") if "\\" in value and vr != "UI" else [value]
    if vr == "UI":  # as stored: the node keeps UIDs that break the grammar as sent, and must find them
        ds.add_new(tag, vr, value.replace(",", "\\"))  # a list, comma- or backslash-separated (PS3.18 8.3.4.1)
        return
    try:
        numeric = int if vr in INTEGER_VRS else float if vr in FLOAT_VRS else None
        converted: list[Any] = [v if numeric is None else numeric(v) if v else None for v in values]
        with config.strict_reading():
            ds.add_new(tag, vr, converted if len(converted) > 1 else converted[0])
            ds[tag].value  # noqa: B018 - converted now, so a value that does not fit fails here, not later
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        raise BadRequest(f"{name}: {value[:60]!r} does not fit {what} ({vr}): {exc}"[:300]) from None


def _count(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {value!r}") from None
    if n < 0:
        raise BadRequest(f"{name} must not be negative")
    return n


def _qido(level: str, fixed_keys: tuple[str, ...]) -> Handler:
    async def search(request: Request) -> Response:
        ctx = web_context(request)
        fixed = {k: request.path_params[p] for k, p in zip(fixed_keys, ("study", "series"), strict=False)}
        identifier, limit, offset = identifier_for(level, request.query_params.multi_items(), fixed)

        def run() -> list[dict[str, Any]]:
            ctx.receiver.settle()  # as C-FIND: every instance acknowledged before the request is found
            qr = ctx.settings.qr
            with ctx.sessions() as s:
                found = find(s, identifier, ctx.settings.node.ae_title, limit=limit, offset=offset,
                             max_results=qr.max_results, timeout_s=qr.query_timeout_s)
            out = []
            for ds in found:
                del ds.QueryRetrieveLevel
                ds.RetrieveURL = _retrieve_url(request, ds, level)
                out.append(ds.to_json_dict())
            return out

        results = await run_in_threadpool(run)
        if not results:
            return Response(status_code=204)
        return Response(json.dumps(results), media_type=DICOM_JSON)

    search.__name__ = f"qido_{level.lower()}_{'_'.join(k.lower() for k in fixed_keys) or 'all'}"
    return search


def _retrieve_url(request: Request, ds: Dataset, level: str) -> str:
    url = f"{base_url(request)}/studies/{ds.get('StudyInstanceUID', '')}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{ds.get('SeriesInstanceUID', '')}"
    if level == "IMAGE":
        url += f"/instances/{ds.get('SOPInstanceUID', '')}"
    return url


# --- WADO-RS -------------------------------------------------------------------------------


def requested_syntaxes(accept: str) -> list[str]:
    """Transfer syntaxes an ``Accept`` header asks for, in its order (``*``: as stored); none named: Explicit
    VR Little Endian. Raises BadRequest when it accepts no ``application/dicom``."""
    wanted: list[str] = []
    acceptable = False
    for media_range in (r.strip() for r in accept.split(",") if r.strip()):
        parts = [p.strip() for p in media_range.split(";")]
        params = dict((k.strip().lower(), v.strip().strip('"')) for k, _, v in (p.partition("=") for p in parts[1:]))
        kind = parts[0].lower()
        inner = params.get("type", "application/dicom").lower() if kind == "multipart/related" else kind
        if kind in ("*/*", "multipart/*") or inner in ("application/dicom", "application/*", "*/*"):
            acceptable = True
            if "transfer-syntax" in params:
                wanted.append(params["transfer-syntax"])
    if not accept.strip():
        acceptable = True
    if not acceptable:
        raise BadRequest(f"WADO-RS here gives multipart/related; type=\"application/dicom\", not {accept!r}")
    return wanted or [ExplicitVRLittleEndian]


def multipart(parts: Iterable[tuple[bytes, str]]) -> tuple[bytes, str]:
    """A multipart/related body of (content, content type) parts; returns (body, boundary)."""
    boundary = secrets.token_hex(16)
    out = BytesIO()
    for content, content_type in parts:
        out.write(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        out.write(content)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), boundary


def _encoded(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _rows(ctx: WebContext, path_params: dict[str, str]) -> list[m.Instance]:
    identifier = Dataset()
    if "instance" in path_params:
        identifier.QueryRetrieveLevel, identifier.SOPInstanceUID = "IMAGE", path_params["instance"]
    elif "series" in path_params:
        identifier.QueryRetrieveLevel, identifier.SeriesInstanceUID = "SERIES", path_params["series"]
    else:
        identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", path_params["study"]
    ctx.receiver.settle()
    with ctx.sessions() as s:
        # the path's higher-level UIDs must hold too (an instance of another study is not found)
        rows = [r for r in retrieve_files(s, identifier) if _under(r, path_params)]
        for r in rows:
            s.expunge(r)
    return rows


def _under(row: m.Instance, path_params: dict[str, str]) -> bool:
    series = row.series
    if "series" in path_params and series.series_instance_uid != path_params["series"]:
        return False
    return series.study.study_instance_uid == path_params["study"]


async def retrieve(request: Request) -> Response:
    ctx = web_context(request)
    try:
        wanted = requested_syntaxes(request.headers.get("accept", ""))
    except BadRequest as exc:
        return PlainTextResponse(str(exc), status_code=406)

    def run() -> list[tuple[bytes, str]] | str:
        rows = _rows(ctx, dict(request.path_params))
        if not rows:
            return "not found"
        parts = []
        for row in rows:
            path = ctx.store.absolute(row.file_path)
            if AS_STORED in wanted:
                data, syntax = path.read_bytes(), row.transfer_syntax_uid or ExplicitVRLittleEndian
            else:
                try:
                    ds = for_peer(path, wanted)
                except TranscodeError as exc:
                    return f"{row.sop_instance_uid}: {exc}"
                data, syntax = _encoded(ds), str(ds.file_meta.TransferSyntaxUID)
            parts.append((data, f"application/dicom; transfer-syntax={syntax}"))
        return parts

    result = await run_in_threadpool(run)
    if result == "not found":
        return PlainTextResponse("no such study, series or instance", status_code=404)
    if isinstance(result, str):
        return PlainTextResponse(result, status_code=406)
    body, boundary = multipart(result)
    return Response(body, media_type=f'multipart/related; type="application/dicom"; boundary={boundary}')


async def metadata(request: Request) -> Response:
    """DICOM JSON of the instances, read from their headers only and kept per series
    (:class:`storage.dicom_json.MetadataCache`): no pixel data is read, a study seen before reads no file."""
    ctx = web_context(request)
    cache = MetadataCache.under(ctx.settings.storage.root, ctx.settings.web.metadata_cache_mb)

    def run() -> str | None:
        rows = _rows(ctx, dict(request.path_params))
        if not rows:
            return None
        listing = series_listing(ctx.store, rows)
        whole = "instance" not in request.path_params
        return "[" + ",".join(cache.series(uid, files, whole=whole) for uid, files in listing.items()) + "]"

    text = await run_in_threadpool(run)
    if text is None:
        return PlainTextResponse("no such study, series or instance", status_code=404)
    return Response(text.replace(BASE, base_url(request)), media_type=DICOM_JSON)


async def bulkdata(request: Request) -> Response:
    ctx = web_context(request)
    try:
        tag = Tag(request.path_params["tag"])
    except (ValueError, TypeError, OverflowError):
        return PlainTextResponse("not a tag", status_code=400)

    def run() -> bytes | None:
        rows = _rows(ctx, dict(request.path_params))
        if not rows:
            return None
        ds = dcmread(ctx.store.absolute(rows[0].file_path))
        elem = ds.get(tag)
        return None if elem is None or not isinstance(elem.value, bytes) else elem.value

    value = await run_in_threadpool(run)
    if value is None:
        return PlainTextResponse("no such bulk data", status_code=404)
    body, boundary = multipart([(value, "application/octet-stream")])
    return Response(body, media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')


async def frames(request: Request) -> Response:
    """The asked frames in the form the ``Accept`` header allows (:mod:`node.web.frames`): as stored, or native
    pixels (1-bit frames packed, float pixel data as it is); 406 when no form it names can be given."""
    ctx = web_context(request)
    try:
        numbers = pixel_frames.parse_frame_list(request.path_params["frames"])  # 400 whatever it names
    except pixel_frames.BadFrameRequest as exc:
        return PlainTextResponse(str(exc), status_code=400)

    def run() -> Response:
        rows = _rows(ctx, dict(request.path_params))
        if not rows:
            return PlainTextResponse("no such instance", status_code=404)
        row = rows[-1]
        try:
            offer = pixel_frames.choose(request.headers.get("accept", ""),
                                        row.transfer_syntax_uid or ExplicitVRLittleEndian)
        except pixel_frames.NotAcceptable as exc:
            return PlainTextResponse(str(exc), status_code=406)
        ds = dcmread(ctx.store.absolute(row.file_path))
        if pixel_frames.pixel_keyword(ds) is None:
            return PlainTextResponse(f"instance {row.sop_instance_uid} has no pixel data", status_code=404)
        try:
            pixel_frames.check_frame_numbers(numbers, pixel_frames.frame_count(ds))
            parts = pixel_frames.frame_bytes(ds, numbers, offer)
        except pixel_frames.BadFrameRequest as exc:
            return PlainTextResponse(f"instance {row.sop_instance_uid}: {exc}", status_code=400)
        except PIXEL_HANDLER_ERRORS as exc:
            return PlainTextResponse(f"instance {row.sop_instance_uid} is stored as {ds.file_meta.TransferSyntaxUID}"
                                     f", which cannot be decoded here ({exc}): ask transfer-syntax=*",
                                     status_code=406)
        body, boundary = multipart((part, offer.content_type) for part in parts)
        return Response(body, media_type=f'multipart/related; type="{offer.media_type}"; boundary={boundary}')

    return await run_in_threadpool(run)


# --- STOW-RS -------------------------------------------------------------------------------


def _params(header: str) -> tuple[str, dict[str, str]]:
    kind, *rest = [p.strip() for p in header.split(";")]
    params = {}
    for item in rest:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return kind.lower(), params


def part_spans(content_type: str, body: Buffer, max_parts: int = MAX_PARTS) -> list[tuple[int, int]]:
    """Where the ``application/dicom`` parts of a multipart/related body (RFC 2046 framing) lie, as (start, end)
    offsets — the whole body checked before any part is taken, so a malformed one stores nothing (``body``:
    bytes or a memory map of the spooled request: one part at a time is then read); raises BadRequest."""
    kind, params = _params(content_type)
    if kind != "multipart/related":
        raise BadRequest(f"STOW-RS takes multipart/related; type=\"application/dicom\", not {content_type!r}")
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 70:  # RFC 2046: 1-70 characters
        raise BadRequest("the Content-Type has no boundary (or one longer than 70 characters)")
    delimiter = b"--" + boundary.encode("latin-1")
    at = 0 if body[:len(delimiter)] == delimiter else body.find(b"\r\n" + delimiter)
    if at < 0:
        raise BadRequest("the body holds no instance")
    at += len(delimiter) + (0 if at == 0 and body[:len(delimiter)] == delimiter else 2)
    spans: list[tuple[int, int]] = []
    while True:
        if body[at:at + 2] == b"--":  # the close delimiter
            break
        end = body.find(b"\r\n" + delimiter, at)
        if end < 0:
            raise BadRequest(f"part {len(spans) + 1} has no closing boundary: a cut-off body")
        head_end = body.find(b"\r\n\r\n", at, min(end, at + 16384))
        if head_end < 0:
            raise BadRequest(f"part {len(spans) + 1} has no headers and blank line")
        head = bytes(body[at:head_end]).decode("latin-1")
        headers = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
        part_type = _params(next((v for k, v in headers.items() if k.strip().lower() == "content-type"),
                                 params.get("type", "application/dicom")))[0]
        if part_type != "application/dicom":
            raise BadRequest(f"a part of type {part_type!r}: only application/dicom instances are taken")
        spans.append((head_end + 4, end))
        if len(spans) > max_parts:
            raise BadRequest(f"more than {max_parts} parts in one request: send them in several")
        at = end + 2 + len(delimiter)
    if not spans:
        raise BadRequest("the body holds no instance")
    return spans


def as_part10(data: bytes) -> bytes:
    """A STOW-RS part as a PS3.10 file. Some clients (dicomweb-client, with pydicom's ``dcmwrite``) send the
    file meta information without the 128-byte preamble and ``DICM``: those are put in front, the bytes
    sent follow unchanged. A part without file meta has no transfer syntax and is refused by the receiver."""
    if data[128:132] != b"DICM" and data[:2] == b"\x02\x00":
        return bytes(128) + b"DICM" + data
    return data


def _reference(ds: Dataset | None, url: str | None, reason: int | None, comment: str | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = str(ds.get("SOPClassUID", "")) if ds is not None else ""
    item.ReferencedSOPInstanceUID = str(ds.get("SOPInstanceUID", "")) if ds is not None else ""
    if url:
        item.RetrieveURL = url
    if reason is not None:
        item.FailureReason = reason
    if comment:  # why, in words (PS3.18 allows Error Comment beside Failure Reason)
        item.ErrorComment = comment[:64]
    return item


async def _spooled(request: Request, limit: int) -> tempfile.SpooledTemporaryFile[bytes]:
    """The request body in a temporary file (memory up to 8 MiB, then disk), read as it streams in; raises
    :class:`TooLarge` as soon as it passes ``limit`` bytes (the rest is not read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"a body of {declared} bytes: larger than [web] max_request_bytes ({limit})")
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - the caller closes it
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"a body of more than {limit} bytes ([web] max_request_bytes)")
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


@contextmanager
def _mapped_body(spool: tempfile.SpooledTemporaryFile[bytes]) -> Iterator[Buffer]:
    """The spooled body as something to search and slice without a copy: bytes when small, a memory map of the
    temporary file otherwise."""
    size = spool.seek(0, os.SEEK_END)
    spool.seek(0)
    if size <= SPOOL_IN_MEMORY:
        yield spool.read()
        return
    spool.rollover()
    with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as view:
        yield view


class TooLarge(ValueError):
    pass


async def store(request: Request) -> Response:
    ctx = web_context(request)
    study_in_path = request.path_params.get("study")
    try:
        spool = await _spooled(request, ctx.settings.web.max_request_bytes)
    except TooLarge as exc:
        return PlainTextResponse(str(exc), status_code=413)
    user = request.state.user
    content_type = request.headers.get("content-type", "")

    def run() -> Dataset:
        stored, failed = [], []
        with spool, _mapped_body(spool) as body:
            for data in (as_part10(bytes(body[start:end])) for start, end in part_spans(content_type, body)):
                try:  # bounded as the receiver bounds it, and handed to it: read once
                    parsed: Header | None = read_header(data, None, ctx.receiver.limits)
                except BadDatasetError:  # the receiver says why it cannot be read
                    parsed = None
                header = parsed.dataset if parsed is not None else None
                if study_in_path and parsed is not None and parsed.study_uid != study_in_path:
                    failed.append(_reference(header, None, FAILURE_STUDY_MISMATCH))
                    continue
                outcome = ctx.receiver.receive(data, calling_ae=None, peer_address=client_address(request),
                                               expected_sop_uid=None, via="dicomweb", header=parsed)
                if outcome.ok and header is not None:
                    url = (f"{base_url(request)}/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}"
                           f"/instances/{header.SOPInstanceUID}")
                    stored.append(_reference(header, url, None))
                else:
                    failed.append(_reference(header, None, outcome.status if not outcome.ok else FAILURE_PROCESSING,
                                             outcome.comment))
        with ctx.sessions.begin() as s:
            audit(s, actor=user.name, action="stow", target=f"study {study_in_path}" if study_in_path else None,
                  detail=f"{len(stored)} stored, {len(failed)} failed", remote=client_address(request))
        response = Dataset()
        if stored:
            response.ReferencedSOPSequence = stored
        if failed:
            response.FailedSOPSequence = failed
        if study_in_path:
            response.RetrieveURL = f"{base_url(request)}/studies/{study_in_path}"
        return response

    response = await run_in_threadpool(run)
    n_ok, n_failed = len(response.get("ReferencedSOPSequence", [])), len(response.get("FailedSOPSequence", []))
    status = 200 if not n_failed else (202 if n_ok else 409)
    return JSONResponse(response.to_json_dict(), status_code=status, media_type=DICOM_JSON)


def _mapped(handler: Handler) -> Handler:
    """``handler`` with the one error mapping of DICOMweb: a client's mistake is a 4xx saying what is wrong
    (400 a value that does not fit, 413 too many matches), never a 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except TooManyMatches as exc:
            return PlainTextResponse(f"{exc}, or page it with limit and offset", status_code=413)
        except (QueryError, BadRequest) as exc:
            return PlainTextResponse(str(exc), status_code=400)

    endpoint.__name__ = handler.__name__
    return endpoint


STUDY, SERIES, INSTANCE = "/dicomweb/studies/{study}", "/dicomweb/studies/{study}/series/{series}", \
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}"

ROUTES: list[RouteSpec] = [
    ("/dicomweb/studies", _mapped(_qido("STUDY", ())), ["GET"], READ),
    (f"{STUDY}/series", _mapped(_qido("SERIES", ("StudyInstanceUID",))), ["GET"], READ),
    ("/dicomweb/series", _mapped(_qido("SERIES", ())), ["GET"], READ),
    (f"{SERIES}/instances", _mapped(_qido("IMAGE", ("StudyInstanceUID", "SeriesInstanceUID"))), ["GET"], READ),
    (f"{STUDY}/instances", _mapped(_qido("IMAGE", ("StudyInstanceUID",))), ["GET"], READ),
    ("/dicomweb/instances", _mapped(_qido("IMAGE", ())), ["GET"], READ),
    (STUDY, _mapped(retrieve), ["GET"], READ),
    (SERIES, _mapped(retrieve), ["GET"], READ),
    (INSTANCE, _mapped(retrieve), ["GET"], READ),
    (f"{STUDY}/metadata", _mapped(metadata), ["GET"], READ),
    (f"{SERIES}/metadata", _mapped(metadata), ["GET"], READ),
    (f"{INSTANCE}/metadata", _mapped(metadata), ["GET"], READ),
    (f"{INSTANCE}/frames/{{frames}}", _mapped(frames), ["GET"], READ),
    (f"{INSTANCE}/bulkdata/{{tag}}", _mapped(bulkdata), ["GET"], READ),
    ("/dicomweb/studies", _mapped(store), ["POST"], WRITE),
    (STUDY, _mapped(store), ["POST"], WRITE),
]

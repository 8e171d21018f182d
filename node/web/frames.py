"""WADO-RS frames (PS3.18 §8.7.3.3.2, §10.4.1.1.3): which form a client's ``Accept`` header lets us answer
in, and the frames' bytes in that form.

- :func:`choose` — a pure decision from the ``Accept`` header and the stored transfer syntax: the frames as
  stored (a compressed syntax in its own media type, ``image/jls``, ``image/jp2``…; ``transfer-syntax=*``
  also means this), or native pixels (``application/octet-stream``, Explicit VR Little Endian, decoded when
  stored compressed). Nothing else is made here (no encoder on the way out), so a request for another
  compressed syntax is :class:`NotAcceptable` (406) with what can be had instead.
- :func:`frame_bytes` — the asked frames of a read data set: encapsulated fragments as they are, native
  frames sliced from Pixel Data, Float Pixel Data or Double Float Pixel Data without decoding, 1-bit frames
  (a SEG) **packed** eight pixels a byte as they are stored, each frame on its own (PS3.5 §8.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pack_bits, unpack_bits
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

NATIVE_MEDIA_TYPE = "application/octet-stream"
AS_STORED = "*"
# PS3.18 Table 8.7.3-5: the media type of each compressed transfer syntax's frames
MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.5": "image/dicom-rle",
}
NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                             ExplicitVRBigEndian})
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MAX_FRAMES_PER_REQUEST = 10_000


class NotAcceptable(ValueError):
    """No form the ``Accept`` header allows can be given (406)."""


class BadFrameRequest(ValueError):
    """Frame numbers that do not exist or do not parse (400)."""


@dataclass(frozen=True, kw_only=True)
class Offer:
    """The form frames are answered in: ``as_stored`` (encapsulated fragments or native bytes as they lie) or
    decoded to native pixels; ``media_type`` and ``transfer_syntax`` label each part."""

    as_stored: bool
    media_type: str
    transfer_syntax: str

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """(type, parameters) of each media range the header accepts (``q`` above 0), the highest ``q`` first and
    the header's order among equals."""
    ranges = []
    for position, text in enumerate(r.strip() for r in accept.split(",")):
        if not text:
            continue
        kind, *parts = [p.strip() for p in text.split(";")]
        params = {k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in parts)}
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append((-q, position, kind.lower(), params))
    ranges.sort(key=lambda r: (r[0], r[1]))
    return [(kind, params) for _, _, kind, params in ranges]


def choose(accept: str, stored_syntax: str) -> Offer:
    """The form to answer a frames request in (see the module docstring); raises :class:`NotAcceptable`."""
    stored = UID(stored_syntax or ExplicitVRLittleEndian)
    compressed = stored not in NATIVE_SYNTAXES
    stored_media = MEDIA_TYPES.get(stored, NATIVE_MEDIA_TYPE)
    native = Offer(as_stored=not compressed and stored != ExplicitVRBigEndian, media_type=NATIVE_MEDIA_TYPE,
                   transfer_syntax=ExplicitVRLittleEndian)
    as_stored = Offer(as_stored=True, media_type=stored_media, transfer_syntax=stored) if compressed else native
    if not accept.strip():
        return native
    for kind, params in _media_ranges(accept):
        inner = params.get("type", "").lower() if kind == "multipart/related" else kind
        syntax = params.get("transfer-syntax")
        if kind in ("*/*", "multipart/*") or inner in ("", "*/*"):
            return as_stored if syntax == AS_STORED else native
        if inner == NATIVE_MEDIA_TYPE:
            if syntax == AS_STORED:
                return as_stored
            if syntax in (None, ExplicitVRLittleEndian):
                return native
        elif compressed and inner in (stored_media, "image/*") and syntax in (None, AS_STORED, stored):
            return as_stored
    can = {native.content_type, as_stored.content_type}
    raise NotAcceptable(f"the frames are stored as {stored}; this server answers "
                        f"{' or '.join(sorted(can))} (multipart/related), not {accept!r}")


def parse_frame_list(text: str) -> list[int]:
    """The frame list of the path (1-based, comma-separated), before any instance is looked up."""
    try:
        numbers = [int(n) for n in text.split(",")]
    except ValueError:
        raise BadFrameRequest("frame numbers are whole numbers separated by commas") from None
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise BadFrameRequest(f"more than {MAX_FRAMES_PER_REQUEST} frames in one request")
    return numbers


def check_frame_numbers(numbers: list[int], count: int) -> None:
    """The parsed frame list (:func:`parse_frame_list`) against an instance of ``count`` frames."""
    if any(n < 1 or n > count for n in numbers):
        raise BadFrameRequest(f"frames are numbered 1 to {count}")


def frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def pixel_keyword(ds: Dataset) -> str | None:
    return next((k for k in PIXEL_KEYWORDS if k in ds), None)


def frame_bytes(ds: Dataset, numbers: list[int], offer: Offer) -> list[bytes]:
    """The bytes of frames ``numbers`` (1-based) of ``ds`` in ``offer``'s form. Decoding errors of the pixel
    data handlers propagate (:data:`node.dimse.transcode.PIXEL_HANDLER_ERRORS`)."""
    keyword = pixel_keyword(ds)
    if keyword is None:
        raise BadFrameRequest("the instance has no pixel data")
    count = frame_count(ds)
    if offer.as_stored and offer.media_type != NATIVE_MEDIA_TYPE:
        fragments = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [fragments[n - 1] for n in numbers]
    if offer.as_stored:
        return _native_frames(bytes(ds[keyword].value), ds, numbers, count)
    decoded = ds.pixel_array  # big endian or compressed: decoded, then native little endian
    frames = [decoded] if count == 1 else list(decoded)
    if int(ds.get("BitsAllocated", 8)) == 1:
        return [pack_bits(frames[n - 1]) for n in numbers]
    return [np.ascontiguousarray(frames[n - 1]).astype(frames[n - 1].dtype.newbyteorder("<")).tobytes()
            for n in numbers]


def _native_frames(raw: bytes, ds: Dataset, numbers: list[int], count: int) -> list[bytes]:
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.get("BitsAllocated", 32 if "FloatPixelData" in ds else 64 if "DoubleFloatPixelData" in ds else 8))
    if bits == 1 and pixels % 8:  # frames do not start on a byte: unpack the frame's bits, pack them alone
        every = np.asarray(unpack_bits(raw, as_array=True))
        return [pack_bits(every[(n - 1) * pixels:n * pixels]) for n in numbers]
    size = pixels * bits // 8
    if len(raw) < size * count:
        raise BadFrameRequest(f"the pixel data holds {len(raw)} bytes, fewer than {count} frames of {size}")
    return [raw[(n - 1) * size:n * size] for n in numbers]

"""The DICOM JSON (PS3.18 Annex F) of stored instances, as WADO-RS ``metadata`` answers it: read from the headers
only, and kept per series so a viewer opening a study gets it without reading a file.

- :func:`header_json` — one instance: the file read up to its pixel data and no further, every binary
  value (and the pixel data, named by tag and VR, never loaded) as a ``BulkDataURI`` under the instance's URL.
- :class:`MetadataCache` — a series' instances as one JSON text, made once per *list of files* (a re-sent
  or deleted instance changes the list, so the text is made again) and kept under ``<storage root>/cache/
  metadata`` (written whole, then renamed; the oldest dropped beyond ``max_bytes``). URLs are kept relative
  to :data:`BASE`, which the server replaces with its public DICOMweb address. The cache is derived data:
  deleting it loses nothing. The worker fills it for a visit's studies once processed, so the first viewer
  to open them does not wait (``node.work.jobs``).

pydicom's ``to_json_dict`` is used as it is (about 3 ms an instance here); the cache is what makes a study
of hundreds of instances answer in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydicom.filereader import read_partial
from pydicom.tag import BaseTag

from storage import models as m
from storage.filestore import FileStore

log = logging.getLogger(__name__)

BASE = "@@DICOMWEB@@"  # where the DICOMweb root goes in cached text
PIXEL_TAGS = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}  # VR when an implicit-VR file gives none


TEXT_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
SPLIT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI", "DS", "IS"})
WHOLE_VRS = frozenset({"LT", "ST", "UT", "UR"})  # one value: a backslash is text
CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _strings(raw: bytes, vr: str, encoding: str) -> list[str]:
    """The values of a string element as pydicom reads them: the padding of the whole value stripped, then split
    (components keep their own spaces; an empty component stays an empty string); [] when nothing is left."""
    text = raw.decode(encoding if vr in CHARSET_VRS else "latin-1").rstrip(" \0")
    if vr not in WHOLE_VRS and vr != "UI":
        text = text.lstrip(" ") if vr in ("DS", "IS") else text
    if not text:
        return []
    return [text] if vr in WHOLE_VRS else text.split("\\")


def _element_json(ds: Any, tag: BaseTag, encoding: str, bulk: Any) -> dict[str, Any]:
    """One element of a data set read from a file, encoded from its raw bytes; pydicom's own encoder for what
    this does not know (an implicit VR it cannot name alone, a sequence's items, any other VR)."""
    raw = ds.get_item(tag)
    vr, value = getattr(raw, "VR", None), getattr(raw, "value", None)
    if vr == "SQ" or not getattr(raw, "is_raw", False) or not isinstance(value, bytes | None) or not getattr(
            raw, "is_little_endian", True):
        element = ds[tag]
        if element.VR == "SQ":
            return {"vr": "SQ", "Value": [_dataset_json(item, encoding, bulk) for item in element.value]}
        out: dict[str, Any] = element.to_json_dict(bulk_data_element_handler=bulk, bulk_data_threshold=0)
        return out
    if vr is None or raw.is_implicit_VR or vr == "UN":  # UN: pydicom names a known tag's VR
        return dict(ds[tag].to_json_dict(bulk_data_element_handler=bulk, bulk_data_threshold=0))
    if not value:
        return {"vr": vr}
    if vr in BULK_VRS:
        return {"vr": vr, "BulkDataURI": bulk(ds[tag])}
    if vr in BINARY_NUMBERS:
        code = BINARY_NUMBERS[vr]
        return {"vr": vr, "Value": list(struct.unpack(f"<{len(value) // struct.calcsize(code)}{code}", value))}
    if vr == "AT":
        words = struct.unpack(f"<{len(value) // 2}H", value)
        return {"vr": vr, "Value": [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, len(words) - 1, 2)]}
    if vr == "PN":
        names = [{key: part for key, part in zip(PN_GROUPS, name.split("="), strict=False) if part}
                 for name in _strings(value, vr, encoding)]
        return {"vr": vr, "Value": names} if names else {"vr": vr}
    if vr in SPLIT_VRS or vr in WHOLE_VRS:
        strings = _strings(value, vr, encoding)
        if vr in ("DS", "IS") and strings:
            kind = float if vr == "DS" else int
            return {"vr": vr, "Value": [kind(v) if v.strip() else None for v in strings]}
        return {"vr": vr, "Value": strings} if strings else {"vr": vr}
    return dict(ds[tag].to_json_dict(bulk_data_element_handler=bulk, bulk_data_threshold=0))


def _dataset_json(ds: Any, encoding: str, bulk: Any) -> dict[str, Any]:
    return {f"{int(tag):08X}": _element_json(ds, tag, encoding, bulk) for tag in list(ds.keys())}


def header_json(path: os.PathLike[str] | str, instance_url: str) -> dict[str, Any]:
    """An instance's DICOM JSON without its pixel data (see the module docstring).

    Encoded here from the elements' raw bytes for the common VRs, in the form pydicom's ``to_json_dict`` gives
    (tested equal on every file of pydicom's test data and on myonode's own results), and by pydicom for the
    rest: pydicom converts every element to a Python value first, which measured 4–7 ms for a diffusion MR
    header and 270 ms for a SEG's per-frame groups on this machine — the time a viewer waits for a study
    seen for the first time. A character set other than ASCII, Latin-1 or UTF-8 is left to pydicom whole."""
    ds, pixel = read_header(path)

    def bulk(elem: Any) -> str:
        return f"{instance_url}/bulkdata/{elem.tag:08X}"

    charset = ds.get("SpecificCharacterSet", "")
    encoding = TEXT_CHARSETS.get(charset if isinstance(charset, str) else "\\".join(charset))
    out: dict[str, Any] = (_dataset_json(ds, encoding, bulk) if encoding is not None else
                           ds.to_json_dict(bulk_data_threshold=0, bulk_data_element_handler=bulk))
    return with_pixel_uri(out, pixel, instance_url)


def read_header(path: os.PathLike[str] | str) -> tuple[Any, tuple[int, str | None] | None]:
    """The data set read up to its pixel data and no further, and that element's (tag, VR as the file gives
    it) — None when the instance has none."""
    pixel: list[tuple[int, str | None]] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in PIXEL_TAGS:
            pixel.append((int(tag), vr))
            return True
        return False

    with open(path, "rb") as fp:
        ds = read_partial(fp, stop_when=at_pixels)
    return ds, (pixel[0] if pixel else None)


def with_pixel_uri(out: dict[str, Any], pixel: tuple[int, str | None] | None,
                   instance_url: str) -> dict[str, Any]:
    """``out`` with the pixel data element named by its tag, VR and ``BulkDataURI`` (its value never read)."""
    if pixel is not None:
        tag, vr = pixel
        out[f"{tag:08X}"] = {"vr": vr or PIXEL_TAGS[tag], "BulkDataURI": f"{instance_url}/bulkdata/{tag:08X}"}
    return out


def series_listing(store: FileStore, rows: Iterable[m.Instance]) -> dict[str, list[tuple[Path, str]]]:
    """Instance rows (their series and study loaded) as :meth:`MetadataCache.series` takes them: per series,
    in the rows' order, (stored file, URL path under :data:`BASE`)."""
    out: dict[str, list[tuple[Path, str]]] = {}
    for row in rows:
        series, study = row.series.series_instance_uid, row.series.study.study_instance_uid
        out.setdefault(series, []).append(
            (store.absolute(row.file_path), f"/studies/{study}/series/{series}/instances/{row.sop_instance_uid}"))
    return out


class MetadataCache:
    """Per-series DICOM JSON kept on disk (see the module docstring); ``max_bytes`` 0 keeps nothing."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes

    @classmethod
    def under(cls, storage_root: Path, max_mb: int) -> MetadataCache:
        """The cache of the store at ``storage_root`` (``[web] metadata_cache_mb``)."""
        return cls(Path(storage_root) / "cache" / "metadata", max_mb << 20)

    def series(self, series_uid: str, instances: Sequence[tuple[Path, str]], *, whole: bool = True) -> str:
        """The instances' JSON objects, comma-separated (no brackets), in the order given: ``instances`` are
        (stored file, URL path under :data:`BASE`) of one series; ``whole`` False (one instance of it asked
        for): made, not kept, so the series' kept text stays."""
        name = hashlib.sha256(series_uid.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        listing = "\n".join(f"{path}\t{url}" for path, url in instances).encode("utf-8", "surrogateescape")
        cached = self.folder / f"{name}-{hashlib.sha256(listing).hexdigest()[:24]}.json"
        keep = self.max_bytes > 0 and whole
        if keep:
            try:
                text = cached.read_text(encoding="utf-8")
                os.utime(cached)  # recently used: pruned last
                return text
            except FileNotFoundError:
                pass
        text = ",".join(json.dumps(header_json(path, BASE + url)) for path, url in instances)
        if keep:
            try:
                self._keep(cached, name, text)
            except OSError as exc:  # a full or read-only disk costs the cache, not the answer
                log.warning("metadata of series %s not cached: %s", series_uid, exc)
        return text

    def _keep(self, cached: Path, name: str, text: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".new-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(temporary, cached)
        for older in self.folder.glob(f"{name}-*.json"):  # the series' earlier lists of files
            if older != cached:
                older.unlink(missing_ok=True)
        self._prune()

    def _prune(self) -> None:
        entries = []
        with os.scandir(self.folder) as it:
            for entry in it:
                if entry.name.endswith(".json"):
                    stat = entry.stat()
                    entries.append((stat.st_mtime, stat.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            Path(path).unlink(missing_ok=True)
            total -= size

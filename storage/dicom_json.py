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


def header_json(path: os.PathLike[str] | str, instance_url: str) -> dict[str, Any]:
    """An instance's DICOM JSON without its pixel data (see the module docstring)."""
    pixel: list[tuple[int, str | None]] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in PIXEL_TAGS:
            pixel.append((int(tag), vr))
            return True
        return False

    with open(path, "rb") as fp:
        ds = read_partial(fp, stop_when=at_pixels)
    out: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=0,  # every binary value by URI
        bulk_data_element_handler=lambda elem: f"{instance_url}/bulkdata/{elem.tag:08X}")
    for tag, vr in pixel[:1]:
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

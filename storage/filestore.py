"""The DICOM file store: ``<root>/dicom/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``.

Every write goes to a temporary file in the destination folder, is fsync'd, renamed into
place and the folder fsync'd, so a crash at any moment leaves either the complete file or
no ``.dcm`` at all (a stale temporary ``.part`` file at worst, removed by
:meth:`FileStore.sweep_partials`). UIDs are validated before they become path
components, so nothing can be written outside the root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64  # PS3.5 §9.1
INDEXED_UID_MAX_LENGTH = 128  # what the index columns hold (storage.models.UID)
PARTIAL_SUFFIX = ".part"
PARTIAL_PREFIX = ".incoming-"


class InvalidUIDError(ValueError):
    """A UID that is not a valid DICOM UID (PS3.5 §9.1) and so cannot name a file."""


class FileExistsInStoreError(FileExistsError):
    """The destination file exists and the caller did not ask to replace it."""


@dataclass(frozen=True, kw_only=True)
class StoredFile:
    """Where a file was written, how big it is (bytes) and its SHA-256 (hex)."""

    path: Path
    size_bytes: int
    sha256: str


def validate_uid(uid: str, field: str = "UID") -> str:
    """Return ``uid`` if it is a valid DICOM UID, else raise :class:`InvalidUIDError` naming ``field``."""
    if not isinstance(uid, str) or not uid:
        raise InvalidUIDError(f"{field} is empty")
    if len(uid) > UID_MAX_LENGTH:
        raise InvalidUIDError(f"{field} {uid[:80]!r} is longer than {UID_MAX_LENGTH} characters")
    if not UID_PATTERN.match(uid):
        raise InvalidUIDError(
            f"{field} {uid[:80]!r} is not a valid DICOM UID (digits and dots, no leading zeros)"
        )
    return uid


def file_component(uid: str) -> str:
    """The file or folder name for ``uid``: the UID itself when it is valid, else ``uid-`` and the first
    40 hex digits of its SHA-256 — UIDs seen in the field break the grammar (leading zeros, letters,
    trailing spaces) and must neither be refused nor reach the file system as they are. The index keeps
    the original UID; only the name is derived."""
    if not uid:
        raise InvalidUIDError("UID is empty")
    try:
        return validate_uid(uid)
    except InvalidUIDError:
        return "uid-" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def fsync_dir(path: Path) -> None:
    """fsync a folder, so the names created, renamed or removed in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: Path) -> None:
    """Create ``path`` and its missing parents, fsync'ing each parent so the new entries survive a crash."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        fsync_dir(d.parent)


class FileStore:
    """Atomic, durable storage of DICOM files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.dicom_root = self.root / "dicom"

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str, version: int = 1) -> Path:
        """The file of an instance; versions after the first (re-sent, different content) get ``.vN``.

        Names come from :func:`file_component` (a hash for a UID that breaks the grammar)."""
        study, series, sop = (file_component(u) for u in (study_uid, series_uid, sop_uid))
        if version < 1:
            raise ValueError(f"version must be >= 1, got {version}")
        name = f"{sop}.dcm" if version == 1 else f"{sop}.v{version}.dcm"
        return self.dicom_root / study / series / name

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, as stored in the index (so the root can move)."""
        plain = path.is_absolute() and ".." not in path.parts  # as path_for builds them: no file system lookups
        return (path if plain else path.resolve()).relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        """The absolute path of an indexed relative path; refuses anything outside the root."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"stored path {relative!r} lies outside the store root {self.root}")
        return path

    def write(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        data: bytes,
        *,
        version: int = 1,
        replace: bool = False,
    ) -> StoredFile:
        """Write ``data`` atomically and durably; raises if the file exists unless ``replace``.

        On any error (disk full, permission, an existing file) nothing new is left behind.
        """
        final = self.path_for(study_uid, series_uid, sop_uid, version)
        _makedirs_durable(final.parent)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.replace(tmp, final)
            else:
                try:
                    # link() fails atomically if the destination exists: no check-then-rename race.
                    os.link(tmp, final)
                except FileExistsError:
                    raise FileExistsInStoreError(f"{final} already exists in the store") from None
                tmp.unlink()
            fsync_dir(final.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredFile(path=final, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    def adopt(self, source: Path, study_uid: str, series_uid: str, sop_uid: str, *, version: int,
              sha256: str) -> StoredFile:
        """Give the durable file ``source`` (a journal entry) its place in the store as a second name.

        A hard link, made atomically over whatever stale file (never indexed) has that name. Not
        fsync'd: the journal keeps ``source`` under another name until the index's reconciliation
        no longer needs it (``storage.journal``), and re-links what a power cut took."""
        final = self.path_for(study_uid, series_uid, sop_uid, version)
        _makedirs_durable(final.parent)
        try:
            os.link(source, final)
        except FileExistsError:
            tmp = final.with_name(f"{PARTIAL_PREFIX}{final.name}{PARTIAL_SUFFIX}")
            tmp.unlink(missing_ok=True)
            os.link(source, tmp)
            try:
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return StoredFile(path=final, size_bytes=source.stat().st_size, sha256=sha256)

    def read(self, relative: str) -> bytes:
        return self.absolute(relative).read_bytes()

    def sweep_partials(self) -> list[Path]:
        """Remove temporary files left by writes interrupted by a crash; returns what was removed."""
        removed = []
        if self.dicom_root.exists():
            for p in self.dicom_root.rglob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed

"""The ingest journal: received instances, durable on disk, waiting to be indexed.

``<root>/journal/`` holds one file per received instance, named so that sorting the names
sorts them by arrival (``<ns since epoch>-<pid>-<seq>.<meta>.dcm``; ``meta`` is the calling
AE title and peer address, base64url JSON). :meth:`Journal.write` makes an entry exactly
as :meth:`storage.filestore.FileStore.write` makes a file: a temporary file fsync'd,
renamed into place, the folder fsync'd. Once it returns, the instance survives ``kill -9``
and a power cut, and a receiver may acknowledge it.

The index writer (``node.intake.indexer``) takes entries in order, hard-links each into its
place in the file store, commits the index rows, then calls :meth:`Journal.done`, which
renames the entry to ``journal/indexed/<sha256>.<meta>.dcm`` — a second name of the stored
file, costing no space — where it stays for ``keep_s`` so that a start after an index that
lost its last transactions (a restored database file, a disk that lied about a flush) can
find what the index lacks (:meth:`Journal.kept`) and index it again.
Entries that cannot be indexed at all go to ``journal/failed/`` with a ``.reason`` file
beside them; nothing acknowledged is ever deleted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from storage.filestore import PARTIAL_PREFIX, PARTIAL_SUFFIX, fsync_dir

ENTRY_SUFFIX = ".dcm"


def _meta(calling_ae: str | None, peer_address: str | None) -> str:
    raw = json.dumps([calling_ae, peer_address], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unmeta(text: str) -> tuple[str | None, str | None]:
    try:
        calling, peer = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return (str(calling) if calling else None), (str(peer) if peer else None)
    except (ValueError, TypeError):
        return None, None


@dataclass(frozen=True, kw_only=True)
class JournalEntry:
    """One received instance in the journal: its file and who sent it."""

    path: Path
    calling_ae: str | None
    peer_address: str | None

    @classmethod
    def from_path(cls, path: Path) -> JournalEntry:
        parts = path.name[: -len(ENTRY_SUFFIX)].split(".")
        calling, peer = _unmeta(parts[1]) if len(parts) > 1 else (None, None)
        return cls(path=path, calling_ae=calling, peer_address=peer)

    @property
    def sha256(self) -> str | None:
        """The SHA-256 a kept entry is named by (None for a pending one)."""
        head = self.path.name.split(".", 1)[0]
        return head if len(head) == 64 and self.path.parent.name == "indexed" else None


class Journal:
    """Durable entries under ``<root>/journal`` (thread-safe; several processes may write)."""

    def __init__(self, root: Path) -> None:
        self.folder = Path(root).resolve() / "journal"
        self.indexed = self.folder / "indexed"
        self.failed = self.folder / "failed"
        for folder in (self.folder, self.indexed, self.failed):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                fsync_dir(folder.parent)
        self._seq = 0
        self._seq_lock = threading.Lock()

    def _name(self, calling_ae: str | None, peer_address: str | None) -> str:
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        return f"{time.time_ns():020d}-{os.getpid()}-{seq:08d}.{_meta(calling_ae, peer_address)}{ENTRY_SUFFIX}"

    def write(self, data: bytes, *, calling_ae: str | None, peer_address: str | None) -> JournalEntry:
        """Write ``data`` as a new entry, durably (file and folder fsync'd); on error nothing is left."""
        final = self.folder / self._name(calling_ae, peer_address)
        fd, tmp_name = tempfile.mkstemp(dir=self.folder, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fdatasync(fh.fileno())
            os.rename(tmp, final)
            fsync_dir(self.folder)
        except BaseException:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise
        return JournalEntry(path=final, calling_ae=calling_ae, peer_address=peer_address)

    def pending(self, limit: int | None = None) -> list[JournalEntry]:
        """Entries waiting to be indexed, oldest first."""
        names = sorted(e.name for e in os.scandir(self.folder)
                       if e.name.endswith(ENTRY_SUFFIX) and not e.name.startswith(".") and e.is_file())
        return [JournalEntry.from_path(self.folder / n) for n in names[:limit]]

    def oldest_pending_age_s(self) -> float:
        """How long the oldest entry waiting to be indexed has waited (0 when none waits), from its name."""
        oldest = min((e.name for e in os.scandir(self.folder)
                      if e.name.endswith(ENTRY_SUFFIX) and not e.name.startswith(".")), default=None)
        if oldest is None:
            return 0.0
        try:
            return max(0.0, (time.time_ns() - int(oldest.split("-", 1)[0])) / 1e9)
        except ValueError:  # not a name this journal wrote
            return 0.0

    def done(self, entry: JournalEntry, *, sha256: str | None) -> None:
        """``entry`` is indexed: keep it as ``indexed/<sha256>…`` (``sha256`` None: nothing was stored, remove it).

        The folder is not fsync'd: if a crash loses the rename, the entry is indexed again, which
        finds the same content already indexed and removes it."""
        if sha256 is None:
            entry.path.unlink(missing_ok=True)
            return
        os.replace(entry.path, self.indexed / f"{sha256}.{_meta(entry.calling_ae, entry.peer_address)}{ENTRY_SUFFIX}")

    def forget(self, sha256: str) -> None:
        """Drop the kept name of content the index no longer holds on purpose (a replaced version), so
        that a later reconciliation does not bring it back."""
        for path in self.indexed.glob(f"{sha256}.*{ENTRY_SUFFIX}"):
            path.unlink(missing_ok=True)

    def fail(self, entry: JournalEntry, reason: str) -> Path:
        """Set ``entry`` aside in ``failed/`` with ``<name>.reason`` beside it; returns its new path."""
        target = self.failed / entry.path.name
        target.with_name(target.name + ".reason").write_text(reason + "\n")
        os.replace(entry.path, target)
        fsync_dir(self.failed)
        fsync_dir(self.folder)
        return target

    def failures(self) -> list[tuple[Path, str]]:
        """Entries set aside, with their reasons."""
        out = []
        for path in sorted(self.failed.glob(f"*{ENTRY_SUFFIX}")):
            reason = path.with_name(path.name + ".reason")
            out.append((path, reason.read_text().strip() if reason.exists() else "no reason recorded"))
        return out

    def kept(self, *, newer_than_s: float | None = None) -> list[JournalEntry]:
        """Indexed entries still kept (``newer_than_s``: only those indexed that recently)."""
        horizon = time.time() - newer_than_s if newer_than_s is not None else None
        out = []
        for e in os.scandir(self.indexed):
            if not e.name.endswith(ENTRY_SUFFIX):
                continue
            if horizon is not None and e.stat().st_ctime < horizon:  # ctime: when the rename made it kept
                continue
            out.append(JournalEntry.from_path(self.indexed / e.name))
        return out

    def prune(self, *, older_than_s: float) -> int:
        """Forget kept entries indexed more than ``older_than_s`` ago (only a name goes; the stored file stays)."""
        horizon = time.time() - older_than_s
        removed = 0
        for e in os.scandir(self.indexed):
            with contextlib.suppress(FileNotFoundError):
                if e.name.endswith(ENTRY_SUFFIX) and e.stat().st_ctime < horizon:
                    os.unlink(e.path)
                    removed += 1
        return removed

    def wait_drained(self, names: Iterable[str] | None = None, *, timeout_s: float = 10.0,
                     poll_s: float = 0.0005) -> bool:
        """Wait until the entries pending now (or ``names``) are indexed; False if ``timeout_s`` passed first."""
        waiting = [self.folder / n for n in names] if names is not None else [e.path for e in self.pending()]
        deadline = time.monotonic() + timeout_s
        while waiting:
            waiting = [p for p in waiting if p.exists()]
            if not waiting:
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        return True

    def sweep_partials(self, older_than_s: float = 0.0) -> list[Path]:
        """Remove temporary files of writes a crash interrupted (never acknowledged); ``older_than_s``: only
        those untouched that long, so that a receiver writing now (another process, a STOW) keeps its file."""
        horizon = time.time() - older_than_s
        removed = []
        for p in self.folder.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if older_than_s and p.stat().st_mtime > horizon:
                    continue
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed

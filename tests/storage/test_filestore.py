"""The DICOM file store: layout, UID checks, atomic durable writes, crash behaviour."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage import filestore as fs_module
from storage.filestore import FileExistsInStoreError, FileStore, InvalidUIDError, file_component, validate_uid

STUDY, SERIES, SOP = "1.2.826.0.1.3680043.2.1", "1.2.826.0.1.3680043.2.1.7", "1.2.826.0.1.3680043.2.1.7.42"


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_write_layout_size_and_hash(tmp_path: Path) -> None:
    """Files land at <root>/dicom/<study>/<series>/<sop>.dcm with the right size and SHA-256."""
    store = FileStore(tmp_path)
    data = os.urandom(100_000)
    stored = store.write(STUDY, SERIES, SOP, data)
    assert stored.path == tmp_path / "dicom" / STUDY / SERIES / f"{SOP}.dcm"
    assert stored.path.read_bytes() == data
    assert (stored.size_bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.read(store.relative(stored.path)) == data
    assert _files(tmp_path) == [f"dicom/{STUDY}/{SERIES}/{SOP}.dcm"]


def test_versions_get_their_own_file(tmp_path: Path) -> None:
    """A second version of a SOP instance is written beside the first, never over it."""
    store = FileStore(tmp_path)
    first = store.write(STUDY, SERIES, SOP, b"one")
    second = store.write(STUDY, SERIES, SOP, b"two", version=2)
    assert second.path.name == f"{SOP}.v2.dcm"
    assert first.path.read_bytes() == b"one" and second.path.read_bytes() == b"two"


@pytest.mark.parametrize(
    "odd",
    ["../../etc", "1.2/../../3", "..", "/abs/1.2", "1.2.03", "1..2", "1.2.", "1.2.x", "1" * 65, "1.2\x00.3", " 1.2"],
)
def test_uid_breaking_the_grammar_names_a_file_by_its_hash_inside_the_store(tmp_path: Path, odd: str) -> None:
    """Odd UIDs (seen in the field) are stored, never used as a path: no traversal, one name per UID."""
    store = FileStore(tmp_path)
    written = store.write(STUDY, SERIES, odd, b"x")
    assert written.path.is_relative_to(store.dicom_root / STUDY / SERIES)
    assert written.path.name == file_component(odd) + ".dcm" and written.path.name.startswith("uid-")
    assert file_component(odd) != file_component(odd + "1")
    assert store.write(odd, odd, SOP, b"y").path.parent.parent.parent == store.dicom_root


def test_an_empty_uid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidUIDError, match="empty"):
        FileStore(tmp_path).write(STUDY, SERIES, "", b"x")
    assert _files(tmp_path) == []


def test_valid_uids_accepted() -> None:
    for uid in ["0", "1.2.840.10008.1.2.1", "2.25.329800735698586629295641978511506172918", "1.0.2"]:
        assert validate_uid(uid) == uid


def test_stored_path_outside_root_refused(tmp_path: Path) -> None:
    """An index entry cannot make the store read outside its root."""
    with pytest.raises(ValueError, match="outside the store root"):
        FileStore(tmp_path).absolute("../secret.txt")


def test_existing_file_not_overwritten_unless_replace(tmp_path: Path) -> None:
    """Writing an existing path fails and keeps the original; replace=True swaps it atomically."""
    store = FileStore(tmp_path)
    store.write(STUDY, SERIES, SOP, b"original")
    with pytest.raises(FileExistsInStoreError):
        store.write(STUDY, SERIES, SOP, b"other")
    path = store.path_for(STUDY, SERIES, SOP)
    assert path.read_bytes() == b"original"
    store.write(STUDY, SERIES, SOP, b"replacement", replace=True)
    assert path.read_bytes() == b"replacement"
    assert _files(tmp_path) == [f"dicom/{STUDY}/{SERIES}/{SOP}.dcm"]


def test_disk_full_during_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while flushing to disk raises OSError and leaves neither the file nor a temporary."""
    store = FileStore(tmp_path)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if os.path.isfile(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(fs_module.os, "fsync", full)
    with pytest.raises(OSError) as info:
        store.write(STUDY, SERIES, SOP, b"x" * 1000)
    assert info.value.errno == errno.ENOSPC
    assert _files(tmp_path) == []


def test_process_killed_mid_write_leaves_no_dcm(tmp_path: Path) -> None:
    """A process SIGKILLed after writing data but before the rename leaves no .dcm; the sweep removes the rest."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from storage import filestore
        real_fsync = os.fsync
        def die(fd):
            if os.path.isfile(f"/proc/self/fd/{{fd}}"):  # the data file, not a folder
                os.kill(os.getpid(), signal.SIGKILL)
            real_fsync(fd)
        filestore.os.fsync = die
        filestore.FileStore({str(tmp_path)!r}).write({STUDY!r}, {SERIES!r}, {SOP!r}, b"x" * 5_000_000)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert proc.returncode == -9, proc.stderr.decode()
    left = _files(tmp_path)
    assert not any(name.endswith(".dcm") for name in left)
    assert len(left) == 1 and left[0].endswith(".part")
    store = FileStore(tmp_path)
    assert len(store.sweep_partials()) == 1
    assert _files(tmp_path) == []
    # The interrupted instance can then be stored normally.
    store.write(STUDY, SERIES, SOP, b"complete")
    assert store.path_for(STUDY, SERIES, SOP).read_bytes() == b"complete"

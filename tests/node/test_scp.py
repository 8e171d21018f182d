"""The node's listener against dcmtk peers: echo, store, access control, durability, hostile input."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from node.dimse.scu import associate
from node.service import Node
from storage import filestore as filestore_module
from storage import models as m
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import mr_image, write_series
from tests.support.serve import OVER_THE_LIMIT
from tests.support.waiting import wait_for


def echo(node: Node, calling: str = "ECHOSCU", called: str | None = None) -> subprocess.CompletedProcess[str]:
    return dcmtk("echoscu", "-aet", calling, "-aec", called or node.settings.node.ae_title,
                 "127.0.0.1", str(node.listener.port))


def storescu(node: Node, *paths: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return dcmtk("storescu", "-v", "-aet", "STORESCU", "-aec", node.settings.node.ae_title, *extra,
                 "127.0.0.1", str(node.listener.port), *map(str, paths))


def instances(node: Node) -> list[m.Instance]:
    node.settle()
    with node.sessions() as s:
        return list(s.scalars(select(m.Instance).order_by(m.Instance.sop_instance_uid, m.Instance.version)))


def test_echo_from_dcmtk(node: Node) -> None:
    """echoscu with an allowed AE title gets C-ECHO success."""
    out = echo(node)
    assert out.returncode == 0, out.stdout


def test_unknown_calling_ae_refused(node: Node) -> None:
    """An AE title not on the allow-list gets A-ASSOCIATE-RJ and the refusal is recorded."""
    out = echo(node, calling="INTRUDER")
    assert out.returncode != 0
    assert "Association Rejected" in out.stdout
    # the compiled receiver reports a rejection by datagram, which a thread of the node reads: recorded, soon
    wait_for(lambda: any("'INTRUDER'" in r for r in node.listener.refused), 20, "the refusal recorded",
             step_s=0.01)
    assert echo(node).returncode == 0


def test_wrong_called_ae_refused(node: Node) -> None:
    out = echo(node, called="NOT_MYONODE")
    assert out.returncode != 0 and "Association Rejected" in out.stdout


def test_host_not_allowed_is_dropped(running_node) -> None:
    """A peer address outside allowed_hosts is disconnected before any association."""
    node = running_node(node='allowed_hosts = ["10.0.0.0/8"]')
    out = echo(node)
    assert out.returncode != 0


def test_store_series_from_storescu(node: Node, tmp_path: Path) -> None:
    """storescu pushes a series; every instance is on disk with its pixels and indexed with hash and peer."""
    paths = write_series(tmp_path / "in", 5)
    out = storescu(node, *paths)
    assert out.returncode == 0, out.stdout
    rows = instances(node)
    assert len(rows) == 5
    sent = {dcmread(p).SOPInstanceUID: dcmread(p) for p in paths}
    for row in rows:
        stored = dcmread(node.store.absolute(row.file_path))
        assert stored.PixelData == sent[row.sop_instance_uid].PixelData
        assert row.calling_ae == "STORESCU" and row.peer_address == "127.0.0.1"
        assert row.size_bytes == node.store.absolute(row.file_path).stat().st_size
    node.settle()
    with node.sessions() as s:
        series = s.scalars(select(m.Series)).one()
        assert series.n_instances == 5 and series.kind is m.SeriesKind.T2
        assert s.scalars(select(m.Patient)).one().patient_id == "MND-001"


def test_concurrent_associations(node: Node, tmp_path: Path) -> None:
    """Four storescu processes at once, same study: all instances indexed once, one study row."""
    study = generate_uid()
    batches = [write_series(tmp_path / f"s{i}", 6, study_uid=study, seed=10 * i) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: storescu(node, *b), batches))
    assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode]
    assert len(instances(node)) == 24
    node.settle()
    with node.sessions() as s:
        assert len(s.scalars(select(m.Study)).all()) == 1
        assert sorted(x.n_instances for x in s.scalars(select(m.Series))) == [6, 6, 6, 6]


def test_resend_identical_is_idempotent(node: Node, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", 3)
    assert storescu(node, *paths).returncode == 0
    assert storescu(node, *paths).returncode == 0
    assert len(instances(node)) == 3


def test_resend_different_content_keeps_both_and_flags(node: Node, tmp_path: Path) -> None:
    """Same SOP Instance UID, new pixels: stored as version 2 and flagged (default policy keep_both)."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    mr_image(study_uid=study, series_uid=series, sop_uid=sop, seed=1).save_as(first, enforce_file_format=True)
    mr_image(study_uid=study, series_uid=series, sop_uid=sop, seed=2).save_as(second, enforce_file_format=True)
    assert storescu(node, first).returncode == 0
    assert storescu(node, second).returncode == 0
    rows = instances(node)
    assert [(r.version, r.conflict) for r in rows] == [(1, False), (2, True)]
    assert dcmread(node.store.absolute(rows[0].file_path)).PixelData == dcmread(first).PixelData
    assert dcmread(node.store.absolute(rows[1].file_path)).PixelData == dcmread(second).PixelData


@pytest.mark.parametrize("policy", ["keep_first", "replace"])
def test_resend_policies(running_node, tmp_path: Path, policy: str) -> None:
    node = running_node(storage=f'resend_policy = "{policy}"')
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    for seed in (1, 2):
        path = tmp_path / f"{seed}.dcm"
        mr_image(study_uid=study, series_uid=series, sop_uid=sop, seed=seed).save_as(path, enforce_file_format=True)
        assert storescu(node, path).returncode == 0
    rows = instances(node)
    assert len(rows) == 1
    kept_seed = 1 if policy == "keep_first" else 2
    expected = mr_image(study_uid=study, series_uid=series, sop_uid=sop, seed=kept_seed).PixelData
    assert dcmread(node.store.absolute(rows[0].file_path)).PixelData == expected
    files = [p for p in (node.store.dicom_root).rglob("*") if p.is_file()]
    assert len(files) == 1  # the superseded file is gone under "replace"


def test_disk_full_returns_failure_then_retry_succeeds(running_node, tmp_path: Path, monkeypatch) -> None:
    """pynetdicom receiving: ENOSPC while the journal entry is flushed answers 0xA700 (out of resources); nothing
    is kept or indexed; the retry stores it (the compiled receiver on a real full disk:
    tests/node/test_compiled_receiver.py)."""
    node = running_node(node='receiver = "pynetdicom"')
    failures = {"left": 1}

    def failing(real):
        def sync(fd: int) -> None:
            if failures["left"] and os.path.isfile(f"/proc/self/fd/{fd}"):
                failures["left"] -= 1
                raise OSError(errno.ENOSPC, "No space left on device")
            real(fd)
        return sync

    monkeypatch.setattr(filestore_module.os, "fsync", failing(os.fsync))
    monkeypatch.setattr(filestore_module.os, "fdatasync", failing(os.fdatasync))
    path = write_series(tmp_path / "in", 1)[0]
    out = storescu(node, path)
    assert "Received Store Response (Refused: OutOfResources)" in out.stdout, out.stdout
    assert instances(node) == []
    assert not [p for p in node.store.dicom_root.rglob("*") if p.is_file()]
    assert node.journal.pending() == []
    assert not [p for p in node.journal.folder.iterdir() if p.is_file() and p.name.endswith((".dcm", ".part"))]
    assert storescu(node, path).returncode == 0
    assert len(instances(node)) == 1


def test_unparseable_dataset_gets_cannot_understand(node: Node) -> None:
    """A C-STORE whose data set lacks its UIDs is refused with a 0xC000 status and not stored."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
    from pynetdicom import AE as SCU

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "X"  # no Study/Series Instance UID
    scu = SCU(ae_title="PEER")
    scu.add_requested_context(MRImageStorage)
    assoc = scu.associate("127.0.0.1", node.listener.port, ae_title="MYONODE")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0xC000 and "StudyInstanceUID" in status.ErrorComment
    assert instances(node) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not DICOM at all
        b"\x01\x00\x00\x00\x10\x00\x00\x01",  # A-ASSOCIATE-RQ header, truncated body
        b"\x04\x00\xff\xff\xff\xff" + b"\x00" * 64,  # P-DATA claiming 4 GiB, then disconnect
        b"\x01\x00" + struct.pack(">L", 68) + b"\x00" * 68,  # RQ with zero-filled (invalid) fields
        b"",  # connect and hang up
    ],
)
def test_hostile_peer_does_not_disturb_service(node: Node, payload: bytes) -> None:
    """Garbage, truncated PDUs, absurd lengths and abrupt disconnects leave the node serving."""
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", node.listener.port), timeout=5) as sock:
            if payload:
                sock.sendall(payload)
    assert echo(node).returncode == 0


def test_silent_connection_does_not_block_others(running_node) -> None:
    """A peer that connects and sends nothing does not stop others from being served."""
    node = running_node()
    silent = [socket.create_connection(("127.0.0.1", node.listener.port)) for _ in range(3)]
    try:
        assert echo(node).returncode == 0
    finally:
        for sock in silent:
            sock.close()


def test_association_limit(running_node) -> None:
    """Beyond max_associations the node rejects (transient) instead of serving slowly."""
    node = running_node(node="max_associations = 2")
    scu = AE(ae_title="PEER")
    scu.add_requested_context(Verification)
    held = [scu.associate("127.0.0.1", node.listener.port, ae_title="MYONODE") for _ in range(2)]
    assert all(a.is_established for a in held)
    _, why = associate(scu, "127.0.0.1", node.listener.port, ae_title="MYONODE")
    assert why == OVER_THE_LIMIT
    for a in held:
        a.release()
    time.sleep(0.2)
    assert echo(node).returncode == 0


def test_enhanced_mr_from_storescu_is_indexed_as_dwi(node: Node, tmp_path: Path) -> None:
    """A multi-frame Enhanced MR DWI instance is stored and its frames' b-values are indexed."""
    from tests.support.dicom_factory import enhanced_mr

    path = tmp_path / "enhanced.dcm"
    enhanced_mr(study_uid=generate_uid(), series_uid=generate_uid()).save_as(path, enforce_file_format=True)
    assert storescu(node, path).returncode == 0
    row = instances(node)[0]
    assert row.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4.1" and row.b_values == [0.0, 1000.0]
    node.settle()
    with node.sessions() as s:
        assert s.scalars(select(m.Series)).one().kind is m.SeriesKind.DWI


def test_uids_breaking_the_grammar_are_stored_found_and_given_back_unchanged(node: Node, tmp_path: Path) -> None:
    """Leading zeros, a letter, more than 64 characters, as some modalities write them: stored under hashed file
    names, indexed and answered with the UIDs exactly as sent. An over-long one cannot go out again by DIMSE
    (pynetdicom refuses more than 64 characters in the C-STORE request): that sub-operation fails, named."""
    study, series = "1.2.826.0.1.3680043.2.0123.1", "1.2.826.0.1.3680043.2.0123.1.01"
    odd, long = "1.2.3.0045.7a", "1.2.3.0045" + ".12345" * 12  # 13 and 82 characters
    paths = []
    for k, sop in enumerate((odd, long)):
        paths.append(tmp_path / f"odd{k}.dcm")
        mr_image(study_uid=study, series_uid=series, sop_uid=sop, instance_number=k + 1).save_as(
            paths[-1], enforce_file_format=True)
    sent = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                 *map(str, paths))  # storescu cuts the long one to 64 in the request: the same instance
    assert sent.returncode == 0, sent.stdout
    node.settle()
    with node.sessions() as s:
        rows = {r.sop_instance_uid: r for r in s.scalars(select(m.Instance))}
    assert set(rows) == {odd, long}
    assert all(rows[u].file_path.endswith(filestore_module.file_component(u) + ".dcm") for u in rows)
    assert all("uid-" in r.file_path for r in rows.values())
    found = dcmtk("findscu", "-S", "-aet", "FINDSCU", "-aec", "MYONODE", "-k", "QueryRetrieveLevel=IMAGE",
                  "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={series}", "-k", "SOPInstanceUID",
                  "127.0.0.1", str(node.listener.port))
    assert found.stdout.count("Find Response:") == 2 and odd in found.stdout, found.stdout
    out = tmp_path / "get"
    out.mkdir()
    got = dcmtk("getscu", "-v", "-aet", "GETSCU", "-aec", "MYONODE", "-k", "QueryRetrieveLevel=SERIES",
                "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={series}",
                "-od", str(out), "127.0.0.1", str(node.listener.port))
    assert "Number of Completed Suboperations : 1" in got.stdout and "Number of Failed Suboperations    : 1" \
        in got.stdout, got.stdout
    (back,) = [dcmread(p) for p in out.iterdir()]
    assert (back.StudyInstanceUID, back.SeriesInstanceUID, back.SOPInstanceUID) == (study, series, odd)
    assert dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port)).returncode == 0

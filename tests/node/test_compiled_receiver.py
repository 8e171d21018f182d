"""The compiled C-STORE receiver (DCMTK libdcmnet) beside pynetdicom on one port: who gets which association,
the same bytes and answers from both receivers, a full disk, a dead receiver, and a simulated power cut."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.dataset import FileMetaDataset as _Meta
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import AddressInformation
from sqlalchemy import select

from node.demo.fallback_atlas import with_default_atlas
from node.demo.ports import free_port
from node.dimse import compiled
from node.dimse.compiled import policy_text, storage_only
from node.dimse.conformance import storage_sop_classes
from node.dimse.filemeta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, file_meta
from node.service import Node, association_slots, start_node
from node.settings import NodeSettings, load_settings
from storage import models as m
from storage.database import make_engine, session_factory
from storage.filestore import FileStore
from tests.node.test_durability import c_get_study, originals, push_and_kill
from tests.node.test_hostile_web import deflate_bomb
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import mr_image
from tests.support.serve import start_serve, write_settings
from tests.support.waiting import wait_for

STORAGE = frozenset(str(uid) for uid in storage_sop_classes("all"))
DCMTK = 'receiver = "dcmtk"'
PYNETDICOM = 'receiver = "pynetdicom"'


def rq(*contexts: str, scp_role_for: str | None = None) -> bytes:
    """An encoded A-ASSOCIATE-RQ proposing ``contexts`` (pynetdicom's own encoder)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = "PEER", "MYONODE"
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 2)
    cxs = []
    for i, uid in enumerate(contexts):
        cx = build_context(uid)
        cx.context_id = 2 * i + 1
        cxs.append(cx)
    primitive.presentation_context_definition_list = cxs
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    info: list[object] = [length]
    if scp_role_for is not None:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid, role.scu_role, role.scp_role = scp_role_for, False, True
        info.append(role)
    primitive.user_information = info
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def test_storage_and_verification_proposals_go_to_the_compiled_receiver_anything_else_to_pynetdicom() -> None:
    assert storage_only(rq(MRImageStorage), STORAGE)
    assert storage_only(rq(MRImageStorage, "1.2.840.10008.5.1.4.1.1.2", Verification), STORAGE)
    assert not storage_only(rq(MRImageStorage, StudyRootQueryRetrieveInformationModelFind), STORAGE)
    assert not storage_only(rq(StorageCommitmentPushModel), STORAGE)
    assert not storage_only(rq(MRImageStorage, scp_role_for=MRImageStorage), STORAGE)  # a C-GET's receiving side
    assert not storage_only(rq("1.2.3.4.5.6"), STORAGE)  # not a storage class the node knows
    assert not storage_only(b"\x01\x00\x00\x00\x00\x10" + b"\x00" * 16, STORAGE)  # does not decode
    assert not storage_only(b"GET / HTTP/1.1\r\n", STORAGE)


def test_the_file_meta_is_the_bytes_pynetdicom_writes() -> None:
    for ts in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"):
        meta = _Meta()
        meta.FileMetaInformationGroupLength = 0
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, "1.2.3.45"
        meta.TransferSyntaxUID = ts
        meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
        assert file_meta(MRImageStorage, "1.2.3.45", ts) == b"\x00" * 128 + b"DICM" + encode_file_meta(meta)


def test_the_policy_file_holds_every_rule_from_the_settings(tmp_path: Path) -> None:
    settings = NodeSettings(ae_title="NODE", allowed_calling_ae_titles=["SCANNER", "PACS"], max_instance_bytes=1 << 20,
                            accept=["MRImageStorage"])
    text = policy_text(settings, journal_dir=tmp_path / "journal", wake_address=b"\0wake", slots_dir=tmp_path / "run",
                       max_associations=3, handoff_address="h", events_address="e")
    lines = text.splitlines()
    assert "ae_title NODE" in lines and "calling_ae_title SCANNER" in lines and "calling_ae_title PACS" in lines
    assert "max_instance_bytes 1048576" in lines and "max_associations 3" in lines and "wake_address wake" in lines
    assert [line for line in lines if line.startswith("sop_class ")] == [f"sop_class {Verification}",
                                                                          f"sop_class {MRImageStorage}"]


def stored_bytes(node: Node) -> dict[str, bytes]:
    node.settle()
    with node.sessions() as s:
        rows = list(s.scalars(select(m.Instance)))
    return {r.sop_instance_uid: node.store.absolute(r.file_path).read_bytes() for r in rows}


def storescu(node: Node, *paths: Path | str) -> subprocess.CompletedProcess[str]:
    return dcmtk("storescu", "-v", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                 *map(str, paths))


def test_both_receivers_keep_the_same_bytes_of_a_real_file_so_a_resend_is_a_duplicate(running_node,
                                                                                      tmp_path: Path) -> None:
    real = get_testdata_file("MR_small.dcm")
    by_dcmtk = running_node(node=DCMTK)
    (tmp_path / "other").mkdir()
    other = write_settings(tmp_path / "other", free_port(), PYNETDICOM)
    by_pynetdicom = start_node(with_default_atlas(load_settings(other, environ={})))
    try:
        assert by_pynetdicom.listener.compiled is None and by_dcmtk.listener.compiled is not None
        assert storescu(by_pynetdicom, real).returncode == 0
        assert storescu(by_dcmtk, real).returncode == 0
        assert by_dcmtk.listener.compiled.handed_over == 1
        assert stored_bytes(by_pynetdicom) == stored_bytes(by_dcmtk)
    finally:
        by_pynetdicom.stop()
    assert storescu(by_dcmtk, real).returncode == 0  # sent again: the same content, nothing new
    with by_dcmtk.sessions() as s:
        assert len(s.scalars(select(m.Instance)).all()) == 1


def store_file(port: int, path: Path) -> Dataset:
    """C-STORE of a file's bytes as they are, the request's UIDs from its meta group: the response status.
    (pynetdicom decodes a file it is given, which would mend what these files break, unless it is told to
    send files in chunks, as read.)"""
    meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
    ae = AE(ae_title="PEER")
    ae.add_requested_context(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="MYONODE")
    assert assoc.is_established
    chunked = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = chunked
        assoc.release()
    return status


def hostile_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files each receiver must refuse with 0xC000, and a word its comment holds."""
    folder.mkdir()
    out: dict[str, tuple[Path, str]] = {}
    whole = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (folder / "truncated.dcm").write_bytes(whole[:-5000])
    out["truncated"] = (folder / "truncated.dcm", "truncated")
    bomb = deflate_bomb(8)  # 8 KB that inflate to 8 MB, beyond the 64 KiB max_instance_bytes these tests set
    (folder / "bomb.dcm").write_bytes(bomb + b"\0" * (len(bomb) % 2))  # a deflated stream is padded to even length
    out["deflate bomb"] = (folder / "bomb.dcm", "deflate bomb")
    ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=1)
    ds.save_as(folder / "mismatch.dcm", enforce_file_format=True)
    raw, uid = (folder / "mismatch.dcm").read_bytes(), str(ds.SOPInstanceUID).encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    at = raw.index(uid)  # the meta group's, first: the request names another instance than the data set
    (folder / "mismatch.dcm").write_bytes(raw[:at] + other + raw[at + len(uid):])
    out["uid mismatch"] = (folder / "mismatch.dcm", "SOPInstanceUID 1.2")  # "… differs from …", cut at 64
    ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=2)
    del ds.StudyInstanceUID
    ds.save_as(folder / "nostudy.dcm", enforce_file_format=True)
    out["no study uid"] = (folder / "nostudy.dcm", "StudyInstanceUID")
    ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=256, seed=3)  # 131 KB > 64 KiB
    ds.save_as(folder / "large.dcm", enforce_file_format=True)
    out["too large"] = (folder / "large.dcm", "max_instance_bytes")
    ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=4)
    ds.Rows = ds.Columns = 64  # 512 bytes of pixels where 64×64×2 are needed
    ds.save_as(folder / "short.dcm", enforce_file_format=True)
    out["short pixel data"] = (folder / "short.dcm", "short pixel data")
    return out


@pytest.mark.parametrize("receiver", [DCMTK, PYNETDICOM])
def test_each_receiver_refuses_the_same_bad_instances_with_0xC000_and_its_reason_and_keeps_the_good(
        running_node, tmp_path: Path, receiver: str) -> None:
    node = running_node(node=f"{receiver}\nmax_instance_bytes = 65536")
    files = hostile_files(tmp_path / "bad")
    good = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=9)
    good.save_as(tmp_path / "good.dcm", enforce_file_format=True)
    for name, (path, word) in files.items():
        status = store_file(node.listener.port, path)
        assert status.Status == 0xC000, (name, status)
        assert word in str(status.get("ErrorComment", "")), (name, status.get("ErrorComment"))
        assert store_file(node.listener.port, tmp_path / "good.dcm").Status == 0x0000, name
    assert list(stored_bytes(node)) == [str(good.SOPInstanceUID)]
    assert not [p for p in node.journal.folder.iterdir() if p.name.endswith(".part")]
    if receiver == DCMTK:
        assert node.listener.compiled is not None and node.listener.compiled.handed_over == 2 * len(files)


def counted(node: Node, metric: str, **labels: str) -> float:
    metrics = node.receiver.metrics
    assert metrics is not None
    for family in getattr(metrics, metric).collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_what_the_compiled_receiver_does_is_counted_logged_and_refusals_listed(running_node, tmp_path: Path,
                                                                                caplog) -> None:
    node = running_node(node=DCMTK)
    paths = []
    for i in range(3):
        ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=i)
        paths.append(tmp_path / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    assert storescu(node, *paths).returncode == 0
    refused = dcmtk("storescu", "-aet", "STRANGER", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                    str(paths[0]))
    assert refused.returncode != 0
    bad = hostile_files(tmp_path / "bad")["no study uid"][0]
    assert store_file(node.listener.port, bad).Status == 0xC000
    wait_for(lambda: counted(node, "instances", via="dimse") == 3 and bool(node.listener.refused)
             and counted(node, "refused", via="dimse") == 1, 20, "the receiver's datagrams counted", step_s=0.05)
    assert counted(node, "instances", via="dimse") == 3
    assert counted(node, "refused", via="dimse", reason="0xC000") == 1
    assert node.listener.refused and "'STRANGER'" in node.listener.refused[0]
    assert any("StudyInstanceUID is missing" in r.getMessage() for r in caplog.records)


def test_an_association_held_by_the_compiled_receiver_counts_as_active(running_node) -> None:
    node = running_node(node=DCMTK)
    slots = association_slots(node.settings)
    ae = AE(ae_title="PEER")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.listener.port, ae_title="MYONODE")
    assert assoc.is_established and node.listener.compiled is not None and node.listener.compiled.handed_over == 1
    assert slots.held() == 1
    assoc.release()
    wait_for(lambda: slots.held() == 0, 20, "the released association's slot freed", step_s=0.02)


def test_both_receivers_accept_naming_the_same_implementation_as_the_files_they_keep(running_node) -> None:
    """A PACS sees one implementation on the port, whichever receiver took the association: the A-ASSOCIATE-AC's
    Implementation Class UID and Version Name are those of the file meta information (node/dimse/filemeta.py)."""
    node = running_node(node=DCMTK)
    named = {}
    for kind, extra in (("compiled", None), ("pynetdicom", StudyRootQueryRetrieveInformationModelFind)):
        ae = AE(ae_title="PEER")
        ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
        if extra is not None:
            ae.add_requested_context(extra)
        assoc = ae.associate("127.0.0.1", node.listener.port, ae_title="MYONODE")
        assert assoc.is_established
        named[kind] = (assoc.acceptor.implementation_class_uid, assoc.acceptor.implementation_version_name)
        assoc.release()
    assert node.listener.compiled is not None and node.listener.compiled.handed_over == 1
    assert named["compiled"] == named["pynetdicom"] == (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME)


def test_query_commitment_and_mixed_associations_stay_with_pynetdicom_on_the_same_port(running_node) -> None:
    node = running_node(node=DCMTK)
    ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=1)
    ae = AE(ae_title="PEER")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.listener.port, ae_title="MYONODE")
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID, query.SOPInstanceUID = "IMAGE", ds.StudyInstanceUID, ""
    node.settle()
    found = [i.SOPInstanceUID for st, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
             if st is not None and st.Status == 0xFF00]
    assoc.release()
    assert found == [ds.SOPInstanceUID]
    assert node.listener.compiled is not None and node.listener.compiled.handed_over == 0
    back = c_get_study(node.listener.port, str(ds.StudyInstanceUID))  # C-GET proposes the SCP role: pynetdicom
    assert back[str(ds.SOPInstanceUID)].PixelData == ds.PixelData
    assert node.listener.compiled.handed_over == 0


def test_a_receiver_that_dies_is_replaced_and_the_association_meanwhile_served(running_node, tmp_path: Path,
                                                                                monkeypatch) -> None:
    node = running_node(node=DCMTK)
    receiver = node.listener.compiled
    assert receiver is not None and receiver.running()
    ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=1)
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    first = receiver._process
    assert first is not None
    first.kill()
    first.wait()
    assert storescu(node, tmp_path / "a.dcm").returncode == 0  # just started: pynetdicom serves this one
    assert receiver.handed_over == 0 and not receiver.running()
    monkeypatch.setattr(compiled, "RESTART_AFTER_S", 0.0)
    ds2 = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=2)
    ds2.save_as(tmp_path / "b.dcm", enforce_file_format=True)
    assert storescu(node, tmp_path / "b.dcm").returncode == 0
    assert receiver.running() and receiver._process is not first and receiver.handed_over == 1
    assert set(stored_bytes(node)) == {str(ds.SOPInstanceUID), str(ds2.SOPInstanceUID)}


def test_with_tls_the_compiled_receiver_does_the_handshake_keeps_storage_and_relays_the_rest(
        running_node, tmp_path: Path, caplog) -> None:
    key, cert = tmp_path / "node.key", tmp_path / "node.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    node = running_node(node=f'{DCMTK}\ntls_cert = "{cert}"\ntls_key = "{key}"')
    receiver = node.listener.compiled
    assert receiver is not None and receiver.relay is not None
    ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=16, seed=1)
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    tls = ("+tla", "+cf", str(cert))
    silent = [socket.create_connection(("127.0.0.1", node.listener.port)) for _ in range(3)]  # never say hello
    out = dcmtk("storescu", *tls, "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                str(tmp_path / "a.dcm"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(stored_bytes(node)) == [str(ds.SOPInstanceUID)]
    # a query over TLS: handshake in the compiled receiver, the association relayed to pynetdicom
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.listener.port, ae_title="MYONODE", tls_args=(context, None))
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", ds.StudyInstanceUID
    found = [i.StudyInstanceUID for st, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
             if st is not None and st.Status == 0xFF00]
    assoc.release()
    assert found == [ds.StudyInstanceUID]
    for sock in silent:
        sock.close()
    assert receiver.handed_over == 5  # with TLS every connection goes through its handshake
    plain = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port))
    assert plain.returncode != 0
    wait_for(lambda: any("TLS handshake failed" in r.getMessage() for r in caplog.records), 20,
             "the failed TLS handshake logged", step_s=0.05)
    # the relay listener serves nobody without the receiver's token
    with socket.create_connection(("127.0.0.1", receiver.relay[0]), timeout=5) as sock:
        sock.sendall(b"myonode-relay wrong 10.0.0.1\n")
        assert sock.recv(16) == b""


def root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root (CI runs as root)")


def test_a_full_disk_is_answered_out_of_resources_nothing_is_kept_and_the_retry_is_stored(
        running_node, tmp_path: Path) -> None:
    """A real full file system (a 4 MB tmpfs under the store), not a mocked call."""
    root_only()
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(store)], check=True)
    node = None
    try:
        node = running_node(node=DCMTK)
        ds = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=256, seed=1)
        ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
        ballast = store / "ballast"
        with open(ballast, "wb") as fh:
            try:
                while True:
                    fh.write(bytes(64 << 10))
                    fh.flush()
            except OSError:
                pass
        out = storescu(node, tmp_path / "a.dcm")
        assert "Received Store Response (Refused: OutOfResources)" in out.stdout, out.stdout
        assert not [p for p in node.journal.folder.iterdir() if p.name.endswith((".dcm", ".part"))]
        ballast.unlink()
        assert storescu(node, tmp_path / "a.dcm").returncode == 0
        assert list(stored_bytes(node)) == [str(ds.SOPInstanceUID)]
        assert node.listener.compiled is not None and node.listener.compiled.handed_over == 2
    finally:
        if node is not None:
            node.stop()
        subprocess.run(["umount", "-l", str(store)], check=False)


def on_disk(folder: Path, port: int, disk: Path) -> Path:
    """Settings (kept off the disk that loses power) for a node whose store and index are on ``disk``."""
    folder.mkdir()
    path = write_settings(folder, port, "max_associations = 16\n")
    path.write_text(path.read_text().replace('root = "store"', f'root = "{disk / "store"}"').replace(
        'database_url = "sqlite:///myonode.db"', f'database_url = "sqlite:///{disk / "myonode.db"}"'))
    return path


@pytest.mark.slow
def test_every_acknowledged_instance_survives_a_power_cut_that_drops_what_was_not_flushed(tmp_path: Path) -> None:
    """The store and its SQLite index on an ext4 file system in a file (loop device, journal commits only every
    300 s). Five associations push into the compiled receiver; at a random moment every node process gets
    SIGKILL and the disk image is copied as it is: the copy holds only what reached the block device —
    what was fsync'd — as after a power cut (a file written without fsync just before is not in it: the
    check that the simulation bites). The node started on the copy indexes every acknowledged instance,
    its bytes as sent (C-GET)."""
    root_only()
    image, copy = tmp_path / "disk.img", tmp_path / "after-power-cut.img"
    mounted, remounted = tmp_path / "disk", tmp_path / "after"
    mounted.mkdir()
    remounted.mkdir()
    subprocess.run(["truncate", "-s", "512M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop,commit=300", str(image), str(mounted)], check=True)
    node = None
    try:
        port = free_port()
        settings = on_disk(tmp_path / "before", port, mounted)
        study = generate_uid()
        sent = originals(study, 600, series=2)
        node = start_serve(settings, port, own_process_group=True)
        pushers = push_and_kill(node, port, list(sent.values()), associations=5, kill_after=random.randint(40, 200))
        assert "C-STORE receiver: compiled (DCMTK)" in (tmp_path / "before" / "serve.log").read_text()
        (mounted / "written-not-flushed").write_bytes(b"x" * 4096)
        subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)  # the power cut
        for p in pushers:
            p.join(timeout=60)
        acked = {sop for p in pushers for sop in p.acked}
        assert 0 < len(acked) < len(sent)
        subprocess.run(["umount", str(mounted)], check=True)
        subprocess.run(["mount", "-o", "loop", str(copy), str(remounted)], check=True)
        assert not (remounted / "written-not-flushed").exists(), "the copy kept unflushed data: no power cut"
        node = start_serve(on_disk(tmp_path / "after-cfg", port, remounted), port)
        engine = make_engine(f"sqlite:///{remounted / 'myonode.db'}")
        with session_factory(engine)() as s:
            rows = list(s.scalars(select(m.Instance)))
        engine.dispose()
        indexed = {r.sop_instance_uid: r for r in rows}
        missing = acked - indexed.keys()
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged instances lost, e.g. {sorted(missing)[:3]}"
        store = FileStore(remounted / "store")
        for row in rows:
            assert hashlib.sha256(store.absolute(row.file_path).read_bytes()).hexdigest() == row.sha256
        back = c_get_study(port, study)
        for sop in acked:
            assert back[sop].PixelData == sent[sop].PixelData
    finally:
        if node is not None and node.poll() is None:
            node.terminate()
            node.wait(timeout=30)
        for folder in (mounted, remounted):  # lazily: a worker of the node may still be leaving it
            subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)

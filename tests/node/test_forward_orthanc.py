"""Forwarding through the outbox and retrieval by C-MOVE, with Orthanc as the PACS."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from sqlalchemy import select

from node.demo.orthanc import start_orthanc
from node.demo.ports import free_port
from node.service import Node
from node.work.outbox import backoff, deliver_due, enqueue, retry
from storage import models as m
from storage.database import transaction
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import write_series
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def store_series(node: Node, folder: Path, n: int = 3) -> list[Path]:
    paths = write_series(folder, n)
    out = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port), *map(str, paths))
    assert out.returncode == 0, out.stdout
    return paths


@pytest.fixture
def node_and_orthanc(running_node, tmp_path: Path):
    node_port = free_port()
    orthanc = start_orthanc(tmp_path / "orthanc", {"myonode": ("MYONODE", "127.0.0.1", node_port)})
    dest = f'name = "orthanc"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
    node = running_node(
        port=node_port,
        forward=f"backoff_initial_s = 1\n[[forward.destinations]]\n{dest}",
        qr=f"[[qr.move_destinations]]\n{dest}",
    )
    yield node, orthanc
    orthanc.stop()


def test_forward_to_orthanc(node_and_orthanc, tmp_path: Path) -> None:
    """Queued instances reach Orthanc through the node's forwarder; the rows end as sent."""
    node, orthanc = node_and_orthanc
    paths = store_series(node, tmp_path / "in")
    node.settle()
    with transaction(node.sessions) as s:
        ids = list(s.scalars(select(m.Instance.id)))
        assert enqueue(s, ids, node.settings.forward.destinations) == 3
        assert enqueue(s, ids, node.settings.forward.destinations) == 0  # idempotent
    node.forwarder.wake.set()
    wait_for(lambda: len(orthanc.rest("/instances")) == 3, 30, "3 instances in Orthanc", step_s=0.2)
    sops = {orthanc.rest(f"/instances/{i}/tags?simplify")["SOPInstanceUID"] for i in orthanc.rest("/instances")}
    assert sops == {dcmread(p).SOPInstanceUID for p in paths}

    def all_sent() -> bool:
        node.settle()
        with node.sessions() as s:
            return all(i.state is m.OutboxState.SENT for i in s.scalars(select(m.OutboxItem)))

    wait_for(all_sent, 30, "every outbox item sent", step_s=0.2)


def test_orthanc_retrieves_from_node_by_c_move(node_and_orthanc, tmp_path: Path) -> None:
    """Orthanc, as PACS, finds the study on the node (C-FIND) and pulls it (C-MOVE to itself)."""
    node, orthanc = node_and_orthanc
    paths = store_series(node, tmp_path / "in", 4)
    study = dcmread(paths[0]).StudyInstanceUID
    found = orthanc.rest("/modalities/myonode/query", {"Level": "Study", "Query": {"StudyInstanceUID": study}})
    answers = orthanc.rest(f"/queries/{found['ID']}/answers?expand")
    assert [a["0020,000d"]["Value"] for a in answers] == [study]
    orthanc.rest("/modalities/myonode/move", {"Level": "Study", "Resources": [{"StudyInstanceUID": study}],
                                              "TargetAet": "ORTHANC", "Synchronous": True})
    assert len(orthanc.rest("/instances")) == 4


def test_unreachable_destination_backs_off_then_gives_up(running_node, tmp_path: Path) -> None:
    """A PACS that is down: attempts grow, next try moves out exponentially, failed after max_attempts; retry."""
    dead_port = free_port()
    node = running_node(forward=f'max_attempts = 3\nbackoff_initial_s = 60\n[[forward.destinations]]\nname = "down"\n'
                                f'ae_title = "DOWN"\nhost = "127.0.0.1"\nport = {dead_port}\n')
    node.forwarder.stop()  # drive delivery by hand, with a controlled clock
    store_series(node, tmp_path / "in", 1)
    node.settle()
    with transaction(node.sessions) as s:
        enqueue(s, list(s.scalars(select(m.Instance.id))), node.settings.forward.destinations)
    now = datetime.now(UTC)
    expected_delays = [60, 120]
    for attempt, delay in enumerate(expected_delays, start=1):
        report = deliver_due(node.sessions, node.store, node.settings.forward, "MYONODE", now=now, timeout=2)
        assert (report.sent, report.failed) == (0, 1)
        node.settle()
        with node.sessions() as s:
            item = s.scalars(select(m.OutboxItem)).one()
        assert item.attempts == attempt and item.state is m.OutboxState.PENDING
        assert item.next_try_at == now + timedelta(seconds=delay)
        assert "association" in item.last_error
        # Not due before its time:
        assert deliver_due(node.sessions, node.store, node.settings.forward, "MYONODE", now=now, timeout=2).failed == 0
        now = item.next_try_at
    report = deliver_due(node.sessions, node.store, node.settings.forward, "MYONODE", now=now, timeout=2)
    assert report.gave_up == 1
    node.settle()
    with transaction(node.sessions) as s:
        assert s.scalars(select(m.OutboxItem)).one().state is m.OutboxState.FAILED
        assert retry(s) == 1
    node.settle()
    with node.sessions() as s:
        item = s.scalars(select(m.OutboxItem)).one()
        assert (item.state, item.attempts) == (m.OutboxState.PENDING, 0)


def test_backoff_is_capped() -> None:
    assert [backoff(n, 30, 3600).total_seconds() for n in (1, 2, 3, 8, 20)] == [30, 60, 120, 3600, 3600]


def test_storage_commitment_with_orthanc_as_scu(node_and_orthanc, tmp_path: Path) -> None:
    """Orthanc asks the node to commit instances; the report says which the node holds intact."""
    node, orthanc = node_and_orthanc
    paths = store_series(node, tmp_path / "in", 2)
    held = [[str(dcmread(p).SOPClassUID), str(dcmread(p).SOPInstanceUID)] for p in paths]
    never_sent = [held[0][0], "1.2.826.0.1.3680043.8.498.1"]
    answer = orthanc.rest("/modalities/myonode/storage-commitment", {"DicomInstances": [*held, never_sent]})
    path = answer["Path"]

    def reported() -> bool:
        return orthanc.rest(path)["Status"] != "Pending"

    wait_for(reported, 30, "the storage commitment report", step_s=0.2)
    report = orthanc.rest(path)
    assert report["Status"] == "Failure"  # one instance is not held
    assert sorted(x["SOPInstanceUID"] for x in report["Success"]) == sorted(h[1] for h in held)
    assert [x["SOPInstanceUID"] for x in report["Failures"]] == [never_sent[1]]
    assert report["Failures"][0]["FailureReason"] == 0x0112


def test_forwarding_to_a_pacs_that_takes_only_uncompressed_decodes_on_the_way(running_node, tmp_path: Path) -> None:
    """Stored as RLE lossless (as a compressing modality sent it), forwarded to an Orthanc that accepts
    only uncompressed syntaxes: Orthanc gets explicit little endian with the very same pixels."""
    orthanc = start_orthanc(tmp_path / "orthanc", {}, config={
        "AcceptedTransferSyntaxes": ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]})
    try:
        dest = f'name = "orthanc"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
        node = running_node(forward=f"backoff_initial_s = 1\n[[forward.destinations]]\n{dest}")
        (plain,) = write_series(tmp_path / "in", 1)
        compressed = tmp_path / "rle.dcm"
        ds = dcmread(plain)
        want = ds.pixel_array.copy()
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(compressed, enforce_file_format=True)
        sent = dcmtk("storescu", "-xr", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                     str(compressed))
        assert sent.returncode == 0, sent.stdout
        node.settle()
        with transaction(node.sessions) as s:
            (instance,) = s.scalars(select(m.Instance)).all()
            assert instance.transfer_syntax_uid == RLELossless  # kept as received
            enqueue(s, [instance.id], node.settings.forward.destinations)
        node.forwarder.wake.set()
        wait_for(lambda: len(orthanc.rest("/instances")) == 1, 30, "the instance in Orthanc", step_s=0.2)
        (oid,) = orthanc.rest("/instances")
        got = dcmread(io.BytesIO(orthanc.rest_bytes(f"/instances/{oid}/file")))
        assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        np.testing.assert_array_equal(got.pixel_array, want)
    finally:
        orthanc.stop()

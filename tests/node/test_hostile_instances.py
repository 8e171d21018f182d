"""No instance can stop intake: mutated data sets in well-formed C-STOREs, between good ones, across a restart.

Every attribute the index reads (positions, orientations, numbers, dates, times, b-values, names, UIDs,
sequences) is corrupted in turn with bytes no scanner should send; a good instance follows each one.
Afterwards, and again after a restart, every acknowledged good instance is found by C-FIND, every
acknowledged bad one is either indexed (with the unreadable value kept empty) or set aside in
``journal/failed/`` with its reason, and the indexer is alive with nothing left pending."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from io import BytesIO

import httpx
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import select

from node.intake.fields import instance_fields, series_fields
from node.service import start_node
from node.settings import Settings
from storage import models as m
from tests.support.dicom_factory import mr_image

# (keyword, VR as sent): what the index reads of an instance, and the sequences it looks into
TARGETS = [
    ("ImagePositionPatient", "DS"), ("ImageOrientationPatient", "DS"), ("InstanceNumber", "IS"),
    ("SeriesNumber", "IS"), ("AcquisitionNumber", "IS"), ("StudyDate", "DA"), ("PatientBirthDate", "DA"),
    ("ContentDate", "DA"), ("StudyTime", "TM"), ("ContentTime", "TM"), ("DiffusionBValue", "FD"),
    ("ImageType", "CS"), ("PatientName", "PN"), ("PatientID", "LO"), ("IssuerOfPatientID", "LO"),
    ("PatientSex", "CS"), ("Modality", "CS"), ("SeriesDescription", "LO"), ("ProtocolName", "LO"),
    ("AccessionNumber", "SH"), ("StudyDescription", "LO"), ("ClinicalTrialTimePointID", "LO"),
    ("ScanningSequence", "CS"), ("FrameOfReferenceUID", "UI"), ("StudyInstanceUID", "UI"),
    ("SeriesInstanceUID", "UI"), ("SpecificCharacterSet", "CS"), ("PerFrameFunctionalGroupsSequence", "SQ"),
    ("SharedFunctionalGroupsSequence", "SQ"),
]
GARBAGE = [
    b"\xd8\x1e\x00\x005.0",  # the value that stopped the indexer in the field test (#27)
    b"nan\\inf\\-inf", b"1e999", b"99999999999999999999", b"\x00" * 8, b"\xff\xfe\xfd\xfc",
    b"-", b"1\\2\\3\\4\\5\\6\\7", bytes(range(256)), b"A" * 5000,
]


def corrupted(base: Dataset, keyword: str, vr: str, value: bytes) -> Dataset:
    """``base`` with ``keyword`` replaced by ``value``, written as sent (no encoding, no validation)."""
    buffer = BytesIO()
    base.save_as(buffer, enforce_file_format=True)
    ds = dcmread(BytesIO(buffer.getvalue()))  # read back: encoded as it was read, raw elements written verbatim
    tag = Tag(keyword)
    ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    return ds


def test_index_values_of_a_corrupted_header_are_kept_empty_and_named_never_raised() -> None:
    base = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=8, seed=1, instance_number=1,
                    position=(0.0, 0.0, 0.0))
    read = 0
    for keyword, vr in TARGETS:
        for value in GARBAGE:
            buffer = BytesIO()
            try:
                corrupted(base, keyword, vr, value).save_as(buffer, enforce_file_format=True)
            except (ValueError, KeyError, LookupError):  # pydicom cannot write it either (a charset it cannot name)
                continue
            ds = dcmread(BytesIO(buffer.getvalue()), stop_before_pixels=True)
            instance_fields(ds)
            series_fields(ds, [])
            read += 1
    assert read > 0.9 * len(TARGETS) * len(GARBAGE)
    buffer = BytesIO()
    corrupted(base, "ImagePositionPatient", "DS", GARBAGE[0]).save_as(buffer, enforce_file_format=True)
    fields = instance_fields(dcmread(BytesIO(buffer.getvalue())))
    assert fields.station_key is None
    assert [w.keyword for w in fields.warnings] == ["ImagePositionPatient/ImageOrientationPatient"]
    assert "could not convert string to float" in fields.warnings[0].problem


def _push(port: int, datasets: list[Dataset]) -> dict[str, int | None]:
    """C-STORE each data set on one association; the status of each (None: the SCU could not send it)."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="MYONODE")
    assert assoc.is_established
    out: dict[str, int | None] = {}
    for ds in datasets:
        if not assoc.is_established:
            assoc = ae.associate("127.0.0.1", port, ae_title="MYONODE")
            assert assoc.is_established
        try:
            status = assoc.send_c_store(ds)
            out[str(ds.SOPInstanceUID)] = int(status.Status) if status else None
        except Exception:
            out[str(ds.SOPInstanceUID)] = None  # pynetdicom itself could not encode it: never reached the node
    assoc.release()
    return out


def _found(port: int, study: str) -> set[str]:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="MYONODE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SOPInstanceUID = ""
    found = {str(i.SOPInstanceUID) for status, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
             if status is not None and status.Status == 0xFF00}
    assoc.release()
    return found


def test_mutated_instances_between_good_ones_never_stop_intake_and_nothing_acknowledged_is_lost(
        node_settings: Callable[..., Settings]) -> None:
    rng = random.Random(27)
    study, series = generate_uid(), generate_uid()
    good: list[Dataset] = []
    bad: list[Dataset] = []
    stream: list[Dataset] = []
    n = 0
    for keyword, vr in TARGETS:
        for value in GARBAGE:
            n += 1
            base = mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=8, seed=n, instance_number=n,
                            position=(0.0, float(n), 0.0))
            bad.append(corrupted(base, keyword, vr, value))
            good.append(mr_image(study_uid=study, series_uid=series, size=8, seed=n, instance_number=n,
                                 position=(0.0, rng.uniform(-100, 100), 0.0)))
            stream += [bad[-1], good[-1]]
    settings = node_settings()
    node = start_node(settings)
    try:
        statuses = _push(node.listener.port, stream)
        assert node.settle(30)
        good_uids = {str(ds.SOPInstanceUID) for ds in good}
        assert all(statuses[uid] == 0x0000 for uid in good_uids), "a good instance was refused"
        assert _found(node.listener.port, study) == good_uids
        assert node.indexer.is_alive() and node.indexer.restarts == 0
    finally:
        node.stop()

    node = start_node(settings)  # the start-up pass meets whatever the journal holds
    try:
        assert node.indexer.is_alive() and node.journal.pending() == []
        assert _found(node.listener.port, study) == good_uids
        with node.sessions() as s:
            indexed = set(s.scalars(select(m.Instance.sop_instance_uid)))
        set_aside = {dcmread(path, force=True).get("SOPInstanceUID") for path, _ in node.journal.failures()}
        for path, reason in node.journal.failures():
            assert reason.startswith("not indexable"), (path, reason)
        acked_bad = {str(ds.SOPInstanceUID) for ds in bad if statuses[str(ds.SOPInstanceUID)] == 0x0000}
        lost = acked_bad - indexed - set_aside
        assert not lost, f"{len(lost)} acknowledged instance(s) neither indexed nor set aside"
        assert len(acked_bad) > len(bad) // 2, "most mutated instances should be acknowledged (stored as sent)"
        # the instance the field test wedged the node with is indexed, its station left empty
        with node.sessions() as s:
            row = s.scalars(select(m.Instance).where(m.Instance.sop_instance_uid == str(bad[0].SOPInstanceUID))).one()
        assert row.station_key is None
    finally:
        node.stop()


def test_an_indexer_loop_that_fails_is_logged_and_started_again_and_indexes_on(
        node_settings: Callable[..., Settings], caplog) -> None:
    node = start_node(node_settings())
    try:
        node.indexer.restart_delay_s = 0.05
        real_pending = node.journal.pending
        calls = {"n": 0}

        def failing_once(limit: int | None = None) -> list:
            if threading.current_thread() is node.indexer:  # the indexer's loop, not a reader that settles
                calls["n"] += 1
                if calls["n"] == 1:
                    raise RuntimeError("a bug nobody foresaw")
            return real_pending(limit)

        node.journal.pending = failing_once  # type: ignore[method-assign]
        study = generate_uid()
        sent = [mr_image(study_uid=study, series_uid=generate_uid(), size=8, seed=i, instance_number=i + 1)
                for i in range(3)]
        statuses = _push(node.listener.port, sent)
        assert set(statuses.values()) == {0x0000}
        assert node.settle(10)
        assert node.indexer.restarts == 1 and node.indexer.is_alive()
        assert _found(node.listener.port, study) == set(statuses)
        assert "a bug nobody foresaw" in caplog.text and "starting it again" in caplog.text
    finally:
        node.stop()


def test_healthz_fails_while_an_acknowledged_instance_waits_too_long_to_be_indexed(
        node_settings: Callable[..., Settings]) -> None:
    node = start_node(node_settings(storage="journal_alert_s = 0.5\nindex_wait_s = 0"))
    try:
        health = f"http://127.0.0.1:{node.settings.web.port}/healthz"
        assert httpx.get(health).json() == {"status": "ok"}
        node.indexer.stop()  # as if it had died
        assert set(_push(node.listener.port, [mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=8)]).values()) == {0x0000}
        time.sleep(0.8)
        answer = httpx.get(health)
        assert answer.status_code == 503
        assert "has waited" in answer.json()["index"]
        metrics = httpx.get(f"http://127.0.0.1:{node.settings.web.port}/metrics").text
        age = re.search(r"^myonode_journal_oldest_pending_seconds (\S+)$", metrics, re.M)
        assert age is not None and float(age.group(1)) > 0.5
    finally:
        node.stop()


def test_a_process_that_does_not_index_keeps_no_parsed_headers(node_settings: Callable[..., Settings]) -> None:
    """`myonode web` beside serve: its receiver's parsed headers would wait forever for an indexer that never
    takes the lock — they are not kept; the process that indexes keeps them, bounded."""
    from node.intake.indexer import Indexer
    from node.intake.ingest import Ingestor, read_header
    from storage.filestore import FileStore
    from storage.journal import Journal

    node = start_node(node_settings())
    try:
        data = BytesIO()
        mr_image(study_uid=generate_uid(), series_uid=generate_uid(), size=8).save_as(data, enforce_file_format=True)
        header = read_header(data.getvalue())
        beside = Indexer(Ingestor(FileStore(node.settings.storage.root), node.sessions, []),
                         Journal(node.settings.storage.root), keep_s=0)  # never started: serve holds the lock
        beside.parsed.put("entry.dcm", header)
        assert beside.parsed.take("entry.dcm") is None
        limit = node.indexer.parsed.limit
        for i in range(limit + 10):
            node.indexer.parsed.put(f"not-in-the-journal-{i}.dcm", header)
        kept = [i for i in range(limit + 10) if node.indexer.parsed.take(f"not-in-the-journal-{i}.dcm") is not None]
        assert kept == list(range(limit))
    finally:
        node.stop()

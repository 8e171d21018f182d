"""The web console, DICOMweb and /metrics of a running node, over real HTTP (uvicorn): access rules on every
route, CSRF, secrets never shown, dicomweb-client round trips, STOW-RS completing a visit as C-STORE does."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from sqlalchemy import select

from node.service import Node
from node.web.accounts import add_user
from node.web.app import route_access
from node.work.jobs import HANDLERS
from storage import models as m
from storage.database import transaction
from tests.node.test_exams import PROTOCOL, Scanner, mark_processed, quiet, register, settle, visit_states
from tests.support.console import csrf_of, post_login
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import mr_image, write_series

PASSWORDS = {"olivia": ("operator password", m.Role.OPERATOR), "victor": ("viewer password", m.Role.VIEWER)}


def accounts(node: Node) -> None:
    with transaction(node.sessions) as s:
        for name, (password, role) in PASSWORDS.items():
            add_user(s, name=name, password=password, role=role)


def url(node: Node) -> str:
    assert node.web is not None
    return f"http://127.0.0.1:{node.web.port}"


def signed_in(node: Node, name: str) -> tuple[httpx.Client, str]:
    """A client with ``name``'s session cookie, and the session's CSRF token (read from a page, as a browser)."""
    client = httpx.Client(base_url=url(node), follow_redirects=False, timeout=30)
    r = post_login(client, name, PASSWORDS[name][0])
    assert r.status_code == 303, r.text
    return client, csrf_of(client.get("/jobs").text)


def dicomweb(node: Node, name: str = "olivia") -> DICOMwebClient:
    client = DICOMwebClient(url=f"{url(node)}/dicomweb")
    client._session.auth = (name, PASSWORDS[name][0])
    return client


def concrete(path: str) -> str:
    """A route path with its parameters filled in (numbers for ``:int``, a UID otherwise)."""
    path = re.sub(r"\{[^}:]+:int\}", "1", path)
    return re.sub(r"\{[^}]+\}", "1.2.3", path)


@pytest.fixture
def web_node(running_node: Callable[..., Node]) -> Node:
    node = running_node()
    accounts(node)
    return node


def test_every_state_changing_route_refuses_strangers_viewers_and_forged_requests(web_node: Node) -> None:
    """The routes are read from the app, so a new one cannot be forgotten: without an account → 401; a viewer
    where an operator is needed → 403; an operator's session without the CSRF token → 403."""
    assert web_node.web is not None
    routes = route_access(web_node.web.server.config.app)
    changing = [(path, method, access) for path, methods, access in routes for method in methods
                if method not in ("GET", "HEAD") and access.role is not None]
    assert len(changing) >= 7  # logout, job retry, outbox retries, patient assign, STOW ×2
    anonymous = httpx.Client(base_url=url(web_node), timeout=30)
    viewer, viewer_csrf = signed_in(web_node, "victor")
    operator, _ = signed_in(web_node, "olivia")
    for path, method, access in changing:
        target = concrete(path)
        assert anonymous.request(method, target).status_code == 401, (method, path)
        if access.role is m.Role.OPERATOR:
            r = viewer.request(method, target, data={"csrf": viewer_csrf})
            assert r.status_code == 403, (method, path, r.status_code)
        r = operator.request(method, target, data={"subject_id": "x"})
        assert r.status_code == 403 and "CSRF" in r.text, (method, path, r.status_code)
    # and every page that reads needs an account too (sent to the sign-in page)
    for path, methods, access in routes:
        if "GET" in methods and access.role is not None and not access.basic:
            r = anonymous.get(concrete(path), follow_redirects=False)
            assert r.status_code == 303 and "/login" in r.headers["location"], path
    with web_node.sessions() as s:
        actions = {e.action for e in s.scalars(select(m.AuditEvent))}
    assert {"login"} <= actions


def test_a_wrong_password_is_refused_and_audited(web_node: Node) -> None:
    client = httpx.Client(base_url=url(web_node), timeout=30)
    r = post_login(client, "olivia", "not it at all")
    assert r.status_code == 401 and "wrong account name or password" in r.text
    assert client.get("/", follow_redirects=False).status_code == 303
    with web_node.sessions() as s:
        assert [e.actor for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.action == "login refused"))] \
            == ["olivia"]


def test_the_console_never_shows_a_secret(running_node: Callable[..., Node]) -> None:
    node = running_node(web="session_secret = \"sEcReT-sEsSiOn-KeY-123\"\n",
                        forward='[[forward.destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
                                'port = 1\n')
    accounts(node)
    client, _ = signed_in(node, "olivia")
    page = client.get("/settings")
    assert page.status_code == 200 and "session_secret" in page.text
    assert "sEcReT-sEsSiOn-KeY-123" not in page.text and "***" in page.text
    # the atlas in use (the default phantom atlas here): what it is made of, and that it is synthetic
    assert 'id="atlas"' in page.text and 'id="atlas-synthetic"' in page.text and "myonode-phantom-" in page.text
    for path in ("/", "/studies", "/visits", "/jobs", "/outbox", "/patients", "/reports", "/audit"):
        assert "sEcReT-sEsSiOn-KeY-123" not in client.get(path).text, path


def test_operator_retries_a_failed_outbox_item_and_the_audit_log_says_who(web_node: Node, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", 1)
    assert dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(web_node.listener.port),
                 str(paths[0])).returncode == 0
    web_node.settle()
    with transaction(web_node.sessions) as s:
        instance = s.scalars(select(m.Instance)).one()
        s.add(m.OutboxItem(destination="pacs", instance=instance, state=m.OutboxState.FAILED, attempts=20,
                           last_error="association rejected"))
    client, csrf = signed_in(web_node, "olivia")
    r = client.post("/outbox/retry", data={"csrf": csrf})
    assert r.status_code == 303 and "1%20outbox%20item" in r.headers["location"]
    with web_node.sessions() as s:
        item = s.scalars(select(m.OutboxItem)).one()
        event = s.scalars(select(m.AuditEvent).where(m.AuditEvent.action == "outbox retry")).one()
    assert (item.state, item.attempts) == (m.OutboxState.PENDING, 0)
    assert (event.actor, event.detail) == ("olivia", "1 queued again")
    assert "outbox retry" in client.get("/audit").text


def test_dicomweb_client_searches_and_retrieves_what_c_store_brought(web_node: Node, tmp_path: Path) -> None:
    """QIDO-RS finds by the C-FIND rules, WADO-RS gives the data set back, metadata and frames too."""
    study = generate_uid()
    paths = write_series(tmp_path / "in", 3, study_uid=study)
    assert dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(web_node.listener.port),
                 *map(str, paths)).returncode == 0
    client = dicomweb(web_node, "victor")
    found = client.search_for_studies(search_filters={"PatientID": "MND-*"})
    assert [Dataset.from_json(f).StudyInstanceUID for f in found] == [study]
    assert Dataset.from_json(found[0]).NumberOfStudyRelatedInstances == 3
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
    series = client.search_for_series(study_instance_uid=study)
    series_uid = Dataset.from_json(series[0]).SeriesInstanceUID
    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series_uid)
    assert len(instances) == 3
    assert len(client.search_for_instances(study_instance_uid=study, series_instance_uid=series_uid,
                                           limit=2, offset=2)) == 1
    original = dcmread(paths[0])
    back = client.retrieve_instance(study, series_uid, original.SOPInstanceUID)
    assert back.SOPInstanceUID == original.SOPInstanceUID and back.PixelData == original.PixelData
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert len(client.retrieve_study(study)) == 3
    meta = client.retrieve_instance_metadata(study, series_uid, original.SOPInstanceUID)
    assert Dataset.from_json(meta).PatientID == original.PatientID and "BulkDataURI" in meta["7FE00010"]
    (frame,) = client.retrieve_instance_frames(study, series_uid, original.SOPInstanceUID, frame_numbers=[1])
    assert frame == original.pixel_array.tobytes()


def test_wado_rs_decodes_a_compressed_instance_for_a_client_asking_explicit_little_endian(
        web_node: Node, tmp_path: Path) -> None:
    (plain,) = write_series(tmp_path / "in", 1)
    ds = dcmread(plain)
    pixels = ds.pixel_array.copy()
    ds.compress(RLELossless, generate_instance_uid=False)
    rle = tmp_path / "rle.dcm"
    ds.save_as(rle, enforce_file_format=True)
    assert dcmtk("storescu", "-xr", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1",
                 str(web_node.listener.port), str(rle)).returncode == 0
    client = dicomweb(web_node, "victor")
    decoded = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                       media_types=(("application/dicom", ExplicitVRLittleEndian),))
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (decoded.pixel_array == pixels).all()
    stored = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                      media_types=(("application/dicom", "*"),))
    assert stored.file_meta.TransferSyntaxUID == RLELossless


def test_stow_rs_stores_through_the_journal_and_says_what_failed(web_node: Node, tmp_path: Path) -> None:
    study = generate_uid()
    datasets = [mr_image(study_uid=study, series_uid=generate_uid(), seed=i) for i in range(2)]
    response = dicomweb(web_node).store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in response
    found = dicomweb(web_node, "victor").search_for_instances(study_instance_uid=study)
    assert sorted(Dataset.from_json(f).SOPInstanceUID for f in found) == sorted(d.SOPInstanceUID for d in datasets)
    other = mr_image(study_uid=generate_uid(), series_uid=generate_uid())
    with pytest.raises(Exception, match="409"):  # the only instance is of another study than the URL's
        dicomweb(web_node).store_instances([other], study_instance_uid=study)
    with pytest.raises(Exception, match="403"):  # a viewer may not store
        dicomweb(web_node, "victor").store_instances([mr_image(study_uid=study, series_uid=generate_uid())])
    with web_node.sessions() as s:
        event = s.scalars(select(m.AuditEvent).where(m.AuditEvent.action == "stow")).first()
    assert event is not None and event.actor == "olivia" and event.detail == "2 stored, 0 failed"


def test_a_station_sent_by_stow_rs_completes_the_visit_as_c_store_would(running_node, tmp_path: Path,
                                                                         monkeypatch) -> None:
    monkeypatch.setitem(HANDLERS, "process_visit", mark_processed)
    node = quiet(running_node(protocol=PROTOCOL))
    accounts(node)
    register(node, "P001", "MND-001")
    scan = Scanner(node, tmp_path)
    scan.t2_station(0)
    scan.t2_station(1)
    scan.dwi_station(0)
    assert settle(node) == []

    class StowScanner(Scanner):
        def _push(self, datasets) -> None:  # the last station by STOW-RS instead of C-STORE
            sent = list(datasets)
            response = dicomweb(node).store_instances(sent)
            assert len(response.ReferencedSOPSequence) == len(sent)

    stow = StowScanner(node, tmp_path / "stow")
    stow.study = scan.study
    stow.dwi_station(1)
    assert len(settle(node)) == 1
    deadline = time.monotonic() + 20
    while visit_states(node) != [("baseline", "processed", False)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert visit_states(node) == [("baseline", "processed", False)]


def test_metrics_and_health_answer_without_an_account(web_node: Node, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", 2)
    assert dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(web_node.listener.port),
                 *map(str, paths)).returncode == 0
    web_node.settle()
    client = httpx.Client(base_url=url(web_node), timeout=30)
    text = client.get("/metrics").text
    assert re.search(r'^myonode_instances_received_total\{via="dimse"\} 2\.0$', text, re.M), text[:2000]
    assert re.search(r'^myonode_instances_stored 2\.0$', text, re.M)
    assert re.search(r'^myonode_store_seconds_count\{via="dimse"\} 2\.0$', text, re.M)
    for name in ("myonode_jobs{state=\"failed\"}", "myonode_outbox_items{state=\"pending\"}",
                 "myonode_disk_free_bytes", "myonode_journal_pending", "myonode_associations_active",
                 "myonode_processing_seconds_bucket"):
        assert name in text, name
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_the_study_page_says_what_the_visit_still_lacks(running_node, tmp_path: Path) -> None:
    node = quiet(running_node(protocol=PROTOCOL))
    accounts(node)
    register(node, "P001", "MND-001")
    scan = Scanner(node, tmp_path)
    scan.t2_station(0)
    scan.dwi_station(0, b_values=(0,))
    node.settle()
    with node.sessions() as s:
        study_id = s.scalars(select(m.Study.id)).one()
    client, _ = signed_in(node, "victor")
    page = client.get(f"/studies/{study_id}").text
    assert "1 more T2 station(s)" in page and "2 more DWI station(s) with both b-values" in page
    assert re.search(r"DWI station [^:]+: no high b-value", page)
    found = client.get("/studies", params={"patient": "mnd-0"}).text
    assert f"/studies/{study_id}" in found
    assert f"/studies/{study_id}" not in client.get("/studies", params={"patient": "someone else"}).text


def test_orthanc_dicomweb_and_ours_answer_the_same_searches(web_node: Node, tmp_path: Path) -> None:
    """The same files in Orthanc (with Debian's DICOMweb plugin) and in the node; the same QIDO-RS queries
    through dicomweb-client give the same studies, series and instances."""
    from node.demo.orthanc import start_orthanc

    plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    assert plugin.is_file(), "orthanc-dicomweb not installed: `make test` installs it"
    orthanc = start_orthanc(tmp_path / "orthanc", {}, config={"Plugins": [str(plugin)],
                                                               "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
    try:
        files = [*write_series(tmp_path / "a", 3), *write_series(tmp_path / "b", 2, study_uid=generate_uid())]
        for port, called in ((web_node.listener.port, "MYONODE"), (orthanc.dicom_port, orthanc.ae_title)):
            assert dcmtk("storescu", "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port),
                         *map(str, files)).returncode == 0
        ours = dicomweb(web_node, "victor")
        theirs = DICOMwebClient(url=f"http://127.0.0.1:{orthanc.http_port}/dicom-web")
        deadline = time.monotonic() + 20
        while len(theirs.search_for_instances()) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)

        def uids(results: list[dict], keyword: str) -> list[str]:
            return sorted(str(Dataset.from_json(r).get(keyword)) for r in results)

        for filters in ({}, {"PatientID": "MND-001"}, {"StudyDate": "20260101-20261231"}, {"PatientID": "OTHER"}):
            assert uids(ours.search_for_studies(search_filters=filters), "StudyInstanceUID") == \
                uids(theirs.search_for_studies(search_filters=filters), "StudyInstanceUID"), filters
        # a wildcard sent as a literal '*': dicomweb-client percent-encodes it, which Orthanc 1.10's plugin
        # does not decode (it then matches nothing); the node decodes both
        mine = httpx.get(f"{url(web_node)}/dicomweb/studies?PatientID=MND*", auth=("victor", "viewer password"))
        orthancs = httpx.get(f"http://127.0.0.1:{orthanc.http_port}/dicom-web/studies?PatientID=MND*")
        assert uids(mine.json(), "StudyInstanceUID") == uids(orthancs.json(), "StudyInstanceUID") != []
        assert uids(ours.search_for_series(), "SeriesInstanceUID") == uids(theirs.search_for_series(),
                                                                            "SeriesInstanceUID")
        assert uids(ours.search_for_instances(), "SOPInstanceUID") == uids(theirs.search_for_instances(),
                                                                            "SOPInstanceUID")
        study = str(dcmread(files[0]).StudyInstanceUID)
        a = Dataset.from_json(ours.search_for_studies(search_filters={"StudyInstanceUID": study})[0])
        b = Dataset.from_json(theirs.search_for_studies(search_filters={"StudyInstanceUID": study})[0])
        for keyword in ("PatientID", "PatientName", "StudyDate", "AccessionNumber", "NumberOfStudyRelatedSeries",
                        "NumberOfStudyRelatedInstances"):
            assert a.get(keyword) == b.get(keyword), keyword
        sop = str(dcmread(files[0]).SOPInstanceUID)
        series = str(dcmread(files[0]).SeriesInstanceUID)
        assert ours.retrieve_instance(study, series, sop).PixelData == \
            theirs.retrieve_instance(study, series, sop).PixelData
    finally:
        orthanc.stop()

"""The attacks of #27 on DICOMweb and the DICOM port, each written as the attack: a wildcard that backtracked, a
deflate bomb, a truncated instance, an oversized upload, a forged Host header, malformed queries and paths."""

from __future__ import annotations

import struct
import threading
import zlib
from io import BytesIO
from pathlib import Path

import httpx
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy import select

from node.demo.ports import free_port
from node.service import Node
from node.web.accounts import add_user, set_password
from node.web.dicomweb import multipart
from storage import models as m
from storage.database import make_engine, session_factory, transaction
from tests.node.test_web import PASSWORDS, accounts, signed_in, url
from tests.support.console import post_login
from tests.support.dcmtk import dcmtk
from tests.support.serve import start_serve, write_settings

AUTH = ("olivia", PASSWORDS["olivia"][0])


def stow(base: str, parts: list[bytes], **kwargs: object) -> httpx.Response:
    body, boundary = multipart((p, "application/dicom") for p in parts)
    return httpx.post(f"{base}/dicomweb/studies", content=body, auth=AUTH, timeout=60,
                      headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
                      **kwargs)  # type: ignore[arg-type]


def deflate_bomb(inflated_mb: int) -> bytes:
    """A Deflated Explicit VR Little Endian MR instance whose pixel data is ``inflated_mb`` MB of zeros (~1000:1)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID, ds.Modality = generate_uid(), generate_uid(), "BOMB", "MR"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 1024, 512, 16, 1
    ds.NumberOfFrames = inflated_mb
    header = DicomBytesIO()
    header.is_implicit_VR, header.is_little_endian = False, True
    write_dataset(header, ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = BytesIO()
    out.write(deflater.compress(header.getvalue()))
    out.write(deflater.compress(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, inflated_mb << 20)))
    zeros = bytes(1 << 20)
    for _ in range(inflated_mb):
        out.write(deflater.compress(zeros))
    out.write(deflater.flush())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    part10 = BytesIO()
    part10.write(bytes(128) + b"DICM")
    write_file_meta_info(part10, meta)
    return part10.getvalue() + out.getvalue()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_deflate_bomb_is_refused_and_the_node_does_not_grow(tmp_path: Path) -> None:
    """522 KB that inflate to 512 MB: refused with the reason, nothing stored, serve's peak RSS grows < 100 MB."""
    port = free_port()
    settings = write_settings(tmp_path, port)
    web_port = int(settings.read_text().split("[web]\nport = ")[1].split("\n")[0])
    node = start_serve(settings, port)
    try:
        engine = make_engine(f"sqlite:///{tmp_path / 'myonode.db'}")
        with transaction(session_factory(engine)) as s:
            add_user(s, name=AUTH[0], password=AUTH[1], role=m.Role.OPERATOR)
        bomb = deflate_bomb(512)
        assert len(bomb) < 600_000
        base = f"http://127.0.0.1:{web_port}"
        before = peak_rss_mb(node.pid)
        answer = stow(base, [bomb])
        assert answer.status_code == 409, answer.text
        assert "deflate bomb" in str(answer.json())
        assert peak_rss_mb(node.pid) - before < 100, (before, peak_rss_mb(node.pid))
        with session_factory(engine)() as s:
            assert s.scalars(select(m.Instance)).all() == []
        engine.dispose()
    finally:
        node.terminate()
        assert node.wait(timeout=30) == 0


def test_a_truncated_instance_is_refused_with_its_reason_and_nothing_is_stored(running_node) -> None:
    node: Node = running_node()
    accounts(node)
    whole = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    answer = stow(url(node), [whole[:-5000]])
    assert answer.status_code == 409
    assert "truncated" in str(answer.json())
    with node.sessions() as s:
        assert s.scalars(select(m.Instance)).all() == []
    assert stow(url(node), [whole]).status_code == 200  # the whole file is taken


def test_an_upload_larger_than_max_request_bytes_is_refused_before_it_is_read(running_node) -> None:
    node: Node = running_node(web="max_request_bytes = 1048576")
    accounts(node)
    big = Path(get_testdata_file("CT_small.dcm")).read_bytes() * 40  # ~1.5 MB of parts
    answer = stow(url(node), [big])
    assert answer.status_code == 413 and "max_request_bytes" in answer.text
    chunked = httpx.post(f"{url(node)}/dicomweb/studies", auth=AUTH, timeout=60,
                         content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                         headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'})
    assert chunked.status_code == 413  # no Content-Length: counted as it streams in


def test_a_forged_host_header_changes_no_url(running_node) -> None:
    node: Node = running_node()
    accounts(node)
    body, boundary = multipart([(Path(get_testdata_file("CT_small.dcm")).read_bytes(), "application/dicom")])
    answer = httpx.post(f"{url(node)}/dicomweb/studies", content=body, auth=AUTH, timeout=60,
                        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                                 "Host": "evil.example"})
    assert answer.status_code == 200
    found = httpx.get(f"{url(node)}/dicomweb/studies", auth=AUTH, headers={"Host": "evil.example"}).json()
    urls = [answer.json()["00081199"]["Value"][0]["00081190"]["Value"][0], found[0]["00081190"]["Value"][0]]
    assert all(u.startswith(f"{url(node)}/dicomweb/studies/") for u in urls), urls


def test_malformed_queries_and_paths_get_a_4xx_never_a_500(running_node) -> None:
    node: Node = running_node()
    accounts(node)
    base = f"{url(node)}/dicomweb"
    cases = {
        "/series?SeriesNumber=' OR 1=1 --": 400, "/instances?InstanceNumber=x": 400,
        "/studies?ReferencedSOPSequence=x": 400, "/studies?includefield=60003000": 204,
        "/studies?StudyDate=last-week": 400, "/studies?PatientName=" + "x" * 2000: 400,
        "/studies?limit=-1": 400, "/studies?nonsense=1": 400, "/studies/*": 400, "/studies/%20/metadata": 400,
        "/studies/1.2.3/series/1.2.4/instances/*/frames/1": 400, "/studies/1.2.3": 404,
        "/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/x": 400,
        "/studies/1.2.3/series/1.2.4/instances/1.2.5/bulkdata/zz": 400,
    }
    got = {path: httpx.get(base + path, auth=AUTH, timeout=30).status_code for path in cases}
    assert got == cases


def test_a_wildcard_of_many_stars_answers_at_once_and_the_dicom_port_stays_responsive(running_node,
                                                                                       tmp_path: Path) -> None:
    node: Node = running_node()
    accounts(node)
    echoes: list[int] = []
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            echoes.append(dcmtk("echoscu", "-to", "5", "-aet", "ECHOSCU", "-aec", "MYONODE", "127.0.0.1",
                                str(node.listener.port)).returncode)

    pinger = threading.Thread(target=echo, daemon=True)
    pinger.start()
    try:
        for stars in (14, 18, 40):
            answer = httpx.get(f"{url(node)}/dicomweb/studies", params={"PatientName": "*" * stars + "!"},
                               auth=AUTH, timeout=10)
            assert answer.status_code == 204
    finally:
        stop.set()
        pinger.join(timeout=10)
    assert echoes and set(echoes) == {0}, echoes  # every C-ECHO meanwhile answered (within its 5 s timeout)


def test_encapsulated_pixel_data_passes_the_truncation_check_whole_and_not_cut(running_node) -> None:
    node: Node = running_node()
    accounts(node)
    whole = Path(get_testdata_file("JPEG2000.dcm")).read_bytes()
    assert stow(url(node), [whole[:-3000]]).status_code == 409
    assert stow(url(node), [whole]).status_code == 200
    node.settle()
    with node.sessions() as s:
        row = s.scalars(select(m.Instance)).one()
    assert node.store.absolute(row.file_path).read_bytes() == whole


def test_a_flood_of_wrong_basic_credentials_ends_in_429s_after_a_few_hashes(running_node) -> None:
    """256 requests with random Basic credentials, 64 at a time: a few are checked (Argon2id), the rest turned
    away with 429 and Retry-After before any hashing; /healthz answers throughout; the failures are counted."""
    node: Node = running_node()
    accounts(node)
    statuses: list[int] = []
    health: list[int] = []

    def attempt(i: int) -> None:
        statuses.append(httpx.get(f"{url(node)}/dicomweb/studies", auth=(f"user{i}", f"guess {i}"), timeout=60)
                        .status_code)

    for start in range(0, 256, 64):
        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(start, start + 64)]
        for t in threads:
            t.start()
        health.append(httpx.get(f"{url(node)}/healthz", timeout=60).status_code)
        for t in threads:
            t.join()
    assert set(health) == {200}
    assert statuses.count(429) >= 240 and set(statuses) <= {401, 429}
    assert node.web is not None
    metrics = httpx.get(f"{url(node)}/metrics").text
    assert 'myonode_sign_in_failures_total{via="basic"} 10.0' in metrics  # hashed: the first ten only
    answer = httpx.get(f"{url(node)}/dicomweb/studies", auth=("olivia", PASSWORDS["olivia"][0]))
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0  # this client waits, right or not
    with node.sessions() as s:
        refused = s.scalars(select(m.AuditEvent).where(m.AuditEvent.action == "basic sign-in refused")).all()
    assert len(refused) == 10


def test_signing_out_ends_every_session_of_the_account_and_a_new_password_does_too(running_node) -> None:
    node: Node = running_node()
    accounts(node)
    client, token = signed_in(node, "olivia")
    other, _ = signed_in(node, "olivia")  # a second browser
    old_cookie = dict(client.cookies)
    assert client.get("/audit").status_code == 200
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    stale = httpx.Client(base_url=url(node), cookies=old_cookie, follow_redirects=False)
    assert stale.get("/audit").status_code == 303  # the copied cookie of the ended session: sign in again
    assert stale.post("/outbox/1/retry", headers={"X-CSRF-Token": token}).status_code == 401
    assert other.get("/audit").status_code == 303  # the other browser's session ended too
    again, _ = signed_in(node, "olivia")
    with transaction(node.sessions) as s:
        set_password(s, name="olivia", password="a brand new password")
    assert again.get("/audit").status_code == 303


def test_sign_in_takes_only_this_consoles_own_form(running_node) -> None:
    node: Node = running_node()
    accounts(node)
    client = httpx.Client(base_url=url(node), follow_redirects=False)
    forged = client.post("/login", data={"name": "olivia", "password": PASSWORDS["olivia"][0], "next": "/"})
    assert forged.status_code == 403  # no CSRF token: a form posted from elsewhere
    elsewhere = post_login(client, "olivia", PASSWORDS["olivia"][0], headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403
    assert post_login(client, "olivia", PASSWORDS["olivia"][0]).status_code == 303


def test_every_answer_carries_the_security_headers(running_node) -> None:
    node: Node = running_node()
    accounts(node)
    client, _ = signed_in(node, "olivia")
    for path in ("/", "/login", "/studies", "/jobs", "/healthz", "/metrics", "/static/style.css", "/nowhere"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in \
            headers["content-security-policy"].split("script-src")[1].split(";")[0]
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "same-origin", path


def test_a_viewer_opening_many_requests_at_once_with_right_credentials_is_never_throttled(running_node) -> None:
    """A viewer fires its first requests in parallel: one verification, the others find it remembered."""
    node: Node = running_node()
    accounts(node)
    statuses: list[int] = []

    def ask() -> None:
        statuses.append(httpx.get(f"{url(node)}/dicomweb/studies", auth=AUTH, timeout=60).status_code)

    threads = [threading.Thread(target=ask) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [204] * 24


def test_behind_a_reverse_proxy_path_the_consoles_own_origin_is_accepted(running_node) -> None:
    node: Node = running_node(web='root_path = "/myonode"')
    accounts(node)
    client = httpx.Client(base_url=url(node), follow_redirects=False)
    answer = post_login(client, "olivia", PASSWORDS["olivia"][0], headers={"Origin": url(node)})
    assert answer.status_code == 303 and answer.headers["location"] == "/myonode/"


def test_qido_takes_uid_lists_comma_or_backslash_separated_and_uids_as_stored(running_node) -> None:
    node: Node = running_node()
    accounts(node)
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert stow(url(node), [ct]).status_code == 200
    study = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    for value in (f"{study},1.2.3", f"1.2.3\\{study}"):
        found = httpx.get(f"{url(node)}/dicomweb/studies", params={"StudyInstanceUID": value}, auth=AUTH)
        assert found.status_code == 200 and len(found.json()) == 1, value
    assert httpx.get(f"{url(node)}/dicomweb/studies/1.2.03.4/series", auth=AUTH).status_code == 204  # not 400

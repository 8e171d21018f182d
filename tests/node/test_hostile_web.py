"""The attacks of #27 on DICOMweb and the DICOM port, each written as the attack: a wildcard that backtracked, a
deflate bomb, a truncated instance, an oversized upload, a forged Host header, malformed queries and paths."""

from __future__ import annotations

import struct
import threading
import time
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
from node.web.accounts import add_user
from node.web.dicomweb import multipart
from storage import models as m
from storage.database import make_engine, session_factory, transaction
from tests.node.test_web import PASSWORDS, accounts, url
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
    echo_times: list[float] = []
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            started = time.monotonic()
            dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port))
            echo_times.append(time.monotonic() - started)

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
    assert echo_times and max(echo_times) < 1.0, echo_times


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

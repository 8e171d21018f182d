"""DICOMweb as a viewer (OHIF) uses it, over real HTTP: frames in the form the Accept header allows (a real SEG's
packed frames), 406 naming what can be had, series metadata without pixel data and kept per series, an
instance sent again by STOW-RS after C-STORE recognised as the same content, STOW-RS from a console session's
own origin — and the OHIF viewer served at /viewer behind the same sign-in, in a real browser where a series
replaced mid-scroll no longer throws."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import generate_uid
from sqlalchemy import select

from node.service import Node
from node.web.viewer import installed
from storage import models as m
from tests.node.test_web import PASSWORDS, accounts, dicomweb, signed_in, url
from tests.support.browser import FIRST_IMAGE_SHOWN, chromium, console_messages, sign_in
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import write_series
from tests.support.waiting import wait_for

OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture
def web_node(running_node: Callable[..., Node]) -> Node:
    node = running_node()
    accounts(node)
    return node


def real(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom's test file {name} is missing"
    return Path(path)


def push(node: Node, *paths: Path) -> None:
    out = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                *map(str, paths))
    assert out.returncode == 0, out.stdout
    node.settle()


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related answer."""
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    out = []
    for chunk in response.content.split(b"--" + boundary.encode())[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        content_type = next(line.split(":", 1)[1].strip() for line in head.decode().split("\r\n")
                            if line.lower().startswith("content-type:"))
        out.append((content_type, body[:-2]))
    return out


def instance_url(ds: Dataset) -> str:
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_a_real_segmentations_frames_come_packed_and_an_impossible_accept_is_406(web_node: Node) -> None:
    seg = dcmread(real("liver_1frame.dcm"))
    assert dicomweb(web_node).store_instances([seg]).get("FailedSOPSequence") is None  # storescu proposes no SEG
    web_node.settle()
    auth = ("victor", PASSWORDS["victor"][0])
    frames = httpx.get(f"{url(web_node)}{instance_url(seg)}/frames/1", auth=auth, headers={"Accept": OHIF_FRAMES})
    assert frames.status_code == 200, frames.text
    ((content_type, body),) = parts(frames)
    assert content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert len(body) == 512 * 512 // 8 and body == seg.PixelData  # one bit a pixel, as stored
    refused = httpx.get(f"{url(web_node)}{instance_url(seg)}/frames/1", auth=auth,
                        headers={"Accept": "multipart/related; type=image/jls"})
    assert refused.status_code == 406 and "application/octet-stream" in refused.text
    missing = httpx.get(f"{url(web_node)}{instance_url(seg)}/frames/2", auth=auth)
    assert missing.status_code == 400 and "numbered 1 to 1" in missing.text


def test_series_metadata_names_the_pixel_data_by_uri_and_is_kept_for_the_next_viewer(web_node: Node) -> None:
    mr_path = real("MR_small.dcm")
    push(web_node, mr_path)
    mr = dcmread(mr_path)
    auth = ("victor", PASSWORDS["victor"][0])
    series = f"{url(web_node)}/dicomweb/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}"
    first = httpx.get(f"{series}/metadata", auth=auth)
    assert first.status_code == 200, first.text
    (instance,) = first.json()
    assert instance["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{url(web_node)}{instance_url(mr)}/bulkdata/7FE00010"}
    assert instance["00100010"]["Value"] == [{"Alphabetic": str(mr.PatientName)}]
    kept = list((Path(web_node.settings.storage.root) / "cache" / "metadata").glob("*.json"))
    assert len(kept) == 1
    again = httpx.get(f"{series}/metadata", auth=auth)
    assert again.json() == first.json()
    pixels = httpx.get(instance["7FE00010"]["BulkDataURI"], auth=auth)
    assert parts(pixels)[0][1] == mr.PixelData


def test_an_instance_stowed_after_c_store_is_the_same_content_not_a_second_version(web_node: Node) -> None:
    mr_path = real("CT_small.dcm")
    push(web_node, mr_path)
    ds = dcmread(mr_path)
    ds.file_meta.ImplementationClassUID = "1.2.3.4.5"  # written by another application: other file meta,
    ds.file_meta.ImplementationVersionName = "OTHER_APP"  # the same data set
    response = dicomweb(web_node).store_instances([ds])
    assert response.get("FailedSOPSequence") is None
    web_node.settle()
    with web_node.sessions() as s:
        rows = s.scalars(select(m.Instance).where(m.Instance.sop_instance_uid == ds.SOPInstanceUID)).all()
    assert [(r.version, r.conflict) for r in rows] == [(1, False)]
    assert rows[0].content_sha256 is not None


def stow_body(path: Path) -> tuple[bytes, str]:
    buffer = DicomBytesIO()
    dcmread(path).save_as(buffer, enforce_file_format=True)
    return (b"--b1\r\nContent-Type: application/dicom\r\n\r\n" + buffer.getvalue() + b"\r\n--b1--\r\n",
            'multipart/related; type="application/dicom"; boundary=b1')


def test_a_console_session_stows_from_its_own_origin_but_not_from_another_site(web_node: Node) -> None:
    client, _ = signed_in(web_node, "olivia")
    body, content_type = stow_body(real("MR_small.dcm"))
    foreign = client.post("/dicomweb/studies", content=body,
                          headers={"Content-Type": content_type, "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    no_origin = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    assert no_origin.status_code == 403 and "CSRF" in no_origin.text  # without Origin, the token is needed
    own = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type, "Origin": url(web_node)})
    assert own.status_code == 200, own.text
    viewer_client, _ = signed_in(web_node, "victor")
    refused = viewer_client.post("/dicomweb/studies", content=body,
                                 headers={"Content-Type": content_type, "Origin": url(web_node)})
    assert refused.status_code == 403 and "operator" in refused.text


def test_the_viewer_is_served_behind_the_sign_in_with_myonodes_dicomweb_as_its_only_source(web_node: Node) -> None:
    assert installed(), "the OHIF viewer is not installed: `make viewer` (part of `make install`) installs it"
    anonymous = httpx.get(f"{url(web_node)}/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]
    client, _ = signed_in(web_node, "victor")
    page = client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert page.status_code == 200
    assert 'window.PUBLIC_URL="/viewer/"' in page.text and 'src="/viewer/app-config.js"' in page.text
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert "sha256-" in page.headers["content-security-policy"]  # the page's inline scripts, by hash
    config = client.get("/viewer/app-config.js").text
    assert 'const ROOT = "/dicomweb"' in config and "cloudfront" not in config
    assert '"dicomUploadEnabled": false' in config  # a viewer account cannot upload
    operator, _ = signed_in(web_node, "olivia")
    assert '"dicomUploadEnabled": true' in operator.get("/viewer/app-config.js").text
    bundle = next(p.name for p in (Path(__file__).parents[2] / "node/web/ohif/dist").glob("app.bundle.*.js"))
    script = client.get(f"/viewer/{bundle}")
    assert script.status_code == 200 and b'__webpack_require__.p = "/viewer/";' in script.content
    assert client.get("/viewer/no-such-file.js").status_code == 404


# In OHIF's page: the stack viewport is sent to an image that is not cached (so it moves there from its 40 ms
# timer), then another series is shown in it at once, which tears that viewport down; whatever the page throws
# in the next half second is answered.
SCROLL_THEN_SWITCH = """
const done = arguments[arguments.length - 1];
const other = arguments[0];
const thrown = [];
window.addEventListener('error', e => thrown.push(String(e.message)));
window.addEventListener('unhandledrejection', e => thrown.push(String(e.reason)));
const cs = window.cornerstone;
const viewport = cs.getRenderingEngines()[0].getViewports().find(v => v.getImageIds && v.getImageIds().length > 1);
const ids = viewport.getImageIds();
const target = ids.length - 1;
if (cs.cache.getImageLoadObject(ids[target])) cs.cache.removeImageLoadObject(ids[target], {force: true});
viewport.scroll(target - viewport.getCurrentImageIdIndex());
const pending = !cs.cache.isLoaded(ids[target]) && viewport.getCurrentImageIdIndex() !== target;
const ds = window.services.displaySetService.getActiveDisplaySets().find(d => d.SeriesInstanceUID === other);
window.commandsManager.runCommand('setDisplaySetsForViewports',
  {viewportsToUpdate: [{viewportId: viewport.id, displaySetInstanceUIDs: [ds.displaySetInstanceUID]}]});
setTimeout(() => done({pending, thrown, disabled: viewport.isDisabled}), 500);
"""


def test_a_stack_viewport_torn_down_while_it_moves_to_an_uncached_image_throws_nothing(
        web_node: Node, tmp_path: Path) -> None:
    """A series replaced in its viewport within 40 ms of a scroll to an image not yet loaded: the scroll's timer
    finds its viewport gone and does nothing (cornerstonejs/cornerstone3D#2884, mended by deploy/ohif/patch.py);
    OHIF's error boundary stays down and the other series is shown."""
    assert installed(), "the OHIF viewer is not installed: `make viewer` (part of `make install`) installs it"
    study, first, other = generate_uid(), generate_uid(), generate_uid()
    push(web_node, *write_series(tmp_path / "first", 12, study_uid=study, series_uid=first, size=64),
         *write_series(tmp_path / "second", 12, study_uid=study, series_uid=other, description="WB T2 TSE station 2",
                       size=64))
    driver = chromium(tmp_path / "profile", webgl=True)
    try:
        sign_in(driver, url(web_node), "olivia", PASSWORDS["olivia"][0])
        driver.get(f"{url(web_node)}/viewer/viewer?StudyInstanceUIDs={study}&initialSeriesInstanceUID={first}")
        wait_for(lambda: bool(driver.execute_script(FIRST_IMAGE_SHOWN)), 180, "OHIF's first image on screen")
        driver.set_script_timeout(30)
        outcome = driver.execute_async_script(SCROLL_THEN_SWITCH, other)
        assert outcome["pending"] and outcome["disabled"], outcome  # the timer was armed; its viewport is gone
        assert outcome["thrown"] == [], outcome["thrown"]
        seen = console_messages(driver)
        assert not any("Error Boundary" in line or "stack viewport has been destroyed" in line for line in seen), seen
        wait_for(lambda: bool(driver.execute_script(FIRST_IMAGE_SHOWN)), 60, "the other series on screen")
    finally:
        driver.quit()

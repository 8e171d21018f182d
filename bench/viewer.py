"""What a viewer waits for: WADO-RS series metadata (myonode cold, myonode kept, Orthanc's DICOMweb plugin on the
same files, side by side) and the OHIF viewer's own "study to first image" time on myonode (kept and cold).

One small phantom visit is pushed by storescu to a node (demo settings) and to Orthanc, the node processes it
(stitched T2, SEG, SR, ADC map), then for every series of the study: GET …/series/{uid}/metadata from each, and
OHIF (npm @ohif/app at /viewer, headless Chromium on SwiftShader) opens the study — from myonode (metadata
kept and cold) and, the same build and configuration, from Orthanc's DICOMweb through a pass-through in this
script; OHIF logs its own ``studyToFirstImage``. Prints JSON. Usage: ``python bench/viewer.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support

from node.demo.orthanc import start_orthanc
from node.demo.ports import free_port
from node.demo.scenario import prepare_demo_folder, push_visit
from node.service import start_node
from node.web.accounts import add_user
from node.web.viewer import OHIF_DIST, app_config, index_page, moved
from phantom.cohort_files import write_cohort
from stats.importer import import_subjects
from storage import models as m
from storage.database import transaction
from tests.support.browser import chromium, console_messages, sign_in

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def series_seconds(client: httpx.Client, root: str, study: str, series: list[str]) -> float:
    start = time.perf_counter()
    for uid in series:
        r = client.get(f"{root}/studies/{study}/series/{uid}/metadata")
        r.raise_for_status()
    return time.perf_counter() - start


def first_image_ms(driver, base: str, study: str) -> float | None:  # type: ignore[no-untyped-def]
    console_messages(driver)
    driver.get(f"{base}/viewer/viewer?StudyInstanceUIDs={study}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in console_messages(driver):
            if "studyToFirstImage:" in line:
                return float(line.split("studyToFirstImage:")[1].split()[0].strip('"'))
        time.sleep(0.5)
    return None


def orthanc_viewer(orthanc_http: int) -> tuple[Any, int]:
    """The same OHIF build and configuration as myonode serves (node.web.viewer), with its /dicomweb passed on to
    Orthanc's DICOMweb plugin: OHIF on the peer, for the same study, in the same run. Returns (server, port)."""
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{orthanc_http}/dicom-web", timeout=120)

    async def config(request: Request) -> Response:
        return Response(app_config(root_path="", may_store=False), media_type="text/javascript")

    async def files(request: Request) -> Response:
        name = request.path_params["path"]
        target = OHIF_DIST / name
        if name and target.is_file():
            body = moved(name, "")
            return Response(body, media_type="text/javascript" if name.endswith(".js") else "text/css") \
                if body is not None else FileResponse(target)
        return Response(index_page("")[0], media_type="text/html")

    async def dicomweb(request: Request) -> Response:
        answer = await client.get(f"/{request.path_params['path']}", params=request.query_params,
                                  headers={"accept": request.headers.get("accept", "*/*")})
        return Response(answer.content, status_code=answer.status_code,
                        media_type=answer.headers.get("content-type"))

    app = Starlette(routes=[Route("/viewer/app-config.js", config), Route("/viewer/{path:path}", files),
                            Route("/dicomweb/{path:path}", dicomweb)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="myonode-bench-viewer-"))
    port = free_port()
    settings = prepare_demo_folder(work / "node", port=port, stable_age_s=2)
    cohort = write_cohort(work / "phantom", patients=1, controls=0, seed=3, size="small")
    visit = next(v for v in cohort.visits if v.visit == "baseline")
    orthanc = start_orthanc(work / "orthanc", {}, config={"Plugins": [PLUGIN],
                                                           "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
    node = start_node(settings)
    out: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds}
    try:
        with transaction(node.sessions) as s:
            import_subjects(s, cohort.subjects_csv)
            add_user(s, name="bench", password="bench password long", role=m.Role.VIEWER)
        push_visit(visit.dicom_dir, settings.node.ae_title, port)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            node.settle()
            with node.sessions() as s:
                states = s.scalars(select(m.Visit.state).where(m.Visit.id.in_(select(m.Study.visit_fk)))).all()
            if states and all(st is m.VisitState.PROCESSED for st in states):
                break
            time.sleep(2)
        with node.sessions() as s:
            study = s.scalars(select(m.Study.study_instance_uid)).one()
            series = list(s.scalars(select(m.Series.series_instance_uid)))
            n_instances = len(list(s.scalars(select(m.Instance.id))))
        theirs = httpx.Client(timeout=120)
        for path in sorted((Path(settings.storage.root) / "dicom").rglob("*.dcm")):  # the node's whole study
            theirs.post(f"http://127.0.0.1:{orthanc.http_port}/instances", content=path.read_bytes()).raise_for_status()
        base = f"http://127.0.0.1:{node.web.port}"  # type: ignore[union-attr]
        ours = httpx.Client(auth=("bench", "bench password long"), timeout=120)
        cache = Path(settings.storage.root) / "cache" / "metadata"
        cold, kept, orthanc_s = [], [], []
        for _ in range(args.rounds):
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(series_seconds(ours, f"{base}/dicomweb", study, series))
            kept.append(series_seconds(ours, f"{base}/dicomweb", study, series))
            orthanc_s.append(series_seconds(theirs, f"http://127.0.0.1:{orthanc.http_port}/dicom-web", study, series))
        out["metadata"] = {
            "series": len(series), "instances": n_instances,
            "myonode_cold_s": statistics.median(cold), "myonode_kept_s": statistics.median(kept),
            "orthanc_s": statistics.median(orthanc_s),
            "orthanc_over_myonode_kept": statistics.median(orthanc_s) / statistics.median(kept),
            "orthanc_over_myonode_cold": statistics.median(orthanc_s) / statistics.median(cold),
        }
        server, peer_port = orthanc_viewer(orthanc.http_port)
        driver = chromium(work / "chromium", webgl=True)
        try:
            sign_in(driver, base, "bench", "bench password long")
            warm_ms, cold_ms, peer_ms = [], [], []
            for _ in range(args.rounds):
                warm_ms.append(first_image_ms(driver, base, study))
                shutil.rmtree(cache, ignore_errors=True)
                cold_ms.append(first_image_ms(driver, base, study))
                peer_ms.append(first_image_ms(driver, f"http://127.0.0.1:{peer_port}", study))

            def median(values: list[float | None]) -> float:
                return statistics.median([x for x in values if x is not None] or [float("nan")])

            out["ohif_study_to_first_image_ms"] = {
                "myonode_kept": median(warm_ms), "myonode_cold": median(cold_ms), "orthanc": median(peer_ms),
                "orthanc_over_myonode_kept": median(peer_ms) / median(warm_ms),
                "all_myonode_kept": warm_ms, "all_myonode_cold": cold_ms, "all_orthanc": peer_ms}
        finally:
            driver.quit()
            server.should_exit = True
    finally:
        node.stop()
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

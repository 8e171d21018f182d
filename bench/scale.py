"""A year of a busy site: how C-FIND, QIDO-RS, the console and `myonode status` answer as the index grows.

For N visits (6, 60, 600; 6,000 with --big) an index is built through the project's own models
(tests/support/index_builder.py: 18 series and ~1,100 instance rows a visit, three visits a patient,
one patient in twenty named DOE), on SQLite and on the PostgreSQL server here, and one `myonode serve`
answers on it. Timed, median of --repeat (ms): C-FIND inside one open association (STUDY by
PatientID, STUDY by PatientName DOE*, IMAGE of one series), QIDO-RS (studies?limit=25,
series?StudyInstanceUID=), the console's dashboard and /metrics, `myonode status` as a command
(Python start-up included), WADO-RS metadata of one series (50 files) and a visit's review page (72
measurements); serve's RSS idle and at peak, and its CPU while idle.
Prints JSON, one object per (backend, visits), and the growth from the second size to the largest.

    python bench/scale.py [--visits 6 60 600] [--big] [--backends sqlite postgresql] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support.index_builder: the same builder the query-plan tests use

import httpx  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # noqa: E402
from sqlalchemy import text  # noqa: E402

from node.demo.ports import free_port  # noqa: E402
from node.web.accounts import add_user  # noqa: E402
from storage import models as m  # noqa: E402
from storage.database import make_engine, refresh_statistics, session_factory, transaction  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.support.console import post_login, wait_for_web  # noqa: E402
from tests.support.index_builder import build_index, query  # noqa: E402

MYONODE = str(Path(sys.executable).parent / "myonode")
POSTGRES = os.environ.get("MYONODE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ACCOUNT = ("bench", "a bench password")


def median_ms(action: Callable[[], object], repeat: int) -> float:
    action()  # warm: caches, the verified credential, the plan
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def proc_status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database(backend: str, folder: Path, visits: int) -> tuple[str, Callable[[], None]]:
    if backend == "sqlite":
        return f"sqlite:///{folder / 'index.db'}", lambda: None
    schema = f"bench_scale_{visits}_{os.getpid()}"
    admin = make_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in POSTGRES else "?"
    return f"{POSTGRES}{sep}options=-csearch_path%3D{schema}", drop


def measure(backend: str, visits: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="myonode-scale-") as tmp:
        folder = Path(tmp)
        url, drop = database(backend, folder, visits)
        try:
            engine = make_engine(url)
            upgrade(engine)
            started = time.perf_counter()
            facts = build_index(engine, visits, store=folder / "store")
            build_s = time.perf_counter() - started
            refresh_statistics(engine)
            with transaction(session_factory(engine)) as s:
                add_user(s, name=ACCOUNT[0], password=ACCOUNT[1], role=m.Role.OPERATOR)
            engine.dispose()
            return {"backend": backend, "visits": visits, "instances": facts["instances"],
                    "build_s": round(build_s, 1), **serve_and_time(folder, url, facts, repeat)}
        finally:
            drop()


def serve_and_time(folder: Path, url: str, facts: dict, repeat: int) -> dict[str, object]:
    port, web_port = free_port(), free_port()
    settings = folder / "settings.toml"
    settings.write_text(f'[node]\nport = {port}\nallowed_calling_ae_titles = []\n'
                        f'[storage]\nroot = "store"\ndatabase_url = "{url}"\n'
                        f'[queue]\nurl = "sqlite:///queue.db"\n[web]\nport = {web_port}\n')
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 - closed below
    serve = subprocess.Popen([MYONODE, "serve", "--config", str(settings)], stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{web_port}"
        wait_for_web(base, serve, folder / "serve.log", 120)
        time.sleep(3)  # start-up work done
        idle_rss = proc_status(serve.pid, "VmRSS")
        cpu0, t0 = cpu_seconds(serve.pid), time.monotonic()
        time.sleep(10)
        idle_cpu = (cpu_seconds(serve.pid) - cpu0) / (time.monotonic() - t0) * 100
        out: dict[str, object] = {"idle_rss_mb": round(idle_rss), "idle_cpu_percent": round(idle_cpu, 2)}

        ae = AE(ae_title="BENCH")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", port, ae_title="MYONODE")
        assert assoc.is_established
        # the SCU side too: without it each request waits for the node's delayed ACK (~40 ms), as findscu's does
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def c_find(asked: Dataset) -> Callable[[], int]:
            def run() -> int:
                answers = [i for status, i in assoc.send_c_find(asked, StudyRootQueryRetrieveInformationModelFind)
                           if status is not None and status.Status in (0xFF00, 0xFF01)]
                return len(answers)
            return run

        finds = {
            "cfind_study_patient_id": query("STUDY", PatientID=facts["patient_id"], StudyInstanceUID=""),
            "cfind_study_name_doe": query("STUDY", PatientName="DOE*", StudyInstanceUID="",
                                               NumberOfStudyRelatedInstances=""),
            "cfind_image_one_series": query("IMAGE", StudyInstanceUID=facts["study_uid"],
                                                 SeriesInstanceUID=facts["series_uid"], SOPInstanceUID=""),
        }
        for name, asked in finds.items():
            out[f"{name}_ms"] = median_ms(c_find(asked), repeat)
        out["cfind_study_name_doe_hits"] = c_find(finds["cfind_study_name_doe"])()
        assoc.release()

        client = httpx.Client(base_url=base, auth=ACCOUNT, timeout=120)
        gets = {"qido_studies_limit25": "/dicomweb/studies?limit=25",
                "qido_series_of_study": f"/dicomweb/studies/{facts['study_uid']}/series", "metrics": "/metrics",
                "wado_metadata_one_series": f"/dicomweb/studies/{facts['study_uid']}/series/{facts['series_uid']}"
                                            "/metadata"}
        for name, path in gets.items():
            out[f"{name}_ms"] = median_ms(lambda path=path: client.get(path).raise_for_status(), repeat)
        console = httpx.Client(base_url=base, timeout=120)
        post_login(console, *ACCOUNT)
        out["dashboard_ms"] = median_ms(lambda: console.get("/").raise_for_status(), repeat)
        out["visit_review_page_ms"] = median_ms(lambda: console.get(f"/visits/{facts['visit_id']}").raise_for_status(),
                                                repeat)
        out["myonode_status_ms"] = median_ms(
            lambda: subprocess.run([MYONODE, "status", "--config", str(settings)], capture_output=True, check=True),
            max(1, repeat // 2))
        out["peak_rss_mb"] = round(proc_status(serve.pid, "VmHWM"))
        return out
    finally:
        serve.terminate()
        serve.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, nargs="+", default=[6, 60, 600])
    parser.add_argument("--big", action="store_true", help="also 6,000 visits (6.6 million instance rows)")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [*args.visits, *([6000] if args.big else [])]
    results = [measure(backend, n, args.repeat) for backend in args.backends for n in sizes]
    growth = {}
    for backend in args.backends:
        rows = [r for r in results if r["backend"] == backend]
        if len(rows) >= 2:
            a, b = rows[-2], rows[-1]
            growth[backend] = {k: round(float(b[k]) / float(a[k]), 2) for k in b  # type: ignore[arg-type]
                               if k.endswith("_ms") and float(a[k]) > 0}  # type: ignore[arg-type]
    print(json.dumps({"bench": "scale", "date": time.strftime("%Y-%m-%d"), "results": results,
                      "growth_last_two_sizes": growth}, indent=1))


if __name__ == "__main__":
    main()

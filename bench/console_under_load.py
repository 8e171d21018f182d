"""Does the node stay responsive while it processes a visit? Console pages and C-ECHO, timed meanwhile.

One phantom baseline visit (small, or full size with --full) is pushed with dcmtk `storescu` to a real
`myonode serve`, and while the node decides the exam is complete and processes it, one client keeps
asking for console pages (dashboard, studies, jobs, the visit) and another opens an association for a
C-ECHO, each as fast as answers come. Two queue set-ups in the same run: the shipped one (processing
in worker processes: `[queue] workers = 0, processes = 2`) and processing in threads of serve
(`workers = 2, processes = 0`), whose GIL the listener, the indexer and the console share (#27).
Prints JSON: per set-up, page and C-ECHO latency (p50, p95, max, ms), failed requests, processing time.

    python bench/console_under_load.py [--full]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import Verification  # noqa: E402
from sqlalchemy import select  # noqa: E402

from node.demo.ports import free_port  # noqa: E402
from node.demo.scenario import prepare_demo_folder, push_visit  # noqa: E402
from node.web.accounts import add_user  # noqa: E402
from phantom.cohort_files import write_cohort  # noqa: E402
from stats.importer import import_subjects  # noqa: E402
from storage import models as m  # noqa: E402
from storage.database import make_engine, session_factory, transaction  # noqa: E402
from tests.support.console import post_login, wait_for_web  # noqa: E402

MYONODE = str(Path(sys.executable).parent / "myonode")
SETUPS = {"worker_processes_shipped": "workers = 0\nprocesses = 2", "threads_in_serve": "workers = 2\nprocesses = 0"}
ACCOUNT = ("bench", "a bench password")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max_ms": round(ordered[-1], 1)}


def run_setup(name: str, queue: str, visit_dir: Path, subjects_csv: Path, full: bool, folder: Path) -> dict:
    port, web_port = free_port(), free_port()
    settings = prepare_demo_folder(folder, port=port, stable_age_s=2, small=not full, web_port=web_port)
    path = folder / "settings.toml"
    path.write_text(path.read_text().replace("workers = 0\nprocesses = 2", queue))
    engine = make_engine(settings.storage.database_url)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        add_user(s, name=ACCOUNT[0], password=ACCOUNT[1], role=m.Role.VIEWER)
        import_subjects(s, subjects_csv)
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 - closed below
    serve = subprocess.Popen([MYONODE, "serve", "--config", str(path)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{web_port}"
    pages: list[float] = []
    echoes: list[float] = []
    failures: dict[str, int] = {"page": 0, "echo": 0}
    stop = threading.Event()
    try:
        wait_for_web(base, serve, folder / "serve.log", 60)
        console = httpx.Client(base_url=base, timeout=60)
        post_login(console, *ACCOUNT)
        visit_page: list[str] = []

        def browse() -> None:
            i = 0
            while not stop.is_set():
                paths = ["/", "/studies", "/jobs", *visit_page]
                started = time.perf_counter()
                try:
                    console.get(paths[i % len(paths)]).raise_for_status()
                    pages.append((time.perf_counter() - started) * 1000)
                except httpx.HTTPError:
                    failures["page"] += 1
                i += 1

        def echo() -> None:
            ae = AE(ae_title="ECHOSCU")
            ae.add_requested_context(Verification)
            while not stop.is_set():
                started = time.perf_counter()
                assoc = ae.associate("127.0.0.1", port, ae_title="MYONODE")
                ok = assoc.is_established and assoc.send_c_echo() is not None
                if assoc.is_established:
                    assoc.release()
                if ok:
                    echoes.append((time.perf_counter() - started) * 1000)
                else:
                    failures["echo"] += 1
                time.sleep(0.05)

        threads = [threading.Thread(target=browse, daemon=True), threading.Thread(target=echo, daemon=True)]
        for t in threads:
            t.start()
        pushed = time.monotonic()
        push_visit(visit_dir, "MYONODE", port)
        state = None
        while time.monotonic() - pushed < 3600:
            with sessions() as s:
                visit = s.scalars(select(m.Visit).where(m.Visit.id.in_(select(m.Study.visit_fk)))).first()
                state = visit.state if visit is not None else None
                if visit is not None and not visit_page:
                    visit_page.append(f"/visits/{visit.id}")
            if state in (m.VisitState.PROCESSED, m.VisitState.FAILED):
                break
            time.sleep(0.5)
        seconds = time.monotonic() - pushed
        stop.set()
        for t in threads:
            t.join(timeout=60)
        return {"setup": name, "queue": queue.replace("\n", ", "), "visit": str(state.value if state else None),
                "push_to_processed_s": round(seconds, 1), "console_pages": percentiles(pages),
                "c_echo_with_association": percentiles(echoes), "failed_requests": failures}
    finally:
        stop.set()
        serve.terminate()
        serve.wait(timeout=60)
        log.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="a full-size visit (minutes of processing)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="myonode-load-") as tmp:
        folder = Path(tmp)
        cohort = write_cohort(folder / "phantom", patients=1, controls=0, seed=3, size="full" if args.full else "small")
        visit = next(v for v in cohort.visits if v.visit == "baseline")
        results = [run_setup(name, queue, visit.dicom_dir, cohort.subjects_csv, args.full, folder / name)
                   for name, queue in SETUPS.items()]
    print(json.dumps({"bench": "console_under_load", "date": time.strftime("%Y-%m-%d"),
                      "size": "full" if args.full else "small", "results": results}, indent=1))


if __name__ == "__main__":
    main()

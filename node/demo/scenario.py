"""`myonode demo`: the whole story on the embedded default, in a throw-away folder ``var/demo``.

1. a fresh folder with demo settings and an upgraded SQLite database; the default atlas;
2. the node on loopback (embedded SQLite queue, in-process workers) and an Orthanc on
   loopback as the PACS (Debian package ``orthanc``; without it the demo says so and
   forwards nowhere);
3. a small phantom cohort, every visit pushed with dcmtk ``storescu`` as the scanner would,
   visit by visit; the clinical and electrophysiology spreadsheets imported;
4. progress until every visit is processed and every result forwarded, then the report;
5. where the report is, a short summary, a ``findscu`` line that finds the results; both
   servers stopped.

What it prints is what ran; any failure ends it with a message and a non-zero exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.demo.fallback_atlas import with_default_atlas
from node.demo.ports import free_port
from node.settings import Settings, load_settings
from node.work.jobs import PROCESS_VISIT, visit_of_target
from storage import models as m
from storage.database import make_engine
from storage.filestore import FileStore
from storage.migrate import upgrade

if TYPE_CHECKING:
    from node.service import Node
    from phantom.cohort_files import CohortVisit
    from phantom.geometry import Size

DEMO_SETTINGS = """\
# Settings of the demo (written by `myonode demo`); relative paths are relative to this folder.
[node]
ae_title = "MYONODE"
bind_host = "127.0.0.1"
port = {port}

[storage]
root = "store"
database_url = "sqlite:///myonode.db"

[queue]
backend = "sqlite"
url = "sqlite:///queue.db"
# processing in two worker processes, the listener alone in the node: both cores busy, pushes never starved
workers = 0
processes = 2

[protocol]
stable_age_s = {stable_age}

[quant]
qc_dir = "qc"
{quant}
[report]
out = "reports"

[web]
port = {web_port}
{peers}"""

# The small phantom is drawn on a 4 mm truth grid: a finer subject label grid would add time, not accuracy; its
# hands are a few voxels, and 100 iterations of their 1 mm regional registration give what 300 give (one small
# visit, 2026-12-06: hand Dice 0.50–0.79 either way, refinement 4.0 s instead of 8.7 s).
SMALL_QUANT = "label_mm = 4.0\nregion_iterations = 100\n"

PEER = """
[[{section}]]
name = "orthanc"
ae_title = "{ae}"
host = "127.0.0.1"
port = {port}
"""


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why."""


def prepare_demo_folder(folder: Path, port: int = 11112, *, fresh: bool = True, stable_age_s: int = 8,
                        small: bool = True, pacs: tuple[str, int] | None = None,
                        web_port: int | None = None) -> Settings:
    """Create ``folder`` with demo settings and an upgraded SQLite database; returns the loaded settings, measuring
    with the default phantom atlas (built once)."""
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peers = ""
    if pacs is not None:
        peers = "".join(PEER.format(section=section, ae=pacs[0], port=pacs[1])
                        for section in ("forward.destinations", "qr.move_destinations"))
    path = folder / "settings.toml"
    path.write_text(DEMO_SETTINGS.format(port=port, stable_age=stable_age_s, quant=SMALL_QUANT if small else "",
                                         peers=peers, web_port=web_port or free_port()), encoding="utf-8")
    settings = load_settings(path, environ={})
    upgrade(make_engine(settings.storage.database_url))
    FileStore(settings.storage.root).dicom_root.mkdir(parents=True, exist_ok=True)
    return with_default_atlas(settings)


@dataclass(kw_only=True)
class DemoSummary:
    visits: int
    processed: int
    failed: int
    forwarded: int
    report: Path | None
    seconds_per_visit: list[float]


def push_visit(folder: Path, ae_title: str, port: int) -> None:
    # (one call of dcmtk storescu per visit: it scans the folder and sends it on one association)
    """dcmtk storescu sends one visit's folder like the scanner (Nagle off, as a scanner's stack has it)."""
    cmd = ["storescu", "-aet", "PHILIPS_WB", "-aec", ae_title, "+sd", "+r", "-nh", "127.0.0.1", str(port), str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, timeout=600, check=False)
    if proc.returncode != 0:
        raise DemoError(f"storescu failed for {folder}: {proc.stderr.strip()[-500:]}")


@dataclass(frozen=True, kw_only=True)
class FinishedVisit:
    """A visit whose processing job ended (done, or failed for good), as the demo reports it."""

    job_id: int
    label: str  # "PH0001 baseline"
    state: m.JobState
    seconds: float | None
    measurements: int
    error: str | None


def finished_visits(s: Session) -> list[FinishedVisit]:
    """Every visit processing job that has ended, oldest first."""
    jobs = s.scalars(select(m.Job).where(m.Job.kind == PROCESS_VISIT,
                                         m.Job.state.in_((m.JobState.DONE, m.JobState.FAILED)))
                     .order_by(m.Job.finished_at, m.Job.id)).all()
    out = []
    for job in jobs:
        visit_id = visit_of_target(job.target)
        visit = s.get(m.Visit, visit_id) if visit_id is not None else None
        label = f"{visit.subject.subject_id} {visit.label}" if visit is not None else f"job {job.id} ({job.target})"
        count = s.scalar(select(func.count()).select_from(m.Measurement)
                         .where(m.Measurement.visit_fk == visit.id)) if visit is not None else 0
        seconds = ((job.finished_at - job.started_at).total_seconds()
                   if job.finished_at and job.started_at else None)
        out.append(FinishedVisit(job_id=job.id, label=label, state=job.state, seconds=seconds,
                                 measurements=count or 0, error=job.last_error))
    return out


def describe(visit: FinishedVisit, done: int, total: int) -> str:
    """One readable line for a finished visit (what the demo prints when it is not on a terminal)."""
    took = f" in {visit.seconds:.0f} s" if visit.seconds is not None else ""
    if visit.state is m.JobState.DONE:
        return f"processed {visit.label}{took}: {visit.measurements} measurements ({done} of {total} visits done)"
    return f"FAILED {visit.label}{took}: {visit.error} ({done} of {total} visits done)"


class _Lines:
    """Progress as plain lines (a log, CI, a pipe): one per pushed and per processed visit, and the outbox."""

    def __init__(self, console: Console) -> None:
        self.console, self.seen, self.forwarded = console, 0, (-1, -1)

    def pushed(self, i: int, total: int, label: str, seconds: float) -> None:
        self.console.print(f"pushed {i}/{total}: {label} in {seconds:.1f} s", highlight=False)

    def update(self, state: dict[str, tuple[int, int]], finished: list[FinishedVisit]) -> None:
        done, total = state["processed"]
        for visit in finished[self.seen:]:
            self.console.print(describe(visit, done, total), highlight=False)
        self.seen = len(finished)
        sent, queued = state["forwarded"]
        if queued and sent == queued and state["forwarded"] != self.forwarded:  # a line each time it catches up
            self.forwarded = state["forwarded"]
            self.console.print(f"forwarded to the PACS: all {sent} result objects so far", highlight=False)

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Bars:
    """Progress as bars on a terminal."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Bars:
        self.progress.__enter__()
        self.tasks = {name: self.progress.add_task(name, total=None) for name in ("pushed", "processed", "forwarded")}
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def pushed(self, i: int, total: int, label: str, seconds: float) -> None:
        self.progress.update(self.tasks["pushed"], completed=i, total=total)

    def update(self, state: dict[str, tuple[int, int]], finished: list[FinishedVisit]) -> None:
        for name, (n, total) in state.items():
            self.progress.update(self.tasks[name], completed=n, total=max(total, 1))


def _wait(shown: _Lines | _Bars, poll: Callable[[], tuple[dict[str, tuple[int, int]], list[FinishedVisit]]],
          done: Callable[[dict[str, tuple[int, int]]], bool], timeout_s: float) -> dict[str, tuple[int, int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        state, finished = poll()
        shown.update(state, finished)
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting: {state}")
        time.sleep(1.0)


def run_demo(folder: Path, console: Console, size: Size = "small", patients: int = 6, controls: int = 4) -> DemoSummary:
    """Run the demo (see the module docstring)."""
    from node.demo.orthanc import start_orthanc
    from node.service import start_node
    from node.work.reports import run_report
    from phantom.cohort_files import write_cohort
    from stats.importer import import_observations, import_subjects
    from storage.database import transaction

    if shutil.which("storescu") is None:
        raise DemoError("dcmtk is not installed (Debian package dcmtk): the demo pushes images with storescu")
    port = free_port()
    if folder.exists():
        shutil.rmtree(folder)
    orthanc = None
    try:
        orthanc = start_orthanc(folder / "orthanc", {"MYONODE": ("MYONODE", "127.0.0.1", port)})
        console.print(f"PACS: Orthanc on 127.0.0.1:{orthanc.dicom_port} (HTTP {orthanc.http_port})")
    except (FileNotFoundError, RuntimeError) as exc:
        console.print(f"[yellow]no PACS[/]: {exc}; results are kept in the node only")
    with console.status("demo folder, and the default atlas (built once from phantom subjects) …"):
        settings = prepare_demo_folder(folder, port=port, fresh=False, small=size == "small",
                                       pacs=(orthanc.ae_title, orthanc.dicom_port) if orthanc else None)
    console.print(f"[bold]myonode demo[/] in {folder} (settings {settings.source})")
    node = None
    try:
        console.print(f"atlas: {settings.atlas.path}")
        with console.status(f"phantom cohort: {patients} patients, {controls} controls, {size} size …"):
            cohort = write_cohort(folder / "phantom", patients=patients, controls=controls, seed=1, size=size,
                                  artefacts=1)
        console.print(f"phantom: {len(cohort.visits)} visits in {folder / 'phantom'}")
        node = start_node(settings)
        console.print(f"node: {settings.node.ae_title} on 127.0.0.1:{port}")
        password = _demo_account(node)
        console.print(f"web console: http://127.0.0.1:{node.web.port if node.web else '-'}/ "
                      f"(account demo, password {password}); DICOMweb under /dicomweb, metrics at /metrics")
        visits_labels = [w.label for w in settings.visits.windows]
        with transaction(node.sessions) as s:
            import_subjects(s, cohort.subjects_csv)
        pushed = 0

        def poll() -> tuple[dict[str, tuple[int, int]], list[FinishedVisit]]:
            with node.sessions() as s:
                ended = finished_visits(s)
                jobs = s.execute(select(m.Job.target, m.Job.state).where(m.Job.kind == PROCESS_VISIT)).all()
                out = dict(s.execute(select(m.OutboxItem.state, func.count()).group_by(m.OutboxItem.state)).all())
            # a visit is finished when its last job is done, or failed for good (retries exhausted)
            pending = {t for t, state in jobs if state in (m.JobState.QUEUED, m.JobState.RUNNING)}
            finished = len({t for t, state in jobs if state in (m.JobState.DONE, m.JobState.FAILED)} - pending)
            return {"pushed": (pushed, len(cohort.visits)),
                    "processed": (finished, len(cohort.visits)),
                    "forwarded": (out.get(m.OutboxState.SENT, 0), sum(out.values()) if orthanc else 0)}, ended

        with (_Bars(console) if console.is_terminal else _Lines(console)) as shown:
            for i, visit in enumerate(cohort.visits, start=1):
                start = time.monotonic()
                push_visit(visit.dicom_dir, settings.node.ae_title, port)
                pushed = i
                shown.pushed(i, len(cohort.visits), f"{visit.subject_id} {visit.visit}", time.monotonic() - start)
                shown.update(*poll())
            with transaction(node.sessions) as s:
                import_observations(s, cohort.clinical_csv, "clinical", visits_labels)
                import_observations(s, cohort.ephys_csv, "ephys", visits_labels)

            def done(state: dict[str, tuple[int, int]]) -> bool:
                n, total = state["processed"]
                sent, queued = state["forwarded"]
                return n >= total and (orthanc is None or sent >= queued)

            _wait(shown, poll, done, timeout_s=3600)
        with node.sessions() as s:
            failed = s.scalars(select(m.Job).where(m.Job.state == m.JobState.FAILED)).all()
            if failed:
                raise DemoError("processing failed: " + "; ".join(f"{j.target}: {j.last_error}" for j in failed))
            durations = [(j.finished_at - j.started_at).total_seconds() for j in
                         s.scalars(select(m.Job).where(m.Job.kind == PROCESS_VISIT, m.Job.state == m.JobState.DONE))
                         if j.finished_at and j.started_at]
            n_visits = s.scalar(select(func.count()).select_from(m.Visit)) or 0
            forwarded = s.scalar(select(func.count()).select_from(m.OutboxItem)
                                 .where(m.OutboxItem.state == m.OutboxState.SENT)) or 0
        for line in _review_artefacts(node, cohort.visits):
            console.print(line)
        with console.status("cohort report …"):
            run = run_report(settings, force=True)
        if run is None or run.state is not m.RunState.DONE:
            raise DemoError(f"the cohort report did not run: {run.error if run else 'no complete visits'}")
        report = Path(run.output_dir or "")
        _print_summary(console, settings, report, n_visits, durations, forwarded, port)
        found = find_results(settings.node.ae_title, port)
        console.print(f"  (run now against the demo node: {found} SR series found)")
        if found == 0:
            raise DemoError("findscu found no SR series on the node")
        return DemoSummary(visits=n_visits, processed=len(durations), failed=0, forwarded=forwarded, report=report, seconds_per_visit=durations)
    finally:
        if node is not None:
            node.stop()
        if orthanc is not None:
            orthanc.stop()
        console.print("node and PACS stopped.")


def _review_artefacts(node: Node, visits: list[CohortVisit]) -> list[str]:
    """The demo's reviewer rejects the ROI the phantom planted an artefact in (as a person would on the visit
    page), so the console shows a rejected ROI and the report leaves it out."""
    from node.web.accounts import audit
    from node.work.review import ReviewError, reject_roi
    from storage.database import transaction

    lines = []
    for visit in visits:
        if visit.artefact is None:
            continue
        muscle, side = visit.artefact
        with transaction(node.sessions) as s:
            visit_id = s.scalar(select(m.Visit.id).join(m.Subject).where(m.Subject.subject_id == visit.subject_id,
                                                                         m.Visit.label == visit.visit))
            try:
                if visit_id is None:
                    raise ReviewError(f"no visit {visit.subject_id} {visit.visit}")
                reject_roi(s, visit_id=visit_id, muscle=muscle, side=side, reason=m.RejectReason.ARTEFACT,
                           note="planted by the phantom (truth.json)", reviewer="demo")
                audit(s, actor="demo", action="roi rejected", target=f"visit {visit_id} {muscle} {side}",
                      detail="artefact")
                lines.append(f"review: {visit.subject_id} {visit.visit}: {muscle} {side} rejected (artefact planted "
                             f"by the phantom) — see the visit page; the report leaves it out")
            except ReviewError as exc:
                lines.append(f"review: {visit.subject_id} {visit.visit}: not rejected: {exc}")
    return lines


def _demo_account(node: Node) -> str:
    """An operator account ``demo`` with a fresh password, for the demo's console."""
    import secrets

    from node.web.accounts import AccountError, add_user, get_user, set_password
    from storage.database import transaction

    password = secrets.token_urlsafe(12)
    with transaction(node.sessions) as s:
        try:
            get_user(s, "demo")
            set_password(s, name="demo", password=password)
        except AccountError:
            add_user(s, name="demo", password=password, role=m.Role.OPERATOR)
    return password


def _print_summary(console: Console, settings: Settings, report: Path, visits: int, durations: list[float],
                   forwarded: int, port: int) -> None:
    import statistics

    console.print(f"\n[bold]report[/]: {report / 'report.html'}\n        {report / 'report.pdf'}")
    median = statistics.median(durations) if durations else float("nan")
    console.print(f"visits processed: {len(durations)} of {visits}; median processing time {median:.0f} s per visit; "
                  f"{forwarded} result objects forwarded to the PACS")
    table1 = report / "table1.csv"
    if table1.exists():
        import pandas as pd

        t = pd.read_csv(table1).dropna(subset=["p", "pct_diff"])
        top = t.sort_values("p").head(3)
        for _, row in top.iterrows():
            console.print(f"  table 1: {row['muscle']} {row['side']}: patients vs controls "
                          f"{row['pct_diff']:+.1f} % (p = {row['p']:.3g})", highlight=False)
    console.print("\nquery the results from the node (while `myonode serve` runs with these settings):\n"
                  f"  findscu -S -aec {settings.node.ae_title} {' '.join(FINDSCU_KEYS)} 127.0.0.1 {port}")
    console.print(f"  myonode serve --config {settings.source}")


FINDSCU_KEYS = ["-k", "QueryRetrieveLevel=SERIES", "-k", "Modality=SR", "-k", "SeriesDescription",
                "-k", "StudyInstanceUID"]


def find_results(ae_title: str, port: int) -> int:
    """How many SR series the node's Q/R answers for (dcmtk findscu, study root)."""
    proc = subprocess.run(["findscu", "-S", "-aec", ae_title, *FINDSCU_KEYS, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60, check=False)
    return (proc.stdout + proc.stderr).count("Find Response:")

"""`myonode serve`: the long-running node — store, journal and indexer, listeners, exam watcher, jobs, forwarder.

Processes: ``serve`` itself (indexer, one listener, watcher, forwarder, job consumers), ``[node]
listener_processes - 1`` × ``myonode listen`` on the same port, and ``[queue] processes`` ×
``myonode worker``; the children are watched and restarted, and die with serve (PDEATHSIG)."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from node.dimse.commitment import commitment_handler
from node.dimse.listener import Handler, Listener, qr_handlers, start_listener
from node.dimse.slots import AssociationSlots
from node.intake.indexer import Indexer
from node.intake.ingest import Ingestor, Limits
from node.intake.metrics import IngestMetrics
from node.intake.receiver import Receiver
from node.settings import Settings
from node.web.access import WebContext
from node.web.app import create_app
from node.web.server import WebServer
from node.work.exams import ExamWatcher
from node.work.jobs import JobContext, JobQueue
from node.work.outbox import Forwarder
from storage.database import make_engine, session_factory
from storage.filestore import FileStore
from storage.journal import Journal
from storage.migrate import upgrade

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Foundation:
    """What every process of the node (serve, listen, web) opens on the same store, built once by
    :func:`open_foundation`: the database, the file store, the journal, the receiver that writes it and, where
    this process may index, the indexer (one per store: a second one waits for the first one's lock)."""

    engine: Engine
    sessions: sessionmaker[Session]
    store: FileStore
    journal: Journal
    registry: CollectorRegistry
    ingestor: Ingestor
    receiver: Receiver
    indexer: Indexer | None

    def close(self) -> None:
        if self.indexer is not None:
            self.indexer.stop()
        self.receiver.close()
        self.engine.dispose()


def open_foundation(settings: Settings, *, migrate: bool, index: Literal["first", "beside", "never"]) -> Foundation:
    """The :class:`Foundation` of one process. ``migrate``: upgrade the database first. ``index``: ``first`` —
    start the indexer and wait until it holds the lock and has indexed what a crash left (serve, before it
    listens, so queries see it); ``beside`` — start it, and let it wait for another process's lock (web);
    ``never`` (an extra listener: serve's indexer indexes what it journals)."""
    engine = make_engine(settings.storage.database_url)
    if migrate:
        upgrade(engine)
    store, sessions = FileStore(settings.storage.root), session_factory(engine)
    journal, registry = Journal(settings.storage.root), CollectorRegistry()
    ingestor = Ingestor(store, sessions, settings.protocol.rules, settings.storage.resend_policy)
    limits = Limits(max_bytes=settings.node.max_instance_bytes, max_inflation_ratio=settings.node.max_inflation_ratio)
    if index == "never":
        return Foundation(engine=engine, sessions=sessions, store=store, journal=journal, registry=registry,
                          ingestor=ingestor, receiver=Receiver(journal, limits=limits), indexer=None)
    metrics = IngestMetrics(registry)
    indexer = Indexer(ingestor, journal, keep_s=settings.storage.journal_keep_hours * 3600,
                      index_wait_s=settings.storage.index_wait_s, metrics=metrics)
    if index == "first":
        indexer.start_and_wait()
    else:
        indexer.start()
    return Foundation(engine=engine, sessions=sessions, store=store, journal=journal, registry=registry,
                      ingestor=ingestor, receiver=Receiver(journal, indexer.parsed, metrics, limits), indexer=indexer)


@dataclass(kw_only=True)
class Node:
    """Everything a running node holds; built by :func:`start_node`, ended by :meth:`stop`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: FileStore
    ingestor: Ingestor
    journal: Journal
    receiver: Receiver
    indexer: Indexer
    jobs: JobQueue
    listener: Listener
    listener_processes: ChildProcesses
    watcher: ExamWatcher
    forwarder: Forwarder
    worker_processes: ChildProcesses
    web: WebServer | None
    stopped: bool = False

    def settle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every instance acknowledged so far is indexed (see :class:`Receiver`)."""
        return self.receiver.settle(timeout_s)

    def stop(self) -> None:
        """Stop everything (a second call does nothing); what was acknowledged is indexed first."""
        if self.stopped:
            return
        self.stopped = True
        if self.web is not None:
            self.web.stop()
        self.listener.stop()
        self.listener_processes.stop()
        self.indexer.stop()
        self.receiver.close()
        self.watcher.stop()
        self.forwarder.stop()
        self.worker_processes.stop()
        self.jobs.stop_consumers()
        self.engine.dispose()  # the foundation's close, in the order the node's parts need


def _die_with_parent() -> None:
    """In a worker process before exec: SIGTERM when the node that started it dies, even by SIGKILL (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ChildProcesses(threading.Thread):
    """``count`` × ``myonode <command>`` on the node's settings file (their output is the node's),
    watched: one that exits is logged with its exit code and started again (at most once per
    ``restart_after_s``), so a crashed worker or listener never stays away."""

    def __init__(self, settings: Settings, command: str, count: int, *, setting: str,
                 restart_after_s: float = 10.0, interval_s: float = 1.0) -> None:
        super().__init__(name=f"myonode-{command}-processes", daemon=True)
        if count and settings.source is None:
            raise ValueError(f"{setting} needs settings read from a file (the {command} processes read the same file)")
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())  # the node's own log level
        self.what = command
        self.command = [sys.executable, "-m", "node.cli", command, "--config", str(settings.source),
                        "--log-level", level]
        self.restart_after_s, self.interval_s = restart_after_s, interval_s
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.processes = [self._spawn() for _ in range(count)]
        self.started_at = [time.monotonic()] * len(self.processes)
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, preexec_fn=_die_with_parent)

    def run(self) -> None:
        if not self.processes:  # none asked for: nothing to watch, no wake-ups
            return
        while not self.stopping.wait(self.interval_s):
            with self.lock:
                for i, proc in enumerate(self.processes):
                    code = proc.poll()
                    if code is None or self.stopping.is_set():
                        continue
                    if time.monotonic() - self.started_at[i] < self.restart_after_s:
                        continue  # not in a tight loop: a worker that dies at once is restarted every few seconds
                    log.error("%s process %d exited with %s; starting it again", self.what, proc.pid, code)
                    self.processes[i], self.started_at[i] = self._spawn(), time.monotonic()
                    self.restarts += 1

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Huey stops at once, a job it was running re-queued by the next start's recovery; a listener
        ends its associations)."""
        self.stopping.set()
        with self.lock:
            for proc in self.processes:
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.processes:
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.is_alive():
            self.join(timeout=5)


def open_jobs(settings: Settings) -> tuple[Engine, JobQueue]:
    """The database and job queue as a worker or a CLI command needs them (no listener)."""
    engine = make_engine(settings.storage.database_url)
    ctx = JobContext(settings=settings, sessions=session_factory(engine), store=FileStore(settings.storage.root))
    return engine, JobQueue(ctx)


def start_node(settings: Settings, watch_interval_s: float = 2.0) -> Node:
    """Upgrade the database, clear writes a crash interrupted, recover jobs, and start serving."""
    store = FileStore(settings.storage.root)
    for path in store.sweep_partials():
        log.warning("removed %s, a write interrupted by a crash (never acknowledged)", path)
    # before listening: what a crash left in the journal is indexed, so queries see it
    base = open_foundation(settings, migrate=True, index="first")
    assert base.indexer is not None
    jobs = JobQueue(JobContext(settings=settings, sessions=base.sessions, store=base.store))
    # The node always consumes (and is the one process that runs the [schedule] tasks); with the
    # Redis queue, `myonode worker` processes elsewhere consume too.
    jobs.start_consumers(settings.queue.workers)
    workers = ChildProcesses(settings, "worker", settings.queue.processes, setting="[queue] processes")
    workers.start()
    recovered = jobs.recover()
    if recovered:
        log.info("re-dispatched %d unfinished job(s)", len(recovered))
    slots = association_slots(settings)
    listener = start_listener(settings.node, base.receiver, slots, extra_handlers=reader_handlers(settings, base))
    listeners = ChildProcesses(settings, "listen", settings.node.listener_processes - 1,
                               setting="[node] listener_processes")
    listeners.start()
    watcher = ExamWatcher(base.sessions, settings, jobs, base.receiver.settle, interval_s=watch_interval_s)
    watcher.start()
    forwarder = Forwarder(base.sessions, base.store, settings.forward, settings.node.ae_title)
    forwarder.start()
    web = None
    if settings.web.enabled:
        ctx = WebContext(settings=settings, sessions=base.sessions, store=base.store, receiver=base.receiver,
                         jobs=jobs, registry=base.registry, refused=listener.refused,
                         active_associations=slots.held)  # every process's, both receivers
        try:
            web = WebServer(create_app(ctx), settings.web).start_and_wait()
        except RuntimeError as exc:  # DICOM reception matters more than the console: serve on without it
            log.error("web console not started: %s", exc)
    return Node(settings=settings, engine=base.engine, sessions=base.sessions, store=base.store,
                ingestor=base.ingestor, journal=base.journal, receiver=base.receiver, indexer=base.indexer,
                jobs=jobs, listener=listener, listener_processes=listeners, watcher=watcher, forwarder=forwarder,
                worker_processes=workers, web=web)


def association_slots(settings: Settings) -> AssociationSlots:
    """The ``[node] max_associations`` slots every listener process of this store shares."""
    return AssociationSlots(Path(settings.storage.root).resolve() / "run", settings.node.max_associations)


def reader_handlers(settings: Settings, base: Foundation) -> list[Handler]:
    """Q/R and storage commitment, each seeing every instance acknowledged before its request."""
    peers = [*settings.qr.move_destinations, *settings.forward.destinations]
    return [
        *qr_handlers(settings.node, base.store, base.sessions, base.receiver.settle, settings.qr),
        commitment_handler(settings.node.ae_title, base.sessions, base.store, peers, base.receiver.settle),
    ]


def serve_forever(settings: Settings) -> None:
    """Run the node until SIGINT or SIGTERM (one that arrives while it starts stops it once it has started)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = start_node(settings)
    log.info("myonode serving as %s on port %d", settings.node.ae_title, node.listener.port)
    try:
        stop.wait()
    finally:
        log.info("stopping")
        node.stop()


def listen_forever(settings: Settings) -> None:
    """`myonode listen`: one more listener on serve's port (``[node] listener_processes``), until SIGTERM.

    It journals what it receives (serve's indexer indexes it) and answers Q/R and storage commitment
    from the shared index; it runs no jobs."""
    if settings.node.listener_processes < 2:
        raise ValueError("myonode listen runs beside serve when [node] listener_processes is 2 or more")
    base = open_foundation(settings, migrate=False, index="never")
    listener = start_listener(settings.node, base.receiver, association_slots(settings),
                              extra_handlers=reader_handlers(settings, base))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        listener.stop()
        base.close()


def web_forever(settings: Settings) -> None:
    """`myonode web`: the console, DICOMweb and /metrics alone, on serve's database and store (no DICOM listener,
    no job consumers). STOW-RS journals as C-STORE does; this process's indexer takes over when no serve runs."""
    import uvicorn

    from node.web.server import config

    base = open_foundation(settings, migrate=True, index="beside")  # its indexer waits for serve's lock
    jobs = JobQueue(JobContext(settings=settings, sessions=base.sessions, store=base.store))
    ctx = WebContext(settings=settings, sessions=base.sessions, store=base.store, receiver=base.receiver, jobs=jobs,
                     registry=base.registry)
    try:
        uvicorn.Server(config(create_app(ctx), settings.web)).run()
    finally:
        base.close()


def work_forever(settings: Settings) -> None:
    """`myonode worker`: Huey consumers until SIGINT/SIGTERM — on the Redis queue anywhere, with ``[queue]
    workers`` consumer threads (at least one), or on the SQLite queue on the node's own host (the queue file
    is local), with one thread: more processes, not threads, make more processing run at once there."""
    engine, jobs = open_jobs(settings)
    upgrade(engine)
    # a Redis worker elsewhere runs [queue] workers threads; one beside serve on the SQLite queue runs one
    threads = max(1, settings.queue.workers) if settings.queue.backend == "redis" else 1
    consumer = jobs.huey.create_consumer(workers=threads, worker_type="thread", periodic=False)
    consumer.run()

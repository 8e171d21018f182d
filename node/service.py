"""`myonode serve`: the long-running node — store, index, listener, exam watcher, jobs, forwarder."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from node.dimse.commitment import commitment_handler
from node.dimse.listener import Listener, qr_handlers, start_listener
from node.intake.ingest import Ingestor
from node.settings import Settings
from node.work.exams import ExamWatcher
from node.work.jobs import JobContext, JobQueue
from node.work.outbox import Forwarder
from storage.database import make_engine, session_factory
from storage.filestore import FileStore
from storage.migrate import upgrade

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Node:
    """Everything a running node holds; built by :func:`start_node`, ended by :meth:`stop`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: FileStore
    ingestor: Ingestor
    jobs: JobQueue
    listener: Listener
    watcher: ExamWatcher
    forwarder: Forwarder
    worker_processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stopped: bool = False

    def stop(self) -> None:
        """Stop everything (a second call does nothing)."""
        if self.stopped:
            return
        self.stopped = True
        self.listener.stop()
        self.watcher.stop()
        self.forwarder.stop()
        stop_worker_processes(self.worker_processes)
        self.jobs.stop_consumers()
        self.engine.dispose()


def _die_with_parent() -> None:
    """In a worker process before exec: SIGTERM when the node that started it dies, even by SIGKILL (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_worker_processes(settings: Settings) -> list[subprocess.Popen[bytes]]:
    """``[queue] processes`` × ``myonode worker`` on the node's settings file (their output is the node's)."""
    if settings.queue.processes == 0:
        return []
    if settings.source is None:
        raise ValueError("[queue] processes needs settings read from a file (the workers read the same file)")
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())  # the node's own log level
    command = [sys.executable, "-m", "node.cli", "worker", "--config", str(settings.source), "--log-level", level]
    return [subprocess.Popen(command, preexec_fn=_die_with_parent) for _ in range(settings.queue.processes)]


def stop_worker_processes(processes: list[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
    """SIGTERM (Huey stops at once; a job it was running is re-queued by the next start's recovery)."""
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def open_jobs(settings: Settings) -> tuple[Engine, JobQueue]:
    """The database and job queue as a worker or a CLI command needs them (no listener)."""
    engine = make_engine(settings.storage.database_url)
    ctx = JobContext(settings=settings, sessions=session_factory(engine), store=FileStore(settings.storage.root))
    return engine, JobQueue(ctx)


def start_node(settings: Settings, watch_interval_s: float = 2.0) -> Node:
    """Upgrade the database, clear writes a crash interrupted, recover jobs, and start serving."""
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    store = FileStore(settings.storage.root)
    for path in store.sweep_partials():
        log.warning("removed %s, a write interrupted by a crash (never acknowledged)", path)
    sessions = session_factory(engine)
    jobs = JobQueue(JobContext(settings=settings, sessions=sessions, store=store))
    # The node always consumes (and is the one process that runs the [schedule] tasks); with the
    # Redis queue, `myonode worker` processes elsewhere consume too.
    jobs.start_consumers(settings.queue.workers)
    workers = start_worker_processes(settings)
    recovered = jobs.recover()
    if recovered:
        log.info("re-dispatched %d unfinished job(s)", len(recovered))
    ingestor = Ingestor(store, sessions, settings.protocol.rules, settings.storage.resend_policy)
    peers = [*settings.qr.move_destinations, *settings.forward.destinations]
    handlers = [
        *qr_handlers(settings.node, store, sessions, settings.qr.move_destinations),
        commitment_handler(settings.node.ae_title, sessions, store, peers),
    ]
    listener = start_listener(settings.node, ingestor, extra_handlers=handlers)
    watcher = ExamWatcher(sessions, settings, jobs, interval_s=watch_interval_s)
    watcher.start()
    forwarder = Forwarder(sessions, store, settings.forward, settings.node.ae_title)
    forwarder.start()
    return Node(settings=settings, engine=engine, sessions=sessions, store=store, ingestor=ingestor, jobs=jobs,
                listener=listener, watcher=watcher, forwarder=forwarder, worker_processes=workers)


def serve_forever(settings: Settings) -> None:
    """Run the node until SIGINT or SIGTERM."""
    node = start_node(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("myonode serving as %s on port %d", settings.node.ae_title, node.listener.port)
    try:
        stop.wait()
    finally:
        log.info("stopping")
        node.stop()


def work_forever(settings: Settings) -> None:
    """`myonode worker`: Huey consumers until SIGINT/SIGTERM — on the Redis queue anywhere, or on the SQLite
    queue on the node's own host (the queue file is local). One consumer thread per process: more
    processes, not threads, make more processing run at once."""
    engine, jobs = open_jobs(settings)
    upgrade(engine)
    consumer = jobs.huey.create_consumer(workers=max(1, settings.queue.workers) if settings.queue.backend == "redis"
                                         else 1, worker_type="thread", periodic=False)
    consumer.run()

"""`myonode serve`: the long-running node — store, index, listener, exam watcher, jobs, forwarder."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

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
    worker_processes: WorkerProcesses
    stopped: bool = False

    def stop(self) -> None:
        """Stop everything (a second call does nothing)."""
        if self.stopped:
            return
        self.stopped = True
        self.listener.stop()
        self.watcher.stop()
        self.forwarder.stop()
        self.worker_processes.stop()
        self.jobs.stop_consumers()
        self.engine.dispose()


def _die_with_parent() -> None:
    """In a worker process before exec: SIGTERM when the node that started it dies, even by SIGKILL (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class WorkerProcesses(threading.Thread):
    """``[queue] processes`` × ``myonode worker`` on the node's settings file (their output is the node's),
    watched: one that exits is logged with its exit code and started again (at most once per
    ``restart_after_s``), so a crashed worker never leaves jobs waiting for ever."""

    def __init__(self, settings: Settings, restart_after_s: float = 10.0, interval_s: float = 1.0) -> None:
        super().__init__(name="myonode-worker-processes", daemon=True)
        if settings.queue.processes and settings.source is None:
            raise ValueError("[queue] processes needs settings read from a file (the workers read the same file)")
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())  # the node's own log level
        self.command = [sys.executable, "-m", "node.cli", "worker", "--config", str(settings.source),
                        "--log-level", level]
        self.restart_after_s, self.interval_s = restart_after_s, interval_s
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.processes = [self._spawn() for _ in range(settings.queue.processes)]
        self.started_at = [time.monotonic()] * len(self.processes)
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, preexec_fn=_die_with_parent)

    def run(self) -> None:
        if not self.processes:  # [queue] processes = 0: nothing to watch, no wake-ups
            return
        while not self.stopping.wait(self.interval_s):
            with self.lock:
                for i, proc in enumerate(self.processes):
                    code = proc.poll()
                    if code is None or self.stopping.is_set():
                        continue
                    if time.monotonic() - self.started_at[i] < self.restart_after_s:
                        continue  # not in a tight loop: a worker that dies at once is restarted every few seconds
                    log.error("worker process %d exited with %s; starting it again", proc.pid, code)
                    self.processes[i], self.started_at[i] = self._spawn(), time.monotonic()
                    self.restarts += 1

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Huey stops at once; a job it was running is re-queued by the next start's recovery)."""
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
    workers = WorkerProcesses(settings)
    workers.start()
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
    # a Redis worker elsewhere runs [queue] workers threads; one beside serve on the SQLite queue runs one
    threads = max(1, settings.queue.workers) if settings.queue.backend == "redis" else 1
    consumer = jobs.huey.create_consumer(workers=threads, worker_type="thread", periodic=False)
    consumer.run()

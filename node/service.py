"""`myonode serve`: the long-running node — store, index, listener, exam watcher, jobs, forwarder."""

from __future__ import annotations

import logging
import signal
import threading
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

    def stop(self) -> None:
        self.listener.stop()
        self.watcher.stop()
        self.forwarder.stop()
        self.jobs.stop_consumers()
        self.engine.dispose()


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
    return Node(settings=settings, engine=engine, sessions=sessions, store=store, ingestor=ingestor, jobs=jobs, listener=listener, watcher=watcher, forwarder=forwarder)


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
    """`myonode worker`: Huey consumers for the Redis queue, until SIGINT/SIGTERM."""
    if settings.queue.backend != "redis":
        raise ValueError("myonode worker needs [queue] backend = \"redis\"; the sqlite queue runs inside serve")
    engine, jobs = open_jobs(settings)
    upgrade(engine)
    consumer = jobs.huey.create_consumer(workers=settings.queue.workers, worker_type="thread", periodic=False)
    consumer.run()

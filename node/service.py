"""`myonode serve`: the long-running node — store, index, listener — started and stopped cleanly."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from node.ingest import Ingestor
from node.outbox import Forwarder
from node.scp import Listener, qr_handlers, start_listener
from node.settings import Settings
from storage.database import make_engine, session_factory
from storage.filestore import FileStore
from storage.migrate import upgrade

log = logging.getLogger(__name__)


@dataclass
class Node:
    """Everything a running node holds; built by :func:`start_node`, ended by :meth:`stop`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: FileStore
    ingestor: Ingestor
    listener: Listener
    forwarder: Forwarder

    def stop(self) -> None:
        self.listener.stop()
        self.forwarder.stop()
        self.engine.dispose()


def start_node(settings: Settings) -> Node:
    """Upgrade the database, clear writes a crash interrupted, and start listening."""
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    store = FileStore(settings.storage.root)
    for path in store.sweep_partials():
        log.warning("removed %s, a write interrupted by a crash (never acknowledged)", path)
    sessions = session_factory(engine)
    ingestor = Ingestor(store, sessions, settings.protocol.rules, settings.storage.resend_policy)
    handlers = qr_handlers(settings.node, store, sessions, settings.qr.move_destinations)
    listener = start_listener(settings.node, ingestor, extra_handlers=handlers)
    forwarder = Forwarder(sessions, store, settings.forward, settings.node.ae_title)
    forwarder.start()
    return Node(settings, engine, sessions, store, ingestor, listener, forwarder)


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

"""`myonode demo`: the whole story on the embedded default, in a throw-away folder ``var/demo``.

What it runs is what exists and works; it never prints made-up results.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from node.settings import Settings, load_settings
from storage.database import make_engine
from storage.filestore import FileStore
from storage.migrate import current_revision, upgrade

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

[report]
out = "reports"
"""


def prepare_demo_folder(folder: Path, port: int = 11112, fresh: bool = True) -> Settings:
    """Create ``folder`` with demo settings and an upgraded SQLite database; returns the loaded settings."""
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.toml"
    path.write_text(DEMO_SETTINGS.format(port=port), encoding="utf-8")
    settings = load_settings(path, environ={})
    upgrade(make_engine(settings.storage.database_url))
    FileStore(settings.storage.root).dicom_root.mkdir(parents=True, exist_ok=True)
    return settings


def run_demo(folder: Path, console: Console) -> None:
    """Set up the embedded default, start the node on loopback, check it answers C-ECHO, stop it."""
    from node.scu import echo
    from node.service import start_node

    settings = prepare_demo_folder(folder, port=_free_port())
    engine = make_engine(settings.storage.database_url)
    console.print(f"[bold]myonode demo[/] in {folder}")
    console.print(f"  settings: {settings.source}")
    console.print(f"  database: {settings.storage.database_url} at schema revision {current_revision(engine)}")
    console.print(f"  file store: {settings.storage.root}")
    node = start_node(settings)
    try:
        ok, message = echo(settings.node.ae_title, "127.0.0.1", node.listener.port, calling_ae="DEMO")
        console.print(f"  node listening as {settings.node.ae_title} on 127.0.0.1:{node.listener.port}: {message}")
        if not ok:
            raise RuntimeError(f"the node did not answer C-ECHO: {message}")
        console.print(f"  push images to it with: storescu -aec {settings.node.ae_title} 127.0.0.1 "
                      f"{node.listener.port} FILES...   (while `myonode serve --config {settings.source}` runs)")
    finally:
        node.stop()
    console.print("  node stopped. The phantom, processing and report steps join the demo as they land.")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""`myonode serve` as a real process for tests: its settings file, start (ready when C-ECHO answers), kill."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from node.demo.ports import free_port
from tests.support.dcmtk import PEER_AES, dcmtk

MYONODE = str(Path(sys.executable).parent / "myonode")


def write_settings(folder: Path, port: int, node_extra: str = "", extra: str = "") -> Path:
    """A settings file in ``folder`` (store and SQLite index beside it); ``extra``: more TOML sections."""
    path = folder / "settings.toml"
    aes = ", ".join(f'"{ae}"' for ae in PEER_AES)
    path.write_text(
        f'[node]\nport = {port}\nallowed_calling_ae_titles = [{aes}]\n{node_extra}\n'
        '[storage]\nroot = "store"\ndatabase_url = "sqlite:///myonode.db"\n'
        f'[web]\nport = {free_port()}\n' + extra
    )
    return path


def start_serve(settings: Path, port: int, tls_args: tuple[str, ...] = (), *,
                own_process_group: bool = False) -> subprocess.Popen[bytes]:
    """Start serve (log in ``serve.log`` beside the settings) and wait until it answers C-ECHO.

    ``own_process_group``: serve and the processes it starts form one group, for ``os.killpg``."""
    with open(settings.parent / "serve.log", "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([MYONODE, "serve", "--config", str(settings)], stdout=log, stderr=log,
                                start_new_session=own_process_group)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if dcmtk("echoscu", *tls_args, "-aet", "ECHOSCU", "-aec", "MYONODE", "127.0.0.1", str(port)).returncode == 0:
            return proc
        if proc.poll() is not None:
            raise AssertionError((settings.parent / "serve.log").read_text())
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("node did not start: " + (settings.parent / "serve.log").read_text())

"""`myonode serve` as a real process for tests: its settings file, start (ready when C-ECHO answers), waiting for
what its log says, kill."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from node.demo.ports import free_port
from tests.support.dcmtk import PEER_AES, dcmtk
from tests.support.waiting import wait_for

MYONODE = str(Path(sys.executable).parent / "myonode")
# What node.dimse.scu.associate says of the node's answer beyond [node] max_associations
OVER_THE_LIMIT = "rejected (transient) by the DUL service-provider (presentation related): local limit exceeded"


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


def wait_for_log(log: Path, line: str, *, count: int = 1, timeout_s: float = 60) -> None:
    """Until ``log`` holds ``line`` ``count`` times (a process the node starts says it is ready there); the
    failure shows the log."""
    try:
        wait_for(lambda: log.read_text(errors="replace").count(line) >= count, timeout_s,
                 f"{line!r} {count}× in {log}", step_s=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{log.read_text(errors='replace')}") from None

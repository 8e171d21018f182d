"""Orthanc (Debian package) started on loopback as a real PACS for the demo, tests and benchmarks."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.demo.ports import free_port


@dataclass(kw_only=True)
class Orthanc:
    """A running Orthanc: its AE title, DICOM and HTTP ports, and a small REST client."""

    process: subprocess.Popen[bytes]
    ae_title: str
    dicom_port: int
    http_port: int
    folder: Path

    def rest(self, path: str, body: Any = None, method: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=120) as rsp:
            text = rsp.read()
        return json.loads(text) if text else None

    def rest_bytes(self, path: str) -> bytes:
        """A GET of ``path`` as raw bytes (e.g. ``/instances/{id}/file``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=120) as rsp:
            return bytes(rsp.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_orthanc(folder: Path, modalities: dict[str, tuple[str, str, int]], ae_title: str = "ORTHANC",
                  config: dict[str, Any] | None = None) -> Orthanc:
    """Start Orthanc with its own storage in ``folder``; ``modalities`` are the DICOM peers it knows;
    ``config``: more Orthanc configuration options (e.g. ``AcceptedTransferSyntaxes``)."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists():
        raise FileNotFoundError("Orthanc is not installed (Debian package orthanc; `make test` installs it)")
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "myonode-test-pacs", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "DicomAet": ae_title, "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": [],
        "DicomModalities": {name: list(v) for name, v in modalities.items()},
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True, "StableAge": 1,
        **(config or {}),
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    with open(folder / "orthanc.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    orthanc = Orthanc(process=proc, ae_title=ae_title, dicom_port=dicom_port, http_port=http_port, folder=folder)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            orthanc.rest("/system")
            return orthanc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    orthanc.stop()
    raise RuntimeError("Orthanc did not start: " + (folder / "orthanc.log").read_text()[-2000:])

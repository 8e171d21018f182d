"""Run dcmtk's command-line tools, the DICOM peers the node tests talk to."""

from __future__ import annotations

import shutil
import subprocess

import pytest

# Calling AE titles a test node accepts (the tools below are run with these).
PEER_AES = ["STORESCU", "ECHOSCU", "FINDSCU", "GETSCU", "MOVESCU", "PEER", "ORTHANC"]


def need(tool: str) -> str:
    """The path of ``tool``; fails the test (not skips) when it is missing: `make test` installs it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not installed: `make test` installs it (Debian package dcmtk)")
    return path


def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool and return its result (stdout+stderr merged into stdout)."""
    return subprocess.run([need(tool), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)

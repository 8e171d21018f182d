"""A free TCP port on loopback, for a listener started right after (demo, Orthanc, tests, benchmarks)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS reports free on 127.0.0.1 now (another process could still take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

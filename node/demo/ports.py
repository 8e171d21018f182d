"""A free TCP port on loopback, for a listener started right after (demo, Orthanc, tests, benchmarks).

The port is chosen **outside the kernel's ephemeral range** (``net.ipv4.ip_local_port_range``). Asking the
kernel for port 0 would return a port from that range, and the kernel hands the same range out as the
source port of every outgoing connection: a ``storescu`` or HTTP client connecting anywhere between the
choice and the listener's bind could take it (``EADDRINUSE``; seen with four test workers). Below the
range nothing is given a port unasked, so only another chooser could collide, and a random pick among thousands
makes that unlikely; the port is checked free by binding it before it is returned."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20000  # above the registered ports services here listen on (PostgreSQL 5432, Redis 6379, ...)
_pick = random.SystemRandom()  # independent of any seed a caller set on the random module


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing source ports; Linux's default where it cannot be read."""
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _candidates() -> list[int]:
    low, high = ephemeral_range()
    below = list(range(LOWEST, low)) if low > LOWEST else []
    return below or list(range(max(high + 1, 1024), 65536))


def free_port() -> int:
    """A port on 127.0.0.1 outside the ephemeral range that nothing is bound to now.

    Another chooser could still take it before use: the pick is random among the candidates to make that
    unlikely. Falls back to the kernel's own choice if every candidate tried is taken."""
    candidates = _candidates()
    for port in _pick.sample(candidates, min(64, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""Waiting in tests for what another process or thread does: one polling loop, failing with what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, *, step_s: float = 1.0) -> None:
    """Until ``predicate()`` holds, looking every ``step_s``; fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out waiting for {what}")

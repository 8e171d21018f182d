"""pynetdicom's polling reactors, at a configurable interval (``[node] reactor_poll_ms``).

Why it is here: each association runs two threads that *poll* — the DUL provider sleeps
``DULServiceProvider._run_loop_delay`` (1 ms) whenever a loop found nothing to do, and
``Association._run_reactor`` sleeps a hard-coded ``time.sleep(0.001)`` before every look at
the DIMSE queue. Every C-STORE waits for both, up to 2 ms on a few ms of work. Measured on
this 2-core VM (a bare pynetdicom SCP acknowledging without storing, dcmtk storescu, 2026-12-03):
at 0.2 ms instead of 1 ms, 400 small instances 1.15 s → 0.67 s, 120 visit instances
0.40 s → 0.28 s.

How, without forking pynetdicom: the DUL delay is an instance attribute, set per association
(:func:`handle_requested`, EVT_REQUESTED). The reactor's sleep is a literal, so
``pynetdicom.association``'s module reference to ``time`` is replaced by :class:`ReactorClock`,
which turns exactly ``sleep(0.001)`` into ``sleep(poll_s)`` and passes everything else to
:mod:`time` (process-wide, idempotent; :func:`install`).

Checked against pynetdicom 3.0.4 (:data:`CHECKED`); :func:`incompatibilities` says what no
longer matches, ``tests/node/test_reactor.py`` fails on an upgrade that changes either loop,
and the node then runs with pynetdicom's own timing (it never breaks, it is only slower).
The cost: an *open, idle* association wakes its two threads every ``poll_s`` instead of every
millisecond; a node without associations polls nothing.
"""

from __future__ import annotations

import inspect
import logging
import time
import types
from typing import Any

import pynetdicom
import pynetdicom.association as pynetdicom_association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event

log = logging.getLogger(__name__)

CHECKED = ("3.0.4",)
PYNETDICOM_REACTOR_SLEEP_S = 0.001  # the literal in Association._run_reactor


class ReactorClock:
    """Stands in for :mod:`time` inside ``pynetdicom.association``: the reactor's 1 ms sleep becomes ``poll_s``."""

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s

    def sleep(self, seconds: float) -> None:
        time.sleep(self.poll_s if seconds == PYNETDICOM_REACTOR_SLEEP_S else seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def incompatibilities() -> list[str]:
    """What in the installed pynetdicom no longer looks as this adapter expects (empty: it applies)."""
    problems = []
    if pynetdicom.__version__ not in CHECKED:
        problems.append(f"pynetdicom {pynetdicom.__version__} is not one of the checked versions {CHECKED}")
    reactor = inspect.getsource(pynetdicom_association.Association._run_reactor)
    if f"time.sleep({PYNETDICOM_REACTOR_SLEEP_S})" not in reactor:
        problems.append("Association._run_reactor no longer sleeps time.sleep(0.001)")
    if not isinstance(pynetdicom_association.time, types.ModuleType | ReactorClock):
        problems.append("pynetdicom.association.time is neither the time module nor ours")
    dul = inspect.getsource(DULServiceProvider)
    if "self._run_loop_delay = " not in dul or "time.sleep(self._run_loop_delay)" not in dul:
        problems.append("DULServiceProvider no longer polls with _run_loop_delay")
    return problems


def install(poll_ms: float) -> bool:
    """Make the association reactor poll every ``poll_ms``; False (pynetdicom's timing kept) if it does not apply."""
    problems = incompatibilities()
    if problems:
        log.warning("reactor poll interval not applied: %s", "; ".join(problems))
        return False
    current = pynetdicom_association.time
    if isinstance(current, ReactorClock):
        current.poll_s = poll_ms / 1000.0
    else:
        pynetdicom_association.time = ReactorClock(poll_ms / 1000.0)  # type: ignore[assignment]
    return True


def handle_requested(event: Event, poll_ms: float) -> None:
    """EVT_REQUESTED: this association's DUL provider polls every ``poll_ms`` — when :func:`install` applied
    (so both loops follow the same checked pynetdicom); never raises."""
    try:
        if isinstance(pynetdicom_association.time, ReactorClock):
            event.assoc.dul._run_loop_delay = poll_ms / 1000.0
    except Exception:  # the default delay stands; the association goes on
        log.exception("DUL poll interval not applied")

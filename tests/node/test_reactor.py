"""The reactor adapter (node/dimse/reactor.py) fits the installed pynetdicom and sets what it says it sets."""

from __future__ import annotations

import time

import pynetdicom.association
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from node.dimse import reactor
from node.service import Node


def test_the_adapter_still_fits_the_installed_pynetdicom() -> None:
    """Fails on a pynetdicom upgrade that changes either polling loop: re-check node/dimse/reactor.py then."""
    assert reactor.incompatibilities() == []


def test_only_the_reactors_one_millisecond_sleep_is_shortened(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    clock = reactor.ReactorClock(0.0002)
    for seconds in (0.001, 0.1, 0.0001, 0.01):
        clock.sleep(seconds)
    assert slept == [0.0002, 0.1, 0.0001, 0.01]
    assert clock.monotonic is time.monotonic  # the rest is the time module's


def test_a_node_association_polls_at_the_configured_interval(running_node) -> None:
    node: Node = running_node(node='reactor_poll_ms = 0.3\nreceiver = "pynetdicom"')  # pynetdicom serves the echo
    assert isinstance(pynetdicom.association.time, reactor.ReactorClock)
    assert pynetdicom.association.time.poll_s == 0.0003
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.listener.port, ae_title="MYONODE")
    try:
        assert assoc.is_established
        (served,) = node.listener.ae.active_associations
        assert served.dul._run_loop_delay == 0.0003
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()

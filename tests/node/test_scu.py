"""node/dimse/scu.py: outgoing associations say why they did not come about — against dcmtk's storescp."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import Verification

from node.demo.ports import free_port
from node.dimse.scu import associate, echo, rejection_text
from tests.support.dcmtk import need
from tests.support.waiting import wait_for

REFUSED = "rejected (permanent) by the DUL service-user: no reason given"


@pytest.fixture
def refusing_peer() -> Iterator[int]:
    """dcmtk's storescp with ``--refuse``: every association gets A-ASSOCIATE-RJ (permanent, service user, no
    reason given), and storescp closes the connection at once."""
    port = free_port()
    proc = subprocess.Popen([need("storescp"), "--refuse", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def listening_or_gone() -> bool:
        with socket.socket() as s:
            return proc.poll() is not None or s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening_or_gone, 30, f"storescp --refuse listening on {port}", step_s=0.1)
        assert proc.poll() is None, f"storescp --refuse exited ({proc.returncode}) instead of listening on {port}"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def slow_requestor(_event: Event) -> None:
    """EVT_REQUESTED runs in the requesting thread after the A-ASSOCIATE-RQ is sent: a busy machine, here
    on purpose, so the peer's answer and its closing the connection both come before pynetdicom looks."""
    time.sleep(0.5)


def test_a_rejection_is_named_with_its_result_source_and_reason(refusing_peer: int) -> None:
    ok, said = echo("STORESCP", "127.0.0.1", refusing_peer, timeout=10)
    assert not ok and said == f"STORESCP@127.0.0.1:{refusing_peer}: association {REFUSED}"


def test_a_rejection_is_named_even_when_the_peer_closed_the_connection_before_pynetdicom_read_the_answer(
        refusing_peer: int) -> None:
    ae = AE(ae_title="PEER")
    ae.add_requested_context(Verification)
    plain = ae.associate("127.0.0.1", refusing_peer, ae_title="STORESCP", evt_handlers=[(evt.EVT_REQUESTED, slow_requestor)])
    # the race this works around, reproduced: pynetdicom itself reports no rejection here
    assert not plain.is_established and not plain.is_rejected
    assoc, why = associate(ae, "127.0.0.1", refusing_peer, ae_title="STORESCP",
                           evt_handlers=[(evt.EVT_REQUESTED, slow_requestor)])
    assert not assoc.is_established and why == REFUSED


def test_an_accepted_association_has_no_reason_and_no_listener_is_could_not_connect(node) -> None:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc, why = associate(ae, "127.0.0.1", node.listener.port, ae_title="MYONODE")
    assert assoc.is_established and why is None
    assoc.release()
    ae.acse_timeout = ae.connection_timeout = 5
    assoc, why = associate(ae, "127.0.0.1", free_port(), ae_title="MYONODE")
    assert why == "could not connect"


def test_a_rejection_with_codes_the_standard_does_not_define_is_given_in_numbers() -> None:
    rj = A_ASSOCIATE_RJ()
    rj.result, rj.source, rj.reason_diagnostic = 2, 3, 9
    assert rejection_text(rj) == "rejected (transient) by the source 3: reason 9"
    rj.result, rj.source, rj.reason_diagnostic = 1, 1, 7
    assert rejection_text(rj) == "rejected (permanent) by the DUL service-user: called AE title not recognised"

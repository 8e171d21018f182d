"""The free port a listener is given (node/demo/ports.py): never one an outgoing connection could be given."""

from __future__ import annotations

import socket

from node.demo.ports import ephemeral_range, free_port


def test_a_free_port_is_outside_the_range_outgoing_connections_take_their_source_port_from() -> None:
    low, high = ephemeral_range()
    ports = {free_port() for _ in range(200)}
    assert all(not low <= p <= high for p in ports), sorted(p for p in ports if low <= p <= high)
    assert len(ports) > 150, "the choice is random, so that two choosers rarely meet"


def test_a_free_port_can_be_listened_on_and_a_port_in_use_is_never_returned() -> None:
    port = free_port()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", port))
        listening.listen()
        assert all(free_port() != port for _ in range(500))


def test_the_source_ports_of_outgoing_connections_come_from_the_range_free_ports_avoid() -> None:
    """What makes the rule necessary: the kernel gives a connecting socket a port from the ephemeral range."""
    low, high = ephemeral_range()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", free_port()))
        listening.listen()
        with socket.create_connection(listening.getsockname()) as client:
            assert low <= client.getsockname()[1] <= high

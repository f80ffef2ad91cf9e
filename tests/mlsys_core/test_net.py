"""Ports for servers started later: outside the range the OS gives outgoing connections,
so only another listener can take one before its server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

from mlsys_core.net import HOST, LOWEST, ephemeral_range, free_port, free_ports


def test_ports_lie_outside_the_ephemeral_range_and_are_free() -> None:
    span = ephemeral_range()
    assert span is not None  # Linux says: the test is about this machine's range
    low, high = span
    ports = [free_port() for _ in range(200)]
    assert all(p >= LOWEST and not low <= p <= high for p in ports)
    assert len(set(ports)) > 150  # spread, not one port handed to every caller
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind((HOST, port))


def test_an_outgoing_connection_cannot_take_the_port() -> None:
    """What bind(0) gave before: a port an ephemeral connect() may receive. Connections
    opened after free_port() get ports inside the range, never the one handed out."""
    port = free_port()
    with socket.socket() as server:
        server.bind((HOST, 0))
        server.listen(64)
        clients = [socket.create_connection(server.getsockname()) for _ in range(50)]
        try:
            low, high = ephemeral_range()
            local = {c.getsockname()[1] for c in clients}
            assert all(low <= p <= high for p in local) and port not in local
        finally:
            for client in clients:
                client.close()


def test_a_port_another_listener_holds_is_not_handed_out() -> None:
    """With almost no room outside the range, the one port there that is taken is skipped."""
    with socket.socket() as held:
        held.bind((HOST, 65535))
        held.listen()
        ports = {free_port(ephemeral=(LOWEST, 65533)) for _ in range(20)}
    assert ports == {65534}


def test_without_room_outside_the_range_the_os_picks() -> None:
    port = free_port(ephemeral=(1024, 65535))
    with socket.socket() as sock:
        sock.bind((HOST, port))


def test_the_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text("32768\t60999\n")
    assert ephemeral_range(path) == (32768, 60999)
    path.write_text("garbage")
    assert ephemeral_range(path) is None
    assert ephemeral_range(tmp_path / "absent") is None


def test_ports_for_several_servers_all_differ_and_skip_the_taken() -> None:
    """With three ports outside the range and one given to nginx, two replicas get the
    other two (picked one by one, a port could come back twice)."""
    for _ in range(20):
        ports = free_ports(2, exclude=[65533], ephemeral=(LOWEST, 65532))
        assert sorted(ports) == [65534, 65535]

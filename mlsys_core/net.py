"""Loopback networking shared by the launcher, the serving cluster and the tools around them."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Collection
from pathlib import Path

HOST = "127.0.0.1"
# Below it, ports that services commonly claim (5432, 6379, 8000, 8080, 9000 ...).
LOWEST = 15000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_range(path: Path = _RANGE_FILE) -> tuple[int, int] | None:
    """The ports the OS hands to outgoing connections (and to ``bind(0)``); None when it
    does not say."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def free_port(
    host: str = HOST,
    ephemeral: tuple[int, int] | None = None,
    exclude: Collection[int] = (),
) -> int:
    """A port free on ``host`` now, outside the OS's ephemeral range when it has one, and
    not one of ``exclude``; the caller binds it soon after (a replica, a kept stack part).

    A port from ``bind(0)`` lies in the ephemeral range, where any outgoing connection
    on the machine can take it before the caller binds: a server then fails with "address
    already in use". Outside that range only another listener can take it.
    """
    span = ephemeral or ephemeral_range()
    if span is not None:
        low, high = span
        outside = [range(LOWEST, low), range(high + 1, 65536)]
        size = sum(len(r) for r in outside)
        # SystemRandom, not `random`'s shared generator: tests seed that one per process.
        for pick in secrets.SystemRandom().sample(range(size), min(size, 200)):
            port = (
                outside[0][pick] if pick < len(outside[0]) else outside[1][pick - len(outside[0])]
            )
            if port not in exclude and _bindable(host, port):
                return port
    while True:  # no range known, or nothing free outside it
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port


def free_ports(
    count: int,
    host: str = HOST,
    ephemeral: tuple[int, int] | None = None,
    exclude: Collection[int] = (),
) -> list[int]:
    """``count`` different free ports, none of ``exclude`` (ports given to others that
    are not bound yet): one free_port call after another could hand one out twice."""
    ports: list[int] = []
    while len(ports) < count:
        ports.append(free_port(host, ephemeral, exclude={*exclude, *ports}))
    return ports


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True

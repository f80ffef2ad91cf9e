"""System services the tests start for themselves (real servers, on 127.0.0.1 only)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlsys_core.net import HOST, free_port


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 and a free port, persisting nothing, working in
    ``folder``; yields its URL, then stops it and waits for it to exit."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).is_file():
        pytest.fail(
            "redis-server is not installed: run `make redis` (apt-get install redis-server)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        binary, "--bind", HOST, "--port", str(port), "--dir", str(folder),
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
    ]  # fmt: skip
    with open(folder / "redis.log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not _redis_ping(port):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start on {HOST}:{port}: "
                        f"{(folder / 'redis.log').read_text(errors='replace')[-500:]}"
                    )
                time.sleep(0.05)
            yield f"redis://{HOST}:{port}/0"
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

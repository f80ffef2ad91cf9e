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


@contextmanager
def postgres_server(folder: Path, password: str) -> Iterator[tuple[int, str]]:
    """A real PostgreSQL on 127.0.0.1 and a free port, initialized and run as the stack runs
    it (``mlsys_core/stack/postgres.py``: as the ``postgres`` user under root); yields the
    port and a SQLAlchemy URL of its ``postgres`` database, then stops it."""
    from mlsys_core.stack import postgres, process  # noqa: PLC0415

    try:
        bin_dir = postgres.find_bin_dir()
    except postgres.PostgresError as err:
        pytest.fail(f"{err}: run `make postgres`")
    user = postgres.run_as()
    data = postgres.data_dir(folder, user)
    log = folder / "postgres.log"
    postgres.initialize(bin_dir, data, password, user, log)
    port = free_port()
    server = process.start(postgres.server_command(bin_dir, data, port), log, user=user)
    try:
        deadline = time.monotonic() + 60
        while not postgres.ready(password, port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start on {HOST}:{port}: {process.tail(log)}")
            time.sleep(0.1)
        yield port, postgres.url(password, port, "postgres")
    finally:
        process.stop(server)
        if data.is_symlink():  # the cluster lives outside pytest's folders: not left behind
            shutil.rmtree(data.resolve(), ignore_errors=True)

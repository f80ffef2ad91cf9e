"""System services the tests start for themselves (real servers, on 127.0.0.1 only)."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlsys_core.net import HOST, free_port
from mlsys_core.stack import process
from mlsys_core.stack.prefect_server import api_url, prefect_env, server_command


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


# -- Prefect's database as a fresh server leaves it ---------------------------------------------
# A server's first start in a new Prefect home runs every migration and registers the block
# types: about 10 s of CPU, paid again by each of the dozen fresh homes the suite starts a
# server in. A home seeded with a copy starts as a second start does. A test about a home's
# very first start (no database yet) leaves its home unseeded.
PREFECT_SEEDED = ("prefect.db", "memo_store.toml")


def prefect_template(folder: Path) -> Path:
    """A Prefect home in ``folder`` whose server has started once and stopped; made by the
    first caller, waited for by the others (pytest-xdist workers share ``folder``)."""
    home = folder / "prefect-template"
    with open(folder / "prefect-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "done").is_file():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            port = free_port()
            base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env = prefect_env(home, api_url(port), base)
            with process.background(
                server_command(port), env, folder / "prefect-template.log",
                ready_url=f"{api_url(port)}/health", timeout=300,
            ):  # fmt: skip
                pass
            missing = [name for name in PREFECT_SEEDED if not (home / name).is_file()]
            if missing:
                raise RuntimeError(f"the template Prefect server left no {missing} in {home}")
            (home / "done").touch()
    return home


def seed_prefect_home(home: Path, template: Path) -> Path:
    """``home`` holding a copy of the template's database (``sqlite3``'s backup: one
    consistent file, whatever the template's write-ahead log holds)."""
    home.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(template / PREFECT_SEEDED[0])
    target = sqlite3.connect(home / PREFECT_SEEDED[0])
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    shutil.copy2(template / PREFECT_SEEDED[1], home / PREFECT_SEEDED[1])
    return home

"""The registry lock in the MLflow store: it excludes threads, processes and the clients of
a tracking server; it survives a holder killed mid-hold; and it never reaps a live one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlsys_core.registry.locking import (
    LockLost,
    LockTimeout,
    RegistryLock,
    is_lock_model,
    lock_model_name,
)
from mlsys_core.tracking import tracking_client
from tests.integration.conftest import REPO

WORKER = "tests.mlsys_core.registry.lock_worker"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating one costs seconds); tests use their own
    model names, hence their own locks."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('lock_store') / 'mlflow.db'}"
    tracking_client(uri).search_registered_models()  # creates the tables once
    return uri


def test_threads_take_turns_and_a_waiter_times_out(store: str) -> None:
    lock = RegistryLock(tracking_client(store), "team flight-delay")  # any model name
    inside: list[int] = []
    overlaps: list[int] = []
    guard = threading.Lock()

    def critical(i: int) -> None:
        with lock:
            with guard:
                inside.append(i)
                overlaps.extend([i] if len(inside) > 1 else [])
            time.sleep(0.02)
            with guard:
                inside.remove(i)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(critical, range(8)))
    assert overlaps == []
    assert lock.holders() == []  # every ticket was deleted on release

    impatient = RegistryLock(tracking_client(store), "team flight-delay", timeout_s=0.5)
    with lock:
        with pytest.raises(LockTimeout, match="not acquired in 0.5s"):
            impatient.__enter__()
        assert len(lock.holders()) == 1  # the waiter took its ticket back
    with pytest.raises(RuntimeError, match="not reentrant"), lock, lock:
        pass
    assert is_lock_model(lock_model_name("m")) and not is_lock_model("m")


def test_each_model_has_its_own_lock(store: str) -> None:
    client = tracking_client(store)
    with RegistryLock(client, "model-a"), RegistryLock(client, "model-b", timeout_s=5):
        pass  # b is not blocked by a


def _run_workers(uri: str, log: Path, n: int, rounds: int) -> None:
    cmd = [sys.executable, "-m", WORKER, uri, "workers", str(log), "--rounds", str(rounds)]
    procs = [subprocess.Popen(cmd, cwd=REPO) for _ in range(n)]
    for proc in procs:
        assert proc.wait(timeout=600) == 0


def _assert_exclusive(log: Path, expected: int) -> None:
    """The log reads enter, exit, enter, exit ... with each exit by the process that
    entered: no two holders at any time."""
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 2 * expected
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert (enter[0], leave[0]) == ("enter", "exit")
        assert enter[1] == leave[1]


@pytest.mark.slow
def test_processes_exclude_each_other_on_a_sqlite_store(store: str, tmp_path: Path) -> None:
    _run_workers(store, tmp_path / "log", n=4, rounds=4)
    _assert_exclusive(tmp_path / "log", 16)


@pytest.mark.slow
def test_processes_exclude_each_other_through_a_tracking_server(
    mlflow_server: str, tmp_path: Path
) -> None:
    model = f"lock-server-{tmp_path.name}"
    log = tmp_path / "log"
    cmd = [sys.executable, "-m", WORKER, mlflow_server, model, str(log), "--rounds", "3"]
    procs = [subprocess.Popen(cmd, cwd=REPO) for _ in range(4)]
    # ...and a client of the same server in this process, between them.
    lock = RegistryLock(tracking_client(mlflow_server), model)
    for _ in range(3):
        with lock:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"enter {os.getpid()} 0\n".encode())
            time.sleep(0.02)
            os.write(fd, f"exit {os.getpid()} 0\n".encode())
            os.close(fd)
    for proc in procs:
        assert proc.wait(timeout=600) == 0
    _assert_exclusive(log, 15)


def _holder(uri: str, log: Path, lease_s: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", WORKER, uri, "killed", str(log), "--hold-forever"]
    cmd += ["--lease-s", str(lease_s), "--beat-s", str(lease_s / 5)]
    proc = subprocess.Popen(cmd, cwd=REPO)
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the holder never entered"
        time.sleep(0.1)
    return proc


@pytest.mark.slow
def test_a_holder_killed_mid_hold_is_reaped_after_its_lease(store: str, tmp_path: Path) -> None:
    lease = 2.0
    proc = _holder(store, tmp_path / "log", lease)
    try:
        lock = RegistryLock(tracking_client(store), "killed", lease_s=lease, beat_s=0.4)
        (dead,) = lock.holders()
        # Alive and beating, the holder keeps the lock well past its lease.
        with pytest.raises(LockTimeout):
            RegistryLock(tracking_client(store), "killed", timeout_s=3 * lease).__enter__()
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # also when the test failed: it holds forever
        proc.wait()
    started = time.monotonic()
    with lock:
        waited = time.monotonic() - started
        assert dead not in lock.holders()
    assert lease <= waited < lease + 30  # one lease of silence, not the 300 s timeout


def test_a_holder_whose_ticket_was_reaped_learns_it_on_exit(store: str) -> None:
    client = tracking_client(store)
    lock = RegistryLock(client, "reaped")
    with pytest.raises(LockLost, match="removed while held"), lock:
        (ticket,) = lock.holders()
        client.delete_model_version(lock.name, ticket)  # what a waiter does to a silent one
    assert lock.holders() == []

"""Stack parts that would make ``up`` wait out its whole timeout: a serving replica that
exits at every start, a Dask scheduler that accepts and never answers."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from mlsys_core.net import HOST, free_port
from mlsys_core.stack import process
from mlsys_core.stack.stack import (
    MLFLOW_CLIENT_ENV,
    Stack,
    StackConfig,
    StackError,
    _dask_worker_names,
)

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_a_replica_that_cannot_bind_its_port_fails_the_wait_with_its_log(tmp_path: Path) -> None:
    """The cluster restarts an exiting replica forever; `up` names it after a few exits."""
    with socket.socket() as taken:  # another program holds the replica's port
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(tmp_path / "state")
        config = stack.configure(
            StackConfig(dataset="nycflights13", serve_replicas=1, replica_ports=[port])
        )
        (serving,) = [p for p in stack.parts(config) if p.name == "serving"]
        # No MLflow server here: the replica reads its (absent) champion from the state's
        # embedded store, so it gets as far as binding its port.
        for key in ("MLSYS_TRACKING_URI", *MLFLOW_CLIENT_ENV):
            serving.env.pop(key, None)
        proc = stack._start(serving, config.password or "")
        started = time.monotonic()
        try:
            with pytest.raises(StackError) as failed:
                stack._wait_ready(serving, proc, config)
        finally:
            process.stop_group(proc.pid, timeout=20)
    message = str(failed.value)
    assert f"serving cannot start: replica 0 (port {port}) exited 3 times in a row" in message
    assert "address already in use" in message  # the replica's own log says why
    assert time.monotonic() - started < config.start_timeout_s / 3


@pytest.mark.slow
def test_dask_workers_are_named_by_the_scheduler(tmp_path: Path) -> None:
    port = free_port()
    address = f"tcp://{HOST}:{port}"
    scheduler = process.start(
        [str(BIN / "dask"), "scheduler", "--host", HOST, "--port", str(port), "--no-dashboard"],
        tmp_path / "scheduler.log",
    )
    worker = process.start(
        [str(BIN / "dask"), "worker", address, "--name", "w-1", "--nworkers", "1",
         "--nthreads", "1", "--no-dashboard", "--local-directory", str(tmp_path / "scratch")],
        tmp_path / "worker.log",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while (names := _dask_worker_names(address)) != {"w-1"}:
            assert time.monotonic() < deadline, (names, process.tail(tmp_path / "worker.log"))
            time.sleep(0.5)
    finally:
        process.stop(worker)
        process.stop(scheduler)


def test_a_scheduler_that_never_answers_reads_as_not_answering() -> None:
    """A port that accepts and stays silent (a hung scheduler): None after the timeout."""
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen()
        accepted: list[socket.socket] = []
        acceptor = threading.Thread(target=lambda: accepted.append(silent.accept()[0]))
        acceptor.start()
        started = time.monotonic()
        names = _dask_worker_names(f"tcp://{HOST}:{silent.getsockname()[1]}", timeout=2)
        waited = time.monotonic() - started
        acceptor.join(timeout=10)
        for conn in accepted:
            conn.close()
    assert names is None
    assert accepted and 2 <= waited < 10  # it connected, waited its limit, and gave up


def test_a_closed_port_reads_as_not_answering() -> None:
    started = time.monotonic()
    assert _dask_worker_names(f"tcp://{HOST}:{free_port()}", timeout=2) is None
    assert time.monotonic() - started < 10

"""Server processes of the stack: pid files that survive pid reuse, stopping a whole family
(also children that left the session), and the stack's kept configuration."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlsys_core.stack import process
from mlsys_core.stack.stack import Stack, StackConfig, StackError, _levels

# A parent that starts a child in a session of its own (as a Prefect worker starts a flow
# run, or a launcher torchrun), then both sleep; SIGTERM is ignored by the child.
FAMILY = """
import signal, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
     " print('child up', flush=True); time.sleep(600)"],
    start_new_session=True,
)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_pid_file_knows_its_process_and_not_a_stranger(tmp_path: Path) -> None:
    proc = process.start([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "a.log")
    pid_file = process.PidFile(tmp_path / "a.pid")
    pid_file.write(proc.pid)
    assert pid_file.pid() == proc.pid
    process.stop(proc)
    assert pid_file.pid() is None  # gone
    # The same pid number recorded with another start time is not "our" process.
    pid_file.path.write_text(f'{{"pid": {psutil.Process().pid}, "start": 1}}')
    assert pid_file.pid() is None


def test_stop_group_ends_descendants_in_other_sessions(tmp_path: Path) -> None:
    log = tmp_path / "family.log"
    proc = process.start([sys.executable, "-c", FAMILY], log)
    deadline = time.monotonic() + 60
    while "child up" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    child = int(log.read_text().split()[0])
    assert psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    killed = process.stop_group(proc.pid, timeout=2)
    assert killed  # the child ignored SIGTERM: it had to be killed
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_wait_until_reports_an_exited_server_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    proc = process.start(
        [sys.executable, "-c", "print('bad option --x'); raise SystemExit(2)"], log
    )
    with pytest.raises(process.ServerError, match="exited while starting(.|\n)*bad option"):
        process.wait_http("http://127.0.0.1:9/health", proc, 30, log)


def test_stack_keeps_its_ports_and_refuses_other_settings(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "state")
    first = stack.configure(StackConfig(prefect_workers=1))
    ports = [first.postgres_port, first.prefect_port, first.mlflow_port, first.dask_port]
    assert all(ports) and len({*ports, first.serve_port, *first.replica_ports}) == 7
    assert first.password and (stack.config_path.stat().st_mode & 0o777) == 0o600
    assert stack.configure() == first  # kept across `up`s
    with pytest.raises(StackError, match="prefect_workers.*down --purge"):
        stack.configure(StackConfig(prefect_workers=3))
    env = stack.settings_env(first)
    assert env["MLSYS_TRACKING_URI"] == f"http://127.0.0.1:{first.mlflow_port}"
    assert env["MLSYS_OPTUNA_STORAGE"].endswith(f"@127.0.0.1:{first.postgres_port}/optuna")
    assert env["MLSYS_DASK_ADDRESS"] == f"tcp://127.0.0.1:{first.dask_port}"
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{first.prefect_port}/api"
    names = [p.name for p in stack.parts(first)]
    assert names == [
        "postgres", "prefect-server", "mlflow", "dask-scheduler", "prefect-worker-1",
        "dask-worker-1", "dask-worker-2", "serving",
    ]  # fmt: skip
    # Nothing runs: status says so, down has nothing to stop.
    assert all(not s.healthy and s.pid is None for s in stack.status())
    assert {what for _, what in stack.down()} == {"not running"}


def test_cli_reports_a_stack_that_was_never_started(tmp_path: Path) -> None:
    mlsys = Path(sys.executable).parent / "mlsys"
    done = subprocess.run(
        [str(mlsys), "stack", "--state", str(tmp_path), "status"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no stack in" in done.stderr and "mlsys stack up" in done.stderr


def test_up_needs_a_dataset_and_starts_nothing_without_one(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "state")
    with pytest.raises(StackError, match="needs the dataset it runs.*--dataset"):
        stack.up(StackConfig())
    assert not stack.config_path.exists()  # a later `up --dataset` needs no purge
    config = stack.configure(StackConfig(dataset="nycflights13", prefect_workers=1))
    assert stack.settings_env(config)["MLSYS_DATASET"] == "nycflights13"


def test_parts_start_after_what_they_need_and_stop_before_it(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "state")
    config = stack.configure(StackConfig(dataset="nycflights13"))
    parts = stack.parts(config)
    levels = _levels(parts)
    by_name = {p.name: p for p in parts}
    for part in parts:
        assert all(levels[need] < levels[part.name] for need in part.needs)
    # The servers on Postgres wait for it; the slow-starting replicas wait only for MLflow;
    # the Dask workers start with their scheduler.
    assert by_name["prefect-server"].needs == by_name["mlflow"].needs == ("postgres",)
    assert by_name["serving"].needs == ("mlflow",)
    assert by_name["dask-worker-1"].needs == by_name["dask-scheduler"].needs == ()
    assert levels["prefect-worker-2"] == 2
    # MLflow's client variables point at the stack's server, but not in the server itself.
    tracking = stack.settings_env(config)["MLSYS_TRACKING_URI"]
    assert by_name["prefect-worker-1"].env["MLFLOW_REGISTRY_URI"] == tracking
    assert "MLFLOW_TRACKING_URI" not in by_name["mlflow"].env
    assert by_name["prefect-worker-1"].env["PREFECT_WORKER_QUERY_SECONDS"] == "2.0"


def test_wait_until_stops_at_the_first_reason_to_give_up(tmp_path: Path) -> None:
    """A server that runs but will never get ready (a supervisor restarting a broken child)
    fails the wait with the reason, not after the whole timeout."""
    polls = []

    def failing() -> str:
        polls.append(1)
        return "child exited 3 times" if len(polls) >= 3 else ""

    started = time.monotonic()
    with pytest.raises(process.ServerError, match="serving cannot start: child exited 3 times"):
        process.wait_until(lambda: False, "serving", 600, running=lambda: True,
                           interval=0.01, failing=failing)  # fmt: skip
    assert len(polls) == 3 and time.monotonic() - started < 60

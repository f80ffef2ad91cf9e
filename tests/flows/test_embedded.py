"""In-process runs switch flow-run heartbeats off; everything else keeps Prefect's default."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from prefect.settings import (
    PREFECT_HOME,
    get_current_settings,
    temporary_settings,
)
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as STARTUP

from flows.embedded import RECORDER_LOGGER, check_state_folders, create_app, embedded_run
from tests.services import seed_prefect_home


def test_embedded_run_turns_heartbeats_off_only_inside():
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    with embedded_run():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default


def test_embedded_run_batches_the_recorder_and_waits_for_the_server_unless_env_says(monkeypatch):
    def recorder():
        return get_current_settings().server.services.task_run_recorder

    assert recorder().batch_size == 1  # Prefect's default: one transaction per event
    with embedded_run():
        assert (recorder().batch_size, recorder().flush_interval) == (100, 1)
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE", "7")
    with embedded_run():
        assert (recorder().batch_size, recorder().flush_interval) == (7, 1)

    # The temporary server's start-up limit: 120 s for `mlsys pipeline`, as for `make demo`,
    # not Prefect's 20 s, which a loaded machine misses; a value the process was started
    # with wins. (Set through the settings too: a process reads its environment once.)
    def startup() -> float:
        return get_current_settings().server.ephemeral.startup_timeout_seconds

    monkeypatch.delenv(STARTUP.name, raising=False)
    with temporary_settings(updates={STARTUP: 20}), embedded_run():
        assert startup() == 120
    monkeypatch.setenv(STARTUP.name, "45")
    with temporary_settings(updates={STARTUP: 45}), embedded_run():
        assert startup() == 45


def test_the_server_keeps_quiet_about_a_batch_its_own_stop_cancelled_and_retried():
    """A run that succeeded printed the recorder's ERROR and a CancelledError traceback
    when its temporary server stopped during a batched write that Prefect then retried;
    a batch dropped, or a write that failed otherwise, is still an error."""
    from prefect.server.services import task_run_recorder  # noqa: PLC0415

    # The message is Prefect's own (its consumer's flush), not one made up here.
    assert "({to_retry} to retry, {dropped} dropped)" in inspect.getsource(
        task_run_recorder.consumer
    )
    create_app()
    recorder = logging.getLogger(RECORDER_LOGGER)
    seen: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    recorder.addHandler(handler)
    try:
        for message, error in [
            ("Error flushing 13 events (13 to retry, 0 dropped)", asyncio.CancelledError()),
            ("Error flushing 13 events (12 to retry, 1 dropped)", asyncio.CancelledError()),
            ("Error flushing 2 events (2 to retry, 0 dropped)", OSError("disk I/O error")),
        ]:
            try:
                raise error
            except BaseException:
                recorder.error(message, exc_info=True)
    finally:
        recorder.removeHandler(handler)
    assert seen == [
        "Error flushing 13 events (12 to retry, 1 dropped)",
        "Error flushing 2 events (2 to retry, 0 dropped)",
    ]


def _fresh_interpreter(
    code: str, tmp_path: Path, timeout: float, **env_updates: str
) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter with its own state folder and Prefect home, and no
    MLSYS_ or PREFECT_ setting of this shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSYS_", "PREFECT_"))}
    env.update(
        MLSYS_STATE_DIR=str(tmp_path / "state"),
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    env.update(env_updates)  # may replace the state folder or the Prefect home
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# The temporary server a first flow call starts inside embedded_run, in a fresh interpreter:
# it runs with the batched recorder (its own settings, read back over its API).
_SERVER_SETTINGS = """
from prefect import flow, get_client
from prefect.server.api.server import SubprocessASGIServer
from flows.embedded import embedded_run

@flow
def noop():
    return None

with embedded_run():
    noop()
    with get_client(sync_client=True) as client:
        recorder = client.request("GET", "/admin/settings").json()["server"]["services"][
            "task_run_recorder"
        ]
    server = SubprocessASGIServer()
print(type(server).__name__, server.server_process.args[6])
print(recorder["batch_size"], recorder["flush_interval"])
"""


@pytest.mark.slow  # a fresh interpreter and a temporary server: ~30 s
def test_the_temporary_server_runs_with_the_batched_recorder(
    tmp_path: Path, prefect_db: Path
) -> None:
    seed_prefect_home(tmp_path / "prefect", prefect_db)
    proc = _fresh_interpreter(
        _SERVER_SETTINGS, tmp_path, 600, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    server, recorder = proc.stdout.strip().splitlines()[-2:]
    assert server == "TemporaryServer flows.embedded:create_app"  # writes begun IMMEDIATE
    assert recorder.split() == ["100", "1.0"]


# Prefect's own database layer, in a fresh interpreter: a write transaction that reads
# before it writes (as create_task_run does on each subflow call) while another writer
# (as the task-run recorder does) commits in between.
_READ_THEN_WRITE = """
import asyncio, os
import sqlalchemy as sa
from prefect.server.database import provide_database_interface
from flows.embedded import begin_writes_immediately

if os.environ["BEGIN"] == "immediate":
    begin_writes_immediately()
db = provide_database_interface()
done = []
reader_has_read, other_committed = asyncio.Event(), asyncio.Event()

async def write(key, read_first=False):
    try:
        async with db.session_context(begin_transaction=True) as session:
            if read_first:
                await session.execute(sa.select(db.Configuration))
                reader_has_read.set()
                try:  # the other writer commits now if it can (it cannot while we hold the lock)
                    await asyncio.wait_for(other_committed.wait(), 3.0)
                except TimeoutError:
                    pass
            await session.execute(db.queries.insert(db.Configuration).values(key=key, value={}))
        done.append(key)
    except Exception as err:
        done.append(f"{key} failed: {type(err).__name__}: {err}".splitlines()[0])
    if key == "other":
        other_committed.set()

async def main():
    await db.create_db()
    first = asyncio.create_task(write("reader", read_first=True))
    await reader_has_read.wait()  # the reader is between its read and its write
    await asyncio.gather(write("other"), first)
    print("|".join(done))

asyncio.run(main())
"""


@pytest.mark.slow  # a fresh interpreter imports Prefect's server: ~5 s each
@pytest.mark.parametrize(
    ("begin", "outcome"),
    [
        # Prefect's default: the other writer commits, then the reader's write fails.
        (
            "deferred",
            [
                "other",
                "reader failed: OperationalError: (sqlite3.OperationalError) database is locked",
            ],
        ),
        # Ours: the other writer waits for the lock; both commit, the reader first.
        ("immediate", ["reader", "other"]),
    ],
)
def test_sqlite_writes_begun_immediate_wait_instead_of_failing(
    begin: str, outcome: list[str], tmp_path: Path, prefect_db: Path
) -> None:
    seed_prefect_home(tmp_path / "prefect", prefect_db)
    proc = _fresh_interpreter(_READ_THEN_WRITE, tmp_path, 300, BEGIN=begin)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].split("|") == outcome


# A new user's Python route, in a fresh interpreter: the first flow call with a state folder
# or PREFECT_HOME that cannot be created (a path under a regular file: also fails for root).
_FIRST_CALL = """
import sys, time
from flows.ingest import ingest
start = time.perf_counter()
try:
    ingest(spec="digits")
except Exception as err:
    print(f"{time.perf_counter() - start:.3f}", type(err).__name__, str(err), sep="|")
    sys.exit(0)
print("no error")
"""


@pytest.mark.slow  # a fresh interpreter imports torch, MLflow and Prefect: ~10 s each, loaded
@pytest.mark.parametrize("broken", ["PREFECT_HOME", "MLSYS_STATE_DIR"])
def test_first_flow_call_fails_fast_on_an_unwritable_folder(broken: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = _fresh_interpreter(_FIRST_CALL, tmp_path, 300, **{broken: str(blocker / "sub")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seconds, kind, message = proc.stdout.strip().splitlines()[-1].split("|")
    assert kind == "StateFolderError"
    assert float(seconds) < 2.0
    assert "\n" not in message
    assert message.startswith(f"{broken}={blocker / 'sub'} cannot be created or written")


def test_first_flow_call_creates_missing_folders(tmp_path: Path) -> None:
    state, home = tmp_path / "new" / "state", tmp_path / "new" / "prefect"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSYS_STATE_DIR", str(state))
        with temporary_settings(updates={PREFECT_HOME: str(home)}):
            check_state_folders()
    assert state.is_dir() and home.is_dir()


# A flow called from Python, blocked inside its run, with the temporary server it started.
_BLOCKED = """
import time
from flows.embedded import flow

@flow(name="blocked")
def blocked() -> None:
    print("running", flush=True)
    time.sleep(600)

blocked()
"""


@pytest.mark.slow  # a fresh interpreter and a temporary server: ~20 s
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_temporary_server_stops_when_its_flow_process_is_killed(
    sig: signal.Signals, tmp_path: Path, prefect_db: Path
) -> None:
    """A scheduler's SIGTERM or a SIGKILL skips the exit hook that stops the temporary
    server: without a watch on its parent it stayed, orphaned, holding the state's
    database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSYS_", "PREFECT_"))}
    env.update(
        MLSYS_STATE_DIR=str(tmp_path / "state"),
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
    )
    seed_prefect_home(tmp_path / "prefect", prefect_db)
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", _BLOCKED], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
        (server,) = [
            child
            for child in psutil.Process(proc.pid).children()
            if "flows.embedded:create_app" in " ".join(child.cmdline())
        ]
        proc.send_signal(sig)
        proc.wait(timeout=60)
        server.wait(timeout=30)  # psutil.TimeoutExpired: it outlived its flow process
    finally:
        proc.kill()
    assert not server.is_running()

"""Running flows in-process on Prefect's embedded (ephemeral) API, as ``make demo`` does."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import prefect
import prefect.settings
from prefect import Flow
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_HOME,
    get_current_settings,
    temporary_settings,
)

from mlsys_core.config import Settings, ensure_writable_folders
from mlsys_core.stack.prefect_server import SERVER_SETTINGS

_checked: set[tuple[Path, Path]] = set()


def check_state_folders() -> None:
    """Fail in one line, at once, when the state folder or ``PREFECT_HOME`` cannot be
    created or written. Without this, Prefect's embedded server cannot create its database
    and the flow call waits for it to start until it times out (minutes), with the cause
    only in a warning above. Each pair of folders is checked once per process."""
    key = (Settings().root, Path(PREFECT_HOME.value()).expanduser().resolve())
    if key in _checked:
        return
    ensure_writable_folders({"MLSYS_STATE_DIR": key[0], "PREFECT_HOME": key[1]})
    _checked.add(key)


def begin_writes_immediately() -> None:
    """Make this process's Prefect server begin every SQLite write transaction IMMEDIATE,
    taking the database's write lock when it begins.

    Prefect begins them DEFERRED. One that reads before it writes (``create_task_run`` reads
    the flow run's labels, then inserts: each subflow call does this) fails at once with
    "database is locked" when another writer (the task-run recorder, the event persister)
    commits in between, since no busy timeout can refresh a stale read snapshot. The API
    answers 503 and Prefect's client retries 2 s later (PrefectHQ/prefect#18934): a 2 s
    stall at a subflow start in about every second ``ml_pipeline`` run here. Begun
    IMMEDIATE, writers queue on the lock (SQLite's busy timeout: 60 s) and none fails.
    """
    from prefect.server.database.configurations import (  # noqa: PLC0415 - server only
        AioSqliteConfiguration,
    )

    deferred = AioSqliteConfiguration.begin_transaction
    if getattr(deferred, "immediate", False):
        return

    @asynccontextmanager
    async def begin_immediate(
        self: AioSqliteConfiguration, session: Any, with_for_update: bool = False
    ) -> AsyncIterator[Any]:
        async with deferred(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_immediate.immediate = True  # type: ignore[attr-defined]
    AioSqliteConfiguration.begin_transaction = begin_immediate  # type: ignore[method-assign]


# Set by the process that starts a temporary server, to its own pid: the server stops when
# that process is gone (see :func:`exit_with_parent`).
PARENT_ENV = "MLSYS_SERVER_PARENT"


class RetriedAtStop(logging.Filter):
    """Drop the task-run recorder's error for a batch its own shutdown cancelled mid-write.

    At a server's stop, Prefect cancels the recorder's periodic flush; a flush under way puts
    its batch back ("N to retry, 0 dropped") and logs an ERROR with a traceback, then its
    final flush writes the batch. With writes batched (``SERVER_SETTINGS``) a flow process
    that stops its temporary server as its last tasks are recorded prints that traceback
    after a run that succeeded. A batch dropped, or any other error, is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        retried = record.getMessage().endswith("to retry, 0 dropped)")
        return not (isinstance(error, asyncio.CancelledError) and retried)


RECORDER_LOGGER = "prefect.server.services.task_run_recorder"


def create_app() -> Any:
    """The ``TemporaryServer``'s ASGI app: Prefect's, writes begun IMMEDIATE (see
    :func:`begin_writes_immediately`), without the recorder's noise at its stop (see
    :class:`RetriedAtStop`)."""
    from prefect.server.api.server import create_app as prefect_app  # noqa: PLC0415

    begin_writes_immediately()
    recorder = logging.getLogger(RECORDER_LOGGER)
    if not any(isinstance(f, RetriedAtStop) for f in recorder.filters):
        recorder.addFilter(RetriedAtStop())
    if parent := os.environ.get(PARENT_ENV):
        exit_with_parent(int(parent))
    return prefect_app()


def exit_with_parent(parent: int, interval: float = 0.5) -> threading.Thread:
    """Stop this server (SIGTERM to itself: uvicorn's graceful shutdown) once ``parent`` is
    no longer its parent. The process that started a temporary server stops it at exit, but
    a SIGTERM it does not handle or a SIGKILL skips that; the server would stay, orphaned,
    holding the state folder's database, until someone finds it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def kept_server_command(port: int, log_level: str = "warning") -> list[str]:
    """A server of :func:`create_app` (Prefect's app, writes begun IMMEDIATE) on ``port``:
    Prefect's own command for its temporary server (prefect/server/api/server.py) with our
    factory. ``mlsys prefect-server up`` keeps one (UI and services included), and the
    ``TemporaryServer`` runs it too; ``prefect server start`` would serve Prefect's app
    unchanged, with the 2 s stalls for every flow run that uses it."""
    return [
        sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
        "--factory", f"{__name__}:create_app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", log_level, "--lifespan", "on",
    ]  # fmt: skip


@functools.cache
def temporary_server_class() -> type:
    """``TemporaryServer``: Prefect's temporary local server, serving :func:`create_app`.

    Built on first use: Prefect's server module takes a second or more to import, which a
    process talking to a configured API (a worker's flow run, a CLI command) never needs.
    """
    from prefect.server.api.server import SubprocessASGIServer  # noqa: PLC0415

    class TemporaryServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            return subprocess.Popen(
                args=kept_server_command(self.port, log_level="error"),
                env={
                    **os.environ,
                    "PREFECT_UI_ENABLED": "0",
                    "PREFECT__SERVER_EPHEMERAL": "1",
                    "PREFECT__SERVER_FINAL": "1",
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                    PARENT_ENV: str(os.getpid()),
                },
            )

    return TemporaryServer


def use_temporary_server() -> Any:
    """The temporary server this process's flows will use, registered as the instance
    Prefect's own ``SubprocessASGIServer()`` calls return, so the first flow call starts it:
    a ``TemporaryServer`` unless Prefect already made its own (started before any mlsys
    flow was called). None when an API is configured (``PREFECT_API_URL``)."""
    if PREFECT_API_URL.value():
        return None
    return temporary_server_class()()  # a registered instance (either class) is returned


class EntryFlow(Flow):
    """A Prefect flow whose call first checks the state folders (see
    :func:`check_state_folders`) and registers the temporary server (see
    :func:`use_temporary_server`); a worker's run goes through the engine, where the
    server is already up, and is unchanged."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        check_state_folders()
        use_temporary_server()
        return super().__call__(*args, **kwargs)


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """``prefect.flow`` for this package's flows: the same options, an :class:`EntryFlow`."""
    if fn is None:
        return lambda f: EntryFlow(fn=f, **options)
    return EntryFlow(fn=fn, **options)


@contextmanager
def embedded_run() -> Iterator[None]:
    """Settings for flows called in this process, not launched by a worker.

    Flow-run heartbeats let a server notice a worker's run that died. An in-process run has
    no worker to lose: its caller sees a crash directly. The heartbeat thread sleeps in 1 s
    steps and is joined when each flow run ends, which costs up to a second per subflow
    (six of them in ``ml_pipeline``), so it is switched off here. Deployments keep it.

    The temporary server a first flow call starts here is a ``TemporaryServer``, batches
    its task-run writes, as the servers ``mlsys`` starts do, and has 120 s to start, as in
    ``make demo`` (``SERVER_SETTINGS``), unless the environment says otherwise.
    """
    use_temporary_server()  # for a first flow call that is not one of ours
    updates: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    for name, value in SERVER_SETTINGS.items():
        if name not in os.environ:
            updates[getattr(prefect.settings, name)] = value
    with temporary_settings(updates=updates):
        yield

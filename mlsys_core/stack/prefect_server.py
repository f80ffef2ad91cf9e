"""Bootstrapping a Prefect server through its command line and HTTP API: the one place that
knows how to start it, wait for it, create the work pool, deploy and start workers.

Never imports prefect: the server, ``prefect deploy`` and the workers are processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlsys_core.net import HOST, free_port
from mlsys_core.stack import process

BIN = Path(sys.executable).parent
POOL = "mlsys-local"


def prefect_bin() -> str:
    return str(BIN / "prefect")


def api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


# Prefect's task-run recorder writes each task-run event in its own transaction by default
# (batch size 1): about 50 ms of the server's CPU per task run here, on the cores the flow's
# own work runs on. Batched, it is about 20 ms, and the UI shows a task's state at most a
# second later. A temporary server gets 120 s to start, not Prefect's 20: on a loaded
# machine its start competes with the flow's imports for the cores, and missing the limit
# fails the run. A value in the environment wins.
STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    STARTUP_TIMEOUT: "120",
}


def prefect_env(
    home: Path, api: str, base: dict[str, str] | None = None, database_url: str | None = None
) -> dict[str, str]:
    """The environment of a server, a worker or a client of the server at ``api``."""
    env = {
        **SERVER_SETTINGS,
        **(os.environ if base is None else base),
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
    }
    if database_url is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return env


def server_command(port: int) -> list[str]:
    return [prefect_bin(), "server", "start", "--host", HOST, "--port", str(port)]


def worker_command(pool: str, name: str) -> list[str]:
    return [prefect_bin(), "worker", "start", "--pool", pool, "--type", "process", "--name", name]


def call(url: str, body: dict | None = None, method: str | None = None) -> object:
    """One JSON request to the API."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
        return json.loads(reply.read() or b"null")


def healthy(api: str) -> bool:
    return process.http_ok(f"{api}/health")


def cli(args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 600) -> str:
    """Run ``prefect <args>``; a failure raises with its output."""
    done = subprocess.run(  # noqa: S603
        [prefect_bin(), *args],
        env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip
    if done.returncode != 0:
        raise process.ServerError(
            f"prefect {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def ensure_work_pool(api: str, env: dict[str, str], pool: str = POOL) -> bool:
    """Create the process work pool unless it exists; True when created."""
    names = [p["name"] for p in call(f"{api}/work_pools/filter", {})]  # type: ignore[union-attr]
    if pool in names:
        return False
    cli(["work-pool", "create", pool, "--type", "process"], env)
    return True


def deploy(env: dict[str, str], project: Path, names: list[str] | None = None) -> str:
    """``prefect deploy`` of prefect.yaml in ``project``: every deployment, or ``names``."""
    selection = ["--all"] if names is None else [a for n in names for a in ("--name", n)]
    return cli(["--no-prompt", "deploy", *selection], env, cwd=project)


def online_workers(api: str, pool: str = POOL) -> list[str]:
    """Names of the pool's workers whose heartbeat the server counts as online."""
    try:
        workers = call(f"{api}/work_pools/{pool}/workers/filter", {})
    except OSError:
        return []
    return sorted(w["name"] for w in workers if w.get("status") == "ONLINE")  # type: ignore[union-attr]


SERVER_HOME = "prefect_home"  # a throwaway server's Prefect home, in its folder


@dataclass(frozen=True)
class PrefectServer:
    api: str
    env: dict[str, str]
    log: Path


@contextmanager
def prefect_server(
    folder: Path,
    base_env: dict[str, str] | None = None,
    timeout: float = 180.0,
    command: Callable[[int], list[str]] = server_command,
) -> Iterator[PrefectServer]:
    """A throwaway Prefect server (SQLite in ``folder``) on a free port for a ``with``
    block, with the process work pool created; its env points clients at it. ``command``:
    as for :func:`start_local_server`."""
    home = folder / SERVER_HOME
    home.mkdir(parents=True, exist_ok=True)
    api = api_url(free_port())
    env = prefect_env(home, api, base_env)
    log = folder / "prefect-server.log"
    port = api.rsplit(":", 1)[1].split("/")[0]
    with process.background(
        command(int(port)), env, log, ready_url=f"{api}/health", timeout=timeout
    ):
        ensure_work_pool(api, env)
        yield PrefectServer(api=api, env=env, log=log)


# -- a long-lived server for one Prefect home (``mlsys prefect-server up``) ------------------------
# Without PREFECT_API_URL every flow call starts Prefect's temporary server (10-20 s) and
# stops it at exit, and its UI is gone with it. A server started once for the state folder's
# Prefect home is found by every later run through this record (pid, start time, API URL).
LOCAL_RECORD = "mlsys-server.json"


def prefect_home(env: Mapping[str, str] | None = None) -> Path:
    """The Prefect home a client in ``env`` uses (Prefect's own default when unset)."""
    env = os.environ if env is None else env
    return Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()


def running_local_server(home: Path) -> str | None:
    """The API URL of the server ``mlsys prefect-server up`` started for ``home``, when that very
    process still runs and answers; else None."""
    record = process.PidFile(home / LOCAL_RECORD).record()
    api = None if record is None else record.get("api")
    return api if isinstance(api, str) and healthy(api) else None


def state_folder_prefect(state: Path, env: MutableMapping[str, str] | None = None) -> None:
    """Give a command's Prefect the embedded defaults ``make demo`` gives it, where the
    environment says nothing: its home (the temporary server's database) in the state
    folder, beside MLflow's, instead of ``~/.prefect``, and no telemetry (a machine without
    the internet logged an ERROR for it). A user's profiles stay theirs: with
    ``~/.prefect/profiles.toml`` present, Prefect still reads it. The home is made here:
    Prefect makes only its last folder, and warned on a first run in a new state folder."""
    env = os.environ if env is None else env
    if not env.get("PREFECT_HOME"):
        profiles = Path("~/.prefect/profiles.toml").expanduser()
        if not env.get("PREFECT_PROFILES_PATH") and profiles.is_file():
            env["PREFECT_PROFILES_PATH"] = str(profiles)
        home = state / "prefect"
        with contextlib.suppress(OSError):  # unwritable: Prefect says so when it needs it
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def use_local_server(env: MutableMapping[str, str] | None = None) -> str | None:
    """Point this process's Prefect client at the running server of its Prefect home, unless
    an API is configured already. Call before prefect is imported (it reads settings once).
    Returns the API used, or None (the flow call then starts the temporary server)."""
    env = os.environ if env is None else env
    if env.get("PREFECT_API_URL"):
        return None
    api = running_local_server(prefect_home(env))
    if api is not None:
        env["PREFECT_API_URL"] = api
    return api


def start_local_server(
    home: Path,
    port: int | None = None,
    timeout: float = 180.0,
    command: Callable[[int], list[str]] = server_command,
) -> str:
    """Start a Prefect server (SQLite in ``home``) that outlives this process, unless one is
    running for ``home`` already; returns its API URL. Its log is ``home/mlsys-server.log``.
    ``command`` gives the server's command line for a port (``mlsys prefect-server up``
    passes one serving Prefect's app with SQLite writes begun IMMEDIATE)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "mlsys-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two `up`s at once start one server, not two
        running = running_local_server(home)
        if running is not None:
            return running
        return _start_local_server(home, port, timeout, command)


def _start_local_server(
    home: Path, port: int | None, timeout: float, command: Callable[[int], list[str]]
) -> str:
    if port is not None and process.tcp_open(HOST, port):
        # Whatever listens there would answer the health check in our server's stead.
        raise process.ServerError(f"{HOST}:{port} is in use; choose another --port")
    port = port or free_port()
    api = api_url(port)
    log = home / "mlsys-server.log"
    env = prefect_env(home, api)
    proc = process.start(command(port), log, env=env)
    try:
        process.wait_http(f"{api}/health", proc, timeout, log)
    except BaseException:
        process.stop_group(proc.pid, timeout=10)
        raise
    process.PidFile(home / LOCAL_RECORD).write(proc.pid, api=api)
    return api


def stop_local_server(home: Path) -> bool:
    """Stop the server ``mlsys prefect-server up`` started for ``home``; False when none ran."""
    record = process.PidFile(home / LOCAL_RECORD)
    pid = record.pid()
    if pid is not None:
        process.stop_group(pid)
    record.clear()
    return pid is not None
